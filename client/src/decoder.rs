//! A growable receive buffer that cuts server frames out of a byte stream.

use corecast_proto::{DecodeError, RawFrame, ServerFrame, ServerFrame11, LEN_PREFIX};

/// The buffer's usual size, and what it shrinks back to after a large frame.
const READ_CHUNK: usize = 64 << 10;

/// The least room offered to a read.
const MIN_READ: usize = 16 << 10;

/// The limit on server frames before `WELCOME` (PROTOCOL.md §2.4).
pub(crate) const HANDSHAKE_LIMIT: u32 = (1 << 20) + 4;

/// The largest server frame a client accepts once the session is open:
/// `max_frame + 4`, since a `MSG` is 4 bytes longer than its `PUB`.
pub(crate) fn server_frame_limit(max_frame: u32) -> u32 {
    max_frame.saturating_add(4)
}

/// Received bytes not decoded yet: `buf[start..end]`.
///
/// The buffer grows to hold the largest frame that arrives (at most the
/// limit) and, once it has grown past 256 KiB, shrinks back to 64 KiB
/// as soon as it is empty again.
#[derive(Debug)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    limit: u32,
    /// Whether frames of protocol 1.1 are valid: in a 1.1 session, and
    /// during the handshake, whose `WELCOME` may grant 1.1.
    v1_1: bool,
}

impl Decoder {
    /// An empty decoder for the handshake.
    pub(crate) fn new() -> Self {
        Self { buf: vec![0; READ_CHUNK], start: 0, end: 0, limit: HANDSHAKE_LIMIT, v1_1: true }
    }

    /// Sets the largest frame length accepted from now on.
    pub(crate) fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// Whether the session is a 1.1 session: in a version 1 session the
    /// frames of 1.1 are as invalid as any unknown frame.
    pub(crate) fn set_v1_1(&mut self, v1_1: bool) {
        self.v1_1 = v1_1;
    }

    /// Room to read into; call [`Decoder::filled`] with what was read.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        self.make_room();
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`Decoder::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete frame, if one has arrived.
    pub(crate) fn next_frame(&mut self) -> Result<Option<ServerFrame11<'_>>, DecodeError> {
        let pending = &self.buf[self.start..self.end];
        let mut src = pending;
        let Some(raw) = RawFrame::split(&mut src, self.limit)? else {
            return Ok(None);
        };
        self.start += pending.len() - src.len();
        if self.v1_1 {
            ServerFrame11::parse(raw).map(Some)
        } else {
            ServerFrame::parse(raw).map(|frame| Some(frame.into()))
        }
    }

    /// Makes sure the buffer can take at least [`MIN_READ`] more bytes and
    /// the whole frame in progress, moving pending bytes to the front first.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 4 * READ_CHUNK {
                self.buf.truncate(READ_CHUNK);
                self.buf.shrink_to(READ_CHUNK);
            }
        }
        let pending = self.end - self.start;
        let needed = self.frame_in_progress().max(pending + MIN_READ);
        if self.start + needed <= self.buf.len() {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.start = 0;
        self.end = pending;
        if needed > self.buf.len() {
            self.buf.resize(needed, 0);
        }
    }

    /// Whole length (prefix included) of the frame whose start has arrived,
    /// or 0 when not even its prefix is here or it is above the limit.
    fn frame_in_progress(&self) -> usize {
        match RawFrame::peek_len(&self.buf[self.start..self.end]) {
            Some(len) if len <= self.limit => LEN_PREFIX + len as usize,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use corecast_proto::{frame::Msg, ServerFrame, ServerFrame11};

    use super::*;

    fn encoded(frame: &ServerFrame<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        out
    }

    fn feed(d: &mut Decoder, mut bytes: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut payloads = Vec::new();
        while !bytes.is_empty() {
            let spare = d.spare();
            let n = step.min(spare.len()).min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            d.filled(n);
            bytes = &bytes[n..];
            while let Some(frame) = d.next_frame().expect("valid frames") {
                match frame {
                    ServerFrame11::Msg(m) => payloads.push(m.payload.to_vec()),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        payloads
    }

    fn msg(payload: &[u8]) -> Vec<u8> {
        encoded(&ServerFrame::Msg(Msg { sid: 1, topic: "t", reply_to: "", payload }))
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; usize::from(i) * 37]).collect();
        let stream: Vec<u8> = payloads.iter().flat_map(|p| msg(p)).collect();
        for step in [1, 3, 7, 100, 4096, 1 << 20] {
            let mut d = Decoder::new();
            assert_eq!(feed(&mut d, &stream, step), payloads, "step {step}");
        }
    }

    #[test]
    fn a_frame_larger_than_a_read_chunk_fits_and_the_buffer_shrinks_after() {
        let big = vec![7u8; 5 * READ_CHUNK + 11];
        let mut stream = msg(b"x");
        stream.extend(msg(&big));
        stream.extend(msg(b"y"));
        let mut d = Decoder::new();
        let got = feed(&mut d, &stream, 10_000);
        assert_eq!(got, vec![b"x".to_vec(), big, b"y".to_vec()]);
        let _ = d.spare();
        assert_eq!(d.buf.len(), READ_CHUNK, "back to its usual size once empty");
    }

    #[test]
    fn frames_above_the_limit_are_refused() {
        let mut d = Decoder::new();
        d.set_limit(16);
        let bytes = msg(&[0; 64]);
        d.spare()[..bytes.len()].copy_from_slice(&bytes);
        d.filled(bytes.len());
        assert!(matches!(d.next_frame(), Err(DecodeError::FrameTooLarge { .. })));
    }

    #[test]
    fn limit_accepts_a_maximal_msg() {
        assert_eq!(server_frame_limit(1 << 20), (1 << 20) + 4);
        assert_eq!(server_frame_limit(u32::MAX - 2), u32::MAX);
    }
}
