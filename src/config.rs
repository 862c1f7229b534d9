//! Broker configuration: defaults, an optional TOML file, command-line flags.
//!
//! Every limit that bounds memory lives here, and [`Config::max_memory`]
//! adds them up so the broker can say at start-up what it can reach at most.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::{
    address::{HttpAddr, ListenAddr},
    auth::{JwtConfig, Permissions, UserConfig},
    cluster::ClusterConfig,
    tls::{ClientAuth, TlsConfig},
    web::WebConfig,
};

/// Resident memory of one idle, subscribed connection (slot, task,
/// subscription), rounded up from the 2.2–2.4 KiB measured by
/// `corecast-bench conns`. Kernel socket buffers come on top (they are
/// kernel memory, bounded by `net.ipv4.tcp_mem`).
pub const CONNECTION_OVERHEAD: u64 = 3 << 10;

/// Memory the TLS state of one connection on the TLS port can reach, on
/// top of [`CONNECTION_OVERHEAD`]: rustls's send buffer (64 KiB), the
/// plaintext it holds (16 KiB), a handshake message or record being
/// reassembled (up to 64 KiB) and the session's keys and state.
pub const TLS_OVERHEAD: u64 = 160 << 10;

/// Memory one record of a closed connection takes at most: the record and
/// its name and reason text.
pub const CLOSED_RECORD: u64 = 384;

/// The broker's settings. Field names are the TOML keys, but for the
/// durations: a `*_ms` field (milliseconds) is the key without `_ms`, read
/// as `"10s"`, `"250ms"` or `"2m"` (or a number of milliseconds), and the
/// `*_ms` key still reads too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `HOST:PORT` every core listens on (`SO_REUSEPORT`), on every address
    /// the host resolves to; port 0 picks one.
    pub listen: ListenAddr,
    /// Executors to run, one per core; 0 = every online core. More executors
    /// than CPUs is allowed (they share CPUs), which tests use.
    pub cores: usize,
    /// Name sent in `WELCOME`.
    pub server_name: String,
    /// Connection slots per core; the next connection gets `ERR server full`.
    pub max_connections: usize,
    /// Largest frame length a client may send (the length prefix's value).
    pub max_frame: u32,
    /// Bytes queued for one connection, at most: how far a subscriber may
    /// fall behind a burst before it is cut off (or, on a lossy
    /// subscription, before messages are dropped).
    pub max_pending: usize,
    /// A connection whose socket takes no bytes for this long while output
    /// is queued is cut off as a slow consumer, ms.
    #[serde(rename = "write_deadline", alias = "write_deadline_ms", with = "millis")]
    pub write_deadline_ms: u64,
    /// Bytes of queued output and unfinished input all connections of one
    /// core may hold together; 0 = a quarter of the machine's memory,
    /// divided among the cores. When full, the connections holding the most
    /// meet their policy first.
    pub pending_budget: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Silence after which the server sends `PING`, ms.
    #[serde(rename = "ping_interval", alias = "ping_interval_ms", with = "millis")]
    pub ping_interval_ms: u64,
    /// Silence after which a connection is closed as stale, ms; 0 = three
    /// ping intervals.
    #[serde(rename = "stale_after", alias = "stale_after_ms", with = "millis")]
    pub stale_after_ms: u64,
    /// Time a new connection has to send `HELLO`, ms.
    #[serde(rename = "handshake_timeout", alias = "handshake_timeout_ms", with = "millis")]
    pub handshake_timeout_ms: u64,
    /// Time given at shutdown to flush pending messages after `GOAWAY`, ms.
    #[serde(rename = "shutdown_grace", alias = "shutdown_grace_ms", with = "millis")]
    pub shutdown_grace_ms: u64,
    /// Time a connection closed for an error keeps its slot to deliver the
    /// final `ERR`, ms.
    #[serde(rename = "close_linger", alias = "close_linger_ms", with = "millis")]
    pub close_linger_ms: u64,
    /// Batches in flight per pair of cores; a full channel holds back the
    /// publishers whose messages need it.
    pub cross_core_queue: usize,
    /// Bytes a core stages for one peer before publishers wait.
    pub cross_core_batch: usize,
    /// Token `HELLO` must carry; none = no authentication.
    pub auth_token: Option<String>,
    /// `HOST:PORT` of the monitoring port (`/metrics`, `/healthz`,
    /// `/stats`, `/connz`, `/subsz`), or `off`. Never the client port.
    pub http: HttpAddr,
    /// Closed connections kept for `/connz?state=closed`, divided among
    /// the cores; the oldest go first.
    pub closed_connections: usize,
    /// Lame duck (SIGUSR2): time between closing the listeners (and
    /// `/healthz` turning 503) and the first `GOAWAY`, for load balancers
    /// to notice, ms.
    #[serde(rename = "lame_duck_grace", alias = "lame_duck_grace_ms", with = "millis")]
    pub lame_duck_grace_ms: u64,
    /// Lame duck: time over which the `GOAWAY`s are spread, so clients do
    /// not all reconnect elsewhere at once, ms.
    #[serde(rename = "lame_duck_duration", alias = "lame_duck_duration_ms", with = "millis")]
    pub lame_duck_duration_ms: u64,
    /// What to log: a level (`info`) or `tracing` directives
    /// (`info,corecast::core=debug`). `RUST_LOG`, when set, wins.
    pub log_level: String,
    /// How log lines look: `text` or `json` (one object a line).
    pub log_format: LogFormat,
    /// The users who may connect (`[[users]]`), each with its credentials,
    /// permissions and limits; none = no user accounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
    /// Permissions of users configured without their own, and of JWT
    /// subjects without the `corecast` claim; none = everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_permissions: Option<Permissions>,
    /// Keys that verify JWTs in `HELLO`; none = JWTs are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// TLS on a second port (`[tls]`); none = plain TCP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Joins a cluster of nodes over Redis (`[cluster]`); none = this node
    /// runs alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// The web port for WebSocket clients (`[web]`); none = no web port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web: Option<WebConfig>,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The default monitoring port, on loopback only.
pub const DEFAULT_HTTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7422);

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)).into(),
            cores: 0,
            server_name: "corecast".into(),
            max_connections: 32_768,
            max_frame: 1 << 20,
            max_pending: 64 << 20,
            write_deadline_ms: 10_000,
            pending_budget: 0,
            max_subscriptions: 1024,
            ping_interval_ms: 30_000,
            stale_after_ms: 0,
            handshake_timeout_ms: 5_000,
            shutdown_grace_ms: 5_000,
            close_linger_ms: 1_000,
            cross_core_queue: 64,
            cross_core_batch: 64 << 10,
            auth_token: None,
            http: HttpAddr::At(DEFAULT_HTTP.into()),
            closed_connections: 10_000,
            lame_duck_grace_ms: 5_000,
            lame_duck_duration_ms: 30_000,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            users: Vec::new(),
            default_permissions: None,
            jwt: None,
            tls: None,
            cluster: None,
            web: None,
        }
    }
}

/// Why a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The TOML file does not describe a configuration.
    #[error("{at}: {message}")]
    Parse {
        /// The file, and `:line:column` when the error has a place.
        at: String,
        /// What is wrong there.
        message: String,
    },
    /// A setting that no longer exists was given.
    #[error("{name} was removed: {why}")]
    Retired {
        /// The flag or key.
        name: String,
        /// Why it went.
        why: &'static str,
    },
    /// A value is out of range or contradicts another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; keys left out keep their defaults.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))
    }

    /// Fills the derived values (`0` = automatic) and checks every limit.
    /// Peers of the cores' mesh: the cores, and the cluster bridge when
    /// the node is in a cluster.
    pub(crate) fn mesh_size(&self) -> usize {
        self.cores + usize::from(self.cluster.is_some())
    }

    pub fn resolve(mut self) -> Result<Self, ConfigError> {
        if self.cores == 0 {
            self.cores = online_cpus().len();
        }
        if self.pending_budget == 0 {
            self.pending_budget = default_pending_budget(self.cores);
        }
        if self.stale_after_ms == 0 {
            self.stale_after_ms = self.ping_interval_ms.saturating_mul(3);
        }
        self.check()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate(self.cores, self.max_frame).map_err(ConfigError::Invalid)?;
        }
        Ok(self)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        let frame = self.max_frame as usize;
        if !(64..=u32::MAX as usize - 64).contains(&frame) {
            return invalid(format!("max_frame {frame} must be at least 64"));
        }
        let max_msg = frame + 8;
        if self.max_pending < max_msg {
            return invalid(format!(
                "max_pending {} cannot hold a maximal MSG (needs at least {max_msg})",
                self.max_pending
            ));
        }
        let min_budget = 2 * max_msg + (64 << 10);
        if self.pending_budget < min_budget {
            return invalid(format!(
                "pending_budget {} cannot hold a maximal frame in and out (needs at least \
                 {min_budget})",
                self.pending_budget
            ));
        }
        if self.write_deadline_ms == 0 {
            return invalid("write_deadline must be > 0".into());
        }
        if self.cores == 0 || self.cores > crate::mesh::coreset::MAX_CORES {
            return invalid(format!("cores must be 1..={}", crate::mesh::coreset::MAX_CORES));
        }
        if self.max_connections == 0 || self.max_subscriptions == 0 || self.cross_core_queue == 0 {
            return invalid(
                "max_connections, max_subscriptions and cross_core_queue must be > 0".into(),
            );
        }
        if self.ping_interval_ms == 0 || self.stale_after_ms <= self.ping_interval_ms {
            return invalid("stale_after must exceed ping_interval, which must be > 0".into());
        }
        if self.server_name.len() > 255 {
            return invalid("server_name is longer than 255 bytes".into());
        }
        if self.auth_token.as_ref().is_some_and(|t| t.len() > u16::MAX as usize) {
            return invalid("auth_token is longer than 65535 bytes".into());
        }
        if self.http.addr().is_some_and(|http| *http == self.listen && http.port() != 0) {
            return invalid(format!("http {} is the client port; pick another", self.http));
        }
        if let Some(tls) = &self.tls {
            tls.check()?;
            let taken = |at: &ListenAddr| *at == tls.listen && at.port() != 0;
            if taken(&self.listen) || self.http.addr().is_some_and(taken) {
                return invalid(format!(
                    "[tls] listen {} is the client or monitoring port; pick another",
                    tls.listen
                ));
            }
        }
        if self.web.as_ref().is_some_and(|w| w.tls) && self.tls.is_none() {
            return invalid(
                "[web] tls = true serves the certificate of [tls], which is not set".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log_level) {
            return invalid(format!("log_level {:?}: {e}", self.log_level));
        }
        Ok(())
    }

    /// The most memory this configuration lets the broker's connections
    /// and queues reach, in bytes, per core and summed over the cores.
    pub fn max_memory(&self) -> MemoryBound {
        let cores = self.cores as u64;
        let batch = (self.cross_core_batch + self.max_frame as usize) as u64;
        let per_peer = (self.cross_core_queue as u64 + 1) * batch;
        let tls = if self.tls.is_some() {
            self.max_connections as u64 * TLS_OVERHEAD + crate::tls::session::CIPHER_SCRATCH as u64
        } else {
            0
        };
        let per_core = MemoryBound {
            connections: self.max_connections as u64 * CONNECTION_OVERHEAD,
            tls,
            pending_budget: self.pending_budget as u64,
            cross_core: cores.saturating_sub(1) * per_peer,
            closed_records: self.closed_connections.div_ceil(self.cores.max(1)) as u64
                * CLOSED_RECORD,
            web: 0,
            cluster: 0,
        };
        let web = match &self.web {
            Some(web) => {
                let tls = if web.tls { TLS_OVERHEAD } else { 0 };
                self.max_connections as u64 * (crate::web::SESSION_OVERHEAD as u64 + tls)
                    + crate::web::WEB_SCRATCH as u64
            }
            None => 0,
        };
        let cluster = self
            .cluster
            .as_ref()
            .map_or(0, |c| cores * (2 * per_peer + batch) + (c.out_window + c.in_queue) as u64);
        MemoryBound {
            connections: per_core.connections * cores,
            tls: per_core.tls * cores,
            pending_budget: per_core.pending_budget * cores,
            cross_core: per_core.cross_core * cores,
            closed_records: per_core.closed_records * cores,
            web: web * cores,
            cluster,
        }
    }

    /// How often the sweeper looks for timed-out connections: `busy` while
    /// some connection is in its handshake or draining (short deadlines),
    /// `idle` otherwise (heartbeats and trimming idle buffers), so an idle
    /// broker wakes about once a second.
    pub(crate) fn sweep_intervals(&self) -> (Duration, Duration) {
        let quarter = |ms: u64| Duration::from_millis((ms / 4).clamp(5, 1000));
        let tls_handshake = self.tls.as_ref().map_or(u64::MAX, |t| t.handshake_timeout_ms);
        let handshake = self.handshake_timeout_ms.min(tls_handshake);
        let busy = quarter(handshake.min(self.close_linger_ms.max(1)));
        let idle = quarter(self.ping_interval_ms.min(self.write_deadline_ms)).max(busy);
        (busy, idle)
    }
}

/// The most memory the broker can reach, by what holds it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBound {
    /// Every connection slot taken, at [`CONNECTION_OVERHEAD`] each.
    pub connections: u64,
    /// With a TLS port, every slot taken by a TLS connection at
    /// [`TLS_OVERHEAD`] each, and each core's ciphertext buffer.
    pub tls: u64,
    /// Every core's pending budget full.
    pub pending_budget: u64,
    /// Every cross-core link full of maximal batches.
    pub cross_core: u64,
    /// The record of closed connections full.
    pub closed_records: u64,
    /// With a web port, every slot taken by a WebSocket session or an SSE
    /// stream at `web::SESSION_OVERHEAD` each (plus [`TLS_OVERHEAD`] when
    /// the port has TLS), and each core's buffer for raw reads.
    pub web: u64,
    /// In a cluster: the links between the cores and the bridge full, the
    /// bridge's staging for every core, and its windows to and from Redis
    /// (`out_window`, which holds the frames being filled, and
    /// `in_queue`).
    pub cluster: u64,
}

impl MemoryBound {
    /// The sum.
    pub fn total(&self) -> u64 {
        self.connections
            + self.tls
            + self.pending_budget
            + self.cross_core
            + self.closed_records
            + self.web
            + self.cluster
    }
}

/// A quarter of the machine's memory, divided among the cores, at least
/// 64 MiB each. Pending output is burst absorption: a quarter leaves the
/// rest to the kernel's socket buffers (which hold another share of every
/// backlog) and to the other processes of the machine.
fn default_pending_budget(cores: usize) -> usize {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) =
        unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    let total = if pages > 0 && page > 0 { pages as u64 * page as u64 } else { 4 << 30 };
    let share = total / 4 / cores.max(1) as u64;
    usize::try_from(share).unwrap_or(usize::MAX).max(64 << 20)
}

/// Settings that no longer exist, and why.
const RETIRED: &[(&str, &str)] = &[
    (
        "io_memory",
        "it cannot lower the 512 KiB of locked memory glommio needs, and TCP does not use that \
         memory",
    ),
    (
        "write_buffer",
        "pending output lives in pooled chunks; use max_pending (per connection) and \
         pending_budget (per core)",
    ),
    ("read_buffer", "input lives in pooled chunks charged to pending_budget"),
];

/// A TOML error on one line: `file:line:column: message`, the message
/// saying why for a retired key.
fn parse_error(path: &std::path::Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let mut at = path.display().to_string();
    if let Some(span) = error.span() {
        let (line, column) = line_and_column(text, span.start);
        at = format!("{at}:{line}:{column}");
    }
    let retired = RETIRED
        .iter()
        .find(|(key, _)| error.message().starts_with(&format!("unknown field `{key}`")));
    let message = match retired {
        Some((key, why)) => format!("{key} was removed: {why}"),
        None => error.message().split_whitespace().collect::<Vec<_>>().join(" "),
    };
    ConfigError::Parse { at, message }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// The CPUs this process may run on.
pub fn online_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => vec![0],
    }
}

/// Command-line flags; each one overrides the TOML file, which overrides the
/// defaults.
#[derive(Debug, Parser)]
#[command(
    name = "corecast",
    version,
    about = "Thread-per-core publish/subscribe broker over raw TCP"
)]
pub struct Args {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HOST:PORT to listen on, on every core and every address the host resolves to [default: 127.0.0.1:7400].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<ListenAddr>,
    /// Executors (one per core) [default: every online core].
    #[arg(long)]
    pub cores: Option<usize>,
    /// Name sent to clients in WELCOME [default: corecast].
    #[arg(long)]
    pub server_name: Option<String>,
    /// Connection slots per core [default: 32768]; the open-file limit caps
    /// connections first.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Largest frame a client may send, bytes [default: 1048576].
    #[arg(long)]
    pub max_frame: Option<u32>,
    /// Bytes queued for one connection before it is a slow consumer (or its
    /// lossy subscriptions drop) [default: 67108864].
    #[arg(long)]
    pub max_pending: Option<usize>,
    /// A socket that takes nothing for this long with output queued is a slow consumer [default: 10s].
    #[arg(long = "write-deadline", visible_alias = "write-deadline-ms", value_name = "DURATION", value_parser = millis::parse)]
    pub write_deadline_ms: Option<u64>,
    /// Queued output and unfinished input all connections of one core may hold, bytes [default: a quarter of memory / cores].
    #[arg(long)]
    pub pending_budget: Option<usize>,
    /// Retired: use --max-pending and --pending-budget.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub write_buffer: Option<String>,
    /// Retired: input is charged to --pending-budget.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub read_buffer: Option<String>,
    /// Subscriptions per connection [default: 1024].
    #[arg(long)]
    pub max_subscriptions: Option<usize>,
    /// Silence before the server pings a client [default: 30s].
    #[arg(long = "ping-interval", visible_alias = "ping-interval-ms", value_name = "DURATION", value_parser = millis::parse)]
    pub ping_interval_ms: Option<u64>,
    /// Silence before a connection is closed as stale [default: 3 x ping interval].
    #[arg(long = "stale-after", visible_alias = "stale-after-ms", value_name = "DURATION", value_parser = millis::parse)]
    pub stale_after_ms: Option<u64>,
    /// Time allowed for HELLO [default: 5s].
    #[arg(long = "handshake-timeout", visible_alias = "handshake-timeout-ms", value_name = "DURATION", value_parser = millis::parse)]
    pub handshake_timeout_ms: Option<u64>,
    /// Time to flush pending messages at shutdown [default: 5s].
    #[arg(long = "shutdown-grace", visible_alias = "shutdown-grace-ms", value_name = "DURATION", value_parser = millis::parse)]
    pub shutdown_grace_ms: Option<u64>,
    /// Time a connection closed for an error keeps to deliver its ERR and see the client's close [default: 1s].
    #[arg(long = "close-linger", visible_alias = "close-linger-ms", value_name = "DURATION", value_parser = millis::parse)]
    pub close_linger_ms: Option<u64>,
    /// Batches in flight per pair of cores [default: 64].
    #[arg(long)]
    pub cross_core_queue: Option<usize>,
    /// Bytes staged per peer core before publishers wait [default: 65536].
    #[arg(long)]
    pub cross_core_batch: Option<usize>,
    /// Token clients must present in HELLO [default: none, no authentication].
    #[arg(long, env = "CORECAST_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Retired: refused with the reason.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub io_memory: Option<String>,
    /// Monitoring port (/metrics, /healthz, /stats, /connz, /subsz), or `off` [default: 127.0.0.1:7422].
    #[arg(long, value_name = "HOST:PORT|off")]
    pub http: Option<HttpAddr>,
    /// Closed connections kept for /connz?state=closed [default: 10000].
    #[arg(long)]
    pub closed_connections: Option<usize>,
    /// Lame duck: wait between closing the listeners and the first GOAWAY [default: 5s].
    #[arg(long = "lame-duck-grace", value_name = "DURATION", value_parser = millis::parse)]
    pub lame_duck_grace_ms: Option<u64>,
    /// Lame duck: time over which the GOAWAYs are spread [default: 30s].
    #[arg(long = "lame-duck-duration", value_name = "DURATION", value_parser = millis::parse)]
    pub lame_duck_duration_ms: Option<u64>,
    /// What to log: a level or tracing directives [default: info; RUST_LOG wins].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log lines as text or JSON [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// HOST:PORT to serve TLS on, beside --listen (needs --tls-cert and --tls-key, or a [tls] section).
    #[arg(long, value_name = "HOST:PORT")]
    pub tls_listen: Option<ListenAddr>,
    /// The TLS certificate chain, PEM.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key, PEM.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates, PEM, that client certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificates: off, optional or required [default: off].
    #[arg(long, value_enum)]
    pub tls_client_auth: Option<ClientAuth>,
    /// Joins the cluster of nodes sharing this Redis (redis://HOST:PORT).
    #[arg(long, value_name = "URL", env = "CORECAST_CLUSTER_REDIS")]
    pub cluster_redis: Option<String>,
    /// This node's name in the cluster [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub cluster_node: Option<String>,
    /// HOST:PORT to serve WebSocket clients on (the web port).
    #[arg(long, value_name = "HOST:PORT")]
    pub web: Option<ListenAddr>,
}

macro_rules! override_fields {
    ($args:expr, $cfg:expr, $($field:ident),* $(,)?) => {
        $( if let Some(v) = &$args.$field { $cfg.$field = v.clone(); } )*
    };
    ($args:expr, $cfg:expr, $($flag:ident => $field:ident),* $(,)?) => {
        $( if let Some(v) = &$args.$flag { $cfg.$field = v.clone(); } )*
    };
}

impl Args {
    /// The configuration these flags describe: file, then flags on top.
    /// Called again on SIGHUP, so a reload reads the file anew and the
    /// flags still win.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let retired = [("io_memory", &self.io_memory), ("write_buffer", &self.write_buffer)];
        let retired = retired.into_iter().chain([("read_buffer", &self.read_buffer)]);
        if let Some((key, _)) = retired.into_iter().find(|(_, v)| v.is_some()) {
            return Err(retired_flag(key));
        }
        let mut cfg = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        if self.auth_token.is_some() {
            cfg.auth_token.clone_from(&self.auth_token);
        }
        override_fields!(
            self,
            cfg,
            listen,
            cores,
            server_name,
            max_connections,
            max_frame,
            max_pending,
            write_deadline_ms,
            pending_budget,
            max_subscriptions,
            ping_interval_ms,
            stale_after_ms,
            handshake_timeout_ms,
            shutdown_grace_ms,
            close_linger_ms,
            cross_core_queue,
            cross_core_batch,
            http,
            closed_connections,
            lame_duck_grace_ms,
            lame_duck_duration_ms,
            log_level,
            log_format,
        );
        self.override_tls(&mut cfg)?;
        self.override_cluster(&mut cfg)?;
        if let Some(listen) = &self.web {
            match &mut cfg.web {
                Some(web) => web.listen = listen.clone(),
                None => {
                    cfg.web = Some(WebConfig {
                        listen: listen.clone(),
                        allowed_origins: Vec::new(),
                        tls: false,
                    })
                }
            }
        }
        cfg.resolve()
    }

    /// The `--tls-*` flags: each overrides its key of `[tls]`; without the
    /// section, they make one and need a listen address, a certificate and
    /// a key.
    fn override_tls(&self, cfg: &mut Config) -> Result<(), ConfigError> {
        let any = self.tls_listen.is_some()
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_client_ca.is_some()
            || self.tls_client_auth.is_some();
        if !any {
            return Ok(());
        }
        let mut tls =
            match cfg.tls.take() {
                Some(tls) => tls,
                None => match (&self.tls_listen, &self.tls_cert, &self.tls_key) {
                    (Some(listen), Some(cert), Some(key)) => TlsConfig {
                        listen: listen.clone(),
                        cert: cert.clone(),
                        key: key.clone(),
                        client_ca: None,
                        client_auth: ClientAuth::Off,
                        min_version: Default::default(),
                        handshake_timeout_ms: crate::tls::DEFAULT_HANDSHAKE_TIMEOUT_MS,
                    },
                    _ => return Err(ConfigError::Invalid(
                        "TLS needs --tls-listen, --tls-cert and --tls-key together (or a [tls] \
                         section in the config file)"
                            .into(),
                    )),
                },
            };
        override_fields!(self, tls, tls_listen => listen, tls_cert => cert, tls_key => key);
        if self.tls_client_ca.is_some() {
            tls.client_ca.clone_from(&self.tls_client_ca);
        }
        if let Some(auth) = self.tls_client_auth {
            tls.client_auth = auth;
        }
        cfg.tls = Some(tls);
        Ok(())
    }
}

impl Args {
    /// `--cluster-redis` makes or overrides `[cluster] redis`;
    /// `--cluster-node` overrides its node name.
    fn override_cluster(&self, cfg: &mut Config) -> Result<(), ConfigError> {
        if let Some(url) = &self.cluster_redis {
            match &mut cfg.cluster {
                Some(cluster) => cluster.redis.clone_from(url),
                None => cfg.cluster = Some(ClusterConfig::new(url.clone())),
            }
        }
        if let Some(node) = &self.cluster_node {
            let Some(cluster) = &mut cfg.cluster else {
                return Err(ConfigError::Invalid(
                    "--cluster-node needs --cluster-redis (or a [cluster] section)".into(),
                ));
            };
            cluster.node = Some(node.clone());
        }
        Ok(())
    }
}

fn retired_flag(key: &str) -> ConfigError {
    let why = RETIRED.iter().find(|(k, _)| *k == key).map_or("", |(_, why)| why);
    ConfigError::Retired { name: format!("--{}", key.replace('_', "-")), why }
}

/// Durations kept as milliseconds, read as `humantime` text (`"10s"`,
/// `"250ms"`, `"2m"`) or a number of milliseconds, and written as text.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// A number (milliseconds) or a duration with its unit.
    pub fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        if let Ok(ms) = text.parse::<u64>() {
            return Ok(ms);
        }
        let duration = humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration like 10s, 250ms or 2m: {e}"))?;
        u64::try_from(duration.as_millis()).map_err(|_| format!("{text:?} is too long"))
    }

    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(Duration::from_millis(*ms)).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Millis(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Millis(ms) => Ok(ms),
            Written::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let cfg = Config::default().resolve().expect("defaults are valid");
        assert_eq!(cfg.max_pending, 64 << 20);
        assert!(cfg.pending_budget >= 64 << 20);
        assert_eq!(cfg.stale_after_ms, 90_000);
        assert!(cfg.cores >= 1);
    }

    /// In a cluster, the bound counts the bridge's links and windows.
    #[test]
    fn the_memory_bound_counts_the_cluster_bridge() {
        let plain = Config::default().resolve().expect("valid");
        assert_eq!(plain.max_memory().cluster, 0);
        let cluster = ClusterConfig::new("redis://127.0.0.1:6379");
        let windows = (cluster.out_window + cluster.in_queue) as u64;
        let cfg = Config { cluster: Some(cluster), ..plain.clone() };
        let bound = cfg.max_memory();
        assert!(bound.cluster > windows, "{bound:?}");
        assert_eq!(bound.total() - bound.cluster, plain.max_memory().total());
    }

    /// With a web port, the bound counts a WebSocket session per slot.
    #[test]
    fn the_memory_bound_counts_websocket_sessions() {
        let plain = Config::default().resolve().expect("valid");
        let web = crate::web::WebConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            allowed_origins: vec![],
            tls: false,
        };
        let cfg = Config { web: Some(web), ..plain.clone() };
        let bound = cfg.max_memory();
        let slots = (cfg.max_connections * cfg.cores) as u64;
        let scratch = (cfg.cores * crate::web::WEB_SCRATCH) as u64;
        assert_eq!(bound.web, slots * crate::web::SESSION_OVERHEAD as u64 + scratch);
        assert_eq!(bound.total() - bound.web, plain.max_memory().total());
    }

    #[test]
    fn cluster_settings_are_checked() {
        let bad = |f: fn(&mut ClusterConfig)| {
            let mut c = ClusterConfig::new("redis://127.0.0.1:6379");
            f(&mut c);
            Config { cluster: Some(c), ..Config::default() }.resolve().is_err()
        };
        assert!(!bad(|_| {}));
        assert!(bad(|c| c.ttl_ms = c.heartbeat_ms * 2));
        assert!(bad(|c| c.node = Some("a:b".into())));
        assert!(bad(|c| c.name = "{x}".into()));
        assert!(bad(|c| c.redis = "http://x".into()));
        assert!(bad(|c| c.out_window = 10));
        assert!(bad(|c| c.in_queue = 1 << 20));
    }

    /// With a TLS port, the bound counts each slot's TLS state too.
    #[test]
    fn the_memory_bound_counts_tls_state_when_the_tls_port_is_on() {
        let plain = Config::default().resolve().expect("valid");
        assert_eq!(plain.max_memory().tls, 0);
        let listen: ListenAddr = "127.0.0.1:0".parse().expect("an address");
        let tls = crate::tls::TlsConfig {
            listen,
            cert: "cert.pem".into(),
            key: "key.pem".into(),
            client_ca: None,
            client_auth: Default::default(),
            min_version: Default::default(),
            handshake_timeout_ms: 5_000,
        };
        let cfg = Config { tls: Some(tls), ..plain.clone() };
        let bound = cfg.max_memory();
        let slots = (cfg.max_connections * cfg.cores) as u64;
        assert!(bound.tls >= slots * TLS_OVERHEAD, "{bound:?}");
        assert_eq!(bound.total() - bound.tls, plain.max_memory().total());
    }

    #[test]
    fn max_pending_must_hold_a_maximal_msg() {
        let cfg = Config { max_pending: 1000, max_frame: 1000, ..Config::default() };
        assert!(matches!(cfg.resolve(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn retired_settings_name_their_replacement() {
        let err = Args::parse_from(["corecast", "--write-buffer", "1000"])
            .to_config()
            .expect_err("retired");
        assert!(err.to_string().starts_with("--write-buffer was removed"), "{err}");
        assert!(err.to_string().contains("max_pending"), "{err}");
        let message = parse_message("read_buffer = 1000\n");
        assert!(message.contains("read_buffer was removed"), "{message}");
    }

    #[test]
    fn toml_and_flags_layer() {
        let dir = std::env::temp_dir().join(format!("corecast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, "max_connections = 7\nping_interval_ms = 1000\n").expect("write");
        let args = Args::parse_from([
            "corecast",
            "--config",
            file.to_str().expect("utf-8 path"),
            "--ping-interval-ms",
            "2000",
        ]);
        let cfg = args.to_config().expect("valid");
        assert_eq!(cfg.max_connections, 7);
        assert_eq!(cfg.ping_interval_ms, 2000);
        assert_eq!(cfg.stale_after_ms, 6000);
    }

    /// `packaging/corecast.toml` loads to the defaults and names every key
    /// (`auth_token`, which has no default value, commented out).
    #[test]
    fn the_example_config_lists_every_key_at_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/corecast.toml");
        assert_eq!(Config::from_toml_file(&path).expect("the example loads"), Config::default());
        let text = std::fs::read_to_string(&path).expect("the example");
        let keys: Vec<String> = serde_json::to_value(Config::default())
            .expect("serializable")
            .as_object()
            .expect("a table")
            .keys()
            .cloned()
            .collect();
        assert!(keys.len() >= 17, "{keys:?}");
        for key in keys {
            let listed = text
                .lines()
                .map(|l| l.trim_start_matches("# "))
                .any(|l| l.starts_with(&format!("{key} = ")));
            assert!(listed, "{key} is missing from packaging/corecast.toml");
        }
    }

    /// `packaging/corecast.toml` from the commented line `marker` on, its
    /// commented settings and tables uncommented and loaded.
    fn uncommented_example(marker: &str) -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/corecast.toml");
        let text = std::fs::read_to_string(&path).expect("the example");
        let from = text.find(marker).expect("the example's section");
        let uncommented: String = text[from..]
            .lines()
            .filter_map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| l.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()))
                    .filter(|l| l.contains(" = ") || l.starts_with('['))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        toml::from_str(&uncommented).expect("the example's keys exist")
    }

    /// The commented-out security tables of `packaging/corecast.toml`
    /// (users, default permissions, JWT keys) name real keys: uncommented,
    /// they load.
    #[test]
    fn the_example_security_section_loads_when_uncommented() {
        let cfg = uncommented_example("# [[users]]");
        assert_eq!(cfg.users.len(), 1);
        assert!(cfg.users[0].permissions.as_ref().is_some_and(|p| p.allow_responses.is_some()));
        assert_eq!(cfg.users[0].limits.max_connections, Some(100));
        assert!(cfg.default_permissions.is_some());
        assert_eq!(cfg.jwt.as_ref().map(|j| j.leeway_ms), Some(30_000));
    }

    /// The commented-out `[cluster]` example names real keys at their
    /// defaults: uncommented, it loads.
    #[test]
    fn the_example_cluster_section_loads_when_uncommented() {
        let cfg = uncommented_example("# [cluster]");
        let cluster = cfg.cluster.clone().expect("a cluster section");
        let defaults = ClusterConfig {
            node: Some("eu-1".into()),
            username: Some("corecast".into()),
            password_file: cluster.password_file.clone(),
            tls: cluster.tls.clone(),
            ..ClusterConfig::new("redis://10.0.0.5:6379")
        };
        assert_eq!(cluster, defaults);
        assert!(cluster.tls.is_some_and(|t| t.cert.is_some() && t.key.is_some() && t.ca.is_some()));
    }

    /// Durations read as text with a unit under their new keys and as
    /// milliseconds under the `*_ms` ones, in the file and on flags; a bad
    /// one is refused naming its key.
    #[test]
    fn durations_read_with_units_and_as_milliseconds() {
        let cfg: Config = toml::from_str(
            "write_deadline = \"2m\"\nping_interval = \"250ms\"\nclose_linger_ms = 1500\n",
        )
        .expect("valid");
        assert_eq!((cfg.write_deadline_ms, cfg.ping_interval_ms), (120_000, 250));
        assert_eq!(cfg.close_linger_ms, 1500);
        let cfg: Config = toml::from_str("handshake_timeout = 700").expect("a number is ms");
        assert_eq!(cfg.handshake_timeout_ms, 700);
        let args = [
            "corecast",
            "--write-deadline",
            "3s",
            "--shutdown-grace-ms",
            "40",
            "--stale-after",
            "1h",
        ];
        let cfg = Args::parse_from(args).to_config().expect("valid");
        assert_eq!((cfg.write_deadline_ms, cfg.shutdown_grace_ms), (3000, 40));
        assert_eq!(cfg.stale_after_ms, 3_600_000);
        let message = parse_message("write_deadline = \"soon\"\n");
        assert!(message.starts_with("c.toml:1:18: "), "{message}");
        assert!(message.contains("\"soon\" is not a duration"), "{message}");
        assert!(Args::try_parse_from(["corecast", "--ping-interval", "soon"]).is_err());
        let written = toml::to_string(&Config::default()).expect("serializable");
        assert!(written.contains("write_deadline = \"10s\""), "{written}");
    }

    #[test]
    fn unknown_toml_keys_are_refused() {
        assert!(toml::from_str::<Config>("max_conections = 3").is_err());
    }

    fn parse_message(text: &str) -> String {
        let error = toml::from_str::<Config>(text).expect_err("refused");
        parse_error(std::path::Path::new("c.toml"), text, &error).to_string()
    }

    #[test]
    fn toml_errors_are_one_line_with_line_and_column() {
        let message = parse_message("cores = 1\n\n  max_conections = 3\n");
        assert!(message.starts_with("c.toml:3:3: unknown field `max_conections`"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        let message = parse_message("cores = 1\nserver_name = \"é\" 5\n");
        assert!(message.starts_with("c.toml:2:19: "), "columns count characters: {message}");
    }

    #[test]
    fn retired_settings_say_why() {
        let message = parse_message("io_memory = 262144\n");
        assert!(
            message.starts_with("c.toml:1:1: io_memory was removed: it cannot lower"),
            "{message}"
        );
        let flag = Args::parse_from(["corecast", "--io-memory", "262144"]).to_config();
        let message = flag.expect_err("refused").to_string();
        assert!(message.starts_with("--io-memory was removed: it cannot lower"), "{message}");
    }

    /// The `--tls-*` flags make a `[tls]` section (listen, cert and key
    /// together) or override the file's keys; client auth needs a CA.
    #[test]
    fn tls_flags_build_or_override_the_section() {
        let args = ["corecast", "--tls-listen", "127.0.0.1:7443", "--tls-cert", "c.pem"];
        let err = Args::parse_from(args).to_config().expect_err("no key");
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let args = [
            "corecast",
            "--tls-listen",
            "127.0.0.1:7443",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ];
        let tls = Args::parse_from(args).to_config().expect("valid").tls.expect("a section");
        assert_eq!((tls.listen.port(), tls.client_auth), (7443, ClientAuth::Off));
        let dir = std::env::temp_dir().join(format!("corecast-tls-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("c.toml");
        let section = "[tls]\nlisten = \"127.0.0.1:7443\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
                       handshake_timeout = \"2s\"\n";
        std::fs::write(&file, section).expect("write");
        let path = file.to_str().expect("utf-8 path");
        let args = ["corecast", "-c", path, "--tls-client-auth", "required"];
        let err = Args::parse_from(args).to_config().expect_err("no CA");
        assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("needs client_ca"), "{err}");
        let args =
            ["corecast", "-c", path, "--tls-client-auth", "optional", "--tls-client-ca", "ca.pem"];
        let tls = Args::parse_from(args).to_config().expect("valid").tls.expect("a section");
        assert_eq!(tls.client_auth, ClientAuth::Optional);
        assert_eq!(tls.client_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(tls.handshake_timeout_ms, 2000);
        let same_port = ["corecast", "--listen", "127.0.0.1:7443", "-c", path];
        let err = Args::parse_from(same_port).to_config().expect_err("one port");
        assert!(err.to_string().contains("[tls] listen"), "{err}");
    }

    #[test]
    fn listen_takes_a_host_name_from_flags_and_toml() {
        let args = Args::parse_from(["corecast", "--listen", "localhost:7401"]);
        assert_eq!(args.to_config().expect("valid").listen.to_string(), "localhost:7401");
        let cfg: Config = toml::from_str("listen = \"[::1]:0\"").expect("valid");
        assert_eq!(cfg.listen.host(), "::1");
    }
}
