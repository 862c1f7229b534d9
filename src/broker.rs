//! The embedding API: start a broker, read its address and counters, shut
//! it down and wait for it.

use std::{
    io::ErrorKind,
    net::SocketAddr,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::auth::{Authenticator, Logins};
use crate::{
    address::ListenAddr,
    cluster::{self, ClusterCounters, ClusterSnapshot},
    config::{online_cpus, Config, ConfigError, DEFAULT_HTTP},
    core::{
        inspect::{Inbox, Query, Reload, Reply},
        run::{self, CoreInit},
        shutdown::ShutdownSignal,
    },
    counters::{CoreCounters, Counters, HistogramSnapshot},
    listener::{self, Listeners},
    memlock::{self, MEMLOCK_NEEDED},
    mesh::link,
    monitor::Monitor,
    tls,
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
    /// The monitoring port could not listen.
    #[error("cannot serve the monitoring port on {addr}: {source}")]
    Monitor {
        /// The address asked for.
        addr: String,
        /// What went wrong.
        source: std::io::Error,
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
    /// The TLS listeners' addresses, if the broker serves TLS.
    tls_addrs: Vec<SocketAddr>,
    /// The web port's addresses, if the broker serves one.
    web_addrs: Vec<SocketAddr>,
    control: Arc<Control>,
    executors: Vec<ExecutorJoinHandle<Result<(), String>>>,
    /// The cluster bridge's thread, when the node is in a cluster; it ends
    /// once the cores closed their links to it.
    bridge: Option<std::thread::JoinHandle<()>>,
    monitor: Option<Monitor>,
}

/// What the threads outside the cores (the monitoring port, signals, the
/// embedding API) use to see and steer them: the settings in force, the
/// counters, each core's inbox and the shutdown signal.
#[derive(Debug)]
pub(crate) struct Control {
    config: Mutex<Arc<Config>>,
    /// `max_connections` at start: the final-frame reserve is sized for it.
    start_max_connections: usize,
    counters: Arc<[Arc<CoreCounters>]>,
    inboxes: Vec<Arc<Inbox>>,
    signal: Arc<ShutdownSignal>,
    /// Ends the lame duck once every client left or its time is up.
    lame_duck: Mutex<Option<JoinHandle<()>>>,
    /// The TLS settings the cores serve new connections with, as loaded
    /// last; a reload compares the files it loads against it.
    tls: Mutex<Option<tls::Loaded>>,
    /// The cluster bridge's counters, when the node is in a cluster.
    cluster: Option<Arc<ClusterCounters>>,
    started_at: SystemTime,
    started: Instant,
}

impl Broker {
    /// Starts one pinned executor per configured core, each listening on
    /// every address the configured one resolves to. Returns once every
    /// listener is bound, so clients may connect right away.
    pub fn start(config: Config) -> Result<Self, BrokerError> {
        let cfg = Arc::new(config.resolve()?);
        let auth = Arc::new(Authenticator::new(&cfg)?);
        memlock::ensure_memlock().map_err(|limit| BrokerError::MemLock { limit })?;
        let tls = cfg.tls.as_ref().map(tls::load).transpose()?;
        let listeners = bind(&cfg.listen, cfg.cores)?;
        let tls = match (tls, &cfg.tls) {
            (Some(loaded), Some(section)) => Some((bind(&section.listen, cfg.cores)?, loaded)),
            _ => None,
        };
        let web = cfg.web.as_ref().map(|w| bind(&w.listen, cfg.cores)).transpose()?;
        Self::launch(cfg, auth, (listeners, web), tls)
    }

    /// Starts the executors, each serving its core's listeners (and TLS
    /// listeners, with the TLS settings loaded).
    fn launch(
        cfg: Arc<Config>,
        auth: Arc<Authenticator>,
        (listeners, web): (Listeners, Option<Listeners>),
        tls: Option<(Listeners, tls::Loaded)>,
    ) -> Result<Self, BrokerError> {
        let logins = Logins::start(cfg.cores).map_err(|e| BrokerError::Executor {
            core: 0,
            reason: format!("cannot start the password threads: {e}"),
        })?;
        let logins = Arc::new(logins);
        log_limits(&cfg, &listeners.addrs);
        let signal = ShutdownSignal::new(cfg.cores);
        let mut links = link::mesh(cfg.mesh_size(), cfg.cross_core_queue).into_iter();
        let cpus = online_cpus();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(cfg.cores);
        let counters: Arc<[Arc<CoreCounters>]> =
            (0..cfg.cores).map(|_| Arc::new(CoreCounters::default())).collect();
        let control = Arc::new(Control {
            config: Mutex::new(Arc::clone(&cfg)),
            start_max_connections: cfg.max_connections,
            counters: Arc::clone(&counters),
            inboxes: (0..cfg.cores).map(|_| Arc::new(Inbox::default())).collect(),
            signal,
            lame_duck: Mutex::new(None),
            tls: Mutex::new(tls.as_ref().map(|(_, loaded)| loaded.clone())),
            cluster: cfg.cluster.as_ref().map(|_| Arc::new(ClusterCounters::default())),
            started_at: SystemTime::now(),
            started: Instant::now(),
        });
        let (tls_addrs, mut tls_per_core, tls_config) = match tls {
            Some((bound, loaded)) => (bound.addrs, bound.per_core, Some(loaded.config)),
            None => (Vec::new(), Vec::new(), None),
        };
        let (web_addrs, mut web_per_core) = match web {
            Some(bound) => (bound.addrs, bound.per_core),
            None => (Vec::new(), Vec::new()),
        };
        let mut broker = Self {
            addrs: listeners.addrs,
            tls_addrs,
            web_addrs,
            control: Arc::clone(&control),
            executors: Vec::new(),
            bridge: None,
            monitor: None,
        };
        for (core, listeners) in listeners.per_core.into_iter().enumerate() {
            let init = CoreInit {
                core,
                cfg: Arc::clone(&cfg),
                counters: Arc::clone(&counters),
                listeners,
                tls_listeners: if tls_per_core.is_empty() {
                    Vec::new()
                } else {
                    std::mem::take(&mut tls_per_core[core])
                },
                web_listeners: web_per_core.get_mut(core).map(std::mem::take).unwrap_or_default(),
                tls: tls_config.clone(),
                links: links.next().unwrap_or_default(),
                signal: Arc::clone(&control.signal),
                inbox: Arc::clone(&control.inboxes[core]),
                auth: (Arc::clone(&auth), Arc::clone(&logins)),
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
        if let Some(counters) = &control.cluster {
            let bridge_links = links.next().unwrap_or_default();
            match cluster::run::start(&cfg, bridge_links, Arc::clone(counters)) {
                Ok(thread) => broker.bridge = Some(thread),
                Err(e) => {
                    let reason = format!("cannot start the cluster bridge: {e}");
                    return Err(broker.abort(BrokerError::Executor { core: 0, reason }));
                }
            }
        }
        // Every core serves before the broker counts as started.
        for _ in 0..cfg.cores {
            if ready_rx.recv().is_err() {
                let reason = "stopped before serving".to_string();
                return Err(broker.abort(BrokerError::Executor { core: 0, reason }));
            }
        }
        match start_monitor(&cfg, &control) {
            Ok(monitor) => broker.monitor = monitor,
            Err(e) => return Err(broker.abort(e)),
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

    /// The first address of the TLS port (with the real port when 0 was
    /// asked), if the broker serves TLS.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addrs.first().copied()
    }

    /// The first address of the web port (with the real port when 0 was
    /// asked), if the broker serves one.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addrs.first().copied()
    }

    /// The configuration in force, with automatic values resolved (and
    /// the last reload applied).
    pub fn config(&self) -> Arc<Config> {
        self.control.config()
    }

    /// The address of the monitoring port, if it serves.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.monitor.as_ref().map(Monitor::addr)
    }

    /// Live counters, per core and summed.
    pub fn counters(&self) -> Counters {
        self.control.counters()
    }

    /// The cluster bridge's counters, when the node is in a cluster.
    pub fn cluster_counters(&self) -> Option<ClusterSnapshot> {
        self.control.cluster()
    }

    /// A handle that can start the shutdown, the lame duck or a reload from
    /// another thread (a signal handler, say).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.control))
    }

    /// Starts a graceful shutdown; see [`ShutdownHandle::shutdown`].
    pub fn shutdown(&self) {
        self.control.signal.raise();
    }

    /// Starts lame duck mode: every core closes its listeners (`/healthz`
    /// turns 503), waits `lame_duck_grace`, then sends its clients `GOAWAY`
    /// spread over `lame_duck_duration`. The shutdown follows once every
    /// client has left or that time is over.
    pub fn lame_duck(&self) {
        Control::lame_duck(&self.control);
    }

    /// Puts a new configuration in force: limits, heartbeats, deadlines and
    /// the token apply to new connections and, at their next frame or
    /// sweep, to open ones. Settings fixed at start keep their value and
    /// are listed in [`Reloaded::refused`]. An invalid `new` changes
    /// nothing. The TLS files are read again: new connections get the new
    /// certificate, open ones keep theirs; files that do not load keep the
    /// old ones, listed in [`Reloaded::failed`].
    pub fn reload(&self, new: Config) -> Result<Reloaded, ConfigError> {
        self.control.reload(new)
    }

    /// Waits until every core has stopped (after a shutdown), then stops
    /// the monitoring port, which serves `/healthz` (503) meanwhile.
    pub fn wait(self) -> Result<(), BrokerError> {
        let result = join_cores(self.executors);
        if let Some(bridge) = self.bridge {
            let _ = bridge.join();
        }
        if let Some(monitor) = self.monitor {
            monitor.stop();
        }
        let lame_duck = self.control.lame_duck.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = lame_duck {
            let _ = thread.join();
        }
        result
    }
}

/// A handle that steers the broker from any thread: shutdown, lame duck,
/// reload.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<Control>);

impl ShutdownHandle {
    /// Stops accepting, sends `GOAWAY`, flushes within the grace period and
    /// closes everything. Returns at once; wait on the broker for the end.
    pub fn shutdown(&self) {
        self.0.signal.raise();
    }

    /// Starts lame duck mode; see [`Broker::lame_duck`].
    pub fn lame_duck(&self) {
        Control::lame_duck(&self.0);
    }

    /// Puts a new configuration in force; see [`Broker::reload`].
    pub fn reload(&self, new: Config) -> Result<Reloaded, ConfigError> {
        self.0.reload(new)
    }
}

/// What a reload changed and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys now in force with a new value.
    pub changed: Vec<String>,
    /// Keys whose new value needs a restart; they keep the old one.
    pub refused: Vec<String>,
    /// Keys whose new value could not be put in force (TLS files that did
    /// not load), with why; they keep the old one.
    pub failed: Vec<(String, String)>,
}

/// Settings a running broker cannot change: its sockets, its cores and the
/// memory reserved for them at start, and what clients were told.
const FIXED: &[(&str, &str)] = &[
    ("listen", "the listeners are bound at start"),
    ("cores", "the executors are started at start"),
    ("pending_budget", "each core reserves its memory at start"),
    ("cross_core_queue", "the links between cores are made at start"),
    ("cross_core_batch", "the links between cores are made at start"),
    ("max_frame", "clients were told it in WELCOME"),
    ("http", "the monitoring port is bound at start"),
    ("closed_connections", "the records are sized at start"),
    ("log_format", "the log output is set up at start"),
    ("tls.listen", "the TLS listeners are bound at start"),
    ("tls", "the TLS listeners are bound (or not) at start"),
    ("cluster", "the cluster bridge joins (or not) at start"),
    ("web", "the web port is bound (or not) at start"),
];

impl Control {
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.lock().map(|c| Arc::clone(&c)).unwrap_or_else(|e| Arc::clone(&e.into_inner()))
    }

    pub(crate) fn counters(&self) -> Counters {
        Counters::collect(self.counters.iter().map(|c| c.as_ref()))
    }

    /// One histogram per core, read with `read`.
    pub(crate) fn histograms(
        &self,
        read: impl Fn(&crate::counters::Histograms) -> HistogramSnapshot,
    ) -> Vec<HistogramSnapshot> {
        self.counters.iter().map(|c| read(&c.histograms)).collect()
    }

    pub(crate) fn signal(&self) -> &ShutdownSignal {
        &self.signal
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Asks every core the question `make` builds and waits for each answer
    /// within `timeout`; an error names the core that did not answer.
    pub(crate) async fn ask<T>(
        &self,
        timeout: Duration,
        make: impl Fn(Reply<T>) -> Query,
    ) -> Result<Vec<T>, String> {
        let mut waiting = Vec::with_capacity(self.inboxes.len());
        for (core, inbox) in self.inboxes.iter().enumerate() {
            let (reply, answer) = tokio::sync::oneshot::channel();
            if !inbox.ask(make(reply)) {
                return Err(format!("core {core} has too many questions waiting"));
            }
            waiting.push(answer);
        }
        let mut answers = Vec::with_capacity(waiting.len());
        for (core, answer) in waiting.into_iter().enumerate() {
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(answer)) => answers.push(answer),
                _ => return Err(format!("core {core} did not answer within {timeout:?}")),
            }
        }
        Ok(answers)
    }

    /// `/stats`: who the broker is, how long it has run, the settings in
    /// force (the token hidden), the summed counters and each core's.
    pub(crate) fn stats(&self) -> serde_json::Value {
        let config = self.config();
        let mut shown = serde_json::to_value(&*config).unwrap_or_default();
        if config.auth_token.is_some() {
            shown["auth_token"] = "(redacted)".into();
        }
        let counters = self.counters();
        serde_json::json!({
            "server_name": config.server_name,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started_at": humantime::format_rfc3339_millis(self.started_at).to_string(),
            "uptime_ms": u64::try_from(self.uptime().as_millis()).unwrap_or(u64::MAX),
            "cores": config.cores,
            "lame_duck": self.signal.is_lame_duck(),
            "shutting_down": self.signal.is_raised(),
            "config": shown,
            "counters": counters.total,
            "per_core": counters.per_core,
            "cluster": self.cluster_status(),
        })
    }

    /// The cluster bridge's counters, when the node is in a cluster.
    pub(crate) fn cluster(&self) -> Option<ClusterSnapshot> {
        self.cluster.as_ref().map(|c| c.snapshot())
    }

    /// The node's name and the cluster counters, for `/stats`; `null`
    /// outside a cluster.
    fn cluster_status(&self) -> serde_json::Value {
        let (Some(counters), Some(section)) = (self.cluster(), self.config().cluster.clone())
        else {
            return serde_json::Value::Null;
        };
        let mut value = serde_json::to_value(counters).unwrap_or_default();
        value["node"] = section.node_name().into();
        value["name"] = section.name.into();
        value
    }

    /// Lame duck: the cores close their listeners and send their clients
    /// away over the configured time; once all are gone, or the grace and
    /// the duration are over, the shutdown begins.
    fn lame_duck(this: &Arc<Self>) {
        if !this.signal.raise_lame_duck() {
            return;
        }
        let cfg = this.config();
        let grace = Duration::from_millis(cfg.lame_duck_grace_ms);
        let until = Instant::now() + grace + Duration::from_millis(cfg.lame_duck_duration_ms);
        tracing::info!(?grace, duration_ms = cfg.lame_duck_duration_ms, "lame duck: not accepting");
        let control = Arc::clone(this);
        let spawned =
            std::thread::Builder::new().name("corecast-lame-duck".into()).spawn(move || {
                let after_grace = Instant::now() + grace;
                loop {
                    std::thread::sleep(Duration::from_millis(20));
                    let now = Instant::now();
                    let empty = control.counters().total.slots_in_use == 0;
                    if control.signal.is_raised() || now >= until || (now >= after_grace && empty) {
                        break;
                    }
                }
                tracing::info!("lame duck over: shutting down");
                control.signal.raise();
            });
        match spawned {
            Ok(thread) => {
                if let Ok(mut slot) = this.lame_duck.lock() {
                    *slot = Some(thread);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot time the lame duck: shutting down now");
                this.signal.raise();
            }
        }
    }

    /// Checks `new` and puts what may change at run time in force on every
    /// core; what may not keeps its value, logged as refused.
    fn reload(&self, new: Config) -> Result<Reloaded, ConfigError> {
        let new = new.resolve()?;
        let auth = Arc::new(Authenticator::new(&new)?);
        let old = self.config();
        let (mut merged, mut report) = merge_reload(&old, new, self.start_max_connections);
        let tls = self.reload_tls(&mut merged, &mut report);
        if report.changed.is_empty() && report.refused.is_empty() && report.failed.is_empty() {
            tracing::info!("reload: nothing changed");
        }
        for key in &report.refused {
            let why = FIXED.iter().find(|(fixed, _)| fixed == key).map_or(
                "it may not grow past its value at start: the final-frame reserve is sized for it",
                |(_, why)| why,
            );
            tracing::warn!(key, why, "reload: needs a restart; the old value stays");
        }
        for key in &report.changed {
            let value =
                serde_json::to_value(&merged).map(|v| v[key.as_str()].clone()).unwrap_or_default();
            let secret =
                ["auth_token", "users", "jwt", "default_permissions"].contains(&key.as_str());
            let value = if secret { "(redacted)".into() } else { value.to_string() };
            tracing::info!(key, %value, "reload: changed");
        }
        for (key, error) in &report.failed {
            tracing::error!(key, %error, "reload: cannot load; the old value stays");
        }
        // Every core has the new settings when this returns.
        for (core, inbox) in self.inboxes.iter().enumerate() {
            let (done, applied) = std::sync::mpsc::sync_channel(1);
            let reload =
                Reload { config: merged.clone(), tls: tls.clone(), auth: Arc::clone(&auth) };
            let told = inbox.tell(Query::Reload(Box::new(reload), done));
            if !told || applied.recv_timeout(Duration::from_secs(2)).is_err() {
                tracing::error!(core, "reload: the core did not take the new settings");
            }
        }
        if let Ok(mut config) = self.config.lock() {
            *config = Arc::new(merged);
        }
        Ok(report)
    }
}

impl Control {
    /// Reads the TLS files of `merged` again. What loads is what the cores
    /// get (reported as changed if it serves anything differently); what
    /// does not keeps the settings in force, in `merged` too.
    fn reload_tls(
        &self,
        merged: &mut Config,
        report: &mut Reloaded,
    ) -> Option<Arc<rustls::ServerConfig>> {
        let section = merged.tls.as_ref()?;
        let Ok(mut in_force) = self.tls.lock() else { return None };
        match tls::load(section) {
            Ok(loaded) => {
                if in_force.as_ref().is_none_or(|old| old.differs(&loaded)) {
                    report.changed.push("tls".into());
                }
                let config = Arc::clone(&loaded.config);
                *in_force = Some(loaded);
                Some(config)
            }
            Err(e) => {
                report.failed.push(("tls".into(), e.to_string()));
                report.changed.retain(|key| key != "tls");
                merged.tls = in_force.as_ref().map(|old| old.source.clone());
                None
            }
        }
    }
}

/// `new` with the fixed settings of `old`, and which keys changed or were
/// refused. `max_connections` may not grow past its value at start.
fn merge_reload(old: &Config, mut new: Config, start_max_connections: usize) -> (Config, Reloaded) {
    let as_map = |c: &Config| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let mut report = Reloaded::default();
    if new.max_connections > start_max_connections {
        report.refused.push("max_connections".into());
        new.max_connections = old.max_connections;
    }
    // The TLS port is bound at start, or not at all.
    match (&old.tls, &mut new.tls) {
        (Some(old_tls), Some(new_tls)) if old_tls.listen != new_tls.listen => {
            report.refused.push("tls.listen".into());
            new_tls.listen = old_tls.listen.clone();
        }
        (Some(_), Some(_)) | (None, None) => {}
        (_, tls) => {
            report.refused.push("tls".into());
            *tls = old.tls.clone();
        }
    }
    let (before, after) = (as_map(old), as_map(&new));
    // A table left out (no users any more) is a change too.
    let gone =
        before.keys().filter(|k| !after.contains_key(*k)).map(|k| (k, &serde_json::Value::Null));
    for (key, value) in after.iter().chain(gone) {
        if before.get(key) == Some(value) || key == "tls" {
            continue;
        }
        if FIXED.iter().any(|(fixed, _)| fixed == key) {
            report.refused.push(key.clone());
        } else {
            report.changed.push(key.clone());
        }
    }
    new.listen = old.listen.clone();
    new.cores = old.cores;
    new.pending_budget = old.pending_budget;
    new.cross_core_queue = old.cross_core_queue;
    new.cross_core_batch = old.cross_core_batch;
    new.max_frame = old.max_frame;
    new.http = old.http.clone();
    new.closed_connections = old.closed_connections;
    new.log_format = old.log_format;
    new.cluster.clone_from(&old.cluster);
    new.web.clone_from(&old.web);
    (new, report)
}

/// Joins every core's executor; the last error, if any failed.
fn join_cores(executors: Vec<ExecutorJoinHandle<Result<(), String>>>) -> Result<(), BrokerError> {
    let mut result = Ok(());
    for (core, handle) in executors.into_iter().enumerate() {
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

/// Starts the monitoring port if one is configured. At the default address
/// a port already taken is a warning, so a second broker on the machine
/// (or a test) still starts; an address asked for must be served.
fn start_monitor(cfg: &Config, control: &Arc<Control>) -> Result<Option<Monitor>, BrokerError> {
    let Some(at) = cfg.http.addr() else { return Ok(None) };
    match Monitor::start(at, Arc::clone(control)) {
        Ok(monitor) => Ok(Some(monitor)),
        Err(e) if *at == ListenAddr::from(DEFAULT_HTTP) && e.kind() == ErrorKind::AddrInUse => {
            tracing::warn!(
                addr = %at,
                "the default monitoring port is taken: serving without it (set http to an \
                 address, or off)"
            );
            Ok(None)
        }
        Err(source) => Err(BrokerError::Monitor { addr: at.to_string(), source }),
    }
}

/// Resolves `listen` and listens on what it resolves to, on every core.
fn bind(listen: &ListenAddr, cores: usize) -> Result<Listeners, BrokerError> {
    let host = listen.host();
    let addrs =
        listen.resolve().map_err(|source| BrokerError::Resolve { host: host.into(), source })?;
    listener::bind_all(&addrs, cores).map_err(|(addr, source)| match source.kind() {
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
         each, {} MiB of TLS state, {} MiB of pending budget ({} MiB per core), {} MiB of \
         cross-core queues, {} MiB of closed-connection records, {} MiB of WebSocket sessions, \
         {} MiB for the cluster bridge",
        bound.total().div_ceil(MIB),
        bound.connections.div_ceil(MIB),
        cfg.max_connections * cfg.cores,
        crate::config::CONNECTION_OVERHEAD >> 10,
        bound.tls.div_ceil(MIB),
        bound.pending_budget.div_ceil(MIB),
        (cfg.pending_budget as u64).div_ceil(MIB),
        bound.cross_core.div_ceil(MIB),
        bound.closed_records.div_ceil(MIB),
        bound.web.div_ceil(MIB),
        bound.cluster.div_ceil(MIB),
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
        let cfg = config();
        let auth = Arc::new(crate::auth::Authenticator::new(&cfg).expect("no users"));
        let broker = Broker::launch(cfg, auth, (listeners, None), None).expect("starts");
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
