//! The one HTTP request a web-port connection opens with: parsed by
//! httparse (through tungstenite's `TryParse`), routed, and answered.
//! A WebSocket upgrade is checked and answered by tungstenite; everything
//! else gets an error status and a close.

use tungstenite::http::{header, HeaderValue, Response, StatusCode};
use tungstenite::{
    error::ProtocolError,
    handshake::{
        machine::TryParse,
        server::{create_response, write_response, Request},
    },
};

/// Most bytes of request head read before `431`.
pub(crate) const MAX_HEAD: usize = 8 << 10;

/// What the head of a request asks, once it is complete.
#[derive(Debug)]
pub(crate) enum Route {
    /// A WebSocket session: send `response` (the `101`), then frames.
    WebSocket { response: Vec<u8> },
    /// Refused: send `response` (its body says why) and close.
    Refused { status: StatusCode, response: Vec<u8> },
    /// A file of the demo page: send `response` and close.
    Page { status: StatusCode, response: Vec<u8> },
}

/// Which browser origins may open sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Origins {
    /// Exact origins (`https://app.example:8443`), or `*` for any; empty:
    /// only pages served by the same host as the port.
    allowed: Vec<String>,
}

impl Origins {
    pub(crate) fn new(allowed: Vec<String>) -> Self {
        Self { allowed }
    }

    /// Whether a request with `origin` (none: not a browser) to `host` may
    /// go on.
    pub(crate) fn admit(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self.allowed.is_empty() {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            return host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
        }
        self.allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    }
}

/// Reads the head at the front of `buf`: `None` while it is incomplete
/// (and within [`MAX_HEAD`]), else what to answer and how many bytes the
/// head took (what follows is the session's).
pub(crate) fn route(buf: &[u8], origins: &Origins) -> Option<(usize, Route)> {
    let (consumed, request) = match Request::try_parse(buf) {
        Ok(Some(parsed)) => parsed,
        Ok(None) if buf.len() > MAX_HEAD => {
            return Some((
                buf.len(),
                refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"),
            ));
        }
        Ok(None) => return None,
        Err(e) => {
            return Some((buf.len(), refuse(StatusCode::BAD_REQUEST, &format!("bad request: {e}"))))
        }
    };
    if consumed > MAX_HEAD {
        return Some((
            consumed,
            refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"),
        ));
    }
    let text = |name| request.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if !origins.admit(text(header::ORIGIN), text(header::HOST)) {
        return Some((consumed, refuse(StatusCode::FORBIDDEN, "origin not allowed")));
    }
    let route = match request.uri().path() {
        "/" | "/ws" => websocket(&request),
        path => super::demo::page(path)
            .unwrap_or_else(|| refuse(StatusCode::NOT_FOUND, &format!("no such path: {path}"))),
    };
    Some((consumed, route))
}

/// The `101` for a valid upgrade; `400` (or `426` for another version)
/// naming what is wrong otherwise.
fn websocket(request: &Request) -> Route {
    match create_response(request) {
        Ok(response) => {
            let mut bytes = Vec::with_capacity(160);
            match write_response(&mut bytes, &response) {
                Ok(()) => Route::WebSocket { response: bytes },
                Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Err(tungstenite::Error::Protocol(ProtocolError::MissingSecWebSocketVersionHeader)) => {
            refuse(
                StatusCode::UPGRADE_REQUIRED,
                "a WebSocket upgrade needs Sec-WebSocket-Version: 13",
            )
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, &format!("not a WebSocket upgrade: {e}")),
    }
}

/// An error response with `why` as its text body, closing the connection.
fn refuse(status: StatusCode, why: &str) -> Route {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, why.len() + 1)
        .header(header::CONNECTION, "close");
    if status == StatusCode::UPGRADE_REQUIRED {
        builder = builder.header(header::SEC_WEBSOCKET_VERSION, "13");
    }
    let mut response = Vec::with_capacity(160 + why.len());
    if let Ok(head) = builder.body(()) {
        let _ = write_response(&mut response, &head);
    }
    response.extend_from_slice(why.as_bytes());
    response.push(b'\n');
    Route::Refused { status, response }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: broker:7480\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    fn with(extra: &str) -> Vec<u8> {
        format!("{UPGRADE}{extra}\r\n").into_bytes()
    }

    fn status(route: &Route) -> Option<StatusCode> {
        match route {
            Route::WebSocket { .. } | Route::Page { .. } => None,
            Route::Refused { status, .. } => Some(*status),
        }
    }

    #[test]
    fn an_upgrade_gets_its_101_and_what_follows_stays() {
        let mut buf = with("");
        let head = buf.len();
        buf.extend_from_slice(b"\x82\x80frame");
        let (consumed, route) = route(&buf, &Origins::default()).expect("complete");
        assert_eq!(consumed, head);
        let Route::WebSocket { response } = route else { panic!("{route:?}") };
        let text = String::from_utf8(response).expect("text");
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
    }

    #[test]
    fn an_incomplete_head_waits_until_it_is_too_large() {
        let buf = UPGRADE.as_bytes();
        assert!(route(buf, &Origins::default()).is_none());
        let big = format!("{UPGRADE}X-Pad: {}\r\n", "a".repeat(MAX_HEAD));
        let (_, r) = route(big.as_bytes(), &Origins::default()).expect("refused");
        assert_eq!(status(&r), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }

    #[test]
    fn bad_upgrades_are_refused_with_their_reason() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", StatusCode::BAD_REQUEST),
            ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", StatusCode::UPGRADE_REQUIRED),
            ("POST / HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            ("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::NOT_FOUND),
            ("\x00\x01garbage\r\n\r\n", StatusCode::BAD_REQUEST),
        ];
        for (request, expected) in cases {
            let (_, r) = route(request.as_bytes(), &Origins::default()).expect("complete");
            assert_eq!(status(&r), Some(expected), "{request:?}: {r:?}");
            let Route::Refused { response, .. } = r else { unreachable!() };
            let text = String::from_utf8_lossy(&response);
            assert!(
                text.contains("Connection: close") || text.contains("connection: close"),
                "{text}"
            );
        }
    }

    #[test]
    fn origins_are_the_same_host_unless_listed() {
        let same = Origins::default();
        assert!(same.admit(None, Some("b:7480")));
        assert!(same.admit(Some("http://b:7480"), Some("b:7480")));
        assert!(!same.admit(Some("http://evil.example"), Some("b:7480")));
        let listed = Origins::new(vec!["https://app.example".into()]);
        assert!(listed.admit(Some("https://app.example"), Some("b")));
        assert!(!listed.admit(Some("https://other.example"), Some("b")));
        assert!(Origins::new(vec!["*".into()]).admit(Some("http://any"), None));
        let (_, r) = route(&with("Origin: http://evil.example\r\n"), &same).expect("complete");
        assert_eq!(status(&r), Some(StatusCode::FORBIDDEN));
    }
}
