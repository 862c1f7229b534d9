//! The embedding API: start a broker, read its address and counters, shut
//! it down and wait for it.

use std::{net::SocketAddr, sync::Arc};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::{
    config::{online_cpus, Config, ConfigError},
    core::{
        run::{self, CoreInit},
        shutdown::{ShutdownHandle, ShutdownSignal},
    },
    counters::{CoreCounters, Counters},
    listener::{self, Listeners},
    memlock::{self, MEMLOCK_NEEDED},
    mesh::link,
};

/// Memory each executor registers with io_uring, bytes: glommio's least.
/// It serves storage I/O, which the broker does not do, and does not change
/// the locked memory glommio needs (see [`MEMLOCK_NEEDED`]).
const IO_MEMORY: usize = 64 << 10;

/// Why the broker could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Locked memory is limited below what glommio needs.
    #[error(
        "the locked-memory limit is {} KiB but glommio's io_uring needs {} KiB: raise it with \
         `ulimit -l {}` in the shell that starts corecast, or `LimitMEMLOCK={}K` in its systemd \
         unit",
        limit / 1024,
        MEMLOCK_NEEDED / 1024,
        MEMLOCK_NEEDED / 1024,
        MEMLOCK_NEEDED / 1024
    )]
    MemLock {
        /// The soft `RLIMIT_MEMLOCK` in force, bytes.
        limit: u64,
    },
    /// The host to listen on does not resolve.
    #[error("cannot resolve the host `{host}` to listen on: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Another process (or another broker) already listens on the address.
    #[error("cannot listen on {addr}: address already in use (another process listens there)")]
    AddrInUse {
        /// The address, with the port.
        addr: SocketAddr,
    },
    /// The listening sockets could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// An executor could not be started.
    #[error("cannot start the executor for core {core}: {reason}")]
    Executor {
        /// The core's index.
        core: usize,
        /// What went wrong.
        reason: String,
    },
    /// A core stopped with an error.
    #[error("core {core} failed: {reason}")]
    Core {
        /// The core's index.
        core: usize,
        /// What went wrong.
        reason: String,
    },
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    addrs: Vec<SocketAddr>,
    config: Arc<Config>,
    counters: Arc<[Arc<CoreCounters>]>,
    executors: Vec<ExecutorJoinHandle<Result<(), String>>>,
    signal: Arc<ShutdownSignal>,
}

impl Broker {
    /// Starts one pinned executor per configured core, each listening on
    /// every address the configured one resolves to. Returns once every
    /// listener is bound, so clients may connect right away.
    pub fn start(config: Config) -> Result<Self, BrokerError> {
        let cfg = Arc::new(config.resolve()?);
        memlock::ensure_memlock().map_err(|limit| BrokerError::MemLock { limit })?;
        let listeners = bind(&cfg)?;
        Self::launch(cfg, listeners)
    }

    /// Starts the executors, each serving its core's listeners.
    fn launch(cfg: Arc<Config>, listeners: Listeners) -> Result<Self, BrokerError> {
        log_limits(&cfg, &listeners.addrs);
        let signal = ShutdownSignal::new(cfg.cores);
        let mut links = link::mesh(cfg.cores, cfg.cross_core_queue).into_iter();
        let cpus = online_cpus();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(cfg.cores);
        let counters: Arc<[Arc<CoreCounters>]> =
            (0..cfg.cores).map(|_| Arc::new(CoreCounters::default())).collect();
        let mut broker = Self {
            addrs: listeners.addrs,
            config: Arc::clone(&cfg),
            counters: Arc::clone(&counters),
            executors: Vec::new(),
            signal,
        };
        for (core, listeners) in listeners.per_core.into_iter().enumerate() {
            let init = CoreInit {
                core,
                cfg: Arc::clone(&cfg),
                counters: Arc::clone(&counters),
                listeners,
                links: links.next().unwrap_or_default(),
                signal: Arc::clone(&broker.signal),
                ready: ready_tx.clone(),
            };
            let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpus[core % cpus.len()]))
                .name(&format!("corecast-{core}"))
                .io_memory(IO_MEMORY)
                .spawn(move || run::run(init));
            match spawned {
                Ok(handle) => broker.executors.push(handle),
                Err(e) => {
                    return Err(broker.abort(BrokerError::Executor { core, reason: e.to_string() }))
                }
            }
        }
        drop(ready_tx);
        // Every core serves before the broker counts as started.
        for _ in 0..cfg.cores {
            if ready_rx.recv().is_err() {
                let reason = "stopped before serving".to_string();
                return Err(broker.abort(BrokerError::Executor { core: 0, reason }));
            }
        }
        Ok(broker)
    }

    /// Stops what did start and returns `error`, or the first core's own
    /// error when one failed.
    fn abort(self, error: BrokerError) -> BrokerError {
        self.shutdown();
        match self.wait() {
            Err(core_error) => core_error,
            Ok(()) => error,
        }
    }

    /// The first address clients may connect to (with the real port when 0
    /// was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every address the broker listens on, in the resolver's order; they
    /// share one port.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The configuration in force, with automatic values resolved.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Live counters, per core and summed.
    pub fn counters(&self) -> Counters {
        Counters::collect(self.counters.iter().map(|c| c.as_ref()))
    }

    /// A handle that can start the shutdown from another thread (a signal
    /// handler, say).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.signal))
    }

    /// Starts a graceful shutdown; see [`ShutdownHandle::shutdown`].
    pub fn shutdown(&self) {
        self.signal.raise();
    }

    /// Waits until every core has stopped (after a shutdown).
    pub fn wait(self) -> Result<(), BrokerError> {
        let mut result = Ok(());
        for (core, handle) in self.executors.into_iter().enumerate() {
            let outcome = match handle.join() {
                Ok(Ok(())) => continue,
                Ok(Err(reason)) => reason,
                Err(e) => e.to_string(),
            };
            tracing::error!(core, reason = %outcome, "core failed");
            result = Err(BrokerError::Core { core, reason: outcome });
        }
        result
    }
}

/// Resolves the configured address and listens on what it resolves to.
fn bind(cfg: &Config) -> Result<Listeners, BrokerError> {
    let host = cfg.listen.host();
    let addrs = cfg
        .listen
        .resolve()
        .map_err(|source| BrokerError::Resolve { host: host.into(), source })?;
    listener::bind_all(&addrs, cfg.cores).map_err(|(addr, source)| match source.kind() {
        std::io::ErrorKind::AddrInUse => BrokerError::AddrInUse { addr },
        _ => BrokerError::Listen { addr, source },
    })
}

fn log_limits(cfg: &Config, addrs: &[SocketAddr]) {
    const MIB: u64 = 1 << 20;
    let bound = cfg.max_memory();
    let all: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    tracing::info!(
        addr = %addrs[0],
        addrs = %all.join(","),
        cores = cfg.cores,
        max_connections_per_core = cfg.max_connections,
        max_pending = cfg.max_pending,
        pending_budget_per_core = cfg.pending_budget,
        "corecast listening; memory can reach at most {} MiB: {} MiB for {} connections at {} KiB \
         each, {} MiB of pending budget ({} MiB per core), {} MiB of cross-core queues",
        bound.total().div_ceil(MIB),
        bound.connections.div_ceil(MIB),
        cfg.max_connections * cfg.cores,
        crate::config::CONNECTION_OVERHEAD >> 10,
        bound.pending_budget.div_ceil(MIB),
        (cfg.pending_budget as u64).div_ceil(MIB),
        bound.cross_core.div_ceil(MIB),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

    use corecast_client::blocking::Client;

    use super::{listener, Broker};
    use crate::Config;

    fn config() -> Arc<Config> {
        let cfg = Config { cores: 2, max_frame: 4096, max_pending: 64 << 10, ..Config::default() };
        Arc::new(cfg.resolve().expect("valid"))
    }

    #[test]
    fn every_core_serves_every_address_and_they_share_one_port() {
        let both: [SocketAddr; 2] = ["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
        let listeners = match listener::bind_all(&both, 2) {
            Ok(listeners) => listeners,
            Err((addr, e)) => return eprintln!("note: skipped, cannot listen on {addr}: {e}"),
        };
        let broker = Broker::launch(config(), listeners).expect("starts");
        let [v4, v6] = broker.local_addrs() else { panic!("{:?}", broker.local_addrs()) };
        assert_eq!((v4.ip(), v6.ip()), (both[0].ip(), both[1].ip()));
        assert_eq!(v4.port(), v6.port());
        assert_eq!(broker.local_addr(), *v4);
        for addr in [v4, v6] {
            // 16 connections all on one core: 1 in 32768 when both serve.
            let clients: Vec<Client> = (0..16).map(|_| Client::connect(addr).unwrap()).collect();
            let cores: BTreeSet<u16> = clients.iter().map(|c| c.server_info().core_id).collect();
            assert_eq!(cores, BTreeSet::from([0, 1]), "cores accepting on {addr}");
        }
        let sub = Client::connect(v6).unwrap();
        let messages = sub.subscribe("both.t").unwrap();
        sub.flush().unwrap();
        let publisher = Client::connect(v4).unwrap();
        publisher.publish("both.t", b"across families").unwrap();
        publisher.flush().unwrap();
        let got = messages.recv_timeout(Duration::from_secs(5)).unwrap().expect("a message");
        assert_eq!(&got.payload[..], b"across families");
        drop((sub, publisher, messages));
        broker.shutdown();
        broker.wait().expect("stops cleanly");
    }
}
