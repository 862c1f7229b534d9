//! WebSocket under a [`super::Wire`]: the broker's protocol, byte for
//! byte, inside binary messages (corecast's web port, nats-server's
//! `websocket` port). tungstenite makes the upgrade request and parses the
//! answer (httparse under it), then frames and masks what the client sends
//! and unframes what it reads through a `WebSocketContext` over the
//! connection's own socket. A message may hold part of a protocol frame or
//! several: its payload is only copied into the read buffer, after the
//! bytes not consumed yet, as a plain read would put them there.

use std::{
    io,
    net::{SocketAddr, TcpStream},
    time::Instant,
};

use anyhow::{bail, Context};
use tungstenite::{
    client::IntoClientRequest,
    error::ProtocolError,
    handshake::{
        client::{generate_request, Response},
        derive_accept_key,
        machine::TryParse,
    },
    http::StatusCode,
    protocol::{Role, WebSocketConfig, WebSocketContext},
    Bytes, Message,
};

/// The most bytes the client puts in one message: corecast takes messages
/// of up to 64 KiB, and a protocol frame may span messages.
const MAX_MESSAGE: usize = 16 << 10;

/// The upgrade request for `GET /` at `addr`, and the key its answer must
/// derive its accept header from.
pub fn request(addr: SocketAddr) -> anyhow::Result<(Vec<u8>, String)> {
    let request = format!("ws://{addr}/").into_client_request().context("WebSocket request")?;
    generate_request(request).context("WebSocket request")
}

/// Reads the answer to the upgrade at the front of `head`: `None` until
/// it has wholly arrived, then the bytes it took (what follows is the
/// session's). Anything but a `101` with the right accept key is an error.
pub fn response(head: &[u8], key: &str) -> anyhow::Result<Option<usize>> {
    let Some((used, response)) = Response::try_parse(head).context("WebSocket upgrade answer")?
    else {
        return Ok(None);
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        bail!("WebSocket upgrade refused: {}", response.status());
    }
    let accept = response.headers().get("Sec-WebSocket-Accept");
    if accept.is_none_or(|a| a.as_bytes() != derive_accept_key(key.as_bytes()).as_bytes()) {
        bail!("WebSocket upgrade answered with a wrong Sec-WebSocket-Accept");
    }
    Ok(Some(used))
}

/// One client session after the upgrade.
#[derive(Debug)]
pub struct Session {
    ctx: WebSocketContext,
    /// Payload of the last message read, not yet copied out.
    pending: Bytes,
}

impl Session {
    /// A session whose first bytes (those that came with the `101`) are
    /// `early`; tungstenite reads up to `read_buffer` bytes at a time.
    pub fn new(early: Vec<u8>, read_buffer: usize) -> Self {
        let config = WebSocketConfig::default().read_buffer_size(read_buffer.max(512));
        let ctx = WebSocketContext::from_partially_read(early, Role::Client, Some(config));
        Self { ctx, pending: Bytes::new() }
    }

    /// Copies payload into `out`: what is left of the last message, else
    /// the next data message (pings are answered on the way). `Ok(0)` is
    /// the end of the session; would-block only once the socket would.
    pub fn read(&mut self, stream: &mut TcpStream, out: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            match self.ctx.read(stream) {
                Ok(Message::Binary(payload)) => self.pending = payload,
                Ok(Message::Text(text)) => self.pending = text.into(),
                Ok(Message::Close(_)) => return Ok(0),
                Ok(_) => {}
                Err(e) => return ended(e),
            }
        }
        let n = self.pending.len().min(out.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        self.pending = self.pending.slice(n..);
        Ok(n)
    }

    /// Sends `bytes` in binary messages of at most [`MAX_MESSAGE`] bytes;
    /// a full socket is waited out with `wait` until `deadline`.
    pub fn write_all(
        &mut self,
        stream: &mut TcpStream,
        bytes: &[u8],
        deadline: Instant,
        wait: impl Fn(&TcpStream, Instant) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        for chunk in bytes.chunks(MAX_MESSAGE) {
            let message = Message::Binary(Bytes::copy_from_slice(chunk));
            // A message that could not be written yet stays buffered.
            match self.ctx.write(stream, message) {
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(stream, deadline)?
                }
                other => other.context("WebSocket write")?,
            }
        }
        loop {
            match self.ctx.flush(stream) {
                Ok(()) => return Ok(()),
                Err(tungstenite::Error::Io(e)) if is_retry(&e) => wait(stream, deadline)?,
                Err(e) => return Err(e).context("WebSocket write"),
            }
        }
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

/// A tungstenite error on read as a read's outcome: socket errors as they
/// are, a session closed (with or without its closing handshake) as the
/// end of the stream, anything else as invalid data.
fn ended(e: tungstenite::Error) -> io::Result<usize> {
    match e {
        tungstenite::Error::Io(e) => Err(e),
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ok(0),
        e => Err(io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread, time::Duration};

    use super::*;

    #[test]
    fn the_upgrade_answer_is_checked() {
        let (request, key) = request(([127, 0, 0, 1], 7480).into()).expect("request");
        let text = String::from_utf8(request).expect("ASCII");
        assert!(text.starts_with("GET / HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("Host: 127.0.0.1:7480\r\n"), "{text}");
        let accept = derive_accept_key(key.as_bytes());
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let mut ok = head.clone().into_bytes();
        ok.extend_from_slice(&[0x82, 1, b'x']);
        assert_eq!(response(&ok[..20], &key).expect("partial"), None);
        assert_eq!(response(&ok, &key).expect("whole"), Some(head.len()));
        let wrong = head.replace(&accept, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert!(response(wrong.as_bytes(), &key).is_err());
        let refused = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let err = response(refused.as_bytes(), &key).expect_err("404");
        assert!(format!("{err:#}").contains("404"), "{err:#}");
    }

    /// A server that sends `abcdef` in two messages around a ping, then
    /// echoes the payload of every binary message it reads until it reads
    /// `end`, then closes.
    fn serve(listener: TcpListener) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut ws = tungstenite::accept(stream).expect("upgrade");
            for m in [
                Message::binary(&b"abc"[..]),
                Message::Ping(Bytes::new()),
                Message::binary(&b"def"[..]),
            ] {
                ws.send(m).expect("send");
            }
            let mut got = Vec::new();
            loop {
                match ws.read().expect("read") {
                    Message::Binary(b) if &b[..] == b"end" => break,
                    Message::Binary(b) => got.extend_from_slice(&b),
                    _ => {}
                }
            }
            ws.close(None).expect("close");
            while ws.read().is_ok() {}
            got
        })
    }

    #[test]
    fn a_session_reads_a_stream_and_writes_it_in_messages() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = serve(listener);
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let (req, key) = request(addr).expect("request");
        std::io::Write::write_all(&mut stream, &req).expect("send request");
        let mut head = Vec::new();
        let used = loop {
            let mut b = [0u8; 1];
            assert_eq!(std::io::Read::read(&mut stream, &mut b).expect("read head"), 1);
            head.push(b[0]);
            if let Some(used) = response(&head, &key).expect("valid answer") {
                break used;
            }
        };
        let mut session = Session::new(head[used..].to_vec(), 4096);
        let mut out = Vec::new();
        let mut buf = [0u8; 2];
        while out.len() < 6 {
            let n = session.read(&mut stream, &mut buf).expect("read");
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"abcdef", "two messages, copied out two bytes at a time");
        let big = vec![7u8; 3 * MAX_MESSAGE + 5];
        let deadline = Instant::now() + Duration::from_secs(5);
        let no_wait = |_: &TcpStream, _: Instant| anyhow::Ok(());
        session.write_all(&mut stream, &big, deadline, no_wait).expect("write");
        session.write_all(&mut stream, b"end", deadline, no_wait).expect("write end");
        assert_eq!(session.read(&mut stream, &mut buf).expect("close"), 0, "the close ends it");
        drop(stream);
        assert_eq!(server.join().expect("server"), big);
    }
}
