//! Server-sent events: the stream a `GET /sse?topic=…` opens.
//!
//! The session speaks to the broker as a client would: its opening frames
//! (`HELLO`, one `SUB` per topic, a `PING` barrier) are handed to the
//! connection as input, so authentication, permissions, limits and
//! subscriptions are the protocol's own. What the broker queues for it is
//! read back frame by frame as the connection flushes: the `200` head goes
//! out when the barrier's `PONG` comes back (an `ERR` before it becomes
//! the HTTP error instead), each `MSG` becomes an event, and each server
//! `PING` is answered with a `PONG` and sent on as a keep-alive comment.

use base64::Engine;
use corecast_proto::{
    frame::ClientFrame11, ErrFrame, ErrorCode, Hello, RawFrame, ServerFrame11, Sub, LEN_PREFIX,
    VERSION,
};
use tungstenite::http::StatusCode;

/// The largest frame (a `MSG` with its topic and payload) sent as an
/// event, the bound of a WebSocket message too; larger messages are
/// dropped and counted.
pub(crate) const MAX_EVENT_FRAME: usize = 64 << 10;

/// The most text one event may take (a payload of many short lines grows
/// up to sevenfold: `data: ` and a line end for each); larger ones are
/// dropped and counted.
const MAX_EVENT_TEXT: usize = 128 << 10;

/// Text made at a time: conversion stops once this much waits to be sent.
pub(crate) const TEXT_STEP: usize = 32 << 10;

/// Most text of events that arrived before the stream opened; later ones
/// before it are dropped and counted.
const MAX_EARLY: usize = 16 << 10;

/// Buffers that grew past this for one large event are let go after it.
pub(crate) const KEEP_CAPACITY: usize = 64 << 10;

/// What one stream can hold at most beyond its slot: a frame being read,
/// the text made of the queue (a step's worth plus the event that passed
/// it, in the buffer being written and the one being filled), and the
/// events kept for the opening (with one more being checked).
pub(crate) const SESSION_OVERHEAD: usize =
    MAX_EVENT_FRAME + 2 * (TEXT_STEP + MAX_EVENT_TEXT) + MAX_EARLY + MAX_EVENT_TEXT;

/// The nonce of the opening barrier's `PING`.
const OPENING: u64 = u64::from_be_bytes(*b"sse-open");

/// What an SSE request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseRequest {
    /// The patterns to subscribe to, in order (sids 1, 2, …).
    pub topics: Vec<String>,
    /// Every payload goes out in base64 (`encoding=base64`).
    pub base64: bool,
    /// The `200` head, sent once the subscriptions are in place.
    pub head: Vec<u8>,
}

/// What converting a stretch of the output queue did, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Messages sent as events.
    pub events: u64,
    /// Messages not sent: not UTF-8 without `encoding=base64`, larger than
    /// [`MAX_EVENT_FRAME`], or past [`MAX_EARLY`] before the opening.
    pub dropped: u64,
    /// The stream opened (its `200` head is out).
    pub opened: bool,
}

/// An SSE stream's state.
#[derive(Debug)]
pub(crate) struct Sse {
    base64: bool,
    /// Frames for the connection to apply: the opening ones, then `PONG`s.
    input: Vec<u8>,
    /// The `200` head until the stream opens.
    head: Option<Vec<u8>>,
    /// Events that arrived before the stream opened.
    early: Vec<u8>,
    /// The frame being read from the output queue.
    frame: Vec<u8>,
    /// Bytes of a frame too large for an event still to pass over.
    skip: usize,
    /// Messages seen: each event's `id` is its message's number, so a gap
    /// shows a dropped message.
    seen: u64,
    /// The HTTP status the stream was refused with.
    refused: Option<u16>,
}

impl Sse {
    pub(crate) fn new(request: SseRequest) -> Self {
        let mut input = Vec::with_capacity(64 + 16 * request.topics.len());
        let hello = Hello { version: VERSION, name: "sse", token: b"" };
        ClientFrame11::Hello { hello, v1_1: true, no_echo: false, credential: false }
            .encode(&mut input);
        for (sid, topic) in (1..).zip(&request.topics) {
            ClientFrame11::Sub(Sub { sid, topic, queue_group: "", lossy: false })
                .encode(&mut input);
        }
        ClientFrame11::Ping { nonce: OPENING }.encode(&mut input);
        Self {
            base64: request.base64,
            input,
            head: Some(request.head),
            early: Vec::new(),
            frame: Vec::new(),
            skip: 0,
            seen: 0,
            refused: None,
        }
    }

    /// Whether frames wait for the connection to apply them.
    pub(crate) fn has_input(&self) -> bool {
        !self.input.is_empty()
    }

    /// Moves frames for the connection into `dst`; returns how many bytes.
    pub(crate) fn take_input(&mut self, dst: &mut [u8]) -> usize {
        let n = self.input.len().min(dst.len());
        dst[..n].copy_from_slice(&self.input[..n]);
        self.input.drain(..n);
        n
    }

    /// The HTTP status the stream was refused with, once it was.
    pub(crate) fn refused(&self) -> Option<u16> {
        self.refused
    }

    /// Reads `bytes` of the output queue (frames, possibly cut anywhere)
    /// and appends to `out` what goes to the client, stopping once `out`
    /// holds [`TEXT_STEP`]: returns how many bytes it read.
    pub(crate) fn convert(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> (usize, Tally) {
        let given = bytes.len();
        let mut tally = Tally::default();
        while !bytes.is_empty() && self.refused.is_none() && out.len() < TEXT_STEP {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let want = self.frame_len().unwrap_or(LEN_PREFIX) - self.frame.len();
            let n = want.min(bytes.len());
            self.frame.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            match self.frame_len() {
                Some(len) if len > MAX_EVENT_FRAME => {
                    self.skip = len - self.frame.len();
                    self.frame.clear();
                    self.seen += 1;
                    tally.dropped += 1;
                }
                Some(len) if len == self.frame.len() => {
                    let frame = std::mem::take(&mut self.frame);
                    self.apply(&frame, out, &mut tally);
                    self.frame = frame;
                    self.frame.clear();
                    if self.frame.capacity() > KEEP_CAPACITY {
                        self.frame = Vec::new();
                    }
                }
                _ => {}
            }
        }
        (given - bytes.len(), tally)
    }

    /// The whole length of the frame being read, once its prefix is in.
    fn frame_len(&self) -> Option<usize> {
        RawFrame::peek_len(&self.frame).map(|len| LEN_PREFIX + len as usize)
    }

    fn apply(&mut self, frame: &[u8], out: &mut Vec<u8>, tally: &mut Tally) {
        let Ok(Some(frame)) = ServerFrame11::decode(&mut &frame[..], u32::MAX) else { return };
        match frame {
            ServerFrame11::Msg(m) => self.message(m.topic, m.payload, out, tally),
            ServerFrame11::HMsg(m) => self.message(m.topic, m.payload, out, tally),
            ServerFrame11::Ping { nonce } => {
                ClientFrame11::Pong { nonce }.encode(&mut self.input);
                if self.head.is_none() {
                    out.extend_from_slice(b":\n\n");
                }
            }
            ServerFrame11::Pong { nonce: OPENING } => self.open(out, tally),
            ServerFrame11::Err(err) => self.error(err, out),
            _ => {}
        }
    }

    fn open(&mut self, out: &mut Vec<u8>, tally: &mut Tally) {
        let Some(head) = self.head.take() else { return };
        out.extend_from_slice(&head);
        out.append(&mut self.early);
        self.early = Vec::new();
        tally.opened = true;
    }

    /// An `ERR`: before the opening, the request's answer; after it, an
    /// `error` event (the broker closes the stream after a fatal one).
    fn error(&mut self, err: ErrFrame<'_>, out: &mut Vec<u8>) {
        if self.head.take().is_none() {
            event(out, None, "error", |out| data_lines(out, err.text));
            return;
        }
        let status = status_for(ErrorCode::from_u16(err.code));
        self.early = Vec::new();
        self.refused = Some(status.as_u16());
        out.extend_from_slice(&super::upgrade::error_response(status, err.text));
    }

    fn message(&mut self, topic: &str, payload: &[u8], out: &mut Vec<u8>, tally: &mut Tally) {
        self.seen += 1;
        let data = if self.base64 {
            Data::Base64(payload)
        } else {
            match std::str::from_utf8(payload) {
                Ok(text) => Data::Text(text),
                Err(_) => {
                    tally.dropped += 1;
                    return;
                }
            }
        };
        if data.text_len() + topic.len() + 48 > MAX_EVENT_TEXT {
            tally.dropped += 1;
            return;
        }
        let dst = if self.head.is_some() { &mut self.early } else { out };
        let before = dst.len();
        event(dst, Some(self.seen), topic, |out| data.write(out));
        if self.head.is_some() && self.early.len() > MAX_EARLY {
            self.early.truncate(before);
            tally.dropped += 1;
            return;
        }
        tally.events += 1;
    }
}

/// A message's payload as an event's data.
enum Data<'a> {
    /// UTF-8: one `data:` line per line.
    Text(&'a str),
    /// Any bytes, as one `data:` line of base64.
    Base64(&'a [u8]),
}

impl Data<'_> {
    /// The most text the `data:` lines take.
    fn text_len(&self) -> usize {
        match self {
            Data::Text(text) => {
                let breaks = text.bytes().filter(|&b| b == b'\n' || b == b'\r').count();
                text.len() + 7 * (breaks + 1)
            }
            Data::Base64(bytes) => 7 + bytes.len().div_ceil(3) * 4,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Data::Text(text) => data_lines(out, text),
            Data::Base64(bytes) => {
                out.extend_from_slice(b"data: ");
                let start = out.len();
                let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
                out.resize(start + len, 0);
                let engine = base64::engine::general_purpose::STANDARD;
                let written = engine.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
                out.truncate(start + written);
                out.push(b'\n');
            }
        }
    }
}

/// One event: its `id`, its `event` type, its `data` lines written by
/// `data`, and the blank line that ends it. Topics hold no line breaks
/// (the protocol's topic rules), so they need no escaping.
fn event(out: &mut Vec<u8>, id: Option<u64>, kind: &str, data: impl FnOnce(&mut Vec<u8>)) {
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
    data(out);
    out.push(b'\n');
}

/// A `data:` line per line of `text` (lines end at CR, LF or CRLF, as the
/// client splits them); the space after the colon keeps a line's own
/// leading space.
fn data_lines(out: &mut Vec<u8>, text: &str) {
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest.as_bytes()[..end]);
        out.push(b'\n');
        if end == rest.len() {
            return;
        }
        let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[end + skip..];
    }
}

/// The HTTP status an `ERR` before the opening answers the request with.
fn status_for(code: Option<ErrorCode>) -> StatusCode {
    match code {
        Some(ErrorCode::AuthFailed) => StatusCode::UNAUTHORIZED,
        Some(ErrorCode::PermissionDenied) => StatusCode::FORBIDDEN,
        Some(ErrorCode::BadTopic | ErrorCode::TooManySubscriptions | ErrorCode::FrameTooLarge) => {
            StatusCode::BAD_REQUEST
        }
        Some(ErrorCode::ServerFull | ErrorCode::ShuttingDown | ErrorCode::OutOfMemory) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use corecast_proto::{ServerFrame, Welcome};

    use super::*;

    fn stream(base64: bool) -> Sse {
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        Sse::new(SseRequest { topics: vec!["a.*".into(), "b".into()], base64, head })
    }

    fn msg(topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let msg = corecast_proto::Msg { sid: 1, topic, reply_to: "", payload };
        ServerFrame::Msg(msg).encode(&mut bytes);
        bytes
    }

    fn opening() -> Vec<u8> {
        let mut bytes = Vec::new();
        let welcome = Welcome {
            version: VERSION,
            max_frame: 1 << 20,
            ping_interval_ms: 1000,
            core_id: 0,
            connection_id: 1,
            server_name: "s",
        };
        ServerFrame11::Welcome { welcome, v1_1: true }.encode(&mut bytes);
        ServerFrame11::Pong { nonce: OPENING }.encode(&mut bytes);
        bytes
    }

    /// Feeds `bytes` one byte at a time: frames cut anywhere read the same.
    fn trickle(sse: &mut Sse, bytes: &[u8]) -> (String, Tally) {
        let mut out = Vec::new();
        let mut total = Tally::default();
        for byte in bytes.chunks(1) {
            let (_, tally) = sse.convert(byte, &mut out);
            total.events += tally.events;
            total.dropped += tally.dropped;
            total.opened |= tally.opened;
        }
        (String::from_utf8(out).expect("text"), total)
    }

    #[test]
    fn the_opening_frames_subscribe_and_ask_for_the_barrier() {
        let mut sse = stream(false);
        let mut input = vec![0; 1024];
        let n = sse.take_input(&mut input);
        let mut src = &input[..n];
        let mut frames = Vec::new();
        while let Some(frame) = ClientFrame11::decode(&mut src, u32::MAX).expect("valid") {
            frames.push(format!("{frame:?}"));
        }
        assert_eq!(frames.len(), 4, "{frames:?}");
        assert!(frames[0].contains("v1_1: true") && frames[0].contains("token: []"));
        assert!(frames[1].contains("\"a.*\"") && frames[2].contains("\"b\""));
        assert!(frames[3].contains(&OPENING.to_string()));
        assert!(!sse.has_input());
    }

    #[test]
    fn events_wait_for_the_opening_and_frames_may_be_cut_anywhere() {
        let mut sse = stream(false);
        let mut bytes = msg("a.x", b"early");
        bytes.extend(opening());
        bytes.extend(msg("b", b"one\r\ntwo"));
        bytes.extend(msg("b", &[0xc3]));
        bytes.extend(msg("a.y", &vec![b'z'; MAX_EVENT_FRAME]));
        bytes.extend(msg("b", b"last"));
        let (text, tally) = trickle(&mut sse, &bytes);
        let expected = "HTTP/1.1 200 OK\r\n\r\nid: 1\nevent: a.x\ndata: early\n\n\
                        id: 2\nevent: b\ndata: one\ndata: two\n\nid: 5\nevent: b\ndata: last\n\n";
        assert_eq!(text, expected);
        assert_eq!(tally, Tally { events: 3, dropped: 2, opened: true });
    }

    #[test]
    fn before_the_opening_at_most_max_early_is_kept() {
        let mut sse = stream(true);
        let mut out = Vec::new();
        let mut dropped = 0;
        for _ in 0..100 {
            dropped += sse.convert(&msg("b", &[7; 1000]), &mut out).1.dropped;
        }
        assert!(out.is_empty());
        assert!(dropped > 0 && sse.early.len() <= MAX_EARLY, "{}", sse.early.len());
        sse.convert(&opening(), &mut out);
        assert!(out.len() > MAX_EARLY - 2000 && sse.early.is_empty());
    }

    #[test]
    fn an_err_before_the_opening_is_the_answer_and_after_it_an_event() {
        let mut err = Vec::new();
        let frame = ErrFrame { code: ErrorCode::PermissionDenied as u16, fatal: false, text: "no" };
        ServerFrame11::Err(frame).encode(&mut err);
        let mut sse = stream(false);
        let (text, _) = trickle(&mut sse, &err);
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert_eq!(sse.refused(), Some(403));
        let mut sse = stream(false);
        let mut bytes = opening();
        bytes.extend(&err);
        let (text, _) = trickle(&mut sse, &bytes);
        assert!(text.ends_with("event: error\ndata: no\n\n"), "{text}");
        assert_eq!(sse.refused(), None);
    }

    #[test]
    fn a_server_ping_is_answered_and_sent_on_as_a_comment() {
        let mut sse = stream(false);
        let mut scratch = [0; 1024];
        sse.take_input(&mut scratch);
        let mut ping = Vec::new();
        ServerFrame11::Ping { nonce: 9 }.encode(&mut ping);
        let mut bytes = opening();
        bytes.extend(&ping);
        let (text, _) = trickle(&mut sse, &bytes);
        assert!(text.ends_with(":\n\n"), "{text}");
        let n = sse.take_input(&mut scratch);
        let pong = ClientFrame11::decode(&mut &scratch[..n], u32::MAX).expect("valid");
        assert!(matches!(pong, Some(ClientFrame11::Pong { nonce: 9 })), "{pong:?}");
    }

    /// Short lines grow sevenfold: an event past 128 KiB of text is
    /// dropped, and one step makes at most about 32 KiB more than one event.
    #[test]
    fn text_is_bounded_per_event_and_per_step() {
        let mut sse = stream(false);
        let mut out = Vec::new();
        sse.convert(&opening(), &mut out);
        out.clear();
        let mut bytes = msg("b", &[b'\n'; 60_000]);
        for _ in 0..100 {
            bytes.extend(msg("b", &[b'x'; 1000]));
        }
        let (read, tally) = sse.convert(&bytes, &mut out);
        assert_eq!(tally.dropped, 1, "the sevenfold event");
        assert!(out.len() >= TEXT_STEP && out.len() < TEXT_STEP + 1100, "{}", out.len());
        assert!(read < bytes.len());
        out.clear();
        let (rest, _) = sse.convert(&bytes[read..], &mut out);
        assert!(rest < bytes.len() - read, "one step at a time");
    }
}
