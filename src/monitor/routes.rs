//! Paths to handlers, and the shape of every answer: JSON with a status,
//! or the Prometheus text. A bad path, method or query gets its status and
//! a JSON `error` that says what was wrong.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE},
    Method, Request, Response, StatusCode,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{metrics, views};
use crate::broker::Control;

/// What the port serves, listed at `/` and with a 404.
const PATHS: &[&str] = &["/metrics", "/healthz", "/stats", "/connz", "/subsz"];

/// An answer, before it becomes a response.
pub(super) enum Answer {
    /// A JSON document, written out, with a status.
    Json(StatusCode, Vec<u8>),
    /// The Prometheus text exposition.
    Metrics(String),
}

impl Answer {
    /// `200` with `value` as JSON.
    pub(super) fn ok(value: &impl Serialize) -> Self {
        Self::json(StatusCode::OK, value)
    }

    /// `status` with `value` as JSON, written straight from the value (a
    /// page of `/connz` is thousands of records: no tree in between).
    pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Self::Json(status, body)
            }
            Err(e) => Self::Json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string().into_bytes()),
        }
    }

    /// `status` with `{"error": text}`.
    pub(super) fn error(status: StatusCode, text: impl Into<String>) -> Self {
        Self::json(status, &serde_json::json!({ "error": text.into() }))
    }

    /// `503`: some core did not answer.
    pub(super) fn unavailable(text: impl Into<String>) -> Self {
        Self::error(StatusCode::SERVICE_UNAVAILABLE, text)
    }
}

pub(super) async fn handle<B>(control: &Control, request: Request<B>) -> Response<Full<Bytes>> {
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        let mut response = respond(Answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not served here; use GET", request.method()),
        ));
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let query = request.uri().query().unwrap_or("");
    let answer = match request.uri().path() {
        "/" => Answer::ok(&serde_json::json!({ "paths": PATHS })),
        "/metrics" => metrics::scrape(control).await,
        "/healthz" => views::health(control).await,
        "/stats" => views::stats(control),
        "/connz" => match parse(query) {
            Ok(q) => views::connz(control, q).await,
            Err(answer) => answer,
        },
        "/subsz" => match parse(query) {
            Ok(q) => views::subsz(control, q).await,
            Err(answer) => answer,
        },
        path => Answer::error(
            StatusCode::NOT_FOUND,
            format!("no such path: {path}; served: {}", PATHS.join(" ")),
        ),
    };
    let mut response = respond(answer);
    if head {
        *response.body_mut() = Full::default();
    }
    response
}

/// The query string as `T`; a `400` naming the problem otherwise.
fn parse<T: DeserializeOwned>(query: &str) -> Result<T, Answer> {
    serde_urlencoded::from_str(query)
        .map_err(|e| Answer::error(StatusCode::BAD_REQUEST, format!("bad query {query:?}: {e}")))
}

fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match answer {
        Answer::Json(status, body) => (status, "application/json", body),
        Answer::Metrics(text) => {
            (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text.into_bytes())
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
