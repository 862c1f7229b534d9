//! The documents the broker answers with: `/stats`, `/connz` and the
//! `STATS_REPLY` frame. Keys this tool does not know are ignored and
//! missing ones read as zero, so that it works with older and newer
//! brokers.

use std::time::SystemTime;

use serde::Deserialize;

/// The broker's counters, summed or of one core: every one `STATS` has (a
/// test holds the list to the broker's).
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Counters {
    pub connections_open: u64,
    pub slots_in_use: u64,
    pub buffers_out: u64,
    pub tasks_alive: u64,
    pub pending_bytes: u64,
    pub memory_used: u64,
    pub memory_cached: u64,
    pub subscriptions: u64,
    pub tls_connections: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub accept_failures: u64,
    pub msgs_in: u64,
    pub bytes_in: u64,
    pub msgs_out: u64,
    pub bytes_out: u64,
    pub msgs_dropped: u64,
    pub drops_max_pending: u64,
    pub drops_budget: u64,
    pub queue_undeliverable: u64,
    pub queue_redrawn: u64,
    pub slow_consumer_closes: u64,
    pub closes_max_pending: u64,
    pub closes_write_deadline: u64,
    pub closes_budget: u64,
    pub input_budget_closes: u64,
    pub stale_closes: u64,
    pub handshake_timeouts: u64,
    pub protocol_errors: u64,
    pub publisher_stalls: u64,
    pub publisher_holds: u64,
    pub cross_core_sent: u64,
    pub cross_core_received: u64,
    pub cross_core_batches: u64,
    pub task_panics: u64,
    pub auth_failures: u64,
    pub auth_throttled: u64,
    pub permission_denied: u64,
    pub deliveries_denied: u64,
    pub subscriptions_revoked: u64,
    pub publish_rate_waits: u64,
    pub user_connection_refusals: u64,
    pub credentials_expired: u64,
    pub tls_handshakes: u64,
    pub tls_handshake_failures: u64,
    pub web_connections: u64,
    pub ws_sessions: u64,
    pub web_refusals: u64,
    pub ws_protocol_closes: u64,
    pub sse_streams: u64,
    pub sse_events: u64,
    pub sse_dropped: u64,
}

/// `/stats`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub server_name: String,
    pub version: String,
    pub pid: Option<u32>,
    pub uptime_ms: u64,
    pub cores: usize,
    pub lame_duck: bool,
    pub shutting_down: bool,
    /// The settings in force, as the broker writes them.
    pub config: serde_json::Value,
    /// Summed over the cores.
    pub counters: Counters,
    pub per_core: Vec<Counters>,
}

impl Stats {
    /// A setting in force as text (`30s`, `127.0.0.1:7400`), if given.
    pub fn setting(&self, key: &str) -> Option<String> {
        match self.config.get(key)? {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// The document of `STATS_REPLY`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct FrameStats {
    /// Summed over the cores.
    pub total: Counters,
    /// Left out by a broker whose `max_frame` cannot hold it.
    pub per_core: Vec<Counters>,
}

/// A page of `/connz`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ConnPage {
    /// Connections in that state (closed: those the broker keeps).
    pub total: usize,
    pub connections: Vec<Conn>,
}

/// An open connection, or a closed one (then `reason`, `opened_at` and
/// `closed_at` are given instead of `state`, `uptime_ms`, `idle_ms` and
/// `pending_bytes`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Conn {
    /// None for a connection refused before it had one.
    pub id: Option<u64>,
    pub core: usize,
    pub peer: String,
    pub name: Option<String>,
    pub state: Option<String>,
    pub reason: Option<String>,
    pub opened_at: Option<String>,
    pub closed_at: Option<String>,
    pub uptime_ms: u64,
    pub idle_ms: u64,
    pub pending_bytes: u64,
    pub subscriptions: usize,
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub drops: u64,
}

impl Conn {
    pub fn opened_at(&self) -> Option<SystemTime> {
        time(self.opened_at.as_deref())
    }

    pub fn closed_at(&self) -> Option<SystemTime> {
        time(self.closed_at.as_deref())
    }
}

/// An RFC 3339 time, as the broker writes them.
fn time(text: Option<&str>) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_ignored_and_missing_ones_are_zero() {
        let json = r#"{"total": {"msgs_in": 5, "a_new_counter": 1}, "connections": []}"#;
        let stats: FrameStats = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(stats.total.msgs_in, 5);
        assert_eq!(stats.total.msgs_out, 0);
        assert!(stats.per_core.is_empty());
    }

    /// The tool knows every counter the broker has, so `stats` shows them
    /// all: one added to the broker without a field here fails this.
    #[test]
    fn every_counter_of_the_broker_is_known() {
        let keys = |value: serde_json::Value| -> Vec<String> {
            let mut keys: Vec<String> =
                value.as_object().expect("an object").keys().cloned().collect();
            keys.sort();
            keys
        };
        let broker = serde_json::to_value(corecast::Snapshot::default()).expect("serializable");
        let known = serde_json::to_value(Counters::default()).expect("serializable");
        assert_eq!(keys(known), keys(broker));
    }

    #[test]
    fn closed_connections_have_times() {
        let json = r#"{"id": null, "core": 1, "peer": "127.0.0.1:5", "reason": "server full",
            "error_code": 8, "opened_at": "2026-01-02T03:04:05.678Z",
            "closed_at": "2026-01-02T03:04:06.678Z"}"#;
        let conn: Conn = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(conn.reason.as_deref(), Some("server full"));
        let lived = conn.closed_at().zip(conn.opened_at()).map(|(c, o)| c.duration_since(o));
        assert_eq!(lived.map(|d| d.ok()), Some(Some(std::time::Duration::from_secs(1))));
    }
}
