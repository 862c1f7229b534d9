//! `scraped`: what serving corecast's monitoring port costs the data path.
//! A fan-out (one publisher, many subscribers, one topic: a [`FlowSpec`]
//! run) with a scraper that GETs each of [`PATHS`] from the broker's
//! monitoring port every [`INTERVAL`] while the messages flow (a thread
//! per path, each on its own schedule, so a slow `/connz` does not thin
//! out the `/metrics` scrapes), against the same fan-out without it. The figure is delivered/s with the scraper
//! over delivered/s without; the target is at least 0.97.
//!
//! Both paths put work on the cores: each core answers through its inbox,
//! between deliveries, with the pending-bytes histogram of its connections
//! (`/metrics`) or an entry for each of them, sorted (`/connz`); the rest
//! is done by the broker's HTTP thread. Every GET must be answered 200.
//! The scraper runs in the bench, so it takes its CPU (counted apart) from
//! the load generator's. corecast only: the other brokers have no such
//! port.
//!
//! In `compare` the two runs go in pairs, each against a fresh broker,
//! alternating which of the two runs first, and the ratio is the median of
//! the pairs' ratios ([`super::stalled::paired_ratio`]).

use std::{
    net::SocketAddr,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use nix::time::{clock_gettime, ClockId};

use super::{flow::FlowSpec, Target};
use crate::result::{PathFigures, RunResult, ScrapeFigures};

/// What the scraper GETs at each scrape, each path from a thread of its
/// own: the Prometheus text, and the first page of `/connz` at its
/// default size.
pub const PATHS: [&str; 2] = ["/metrics", "/connz?limit=1024"];
/// Time from the start of one GET of a path to the start of the next.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Longest one GET may take, its whole body included.
const GET_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest body the scraper reads.
const MAX_BODY: u64 = 64 << 20;

/// The fan-out `1 -> subs` without a scraper, and the same with one that
/// scrapes `every` so often.
pub fn specs(subs: usize, msgs: u64, size: usize, every: Duration) -> [FlowSpec; 2] {
    let spec = |scrape: Option<Duration>| {
        let what = match scrape {
            None => "no scraper".to_owned(),
            Some(d) => format!("/metrics + /connz every {} ms", d.as_millis()),
        };
        FlowSpec {
            workload: "scraped",
            case: format!("scraped 1->{subs} {size}B, {what}"),
            scrape,
            ..FlowSpec::fanout(1, subs, msgs, size)
        }
    };
    [spec(None), spec(Some(every))]
}

/// The URLs of [`PATHS`] on the monitoring port at `http`.
pub fn urls(http: SocketAddr) -> Vec<String> {
    PATHS.iter().map(|path| format!("http://{http}{path}")).collect()
}

/// Whether `with` is the scraped case whose run without a scraper is
/// `base`: they run in pairs ([`super::stalled::paired_ratio`]).
pub fn pairs_with(base: &FlowSpec, with: &FlowSpec) -> bool {
    let (p, q) = (base.params(), with.params());
    base.workload == "scraped"
        && with.workload == "scraped"
        && p.scrape_ms == Some(0)
        && q.scrape_ms.unwrap_or(0) > 0
        && (p.publishers, p.subscribers, p.msgs, p.size)
            == (q.publishers, q.subscribers, q.msgs, q.size)
}

/// Whether `base` is the run without a scraper of `run`: same broker, core
/// mode, settings and fan-out.
fn is_baseline_of(base: &RunResult, run: &RunResult) -> bool {
    let (p, q) = (&base.params, &run.params);
    base.workload == "scraped"
        && base.broker == run.broker
        && base.mode == run.mode
        && base.settings == run.settings
        && p.scrape_ms == Some(0)
        && (p.publishers, p.subscribers, p.msgs, p.size)
            == (q.publishers, q.subscribers, q.msgs, q.size)
}

/// Fills in the baseline figures of a `scraped` run with a scraper from
/// its run without one among `earlier` (the last one if there are
/// several). No-op for other runs, or when there is no baseline. A ratio
/// already set (by [`super::stalled::paired_ratio`] in `compare`) stays.
pub fn attach_baseline(run: &mut RunResult, earlier: &[RunResult]) {
    if run.workload != "scraped" || run.params.scrape_ms.unwrap_or(0) == 0 {
        return;
    }
    let Some(base) = earlier.iter().rev().find(|b| is_baseline_of(b, run)) else { return };
    let base_rate = base.flow.as_ref().map(|f| f.delivered_per_s).filter(|r| *r > 0.0);
    let rate = run.flow.as_ref().map(|f| f.delivered_per_s);
    let cpu = broker_ns_per_delivery(run).zip(broker_ns_per_delivery(base));
    let figures = run.scrape.get_or_insert_with(ScrapeFigures::default);
    figures.baseline_delivered_per_s = base_rate;
    figures.ratio = figures.ratio.or(base_rate.zip(rate).map(|(b, r)| r / b));
    figures.broker_cpu_ratio = figures.broker_cpu_ratio.or(cpu.map(|(c, b)| c / b));
    let unclean = base.flow.as_ref().is_some_and(|f| f.lost > 0 || f.cut > 0);
    figures.baseline_failed = !base.errors.is_empty() || base_rate.is_none() || unclean;
}

/// The broker's CPU nanoseconds per delivery in `run`, if it has both
/// figures.
pub fn broker_ns_per_delivery(run: &RunResult) -> Option<f64> {
    let delivered = run.flow.as_ref().map(|f| f.delivered).filter(|d| *d > 0)?;
    let cpu_s = run.broker_usage.as_ref()?.cpu_s;
    Some(cpu_s * 1e9 / delivered as f64).filter(|ns| *ns > 0.0)
}

/// Sets the paired figures of a scraped run with the scraper merged from
/// the rounds `with`, each paired with the round without it `base[i]`:
/// the medians of the pairs' delivered/s and broker CPU per delivery
/// ratios ([`super::stalled::paired_median`]). No-op for other runs.
pub fn set_paired(merged: &mut RunResult, base: &[RunResult], with: &[RunResult]) {
    let Some(figures) = merged.scrape.as_mut() else { return };
    figures.ratio = super::stalled::paired_ratio(base, with);
    figures.broker_cpu_ratio = super::stalled::paired_median(base, with, broker_ns_per_delivery);
}

/// The scraper figures of several rounds as one: counts, bytes,
/// milliseconds and CPU seconds added up, the slowest GET of any round,
/// the first problem and `/connz` count of the first round that has one.
/// `None` when no round has figures. (Also how the pollers of one round,
/// a path each, become one: see [`Scraper::stop`].)
pub fn add_up<'a>(rounds: impl IntoIterator<Item = &'a ScrapeFigures>) -> Option<ScrapeFigures> {
    let mut rounds = rounds.into_iter();
    let mut all = rounds.next()?.clone();
    for r in rounds {
        all.scrapes += r.scrapes;
        all.non_200 += r.non_200;
        all.failed += r.failed;
        all.scraper_cpu_s += r.scraper_cpu_s;
        all.first_problem = all.first_problem.take().or_else(|| r.first_problem.clone());
        if all.connz_total.is_none() {
            (all.connz_total, all.connz_listed) = (r.connz_total, r.connz_listed);
        }
        for p in &r.paths {
            match all.paths.iter_mut().find(|a| a.path == p.path) {
                Some(a) => {
                    a.gets += p.gets;
                    a.ok += p.ok;
                    a.non_200 += p.non_200;
                    a.failed += p.failed;
                    a.bytes += p.bytes;
                    a.total_ms += p.total_ms;
                    a.max_ms = a.max_ms.max(p.max_ms);
                    a.late += p.late;
                }
                None => all.paths.push(p.clone()),
            }
        }
    }
    Some(all)
}

/// A scraper: a thread per path, each GETting it at once, then once every
/// interval, until [`Scraper::stop`].
#[derive(Debug)]
pub struct Scraper {
    pollers: Vec<(mpsc::Sender<()>, thread::JoinHandle<ScrapeFigures>)>,
}

impl Scraper {
    /// Starts scraping the monitoring port of `target`, every `every`.
    pub fn start(target: &Target, every: Duration) -> anyhow::Result<Self> {
        let http = target.http.with_context(|| {
            format!(
                "{}: no monitoring port to scrape (corecast started by compare has one)",
                target.kind
            )
        })?;
        Self::start_at(http, every)
    }

    fn start_at(http: SocketAddr, every: Duration) -> anyhow::Result<Self> {
        let mut scraper = Self { pollers: Vec::new() };
        for (path, url) in PATHS.iter().zip(urls(http)) {
            let (stop, stopped) = mpsc::channel();
            let thread = thread::Builder::new()
                .name("bench-scraper".into())
                .spawn(move || poll(path, &url, every, &stopped))
                .context("start a scraper thread")?;
            // On an error, dropping `scraper` hangs up on the ones started.
            scraper.pollers.push((stop, thread));
        }
        Ok(scraper)
    }

    /// Stops once the GETs under way (if any) are done, and returns what
    /// they did; a GET not answered 200 is also an error in `errors`.
    pub fn stop(self, errors: &mut Vec<String>) -> ScrapeFigures {
        for (stop, _) in &self.pollers {
            let _ = stop.send(());
        }
        let mut polled = Vec::new();
        for (_, thread) in self.pollers {
            match thread.join() {
                Ok(figures) => polled.push(figures),
                Err(_) => errors.push("a scraper thread panicked".into()),
            }
        }
        let mut figures = add_up(&polled).unwrap_or_default();
        figures.scrapes = figures.paths.iter().map(|p| p.gets).min().unwrap_or(0);
        if figures.paths.len() < PATHS.len() {
            figures.scrapes = 0;
        }
        let gets: u64 = figures.paths.iter().map(|p| p.gets).sum();
        if figures.non_200 + figures.failed > 0 {
            errors.push(format!(
                "{} of {gets} GETs of the monitoring port not answered 200 ({} without an answer); first: {}",
                figures.non_200 + figures.failed,
                figures.failed,
                figures.first_problem.as_deref().unwrap_or("?")
            ));
        }
        figures
    }
}

/// One GET's outcome.
#[derive(Debug)]
enum Answer {
    /// A status and the body.
    Status(u16, Vec<u8>),
    /// No answer: why.
    Failed(String),
}

/// GETs `url` (of `path`), then waits until `every` after the start of
/// that GET (no wait if it took longer: the next one is late), until told
/// to stop or the sender is gone. Figures with the one path.
fn poll(path: &str, url: &str, every: Duration, stop: &mpsc::Receiver<()>) -> ScrapeFigures {
    let cpu = thread_cpu_seconds();
    // One connection, kept alive, as a scraper would.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(GET_TIMEOUT))
        .build()
        .into();
    let mut figures = ScrapeFigures {
        interval_ms: every.as_millis() as u64,
        paths: vec![PathFigures { path: path.to_owned(), ..PathFigures::default() }],
        ..ScrapeFigures::default()
    };
    let (mut due, mut late) = (Instant::now(), false);
    loop {
        let sent = Instant::now();
        let answer = get(&agent, url);
        record(&mut figures, 0, &answer, sent.elapsed());
        figures.paths[0].late += u64::from(late);
        let now = Instant::now();
        (due, late) = (next_due(due, every, now), due + every < now);
        match stop.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    figures.scraper_cpu_s = thread_cpu_seconds() - cpu;
    figures
}

/// GETs `url` and reads the whole body.
fn get(agent: &ureq::Agent, url: &str) -> Answer {
    let mut response = match agent.get(url).call() {
        Ok(r) => r,
        Err(e) => return Answer::Failed(e.to_string()),
    };
    let status = response.status().as_u16();
    match response.body_mut().with_config().limit(MAX_BODY).read_to_vec() {
        Ok(body) => Answer::Status(status, body),
        Err(e) => Answer::Failed(format!("{status}, then reading the body: {e}")),
    }
}

/// When the scrape after the one that was `due` starts: `every` later, or
/// `now` if that time has passed (a slow scrape is not made up for with a
/// burst).
fn next_due(due: Instant, every: Duration, now: Instant) -> Instant {
    (due + every).max(now)
}

/// Counts one GET of path `i` that took `took`.
fn record(figures: &mut ScrapeFigures, i: usize, answer: &Answer, took: Duration) {
    let Some(p) = figures.paths.get_mut(i) else { return };
    let ms = took.as_secs_f64() * 1e3;
    p.gets += 1;
    p.total_ms += ms;
    p.max_ms = p.max_ms.max(ms);
    let problem = match answer {
        Answer::Status(200, body) => {
            p.ok += 1;
            p.bytes += body.len() as u64;
            if p.path.starts_with("/connz") && figures.connz_total.is_none() {
                (figures.connz_total, figures.connz_listed) = connz_counts(body);
            }
            None
        }
        Answer::Status(status, body) => {
            p.non_200 += 1;
            p.bytes += body.len() as u64;
            figures.non_200 += 1;
            let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
            Some(format!("GET {} answered {status}: {}", p.path, text.trim()))
        }
        Answer::Failed(why) => {
            p.failed += 1;
            figures.failed += 1;
            Some(format!("GET {}: {why}", p.path))
        }
    };
    if figures.first_problem.is_none() {
        figures.first_problem = problem;
    }
}

/// `total` and the number of `connections` of a `/connz` page.
fn connz_counts(body: &[u8]) -> (Option<u64>, Option<u64>) {
    let Ok(page) = serde_json::from_slice::<serde_json::Value>(body) else { return (None, None) };
    let listed = page.get("connections").and_then(|c| c.as_array()).map(|c| c.len() as u64);
    (page.get("total").and_then(serde_json::Value::as_u64), listed)
}

/// CPU seconds of the calling thread so far.
fn thread_cpu_seconds() -> f64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Write},
        net::TcpListener,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::{
        driver::Kind,
        result::{BrokerUsage, Flow},
    };

    #[test]
    fn the_scraper_asks_for_metrics_and_a_page_of_connz() {
        let v4: SocketAddr = ([127, 0, 0, 1], 7422).into();
        assert_eq!(
            urls(v4),
            ["http://127.0.0.1:7422/metrics", "http://127.0.0.1:7422/connz?limit=1024"]
        );
        let v6: SocketAddr = "[::1]:9000".parse().expect("address");
        assert_eq!(urls(v6)[1], "http://[::1]:9000/connz?limit=1024");
        assert_eq!(INTERVAL, Duration::from_millis(100));
    }

    #[test]
    fn a_slow_scrape_is_not_made_up_for() {
        let t0 = Instant::now();
        let every = Duration::from_millis(100);
        assert_eq!(next_due(t0, every, t0 + Duration::from_millis(30)), t0 + every);
        let late = t0 + Duration::from_millis(250);
        assert_eq!(next_due(t0, every, late), late);
    }

    #[test]
    fn the_two_runs_pair_up() {
        let [base, with] = specs(1000, 40_000, 64, INTERVAL);
        assert_eq!((base.workload, with.workload), ("scraped", "scraped"));
        assert_eq!((base.params().scrape_ms, with.params().scrape_ms), (Some(0), Some(100)));
        assert_eq!((with.params().subscribers, with.params().publishers), (Some(1000), Some(1)));
        assert_eq!((base.scrape, with.scrape), (None, Some(INTERVAL)));
        assert!(base.case.starts_with("scraped 1->1000 64B") && base.case != with.case);
        assert!(pairs_with(&base, &with) && !pairs_with(&with, &base));
        assert!(!pairs_with(&base, &specs(1000, 20_000, 64, INTERVAL)[1]));
        assert!(!pairs_with(&FlowSpec::fanout(1, 1000, 40_000, 64), &with));
        assert_eq!(FlowSpec::fanout(1, 10, 10, 64).params().scrape_ms, None);
    }

    /// A run at `per_s` delivered/s, the broker using 1 s of CPU for
    /// 10^7 deliveries (100 ns each).
    fn run(spec: &FlowSpec, per_s: f64) -> RunResult {
        let mut r = Target::for_tests(Kind::Corecast).result(
            spec.workload,
            spec.case.clone(),
            spec.params(),
        );
        r.flow = Some(Flow { delivered_per_s: per_s, delivered: 10_000_000, ..Flow::default() });
        r.broker_usage = Some(BrokerUsage { cpu_s: 1.0, ..BrokerUsage::default() });
        r
    }

    #[test]
    fn paired_rounds_give_the_median_of_their_ratios() {
        let [base, with] = specs(1000, 40_000, 64, INTERVAL);
        // Alternating order; the machine drifts, the third pair's run
        // with the scraper caught a slow moment.
        let rates = [(10e6, 9.9e6), (12e6, 11.76e6), (11e6, 8e6), (9e6, 9.09e6), (10e6, 9.8e6)];
        let bases: Vec<_> = rates.iter().map(|r| run(&base, r.0)).collect();
        let mut withs: Vec<_> = rates.iter().map(|r| run(&with, r.1)).collect();
        // The broker's CPU per delivery: 100 ns without; 110, 120, 130,
        // 140 and 150 ns with.
        for (i, w) in withs.iter_mut().enumerate() {
            w.broker_usage.as_mut().expect("usage").cpu_s = 1.1 + 0.1 * i as f64;
        }
        let mut merged = withs[0].clone();
        merged.scrape = Some(ScrapeFigures::default());
        set_paired(&mut merged, &bases, &withs);
        let s = merged.scrape.clone().expect("figures");
        assert!((s.ratio.expect("ratio") - 0.98).abs() < 1e-9, "{s:?}");
        assert!((s.broker_cpu_ratio.expect("cpu") - 1.3).abs() < 1e-9, "{s:?}");
        assert_eq!(broker_ns_per_delivery(&bases[0]), Some(100.0));
        // A baseline attached after keeps the paired ratios.
        attach_baseline(&mut merged, &bases);
        let t = merged.scrape.expect("figures");
        assert_eq!((t.ratio, t.broker_cpu_ratio), (s.ratio, s.broker_cpu_ratio));
        assert_eq!(t.baseline_delivered_per_s, Some(10e6));
        assert!(!t.baseline_failed);
        // No-op on a run without scraper figures.
        let mut b = bases[0].clone();
        set_paired(&mut b, &bases, &withs);
        assert!(b.scrape.is_none());

        // Once, without pairs: the ratio of the two runs; a baseline that
        // lost messages fails.
        let mut lossy = run(&base, 10e6);
        lossy.flow.as_mut().expect("flow").lost = 3;
        let mut once = run(&with, 9.5e6);
        attach_baseline(&mut once, &[lossy]);
        let s = once.scrape.expect("figures");
        assert!((s.ratio.expect("ratio") - 0.95).abs() < 1e-9);
        assert_eq!(s.broker_cpu_ratio, Some(1.0));
        assert!(s.baseline_failed);
        // Nothing to attach to a run without a scraper, or without a
        // baseline.
        let mut b = run(&base, 1e6);
        attach_baseline(&mut b, &bases);
        assert!(b.scrape.is_none());
        let mut lone = run(&with, 1e6);
        attach_baseline(&mut lone, &[]);
        assert!(lone.scrape.is_none());
    }

    #[test]
    fn answers_are_counted_by_path_and_the_first_problem_kept() {
        let mut f = ScrapeFigures {
            paths: PATHS
                .iter()
                .map(|p| PathFigures { path: (*p).into(), ..Default::default() })
                .collect(),
            ..ScrapeFigures::default()
        };
        let ms = Duration::from_millis;
        record(&mut f, 0, &Answer::Status(200, b"# HELP x\n".to_vec()), ms(2));
        let page = br#"{"state":"open","total":1001,"connections":[{"id":1},{"id":2}]}"#;
        record(&mut f, 1, &Answer::Status(200, page.to_vec()), ms(8));
        record(
            &mut f,
            1,
            &Answer::Status(503, br#"{"error": "core 1 did not answer"}"#.to_vec()),
            ms(3000),
        );
        record(&mut f, 0, &Answer::Failed("connection refused".into()), ms(1));
        assert_eq!((f.connz_total, f.connz_listed), (Some(1001), Some(2)));
        assert_eq!((f.non_200, f.failed), (1, 1));
        let (m, c) = (&f.paths[0], &f.paths[1]);
        assert_eq!((m.gets, m.ok, m.failed, m.bytes), (2, 1, 1, 9));
        assert_eq!((c.gets, c.ok, c.non_200), (2, 1, 1));
        assert_eq!((c.total_ms, c.max_ms), (3008.0, 3000.0));
        assert_eq!(
            f.first_problem.as_deref(),
            Some(r#"GET /connz?limit=1024 answered 503: {"error": "core 1 did not answer"}"#)
        );

        // Two rounds add up.
        let all = add_up([&f, &f]).expect("two rounds");
        assert_eq!(
            (all.non_200, all.failed, all.paths[1].gets, all.paths[1].max_ms),
            (2, 2, 4, 3000.0)
        );
        assert_eq!(all.connz_total, Some(1001));
        assert!(add_up([]).is_none());
    }

    /// A monitoring port stand-in: answers every request on a connection
    /// (kept alive) with `answer(path)`, and logs the paths.
    fn stand_in(answer: fn(&str) -> (u16, &'static str)) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&log);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut writer = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {}
                        let (status, body) = answer(&path);
                        seen.lock().expect("log").push(path);
                        // One write: a second small one would wait for the
                        // client's delayed ACK (Nagle).
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, log)
    }

    #[test]
    fn the_scraper_gets_every_path_each_time_and_stops_when_told() {
        let (addr, log) = stand_in(|path| match path {
            "/metrics" => (200, "corecast_up 1\n"),
            "/connz?limit=1024" => (200, r#"{"total":3,"connections":[{},{},{}]}"#),
            _ => (404, "{}"),
        });
        let scraper = Scraper::start_at(addr, Duration::from_millis(20)).expect("start");
        thread::sleep(Duration::from_millis(150));
        let mut errors = Vec::new();
        let f = scraper.stop(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        // About 8; fewer on a busy machine.
        assert!((2..=9).contains(&f.scrapes), "{} scrapes in 150 ms", f.scrapes);
        assert_eq!(f.interval_ms, 20);
        let paths: Vec<&str> = f.paths.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, PATHS);
        assert!(f.paths.iter().all(|p| p.gets >= f.scrapes && p.ok == p.gets));
        assert!(f.paths.iter().any(|p| p.gets == f.scrapes));
        assert_eq!((f.non_200, f.failed, f.first_problem), (0, 0, None));
        assert_eq!((f.connz_total, f.connz_listed), (Some(3), Some(3)));
        let asked = log.lock().expect("log").clone();
        for p in &f.paths {
            assert_eq!(asked.iter().filter(|a| **a == p.path).count() as u64, p.gets);
        }
        assert_eq!(asked.len() as u64, f.paths.iter().map(|p| p.gets).sum::<u64>());
        // Stopped: nothing more is asked.
        thread::sleep(Duration::from_millis(60));
        assert_eq!(log.lock().expect("log").len(), asked.len());
    }

    #[test]
    fn a_slow_path_does_not_thin_out_the_other() {
        let (addr, _) = stand_in(|path| {
            if path.starts_with("/connz") {
                thread::sleep(Duration::from_millis(50));
            }
            (200, "{}")
        });
        let scraper = Scraper::start_at(addr, Duration::from_millis(20)).expect("start");
        thread::sleep(Duration::from_millis(250));
        let f = scraper.stop(&mut Vec::new());
        let (metrics, connz) = (&f.paths[0], &f.paths[1]);
        assert!(metrics.gets > connz.gets, "{f:?}");
        assert_eq!(f.scrapes, connz.gets);
        assert!(connz.late >= 1 && connz.late < connz.gets, "{f:?}");
        assert!(connz.max_ms >= 50.0);
    }

    #[test]
    fn an_answer_other_than_200_is_an_error() {
        let (addr, _) = stand_in(|path| match path {
            "/metrics" => (200, "corecast_up 1\n"),
            _ => (503, r#"{"error":"core 0 did not answer in 3 s"}"#),
        });
        let scraper = Scraper::start_at(addr, Duration::from_millis(20)).expect("start");
        thread::sleep(Duration::from_millis(50));
        let mut errors = Vec::new();
        let f = scraper.stop(&mut errors);
        assert_eq!((f.non_200, f.failed), (f.paths[1].gets, 0));
        assert!(f.scrapes > 0 && f.paths[0].ok == f.paths[0].gets);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("answered 503"), "{}", errors[0]);

        // Nothing listening: every GET fails.
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let scraper = Scraper::start_at(closed, Duration::from_millis(20)).expect("start");
        thread::sleep(Duration::from_millis(30));
        let f = scraper.stop(&mut errors);
        let gets: u64 = f.paths.iter().map(|p| p.gets).sum();
        assert!(f.scrapes >= 1 && f.failed == gets, "{f:?}");
        assert_eq!(errors.len(), 2);
    }
}
