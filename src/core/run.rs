//! What runs on each core: the state, then the cross-core tasks, the
//! sweeper and one accept loop per listener, until the shutdown signal.

use std::{
    os::fd::{FromRawFd, IntoRawFd},
    rc::Rc,
    sync::Arc,
};

use glommio::{net::TcpListener, Task};

use futures_lite::future;

use super::{
    accept::{accept_loop, Port},
    inspect::{answer_queries, Inbox},
    lame_duck,
    shard::Shard,
    shutdown::{self, ShutdownSignal, Stop},
    sweep::sweep,
};
use crate::{
    auth::{Authenticator, Logins},
    config::Config,
    counters::CoreCounters,
    mesh::{link::CoreLinks, tasks::MeshTasks},
};

/// What a core needs to start.
pub(crate) struct CoreInit {
    pub core: usize,
    pub cfg: Arc<Config>,
    /// Every core's counters; this core writes its own.
    pub counters: Arc<[Arc<CoreCounters>]>,
    /// This core's listening sockets, one per address.
    pub listeners: Vec<socket2::Socket>,
    /// This core's TLS listening sockets, one per address of `[tls] listen`.
    pub tls_listeners: Vec<socket2::Socket>,
    /// This core's web-port listening sockets.
    pub web_listeners: Vec<socket2::Socket>,
    /// What TLS connections are served with, when the broker serves TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// This core's ends of the links to and from every other core.
    pub links: CoreLinks,
    pub signal: Arc<ShutdownSignal>,
    /// Where questions for this core arrive.
    pub inbox: Arc<Inbox>,
    /// The authenticator at start, and what the cores share for logins.
    pub auth: (Arc<Authenticator>, Arc<Logins>),
    /// Told once this core is serving.
    pub ready: std::sync::mpsc::SyncSender<()>,
}

/// Runs one core until shutdown completes.
pub(crate) async fn run(init: CoreInit) -> Result<(), String> {
    let CoreInit {
        core,
        cfg,
        counters,
        listeners,
        tls_listeners,
        web_listeners,
        tls,
        links,
        signal,
        inbox,
        auth,
        ready,
    } = init;
    let shard = Shard::new(core, cfg, counters, auth)
        .ok_or_else(|| "cannot reserve address space for the pending budget".to_string())?;
    if let Some(tls) = tls {
        shard.set_tls_config(tls);
    }
    let shard = Rc::new(shard);
    let mesh_tasks = MeshTasks::start(&shard, links);
    let sweeper = glommio::spawn_local(sweep(Rc::clone(&shard)));
    let answerer = glommio::spawn_local(answer_queries(Rc::clone(&shard), inbox));
    let ports = listeners.into_iter().map(|l| (l, Port::Plain));
    let acceptors: Vec<Task<()>> = ports
        .chain(tls_listeners.into_iter().map(|l| (l, Port::Tls)))
        .chain(web_listeners.into_iter().map(|l| (l, Port::Web)))
        .map(|(listener, port)| {
            // SAFETY: the fd is a listening TCP socket we own; ownership moves over.
            let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
            glommio::spawn_local(accept_loop(Rc::clone(&shard), listener, port))
        })
        .collect();
    let _ = ready.send(());
    drop(ready);
    let stop = signal.wait_stop(core).await;
    for acceptor in acceptors {
        acceptor.cancel().await;
    }
    if stop == Stop::LameDuck {
        tracing::info!(core, "lame duck: listeners closed");
        // The broker raises the shutdown once every client left or the
        // duration is over.
        future::or(signal.wait(core), lame_duck::evict(Rc::clone(&shard))).await;
        signal.wait(core).await;
    }
    tracing::info!(core, "shutting down");
    shutdown::shutdown(&shard, mesh_tasks).await;
    sweeper.cancel().await;
    answerer.cancel().await;
    Ok(())
}
