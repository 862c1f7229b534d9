//! The broker's counters read with a `STATS` frame over the client port
//! (PROTOCOL.md, section 10.1). The blocking client has no call for it
//! (its `stats()` counts what the client itself did), so this opens a
//! connection of its own with the same options (address, name, token,
//! connect timeout), says `HELLO`, asks once and closes.

use std::{
    io::{ErrorKind, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use corecast_client::{ClientError, ServerError};
use corecast_proto::{ClientFrame, ErrFrame, Hello, ServerFrame};

use super::json::FrameStats;
use crate::cli::Connection;

/// Largest frame read from the broker.
const MAX_FRAME: u32 = 16 << 20;
/// The nonce of the one `STATS` sent.
const NONCE: u64 = 1;

/// What the broker said.
#[derive(Debug)]
pub struct Answer {
    /// Its name, from `WELCOME`.
    pub server_name: String,
    pub stats: FrameStats,
}

/// Connects, says `HELLO` and asks for the counters.
pub fn read(conn: &Connection) -> anyhow::Result<Answer> {
    let mut link = Link::open(conn)?;
    let token = conn.auth_token.as_deref().unwrap_or("").as_bytes();
    link.send(ClientFrame::Hello(Hello { version: 1, name: &conn.name, token }))?;
    let server_name = link.next(|frame| match frame {
        ServerFrame::Welcome(w) => Ok(Some(w.server_name.to_owned())),
        ServerFrame::Err(e) => Err(ClientError::Refused(owned(e)).into()),
        _ => Ok(None),
    })?;
    link.handshake = false;
    link.send(ClientFrame::Stats { nonce: NONCE })?;
    let json = link.next(|frame| match frame {
        ServerFrame::StatsReply { nonce: NONCE, json } => Ok(Some(json.to_owned())),
        ServerFrame::Err(e) => Err(anyhow!(
            "the broker at {} did not answer STATS: {} (read /stats with --http instead)",
            conn.server,
            owned(e)
        )),
        _ => Ok(None),
    })?;
    let stats = serde_json::from_str(&json).with_context(|| {
        format!("the broker at {} sent a STATS_REPLY this tool cannot read", conn.server)
    })?;
    Ok(Answer { server_name, stats })
}

fn owned(e: ErrFrame<'_>) -> ServerError {
    ServerError { code: e.code, fatal: e.fatal, text: e.text.to_owned() }
}

/// A connection to the client port and the bytes read but not yet taken.
struct Link<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    server: &'a str,
    timeout: Duration,
    /// Until `WELCOME`: a silent broker is a connect timeout.
    handshake: bool,
}

impl<'a> Link<'a> {
    /// Connects to the first address of `conn.server` that answers within
    /// the connect timeout.
    fn open(conn: &'a Connection) -> Result<Self, ClientError> {
        let (server, timeout) = (conn.server.as_str(), conn.connect_timeout);
        let connect_error = |source| ClientError::Connect { addr: server.to_owned(), source };
        let mut last = None;
        for addr in server.to_socket_addrs().map_err(connect_error)? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout)).map_err(connect_error)?;
                    return Ok(Self { stream, buf: Vec::new(), server, timeout, handshake: true });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) if e.kind() == ErrorKind::TimedOut => {
                ClientError::ConnectTimeout { addr: server.to_owned(), timeout }
            }
            Some(e) => connect_error(e),
            None => connect_error(ErrorKind::AddrNotAvailable.into()),
        })
    }

    fn send(&mut self, frame: ClientFrame<'_>) -> anyhow::Result<()> {
        let mut bytes = Vec::with_capacity(frame.encoded_len());
        frame.encode(&mut bytes);
        self.stream
            .write_all(&bytes)
            .with_context(|| format!("cannot write to the broker at {}", self.server))
    }

    /// Reads frames until `pick` takes one (`Some`) or fails.
    fn next<T>(
        &mut self,
        mut pick: impl FnMut(ServerFrame<'_>) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        loop {
            let mut src = &self.buf[..];
            match ServerFrame::decode(&mut src, MAX_FRAME) {
                Ok(Some(frame)) => {
                    let used = self.buf.len() - src.len();
                    let picked = pick(frame)?;
                    self.buf.drain(..used);
                    if let Some(picked) = picked {
                        return Ok(picked);
                    }
                }
                Ok(None) => self.fill()?,
                Err(e) => {
                    bail!("the broker at {} sent a frame this tool cannot read: {e}", self.server)
                }
            }
        }
    }

    /// Reads what has arrived, waiting up to the connect timeout.
    fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        match self.stream.read(&mut chunk) {
            Ok(0) => bail!("the broker at {} closed the connection", self.server),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let (addr, timeout) = (self.server.to_owned(), self.timeout);
                if self.handshake {
                    return Err(ClientError::ConnectTimeout { addr, timeout }.into());
                }
                bail!("the broker at {addr} did not answer STATS within {timeout:?}")
            }
            Err(e) => {
                Err(e).with_context(|| format!("cannot read from the broker at {}", self.server))
            }
        }
    }
}
