//! `top`: a view of the broker refreshed every interval, like `nats top`.
//! Rates come from two `/stats` samples' per-core counters; the busiest
//! connections from `/connz?sort=pending`. On a terminal each frame
//! replaces the last; on a pipe frames follow one another, a blank line
//! between them.

use std::{
    fmt::Write as _,
    io::{self, IsTerminal, Write},
    thread,
    time::{Duration, Instant},
};

use super::{
    http::Port,
    json::{ConnPage, Counters, Stats},
    render::{self, Align, Table},
};
use crate::commands::{plural, wants_more};

/// Connections listed, most bytes queued first.
const LISTED: usize = 10;
/// Moves the cursor home and clears the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// `/stats` and when it was read.
#[derive(Debug)]
struct Sample {
    at: Instant,
    stats: Stats,
}

impl Sample {
    fn take(port: &Port) -> anyhow::Result<Self> {
        let stats = port.get("/stats")?;
        Ok(Self { at: Instant::now(), stats })
    }
}

/// Shows a frame every `interval`, `count` times or until stopped.
pub fn top(port: &Port, interval: Duration, count: Option<u64>) -> anyhow::Result<()> {
    let terminal = io::stdout().is_terminal();
    let mut before = Sample::take(port)?;
    let mut shown = 0;
    while wants_more(count, shown) {
        thread::sleep(interval);
        let now = Sample::take(port)?;
        let busiest: ConnPage = port.get(&format!("/connz?sort=pending&limit={LISTED}"))?;
        let text = frame(port.addr(), &before, &now, &busiest);
        let mut out = io::stdout().lock();
        if terminal {
            out.write_all(CLEAR.as_bytes())?;
        } else if shown > 0 {
            writeln!(out)?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        before = now;
        shown += 1;
    }
    Ok(())
}

/// One frame: who, the totals, a line per core with its rates since
/// `before`, and the connections with the most bytes queued.
fn frame(addr: &str, before: &Sample, now: &Sample, busiest: &ConnPage) -> String {
    let (stats, total) = (&now.stats, &now.stats.counters);
    let mut text = String::new();
    let state = match (stats.shutting_down, stats.lame_duck) {
        (true, _) => "  SHUTTING DOWN",
        (false, true) => "  LAME DUCK",
        _ => "",
    };
    let _ = writeln!(
        text,
        "{} {} at {addr}  up {}  every {}{state}",
        render::sanitized(&stats.server_name),
        render::sanitized(&stats.version),
        render::duration(stats.uptime_ms),
        render::duration(millis(now.at - before.at)),
    );
    let _ = writeln!(
        text,
        "connections {} open ({} in use)  subscriptions {}  pending {}  memory {}\n",
        total.connections_open,
        plural(total.slots_in_use, "slot"),
        total.subscriptions,
        render::bytes(total.pending_bytes),
        render::bytes(total.memory_used),
    );
    text.push_str(&cores_table(before, now).text());
    let listed = busiest.connections.len();
    let _ = writeln!(
        text,
        "\nconnections by bytes queued ({listed} of {} open)",
        busiest.total.max(listed)
    );
    if listed > 0 {
        text.push_str(&render::open_conns(&busiest.connections).text());
    }
    text
}

/// A line per core, then the sum: connections, subscriptions, rates and
/// bytes queued.
fn cores_table(before: &Sample, now: &Sample) -> Table {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("CORE", Left),
        ("CONNS", Right),
        ("SUBS", Right),
        ("MSGS IN/S", Right),
        ("MSGS OUT/S", Right),
        ("BYTES OUT/S", Right),
        ("PENDING", Right),
    ]);
    let secs = (now.at - before.at).as_secs_f64().max(1e-3);
    let zero = Counters::default();
    for (core, counters) in now.stats.per_core.iter().enumerate() {
        let earlier = before.stats.per_core.get(core).unwrap_or(&zero);
        table.row(core_row(core.to_string(), earlier, counters, secs));
    }
    table.row(core_row("all".into(), &before.stats.counters, &now.stats.counters, secs));
    table
}

fn core_row(label: String, before: &Counters, now: &Counters, secs: f64) -> Vec<String> {
    let rate = |from: u64, to: u64| to.saturating_sub(from) as f64 / secs;
    vec![
        label,
        now.connections_open.to_string(),
        now.subscriptions.to_string(),
        format!("{:.0}", rate(before.msgs_in, now.msgs_in)),
        format!("{:.0}", rate(before.msgs_out, now.msgs_out)),
        format!("{}/s", render::bytes(rate(before.bytes_out, now.bytes_out) as u64)),
        render::bytes(now.pending_bytes),
    ]
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
