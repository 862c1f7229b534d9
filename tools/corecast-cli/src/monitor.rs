//! The monitoring commands: `stats`, `conns`, `top` and `lame-duck`. They
//! read the broker's monitoring port (`/stats`, `/connz`), except `stats`,
//! which by default asks over the client port with a `STATS` frame.

mod frame;
mod http;
mod json;
mod render;
mod top;

use std::{
    io::{self, Write},
    net::ToSocketAddrs,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use nix::{errno::Errno, sys::signal::Signal, unistd::Pid};

pub use self::http::Port;
use self::json::{ConnPage, Counters, Stats};
pub use self::top::top;
use crate::cli::{Connection, SortKey};

/// How long `lame-duck` waits to see the broker say it is in lame duck mode.
const CONFIRM_WITHIN: Duration = Duration::from_secs(3);

/// Prints the summed counters: from a `STATS` frame over the client port,
/// or from `/stats` when `http` is given.
pub fn stats(conn: &Connection, http: Option<&Port>) -> anyhow::Result<()> {
    let (title, counters) = match http {
        Some(port) => {
            let stats: Stats = port.get("/stats")?;
            (http_title(&stats, port.addr()), stats.counters)
        }
        None => {
            let answer = frame::read(conn)?;
            let cores = match answer.stats.per_core.len() {
                0 => String::new(),
                n => format!(", {}", crate::commands::plural(n as u64, "core")),
            };
            let name = render::sanitized(&answer.server_name);
            let title = format!(
                "{name} at {}{cores} (STATS over the client port; this connection counts)",
                conn.server
            );
            (title, answer.stats.total)
        }
    };
    print_counters(&title, &counters)
}

/// Who answered `/stats`: name, version, pid, uptime, cores, and the
/// lame duck or the shutdown when under way.
fn http_title(stats: &Stats, addr: &str) -> String {
    let pid = stats.pid.map_or(String::new(), |pid| format!(", pid {pid}"));
    let mut title = format!(
        "{} {} at {addr}{pid}, up {}, {}",
        render::sanitized(&stats.server_name),
        render::sanitized(&stats.version),
        render::duration(stats.uptime_ms),
        crate::commands::plural(stats.cores as u64, "core"),
    );
    if stats.shutting_down {
        title.push_str(" - SHUTTING DOWN");
    } else if stats.lame_duck {
        title.push_str(" - LAME DUCK: not accepting connections");
    }
    title
}

fn print_counters(title: &str, counters: &Counters) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{title}")?;
    writeln!(out)?;
    render::write_groups(&mut out, &render::counter_groups(counters))?;
    out.flush()?;
    Ok(())
}

/// Lists open connections by `sort`, or with `closed` the last closed
/// ones, newest first; `limit` at most.
pub fn conns(port: &Port, sort: SortKey, closed: bool, limit: u16) -> anyhow::Result<()> {
    let path = match closed {
        true => format!("/connz?state=closed&limit={limit}"),
        false => format!("/connz?sort={}&limit={limit}", sort.name()),
    };
    let page: ConnPage = port.get(&path)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}", page_summary(&page, closed, sort))?;
    if !page.connections.is_empty() {
        let table = match closed {
            true => render::closed_conns(&page.connections, SystemTime::now()),
            false => render::open_conns(&page.connections),
        };
        table.write(&mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// The line above the table: how many there are, how many are listed,
/// in which order.
fn page_summary(page: &ConnPage, closed: bool, sort: SortKey) -> String {
    let (shown, total) = (page.connections.len(), page.total);
    let (what, order) = match closed {
        true => ("closed connection", " kept, newest first".to_owned()),
        false => ("open connection", format!(", by {}", sort.name())),
    };
    let counted = crate::commands::plural(total as u64, what);
    if shown < total {
        format!("{shown} of {counted}{order} (--limit lists more)")
    } else {
        format!("{counted}{order}")
    }
}

/// Sends SIGUSR2 to the broker: `pid`, or the pid `/stats` gives, which
/// only a broker on this host may be signalled by.
pub fn lame_duck(port: &Port, pid: Option<i32>) -> anyhow::Result<()> {
    if let Some(pid) = pid {
        signal(pid)?;
        println!(
            "sent SIGUSR2 to process {pid}: a corecast broker stops accepting connections, \
             sends its clients GOAWAY over its lame_duck_duration, then exits"
        );
        return Ok(());
    }
    ensure_on_this_host(port.addr())?;
    let stats: Stats = port.get("/stats")?;
    if stats.lame_duck || stats.shutting_down {
        println!("the broker at {} is already in lame duck mode or shutting down", port.addr());
        return Ok(());
    }
    let pid = stats.pid.context("/stats gives no pid: pass the broker's with --pid")?;
    let pid = i32::try_from(pid).with_context(|| format!("/stats gives pid {pid}, not a pid"))?;
    signal(pid)?;
    confirm(port, pid, &stats);
    Ok(())
}

/// Refuses a monitoring port that is not on a loopback address: the pid it
/// gives would be another host's.
fn ensure_on_this_host(addr: &str) -> anyhow::Result<()> {
    let resolved: Vec<_> = addr
        .to_socket_addrs()
        .with_context(|| format!("{addr:?} is not an address like 127.0.0.1:7422"))?
        .collect();
    if resolved.is_empty() || !resolved.iter().all(|a| a.ip().is_loopback()) {
        bail!(
            "the monitoring port at {addr} is not on a loopback address, so its pid may be \
             another host's: run lame-duck on the broker's host, or pass --pid"
        );
    }
    Ok(())
}

/// Sends SIGUSR2 to `pid`.
fn signal(pid: i32) -> anyhow::Result<()> {
    if pid <= 0 {
        bail!("{pid} is not a process id");
    }
    match nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGUSR2) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => bail!("no process {pid}: is the broker running?"),
        Err(Errno::EPERM) => bail!(
            "not allowed to signal process {pid}: it runs as another user (run lame-duck as \
             the broker's user, or as root)"
        ),
        Err(e) => bail!("cannot signal process {pid}: {e}"),
    }
}

/// Waits a moment for `/stats` to say the broker is in lame duck mode,
/// and says what happens next.
fn confirm(port: &Port, pid: i32, before: &Stats) {
    let addr = port.addr();
    let clients = crate::commands::plural(before.counters.connections_open, "client");
    let over =
        before.setting("lame_duck_duration").unwrap_or_else(|| "its lame_duck_duration".into());
    let deadline = Instant::now() + CONFIRM_WITHIN;
    loop {
        match port.get::<Stats>("/stats") {
            Ok(now) if now.lame_duck || now.shutting_down => {
                println!(
                    "the broker at {addr} (pid {pid}) is in lame duck mode: it accepts no \
                     connections, sends its {clients} GOAWAY over {over}, then exits"
                );
                return;
            }
            // Gone already: it had nothing left to wait for.
            Err(_) => {
                println!("sent SIGUSR2 to the broker at {addr} (pid {pid}); it has stopped");
                return;
            }
            Ok(_) if Instant::now() >= deadline => {
                eprintln!(
                    "warning: sent SIGUSR2 to pid {pid}, but the broker at {addr} does not say \
                     it is in lame duck mode after {CONFIRM_WITHIN:?}"
                );
                return;
            }
            Ok(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lame_duck_reads_the_pid_only_from_this_host() {
        assert!(ensure_on_this_host("127.0.0.1:7422").is_ok());
        assert!(ensure_on_this_host("[::1]:7422").is_ok());
        // An address literal: nothing is resolved or sent.
        let err = ensure_on_this_host("192.0.2.1:7422").map_err(|e| e.to_string());
        assert!(err.is_err_and(|e| e.contains("pass --pid")));
    }

    #[test]
    fn the_summary_says_what_is_left_out() {
        let page = |total, shown| ConnPage { total, connections: vec![Default::default(); shown] };
        assert_eq!(page_summary(&page(1, 1), false, SortKey::Id), "1 open connection, by id");
        assert_eq!(
            page_summary(&page(9, 2), true, SortKey::Id),
            "2 of 9 closed connections kept, newest first (--limit lists more)"
        );
    }
}
