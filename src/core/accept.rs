//! The accept loop: one per listener of a core. Each connection gets a slot
//! and a task of its own, or `ERR server full` when the core has no slot
//! left. Connections on the TLS port take slots from the same slab (so
//! `max_connections` counts both ports) and begin with the TLS handshake;
//! refused, they are only closed, since a plaintext `ERR` would be garbage
//! to a TLS client.

use std::{
    cell::Cell,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use corecast_proto::{ErrFrame, ErrorCode, ServerFrame};
use futures_lite::{future, AsyncWriteExt};
use glommio::{
    net::{TcpListener, TcpStream},
    timer::sleep,
};

use super::{closed::ClosedConn, connection, shard::Shard};
use crate::{
    counters::CoreCounters,
    tls::session::Tls,
    web::{session::Web, upgrade::Origins},
};

/// Which port a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// Plain TCP.
    Plain,
    /// TLS first.
    Tls,
    /// The web port: an HTTP request first, then a WebSocket session.
    Web,
}

pub(super) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, port: Port) {
    let mut warned: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok(stream) => admit(&shard, stream, port).await,
            Err(e) => {
                // Out of descriptors and the like: back off instead of
                // spinning, and say so once in a while, not every time.
                CoreCounters::add(&shard.counters.accept_failures, 1);
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(core = shard.core, error = %e, "accept failed");
                    warned = Some(Instant::now());
                }
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn admit(shard: &Rc<Shard>, stream: TcpStream, port: Port) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let web = (port == Port::Web).then(|| {
        let origins =
            shard.cfg().web.as_ref().map(|w| w.allowed_origins.clone()).unwrap_or_default();
        Web::new(Origins::new(origins))
    });
    let web_tls = port == Port::Web && shard.cfg().web.as_ref().is_some_and(|w| w.tls);
    let tls = match port {
        Port::Plain => None,
        Port::Web if !web_tls => None,
        Port::Tls | Port::Web => {
            let session = shard.tls_config().map(Tls::new);
            match session {
                Some(Ok(session)) => Some(session),
                _ => {
                    tracing::warn!(core = shard.core, %peer, "no TLS session could be set up");
                    return;
                }
            }
        }
    };
    let Some(key) = shard.open_slot(peer) else {
        // Only a plain client reads a corecast ERR.
        match port {
            Port::Plain => refuse_full(shard, peer, stream).await,
            Port::Tls | Port::Web => refuse_tls(shard, peer, stream).await,
        }
        return;
    };
    let _ = stream.set_nodelay(true);
    if tls.is_some() {
        shard.state.borrow_mut().slots[key].start_tls();
    }
    // The state borrow taken by open_slot has ended: spawning polls at once.
    let task = connection::serve(Rc::clone(shard), stream, key, (tls, web));
    match shard.gate.spawn(task) {
        Ok(task) => {
            task.detach();
        }
        Err(_) => tracing::warn!(core = shard.core, "connection arrived during shutdown"),
    }
}

/// Tells a connection the core is full, without taking a slot or buffers.
async fn refuse_full(shard: &Shard, peer: SocketAddr, mut stream: TcpStream) {
    CoreCounters::add(&shard.counters.connections_refused, 1);
    let code = ErrorCode::ServerFull.as_u16();
    shard.state.borrow_mut().closed.record(ClosedConn::refused(peer, shard.core, code));
    shard.refusals.note(shard.core, peer, shard.cfg().max_connections);
    let text = "connection limit reached";
    let frame = ServerFrame::Err(ErrFrame { code, fatal: true, text });
    let mut bytes = Vec::with_capacity(frame.encoded_len());
    frame.encode(&mut bytes);
    // One non-blocking attempt: a fresh socket takes a small frame at once.
    let _ = future::poll_once(stream.write_all(&bytes)).await;
    let _ = future::poll_once(stream.close()).await;
}

/// Closes a connection on the TLS port when the core is full: counted and
/// recorded like a plain refusal, but without the frame.
async fn refuse_tls(shard: &Shard, peer: SocketAddr, mut stream: TcpStream) {
    CoreCounters::add(&shard.counters.connections_refused, 1);
    let code = ErrorCode::ServerFull.as_u16();
    shard.state.borrow_mut().closed.record(ClosedConn::refused(peer, shard.core, code));
    shard.refusals.note(shard.core, peer, shard.cfg().max_connections);
    let _ = future::poll_once(stream.close()).await;
}

/// Logs connections refused for a full core at `info`, at most once a
/// second: a storm of refusals is one line a second with how many there
/// were, not one line each.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    last_logged: Cell<Option<Instant>>,
    unlogged: Cell<u64>,
}

impl Refusals {
    /// `peer` was refused on `core`, full at `max_connections` slots.
    fn note(&self, core: usize, peer: SocketAddr, max_connections: usize) {
        let now = Instant::now();
        if self.last_logged.get().is_some_and(|at| now - at < Duration::from_secs(1)) {
            self.unlogged.set(self.unlogged.get() + 1);
            return;
        }
        self.last_logged.set(Some(now));
        let also_refused = self.unlogged.replace(0);
        tracing::info!(
            core,
            %peer,
            max_connections,
            also_refused,
            "connection refused: server full"
        );
    }
}
