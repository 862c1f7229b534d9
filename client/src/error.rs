//! What can go wrong when talking to a broker.

use std::{fmt, io, time::Duration};

use corecast_proto::{DecodeError, ErrorCode, QueueGroupError, TopicError};

/// An `ERR` frame sent by the broker, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The code on the wire; see [`ServerError::error_code`].
    pub code: u16,
    /// Whether the broker closes the connection after this frame.
    pub fatal: bool,
    /// The broker's human-readable detail; may be empty.
    pub text: String,
}

impl ServerError {
    /// The code as a known [`ErrorCode`], or `None` for a code from a newer
    /// protocol version.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }

    /// Whether this code can only be the answer to a `SUB`, so that a client
    /// can tie it to the subscription it just asked for.
    pub(crate) fn refuses_subscription(&self) -> bool {
        matches!(
            self.error_code(),
            Some(
                ErrorCode::TooManySubscriptions
                    | ErrorCode::DuplicateSid
                    | ErrorCode::Unsupported
                    | ErrorCode::BadTopic
            )
        )
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error_code() {
            Some(code) => write!(f, "{code}")?,
            None => write!(f, "error {}", self.code)?,
        }
        if !self.text.is_empty() {
            write!(f, ": {}", self.text)?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Why a topic or reply-to cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicProblem {
    /// It breaks the topic rules (length, characters, tokens, wildcards).
    #[error(transparent)]
    Rules(#[from] TopicError),
    /// It is a wildcard, which names many topics and cannot be published to.
    #[error("a wildcard topic cannot be published to")]
    Wildcard,
    /// It starts with `$`, which is reserved for the broker.
    #[error("topics starting with '$' are reserved for the broker")]
    Reserved,
}

/// Everything a client operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address as given.
        addr: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The broker did not complete the connection and handshake in time.
    #[error("cannot connect to {addr}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The address as given.
        addr: String,
        /// The connect timeout in force.
        timeout: Duration,
    },
    /// The broker refused the handshake (auth failed, server full, ...).
    #[error("the broker refused the connection: {0}")]
    Refused(ServerError),
    /// The broker refused an operation with a non-fatal `ERR`.
    #[error("the broker refused the request: {0}")]
    Server(ServerError),
    /// A topic or reply-to breaks the rules; nothing was sent.
    #[error("invalid {field} {value:?}: {problem}")]
    InvalidTopic {
        /// `"topic"` or `"reply-to"`.
        field: &'static str,
        /// The offending string.
        value: String,
        /// Which rule it breaks.
        #[source]
        problem: TopicProblem,
    },
    /// A queue group name is not one literal token of 1-255 bytes; nothing
    /// was sent.
    #[error("invalid queue group {name:?}: {problem}")]
    InvalidQueueGroup {
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        #[source]
        problem: QueueGroupError,
    },
    /// The payload does not fit in one frame of the broker's `max_frame`.
    #[error(
        "payload of {len} bytes is too large: the broker accepts at most {max} payload bytes \
         with this topic and reply-to (max_frame {max_frame})"
    )]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload that fits with this topic and reply-to.
        max: usize,
        /// The broker's `max_frame`, from `WELCOME`.
        max_frame: u32,
    },
    /// An option is out of range (a client name over 64 bytes, say).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The message has no reply-to, so it cannot be answered.
    #[error("the message has no reply-to")]
    NoReplyTo,
    /// The send buffer is full (from the `try_` operations, which never wait).
    #[error("the send buffer is full")]
    SendBufferFull,
    /// An operation did not complete in time.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// How long the operation waited.
        after: Duration,
        /// What it was waiting for.
        waiting_for: &'static str,
    },
    /// The connection was lost before the operation completed; the client
    /// reconnects on its own if reconnection is enabled.
    #[error("the connection to the broker was lost")]
    ConnectionLost,
    /// The client was closed, or gave up reconnecting.
    #[error("the client is closed")]
    Closed,
    /// The broker sent bytes that are not a valid server frame.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Nobody would receive the request: the broker said so at once
    /// (`NO_RESPONDERS`, protocol 1.1), so the request fails without
    /// waiting for its timeout.
    #[error("no responders for {topic}")]
    NoResponders {
        /// The request's topic.
        topic: String,
    },
    /// The session does not support what was asked (headers need protocol
    /// 1.1, and the broker granted only version 1).
    #[error("{0} need protocol 1.1, and the broker speaks version 1 only")]
    Unsupported(&'static str),
    /// A TLS setting cannot be used: a PEM file that cannot be read or holds
    /// no certificate or key, a key that does not match its certificate, a
    /// server name that is not one. Nothing was sent.
    #[error("TLS setting: {0}")]
    TlsConfig(String),
    /// The TLS handshake failed: most often the broker's certificate does
    /// not verify against the CA roots given (another CA, another name,
    /// expired), or the broker refused the client's certificate.
    #[error("TLS handshake with {addr} failed: {reason}")]
    TlsHandshake {
        /// The address as given.
        addr: String,
        /// What TLS said.
        reason: String,
    },
    /// An I/O error outside of connecting.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        Self::Protocol(e.to_string())
    }
}

impl ClientError {
    /// Whether retrying the same operation later could succeed: the error is
    /// about the connection or time, not about what was asked.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::SendBufferFull
            | Self::Timeout { .. }
            | Self::ConnectionLost
            | Self::Io(_) => true,
            Self::Refused(e) => e.error_code() == Some(ErrorCode::ServerFull),
            _ => false,
        }
    }
}
