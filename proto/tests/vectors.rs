//! Replays `vectors/v1.json` against the codec.
//!
//! The expected frames are built from the JSON, never from the codec's own
//! output, so a change of layout on either side makes these tests fail.
//!
//! Every vector is replayed against both decoders of its direction: the
//! version 1 decoder (`ClientFrame`, `ServerFrame`) and the 1.1 decoder
//! (`ClientFrame11`, `ServerFrame11`). A vector without `since` holds for
//! both alike. A vector with `"since": "1.1"` holds for the 1.1 decoder, and
//! the version 1 decoder reads its bytes as the version 1 frame with the
//! same bytes if there is one, and refuses them otherwise.

#![allow(clippy::unwrap_used)]

use corecast_proto::{
    opcode, ClientFrame, ClientFrame11, Credential, DecodeError, ErrFrame, ErrorCode, HMsg, HPub,
    HeaderError, Headers, Hello, Msg, Pub, ServerFrame, ServerFrame11, Sub, Welcome,
};
use serde_json::{Map, Value};

const FILE: &str = include_str!("../vectors/v1.json");
const SPEC: &str = include_str!("../PROTOCOL.md");
const DEFAULT_MAX_FRAME: u32 = 1_048_576;

// ------------------------------------------------------------ the file

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Client,
    Server,
}

#[derive(Debug)]
enum Expect<'v> {
    Frame(&'v Map<String, Value>),
    Error { variant: &'v str, code: u16, field: Option<&'v str>, detail: Option<&'v str> },
    Incomplete,
}

#[derive(Debug)]
struct Vector<'v> {
    name: &'v str,
    /// `"since": "1.1"`: a vector of version 1.1 (section 13).
    v11: bool,
    dir: Dir,
    bytes: Vec<u8>,
    max_frame: u32,
    expect: Expect<'v>,
}

fn root() -> Value {
    serde_json::from_str(FILE).expect("vectors/v1.json is not valid JSON")
}

fn str_of<'v>(obj: &'v Map<String, Value>, key: &str, ctx: &str) -> &'v str {
    obj.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("{ctx}: missing string {key:?}"))
}

fn uint_of(obj: &Map<String, Value>, key: &str, ctx: &str) -> u64 {
    obj.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{ctx}: missing unsigned integer {key:?}"))
}

fn bool_of(obj: &Map<String, Value>, key: &str, ctx: &str) -> bool {
    obj.get(key)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("{ctx}: missing boolean {key:?}"))
}

fn hex_of(obj: &Map<String, Value>, key: &str, ctx: &str) -> Vec<u8> {
    let s = str_of(obj, key, ctx);
    assert_eq!(s, s.to_ascii_lowercase(), "{ctx}: {key} must be lowercase hex");
    hex::decode(s).unwrap_or_else(|e| panic!("{ctx}: {key} is not hex: {e}"))
}

fn u32_of(obj: &Map<String, Value>, key: &str, ctx: &str) -> u32 {
    u32::try_from(uint_of(obj, key, ctx)).unwrap_or_else(|_| panic!("{ctx}: {key} exceeds u32"))
}

fn u16_of(obj: &Map<String, Value>, key: &str, ctx: &str) -> u16 {
    u16::try_from(uint_of(obj, key, ctx)).unwrap_or_else(|_| panic!("{ctx}: {key} exceeds u16"))
}

fn only_keys(obj: &Map<String, Value>, allowed: &[&str], ctx: &str) {
    for key in obj.keys() {
        assert!(allowed.contains(&key.as_str()), "{ctx}: unexpected key {key:?}");
    }
}

fn parse_vector(v: &Value) -> Vector<'_> {
    let obj = v.as_object().expect("every vector is an object");
    let name = str_of(obj, "name", "vector");
    only_keys(
        obj,
        &[
            "name",
            "since",
            "direction",
            "hex",
            "max_frame",
            "frame",
            "error",
            "code",
            "field",
            "detail",
            "incomplete",
        ],
        name,
    );
    let v11 = match obj.get("since") {
        None => false,
        Some(_) => {
            assert_eq!(str_of(obj, "since", name), "1.1", "{name}: since");
            true
        }
    };
    let dir = match str_of(obj, "direction", name) {
        "client" => Dir::Client,
        "server" => Dir::Server,
        other => panic!("{name}: direction {other:?}"),
    };
    let bytes = hex_of(obj, "hex", name);
    let max_frame = match obj.get("max_frame") {
        None => DEFAULT_MAX_FRAME,
        Some(_) => u32_of(obj, "max_frame", name),
    };
    let kinds = ["frame", "error", "incomplete"].iter().filter(|k| obj.contains_key(**k)).count();
    assert_eq!(kinds, 1, "{name}: needs exactly one of frame, error, incomplete");
    let common = ["name", "since", "direction", "hex", "max_frame"];
    let with =
        |more: &[&'static str]| -> Vec<&str> { common.iter().chain(more).copied().collect() };
    let expect = if let Some(frame) = obj.get("frame") {
        only_keys(obj, &with(&["frame"]), name);
        Expect::Frame(frame.as_object().unwrap_or_else(|| panic!("{name}: frame is no object")))
    } else if obj.contains_key("error") {
        only_keys(obj, &with(&["error", "code", "field", "detail"]), name);
        Expect::Error {
            variant: str_of(obj, "error", name),
            code: u16_of(obj, "code", name),
            field: obj.get("field").map(|_| str_of(obj, "field", name)),
            detail: obj.get("detail").map(|_| str_of(obj, "detail", name)),
        }
    } else {
        only_keys(obj, &with(&["incomplete"]), name);
        assert!(bool_of(obj, "incomplete", name), "{name}: incomplete must be true");
        Expect::Incomplete
    };
    Vector { name, v11, dir, bytes, max_frame, expect }
}

fn with_vectors(f: impl FnOnce(&[Vector<'_>])) {
    let root = root();
    let obj = root.as_object().expect("the file is an object");
    only_keys(obj, &["version", "vectors"], "file");
    assert_eq!(obj.get("version").and_then(Value::as_u64), Some(1), "file version");
    let list = obj.get("vectors").and_then(Value::as_array).expect("vectors array");
    let vectors: Vec<Vector<'_>> = list.iter().map(parse_vector).collect();
    f(&vectors);
}

// ------------------------------------------- expected frames from JSON

/// The one byte-string field of a frame (`token` or `payload`), decoded.
fn blob(f: &Map<String, Value>, ctx: &str) -> Vec<u8> {
    for key in ["token", "payload"] {
        if f.contains_key(key) {
            return hex_of(f, key, ctx);
        }
    }
    Vec::new()
}

/// The `headers` of an `HPUB` or `HMSG`: `[[key, value], ...]`.
fn header_pairs<'v>(f: &'v Map<String, Value>, ctx: &str) -> Vec<(&'v str, &'v str)> {
    let list = f.get("headers").and_then(Value::as_array);
    let list = list.unwrap_or_else(|| panic!("{ctx}: headers must be an array"));
    list.iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) => (k.as_str(), v.as_str()),
            _ => panic!("{ctx}: a header is [key, value], not {pair}"),
        })
        .collect()
}

/// The header block of `pairs` as section 13.6 lays it out, encoded here
/// rather than by the codec.
fn block_of(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![u8::try_from(pairs.len()).unwrap()];
    for (k, v) in pairs {
        out.push(u8::try_from(k.len()).unwrap());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&u16::try_from(v.len()).unwrap().to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// What an expected frame borrows: its byte string, its header block and
/// the secret bytes of a `HELLO`'s typed credential.
struct Owned {
    blob: Vec<u8>,
    block: Vec<u8>,
    secret: Option<Vec<u8>>,
}

impl Owned {
    fn of(f: &Map<String, Value>, ctx: &str) -> Self {
        let block =
            if f.contains_key("headers") { block_of(&header_pairs(f, ctx)) } else { Vec::new() };
        let secret = f.get("credential_value").and_then(Value::as_object).and_then(|c| {
            ["password", "token"].iter().find(|k| c.contains_key(**k)).map(|k| hex_of(c, k, ctx))
        });
        Self { blob: blob(f, ctx), block, secret }
    }

    fn headers(&self, ctx: &str) -> Headers<'_> {
        Headers::parse(&self.block).unwrap_or_else(|e| panic!("{ctx}: headers: {e}"))
    }
}

/// The keys of a frame object: those of version 1, plus the 1.1 flags of
/// its type in a 1.1 vector; `None` for a type version 1 does not have.
fn keys_of(ty: &str, dir: Dir, v11: bool) -> Option<Vec<&'static str>> {
    let (v1, flags): (&[&str], &[&str]) = match (dir, ty) {
        (Dir::Client, "HELLO") => (&["type", "version", "name", "token"], &["v1_1", "no_echo"]),
        (_, "PING" | "PONG") => (&["type", "nonce"], &[]),
        (Dir::Client, "SUB") => (&["type", "sid", "topic", "queue_group", "lossy"], &[]),
        (Dir::Client, "UNSUB") => (&["type", "sid"], &[]),
        (Dir::Client, "PUB") => (&["type", "topic", "reply_to", "payload"], &["request"]),
        (Dir::Client, "STATS") => (&["type", "nonce"], &[]),
        (Dir::Server, "WELCOME") => (
            &[
                "type",
                "version",
                "max_frame",
                "ping_interval_ms",
                "core_id",
                "connection_id",
                "server_name",
            ],
            &["v1_1"],
        ),
        (Dir::Server, "MSG") => (&["type", "sid", "topic", "reply_to", "payload"], &[]),
        (Dir::Server, "DROPPED") => (&["type", "sid", "count"], &[]),
        (Dir::Server, "ERR") => (&["type", "code", "fatal", "text"], &[]),
        (Dir::Server, "GOAWAY") => (&["type", "reason", "grace_ms"], &[]),
        (Dir::Server, "STATS_REPLY") => (&["type", "nonce", "json"], &[]),
        (_, "HPUB" | "HMSG" | "NO_RESPONDERS") if !v11 => return None,
        (Dir::Client, "HPUB") => {
            (&["type", "topic", "reply_to", "headers", "payload", "request"], &[])
        }
        (Dir::Server, "HMSG") => (&["type", "sid", "topic", "reply_to", "headers", "payload"], &[]),
        (Dir::Server, "NO_RESPONDERS") => (&["type", "topic", "reply_to"], &[]),
        _ => return None,
    };
    let flags = if v11 { flags } else { &[] };
    Some(v1.iter().chain(flags).copied().collect())
}

fn check_keys(f: &Map<String, Value>, dir: Dir, v11: bool, ctx: &str) {
    let ty = str_of(f, "type", ctx);
    let mut keys =
        keys_of(ty, dir, v11).unwrap_or_else(|| panic!("{ctx}: {ty} is no {dir:?} frame"));
    // The credential bit (section 14): optional in a 1.1 HELLO, absent =
    // clear; when set, `credential_value` says what the token field reads as.
    if v11 && dir == Dir::Client && ty == "HELLO" && f.contains_key("credential") {
        keys.push("credential");
        if bool_of(f, "credential", ctx) {
            keys.push("credential_value");
        }
    }
    only_keys(f, &keys, ctx);
    assert_eq!(f.len(), keys.len(), "{ctx}: {ty} needs the fields {keys:?}");
}

/// The credential a 1.1 `HELLO` vector says its token field holds:
/// `Some(None)` for a malformed one, `None` without the credential bit.
fn credential_of<'a>(
    f: &'a Map<String, Value>,
    own: &'a Owned,
    ctx: &str,
) -> Option<Option<Credential<'a>>> {
    let value = f.get("credential_value")?;
    let Some(obj) = value.as_object() else {
        assert!(value.is_null(), "{ctx}: credential_value is an object or null");
        return Some(None);
    };
    let credential = match str_of(obj, "kind", ctx) {
        "password" => {
            only_keys(obj, &["kind", "user", "password"], ctx);
            let password = own.secret.as_deref().expect("a password");
            Credential::Password { user: str_of(obj, "user", ctx), password }
        }
        "bearer" => {
            only_keys(obj, &["kind", "token"], ctx);
            Credential::Bearer(own.secret.as_deref().expect("a token"))
        }
        "jwt" => {
            only_keys(obj, &["kind", "jwt"], ctx);
            Credential::Jwt(str_of(obj, "jwt", ctx))
        }
        other => panic!("{ctx}: credential kind {other:?}"),
    };
    Some(Some(credential))
}

/// A 1.1 flag of the frame: read in a 1.1 vector, absent (and clear) in a
/// version 1 vector.
fn flag_of(f: &Map<String, Value>, key: &str, v11: bool, ctx: &str) -> bool {
    v11 && bool_of(f, key, ctx)
}

fn expected_client11<'a>(
    f: &'a Map<String, Value>,
    own: &'a Owned,
    v11: bool,
    ctx: &str,
) -> ClientFrame11<'a> {
    check_keys(f, Dir::Client, v11, ctx);
    match str_of(f, "type", ctx) {
        "HELLO" => ClientFrame11::Hello {
            hello: Hello {
                version: u16_of(f, "version", ctx),
                name: str_of(f, "name", ctx),
                token: &own.blob,
            },
            v1_1: flag_of(f, "v1_1", v11, ctx),
            no_echo: flag_of(f, "no_echo", v11, ctx),
            credential: v11 && f.contains_key("credential") && bool_of(f, "credential", ctx),
        },
        "PUB" => ClientFrame11::Pub {
            publish: Pub {
                topic: str_of(f, "topic", ctx),
                reply_to: str_of(f, "reply_to", ctx),
                payload: &own.blob,
            },
            request: flag_of(f, "request", v11, ctx),
        },
        "HPUB" => ClientFrame11::HPub(HPub {
            topic: str_of(f, "topic", ctx),
            reply_to: str_of(f, "reply_to", ctx),
            headers: own.headers(ctx),
            payload: &own.blob,
            request: bool_of(f, "request", ctx),
        }),
        _ => expected_client(f, &own.blob, ctx).into(),
    }
}

fn expected_server11<'a>(
    f: &'a Map<String, Value>,
    own: &'a Owned,
    v11: bool,
    ctx: &str,
) -> ServerFrame11<'a> {
    check_keys(f, Dir::Server, v11, ctx);
    match str_of(f, "type", ctx) {
        "WELCOME" => ServerFrame11::Welcome {
            welcome: welcome_of(f, ctx),
            v1_1: flag_of(f, "v1_1", v11, ctx),
        },
        "HMSG" => ServerFrame11::HMsg(HMsg {
            sid: u32_of(f, "sid", ctx),
            topic: str_of(f, "topic", ctx),
            reply_to: str_of(f, "reply_to", ctx),
            headers: own.headers(ctx),
            payload: &own.blob,
        }),
        "NO_RESPONDERS" => ServerFrame11::NoResponders {
            topic: str_of(f, "topic", ctx),
            reply_to: str_of(f, "reply_to", ctx),
        },
        _ => expected_server(f, &own.blob, ctx).into(),
    }
}

fn welcome_of<'a>(f: &'a Map<String, Value>, ctx: &str) -> Welcome<'a> {
    Welcome {
        version: u16_of(f, "version", ctx),
        max_frame: u32_of(f, "max_frame", ctx),
        ping_interval_ms: u32_of(f, "ping_interval_ms", ctx),
        core_id: u16_of(f, "core_id", ctx),
        connection_id: uint_of(f, "connection_id", ctx),
        server_name: str_of(f, "server_name", ctx),
    }
}

/// The version 1 frame of a version 1 vector's fields.
fn expected_client<'a>(f: &'a Map<String, Value>, blob: &'a [u8], ctx: &str) -> ClientFrame<'a> {
    let ty = str_of(f, "type", ctx);
    match ty {
        "HELLO" => ClientFrame::Hello(Hello {
            version: u16_of(f, "version", ctx),
            name: str_of(f, "name", ctx),
            token: blob,
        }),
        "PING" => ClientFrame::Ping { nonce: uint_of(f, "nonce", ctx) },
        "PONG" => ClientFrame::Pong { nonce: uint_of(f, "nonce", ctx) },
        "SUB" => ClientFrame::Sub(Sub {
            sid: u32_of(f, "sid", ctx),
            topic: str_of(f, "topic", ctx),
            queue_group: str_of(f, "queue_group", ctx),
            lossy: bool_of(f, "lossy", ctx),
        }),
        "UNSUB" => ClientFrame::Unsub { sid: u32_of(f, "sid", ctx) },
        "STATS" => ClientFrame::Stats { nonce: uint_of(f, "nonce", ctx) },
        "PUB" => ClientFrame::Pub(Pub {
            topic: str_of(f, "topic", ctx),
            reply_to: str_of(f, "reply_to", ctx),
            payload: blob,
        }),
        other => panic!("{ctx}: {other} is not a version 1 client frame"),
    }
}

/// The version 1 frame of a version 1 vector's fields.
fn expected_server<'a>(f: &'a Map<String, Value>, blob: &'a [u8], ctx: &str) -> ServerFrame<'a> {
    let ty = str_of(f, "type", ctx);
    match ty {
        "WELCOME" => ServerFrame::Welcome(welcome_of(f, ctx)),
        "PING" => ServerFrame::Ping { nonce: uint_of(f, "nonce", ctx) },
        "PONG" => ServerFrame::Pong { nonce: uint_of(f, "nonce", ctx) },
        "MSG" => ServerFrame::Msg(Msg {
            sid: u32_of(f, "sid", ctx),
            topic: str_of(f, "topic", ctx),
            reply_to: str_of(f, "reply_to", ctx),
            payload: blob,
        }),
        "DROPPED" => {
            ServerFrame::Dropped { sid: u32_of(f, "sid", ctx), count: uint_of(f, "count", ctx) }
        }
        "ERR" => ServerFrame::Err(ErrFrame {
            code: u16_of(f, "code", ctx),
            fatal: bool_of(f, "fatal", ctx),
            text: str_of(f, "text", ctx),
        }),
        "STATS_REPLY" => ServerFrame::StatsReply {
            nonce: uint_of(f, "nonce", ctx),
            json: str_of(f, "json", ctx),
        },
        "GOAWAY" => ServerFrame::GoAway {
            reason: u16_of(f, "reason", ctx),
            grace_ms: u32_of(f, "grace_ms", ctx),
        },
        other => panic!("{ctx}: {other} is not a version 1 server frame"),
    }
}

// ------------------------------------------------- direction-agnostic

/// A frame as the 1.1 decoder of its direction reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame<'a> {
    Client(ClientFrame11<'a>),
    Server(ServerFrame11<'a>),
}

/// A frame as the version 1 decoder of its direction reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V1Frame<'a> {
    Client(ClientFrame<'a>),
    Server(ServerFrame<'a>),
}

impl<'a> Frame<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Client(f) => f.encode(&mut out),
            Self::Server(f) => f.encode(&mut out),
        }
        out
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Client(f) => f.encoded_len(),
            Self::Server(f) => f.encoded_len(),
        }
    }

    fn to_v1(self) -> Option<V1Frame<'a>> {
        match self {
            Self::Client(f) => f.to_v1().map(V1Frame::Client),
            Self::Server(f) => f.to_v1().map(V1Frame::Server),
        }
    }

    /// The header block of an `HPUB` or `HMSG`.
    fn headers(&self) -> Option<Headers<'a>> {
        match *self {
            Self::Client(ClientFrame11::HPub(h)) => Some(h.headers),
            Self::Server(ServerFrame11::HMsg(m)) => Some(m.headers),
            _ => None,
        }
    }
}

impl<'a> V1Frame<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Client(f) => f.encode(&mut out),
            Self::Server(f) => f.encode(&mut out),
        }
        out
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Client(f) => f.encoded_len(),
            Self::Server(f) => f.encoded_len(),
        }
    }

    fn into11(self) -> Frame<'a> {
        match self {
            Self::Client(f) => Frame::Client(f.into()),
            Self::Server(f) => Frame::Server(f.into()),
        }
    }
}

/// Decodes with the 1.1 decoder of `dir`.
fn decode<'a>(
    dir: Dir,
    src: &mut &'a [u8],
    max_frame: u32,
) -> Result<Option<Frame<'a>>, DecodeError> {
    Ok(match dir {
        Dir::Client => ClientFrame11::decode(src, max_frame)?.map(Frame::Client),
        Dir::Server => ServerFrame11::decode(src, max_frame)?.map(Frame::Server),
    })
}

/// Decodes with the version 1 decoder of `dir`.
fn decode_v1<'a>(
    dir: Dir,
    src: &mut &'a [u8],
    max_frame: u32,
) -> Result<Option<V1Frame<'a>>, DecodeError> {
    Ok(match dir {
        Dir::Client => ClientFrame::decode(src, max_frame)?.map(V1Frame::Client),
        Dir::Server => ServerFrame::decode(src, max_frame)?.map(V1Frame::Server),
    })
}

fn variant(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::FrameTooShort(_) => "FrameTooShort",
        DecodeError::FrameTooLarge { .. } => "FrameTooLarge",
        DecodeError::UnknownOpcode(_) => "UnknownOpcode",
        DecodeError::ReservedFlags { .. } => "ReservedFlags",
        DecodeError::Truncated => "Truncated",
        DecodeError::TrailingBytes(_) => "TrailingBytes",
        DecodeError::BadUtf8(_) => "BadUtf8",
        DecodeError::BadBool(_) => "BadBool",
        DecodeError::TooLong { .. } => "TooLong",
        DecodeError::BadHeader(_) => "BadHeader",
        _ => "(a variant these tests do not know)",
    }
}

fn error_field(e: &DecodeError) -> Option<String> {
    match e {
        DecodeError::BadUtf8(field) | DecodeError::TooLong { field, .. } => {
            Some(format!("{field:?}"))
        }
        _ => None,
    }
}

/// The name of a [`HeaderError`] variant, as `detail` has it.
fn header_error_name(e: &HeaderError) -> String {
    let debug = format!("{e:?}");
    debug.split('(').next().unwrap().to_owned()
}

fn error_detail(e: &DecodeError) -> Option<String> {
    match e {
        DecodeError::BadHeader(h) => Some(header_error_name(h)),
        _ => None,
    }
}

/// Errors raised from the length prefix alone, before the frame is cut off.
fn is_prefix_error(e: &DecodeError) -> bool {
    matches!(e, DecodeError::FrameTooShort(_) | DecodeError::FrameTooLarge { .. })
}

/// How the version 1 decoder refuses the bytes of a 1.1 frame.
fn is_refusal_of_v11(e: &DecodeError) -> bool {
    matches!(e, DecodeError::UnknownOpcode(_) | DecodeError::ReservedFlags { .. })
}

// ---------------------------------------------------------------- tests

#[test]
fn file_is_well_formed() {
    with_vectors(|vectors| {
        assert!(vectors.len() >= 50, "only {} vectors", vectors.len());
        let mut names: Vec<&str> = vectors.iter().map(|v| v.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "vector names must be unique");
        // The vectors of 1.1 follow all those of version 1.
        let first = vectors.iter().position(|v| v.v11).expect("1.1 vectors");
        assert!(vectors[first..].iter().all(|v| v.v11), "a version 1 vector after a 1.1 one");
        for v in vectors {
            let detail = matches!(v.expect, Expect::Error { detail: Some(_), .. });
            let header = matches!(v.expect, Expect::Error { variant: "BadHeader", .. });
            assert_eq!(detail, header, "{}: detail goes with BadHeader, and only there", v.name);
        }
    });
}

#[test]
fn valid_vectors_decode_and_reencode() {
    with_vectors(|vectors| {
        let mut checked = 0;
        for v in vectors {
            let Expect::Frame(fields) = v.expect else {
                continue;
            };
            let ctx = v.name;
            let own = Owned::of(fields, ctx);
            let want = match v.dir {
                Dir::Client => Frame::Client(expected_client11(fields, &own, v.v11, ctx)),
                Dir::Server => Frame::Server(expected_server11(fields, &own, v.v11, ctx)),
            };

            // The 1.1 decoder and encoder.
            let mut src = v.bytes.as_slice();
            let got = decode(v.dir, &mut src, v.max_frame)
                .unwrap_or_else(|e| panic!("{ctx}: decode failed: {e}"))
                .unwrap_or_else(|| panic!("{ctx}: decoder wants more bytes"));
            assert_eq!(got, want, "{ctx}: decoded frame");
            assert!(src.is_empty(), "{ctx}: {} bytes left over", src.len());
            assert_eq!(want.encode(), v.bytes, "{ctx}: encoding the expected frame");
            assert_eq!(got.encode(), v.bytes, "{ctx}: re-encoding the decoded frame");
            assert_eq!(want.encoded_len(), v.bytes.len(), "{ctx}: encoded_len");
            if let Frame::Client(ClientFrame11::Hello { hello, credential, .. }) = got {
                match credential_of(fields, &own, ctx) {
                    Some(parsed) => {
                        assert!(credential, "{ctx}: credential_value without the bit");
                        assert_eq!(Credential::parse(hello.token), parsed, "{ctx}: credential");
                        if let Some(c) = parsed {
                            assert_eq!(c.to_vec(), hello.token, "{ctx}: credential encoding");
                            assert_eq!(c.encoded_len(), hello.token.len(), "{ctx}: its length");
                        }
                    }
                    None => assert!(!credential, "{ctx}: the credential bit needs its value"),
                }
            }
            if let Some(headers) = got.headers() {
                let pairs: Vec<(&str, &str)> = headers.iter().collect();
                assert_eq!(pairs, header_pairs(fields, ctx), "{ctx}: headers in order");
                assert_eq!(headers.len(), pairs.len(), "{ctx}: header count");
            }

            // The version 1 decoder and encoder.
            let want_v1 = if v.v11 {
                want.to_v1()
            } else {
                let v1 = match v.dir {
                    Dir::Client => V1Frame::Client(expected_client(fields, &own.blob, ctx)),
                    Dir::Server => V1Frame::Server(expected_server(fields, &own.blob, ctx)),
                };
                assert_eq!(v1.into11(), want, "{ctx}: a version 1 frame converted to 1.1");
                assert_eq!(want.to_v1(), Some(v1), "{ctx}: a version 1 frame back from 1.1");
                Some(v1)
            };
            let mut src = v.bytes.as_slice();
            let got_v1 = decode_v1(v.dir, &mut src, v.max_frame);
            match want_v1 {
                Some(want_v1) => {
                    assert_eq!(got_v1, Ok(Some(want_v1)), "{ctx}: version 1 decoder");
                    assert_eq!(want_v1.encode(), v.bytes, "{ctx}: version 1 encoder");
                    assert_eq!(want_v1.encoded_len(), v.bytes.len(), "{ctx}: version 1 length");
                }
                None => match got_v1 {
                    Err(e) if is_refusal_of_v11(&e) => {}
                    other => panic!("{ctx}: the version 1 decoder gave {other:?}"),
                },
            }
            assert!(src.is_empty(), "{ctx}: the version 1 decoder consumes the frame");
            checked += 1;
        }
        assert!(checked > 0);
    });
}

#[test]
fn error_vectors_fail_as_specified() {
    with_vectors(|vectors| {
        for v in vectors {
            let Expect::Error { variant: want, code, field, detail } = v.expect else {
                continue;
            };
            let ctx = v.name;
            let mut src = v.bytes.as_slice();
            let err = match decode(v.dir, &mut src, v.max_frame) {
                Err(e) => e,
                Ok(got) => panic!("{ctx}: expected {want}, got {got:?}"),
            };
            assert_eq!(variant(&err), want, "{ctx}: error variant ({err})");
            assert_eq!(err.code().as_u16(), code, "{ctx}: error code ({err})");
            assert_eq!(error_field(&err).as_deref(), field, "{ctx}: error field ({err})");
            assert_eq!(error_detail(&err).as_deref(), detail, "{ctx}: error detail ({err})");
            let consumed = v.bytes.len() - src.len();
            if is_prefix_error(&err) {
                assert_eq!(consumed, 0, "{ctx}: a prefix error consumes nothing");
            } else {
                // The frame was cut off whole, so a caller can skip it.
                assert_eq!(consumed, v.bytes.len(), "{ctx}: a body error consumes its frame");
            }

            // The version 1 decoder refuses the same bytes: alike for a
            // version 1 vector, in some way for a 1.1 one.
            let mut src = v.bytes.as_slice();
            let err_v1 = match decode_v1(v.dir, &mut src, v.max_frame) {
                Err(e) => e,
                Ok(got) => panic!("{ctx}: the version 1 decoder gave {got:?}"),
            };
            if !v.v11 {
                assert_eq!(err_v1, err, "{ctx}: version 1 decoder");
            }
            assert_eq!(v.bytes.len() - src.len(), consumed, "{ctx}: version 1 consumed");
        }
    });
}

#[test]
fn incomplete_vectors_need_more() {
    with_vectors(|vectors| {
        for v in vectors {
            let Expect::Incomplete = v.expect else {
                continue;
            };
            let mut src = v.bytes.as_slice();
            match decode(v.dir, &mut src, v.max_frame) {
                Ok(None) => {}
                other => panic!("{}: expected need-more, got {other:?}", v.name),
            }
            assert_eq!(src.len(), v.bytes.len(), "{}: input must not move", v.name);
            match decode_v1(v.dir, &mut src, v.max_frame) {
                Ok(None) => {}
                other => panic!("{}: version 1 decoder gave {other:?}", v.name),
            }
            assert_eq!(src.len(), v.bytes.len(), "{}: input must not move", v.name);
        }
    });
}

#[test]
fn every_strict_prefix_of_a_valid_vector_needs_more() {
    with_vectors(|vectors| {
        for v in vectors.iter().filter(|v| matches!(v.expect, Expect::Frame(_))) {
            for cut in 0..v.bytes.len() {
                let mut src = &v.bytes[..cut];
                match decode(v.dir, &mut src, v.max_frame) {
                    Ok(None) => {}
                    other => panic!("{}: prefix of {cut} bytes gave {other:?}", v.name),
                }
                assert_eq!(src.len(), cut, "{}: prefix of {cut} bytes moved the input", v.name);
                match decode_v1(v.dir, &mut src, v.max_frame) {
                    Ok(None) => {}
                    other => panic!("{}: version 1, prefix of {cut} gave {other:?}", v.name),
                }
            }
        }
    });
}

#[test]
fn valid_vectors_decode_back_to_back_as_one_stream() {
    with_vectors(|vectors| {
        for dir in [Dir::Client, Dir::Server] {
            for v1_only in [false, true] {
                let frames: Vec<&Vector<'_>> = vectors
                    .iter()
                    .filter(|v| v.dir == dir && matches!(v.expect, Expect::Frame(_)))
                    .filter(|v| !(v1_only && v.v11))
                    .collect();
                let stream: Vec<u8> = frames.iter().flat_map(|v| v.bytes.iter().copied()).collect();
                let mut src = stream.as_slice();
                for v in &frames {
                    let before = src.len();
                    let bytes = if v1_only {
                        let got = decode_v1(dir, &mut src, DEFAULT_MAX_FRAME);
                        got.unwrap_or_else(|e| panic!("{}: {e}", v.name)).map(|f| f.encode())
                    } else {
                        let got = decode(dir, &mut src, DEFAULT_MAX_FRAME);
                        got.unwrap_or_else(|e| panic!("{}: {e}", v.name)).map(|f| f.encode())
                    };
                    let bytes =
                        bytes.unwrap_or_else(|| panic!("{}: need-more in the stream", v.name));
                    assert_eq!(before - src.len(), v.bytes.len(), "{}: consumed", v.name);
                    assert_eq!(bytes, v.bytes, "{}: in the stream", v.name);
                }
                assert!(src.is_empty());
            }
        }
    });
}

#[test]
fn vectors_cover_every_opcode_flag_and_error_mapping() {
    with_vectors(|vectors| {
        let valid_opcodes = |dir: Dir| -> Vec<(u8, u8)> {
            vectors
                .iter()
                .filter(|v| v.dir == dir && matches!(v.expect, Expect::Frame(_)))
                .map(|v| (v.bytes[4], v.bytes[5]))
                .collect()
        };
        let client = valid_opcodes(Dir::Client);
        let server = valid_opcodes(Dir::Server);
        // Each opcode decodes in its own direction and is unknown in the other.
        let unknown_in = |dir: Dir, op: u8| {
            vectors.iter().any(|v| {
                v.dir == dir
                    && v.bytes.get(4) == Some(&op)
                    && matches!(v.expect, Expect::Error { variant: "UnknownOpcode", .. })
            })
        };
        let client_ops = [
            opcode::HELLO,
            opcode::PING,
            opcode::PONG,
            opcode::SUB,
            opcode::UNSUB,
            opcode::PUB,
            opcode::HPUB,
            opcode::STATS,
        ];
        for op in client_ops {
            assert!(client.iter().any(|&(o, _)| o == op), "no client vector for 0x{op:02x}");
            assert!(unknown_in(Dir::Server, op), "no vector sends client 0x{op:02x} as server");
        }
        let server_ops = [
            opcode::WELCOME,
            opcode::SERVER_PING,
            opcode::SERVER_PONG,
            opcode::MSG,
            opcode::DROPPED,
            opcode::HMSG,
            opcode::NO_RESPONDERS,
            opcode::ERR,
            opcode::GOAWAY,
            opcode::STATS_REPLY,
        ];
        for op in server_ops {
            assert!(server.iter().any(|&(o, _)| o == op), "no server vector for 0x{op:02x}");
            assert!(unknown_in(Dir::Client, op), "no vector sends server 0x{op:02x} as client");
        }
        // Each opcode cut short and with an undefined flag bit; each opcode
        // without a payload with trailing bytes, and each header block too.
        let has_error = |dir: Dir, op: u8, want: &str, want_detail: Option<&str>| {
            vectors.iter().any(|v| {
                v.dir == dir
                    && v.bytes.get(4) == Some(&op)
                    && matches!(v.expect, Expect::Error { variant, detail, .. }
                        if variant == want && detail == want_detail)
            })
        };
        let all = client_ops.map(|op| (Dir::Client, op)).into_iter();
        for (dir, op) in all.chain(server_ops.map(|op| (Dir::Server, op))) {
            assert!(has_error(dir, op, "Truncated", None), "no Truncated vector for 0x{op:02x}");
            assert!(
                has_error(dir, op, "ReservedFlags", None),
                "no ReservedFlags vector for 0x{op:02x}"
            );
            let payload = [opcode::PUB, opcode::MSG, opcode::HPUB, opcode::HMSG].contains(&op);
            if !payload {
                assert!(
                    has_error(dir, op, "TrailingBytes", None),
                    "no TrailingBytes for 0x{op:02x}"
                );
            }
            if op == opcode::HPUB || op == opcode::HMSG {
                for detail in ["Truncated", "TrailingBytes"] {
                    assert!(
                        has_error(dir, op, "BadHeader", Some(detail)),
                        "no BadHeader {detail} vector for 0x{op:02x}"
                    );
                }
            }
        }
        // Every flag bit, alone and with the others of its opcode.
        let flags = [
            (&client, opcode::SUB, opcode::SUB_FLAG_LOSSY),
            (&client, opcode::HELLO, opcode::HELLO_FLAG_V1_1),
            (&client, opcode::HELLO, opcode::HELLO_FLAG_V1_1 | opcode::HELLO_FLAG_NO_ECHO),
            (&client, opcode::HELLO, opcode::HELLO_FLAG_V1_1 | opcode::HELLO_FLAG_CREDENTIAL),
            (
                &client,
                opcode::HELLO,
                opcode::HELLO_FLAG_V1_1
                    | opcode::HELLO_FLAG_NO_ECHO
                    | opcode::HELLO_FLAG_CREDENTIAL,
            ),
            (&client, opcode::PUB, opcode::PUB_FLAG_REQUEST),
            (&client, opcode::HPUB, opcode::PUB_FLAG_REQUEST),
            (&server, opcode::WELCOME, opcode::WELCOME_FLAG_V1_1),
        ];
        for (frames, op, bits) in flags {
            assert!(
                frames.iter().any(|&(o, f)| o == op && f == bits),
                "no vector for opcode 0x{op:02x} with flags 0x{bits:02x}"
            );
        }

        // Every decode error, each with the code the server answers it with.
        let errors: Vec<(&str, u16, Option<&str>)> = vectors
            .iter()
            .filter_map(|v| match v.expect {
                Expect::Error { variant, code, field, .. } => Some((variant, code, field)),
                _ => None,
            })
            .collect();
        let mappings: [(&str, ErrorCode, Option<&str>); 12] = [
            ("FrameTooShort", ErrorCode::MalformedFrame, None),
            ("FrameTooLarge", ErrorCode::FrameTooLarge, None),
            ("UnknownOpcode", ErrorCode::UnknownOpcode, None),
            ("ReservedFlags", ErrorCode::MalformedFrame, None),
            ("Truncated", ErrorCode::MalformedFrame, None),
            ("TrailingBytes", ErrorCode::MalformedFrame, None),
            ("BadBool", ErrorCode::MalformedFrame, None),
            ("TooLong", ErrorCode::MalformedFrame, Some("ClientName")),
            ("BadUtf8", ErrorCode::BadTopic, Some("Topic")),
            ("BadUtf8", ErrorCode::BadTopic, Some("ReplyTo")),
            ("BadUtf8", ErrorCode::MalformedFrame, Some("ClientName")),
            ("BadHeader", ErrorCode::BadHeader, None),
        ];
        for (name, code, field) in mappings {
            assert!(
                errors.contains(&(name, code.as_u16(), field)),
                "no error vector for {name} {field:?} -> {code}"
            );
        }
        for &(name, code, _) in &errors {
            let code = ErrorCode::from_u16(code).unwrap_or_else(|| panic!("{name}: code {code}"));
            // Only bad UTF-8 in a topic or reply-to lets the session go on.
            assert_eq!(!code.is_fatal(), code == ErrorCode::BadTopic, "{name}: {code}");
        }
        // Every way a header block can be bad, as the codec names them
        // (BlockTooLong only arises when building one).
        let header_errors = [
            HeaderError::Truncated,
            HeaderError::TrailingBytes(1),
            HeaderError::TooMany(65),
            HeaderError::EmptyKey,
            HeaderError::KeyTooLong(65),
            HeaderError::BadKeyByte(b':'),
            HeaderError::ValueTooLong(4097),
            HeaderError::BadValueUtf8,
            HeaderError::BadValueChar('\n'),
        ];
        for e in header_errors {
            let name = header_error_name(&e);
            assert!(
                vectors.iter().any(
                    |v| matches!(v.expect, Expect::Error { detail: Some(d), .. } if d == name)
                ),
                "no BadHeader vector with detail {name}"
            );
        }

        // Every error code of the table as an ERR frame: number, spec name,
        // and the fatal byte the server sets for it.
        for code in ErrorCode::ALL {
            let found = vectors.iter().any(|v| {
                let Expect::Frame(f) = v.expect else {
                    return false;
                };
                v.dir == Dir::Server
                    && f.get("type").and_then(Value::as_str) == Some("ERR")
                    && f.get("code").and_then(Value::as_u64) == Some(u64::from(code.as_u16()))
                    && f.get("fatal").and_then(Value::as_bool) == Some(code.is_fatal())
                    && f.get("text").and_then(Value::as_str) == Some(code.name())
            });
            assert!(found, "no ERR vector for {code} with fatal = {}", code.is_fatal());
            assert_eq!(code.is_fatal(), code.as_u16() < 100, "{code}");
        }

        for dir in [Dir::Client, Dir::Server] {
            for v11 in [false, true] {
                assert!(
                    vectors.iter().any(|v| v.dir == dir
                        && v.v11 == v11
                        && matches!(v.expect, Expect::Incomplete)),
                    "no incomplete vector for {dir:?} (1.1: {v11})"
                );
            }
        }
    });
}

#[test]
fn specification_example_matches_the_vectors() {
    with_vectors(|vectors| {
        let examples: Vec<&Vector<'_>> =
            vectors.iter().filter(|v| v.name.starts_with("example ")).collect();
        let lines: Vec<(Dir, Vec<u8>)> = SPEC
            .lines()
            .filter_map(|line| {
                let (dir, rest) = if let Some(rest) = line.strip_prefix("C->S ") {
                    (Dir::Client, rest)
                } else if let Some(rest) = line.strip_prefix("S->C ") {
                    (Dir::Server, rest)
                } else {
                    return None;
                };
                let hex: String = rest.split("  ").next().unwrap().split_whitespace().collect();
                Some((dir, hex::decode(&hex).unwrap_or_else(|e| panic!("{line}: {e}"))))
            })
            .collect();
        assert!(!examples.is_empty(), "no \"example …\" vectors in vectors/v1.json");
        assert_eq!(lines.len(), examples.len(), "example lines in PROTOCOL.md");
        for ((dir, bytes), v) in lines.iter().zip(&examples) {
            assert_eq!(*dir, v.dir, "{}: direction in PROTOCOL.md", v.name);
            assert_eq!(*bytes, v.bytes, "{}: bytes in PROTOCOL.md", v.name);
        }
    });
}

/// Section 14: a vector for each kind of credential, for a malformed one
/// (a well-formed `HELLO` whose token reads as no credential), and for the
/// credential bit without the 1.1 bit, which is refused.
#[test]
fn vectors_cover_each_credential_kind_and_the_refusals() {
    with_vectors(|vectors| {
        let mut kinds = Vec::new();
        let mut malformed = 0;
        for v in vectors {
            let Expect::Frame(f) = v.expect else { continue };
            if f.get("credential").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            assert!(v.v11, "{}: the credential bit is 1.1", v.name);
            match f.get("credential_value").and_then(Value::as_object) {
                Some(c) => kinds.push(str_of(c, "kind", v.name)),
                None => malformed += 1,
            }
        }
        for kind in [Credential::PASSWORD, Credential::BEARER, Credential::JWT] {
            assert!(kinds.contains(&kind), "no vector for a {kind} credential");
        }
        assert!(malformed >= 5, "only {malformed} malformed credential vectors");
        let refused = vectors.iter().any(|v| {
            v.bytes.get(4) == Some(&opcode::HELLO)
                && v.bytes.get(5) == Some(&opcode::HELLO_FLAG_CREDENTIAL)
                && matches!(v.expect, Expect::Error { variant: "ReservedFlags", code: 1, .. })
        });
        assert!(refused, "no vector refuses the credential bit without the 1.1 bit");
    });
}

/// The error table in PROTOCOL.md lists every code with its name and
/// fatality as the codec has them.
#[test]
fn specification_error_table_matches_the_codec() {
    for code in ErrorCode::ALL {
        let fatal = if code.is_fatal() { "fatal" } else { "non-fatal" };
        let row = format!("| {} | `{}` | {fatal} |", code.as_u16(), code.name());
        assert!(SPEC.contains(&row), "PROTOCOL.md lacks the row {row:?}");
    }
}

// ----------------------------------------------------------------- fuzz

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

const OPCODES: [u8; 20] = [
    0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0x20, 0x22, 0x30, 0x81, 0x82, 0x83, 0x90, 0x91, 0x92, 0x93,
    0xA0, 0xE0, 0xE1, 0xFF,
];

/// Decodes `data` frame by frame with both decoders of `dir` side by side,
/// and checks what any outcome promises: a frame re-encodes to its bytes,
/// an error consumes its frame (or nothing, from the prefix), and the 1.1
/// decoder reads everything the version 1 decoder reads, alike.
fn check_stream(dir: Dir, data: &[u8], max_frame: u32) {
    let mut src = data;
    loop {
        let before = src;
        let mut src_v1 = src;
        let got = decode(dir, &mut src, max_frame);
        let got_v1 = decode_v1(dir, &mut src_v1, max_frame);
        assert_eq!(src.len(), src_v1.len(), "both decoders consume alike: {got:?} / {got_v1:?}");
        match (&got, &got_v1) {
            (Ok(Some(frame)), Ok(Some(v1))) => {
                assert_eq!(v1.into11(), *frame, "the 1.1 reading of a version 1 frame");
                assert_eq!(frame.to_v1(), Some(*v1), "the version 1 reading of {frame:?}");
            }
            (Ok(Some(frame)), Err(e)) => {
                assert_eq!(frame.to_v1(), None, "{frame:?} refused by version 1 ({e})");
                assert!(is_refusal_of_v11(e), "{frame:?} refused by version 1 with {e}");
            }
            (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
            _ => panic!("the decoders disagree: {got:?} / {got_v1:?}"),
        }
        match got {
            Ok(None) => {
                assert_eq!(src.len(), before.len(), "need-more moved the input");
                return;
            }
            Ok(Some(frame)) => {
                let used = before.len() - src.len();
                assert!(used >= 6, "a frame is at least 6 bytes");
                assert_eq!(frame.encode(), &before[..used], "re-encoding {frame:?}");
                assert_eq!(frame.encoded_len(), used, "encoded_len of {frame:?}");
            }
            Err(e) => {
                let _ = e.code();
                let _ = e.to_string();
                if is_prefix_error(&e) {
                    assert_eq!(src.len(), before.len(), "{e}: prefix error moved the input");
                    return;
                }
                let len = u32::from_le_bytes([before[0], before[1], before[2], before[3]]);
                assert!(len <= max_frame, "{e}: frame above max_frame was cut off");
                assert_eq!(before.len() - src.len(), 4 + len as usize, "{e}: consumed");
            }
        }
    }
}

#[test]
fn fuzz_random_bytes() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let len = rng.below(65);
        let mut data: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Make most inputs look like frames, so the body parsers get exercised.
        if len >= 6 && rng.below(4) != 0 {
            let frame_len = if rng.below(2) == 0 { len - 4 } else { rng.below(len) };
            data[..4].copy_from_slice(&(frame_len as u32).to_le_bytes());
            data[4] = OPCODES[rng.below(OPCODES.len())];
            if rng.below(2) == 0 {
                data[5] = 0;
            }
        }
        let max_frame = [2, 16, 64, DEFAULT_MAX_FRAME, u32::MAX][rng.below(5)];
        for dir in [Dir::Client, Dir::Server] {
            check_stream(dir, &data, max_frame);
        }
    }
}

#[test]
fn fuzz_mutated_vectors() {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    with_vectors(|vectors| {
        let mut runs = 0;
        for v in vectors {
            for _ in 0..150 {
                let mut data = v.bytes.clone();
                for _ in 0..=rng.below(3) {
                    match rng.below(6) {
                        0 if !data.is_empty() => {
                            let i = rng.below(data.len());
                            data[i] ^= 1 << rng.below(8);
                        }
                        1 if !data.is_empty() => {
                            let i = rng.below(data.len());
                            data[i] = rng.byte();
                        }
                        2 => data.truncate(rng.below(data.len() + 1)),
                        3 => data.extend((0..rng.below(8)).map(|_| rng.byte())),
                        4 => {
                            let i = rng.below(data.len() + 1);
                            data.insert(i, rng.byte());
                        }
                        _ => {}
                    }
                }
                // Often keep the length prefix honest, so the body is parsed.
                if data.len() >= 6 && rng.below(2) == 0 {
                    let len = (data.len() - 4) as u32;
                    data[..4].copy_from_slice(&len.to_le_bytes());
                }
                for dir in [Dir::Client, Dir::Server] {
                    check_stream(dir, &data, v.max_frame);
                }
                runs += 1;
            }
        }
        assert!(runs > 10_000);
    });
}

/// `Msg::SID_AT` names the bytes that differ between two `MSG` frames
/// that differ only in their sid.
#[test]
fn msg_sid_sits_at_sid_at() {
    let encode = |sid| {
        let mut out = Vec::new();
        let msg = Msg { sid, topic: "a.b", reply_to: "r", payload: b"xyz" };
        ServerFrame::Msg(msg).encode(&mut out);
        out
    };
    let (a, b) = (encode(0), encode(0x0403_0201));
    let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    assert_eq!(differ, (Msg::SID_AT..Msg::SID_AT + 4).collect::<Vec<_>>());
    assert_eq!(&b[Msg::SID_AT..Msg::SID_AT + 4], &[1, 2, 3, 4]);
}

/// `HMsg::SID_AT` names the bytes that differ between two `HMSG` frames
/// that differ only in their sid.
#[test]
fn hmsg_sid_sits_at_sid_at() {
    let block = [1, 1, b'k', 1, 0, b'v'];
    let headers = Headers::parse(&block).unwrap();
    let encode = |sid| {
        let mut out = Vec::new();
        let msg = HMsg { sid, topic: "a.b", reply_to: "r", headers, payload: b"xyz" };
        ServerFrame11::HMsg(msg).encode(&mut out);
        out
    };
    let (a, b) = (encode(0), encode(0x0403_0201));
    let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    assert_eq!(differ, (HMsg::SID_AT..HMsg::SID_AT + 4).collect::<Vec<_>>());
    assert_eq!(&b[HMsg::SID_AT..HMsg::SID_AT + 4], &[1, 2, 3, 4]);
}
