//! The monitoring port: `/metrics` (Prometheus), `/healthz`, `/stats`,
//! `/connz` and `/subsz`, over HTTP/1.1 with hyper.
//!
//! It runs on a thread of its own with a single-threaded tokio runtime,
//! never on the cores. What it shows comes from the counters (atomics the
//! cores publish) and from questions put in each core's inbox
//! ([`crate::core::inspect`]), answered by the core between its other
//! tasks. HTTP is input from the network like any other: connections,
//! header size and time are bounded, and a client past a bound is refused
//! or closed without reaching a core.

mod metrics;
mod routes;
mod views;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, thread::JoinHandle, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, Semaphore};

use crate::{address::ListenAddr, broker::Control};

/// HTTP connections served at once; more are closed as they arrive.
const MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line and headers), bytes; past it the
/// answer is `431` and a close.
const MAX_HEADER_BYTES: usize = 16 << 10;
/// Time a client has to send a request head: a slowloris is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection lives, keep-alive or not.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The running monitoring port.
#[derive(Debug)]
pub(crate) struct Monitor {
    addr: SocketAddr,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Listens on `at` and serves from a thread of its own.
    pub(crate) fn start(at: &ListenAddr, control: Arc<Control>) -> std::io::Result<Self> {
        let addrs = at.resolve()?;
        let listener = std::net::TcpListener::bind(&addrs[..])?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let stop = Arc::new(Notify::new());
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("corecast-http".into()).spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, control, stopped).await,
                    Err(e) => tracing::error!(error = %e, "monitoring port cannot serve"),
                }
            });
        })?;
        tracing::info!(%addr, "monitoring port listening (/metrics /healthz /stats /connz /subsz)");
        Ok(Self { addr, stop, thread: Some(thread) })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: open HTTP connections are dropped with the runtime.
    pub(crate) fn stop(mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts until told to stop, each connection within the bounds.
async fn serve(listener: tokio::net::TcpListener, control: Arc<Control>, stop: Arc<Notify>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = stop.notified() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Past the bound the connection is closed at once.
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else { continue };
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            serve_connection(stream, control).await;
            drop(permit);
        });
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, control: Arc<Control>) {
    let service = service_fn(move |request| {
        let control = Arc::clone(&control);
        async move { Ok::<_, Infallible>(routes::handle(&control, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
}
