//! What a web-port connection is at its socket: first the HTTP request,
//! then a WebSocket session or an SSE stream. The connection task reads
//! through [`Web::poll_read`] and writes through [`Web::next_write`] and
//! [`Web::wrote`], as it does through TLS; an SSE stream's output queue
//! goes through [`Web::convert`] first.

use std::{
    io::IoSlice,
    task::{Context, Poll},
};

use super::{
    sse::{Sse, Tally, KEEP_CAPACITY},
    upgrade::{self, Origins, Route, WebCredential},
    ws::{Ws, MAX_MESSAGE},
};
use crate::core::slot::{Exit, Limit, WebExit};

/// The most payload one data frame carries: a large output queue goes
/// out as several frames.
const MAX_DATA_FRAME: usize = 1 << 20;

/// The most bytes of the session's own (pongs, mostly) that may wait for
/// a client that sends pings and does not read: past it the client is a
/// slow consumer.
const MAX_OWN_PENDING: usize = 64 << 10;

/// A web-port connection's protocol state.
#[derive(Debug)]
pub(crate) struct Web {
    state: State,
    origins: Origins,
    /// What goes out now, before any more of the queue: a data frame's
    /// header, or a batch of `control`.
    out: Vec<u8>,
    /// Of `out`, how much went out.
    out_sent: usize,
    /// The session's own bytes (the HTTP response, pongs, the close frame)
    /// waiting for the current data frame to end: never inside one.
    control: Vec<u8>,
    /// Payload bytes of the current data frame still to send from the
    /// output queue; its header is in `out`.
    frame_left: usize,
    /// The credential the request carried, until the connection takes it.
    credential: Option<WebCredential>,
}

#[derive(Debug)]
enum State {
    /// The request head so far.
    Head(Vec<u8>),
    Ws(Box<Ws>),
    Sse(Box<Sse>),
    /// Nothing more is read: why the connection ends.
    Over(Exit),
}

/// What to send next: the session's own bytes, then (within the current
/// frame) how many of the output queue's.
#[derive(Debug)]
pub(crate) struct Write<'a> {
    pub own: &'a [u8],
    pub queue_limit: usize,
}

impl Web {
    pub(crate) fn new(origins: Origins) -> Box<Self> {
        Box::new(Self {
            state: State::Head(Vec::new()),
            origins,
            out: Vec::new(),
            out_sent: 0,
            control: Vec::new(),
            frame_left: 0,
            credential: None,
        })
    }

    /// Whether the request opened a WebSocket session (and it is not over).
    pub(crate) fn is_websocket(&self) -> bool {
        matches!(self.state, State::Ws(_))
    }

    /// The credential the request carried (`Authorization`, or the `token`
    /// parameter), as a typed credential; once.
    pub(crate) fn take_credential(&mut self) -> Option<Vec<u8>> {
        self.credential.take().map(WebCredential::into_bytes)
    }

    /// Reads what the socket has (through `read_raw`: the socket, or TLS
    /// over it) and hands the corecast bytes it carried to `dst`: `Ok(n)`
    /// (0 when no input came, only an answer to flush or a sign of life),
    /// or why the connection ends. An SSE stream hands over its own
    /// frames; what its client sends is read only to notice it leave.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        raw: &mut [u8],
        dst: &mut [u8],
        mut read_raw: impl FnMut(&mut Context<'_>, &mut [u8]) -> Poll<Result<usize, Exit>>,
    ) -> Poll<Result<usize, Exit>> {
        loop {
            match &mut self.state {
                State::Over(why) => return Poll::Ready(Err(*why)),
                State::Ws(ws) if ws.has_pending() => return Poll::Ready(Ok(ws.take(dst))),
                State::Ws(ws) => {
                    if let Some(closing) = ws.closed() {
                        let why = Exit::Web(WebExit::Closed(closing.code));
                        self.state = State::Over(why);
                        continue;
                    }
                }
                State::Sse(sse) if sse.has_input() => return Poll::Ready(Ok(sse.take_input(dst))),
                State::Head(_) | State::Sse(_) => {}
            }
            let n = match read_raw(cx, raw) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(why)) => return Poll::Ready(Err(why)),
                Poll::Ready(Ok(n)) => n,
            };
            let before = self.control.len();
            self.take_in(&raw[..n]);
            let answered = self.control.len() > before;
            match &self.state {
                State::Ws(ws) if ws.has_pending() => {}
                // Control frames, or part of a message: no input, but the
                // client is alive (its pings keep the session from going
                // stale), and a pong may wait to be flushed.
                State::Ws(_) => return Poll::Ready(Ok(0)),
                State::Sse(sse) if sse.has_input() => {}
                // What an SSE client sends is thrown away, a read at a
                // time, like any connection's reads.
                State::Sse(_) => return Poll::Ready(Ok(0)),
                // The `101` or an error status to send.
                _ if answered => return Poll::Ready(Ok(0)),
                _ => {}
            }
        }
    }

    /// Bytes from the socket, into the request head or the session.
    fn take_in(&mut self, raw: &[u8]) {
        match &mut self.state {
            State::Head(head) => {
                head.extend_from_slice(raw);
                let Some((used, route)) = upgrade::route(head, &self.origins) else { return };
                let rest = head.split_off(used.min(head.len()));
                self.answer(route, &rest);
            }
            State::Ws(ws) => {
                ws.feed(raw);
                self.control.append(ws.control());
                if self.control.len() > MAX_OWN_PENDING {
                    self.state = State::Over(Exit::SlowConsumer(Limit::MaxPending));
                }
            }
            State::Sse(_) | State::Over(_) => {}
        }
    }

    fn answer(&mut self, route: Route, rest: &[u8]) {
        match route {
            Route::WebSocket { response, credential } => {
                self.credential = credential;
                self.control.extend_from_slice(&response);
                let mut ws = Box::new(Ws::new(MAX_MESSAGE));
                if !rest.is_empty() {
                    ws.feed(rest);
                    self.control.append(ws.control());
                }
                self.state = State::Ws(ws);
            }
            Route::Sse { request, credential } => {
                self.credential = credential;
                self.state = State::Sse(Box::new(Sse::new(request)));
            }
            Route::Refused { status, response, .. } => {
                self.control.extend_from_slice(&response);
                self.state = State::Over(Exit::Web(WebExit::Refused(status.as_u16())));
            }
            Route::Page { status, response } => {
                self.control.extend_from_slice(&response);
                self.state = State::Over(Exit::Web(WebExit::Served(status.as_u16())));
            }
        }
    }

    /// Ends the session from this side (shutdown, a protocol error of the
    /// corecast frames): a close frame with `code` goes out after the
    /// current frame.
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        if let State::Ws(ws) = &mut self.state {
            ws.fail(code.into(), reason);
            self.control.append(ws.control());
        }
    }

    /// Whether an SSE stream can read more of its output queue: what it
    /// made of the last is out.
    pub(crate) fn converts(&self) -> bool {
        matches!(self.state, State::Sse(_)) && !self.wants_write()
    }

    /// Whether the request opened an SSE stream.
    pub(crate) fn is_sse(&self) -> bool {
        matches!(self.state, State::Sse(_))
    }

    /// Reads `bytes` of an SSE stream's output queue into what goes out,
    /// until a step of text is made: how many bytes it read, and
    /// `Err(status)` once the stream was refused (its answer is queued).
    pub(crate) fn convert(&mut self, bytes: &[u8]) -> (usize, Result<Tally, u16>) {
        let State::Sse(sse) = &mut self.state else { return (0, Ok(Tally::default())) };
        let (read, tally) = sse.convert(bytes, &mut self.control);
        (read, sse.refused().map_or(Ok(tally), Err))
    }

    /// What to send now, given `queued` bytes in the output queue: the
    /// session's own bytes, then up to `queue_limit` of the queue. A new
    /// data frame starts only when the last is out and nothing of the
    /// session's waits.
    pub(crate) fn next_write(&mut self, queued: usize) -> Write<'_> {
        let own_left = self.out.len() - self.out_sent;
        let open = matches!(&self.state, State::Ws(ws) if ws.closed().is_none());
        if self.frame_left == 0 && own_left == 0 {
            self.out.clear();
            self.out_sent = 0;
            if !self.control.is_empty() {
                std::mem::swap(&mut self.out, &mut self.control);
            } else if queued > 0 && open {
                let len = queued.min(MAX_DATA_FRAME);
                Ws::frame_header(len, &mut self.out);
                self.frame_left = len;
            }
        }
        // The queue's bytes follow only this frame's header, never the
        // response or a control frame left over: outside a frame none go.
        Write { own: &self.out[self.out_sent..], queue_limit: self.frame_left }
    }

    /// `n` bytes of the last [`Self::next_write`] went out; returns how
    /// many of them were the queue's.
    pub(crate) fn wrote(&mut self, n: usize) -> usize {
        let own = (self.out.len() - self.out_sent).min(n);
        self.out_sent += own;
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
            if self.out.capacity() > KEEP_CAPACITY {
                self.out = Vec::new();
            }
        }
        let queue = (n - own).min(self.frame_left);
        self.frame_left -= queue;
        queue
    }

    /// Whether bytes of the session wait to go out (a response, a close
    /// frame, the rest of a data frame).
    pub(crate) fn wants_write(&self) -> bool {
        self.out_sent < self.out.len() || self.frame_left > 0 || !self.control.is_empty()
    }
}

/// The slices of one write into `out`: the session's bytes, then the
/// queue's slices cut to `limit` bytes; returns how many.
pub(crate) fn cut<'b>(
    own: &'b [u8],
    queue: &'b [IoSlice<'_>],
    limit: usize,
    out: &mut [IoSlice<'b>],
) -> usize {
    let mut n = 0;
    if !own.is_empty() {
        out[n] = IoSlice::new(own);
        n += 1;
    }
    let mut left = limit;
    for slice in queue {
        if left == 0 || n == out.len() {
            break;
        }
        let bytes: &'b [u8] = slice;
        let take = bytes.len().min(left);
        out[n] = IoSlice::new(&bytes[..take]);
        n += 1;
        left -= take;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn masked_ping(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x89, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    }

    /// A client that sends pings and never reads cannot grow the session's
    /// pongs without bound: past 64 KiB it is cut as a slow consumer.
    #[test]
    fn unread_pongs_are_bounded() {
        let mut web = Web::new(Origins::default());
        web.take_in(UPGRADE);
        assert!(web.is_websocket());
        let ping = masked_ping(&[7; 100]);
        for _ in 0..2_000 {
            web.take_in(&ping);
            if matches!(web.state, State::Over(_)) {
                break;
            }
        }
        assert!(
            matches!(web.state, State::Over(Exit::SlowConsumer(Limit::MaxPending))),
            "{:?}",
            web.state
        );
        assert!(web.control.len() <= MAX_OWN_PENDING + 200);
    }

    /// A pong that arrives while a data frame is half sent waits for the
    /// frame's end: it never lands inside its payload.
    #[test]
    fn control_frames_wait_for_the_data_frame_to_end() {
        let mut web = Web::new(Origins::default());
        web.take_in(UPGRADE);
        let response = web.next_write(0).own.len();
        assert_eq!(web.wrote(response), 0, "the 101 is the session's own");
        let write = web.next_write(100);
        assert_eq!((write.own, write.queue_limit), (&[0x82u8, 100][..], 100));
        assert_eq!(web.wrote(2 + 30), 30);
        web.take_in(&masked_ping(b"p"));
        let write = web.next_write(70);
        assert!(write.own.is_empty(), "the pong went inside the frame: {:02x?}", write.own);
        assert_eq!(write.queue_limit, 70);
        assert_eq!(web.wrote(70), 70);
        let write = web.next_write(0);
        assert_eq!(write.own, &[0x8a, 1, b'p'][..]);
        assert_eq!(write.queue_limit, 0);
        assert_eq!(web.wrote(3), 0);
        assert!(!web.wants_write());
    }
}
