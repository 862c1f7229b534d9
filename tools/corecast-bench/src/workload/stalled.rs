//! `stalled`: one publisher, R subscribers that read as fast as they can
//! and N that subscribe and then never read, one topic (a [`FlowSpec`]
//! run). The figure is the readers' delivered/s over their delivered/s in
//! the same configuration without the stalled subscribers (the same
//! workload with N = 0, run first against its own fresh broker): what
//! holding data for clients that do not read costs the clients that do.
//! The broker cutting stalled subscribers is fine and counted apart; the
//! readers must lose nothing.
//!
//! A loopback socket that is never read takes about 4 MiB before the
//! broker's writes to it stop (the sender's buffer grows to `tcp_wmem`'s
//! maximum); until then a stalled subscriber costs the broker what a reader
//! does. `compare` sends each subscriber about 20 MiB (20 000 messages of
//! 1 KiB), so most of the run is about what the broker does with data it
//! cannot write.

use super::flow::FlowSpec;
use crate::result::{RunResult, StalledFigures};

/// The run with `stalled` stalled subscribers, and the same without them.
pub fn specs(readers: usize, stalled: usize, msgs: u64, size: usize) -> [FlowSpec; 2] {
    [FlowSpec::stalled(readers, 0, msgs, size), FlowSpec::stalled(readers, stalled, msgs, size)]
}

/// Whether `base` is the run without stalled subscribers of `run`: same
/// broker, core mode, settings, readers, messages and size.
fn is_baseline_of(base: &RunResult, run: &RunResult) -> bool {
    let (p, q) = (&base.params, &run.params);
    base.workload == "stalled"
        && base.broker == run.broker
        && base.mode == run.mode
        && base.settings == run.settings
        && p.stalled == Some(0)
        && (p.subscribers, p.msgs, p.size) == (q.subscribers, q.msgs, q.size)
}

/// Fills in the baseline figures of a `stalled` run with stalled
/// subscribers from its baseline among `earlier` (the last one if there are
/// several). No-op for other runs, or when there is no baseline.
///
/// In `compare` both cases run in rounds and `earlier` holds the merged
/// results (see [`super::flow::merge_rounds`]); the ratio there is already
/// set, by [`paired_ratio`], and stays. The baseline counts as failed if
/// any of its rounds lost messages, cut a reader or recorded an error.
pub fn attach_baseline(run: &mut RunResult, earlier: &[RunResult]) {
    if run.workload != "stalled" || run.params.stalled.unwrap_or(0) == 0 {
        return;
    }
    let Some(base) = earlier.iter().rev().find(|b| is_baseline_of(b, run)) else { return };
    let base_rate = base.flow.as_ref().map(|f| f.delivered_per_s).filter(|r| *r > 0.0);
    let rate = run.flow.as_ref().map(|f| f.delivered_per_s);
    let figures = run.stalled.get_or_insert_with(StalledFigures::default);
    figures.baseline_delivered_per_s = base_rate;
    // A ratio of paired rounds ([`paired_ratio`]) stays.
    figures.ratio = figures.ratio.or(base_rate.zip(rate).map(|(b, r)| r / b));
    figures.baseline_peak_rss_kib = base.broker_usage.as_ref().map(|u| u.peak_rss_kib);
    let unclean = base.flow.as_ref().is_some_and(|f| f.lost > 0 || f.cut > 0);
    figures.baseline_failed = !base.errors.is_empty() || base_rate.is_none() || unclean;
}

/// The ratio of runs taken in pairs, each run without stalled subscribers
/// (`base[i]`) right before its run with them (`with[i]`): the median of
/// the pairs' ratios (of an even count, the lower middle one). A machine
/// whose speed drifts during a comparison moves both runs of a pair alike,
/// where the median of each series on its own would compare runs taken
/// minutes apart. (The scraped case pairs its runs the same way.)
pub fn paired_ratio(base: &[RunResult], with: &[RunResult]) -> Option<f64> {
    paired_median(base, with, |r| r.flow.as_ref().map(|f| f.delivered_per_s))
}

/// [`paired_ratio`] of another `figure` of each run (pairs where either
/// run has none, or 0, left out).
pub fn paired_median(
    base: &[RunResult],
    with: &[RunResult],
    figure: impl Fn(&RunResult) -> Option<f64>,
) -> Option<f64> {
    let of = |r: &RunResult| figure(r).filter(|x| *x > 0.0);
    let mut ratios: Vec<f64> =
        base.iter().zip(with).filter_map(|(b, w)| Some(of(w)? / of(b)?)).collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len().checked_sub(1)? / 2).copied()
}

/// Whether `with` is the stalled case whose baseline is `base`: they run
/// in pairs ([`paired_ratio`]).
pub fn pairs_with(base: &FlowSpec, with: &FlowSpec) -> bool {
    let (p, q) = (base.params(), with.params());
    base.workload == "stalled"
        && with.workload == "stalled"
        && p.stalled == Some(0)
        && q.stalled.unwrap_or(0) > 0
        && (p.subscribers, p.msgs, p.size) == (q.subscribers, q.msgs, q.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        driver::Kind,
        result::{BrokerUsage, Flow},
    };

    fn run(kind: Kind, spec: &FlowSpec, per_s: f64, peak: u64) -> RunResult {
        let target = crate::workload::Target::for_tests(kind);
        let mut r = target.result(spec.workload, spec.case.clone(), spec.params());
        r.flow = Some(Flow { delivered_per_s: per_s, delivered: 1, ..Flow::default() });
        r.broker_usage = Some(BrokerUsage { peak_rss_kib: peak, ..BrokerUsage::default() });
        r
    }

    /// Paired rounds give the median of their own ratios, not the ratio
    /// of the two medians, which would compare runs taken apart; an
    /// attached baseline keeps it.
    #[test]
    fn paired_rounds_give_the_median_of_their_ratios() {
        let [base, with] = specs(100, 100, 1000, 64);
        assert!(pairs_with(&base, &with) && !pairs_with(&with, &base));
        assert!(!pairs_with(&base, &specs(100, 100, 2000, 64)[1]), "another message count");
        // The machine's speed drifts from round to round, and the third
        // pair's stalled run caught a slow moment: two pairs lose 5%. The
        // ratio of the two medians (2.1M / 3M) would say 0.7.
        let rates = [(4e6, 3.8e6), (2e6, 1.9e6), (3e6, 2.1e6)];
        let runs = |f: fn(&(f64, f64)) -> f64, spec| {
            rates.iter().map(|r| run(Kind::Corecast, spec, f(r), 10)).collect::<Vec<_>>()
        };
        let (bases, withs) = (runs(|r| r.0, &base), runs(|r| r.1, &with));
        let ratio = paired_ratio(&bases, &withs).expect("three pairs");
        assert!((ratio - 0.95).abs() < 1e-9, "{ratio}");
        let mut merged = withs[0].clone();
        merged.stalled = Some(StalledFigures { ratio: Some(ratio), ..StalledFigures::default() });
        attach_baseline(&mut merged, &bases[2..]);
        let s = merged.stalled.expect("figures");
        assert_eq!((s.ratio, s.baseline_delivered_per_s), (Some(ratio), Some(3e6)));
        assert_eq!(paired_ratio(&bases, &[]), None);
    }

    #[test]
    fn ratio_against_the_same_broker_without_stalled_subscribers() {
        let [base, with] = specs(100, 100, 1000, 64);
        assert_eq!(base.params().stalled, Some(0));
        assert_eq!(with.params().stalled, Some(100));
        assert_eq!(with.params().subscribers, Some(100));
        assert_ne!(base.case, with.case);
        let earlier = vec![run(Kind::Corecast, &base, 1e6, 10), run(Kind::Nats, &base, 4e5, 20)];
        let mut c = run(Kind::Corecast, &with, 9e5, 30);
        attach_baseline(&mut c, &earlier);
        let s = c.stalled.expect("figures");
        assert_eq!(s.baseline_delivered_per_s, Some(1e6));
        assert!((s.ratio.expect("ratio") - 0.9).abs() < 1e-9);
        assert_eq!(s.baseline_peak_rss_kib, Some(10));
        assert!(!s.baseline_failed);

        let mut n = run(Kind::Nats, &with, 2e5, 30);
        let mut failed = earlier[1].clone();
        failed.errors.push("3 deliveries missing".into());
        attach_baseline(&mut n, &[failed]);
        let s = n.stalled.expect("figures");
        assert!((s.ratio.expect("ratio") - 0.5).abs() < 1e-9);
        assert!(s.baseline_failed);

        // A baseline that cut a reader without recording an error failed
        // all the same.
        let mut cut = earlier[0].clone();
        cut.flow.as_mut().expect("flow").cut = 1;
        let mut c = run(Kind::Corecast, &with, 9e5, 30);
        attach_baseline(&mut c, &[cut]);
        assert!(c.stalled.expect("figures").baseline_failed);

        // No baseline of that broker: nothing attached.
        let mut r = run(Kind::Redis, &with, 2e5, 30);
        attach_baseline(&mut r, &earlier);
        assert!(r.stalled.is_none());
    }

    #[test]
    fn merged_rounds_compare_median_with_median() {
        use crate::workload::flow::merge_rounds;
        let [base, with] = specs(100, 100, 1000, 64);
        let rounds = |spec: &FlowSpec, rates: [f64; 3], peaks: [u64; 3]| {
            let rounds: Vec<RunResult> = rates
                .iter()
                .zip(peaks)
                .enumerate()
                .map(|(i, (&r, peak))| {
                    let mut r = run(Kind::Corecast, spec, r, peak);
                    (r.params.round, r.params.rounds) = (Some(i as u32 + 1), Some(3));
                    r
                })
                .collect();
            merge_rounds(&rounds).expect("three rounds")
        };
        let baseline = rounds(&base, [1e6, 2e6, 1.5e6], [10, 30, 20]);
        let fanout = run(Kind::Corecast, &FlowSpec::fanout(1, 100, 1000, 64), 5e6, 1);
        let earlier = vec![baseline.clone(), fanout];
        let mut c = rounds(&with, [1.2e6, 0.9e6, 3e6], [50, 40, 45]);
        attach_baseline(&mut c, &earlier);
        let s = c.stalled.clone().expect("figures");
        assert_eq!(s.baseline_delivered_per_s, Some(1.5e6));
        assert!((s.ratio.expect("ratio") - 0.8).abs() < 1e-9);
        assert_eq!(s.baseline_peak_rss_kib, Some(30), "the largest of the baseline's rounds");
        assert_eq!(c.broker_usage.as_ref().map(|u| u.peak_rss_kib), Some(50));
        assert!(!s.baseline_failed);

        // A loss in a baseline round that is not its median fails it.
        let mut lossy = run(Kind::Corecast, &base, 3e6, 10);
        lossy.flow.as_mut().expect("flow").lost = 5;
        lossy.errors.push("5 deliveries missing when the run ended".into());
        let clean = |r| run(Kind::Corecast, &base, r, 10);
        let baseline = merge_rounds(&[clean(1e6), clean(1.5e6), lossy]).expect("three rounds");
        let mut c = rounds(&with, [1.2e6, 0.9e6, 3e6], [50, 40, 45]);
        attach_baseline(&mut c, &[baseline]);
        assert!(c.stalled.expect("figures").baseline_failed);
    }
}
