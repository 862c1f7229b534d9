//! The web port: WebSocket sessions that carry corecast frames, and
//! server-sent-event streams, served by the cores. Its protocols are
//! driven without I/O of their own: the HTTP request a connection opens
//! with ([`upgrade`]), the WebSocket session ([`ws`]) or the SSE stream
//! ([`sse`]) after it, and what the connection task reads and writes
//! through ([`session`]). The design is `docs/design/web.md`.

mod demo;
pub(crate) mod session;
pub(crate) mod sse;
pub(crate) mod upgrade;
pub(crate) mod ws;

use serde::{Deserialize, Serialize};

/// The core's buffer for one read of a web connection's raw bytes.
pub(crate) const WEB_SCRATCH: usize = 64 << 10;

/// What a web-port connection can hold at most beyond its slot, whether it
/// became a WebSocket session or an SSE stream.
pub(crate) const SESSION_OVERHEAD: usize = if ws::SESSION_OVERHEAD > sse::SESSION_OVERHEAD {
    ws::SESSION_OVERHEAD
} else {
    sse::SESSION_OVERHEAD
};

use crate::address::ListenAddr;

/// The web port (`[web]`); none = no web port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// `HOST:PORT` every core serves WebSocket on (`SO_REUSEPORT`). Fixed
    /// at start.
    pub listen: ListenAddr,
    /// Browser origins allowed to open sessions (`https://app.example`,
    /// or `*`); empty: pages of the same host only. Requests without an
    /// `Origin` (not from a browser) are always allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Serve the port over TLS (`wss://`, `https://`) with the certificate
    /// and settings of `[tls]`, which must be set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}
