//! The demo page at `/demo/`: a chat lobby and a live game-state panel
//! over the JavaScript client, whose modules it serves beside it. Its
//! files are compiled into the binary; each answer closes the connection.

use tungstenite::handshake::server::write_response;
use tungstenite::http::{header, Response, StatusCode};

use super::upgrade::Route;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The files under `/demo/`: name, content type, bytes. The client's
/// modules keep their relative imports under `corecast/`.
const FILES: &[(&str, &str, &[u8])] = &[
    ("", HTML, include_bytes!("../../web/demo/index.html")),
    ("demo.js", JS, include_bytes!("../../web/demo/demo.js")),
    ("demo.css", CSS, include_bytes!("../../web/demo/demo.css")),
    ("corecast/index.js", JS, include_bytes!("../../clients/js/index.js")),
    ("corecast/src/client.js", JS, include_bytes!("../../clients/js/src/client.js")),
    ("corecast/src/codec.js", JS, include_bytes!("../../clients/js/src/codec.js")),
    ("corecast/src/errors.js", JS, include_bytes!("../../clients/js/src/errors.js")),
];

/// The answer to a request for `path` when it is one of the demo's (`/demo`
/// is sent on to `/demo/`, where relative imports work); `None` otherwise.
pub(crate) fn page(path: &str) -> Option<Route> {
    if path == "/demo" {
        return Some(answer(StatusCode::PERMANENT_REDIRECT, "text/plain", b"see /demo/\n"));
    }
    let name = path.strip_prefix("/demo/")?;
    let name = if name == "index.html" { "" } else { name };
    let (_, kind, body) = FILES.iter().find(|(file, ..)| *file == name)?;
    Some(answer(StatusCode::OK, kind, body))
}

/// A complete response, head and body, closing the connection. It waits
/// whole in the session's own buffer, so each file stays small (see the
/// test below).
fn answer(status: StatusCode, kind: &str, body: &[u8]) -> Route {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, kind)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONNECTION, "close");
    if status.is_redirection() {
        builder = builder.header(header::LOCATION, "/demo/");
    }
    let mut response = Vec::with_capacity(256 + body.len());
    if let Ok(head) = builder.body(()) {
        let _ = write_response(&mut response, &head);
    }
    response.extend_from_slice(body);
    Route::Page { status, response }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::ws::MAX_MESSAGE;

    fn served(path: &str) -> Option<(StatusCode, String)> {
        match page(path)? {
            Route::Page { status, response } => {
                Some((status, String::from_utf8(response).expect("text")))
            }
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn the_page_and_the_client_modules_are_served() {
        for (path, kind) in [
            ("/demo/", HTML),
            ("/demo/index.html", HTML),
            ("/demo/demo.css", CSS),
            ("/demo/corecast/src/codec.js", JS),
        ] {
            let (status, text) = served(path).expect(path);
            assert_eq!(status, StatusCode::OK, "{path}");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            assert!(head.contains(&format!("content-type: {kind}")), "{path}: {head}");
            assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
            assert!(head.contains("cache-control: no-cache"), "{head}");
            assert!(head.contains("connection: close"), "{head}");
        }
    }

    #[test]
    fn the_bare_path_is_sent_on_and_others_are_not_the_demos() {
        let (status, text) = served("/demo").expect("redirect");
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert!(text.contains("location: /demo/\r\n"), "{text}");
        for other in ["/demo/missing", "/demo/corecast/", "/demox", "/", "/demo/../Cargo.toml"] {
            assert!(page(other).is_none(), "{other}");
        }
    }

    /// A response waits whole in the session's own buffer: each stays
    /// within a WebSocket message's bound, which the memory bound counts
    /// for every slot.
    #[test]
    fn every_response_is_small() {
        for (name, ..) in FILES {
            let Some(Route::Page { response, .. }) = page(&format!("/demo/{name}")) else {
                panic!("{name} not served")
            };
            assert!(response.len() <= MAX_MESSAGE, "{name}: {} bytes", response.len());
        }
    }
}
