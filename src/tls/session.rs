//! One connection's TLS: a `rustls::ServerConnection` driven by the
//! connection task, which does all the I/O.
//!
//! Reading pulls ciphertext from the socket into the core's ciphertext
//! scratch, feeds it to rustls and decrypts into the caller's buffer. It
//! never reads more than rustls can hold plaintext for beyond that buffer,
//! so the scratch is always empty again when a read returns. Writing hands
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
/// (rustls's default received-plaintext limit).
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
        Ok(Box::new(Self { conn, established: false, news: false, close_notify: false }))
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
            // rustls holds up to PLAINTEXT_HELD bytes of plaintext beyond
            // what `dst` takes: never read more, so the scratch empties.
            let want = scratch.len().min(dst.len() + PLAINTEXT_HELD);
            let n = match Pin::new(&mut *stream).poll_read(cx, &mut scratch[..want]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(self.gone(Exit::Eof))),
                Poll::Ready(Err(_)) => return Poll::Ready(Err(self.gone(Exit::Reset))),
                Poll::Ready(Ok(n)) => n,
            };
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
            if let Poll::Ready(Err(_)) = self.push(stream, cx).map(|p| p.map(|_| ())) {
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
    /// is full.
    pub(crate) fn push(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Pushed>> {
        let mut bytes = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut SocketWriter { stream, cx }) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => bytes += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Poll::Ready(Ok(Pushed { bytes, blocked: true }))
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(Pushed { bytes, blocked: false }))
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
