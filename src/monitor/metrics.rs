//! `/metrics`: every counter and gauge of every core, labelled `core`, and
//! their sum (`core="all"`), with the distributions as histograms, in the
//! Prometheus text format written by `prometheus-client`.
//!
//! Names follow Prometheus conventions: the `corecast_` prefix, `_total`
//! on counters, `_bytes` on sizes. A counter of `STATS` named `bytes_in`
//! is `corecast_in_bytes_total`; `msgs_in` is `corecast_msgs_in_total`.

use std::time::Duration;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::{gauge::ConstGauge, info::Info, MetricType},
    registry::{Registry, Unit},
};

use super::routes::Answer;
use crate::{
    broker::Control,
    cluster::ClusterSnapshot,
    core::inspect::Query,
    counters::{Counters, HistogramSnapshot, Kind},
};

/// How long a core has to count its connections' queued bytes.
const PENDING_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn scrape(control: &Control) -> Answer {
    // Without a core's answer the rest is still worth a scrape.
    let pending = control.ask(PENDING_TIMEOUT, Query::Pending).await.ok();
    let scrape = Scrape {
        counters: control.counters(),
        cluster: control.cluster(),
        write_bytes: control.histograms(|h| h.write_bytes.snapshot()),
        fanout: control.histograms(|h| h.fanout.snapshot()),
        pending,
    };
    let mut registry = Registry::with_prefix("corecast");
    let version = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
    registry.register("build", "The broker's version", version);
    let uptime = ConstGauge::new(control.uptime().as_secs_f64());
    registry.register_with_unit("uptime", "Time since the broker started", Unit::Seconds, uptime);
    let lame_duck = ConstGauge::new(i64::from(control.signal().is_lame_duck()));
    registry.register("lame_duck", "1 while in lame duck mode", lame_duck);
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        Ok(()) => Answer::Metrics(text),
        Err(_) => Answer::unavailable("cannot encode the metrics"),
    }
}

/// What one scrape shows, read once.
#[derive(Debug)]
struct Scrape {
    counters: Counters,
    /// The cluster bridge's counters, when the node is in a cluster.
    cluster: Option<ClusterSnapshot>,
    write_bytes: Vec<HistogramSnapshot>,
    fanout: Vec<HistogramSnapshot>,
    /// Queued bytes per connection, per core; none when a core did not answer.
    pending: Option<Vec<HistogramSnapshot>>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let total = self.counters.total.described();
        let per_core: Vec<_> = self.counters.per_core.iter().map(|s| s.described()).collect();
        for (i, field) in total.iter().enumerate() {
            let (name, unit) = metric_name(field.name);
            let kind = metric_type(field.kind);
            let mut family =
                encoder.encode_descriptor(&name, &field.help(), unit.as_ref(), kind)?;
            let values = per_core.iter().map(|core| core[i].value).chain([field.value]);
            for (core, value) in labels(per_core.len()).iter().zip(values) {
                let label = [("core", core.as_str())];
                encode_value(family.encode_family(&label)?, kind, value)?;
            }
        }
        if let Some(cluster) = &self.cluster {
            for field in cluster.described() {
                let (name, unit) = metric_name(field.name);
                let kind = metric_type(field.kind);
                let name = format!("cluster_{name}");
                let mut family =
                    encoder.encode_descriptor(&name, &field.help(), unit.as_ref(), kind)?;
                let none: [(&str, &str); 0] = [];
                encode_value(family.encode_family(&none)?, kind, field.value)?;
            }
        }
        let write_help = "Bytes written to a client by one sendmsg";
        histogram(&mut encoder, "write_size", write_help, Some(Unit::Bytes), &self.write_bytes)?;
        let fanout_help = "Subscribers on a core that one published message reached";
        histogram(&mut encoder, "fanout_subscribers", fanout_help, None, &self.fanout)?;
        if let Some(pending) = &self.pending {
            let help = "Bytes queued for a connection, over the connections at the scrape";
            histogram(&mut encoder, "connection_pending", help, Some(Unit::Bytes), pending)?;
        }
        Ok(())
    }
}

/// One histogram family: a series per core and their sum.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    per_core: &[HistogramSnapshot],
) -> Result<(), std::fmt::Error> {
    let Some(first) = per_core.first() else { return Ok(()) };
    let mut total = HistogramSnapshot::empty(first.bounds);
    per_core.iter().for_each(|h| total.add(h));
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Histogram)?;
    for (core, h) in labels(per_core.len()).iter().zip(per_core.iter().chain([&total])) {
        let buckets: Vec<(f64, u64)> =
            h.bounds.iter().zip(&h.counts).map(|(&bound, &n)| (bound as f64, n)).collect();
        let label = [("core", core.as_str())];
        family.encode_family(&label)?.encode_histogram::<NoLabelSet>(
            h.sum as f64,
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

/// `"0"`, `"1"`, … for each core, then `"all"` for the sum.
fn labels(cores: usize) -> Vec<String> {
    (0..cores).map(|c| c.to_string()).chain(["all".to_string()]).collect()
}

fn metric_type(kind: Kind) -> MetricType {
    match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
    }
}

fn encode_value(
    mut sample: prometheus_client::encoding::MetricEncoder<'_>,
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => sample.encode_counter::<NoLabelSet, _, u64>(&value, None),
        _ => sample.encode_gauge(&(value as i64)),
    }
}

/// The metric's name without prefix and suffixes, and its unit: sizes in
/// bytes carry the unit at the end, as Prometheus wants.
fn metric_name(field: &str) -> (String, Option<Unit>) {
    if let Some(rest) = field.strip_prefix("bytes_") {
        (rest.to_string(), Some(Unit::Bytes))
    } else if let Some(rest) = field.strip_suffix("_bytes") {
        (rest.to_string(), Some(Unit::Bytes))
    } else if field.starts_with("memory_") {
        (field.to_string(), Some(Unit::Bytes))
    } else {
        (field.to_string(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_carry_the_bytes_unit_last() {
        assert_eq!(metric_name("bytes_in"), ("in".into(), Some(Unit::Bytes)));
        assert_eq!(metric_name("pending_bytes"), ("pending".into(), Some(Unit::Bytes)));
        assert_eq!(metric_name("memory_used"), ("memory_used".into(), Some(Unit::Bytes)));
        assert_eq!(metric_name("msgs_in"), ("msgs_in".into(), None));
    }
}
