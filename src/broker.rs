//! The embedding API: start a broker, read its address and counters, shut
//! it down and wait for it.

use std::{net::SocketAddr, sync::Arc};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::{
    config::{online_cpus, Config, ConfigError},
    counters::{CoreCounters, Counters},
    link, listener,
    memlock::{self, MEMLOCK_NEEDED},
    server::{self, CoreInit},
    shutdown::{ShutdownHandle, ShutdownSignal},
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
    addr: SocketAddr,
    config: Arc<Config>,
    counters: Arc<[Arc<CoreCounters>]>,
    executors: Vec<ExecutorJoinHandle<Result<(), String>>>,
    signal: Arc<ShutdownSignal>,
}

impl Broker {
    /// Starts one pinned executor per configured core, each listening on the
    /// configured address. Returns once every listener is bound, so clients
    /// may connect right away.
    pub fn start(config: Config) -> Result<Self, BrokerError> {
        let cfg = Arc::new(config.resolve()?);
        memlock::ensure_memlock().map_err(|limit| BrokerError::MemLock { limit })?;
        let sockets = listener::bind_group(cfg.listen, cfg.cores)
            .map_err(|source| BrokerError::Listen { addr: cfg.listen, source })?;
        let addr = sockets[0].local_addr().ok().and_then(|a| a.as_socket()).ok_or_else(|| {
            BrokerError::Listen {
                addr: cfg.listen,
                source: std::io::ErrorKind::AddrNotAvailable.into(),
            }
        })?;
        log_limits(&cfg, addr);
        let signal = ShutdownSignal::new(cfg.cores);
        let mut links = link::mesh(cfg.cores, cfg.cross_core_queue).into_iter();
        let cpus = online_cpus();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(cfg.cores);
        let counters: Arc<[Arc<CoreCounters>]> =
            (0..cfg.cores).map(|_| Arc::new(CoreCounters::default())).collect();
        let mut broker = Self {
            addr,
            config: Arc::clone(&cfg),
            counters: Arc::clone(&counters),
            executors: Vec::new(),
            signal,
        };
        for (core, listener) in sockets.into_iter().enumerate() {
            let init = CoreInit {
                core,
                cfg: Arc::clone(&cfg),
                counters: Arc::clone(&counters),
                listener,
                links: links.next().unwrap_or_default(),
                signal: Arc::clone(&broker.signal),
                ready: ready_tx.clone(),
            };
            let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpus[core % cpus.len()]))
                .name(&format!("corecast-{core}"))
                .io_memory(IO_MEMORY)
                .spawn(move || server::run(init));
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

    /// The address clients connect to (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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

fn log_limits(cfg: &Config, addr: SocketAddr) {
    const MIB: u64 = 1 << 20;
    tracing::info!(
        %addr,
        cores = cfg.cores,
        max_connections_per_core = cfg.max_connections,
        max_frame = cfg.max_frame,
        read_buffer = cfg.read_buffer,
        write_buffer = cfg.write_buffer,
        "corecast listening; buffers and queues can reach at most {} MiB",
        cfg.max_memory().div_ceil(MIB)
    );
}
