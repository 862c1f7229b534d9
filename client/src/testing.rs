//! A fake broker for the clients' unit tests: it completes the handshake,
//! then answers `PING`s or stops reading, as the test asks.
#![allow(clippy::unwrap_used)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Weak,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use corecast_proto::{frame::Welcome, ClientFrame, ServerFrame};

/// What the fake broker does after `WELCOME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Reads every frame, answers `PING`s, and closes when the client does.
    Answer,
    /// Never reads again (a broker whose socket is full), and never closes
    /// by itself.
    Stuck,
}

/// A fake broker accepting one connection.
#[derive(Debug)]
pub(crate) struct FakeBroker {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeBroker {
    /// Starts it; its `WELCOME` announces a 30 s ping interval, so a client
    /// does not probe it during a test.
    pub(crate) fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut prefix = [0u8; 4];
            stream.read_exact(&mut prefix).unwrap();
            let mut hello = vec![0u8; u32::from_le_bytes(prefix) as usize];
            stream.read_exact(&mut hello).unwrap();
            send(
                &mut stream,
                &ServerFrame::Welcome(Welcome {
                    version: 1,
                    max_frame: 64 << 20,
                    ping_interval_ms: 30_000,
                    core_id: 0,
                    connection_id: 1,
                    server_name: "fake",
                }),
            );
            match behaviour {
                Behaviour::Answer => answer(stream),
                // Held open and unread until the fake broker is dropped.
                Behaviour::Stuck => {
                    while !stopped.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        });
        Self { addr, stop, thread: Some(thread) }
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn send(stream: &mut TcpStream, frame: &ServerFrame<'_>) {
    let mut out = Vec::new();
    frame.encode(&mut out);
    let _ = stream.write_all(&out);
}

/// Answers `PING`s until the client closes.
fn answer(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut src = &buf[..];
        let mut pongs = Vec::new();
        while let Ok(Some(frame)) = ClientFrame::decode(&mut src, u32::MAX) {
            if let ClientFrame::Ping { nonce } = frame {
                pongs.push(nonce);
            }
        }
        let used = buf.len() - src.len();
        buf.drain(..used);
        for nonce in pongs {
            send(&mut stream, &ServerFrame::Pong { nonce });
        }
    }
}

/// Waits until nothing holds `what` any more (10 s at most): whether every
/// thread or task that used it has ended.
pub(crate) fn released<T>(what: &Weak<T>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while what.strong_count() > 0 {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}
