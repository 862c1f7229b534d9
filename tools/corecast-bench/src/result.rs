//! One run's outcome: written as one JSON line, read back for reports.

use std::{fs::OpenOptions, io::Write, path::Path};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::{driver::Kind, hist::Summary};

/// The outcome of one workload against one broker. Fields that do not
/// apply to the workload are left out of the JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Which broker.
    pub broker: Kind,
    /// `fanout`, `pairs`, `stalled`, `scraped`, `latency`, `conns`,
    /// `churn`, `wildcard`, `queue`, `request` or `topics`.
    pub workload: String,
    /// Short human name of the case, e.g. `fanout 1->10 64B`.
    pub case: String,
    /// Core mode of a `compare` run (`one` or `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Broker settings of a `compare` run: `defaults` (as shipped) or
    /// `tuned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    /// The parameters.
    pub params: Params,
    /// Wall seconds of the measured part.
    pub seconds: f64,
    /// Throughput figures (fanout, pairs; stalled: its reading
    /// subscribers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    /// The stalled subscribers of a `stalled` run, and the readers against
    /// their rate without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<StalledFigures>,
    /// The scraper of a `scraped` run with one (corecast's monitoring
    /// port), and the fan-out against its rate without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape: Option<ScrapeFigures>,
    /// Latency figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFigures>,
    /// Idle-connection memory figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conns: Option<ConnsFigures>,
    /// Connect/abort churn figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnFigures>,
    /// Broker memory per subscription (`topics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subs_memory: Option<SubsMemory>,
    /// Request/reply round trips (`request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestFigures>,
    /// Connection set-ups (`handshakes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshakes: Option<HandshakeFigures>,
    /// The broker process, when its pid is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_usage: Option<BrokerUsage>,
    /// The other processes of the system under test ([`Target::others`]:
    /// a cluster's nodes and its Redis), in their order there.
    ///
    /// [`Target::others`]: crate::workload::Target::others
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others_usage: Vec<ProcCpu>,
    /// The bench process itself.
    pub bench_usage: BenchUsage,
    /// corecast's summed counters after the run (via `STATS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters_after: Option<serde_json::Value>,
    /// Problems seen (disconnects, broker errors, timeouts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// What was asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Params {
    /// Publisher connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishers: Option<usize>,
    /// Subscriber connections (that read; see `stalled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<usize>,
    /// Subscriber connections that subscribe and then never read
    /// (`stalled` runs; 0 in the run without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<usize>,
    /// Messages per publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgs: Option<u64>,
    /// Payload bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// Messages per second (latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Seconds (latency, churn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Idle connections (conns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conns: Option<usize>,
    /// Load threads (churn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Distinct topics the publishers spread their messages over, when a
    /// publisher has more than one (wildcard, topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<usize>,
    /// Subscriptions over all subscriber connections, when a connection
    /// holds more than one (topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<usize>,
    /// Milliseconds between two scrapes of corecast's monitoring port
    /// (`scraped`; 0 in the run without a scraper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_ms: Option<u64>,
    /// Queue groups the subscribers form (queue, request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// Requester connections, each with one request outstanding at a
    /// time (request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requesters: Option<usize>,
    /// Responder connections, members of one queue group (request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responders: Option<usize>,
    /// Rounds that were merged into this result in `compare`, each against
    /// a freshly started broker. Latency: rounds of `duration_s` each,
    /// percentiles over all rounds' samples. Throughput: the round with the
    /// median delivered/s, with the most any round lost, cut, duplicated,
    /// skipped or saw dropped, every round's errors and the largest peak
    /// RSS of any round (see `workload::flow::merge_rounds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u32>,
    /// Which of those rounds this is (1-based), on the per-round lines of
    /// `rounds.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
}

/// Throughput and correctness of a fan-out or pairs run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Flow {
    /// Messages published per second, until the publishers' flush returned.
    pub published_per_s: f64,
    /// Messages delivered per second, over all subscribers, until the last
    /// one arrived.
    pub delivered_per_s: f64,
    /// Messages published.
    pub published: u64,
    /// Deliveries owed: each subscriber, each message actually published to
    /// its topic (a publisher that failed or hit the deadline owes only what
    /// it sent).
    pub expected: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// `expected - delivered`: deliveries owed to the subscribers that
    /// never arrived, whether the broker dropped them or cut the subscriber.
    pub lost: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Jumps forward in a publisher's sequence seen by a subscriber.
    pub gaps: u64,
    /// Messages the broker reported dropped (`DROPPED`).
    pub broker_dropped: u64,
    /// Subscribers whose connection the broker ended during the run (an
    /// error frame such as corecast `ERR 9 slow consumer`, end of stream or
    /// reset), before or after they had everything.
    #[serde(alias = "disconnected")]
    pub cut: usize,
}

/// What happened to the subscribers of a `stalled` run that never read,
/// and how the readers fared against the same run without them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StalledFigures {
    /// Subscribers that subscribed and then never read.
    pub stalled: usize,
    /// Of those, the ones whose connection the broker had closed by the end
    /// of the run (expected of a broker that bounds what it holds; not a
    /// loss of the readers).
    pub stalled_cut: usize,
    /// The readers' delivered/s in the same configuration without stalled
    /// subscribers (`compare` fills it in from that run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_delivered_per_s: Option<f64>,
    /// The readers' delivered/s here over `baseline_delivered_per_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// The broker's peak RSS in the run without stalled subscribers, KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_peak_rss_kib: Option<u64>,
    /// Whether the run without stalled subscribers lost messages, cut a
    /// reader or failed (then the ratio is not a clean figure).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub baseline_failed: bool,
}

/// What the scraper of a `scraped` run did: every `interval_ms` it GETs
/// each of `paths` from corecast's monitoring port, each path on its own
/// schedule (a thread each), so that a slow answer on one path does not
/// thin out the GETs of the other.
/// In `compare`'s merged result (see `workload::flow::merge_rounds`) the
/// counts, bytes, milliseconds and CPU seconds add up over every round and
/// `max_ms` is the largest of any round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrapeFigures {
    /// Time from one scrape to the next, ms.
    pub interval_ms: u64,
    /// Scrapes done: the GETs of the path that had the fewest.
    pub scrapes: u64,
    /// Each path's GETs.
    pub paths: Vec<PathFigures>,
    /// GETs answered with a status other than 200, over all paths.
    pub non_200: u64,
    /// GETs that got no answer (refused, reset, timed out), over all paths.
    pub failed: u64,
    /// The first non-200 answer or failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_problem: Option<String>,
    /// Open connections `/connz` counted (`total`) in its first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connz_total: Option<u64>,
    /// Connections that first `/connz` answer listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connz_listed: Option<u64>,
    /// CPU seconds of the bench's scraper threads (taken from the load
    /// generator's CPUs).
    pub scraper_cpu_s: f64,
    /// The fan-out's delivered/s in the same configuration without the
    /// scraper (`compare` fills it in from that run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_delivered_per_s: Option<f64>,
    /// Delivered/s here over `baseline_delivered_per_s`; in `compare`, the
    /// median of the paired rounds' ratios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// The broker's CPU seconds per delivery here over the same in the
    /// run without the scraper (what serving the scrapes cost the broker,
    /// whether or not it slowed delivery); in `compare`, the median of the
    /// paired rounds' ratios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_cpu_ratio: Option<f64>,
    /// Whether the run without the scraper lost messages, cut a
    /// subscriber or failed (then the ratio is not a clean figure).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub baseline_failed: bool,
}

/// The GETs of one path of a scraper.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathFigures {
    /// The path and query, e.g. `/connz?limit=1024`.
    pub path: String,
    /// GETs sent.
    pub gets: u64,
    /// Of those, answered 200.
    pub ok: u64,
    /// Answered with another status.
    pub non_200: u64,
    /// No answer.
    pub failed: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Milliseconds from sending a GET to its whole body, added up.
    pub total_ms: f64,
    /// The slowest GET, ms.
    pub max_ms: f64,
    /// GETs sent late, because the one before took longer than the
    /// interval (the scraper then goes on from there, with no burst to
    /// catch up).
    #[serde(default)]
    pub late: u64,
}

/// Latency of a paced run, from three clocks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyFigures {
    /// Messages sent after the warm-up.
    pub sent: u64,
    /// Messages received after the warm-up.
    pub received: u64,
    /// Send rate achieved, messages/s.
    pub achieved_rate: f64,
    /// Receive time minus actual send time: the headline figure.
    pub latency: Summary,
    /// Receive time minus intended (scheduled) send time.
    pub from_intended: Summary,
    /// Actual minus intended send time: the publisher's own lateness.
    pub publisher_lateness: Summary,
}

/// Broker memory for idle subscribed connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnsFigures {
    /// Connections opened with their subscription confirmed.
    pub opened: usize,
    /// Broker RSS before, KiB.
    pub rss_before_kib: u64,
    /// Broker RSS with every connection open and idle, once settled, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / opened, bytes.
    pub rss_per_conn_bytes: f64,
    /// The bench's `RLIMIT_NOFILE` soft limit before and during the run.
    pub nofile_before: u64,
    /// See `nofile_before`.
    pub nofile_during: u64,
    /// RSS samples (KiB, every 0.5 s) from the moment the last connection
    /// was confirmed until it settled; the last one is `rss_after_kib`.
    #[serde(default)]
    pub rss_samples_kib: Vec<u64>,
    /// Broker CPU, in cores, over `IDLE_WINDOW` (in `workload::conns`) once
    /// settled, with every connection open and silent: non-zero means it
    /// polls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_cpu_cores: Option<f64>,
}

/// Broker memory per subscription: RSS with every subscriber connection
/// open and nothing subscribed, against RSS with every subscription
/// confirmed and settled.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubsMemory {
    /// Subscriptions confirmed.
    pub subscriptions: usize,
    /// Broker RSS with the connections open, before any subscription, KiB.
    pub rss_before_kib: u64,
    /// Broker RSS with every subscription confirmed, once settled, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / subscriptions, bytes.
    pub rss_per_sub_bytes: f64,
    /// RSS samples (KiB, every 0.5 s) from the last confirmation until
    /// settled; the last one is `rss_after_kib`.
    #[serde(default)]
    pub rss_samples_kib: Vec<u64>,
}

/// Request/reply: requesters each waiting for the reply to one request at
/// a time, responders in one queue group answering to the reply-to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestFigures {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered by the matching reply.
    pub answered: u64,
    /// Answered requests per second over the measured part.
    pub round_trips_per_s: f64,
    /// Request sent to its reply received.
    pub round_trip: Summary,
    /// Requests without a reply within the per-request timeout (the
    /// requester went on with its next one).
    pub timed_out: u64,
    /// Requests the broker answered with `NO_RESPONDERS` (corecast).
    pub no_responders: u64,
    /// Requests still unanswered when the run ended (at its deadline).
    pub unanswered: u64,
    /// Replies that matched no outstanding request (late, duplicated or
    /// foreign).
    pub stray_replies: u64,
    /// Requests each responder answered, fewest and most: how evenly the
    /// queue group spread them.
    pub per_responder_min: u64,
    /// See `per_responder_min`.
    pub per_responder_max: u64,
}

/// Connect/subscribe/abort churn.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnFigures {
    /// Complete connect + subscribe + confirm + abort cycles.
    pub cycles: u64,
    /// Cycles per second.
    pub connects_per_s: f64,
    /// Cycles that failed (first error in `errors`).
    pub failures: u64,
    /// Broker RSS before, KiB.
    pub rss_before_kib: u64,
    /// Broker RSS after the run, once it settled (see `conns`), KiB.
    pub rss_after_kib: u64,
    /// rss_after / rss_before.
    pub rss_ratio: f64,
    /// corecast gauges before (slots_in_use, buffers_out, tasks_alive,
    /// subscriptions), with only the bench's stats connection open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gauges_before: Option<serde_json::Value>,
    /// The same gauges after the run settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gauges_after: Option<serde_json::Value>,
    /// Whether every gauge came back to its value before the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_to_idle: Option<bool>,
}

/// Connection set-ups: connect, the TLS handshake (when TLS is on), the
/// protocol's greeting and its answer, close.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HandshakeFigures {
    /// Set-ups completed.
    pub handshakes: u64,
    /// Set-ups per second.
    pub per_s: f64,
    /// Set-ups that failed (the first error in `errors`).
    pub failures: u64,
    /// Whether the connections spoke TLS.
    pub tls: bool,
    /// The TLS version and cipher suite the first connection negotiated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_session: Option<String>,
    /// Broker CPU per completed set-up, µs (when its pid is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_cpu_us: Option<f64>,
}

/// The broker's CPU and memory during the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BrokerUsage {
    /// Its pid.
    pub pid: u32,
    /// User + system CPU seconds spent during the run.
    pub cpu_s: f64,
    /// cpu_s over the run's measured seconds (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Peak RSS of the process (`VmHWM`), KiB: the peak of this run when the
    /// broker was started for it.
    pub peak_rss_kib: u64,
    /// RSS at the end of the run, KiB.
    pub rss_kib: u64,
}

/// One more process's CPU during the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcCpu {
    /// Its pid.
    pub pid: u32,
    /// User + system CPU seconds spent during the run (NaN, written as
    /// null, when `/proc` could not be read).
    pub cpu_s: f64,
}

/// The load generator's own CPU use, to spot a saturated generator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchUsage {
    /// User + system CPU seconds of the bench during the run.
    pub cpu_s: f64,
    /// CPUs the bench was allowed to use.
    pub cpus: usize,
    /// cpu_s / (measured seconds x cpus): 1.0 = every allowed CPU saturated.
    pub utilization: f64,
    /// CPU used during the run by everything but the bench and the broker
    /// (other processes on the machine), in cores: noise in the figures.
    /// `None` when the machine's or the broker's CPU time could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others_cores: Option<f64>,
}

impl RunResult {
    /// The JSON line of this result.
    pub fn to_line(&self) -> anyhow::Result<String> {
        serde_json::to_string(self).context("serialize result")
    }

    /// Prints the JSON line and appends it to `file`, if given.
    pub fn emit(&self, file: Option<&Path>) -> anyhow::Result<()> {
        let line = self.to_line()?;
        println!("{line}");
        if let Some(path) = file {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create {}", dir.display()))?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("open {}", path.display()))?;
            writeln!(f, "{line}").with_context(|| format!("append to {}", path.display()))?;
        }
        Ok(())
    }
}

/// Reads every result of a JSON-lines file.
pub fn read_results(path: &Path) -> anyhow::Result<Vec<RunResult>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}
