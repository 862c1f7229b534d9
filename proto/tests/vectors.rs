//! Replays `vectors/v1.json` against the codec.
//!
//! The expected frames are built from the JSON, never from the codec's own
//! output, so a change of layout on either side makes these tests fail.

#![allow(clippy::unwrap_used)]

use corecast_proto::{
    opcode, ClientFrame, DecodeError, ErrFrame, ErrorCode, Hello, Msg, Pub, ServerFrame, Sub,
    Welcome,
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
    Error { variant: &'v str, code: u16, field: Option<&'v str> },
    Incomplete,
}

#[derive(Debug)]
struct Vector<'v> {
    name: &'v str,
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
        &["name", "direction", "hex", "max_frame", "frame", "error", "code", "field", "incomplete"],
        name,
    );
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
    let expect = if let Some(frame) = obj.get("frame") {
        only_keys(obj, &["name", "direction", "hex", "max_frame", "frame"], name);
        Expect::Frame(frame.as_object().unwrap_or_else(|| panic!("{name}: frame is no object")))
    } else if obj.contains_key("error") {
        only_keys(obj, &["name", "direction", "hex", "max_frame", "error", "code", "field"], name);
        Expect::Error {
            variant: str_of(obj, "error", name),
            code: u16_of(obj, "code", name),
            field: obj.get("field").map(|_| str_of(obj, "field", name)),
        }
    } else {
        only_keys(obj, &["name", "direction", "hex", "max_frame", "incomplete"], name);
        assert!(bool_of(obj, "incomplete", name), "{name}: incomplete must be true");
        Expect::Incomplete
    };
    Vector { name, dir, bytes, max_frame, expect }
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

fn expected_client<'a>(f: &'a Map<String, Value>, blob: &'a [u8], ctx: &str) -> ClientFrame<'a> {
    let ty = str_of(f, "type", ctx);
    let keys: &[&str] = match ty {
        "HELLO" => &["type", "version", "name", "token"],
        "PING" | "PONG" => &["type", "nonce"],
        "SUB" => &["type", "sid", "topic", "queue_group", "lossy"],
        "UNSUB" => &["type", "sid"],
        "PUB" => &["type", "topic", "reply_to", "payload"],
        "STATS" => &["type", "nonce"],
        other => panic!("{ctx}: {other} is not a client frame"),
    };
    only_keys(f, keys, ctx);
    assert_eq!(f.len(), keys.len(), "{ctx}: {ty} needs the fields {keys:?}");
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
        _ => ClientFrame::Pub(Pub {
            topic: str_of(f, "topic", ctx),
            reply_to: str_of(f, "reply_to", ctx),
            payload: blob,
        }),
    }
}

fn expected_server<'a>(f: &'a Map<String, Value>, blob: &'a [u8], ctx: &str) -> ServerFrame<'a> {
    let ty = str_of(f, "type", ctx);
    let keys: &[&str] = match ty {
        "WELCOME" => &[
            "type",
            "version",
            "max_frame",
            "ping_interval_ms",
            "core_id",
            "connection_id",
            "server_name",
        ],
        "PING" | "PONG" => &["type", "nonce"],
        "MSG" => &["type", "sid", "topic", "reply_to", "payload"],
        "DROPPED" => &["type", "sid", "count"],
        "ERR" => &["type", "code", "fatal", "text"],
        "GOAWAY" => &["type", "reason", "grace_ms"],
        "STATS_REPLY" => &["type", "nonce", "json"],
        other => panic!("{ctx}: {other} is not a server frame"),
    };
    only_keys(f, keys, ctx);
    assert_eq!(f.len(), keys.len(), "{ctx}: {ty} needs the fields {keys:?}");
    match ty {
        "WELCOME" => ServerFrame::Welcome(Welcome {
            version: u16_of(f, "version", ctx),
            max_frame: u32_of(f, "max_frame", ctx),
            ping_interval_ms: u32_of(f, "ping_interval_ms", ctx),
            core_id: u16_of(f, "core_id", ctx),
            connection_id: uint_of(f, "connection_id", ctx),
            server_name: str_of(f, "server_name", ctx),
        }),
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
        _ => ServerFrame::GoAway {
            reason: u16_of(f, "reason", ctx),
            grace_ms: u32_of(f, "grace_ms", ctx),
        },
    }
}

// ------------------------------------------------- direction-agnostic

#[derive(Debug, PartialEq, Eq)]
enum Frame<'a> {
    Client(ClientFrame<'a>),
    Server(ServerFrame<'a>),
}

impl Frame<'_> {
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
}

fn decode<'a>(
    dir: Dir,
    src: &mut &'a [u8],
    max_frame: u32,
) -> Result<Option<Frame<'a>>, DecodeError> {
    Ok(match dir {
        Dir::Client => ClientFrame::decode(src, max_frame)?.map(Frame::Client),
        Dir::Server => ServerFrame::decode(src, max_frame)?.map(Frame::Server),
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

/// Errors raised from the length prefix alone, before the frame is cut off.
fn is_prefix_error(e: &DecodeError) -> bool {
    matches!(e, DecodeError::FrameTooShort(_) | DecodeError::FrameTooLarge { .. })
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
            let blob = blob(fields, ctx);
            let want = match v.dir {
                Dir::Client => Frame::Client(expected_client(fields, &blob, ctx)),
                Dir::Server => Frame::Server(expected_server(fields, &blob, ctx)),
            };
            let mut src = v.bytes.as_slice();
            let got = decode(v.dir, &mut src, v.max_frame)
                .unwrap_or_else(|e| panic!("{ctx}: decode failed: {e}"))
                .unwrap_or_else(|| panic!("{ctx}: decoder wants more bytes"));
            assert_eq!(got, want, "{ctx}: decoded frame");
            assert!(src.is_empty(), "{ctx}: {} bytes left over", src.len());
            assert_eq!(want.encode(), v.bytes, "{ctx}: encoding the expected frame");
            assert_eq!(got.encode(), v.bytes, "{ctx}: re-encoding the decoded frame");
            assert_eq!(want.encoded_len(), v.bytes.len(), "{ctx}: encoded_len");
            checked += 1;
        }
        assert!(checked > 0);
    });
}

#[test]
fn error_vectors_fail_as_specified() {
    with_vectors(|vectors| {
        for v in vectors {
            let Expect::Error { variant: want, code, field } = v.expect else {
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
            if is_prefix_error(&err) {
                assert_eq!(src.len(), v.bytes.len(), "{ctx}: a prefix error consumes nothing");
            } else {
                // The frame was cut off whole, so a caller can skip it.
                assert!(src.is_empty(), "{ctx}: a body error consumes exactly its frame");
            }
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
            }
        }
    });
}

#[test]
fn valid_vectors_decode_back_to_back_as_one_stream() {
    with_vectors(|vectors| {
        for dir in [Dir::Client, Dir::Server] {
            let frames: Vec<&Vector<'_>> = vectors
                .iter()
                .filter(|v| v.dir == dir && matches!(v.expect, Expect::Frame(_)))
                .collect();
            let stream: Vec<u8> = frames.iter().flat_map(|v| v.bytes.iter().copied()).collect();
            let mut src = stream.as_slice();
            for v in &frames {
                let before = src.len();
                let got = decode(dir, &mut src, DEFAULT_MAX_FRAME)
                    .unwrap_or_else(|e| panic!("{}: {e}", v.name))
                    .unwrap_or_else(|| panic!("{}: need-more inside the stream", v.name));
                assert_eq!(before - src.len(), v.bytes.len(), "{}: consumed", v.name);
                assert_eq!(got.encode(), v.bytes, "{}: in the stream", v.name);
            }
            assert!(src.is_empty());
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
            opcode::ERR,
            opcode::GOAWAY,
            opcode::STATS_REPLY,
        ];
        for op in server_ops {
            assert!(server.iter().any(|&(o, _)| o == op), "no server vector for 0x{op:02x}");
            assert!(unknown_in(Dir::Client, op), "no vector sends server 0x{op:02x} as client");
        }
        // Each opcode cut short and with an undefined flag bit; each opcode
        // without a payload with trailing bytes.
        let has_error = |dir: Dir, op: u8, want: &str| {
            vectors.iter().any(|v| {
                v.dir == dir
                    && v.bytes.get(4) == Some(&op)
                    && matches!(v.expect, Expect::Error { variant, .. } if variant == want)
            })
        };
        let all = client_ops.map(|op| (Dir::Client, op)).into_iter();
        for (dir, op) in all.chain(server_ops.map(|op| (Dir::Server, op))) {
            assert!(has_error(dir, op, "Truncated"), "no Truncated vector for 0x{op:02x}");
            assert!(has_error(dir, op, "ReservedFlags"), "no ReservedFlags vector for 0x{op:02x}");
            if op != opcode::PUB && op != opcode::MSG {
                assert!(has_error(dir, op, "TrailingBytes"), "no TrailingBytes for 0x{op:02x}");
            }
        }
        assert!(
            client.iter().any(|&(o, f)| o == opcode::SUB && f == opcode::SUB_FLAG_LOSSY),
            "no vector for the SUB lossy flag"
        );

        // Every decode error, each with the code the server answers it with.
        let errors: Vec<(&str, u16, Option<&str>)> = vectors
            .iter()
            .filter_map(|v| match v.expect {
                Expect::Error { variant, code, field } => Some((variant, code, field)),
                _ => None,
            })
            .collect();
        let mappings: [(&str, ErrorCode, Option<&str>); 11] = [
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
            assert!(
                vectors.iter().any(|v| v.dir == dir && matches!(v.expect, Expect::Incomplete)),
                "no incomplete vector for {dir:?}"
            );
        }
    });
}

/// The worked example in PROTOCOL.md shows the same bytes as the vectors
/// named "example N: ...".
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

const OPCODES: [u8; 15] =
    [0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0x20, 0x81, 0x82, 0x83, 0x90, 0x91, 0xE0, 0xE1, 0xFF];

/// Decodes `data` frame by frame and checks what any outcome promises.
fn check_stream(dir: Dir, data: &[u8], max_frame: u32) {
    let mut src = data;
    loop {
        let before = src;
        match decode(dir, &mut src, max_frame) {
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
