//! The blocking client's connection: a plain `TcpStream`, or TLS over one.
//!
//! The reader thread reads and the writer thread writes the same
//! connection at once, through shared references (`Read` and `Write` for
//! `&Stream`, as for `&TcpStream`). Plain TCP goes straight to the socket.
//! TLS keeps its state ([`rustls::ClientConnection`]) behind a lock that is
//! never held across a socket call: the reader reads the socket unlocked
//! and then hands the bytes to TLS, and the writer encrypts under the lock
//! and then writes the records unlocked, in order, under a lock of its own.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, TcpStream},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use rustls::ClientConnection;

/// One connection of the blocking client.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, handshake done.
    Tls(Box<TlsStream>),
}

impl Stream {
    fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(t) => &t.sock,
        }
    }

    /// Sets the timeout of each socket read.
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }

    /// Sets the timeout of each socket write.
    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(timeout)
    }

    /// Shuts the TCP connection down, which ends a blocked read or write.
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket().shutdown(how)
    }
}

impl Read for &Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Stream::Plain(s) => (&*s).read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for &Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Stream::Plain(s) => (&*s).write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    /// Nothing for plain TCP; for TLS, writes the records of everything
    /// written before.
    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        match *self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// How much the reader reads from the socket at once.
const READ_CHUNK: usize = 32 << 10;

/// TLS over a TCP connection, read by one thread and written by another.
#[derive(Debug)]
pub(crate) struct TlsStream {
    sock: TcpStream,
    /// The TLS state; held only while bytes go in or out of it.
    tls: Mutex<ClientConnection>,
    /// Records taken out of `tls` and not yet written. Its lock is held from
    /// taking records out to writing them, so that they reach the socket in
    /// the order TLS made them.
    out: Mutex<Pending>,
    /// Bytes read from the socket and not yet handed to `tls` (the reader's
    /// alone).
    incoming: Mutex<Incoming>,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    sent: usize,
}

#[derive(Debug)]
struct Incoming {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    /// Completes the handshake of `tls` over `sock`, within the socket's
    /// timeouts. A TLS refusal is an `io::Error` holding the
    /// [`rustls::Error`] (see `tls::handshake_error`).
    pub(crate) fn handshake(mut sock: TcpStream, mut tls: ClientConnection) -> io::Result<Self> {
        while tls.is_handshaking() {
            tls.complete_io(&mut sock)?;
        }
        // Records that came with the end of the handshake stay in `tls`.
        Ok(Self {
            sock,
            tls: Mutex::new(tls),
            out: Mutex::new(Pending::default()),
            incoming: Mutex::new(Incoming {
                buf: vec![0; READ_CHUNK].into_boxed_slice(),
                start: 0,
                end: 0,
                eof: false,
            }),
        })
    }

    /// Reads plaintext: what TLS holds, or else what the next socket read
    /// brings. A close without TLS's close_notify reads as the end, like a
    /// plain close: frames say their own length, so a cut one is seen.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut incoming = lock(&self.incoming);
        loop {
            let mut wants_write = false;
            let fed = {
                let mut tls = lock(&self.tls);
                match tls.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                let inc = &mut *incoming;
                if inc.start < inc.end {
                    let mut src = &inc.buf[inc.start..inc.end];
                    inc.start += tls.read_tls(&mut src)?;
                    tls.process_new_packets().map_err(tls_error)?;
                    wants_write = tls.wants_write();
                    true
                } else if inc.eof {
                    return Ok(0);
                } else {
                    false
                }
            };
            if wants_write {
                // TLS has something to say (a key update, an alert): send
                // it now unless the writer is writing, which sends it next.
                if let Ok(mut out) = self.out.try_lock() {
                    self.take_records(&mut out)?;
                    self.send(&mut out)?;
                }
            }
            if !fed {
                let inc = &mut *incoming;
                let n = (&self.sock).read(&mut inc.buf)?;
                (inc.start, inc.end, inc.eof) = (0, n, n == 0);
            }
        }
    }

    /// Encrypts what `buf` TLS takes and sends it. The plaintext is taken
    /// once encrypted: when the socket then fails or times out, the records
    /// stay pending, and the next write or flush sends them first (and
    /// reports the failure).
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut out = lock(&self.out);
        self.send(&mut out)?;
        let n = {
            let mut tls = lock(&self.tls);
            let n = tls.writer().write(buf)?;
            while tls.wants_write() {
                tls.write_tls(&mut out.buf)?;
            }
            n
        };
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let _ = self.send(&mut out);
        Ok(n)
    }

    /// Sends every record made so far.
    fn flush(&self) -> io::Result<()> {
        let mut out = lock(&self.out);
        self.take_records(&mut out)?;
        self.send(&mut out)
    }

    fn take_records(&self, out: &mut Pending) -> io::Result<()> {
        let mut tls = lock(&self.tls);
        while tls.wants_write() {
            tls.write_tls(&mut out.buf)?;
        }
        Ok(())
    }

    /// Writes the pending records to the socket.
    fn send(&self, out: &mut Pending) -> io::Result<()> {
        while out.sent < out.buf.len() {
            match (&self.sock).write(&out.buf[out.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => out.sent += n,
                Err(e) => return Err(e),
            }
        }
        out.buf.clear();
        out.sent = 0;
        Ok(())
    }
}
