//! What the monitoring commands print: aligned tables, byte sizes with
//! units, short durations, and the counters in groups.

use std::{
    io::{self, Write},
    time::SystemTime,
};

use super::json::{Conn, Counters};

/// How a column lines its cells up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row, written with its columns aligned and two
/// spaces between them.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row: one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    /// Writes the header and the rows; no line ends with spaces.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let header: Vec<String> = self.columns.iter().map(|(name, _)| (*name).to_owned()).collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                let cells = self.rows.iter().map(|row| row[i].chars().count());
                cells.chain([header[i].chars().count()]).max().unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            writeln!(out, "{}", self.line(row, &widths))?;
        }
        Ok(())
    }

    /// The table as text, as `write` writes it.
    pub fn text(&self) -> String {
        let mut bytes = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn line(&self, row: &[String], widths: &[usize]) -> String {
        let cells = row.iter().zip(widths).zip(&self.columns).map(
            |((cell, &width), (_, align))| match align {
                Align::Left => format!("{cell:<width$}"),
                Align::Right => format!("{cell:>width$}"),
            },
        );
        cells.collect::<Vec<_>>().join("  ").trim_end().to_owned()
    }
}

/// A size in bytes: `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration given in ms, short: `250ms`, `4.2s`, `3m04s`, `2h05m`,
/// `3d04h`.
pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..=59 => format!("{:.1}s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Text a client chose (its name), with control characters escaped, so
/// that it cannot move the cursor or clear the screen.
pub fn sanitized(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// The open connections as a table.
pub fn open_conns(conns: &[Conn]) -> Table {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("ID", Right),
        ("CORE", Right),
        ("PEER", Left),
        ("NAME", Left),
        ("STATE", Left),
        ("UPTIME", Right),
        ("IDLE", Right),
        ("PENDING", Right),
        ("SUBS", Right),
        ("MSGS IN", Right),
        ("MSGS OUT", Right),
        ("BYTES IN", Right),
        ("BYTES OUT", Right),
        ("DROPS", Right),
    ]);
    for c in conns {
        let mut row = who(c);
        row.extend([
            c.state.clone().unwrap_or_else(|| "-".into()),
            duration(c.uptime_ms),
            duration(c.idle_ms),
            bytes(c.pending_bytes),
            c.subscriptions.to_string(),
        ]);
        row.extend(traffic(c));
        table.row(row);
    }
    table
}

/// The closed connections as a table, the reason last (it is the longest).
pub fn closed_conns(conns: &[Conn], now: SystemTime) -> Table {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("ID", Right),
        ("CORE", Right),
        ("PEER", Left),
        ("NAME", Left),
        ("LIVED", Right),
        ("CLOSED", Right),
        ("SUBS", Right),
        ("MSGS IN", Right),
        ("MSGS OUT", Right),
        ("BYTES IN", Right),
        ("BYTES OUT", Right),
        ("DROPS", Right),
        ("REASON", Left),
    ]);
    for c in conns {
        let (opened, closed) = (c.opened_at(), c.closed_at());
        let lived = match (opened, closed) {
            (Some(opened), Some(closed)) => duration(millis_between(opened, closed)),
            _ => "-".into(),
        };
        let ago = closed.map_or_else(|| "-".into(), |at| format!("{} ago", ago(at, now)));
        let mut row = who(c);
        row.extend([lived, ago, c.subscriptions.to_string()]);
        row.extend(traffic(c));
        row.push(reason(c));
        table.row(row);
    }
    table
}

/// Id, core, peer and name.
fn who(c: &Conn) -> Vec<String> {
    vec![
        c.id.map_or_else(|| "-".into(), |id| id.to_string()),
        c.core.to_string(),
        c.peer.clone(),
        c.name.as_deref().map_or_else(|| "-".into(), sanitized),
    ]
}

/// Messages and bytes in and out, and drops.
fn traffic(c: &Conn) -> [String; 5] {
    [
        c.msgs_in.to_string(),
        c.msgs_out.to_string(),
        bytes(c.bytes_in),
        bytes(c.bytes_out),
        c.drops.to_string(),
    ]
}

/// Why a connection closed (the broker's words name the `ERR` it sent).
fn reason(c: &Conn) -> String {
    sanitized(c.reason.as_deref().unwrap_or("-"))
}

fn millis_between(from: SystemTime, to: SystemTime) -> u64 {
    let elapsed = to.duration_since(from).unwrap_or_default();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// The time from `at` to `now`, short.
fn ago(at: SystemTime, now: SystemTime) -> String {
    duration(millis_between(at, now))
}

/// One group of counters: a title and its lines, label and value.
type Group = (&'static str, Vec<(&'static str, String)>);

/// The counters in groups, as `stats` prints them.
pub fn counter_groups(c: &Counters) -> Vec<Group> {
    let n = |v: u64| v.to_string();
    vec![
        (
            "connections",
            vec![
                ("open", n(c.connections_open)),
                ("slots in use", n(c.slots_in_use)),
                ("connection tasks", n(c.tasks_alive)),
                ("accepted since start", n(c.connections_accepted)),
                ("refused (server full)", n(c.connections_refused)),
                ("accept failures", n(c.accept_failures)),
                ("subscriptions", n(c.subscriptions)),
                ("on the TLS port", n(c.tls_connections)),
                ("TLS handshakes", n(c.tls_handshakes)),
                ("TLS handshakes failed", n(c.tls_handshake_failures)),
                ("on the web port", n(c.web_connections)),
                ("WebSocket sessions", n(c.ws_sessions)),
                ("web requests refused", n(c.web_refusals)),
                ("WebSocket protocol closes", n(c.ws_protocol_closes)),
                ("SSE streams opened", n(c.sse_streams)),
                ("SSE events", n(c.sse_events)),
                ("SSE messages dropped", n(c.sse_dropped)),
            ],
        ),
        (
            "messages",
            vec![
                ("in (published)", n(c.msgs_in)),
                ("out (queued to subscribers)", n(c.msgs_out)),
                ("publisher holds (slow reader)", n(c.publisher_holds)),
            ],
        ),
        (
            "bytes",
            vec![
                ("in", bytes(c.bytes_in)),
                ("out", bytes(c.bytes_out)),
                ("pending (queued, not sent)", bytes(c.pending_bytes)),
                ("memory used", bytes(c.memory_used)),
                ("memory cached", bytes(c.memory_cached)),
                ("chunks and large buffers held", n(c.buffers_out)),
            ],
        ),
        (
            "drops",
            vec![
                ("dropped (lossy subscriptions)", n(c.msgs_dropped)),
                ("  at max_pending", n(c.drops_max_pending)),
                ("  over the pending budget", n(c.drops_budget)),
                ("queue group undeliverable", n(c.queue_undeliverable)),
            ],
        ),
        (
            "closes",
            vec![
                ("slow consumers", n(c.slow_consumer_closes)),
                ("  at max_pending", n(c.closes_max_pending)),
                ("  write deadline", n(c.closes_write_deadline)),
                ("  over the pending budget", n(c.closes_budget)),
                ("input over the budget", n(c.input_budget_closes)),
                ("stale (silent)", n(c.stale_closes)),
                ("handshake timeouts", n(c.handshake_timeouts)),
                ("protocol errors (ERR sent)", n(c.protocol_errors)),
                ("task panics", n(c.task_panics)),
            ],
        ),
        (
            "cross-core",
            vec![
                ("records sent", n(c.cross_core_sent)),
                ("records received", n(c.cross_core_received)),
                ("batches", n(c.cross_core_batches)),
                ("queue group redraws", n(c.queue_redrawn)),
                ("publisher stalls (queue full)", n(c.publisher_stalls)),
            ],
        ),
        (
            "security",
            vec![
                ("auth failures", n(c.auth_failures)),
                ("  throttled", n(c.auth_throttled)),
                ("PUB/SUB denied", n(c.permission_denied)),
                ("deliveries denied", n(c.deliveries_denied)),
                ("subscriptions revoked", n(c.subscriptions_revoked)),
                ("publish rate waits", n(c.publish_rate_waits)),
                ("user connection limit", n(c.user_connection_refusals)),
                ("credentials expired", n(c.credentials_expired)),
            ],
        ),
    ]
}

/// Writes the groups: each title, then its lines indented, labels and
/// values in aligned columns.
pub fn write_groups(out: &mut impl Write, groups: &[Group]) -> io::Result<()> {
    let lines = groups.iter().flat_map(|(_, lines)| lines);
    let label_width = lines.clone().map(|(label, _)| label.len()).max().unwrap_or(0);
    let value_width = lines.map(|(_, value)| value.len()).max().unwrap_or(0);
    for (title, lines) in groups {
        writeln!(out, "{title}")?;
        for (label, value) in lines {
            writeln!(out, "  {label:<label_width$}  {value:>value_width$}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 << 20), "12.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(250), "250ms");
        assert_eq!(duration(4_200), "4.2s");
        assert_eq!(duration(184_000), "3m04s");
        assert_eq!(duration(7_500_000), "2h05m");
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn tables_align_and_leave_no_trailing_spaces() {
        let mut table = Table::new(&[("ID", Align::Right), ("NAME", Align::Left)]);
        table.row(vec!["7".into(), "a".into()]);
        table.row(vec!["1234".into(), "-".into()]);
        assert_eq!(table.text(), "  ID  NAME\n   7  a\n1234  -\n");
    }

    #[test]
    fn names_cannot_hold_escapes() {
        assert_eq!(sanitized("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(sanitized("plain name"), "plain name");
    }
}
