//! What a person reads when something goes wrong: each client error told
//! in terms of what to do about it.

use std::io::ErrorKind;

use corecast_client::{ClientError, TopicProblem};
use corecast_proto::ErrorCode;

/// The message for `err`, met while talking to the broker at `server`.
pub fn explain(err: &ClientError, server: &str) -> String {
    match err {
        ClientError::Connect { source, .. } => match source.kind() {
            ErrorKind::ConnectionRefused => format!(
                "cannot connect to {server}: connection refused — is the broker running? \
                 start it with `cargo run --release`"
            ),
            _ => format!("cannot connect to {server}: {source}"),
        },
        ClientError::ConnectTimeout { timeout, .. } => format!(
            "cannot connect to {server}: no answer within {timeout:?} — is the address right \
             and the broker reachable? (--connect-timeout waits longer)"
        ),
        ClientError::Refused(refusal) => {
            let hint = match refusal.error_code() {
                Some(ErrorCode::AuthFailed) => {
                    " — pass the broker's token with --auth-token or CORECAST_AUTH_TOKEN, or a \
                     user's credential with --user (and CORECAST_PASSWORD or --password-file), \
                     --bearer-file or --jwt-file"
                }
                Some(ErrorCode::ServerFull) => {
                    " — the broker has no free connection slot; try again later"
                }
                Some(ErrorCode::MalformedFrame) => {
                    " — an older broker refuses the HELLO of a user's credential (--user, \
                     --bearer-file, --jwt-file); it takes --auth-token only"
                }
                _ => "",
            };
            format!("the broker at {server} refused the connection: {refusal}{hint}")
        }
        ClientError::InvalidTopic { problem, .. } => {
            let rules = match problem {
                TopicProblem::Rules(_) => {
                    " (a topic is 1-255 bytes of non-empty tokens separated by '.', \
                     without spaces or control characters)"
                }
                TopicProblem::Wildcard | TopicProblem::Reserved => "",
            };
            format!("{err}{rules}")
        }
        ClientError::InvalidQueueGroup { .. } => format!(
            "{err} (a queue group name is one token of 1-255 bytes, without '.', '*', '>', \
             spaces or control characters)"
        ),
        ClientError::Server(refusal) => {
            let hint = match refusal.error_code() {
                Some(ErrorCode::Unsupported) => {
                    " — the broker speaks protocol version 1 only: subscribe to a literal \
                     topic, such as orders.eu, without --queue"
                }
                Some(ErrorCode::BadQueueGroup) => {
                    " — a queue group name is one token of 1-255 bytes, without '.', '*', '>', \
                     spaces or control characters"
                }
                Some(ErrorCode::TooManySubscriptions) => {
                    " — the broker's limit of subscriptions per connection is reached"
                }
                _ => "",
            };
            format!("the broker at {server} refused it: {refusal}{hint}")
        }
        ClientError::TlsHandshake { reason, .. } => format!(
            "TLS handshake with {server} failed: {reason} — does --tls-ca hold the CA that \
             signed the broker's certificate, and does the certificate name the host of \
             --server (or --tls-server-name)? A broker that asks for a client certificate \
             needs --tls-cert and --tls-key"
        ),
        _ => err.to_string(),
    }
}
