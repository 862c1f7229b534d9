//! One connection's TLS: a `rustls::ServerConnection` driven by the
//! connection task, which does all the I/O.
//!
//! Reading pulls ciphertext from the socket into the core's ciphertext
//! scratch, feeds it to rustls and decrypts into the caller's buffer. It
//! never reads more than rustls can hold plaintext for beyond that buffer
//! ([`Records::room`]), so the scratch is always empty again when a read
//! returns, and no connection keeps ciphertext of its own. Writing hands
//! plaintext to rustls within [`super::SEND_BUFFER`] and pushes the records
//! to the socket through [`SocketWriter`], which turns "the socket is full"
//! into `WouldBlock` with the wake-up armed.

use std::{
    io::{self, IoSlice, Read, Write},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use super::{TlsFailure, SEND_BUFFER};
use crate::core::slot::Exit;

/// Plaintext rustls keeps for a reader before it refuses more ciphertext
/// (rustls's received-plaintext limit, which it has no setter for).
const PLAINTEXT_HELD: usize = 16 << 10;

/// Bytes of ciphertext the core reads at once for a TLS connection.
pub(crate) const CIPHER_SCRATCH: usize = 64 << 10;

/// A TLS connection's state; boxed in the connection task.
pub(crate) struct Tls {
    conn: ServerConnection,
    /// The handshake is complete.
    established: bool,
    /// Completed since the task last asked ([`Self::take_established`]).
    news: bool,
    /// `close_notify` is queued.
    close_notify: bool,
    /// Where the ciphertext fed to rustls stands in its records.
    records: Records,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("established", &self.established).finish_non_exhaustive()
    }
}

/// What the slot keeps of a completed handshake.
#[derive(Debug)]
pub(crate) struct Established {
    /// `"TLSv1.3"` or `"TLSv1.2"`.
    pub version: &'static str,
    /// The verified client certificate's subject (RFC 4514), if one was
    /// presented.
    pub subject: Option<String>,
}

/// How a flush of ciphertext went.
pub(crate) struct Pushed {
    /// Ciphertext bytes the socket took.
    pub bytes: usize,
    /// The socket is full with ciphertext still waiting (the wake-up is
    /// armed).
    pub blocked: bool,
}

impl Tls {
    /// A connection served with `config`.
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<Box<Self>, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(SEND_BUFFER));
        Ok(Box::new(Self {
            conn,
            established: false,
            news: false,
            close_notify: false,
            records: Records::default(),
        }))
    }

    /// The handshake is complete.
    pub(crate) fn is_established(&self) -> bool {
        self.established
    }

    /// What the handshake established, once, right after it completed.
    pub(crate) fn take_established(&mut self) -> Option<Established> {
        if !std::mem::take(&mut self.news) {
            return None;
        }
        let version = match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let subject = self
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| super::subject_of(leaf));
        Some(Established { version, subject })
    }

    /// Ciphertext waits to be written.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Reads plaintext into `dst` (not empty): `Ok(n > 0)`, or how the
    /// connection ended. Handshake records are answered on the way;
    /// `Pending` once the socket has nothing more (its wake-up armed).
    pub(crate) fn poll_read(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
        scratch: &mut [u8],
        dst: &mut [u8],
    ) -> Poll<Result<usize, Exit>> {
        loop {
            match self.plaintext(dst) {
                Ok(0) => {}
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(end) => return Poll::Ready(Err(end)),
            }
            let want = scratch.len().min(self.records.room(dst.len()));
            let n = match Pin::new(&mut *stream).poll_read(cx, &mut scratch[..want]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(self.gone(Exit::Eof))),
                Poll::Ready(Err(_)) => return Poll::Ready(Err(self.gone(Exit::Reset))),
                Poll::Ready(Ok(n)) => n,
            };
            self.records.fed(&scratch[..n]);
            let mut filled = 0;
            let mut src = &scratch[..n];
            while !src.is_empty() {
                match self.conn.read_tls(&mut src) {
                    // A close_notify came: what follows it is ignored.
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => return Poll::Ready(Err(Exit::Tls(self.failure(None)))),
                }
                if let Err(e) = self.conn.process_new_packets() {
                    let failure = self.failure(Some(&e));
                    // The alert rustls queued: one attempt, never a wait.
                    let _ = self.push(stream, cx);
                    return Poll::Ready(Err(Exit::Tls(failure)));
                }
                if !self.established && !self.conn.is_handshaking() {
                    self.established = true;
                    self.news = true;
                }
                match self.plaintext(&mut dst[filled..]) {
                    Ok(k) => filled += k,
                    Err(_) if filled > 0 => break,
                    Err(end) => return Poll::Ready(Err(end)),
                }
            }
            // The handshake's answers go out from here: the task may not
            // flush again before it waits.
            if self.push(stream, cx).is_err() {
                return Poll::Ready(Err(self.gone(Exit::Reset)));
            }
            if filled > 0 {
                return Poll::Ready(Ok(filled));
            }
        }
    }

    /// Plaintext rustls holds, into `dst`: `Ok(0)` when it holds none.
    fn plaintext(&mut self, dst: &mut [u8]) -> Result<usize, Exit> {
        if !self.established || dst.is_empty() {
            return Ok(0);
        }
        match self.conn.reader().read(dst) {
            // The client's close_notify.
            Ok(0) => Err(Exit::Eof),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            // The socket ended without close_notify: a close all the same.
            Err(_) => Err(Exit::Eof),
        }
    }

    /// How a connection whose socket ended (`end`) is recorded: a client
    /// gone during the handshake is a handshake failure.
    fn gone(&self, end: Exit) -> Exit {
        if self.established {
            end
        } else {
            Exit::Tls(TlsFailure::Abandoned)
        }
    }

    fn failure(&self, error: Option<&rustls::Error>) -> TlsFailure {
        match error {
            Some(e) => TlsFailure::of(e, self.established),
            None if self.established => TlsFailure::Protocol,
            None => TlsFailure::Handshake,
        }
    }

    /// Hands plaintext to rustls, within its buffer: the bytes taken. Only
    /// once the handshake is complete (until then it takes nothing).
    pub(crate) fn take_plaintext(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.established {
            return Ok(0);
        }
        self.conn.writer().write_vectored(parts)
    }

    /// Queues `close_notify` once.
    pub(crate) fn close_notify(&mut self) {
        if !std::mem::replace(&mut self.close_notify, true) {
            self.conn.send_close_notify();
        }
    }

    /// Whether `close_notify` is queued.
    pub(crate) fn close_notify_sent(&self) -> bool {
        self.close_notify
    }

    /// Writes the ciphertext rustls holds until it is all out or the socket
    /// is full (then the wake-up for room is armed).
    pub(crate) fn push(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> io::Result<Pushed> {
        let mut bytes = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut SocketWriter { stream, cx }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Pushed { bytes, blocked: true })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Pushed { bytes, blocked: false })
    }
}

/// Tracks the TLS record boundaries in the ciphertext fed to rustls, to
/// size reads: rustls refuses ciphertext while it holds more than
/// [`PLAINTEXT_HELD`] bytes of plaintext, and a read's ciphertext must all
/// go in.
#[derive(Debug, Default)]
struct Records {
    /// Bytes of the current record's header seen (0 to 5).
    header: [u8; 5],
    header_seen: usize,
    /// Bytes of the current record's body still to come.
    body_left: usize,
}

impl Records {
    /// Ciphertext that may be read when the caller takes `room` bytes of
    /// plaintext: rustls then holds at most [`PLAINTEXT_HELD`].
    ///
    /// The plaintext a read releases is at most that of the record begun
    /// earlier, `partial` (at most its `fed` bytes so far plus what is left
    /// of it, less the 21 bytes of header and tag of every AEAD record, and
    /// at most 16 KiB), plus the ciphertext after it. Either bound keeps it
    /// within `room + PLAINTEXT_HELD`: reading `room + PLAINTEXT_HELD -
    /// fed`, or `room + left` (the partial record and `room` more). The
    /// larger is taken: it is never below `room`.
    fn room(&self, room: usize) -> usize {
        let (fed, left) = if self.body_left > 0 {
            let len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            (5 + len - self.body_left, self.body_left)
        } else {
            (self.header_seen, 0)
        };
        (room + PLAINTEXT_HELD).saturating_sub(fed).max(room + left)
    }

    /// `bytes` went to rustls.
    fn fed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                if self.body_left == 0 {
                    self.header_seen = 0;
                }
                continue;
            }
            let n = (5 - self.header_seen).min(bytes.len());
            self.header[self.header_seen..self.header_seen + n].copy_from_slice(&bytes[..n]);
            self.header_seen += n;
            bytes = &bytes[n..];
            if self.header_seen == 5 {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                if self.body_left == 0 {
                    self.header_seen = 0;
                }
            }
        }
    }
}

/// The socket as rustls's `io::Write`: one non-blocking `sendmsg` per call;
/// a full socket arms glommio's wake-up and reads as `WouldBlock`.
struct SocketWriter<'a, 'b> {
    stream: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Write for SocketWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.stream).poll_write(self.cx, buf) {
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            Poll::Ready(result) => result,
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(first) = bufs.iter().find(|b| !b.is_empty()) else { return Ok(0) };
        match crate::core::connection::send_vectored(self.stream, bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.write(first),
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: usize) -> Vec<u8> {
        let mut r = vec![23, 3, 3];
        r.extend_from_slice(&u16::try_from(len).expect("a record length").to_be_bytes());
        r.resize(5 + len, 0);
        r
    }

    #[test]
    fn records_are_followed_across_reads() {
        let mut records = Records::default();
        assert_eq!(records.room(100), 100 + PLAINTEXT_HELD);
        let two: Vec<u8> = [record(16_401), record(30)].concat();
        records.fed(&two[..3]);
        assert_eq!(records.room(10), 10 + PLAINTEXT_HELD - 3);
        records.fed(&two[3..1000]);
        // 1000 bytes of a 16 406-byte record fed: 15 406 to come.
        assert_eq!(records.room(10), (10 + PLAINTEXT_HELD - 1000).max(10 + 15_406));
        records.fed(&two[1000..16_406 + 5]);
        assert_eq!(records.room(10), 10 + PLAINTEXT_HELD - 5);
        records.fed(&two[16_406 + 5..]);
        assert_eq!(records.room(10), 10 + PLAINTEXT_HELD);
    }
}
