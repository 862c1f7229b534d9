//! The `[cluster]` section: which Redis joins this node to a cluster, the
//! names it uses there, and the bounds and timings of the bridge.

use serde::{Deserialize, Serialize};

use crate::config::millis;

/// How a node joins a cluster over Redis. Without the section the broker
/// runs alone and nothing of the cluster exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`; fixed at start. With
    /// `mode = "sharded"`, one or more nodes of the Redis Cluster,
    /// separated by commas.
    pub redis: String,
    /// `single`: one Redis (`PUBLISH`/`SUBSCRIBE`). `sharded`: a Redis
    /// Cluster, 7.0 or later, with sharded pub/sub (`SPUBLISH`/
    /// `SSUBSCRIBE`), where a node talks only to the shards that hold
    /// its inbox, the inboxes it sends to, and the control slot.
    #[serde(default)]
    pub mode: Mode,
    /// The cluster's name: every Redis key and channel of the cluster
    /// starts with it, so several clusters can share one Redis.
    #[serde(default = "default_name")]
    pub name: String,
    /// This node's name, unique in the cluster. Default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Redis ACL user, when the URL does not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the Redis password (first line), so that it stays
    /// out of the config file and the process's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
    /// How often the node proves it is alive and refreshes its snapshot's
    /// time to live.
    #[serde(default = "default_heartbeat", rename = "heartbeat", with = "millis")]
    pub heartbeat_ms: u64,
    /// How long a silent node's interest still counts; at least three
    /// heartbeats.
    #[serde(default = "default_ttl", rename = "ttl", with = "millis")]
    pub ttl_ms: u64,
    /// Time to connect to Redis, and to wait for any one answer.
    #[serde(default = "default_timeout", rename = "command_timeout", with = "millis")]
    pub command_timeout_ms: u64,
    /// The first wait before reconnecting; doubles up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", rename = "reconnect_min", with = "millis")]
    pub reconnect_min_ms: u64,
    /// The longest wait between reconnection attempts.
    #[serde(default = "default_reconnect_max", rename = "reconnect_max", with = "millis")]
    pub reconnect_max_ms: u64,
    /// What happens when Redis takes messages slower than the node sends
    /// them.
    #[serde(default)]
    pub backpressure: Backpressure,
    /// Bytes of messages one Redis publish carries at most (one larger
    /// message goes alone).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Bytes sent to Redis and not yet answered; past it the policy of
    /// `backpressure` applies.
    #[serde(default = "default_window")]
    pub out_window: usize,
    /// Bytes received from Redis and not yet handed to the cores; past it
    /// what arrives is dropped and counted.
    #[serde(default = "default_window")]
    pub in_queue: usize,
    /// Certificates for `rediss://`: the CA that signed Redis's
    /// certificate (else the system's roots), and this node's own
    /// certificate when Redis asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTls>,
    /// How long `/healthz` tolerates the node being cut off from Redis
    /// before it reports `degraded`.
    #[serde(default = "default_ttl", rename = "health_grace", with = "millis")]
    pub health_grace_ms: u64,
}

/// The files TLS to Redis uses (`[cluster.tls]`), PEM. The host in the
/// `rediss://` URL is the name Redis's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTls {
    /// CA certificates that Redis's certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
    /// This node's certificate chain, for Redis's `tls-auth-clients`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<std::path::PathBuf>,
    /// Its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
}

/// Bytes a frame and a record add around a message, at most: the header,
/// topic, reply subject, groups and lengths (generously).
const FRAME_SLACK: usize = 8 << 10;

/// Which kind of Redis the cluster rides on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One Redis server (or a primary with replicas behind one address).
    #[default]
    Single,
    /// A Redis Cluster, through sharded pub/sub.
    Sharded,
}

/// What happens to publishes with remote interest when Redis cannot keep
/// up with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backpressure {
    /// Publishers whose messages go to other nodes wait (as they wait for
    /// a full core); publishers to local subscribers only go on. Nothing
    /// is lost while Redis is reachable.
    #[default]
    Hold,
    /// Nobody waits: copies for other nodes that find the window full are
    /// dropped and counted.
    Drop,
}

impl Backpressure {
    /// The policy's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Drop => "drop",
        }
    }
}

fn default_name() -> String {
    "corecast".into()
}
fn default_heartbeat() -> u64 {
    1_000
}
fn default_ttl() -> u64 {
    5_000
}
fn default_timeout() -> u64 {
    2_000
}
fn default_reconnect_min() -> u64 {
    100
}
fn default_reconnect_max() -> u64 {
    5_000
}
fn default_max_batch() -> usize {
    64 << 10
}
fn default_window() -> usize {
    4 << 20
}

impl ClusterConfig {
    /// A section joining the Redis at `redis` with every other setting at
    /// its default (what `--cluster-redis` makes).
    pub fn new(redis: impl Into<String>) -> Self {
        Self {
            redis: redis.into(),
            mode: Mode::default(),
            name: default_name(),
            node: None,
            username: None,
            password_file: None,
            heartbeat_ms: default_heartbeat(),
            ttl_ms: default_ttl(),
            command_timeout_ms: default_timeout(),
            reconnect_min_ms: default_reconnect_min(),
            reconnect_max_ms: default_reconnect_max(),
            backpressure: Backpressure::default(),
            max_batch: default_max_batch(),
            out_window: default_window(),
            in_queue: default_window(),
            tls: None,
            health_grace_ms: default_ttl(),
        }
    }

    /// The node's name: the configured one, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(host_name)
    }

    /// The Redis URLs: one, or the Redis Cluster's nodes to start from.
    pub(crate) fn urls(&self) -> Vec<&str> {
        self.redis.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }

    /// Checks what can be checked without Redis.
    pub(crate) fn validate(&self, cores: usize, max_frame: u32) -> Result<(), String> {
        check_name("cluster.name", &self.name)?;
        check_name("cluster.node", &self.node_name())?;
        if cores >= crate::mesh::coreset::MAX_CORES {
            return Err(format!(
                "a cluster node runs at most {} cores",
                crate::mesh::coreset::MAX_CORES - 1
            ));
        }
        if self.heartbeat_ms == 0 || self.ttl_ms < 3 * self.heartbeat_ms {
            return Err("cluster.ttl must be at least three cluster.heartbeat".into());
        }
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return Err("cluster.reconnect_max must be at least cluster.reconnect_min (> 0)".into());
        }
        // One largest message with its frame and record around it must fit
        // either window, or it could never cross.
        let largest = max_frame as usize + FRAME_SLACK;
        if self.in_queue < largest || self.out_window < largest {
            return Err(format!(
                "cluster.in_queue and cluster.out_window must hold the largest message: at least \
                 max_frame + {} KiB = {largest} bytes",
                FRAME_SLACK >> 10
            ));
        }
        if self.max_batch < 1024
            || self.out_window < self.max_batch
            || self.in_queue < self.max_batch
        {
            return Err("cluster.out_window and cluster.in_queue must hold at least cluster.max_batch (>= 1024)".into());
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err("cluster.tls needs cert and key together".into());
            }
            if !self.urls().iter().all(|u| u.starts_with("rediss://")) {
                return Err("cluster.tls is for a rediss:// URL".into());
            }
        }
        if !(self.redis.starts_with("redis://") || self.redis.starts_with("rediss://")) {
            return Err(format!(
                "cluster.redis {:?} is not a redis:// or rediss:// URL",
                self.redis
            ));
        }
        Ok(())
    }
}

/// A cluster or node name: printable, at most 64 bytes, and free of the
/// characters the Redis names are built with.
fn check_name(key: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_graphic() && !b"{}:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} {name:?} must be 1 to 64 printable ASCII characters without '{{', '}}' or ':'"
        ))
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.replace([':', '{', '}'], "-"),
        _ => "corecast".into(),
    }
}
