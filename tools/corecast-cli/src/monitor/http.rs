//! The broker's monitoring port, asked over plain HTTP/1.1. Every failure
//! is one line that says where and what: an unreachable port, or the
//! status and the broker's `error` text for an answer that is not 2xx.

use std::{io::ErrorKind, time::Duration};

use anyhow::{anyhow, bail};
use serde::de::DeserializeOwned;

/// How long connecting to the port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take (the broker gives its cores 3 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker's monitoring port.
#[derive(Debug)]
pub struct Port {
    addr: String,
    agent: ureq::Agent,
}

impl Port {
    /// The port at `addr` (`HOST:PORT`; an `http://` in front and a `/`
    /// behind are allowed).
    pub fn new(addr: &str) -> Self {
        let addr = addr.trim();
        let addr = addr.strip_prefix("http://").unwrap_or(addr).trim_end_matches('/');
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            // The status and the broker's `error` text are read, not lost.
            .http_status_as_error(false)
            // The port is reached directly, never through HTTP_PROXY.
            .proxy(None)
            .build();
        Self { addr: addr.to_owned(), agent: config.new_agent() }
    }

    /// Its address, `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Asks for `path` (with its query string) and reads the JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("http://{}{path}", self.addr);
        let mut response = self.agent.get(&url).call().map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = response.body_mut().read_to_string().map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            bail!("{}", self.refusal(path, status, &body));
        }
        serde_json::from_str(&body).map_err(|e| {
            anyhow!(
                "the monitoring port at {} answered {path} with a document this tool cannot \
                 read ({e}); is it a corecast broker's?",
                self.addr
            )
        })
    }

    /// The line for a request that got no answer.
    fn unreachable(&self, err: &ureq::Error) -> anyhow::Error {
        let at = format!("cannot reach the monitoring port at {}", self.addr);
        match err {
            ureq::Error::Io(e) if e.kind() == ErrorKind::ConnectionRefused => anyhow!(
                "{at}: connection refused (is the broker running with http enabled? \
                 --http or CORECAST_HTTP give its address)"
            ),
            ureq::Error::Io(e) => anyhow!("{at}: {e}"),
            ureq::Error::Timeout(_) => {
                anyhow!("{at}: no answer within {REQUEST_TIMEOUT:?} (is the address right?)")
            }
            ureq::Error::Protocol(_) => anyhow!(
                "{at}: it does not answer HTTP (is it the client port? the monitoring port is \
                 the broker's `http` setting, 127.0.0.1:7422 by default)"
            ),
            ureq::Error::HostNotFound => anyhow!("{at}: no such host"),
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                anyhow!("{at}: {:?} is not an address like 127.0.0.1:7422", self.addr)
            }
            other => anyhow!("{at}: {other}"),
        }
    }

    /// The line for an answer that is not 2xx: the status and the broker's
    /// `error` text.
    fn refusal(&self, path: &str, status: ureq::http::StatusCode, body: &str) -> String {
        let text = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|doc| doc.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.lines().next().unwrap_or("").trim().to_owned());
        let hint = match status.as_u16() {
            404 => " (is this a corecast broker's monitoring port?)",
            503 => " (the broker is busy or shutting down; try again)",
            _ => "",
        };
        let text = if text.is_empty() { String::new() } else { format!(": {text}") };
        format!("the monitoring port at {} answered {path} with {status}{text}{hint}", self.addr)
    }
}
