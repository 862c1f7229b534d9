//! `web`: corecast's web port against nats-server's `websocket` port, both
//! as shipped, on loopback.
//!
//! corecast runs with `--listen`, `--http` and `--web` only; nats-server
//! with a config file holding `listen` and `websocket { host, port,
//! no_tls: true }` only. Every bench connection upgrades with `GET /` and
//! speaks the broker's own protocol inside binary messages (see
//! `driver::ws`). Each system is started fresh for every round.
//!
//! The cases: fan-out from one publisher to 1000 and to 10 000 WebSocket
//! subscribers of one topic (delivered/s counted at the subscribers, every
//! delivery checked), and the broker's RSS per idle WebSocket session (one
//! subscription each), both run in rounds interleaved across the brokers
//! and reported as the round with the median; then, corecast only, a
//! connect-and-abort churn over WebSocket after which every gauge of
//! `/stats` must be back to idle (see [`churn`]), and Server-Sent Events
//! on `GET /sse` (see [`sse`]), skipped while the broker answers `404`.

mod churn;
mod report;
mod sse;

use std::{
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use serde::Serialize;

use crate::{
    driver::{Access, Kind},
    result::RunResult,
    servers::{self, Server},
    sys,
    workload::{
        conns,
        flow::{self, FlowSpec},
        median_round, Target,
    },
};

pub use churn::ChurnRun;
pub use sse::SseRun;

/// Rounds of the fan-out and idle cases per broker.
pub const ROUNDS: u32 = 3;
/// The fan-out cases' subscriber counts.
pub const FANOUT_SUBS: [usize; 2] = [1000, 10_000];
/// Payload bytes of the fan-out cases.
const SIZE: usize = 64;

/// Options of `web`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebArgs {
    /// One round, fewer messages, connections and cycles: a smoke test of
    /// under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of the fan-out and idle cases [default: 3; 1 with --quick].
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Only the cases whose name contains one of these (comma-separated):
    /// fanout, idle, churn, sse.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Parent directory of the timestamped results directory.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// The corecast binary (built with `cargo build --release -p corecast`
    /// when missing).
    #[arg(long, default_value = "target/release/corecast")]
    pub corecast_bin: PathBuf,
    /// Bound on each run.
    #[arg(long, default_value_t = 60)]
    pub run_timeout_secs: u64,
}

impl WebArgs {
    /// The command line that reproduces this run.
    pub fn command_line(&self) -> String {
        let mut line = String::from("corecast-bench web");
        if self.quick {
            line.push_str(" --quick");
        }
        if let Some(r) = self.rounds {
            line.push_str(&format!(" --rounds {r}"));
        }
        if !self.only.is_empty() {
            line.push_str(&format!(" --only {}", self.only.join(",")));
        }
        line
    }

    fn rounds(&self) -> u32 {
        self.rounds.unwrap_or(if self.quick { 1 } else { ROUNDS }).max(1)
    }

    fn wants(&self, case: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| case.contains(o.as_str()))
    }
}

/// How much each case does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// Messages published in the fan-out to 1000 and to 10 000.
    pub fanout_msgs: [u64; 2],
    /// Idle sessions whose memory is measured.
    pub idle: usize,
    /// Connect-and-abort cycles of the churn, and of its warm-up.
    pub churn_cycles: u64,
    pub churn_warmup: u64,
    /// Concurrent churn loops.
    pub churn_threads: usize,
    /// SSE streams held open, and closed at once in each batch.
    pub sse_streams: usize,
    pub sse_batch: usize,
}

impl Sizes {
    /// The full run's sizes, or `--quick`'s.
    pub fn new(quick: bool) -> Self {
        if quick {
            return Self {
                fanout_msgs: [2_000, 200],
                idle: 2_000,
                churn_cycles: 20_000,
                churn_warmup: 10_000,
                churn_threads: 4,
                sse_streams: 1_000,
                sse_batch: 200,
            };
        }
        Self {
            fanout_msgs: [40_000, 4_000],
            idle: 10_000,
            churn_cycles: 100_000,
            churn_warmup: 10_000,
            churn_threads: 4,
            sse_streams: 5_000,
            sse_batch: 1_000,
        }
    }
}

/// Where things are.
struct Setup {
    corecast_bin: PathBuf,
    dir: PathBuf,
    timeout: Duration,
}

/// nats-server's config: the client port and the WebSocket port, nothing
/// else.
pub fn nats_config(port: u16, ws_port: u16) -> String {
    format!(
        "listen: \"127.0.0.1:{port}\"\nwebsocket {{\n  host: \"127.0.0.1\"\n  port: {ws_port}\n  no_tls: true\n}}\n"
    )
}

/// Variables of the caller's environment no broker gets: they would
/// change its settings or its logging (every `CORECAST_*` too, see
/// [`scrubbed`]).
const SCRUBBED: [&str; 1] = ["RUST_LOG"];
/// And those nats-server does not get either: the Go runtime's.
const SCRUBBED_GO: [&str; 3] = ["GOMAXPROCS", "GOGC", "GOMEMLIMIT"];

/// The names `kind`'s environment is cleared of, out of `vars` (the
/// caller's variable names).
fn scrubbed(kind: Kind, vars: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = vars.into_iter().filter(|v| v.starts_with("CORECAST_")).collect();
    names.extend(SCRUBBED.map(String::from));
    if kind == Kind::Nats {
        names.extend(SCRUBBED_GO.map(String::from));
    }
    names.sort();
    names.dedup();
    names
}

/// The command that starts `kind` on `ports` (client, monitoring, web):
/// corecast with `--listen`, `--http` and `--web`; nats-server with the
/// config file `conf` (see [`nats_config`]); either without the variables
/// of [`scrubbed`] out of `vars`.
fn broker_command(
    kind: Kind,
    corecast_bin: &Path,
    ports: [u16; 3],
    conf: &Path,
    vars: impl IntoIterator<Item = String>,
) -> anyhow::Result<Command> {
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p)).to_string();
    let mut cmd = match kind {
        Kind::Corecast => {
            let mut cmd = Command::new(corecast_bin);
            cmd.args(["--listen", &at(ports[0])])
                .args(["--http", &at(ports[1])])
                .args(["--web", &at(ports[2])]);
            cmd
        }
        Kind::Nats => {
            let mut cmd = Command::new("nats-server");
            cmd.arg("-c").arg(conf);
            cmd
        }
        Kind::Redis => anyhow::bail!("redis-server has no WebSocket port"),
    };
    for name in scrubbed(kind, vars) {
        cmd.env_remove(name);
    }
    Ok(cmd)
}

/// The bench connects to [`Server::addr`], the web port (corecast) or the
/// WebSocket port (nats-server), over WebSocket.
fn start(kind: Kind, setup: &Setup, label: &str) -> anyhow::Result<Server> {
    let ports = servers::free_ports(3)?;
    let ports = [ports[0], ports[1], ports[2]];
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let access = Access { websocket: true, ..Access::default() };
    let log = setup.dir.join("logs").join(format!("{label}.log"));
    let conf = match kind {
        Kind::Nats => servers::write_conf(
            &setup.dir,
            &format!("{label}.conf"),
            &nats_config(ports[0], ports[2]),
        )?,
        _ => PathBuf::new(),
    };
    let vars = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
    let cmd = broker_command(kind, &setup.corecast_bin, ports, &conf, vars)?;
    let http = (kind == Kind::Corecast).then(|| at(ports[1]));
    servers::launch(kind, cmd, (at(ports[2]), http), access, log)
}

/// The target of the runs against `server` (of `kind`; none: a broker
/// that could not start).
fn target(kind: Kind, server: Option<&Server>, timeout: Duration) -> Target {
    Target {
        kind,
        addr: server.map_or(([127, 0, 0, 1], 0).into(), |s| s.addr),
        http: server.and_then(|s| s.http),
        pid: server.map(|s| s.pid),
        timeout,
        mode: Some("web".into()),
        settings: Some("defaults".into()),
        settle: Duration::from_secs(2),
        access: Access { websocket: true, ..Access::default() },
        others: Vec::new(),
    }
}

/// Runs `work` against a freshly started `kind`; a failure to start or to
/// run is a result that carries it.
fn on_fresh(
    kind: Kind,
    setup: &Setup,
    label: &str,
    blank: impl Fn(&Target) -> RunResult,
    work: impl FnOnce(&Target) -> anyhow::Result<RunResult>,
) -> RunResult {
    let mut server = match start(kind, setup, label) {
        Ok(s) => s,
        Err(e) => {
            let mut r = blank(&target(kind, None, setup.timeout));
            r.errors.push(format!("start: {e:#}"));
            return r;
        }
    };
    let target = target(kind, Some(&server), setup.timeout);
    let mut result = work(&target).unwrap_or_else(|e| {
        let mut r = blank(&target);
        r.errors.push(format!("{e:#}"));
        r
    });
    if !server.alive() {
        result.errors.push(format!("{kind} exited: {}", server.log_tail()));
    }
    result
}

/// A run of a case against a fresh broker of a kind, under a label.
type RunFn = Box<dyn Fn(Kind, &Setup, &str) -> RunResult>;

/// One case: its name, and a run of it against a fresh broker.
struct Case {
    name: String,
    run: RunFn,
    /// The figure whose median round stands for the case.
    figure: fn(&RunResult) -> f64,
}

fn fanout_case(subs: usize, msgs: u64) -> Case {
    let spec = FlowSpec::fanout(1, subs, msgs, SIZE);
    let name = spec.case.clone();
    let run = Box::new(move |kind, setup: &Setup, label: &str| {
        let blank = |t: &Target| t.result(spec.workload, spec.case.clone(), spec.params());
        on_fresh(kind, setup, label, blank, |t| flow::run(t, &spec))
    });
    Case { name, run, figure: |r| r.flow.as_ref().map_or(0.0, |f| f.delivered_per_s) }
}

fn idle_case(count: usize) -> Case {
    let run = Box::new(move |kind, setup: &Setup, label: &str| {
        let blank = |t: &Target| t.result("conns", conns::case_name(count), conns::params(count));
        on_fresh(kind, setup, label, blank, |t| conns::run(t, count))
    });
    let figure = |r: &RunResult| r.conns.as_ref().map_or(f64::NAN, |c| c.rss_per_conn_bytes);
    Case { name: format!("idle {}", conns::case_name(count)), run, figure }
}

/// The rounds of `case` on every broker, interleaved: every round, and
/// each broker's median round.
fn run_rounds(
    case: &Case,
    rounds: u32,
    setup: &Setup,
    wall: Instant,
) -> anyhow::Result<(Vec<RunResult>, Vec<RunResult>)> {
    let mut by_kind: Vec<Vec<RunResult>> = vec![Vec::new(); 2];
    for round in 1..=rounds {
        for (k, kind) in [Kind::Corecast, Kind::Nats].into_iter().enumerate() {
            progress(wall, &format!("{kind} / {} / round {round} of {rounds}", case.name));
            let name = case.name.replace("->", " to ").replace(' ', "-");
            let label = format!("{kind}-{name}-round{round}");
            let mut r = (case.run)(kind, setup, &label);
            r.params.round = Some(round);
            append_json(&setup.dir.join("rounds.jsonl"), &r)?;
            if !r.errors.is_empty() {
                eprintln!("corecast-bench:   problems: {}", r.errors.join("; "));
            }
            by_kind[k].push(r);
        }
    }
    let all: Vec<RunResult> = by_kind.iter().flatten().cloned().collect();
    let merged = by_kind
        .iter()
        .filter_map(|rounds| {
            if rounds.iter().any(|r| r.flow.is_some()) {
                flow::merge_rounds(rounds)
            } else {
                median_round(rounds, case.figure)
            }
        })
        .collect();
    Ok((all, merged))
}

/// corecast's counters, summed over its cores: `counters` of `/stats` on
/// its monitoring port.
fn counters(target: &Target) -> anyhow::Result<BTreeMap<String, u64>> {
    let http = target.http.context("corecast without a monitoring port")?;
    let body = crate::cluster::http_get(http, "/stats")?;
    let stats: serde_json::Value = serde_json::from_str(&body).context("/stats is not JSON")?;
    let all = stats.get("counters").and_then(|c| c.as_object()).context("/stats: no counters")?;
    Ok(all.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
}

fn progress(wall: Instant, what: &str) {
    eprintln!("corecast-bench: [{:>5.0}s] web / {what}", wall.elapsed().as_secs_f64());
}

fn append_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(value)?)?;
    Ok(())
}

/// Everything one `web` run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each broker's median round of each fan-out and idle case.
    pub merged: Vec<RunResult>,
    /// Every round.
    pub rounds: Vec<RunResult>,
    pub churn: Option<ChurnRun>,
    pub sse: Option<SseRun>,
}

/// A corecast-only case's figures, which carry its problems.
trait Problems {
    fn problems(&mut self) -> &mut Vec<String>;
}

impl Problems for ChurnRun {
    fn problems(&mut self) -> &mut Vec<String> {
        &mut self.errors
    }
}

impl Problems for SseRun {
    fn problems(&mut self) -> &mut Vec<String> {
        &mut self.errors
    }
}

/// Runs the corecast-only case `name` against a fresh corecast; a broker
/// that does not start (`blank`, with why) or exits during the case is a
/// problem of the case, and the suite goes on.
fn corecast_only<T: Serialize + Problems>(
    setup: &Setup,
    name: &str,
    wall: Instant,
    blank: impl FnOnce() -> T,
    work: impl FnOnce(&Server, &Target) -> T,
) -> anyhow::Result<T> {
    progress(wall, &format!("corecast / {name}"));
    let mut out = match start(Kind::Corecast, setup, &format!("corecast-{name}")) {
        Ok(mut server) => {
            let mut out = work(&server, &target(Kind::Corecast, Some(&server), setup.timeout));
            if !server.alive() {
                let why = format!("corecast exited during {name}: {}", server.log_tail());
                out.problems().push(why);
            }
            out
        }
        Err(e) => {
            let mut out = blank();
            out.problems().push(format!("start: {e:#}"));
            out
        }
    };
    for e in out.problems().iter() {
        eprintln!("corecast-bench:   problems: {e}");
    }
    std::fs::write(setup.dir.join(format!("{name}.json")), serde_json::to_vec_pretty(&out)?)?;
    Ok(out)
}

fn measure(args: &WebArgs, setup: &Setup, wall: Instant) -> anyhow::Result<Outcome> {
    let sizes = Sizes::new(args.quick);
    let mut cases = Vec::new();
    for (subs, msgs) in FANOUT_SUBS.into_iter().zip(sizes.fanout_msgs) {
        cases.push(fanout_case(subs, msgs));
    }
    cases.push(idle_case(sizes.idle));
    let mut out = Outcome::default();
    for case in cases.iter().filter(|c| args.wants(&c.name)) {
        let (all, merged) = run_rounds(case, args.rounds(), setup, wall)?;
        for m in &merged {
            append_json(&setup.dir.join("results.jsonl"), m)?;
        }
        out.rounds.extend(all);
        out.merged.extend(merged);
    }
    if args.wants("churn") {
        let blank = || ChurnRun {
            target_cycles: sizes.churn_cycles,
            threads: sizes.churn_threads,
            ..ChurnRun::default()
        };
        let work = |s: &Server, t: &Target| churn::run(s, t, &sizes);
        out.churn = Some(corecast_only(setup, "churn", wall, blank, work)?);
    }
    if args.wants("sse") {
        let blank = || SseRun { streams: sizes.sse_streams, ..SseRun::default() };
        let work = |s: &Server, t: &Target| sse::run(s, t, &sizes);
        out.sse = Some(corecast_only(setup, "sse", wall, blank, work)?);
    }
    Ok(out)
}

/// `web`: runs every case, writes `rounds.jsonl`, `results.jsonl`,
/// `churn.json`, `sse.json` and `report.md` into `<out>/web-<timestamp>/`.
pub fn run(args: &WebArgs) -> anyhow::Result<()> {
    let wall = Instant::now();
    let mut notes = vec![
        format!("command: `{}` on {} cpus", args.command_line(), sys::online_cpus()),
        format!("load average (1, 5, 15 min) before the runs: {}", sys::loadavg()),
    ];
    notes.extend(servers::ensure_installed(&[Kind::Nats], false)?);
    notes.extend(servers::ensure_corecast(&args.corecast_bin, false)?);
    let versions = [args.corecast_bin.as_os_str(), "nats-server".as_ref()].map(servers::version);
    notes.push(format!("versions: {}", versions.join("; ")));
    let dir = args.out.join(format!("web-{}", crate::compare::timestamp(SystemTime::now())));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let setup = Setup {
        corecast_bin: args.corecast_bin.clone(),
        dir: dir.clone(),
        timeout: Duration::from_secs(args.run_timeout_secs),
    };
    let outcome = measure(args, &setup, wall)?;
    notes.push(format!("load average after the runs: {}", sys::loadavg()));
    notes.push(format!("wall time: {:.0} s", wall.elapsed().as_secs_f64()));
    let md = report::render(&outcome, args.rounds(), &Sizes::new(args.quick), &notes);
    std::fs::write(dir.join("report.md"), &md)?;
    println!("\n{md}");
    println!("results: {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: WebArgs,
    }

    #[test]
    fn parses_its_arguments_and_says_its_command() {
        let cli = Cli::try_parse_from(["x"]).expect("defaults");
        assert_eq!(
            (cli.args.rounds(), cli.args.command_line()),
            (ROUNDS, "corecast-bench web".into())
        );
        assert!(cli.args.wants("churn"));
        let cli = Cli::try_parse_from(["x", "--quick", "--only", "fanout,sse"]).expect("flags");
        assert_eq!(cli.args.rounds(), 1);
        assert_eq!(cli.args.command_line(), "corecast-bench web --quick --only fanout,sse");
        assert!(cli.args.wants("fanout 1->1000 64B") && cli.args.wants("sse"));
        assert!(!cli.args.wants("churn") && !cli.args.wants("idle conns 10000"));
    }

    #[test]
    fn each_broker_gets_its_ports_and_none_of_the_callers_settings() {
        assert_eq!(
            nats_config(4222, 8080),
            "listen: \"127.0.0.1:4222\"\nwebsocket {\n  host: \"127.0.0.1\"\n  port: 8080\n  no_tls: true\n}\n"
        );
        let vars = ["CORECAST_WORKERS", "CORECAST_WEB", "PATH", "HOME", "GOGC"].map(String::from);
        let removed = |cmd: &Command| -> Vec<String> {
            cmd.get_envs()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect()
        };
        let args = |cmd: &Command| -> Vec<String> {
            cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
        };
        let bin = Path::new("target/release/corecast");
        let conf = Path::new("/tmp/n.conf");
        let c = broker_command(Kind::Corecast, bin, [1, 2, 3], conf, vars.clone()).expect("cmd");
        assert_eq!(c.get_program(), bin.as_os_str());
        assert_eq!(
            args(&c),
            ["--listen", "127.0.0.1:1", "--http", "127.0.0.1:2", "--web", "127.0.0.1:3"]
        );
        assert_eq!(removed(&c), ["CORECAST_WEB", "CORECAST_WORKERS", "RUST_LOG"]);
        assert_eq!(c.get_envs().filter(|(_, v)| v.is_some()).count(), 0);
        let n = broker_command(Kind::Nats, bin, [1, 2, 3], conf, vars).expect("cmd");
        assert_eq!(n.get_program(), "nats-server");
        assert_eq!(args(&n), ["-c", "/tmp/n.conf"]);
        assert_eq!(
            removed(&n),
            ["CORECAST_WEB", "CORECAST_WORKERS", "GOGC", "GOMAXPROCS", "GOMEMLIMIT", "RUST_LOG"]
        );
        assert!(broker_command(Kind::Redis, bin, [1, 2, 3], conf, []).is_err());
    }

    #[test]
    fn the_report_judges_the_targets() {
        let spec = FlowSpec::fanout(1, 1000, 10, SIZE);
        let run = |kind, per_s: f64, lost| {
            let mut r = target(kind, None, Duration::from_secs(1)).result(
                spec.workload,
                spec.case.clone(),
                spec.params(),
            );
            r.flow = Some(crate::result::Flow {
                delivered: 10_000,
                delivered_per_s: per_s,
                lost,
                ..Default::default()
            });
            r
        };
        let render = |merged| {
            report::render(&Outcome { merged, ..Outcome::default() }, 3, &Sizes::new(true), &[])
        };
        let outcome = |c, lost| render(vec![run(Kind::Corecast, c, lost), run(Kind::Nats, 1e6, 0)]);
        let md = outcome(2.5e6, 0);
        assert!(md.contains("| 2.50M | 1.00M | 2.50× | **PASS** |"), "{md}");
        let md = outcome(1.5e6, 0);
        assert!(md.contains("| 1.50M | 1.00M | 1.50× | **FAIL** |"), "{md}");
        let md = outcome(9e6, 3);
        assert!(md.contains("**FAIL**") && md.contains("lost 3"), "{md}");
        // Duplicates, gaps or errors on corecast's side: FAIL.
        let mut dup = run(Kind::Corecast, 9e6, 0);
        dup.flow.as_mut().expect("flow").duplicates = 2;
        let md = render(vec![dup, run(Kind::Nats, 1e6, 0)]);
        assert!(md.contains("duplicates 2) | 1.00M | 9.00× | **FAIL** |"), "{md}");
        let mut errored = run(Kind::Corecast, 9e6, 0);
        errored.errors.push("broken".into());
        let md = render(vec![errored, run(Kind::Nats, 1e6, 0)]);
        assert!(md.contains("| 9.00× | **FAIL** |"), "{md}");
        // A failed nats-server run is no win.
        let mut gaps = run(Kind::Nats, 1e6, 0);
        gaps.flow.as_mut().expect("flow").gaps = 1;
        let md = render(vec![run(Kind::Corecast, 9e6, 0), gaps]);
        assert!(md.contains("| 9.00× | n/a (nats failed) |") && !md.contains("PASS"), "{md}");
        let md = render(vec![run(Kind::Corecast, 9e6, 0), run(Kind::Nats, 1e6, 5)]);
        assert!(md.contains("n/a (nats failed)") && !md.contains("PASS"), "{md}");
        let md = render(vec![run(Kind::Corecast, 9e6, 0)]);
        assert!(md.contains("n/a (nats failed)") && !md.contains("PASS"), "{md}");
    }

    #[test]
    fn the_idle_target_needs_every_session_open_on_both_sides() {
        let idle = |kind, opened, per_conn: f64| {
            let mut r = target(kind, None, Duration::from_secs(1)).result(
                "conns",
                conns::case_name(100),
                conns::params(100),
            );
            r.conns = Some(crate::result::ConnsFigures {
                opened,
                rss_per_conn_bytes: per_conn,
                ..Default::default()
            });
            r
        };
        let render = |merged| {
            report::render(&Outcome { merged, ..Outcome::default() }, 3, &Sizes::new(true), &[])
        };
        let md = render(vec![idle(Kind::Corecast, 100, 1024.0), idle(Kind::Nats, 100, 4096.0)]);
        assert!(md.contains("| 0.25× | **PASS** |"), "{md}");
        // Nothing opened is no 0-byte win.
        let md = render(vec![idle(Kind::Corecast, 0, 0.0), idle(Kind::Nats, 100, 4096.0)]);
        assert!(md.contains("opened 0 of 100") && md.contains("**FAIL**"), "{md}");
        let md = render(vec![idle(Kind::Corecast, 60, 1024.0), idle(Kind::Nats, 100, 4096.0)]);
        assert!(md.contains("**FAIL**") && !md.contains("PASS"), "{md}");
        let mut errored = idle(Kind::Corecast, 100, 1024.0);
        errored.errors.push("broken".into());
        let md = render(vec![errored, idle(Kind::Nats, 100, 4096.0)]);
        assert!(md.contains("**FAIL**") && !md.contains("PASS"), "{md}");
        let md = render(vec![idle(Kind::Corecast, 100, 1024.0), idle(Kind::Nats, 50, 4096.0)]);
        assert!(md.contains("n/a (nats failed)") && !md.contains("PASS"), "{md}");
    }

    #[test]
    fn the_churn_target_needs_every_cycle_and_no_errors() {
        let good = ChurnRun {
            target_cycles: 100,
            cycles: 100,
            back_to_idle: true,
            rss_ratio: 1.0,
            ..ChurnRun::default()
        };
        let render = |c: ChurnRun| {
            let out = Outcome { churn: Some(c), ..Outcome::default() };
            report::render(&out, 1, &Sizes::new(true), &[])
        };
        assert!(render(good.clone()).contains("**PASS**"));
        let short = ChurnRun { cycles: 60, ..good.clone() };
        assert!(render(short).contains("**FAIL**"));
        let errored = ChurnRun { errors: vec!["/stats has no gauge x".into()], ..good.clone() };
        assert!(render(errored).contains("**FAIL**"));
        let busy = ChurnRun { back_to_idle: false, ..good };
        assert!(render(busy).contains("**FAIL**"));
    }
}
