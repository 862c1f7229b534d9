//! The one HTTP request a web-port connection opens with: parsed by
//! httparse (through tungstenite's `TryParse`), routed, and answered.
//! A WebSocket upgrade is checked and answered by tungstenite; an SSE
//! request (`GET /sse?topic=…`) opens a stream; everything else gets an
//! error status and a close. The credential a request carries (its
//! `Authorization` header or `token` parameter) is read here too.

use base64::Engine;
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

use super::sse::SseRequest;

/// What the head of a request asks, once it is complete.
#[derive(Debug)]
pub(crate) enum Route {
    /// A WebSocket session: send `response` (the `101`), then frames.
    WebSocket { response: Vec<u8>, credential: Option<WebCredential> },
    /// A stream of server-sent events.
    Sse { request: SseRequest, credential: Option<WebCredential> },
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
    let query = Query::parse(request.uri().query().unwrap_or(""));
    let credential = match credential(&request, &query) {
        Ok(credential) => credential,
        Err(why) => return Some((consumed, refuse(StatusCode::BAD_REQUEST, why))),
    };
    let route = match request.uri().path() {
        "/" | "/ws" => websocket(&request, credential),
        "/sse" => sse(&request, query, credential, origins),
        path => super::demo::page(path)
            .unwrap_or_else(|| refuse(StatusCode::NOT_FOUND, &format!("no such path: {path}"))),
    };
    Some((consumed, route))
}

/// The query parameters the web port reads.
#[derive(Debug, Default)]
struct Query {
    topics: Vec<String>,
    token: Option<String>,
    encoding: Option<String>,
}

impl Query {
    /// Reads `topic` (repeated), `token` and `encoding`; other parameters
    /// (a cache buster, say) are left alone.
    fn parse(query: &str) -> Self {
        let mut parsed = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "topic" => parsed.topics.push(value.into_owned()),
                "token" => parsed.token = Some(value.into_owned()),
                "encoding" => parsed.encoding = Some(value.into_owned()),
                _ => {}
            }
        }
        parsed
    }
}

/// A typed credential (the token field of a `HELLO` with the credential
/// flag, `PROTOCOL.md` section 14) that a web request carried. Its `Debug`
/// shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct WebCredential(Vec<u8>);

impl WebCredential {
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl std::fmt::Debug for WebCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.0.split(|&b| b == b' ').next().unwrap_or_default();
        write!(f, "WebCredential({})", String::from_utf8_lossy(kind))
    }
}

/// The credential a request carries: `Authorization: Bearer` (or the
/// `token` parameter, which the header wins over) is a JWT when it has a
/// JWT's shape and a bearer token otherwise; `Authorization: Basic` is a
/// user and password. Other schemes (a proxy's own, say) are not ours and
/// are passed over.
fn credential(request: &Request, query: &Query) -> Result<Option<WebCredential>, &'static str> {
    let from_query = || query.token.as_deref().filter(|t| !t.is_empty()).map(token_credential);
    let Some(header) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(from_query());
    };
    let header = header.to_str().map_err(|_| "Authorization is not text")?;
    let (scheme, value) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if value.is_empty() {
            return Err("Authorization: Bearer needs a token");
        }
        return Ok(Some(token_credential(value)));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let engine = base64::engine::general_purpose::STANDARD;
        let pair = engine.decode(value).map_err(|_| "Authorization: Basic is not base64")?;
        match pair.iter().position(|&b| b == b':') {
            Some(user_end) if user_end > 0 => {}
            _ => return Err("Authorization: Basic needs user:password"),
        }
        let mut typed = b"password ".to_vec();
        typed.extend_from_slice(&pair);
        return Ok(Some(WebCredential(typed)));
    }
    Ok(from_query())
}

/// A token, typed: a JWT has three base64url parts, the first a JSON
/// object (`eyJ`); anything else is a bearer token.
fn token_credential(token: &str) -> WebCredential {
    let jwt = token.starts_with("eyJ") && token.split('.').count() == 3;
    let kind = if jwt { "jwt" } else { "bearer" };
    WebCredential(format!("{kind} {token}").into_bytes())
}

/// The `101` for a valid upgrade; `400` (or `426` for another version)
/// naming what is wrong otherwise.
fn websocket(request: &Request, credential: Option<WebCredential>) -> Route {
    match create_response(request) {
        Ok(response) => {
            let mut bytes = Vec::with_capacity(160);
            match write_response(&mut bytes, &response) {
                Ok(()) => Route::WebSocket { response: bytes, credential },
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

/// An SSE stream: its topics (at least one), its encoding, and the `200`
/// head it opens with. A page of an allowed other origin gets the CORS
/// header that lets it read the stream.
fn sse(
    request: &Request,
    query: Query,
    credential: Option<WebCredential>,
    origins: &Origins,
) -> Route {
    if query.topics.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "name at least one topic: /sse?topic=…");
    }
    for topic in &query.topics {
        if let Err(e) = corecast_proto::topic::validate(topic) {
            return refuse(StatusCode::BAD_REQUEST, &format!("topic {topic:?}: {e}"));
        }
    }
    let base64 = match query.encoding.as_deref() {
        None | Some("text") => false,
        Some("base64") => true,
        Some(other) => {
            return refuse(StatusCode::BAD_REQUEST, &format!("unknown encoding {other:?}"))
        }
    };
    let mut head = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache, no-store")
        .header("x-accel-buffering", "no")
        .header(header::CONNECTION, "close");
    let origin = request.headers().get(header::ORIGIN);
    if let Some(origin) = origin.filter(|_| !origins.allowed.is_empty()) {
        head =
            head.header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin).header(header::VARY, "Origin");
    }
    let mut bytes = Vec::with_capacity(200);
    match head.body(()).map(|head| write_response(&mut bytes, &head)) {
        Ok(Ok(())) => {}
        _ => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot write the response"),
    }
    let request = SseRequest { topics: query.topics, base64, head: bytes };
    Route::Sse { request, credential }
}

/// An error response with `why` as its text body, closing the connection.
fn refuse(status: StatusCode, why: &str) -> Route {
    Route::Refused { status, response: error_response(status, why) }
}

/// The bytes of an error response with `why` as its text body, closing
/// the connection.
pub(crate) fn error_response(status: StatusCode, why: &str) -> Vec<u8> {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, why.len() + 1)
        .header(header::CONNECTION, "close");
    if status == StatusCode::UPGRADE_REQUIRED {
        builder = builder.header(header::SEC_WEBSOCKET_VERSION, "13");
    }
    if status == StatusCode::UNAUTHORIZED {
        builder = builder.header(header::WWW_AUTHENTICATE, "Bearer");
    }
    let mut response = Vec::with_capacity(160 + why.len());
    if let Ok(head) = builder.body(()) {
        let _ = write_response(&mut response, &head);
    }
    response.extend_from_slice(why.as_bytes());
    response.push(b'\n');
    response
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
            Route::WebSocket { .. } | Route::Sse { .. } | Route::Page { .. } => None,
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
        let Route::WebSocket { response, .. } = route else { panic!("{route:?}") };
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

    #[test]
    fn a_token_with_a_jwts_shape_is_a_jwt() {
        let typed = |token| token_credential(token).into_bytes();
        assert_eq!(typed("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"), {
            b"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln".to_vec()
        });
        assert_eq!(typed("tok.with.dots"), b"bearer tok.with.dots".to_vec());
        assert_eq!(typed("eyJonly"), b"bearer eyJonly".to_vec());
        assert_eq!(format!("{:?}", token_credential("secret")), "WebCredential(bearer)");
    }

    #[test]
    fn sse_requests_read_their_query() {
        let request = "GET /sse?topic=a.%3E&topic=b&encoding=base64&_=17&token=t%2Bk HTTP/1.1\r\nHost: h\r\n\r\n";
        let (_, r) = route(request.as_bytes(), &Origins::default()).expect("complete");
        let Route::Sse { request, credential } = r else { panic!("{r:?}") };
        assert_eq!(request.topics, ["a.>", "b"]);
        assert!(request.base64);
        assert_eq!(credential.map(WebCredential::into_bytes), Some(b"bearer t+k".to_vec()));
    }
}
