//! A WebSocket session after the upgrade, without I/O: tungstenite's
//! protocol state checks and unmasks what the client sends, and answers its
//! pings and closes; the payloads of binary messages, one stream, are the
//! corecast frames. What the server sends is framed here: a header from
//! tungstenite's `FrameHeader` in front of the output queue's own bytes
//! (server frames are not masked, so they need no copy).

use std::io::{self, Read, Write};

use bytes::{Buf, Bytes};
use tungstenite::{
    error::ProtocolError,
    protocol::{
        frame::{
            coding::{CloseCode, Data, OpCode},
            FrameHeader,
        },
        CloseFrame, Role, WebSocketConfig, WebSocketContext,
    },
    Message,
};

/// Bytes tungstenite reads ahead: small, for many idle connections. It
/// grows to the largest frame a client sent and keeps that size, so frames
/// and messages are bounded by [`MAX_MESSAGE`], whatever `max_frame` is.
pub(crate) const READ_BUFFER: usize = 4 << 10;

/// The largest WebSocket message (and frame) a client may send. Corecast
/// frames larger than this span several messages (the payloads are one
/// stream), so this bounds a session's memory, not what it can publish:
/// at most its read buffer and one message being assembled.
pub(crate) const MAX_MESSAGE: usize = 64 << 10;

/// What one WebSocket session can hold at most beyond its slot: tungstenite's
/// state and read buffer, a message being assembled, and our own bytes.
pub(crate) const SESSION_OVERHEAD: usize = 2 * MAX_MESSAGE + 4 * READ_BUFFER;

/// Why a session ends, with the close code the client is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closing {
    pub code: u16,
    pub reason: String,
}

/// One session's protocol state.
pub(crate) struct Ws {
    ctx: WebSocketContext,
    /// Payload received and not yet handed to the connection's input.
    payload: Bytes,
    /// What tungstenite wrote (pongs, the close frame), to go out between
    /// data frames.
    control: Vec<u8>,
    /// The client closed, or the session failed: no more input.
    closed: Option<Closing>,
}

impl std::fmt::Debug for Ws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ws")
            .field("pending", &self.payload.len())
            .field("closed", &self.closed)
            .finish()
    }
}

/// Reads from a slice, then says it would block: tungstenite keeps what a
/// partial frame holds for the next call.
struct Io<'a> {
    input: &'a [u8],
    output: &'a mut Vec<u8>,
}

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.advance(n);
        Ok(n)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Ws {
    /// A session whose messages (and frames) are at most `max_message`
    /// bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(64 << 10)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        Self {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            payload: Bytes::new(),
            control: Vec::new(),
            closed: None,
        }
    }

    /// Takes bytes from the socket. Call it only once [`Self::take`] left
    /// nothing pending: a read's worth of bytes then bounds what waits.
    pub(crate) fn feed(&mut self, raw: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        let mut io = Io { input: raw, output: &mut self.control };
        let mut joined: Vec<u8> = Vec::new();
        let mut failure = None;
        loop {
            match self.ctx.read(&mut io) {
                Ok(Message::Binary(data)) if joined.is_empty() && self.payload.is_empty() => {
                    self.payload = data;
                }
                Ok(Message::Binary(data)) => {
                    if joined.is_empty() {
                        joined.extend_from_slice(&self.payload);
                    }
                    joined.extend_from_slice(&data);
                }
                Ok(Message::Text(_)) => {
                    let reason = "text messages are not supported: send binary".to_string();
                    failure = Some((CloseCode::Unsupported, reason));
                    break;
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) => {
                    // The reply is written with the flush below.
                    self.closed = Some(Closing { code: 1000, reason: "client closed".into() });
                    break;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failure = Some(close_for(&e));
                    break;
                }
            }
        }
        let _ = self.ctx.flush(&mut io);
        if !joined.is_empty() {
            self.payload = Bytes::from(joined);
        }
        if let Some((code, reason)) = failure {
            self.fail(code, &reason);
        }
    }

    /// Moves pending payload into `dst`; returns how much.
    pub(crate) fn take(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.payload.len());
        dst[..n].copy_from_slice(&self.payload[..n]);
        self.payload.advance(n);
        n
    }

    /// Payload waits for room in the input.
    pub(crate) fn has_pending(&self) -> bool {
        !self.payload.is_empty()
    }

    /// Why the session ended, once it has.
    pub(crate) fn closed(&self) -> Option<&Closing> {
        self.closed.as_ref()
    }

    /// Bytes to send before the next data frame (pongs, a close frame).
    pub(crate) fn control(&mut self) -> &mut Vec<u8> {
        &mut self.control
    }

    /// Ends the session from this side with `code`: the close frame goes
    /// out with the control bytes.
    pub(crate) fn fail(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame { code, reason: reason.to_string().into() };
        let _ = self.ctx.close(&mut Io { input: &[], output: &mut self.control }, Some(frame));
        let _ = self.ctx.flush(&mut Io { input: &[], output: &mut self.control });
        self.closed.get_or_insert(Closing { code: code.into(), reason: reason.to_string() });
    }

    /// The header of a binary frame of `len` bytes, into `out`.
    pub(crate) fn frame_header(len: usize, out: &mut Vec<u8>) {
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            is_final: true,
            ..FrameHeader::default()
        };
        let _ = header.format(len as u64, out);
    }
}

/// The close code and reason for what tungstenite refused.
fn close_for(e: &tungstenite::Error) -> (CloseCode, String) {
    let code = match e {
        tungstenite::Error::Utf8(_) => CloseCode::Invalid,
        tungstenite::Error::Capacity(_) => CloseCode::Size,
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            CloseCode::Abnormal
        }
        _ => CloseCode::Protocol,
    };
    (code, e.to_string())
}

#[cfg(test)]
mod tests;
