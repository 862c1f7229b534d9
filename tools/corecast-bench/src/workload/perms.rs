//! `perms`: what users and permissions cost corecast's fan-out. The same
//! fan-out 1->1000 runs against corecast without users (arm A, its shipped
//! defaults) and with [`USERS`] users in its config file (arm B), each
//! with 10 publish and 10 subscribe rules (allow and deny, with
//! wildcards); every bench connection logs in as the first user with its
//! bearer token in `HELLO`'s (untyped) token field.
//!
//! Two shapes: subscribers on the literal topic `bench.fanout` (the
//! subscription is checked once, at `SUB`), and on the wildcard
//! `bench.*`, which the user's subscribe rules allow but which overlaps
//! two of their deny rules (`bench.private`, `bench.secret`), so that
//! corecast checks every delivery of it (answered from its per-topic
//! cache). The arms run interleaved, A B A B ..., each run against a
//! freshly started broker; the figure of each arm is the median round.

use std::{fmt::Write as _, sync::Arc};

use super::flow::{FlowSpec, Subscriber};
use crate::result::RunResult;

/// Users in the config file of arm B.
pub const USERS: usize = 10;

/// Publish rules of every user: 6 allow, 4 deny. The fan-out publishes to
/// `bench.fanout`, which the first allow rule names and no deny rule
/// covers.
pub const PUBLISH_ALLOW: [&str; 6] =
    ["bench.fanout", "bench.pair.*", "bench.stalled", "bench.*.x", "svc.>", "bench.>"];
/// See [`PUBLISH_ALLOW`].
pub const PUBLISH_DENY: [&str; 4] =
    ["bench.private", "bench.secret", "bench.admin.>", "bench.*.internal"];
/// Subscribe rules of every user: 5 allow, 5 deny. `bench.private` and
/// `bench.secret` overlap the wildcard `bench.*`.
pub const SUBSCRIBE_ALLOW: [&str; 5] =
    ["bench.fanout", "bench.*", "bench.pair.*", "_inbox.>", "bench.>"];
/// See [`SUBSCRIBE_ALLOW`].
pub const SUBSCRIBE_DENY: [&str; 5] =
    ["bench.private", "bench.secret", "bench.admin.>", "bench.*.internal", "svc.>"];

/// The bearer token of user `i`.
pub fn token(i: usize) -> String {
    format!("corecast-bench-token-{i}")
}

/// The token every bench connection of arm B sends.
pub fn bench_token() -> Arc<str> {
    Arc::from(token(0))
}

/// SHA-256 of `token` in lower-case hex, as `token_sha256` wants it.
pub fn token_sha256(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The users section of arm B's config file.
pub fn users_config() -> String {
    let mut text = String::new();
    for i in 0..USERS {
        let _ = write!(
            text,
            "[[users]]\nname = \"bench-{i}\"\ntoken_sha256 = \"{}\"\n\
             [users.permissions.publish]\nallow = {}\ndeny = {}\n\
             [users.permissions.subscribe]\nallow = {}\ndeny = {}\n\n",
            token_sha256(&token(i)),
            toml_list(&PUBLISH_ALLOW),
            toml_list(&PUBLISH_DENY),
            toml_list(&SUBSCRIBE_ALLOW),
            toml_list(&SUBSCRIBE_DENY),
        );
    }
    text
}

/// The two shapes: fan-out 1->`subs` with the subscribers on the literal
/// topic, and on `bench.*` (the same topic published, a protocol 1.1
/// session for the wildcard).
pub fn specs(subs: usize, msgs: u64, size: usize) -> [FlowSpec; 2] {
    let literal = FlowSpec::fanout(1, subs, msgs, size);
    let mut wildcard = FlowSpec::fanout(1, subs, msgs, size);
    wildcard.subscribers = vec![Subscriber::on("bench.*"); subs];
    wildcard.case = format!("fanout 1->{subs} {size}B sub bench.*");
    [literal, wildcard]
}

/// The median of `values` (the lower middle of an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().checked_sub(1)? / 2).copied()
}

/// The median delivered/s of `runs` (a run that measured nothing counts
/// as 0).
pub fn median_rate(runs: &[RunResult]) -> Option<f64> {
    median(runs.iter().map(|r| r.flow.as_ref().map_or(0.0, |f| f.delivered_per_s)).collect())
}

/// The broker's CPU per delivery of a run, ns.
pub fn cpu_per_delivery_ns(r: &RunResult) -> Option<f64> {
    let delivered = r.flow.as_ref()?.delivered;
    let cpu = r.broker_usage.as_ref()?.cpu_s;
    (delivered > 0).then(|| cpu * 1e9 / delivered as f64)
}

/// What the notes say of one shape: each arm's median delivered/s and
/// their ratio, the median of the rounds' own ratios (B over the A just
/// before it), and each arm's median broker CPU per delivery.
pub fn summary(no_users: &[RunResult], users: &[RunResult]) -> Option<String> {
    let (a, b) = (median_rate(no_users)?, median_rate(users)?);
    let rate = |r: &RunResult| r.flow.as_ref().map(|f| f.delivered_per_s);
    let pairs: Vec<f64> = no_users
        .iter()
        .zip(users)
        .filter_map(|(a, b)| Some(rate(b)? / rate(a).filter(|a| *a > 0.0)?))
        .collect();
    let cpu = |runs: &[RunResult]| median(runs.iter().filter_map(cpu_per_delivery_ns).collect());
    let cpu = match (cpu(no_users), cpu(users)) {
        (Some(a), Some(b)) => format!(
            "; broker CPU per delivery {a:.1} ns without users and {b:.1} ns with (×{:.3})",
            b / a.max(1e-9)
        ),
        _ => String::new(),
    };
    Some(format!(
        "median delivered/s without users {} and with users {} (ratio {:.3}); median of the {} rounds' own ratios {:.3} ({}){cpu}",
        crate::report::si(a),
        crate::report::si(b),
        b / a.max(1e-9),
        pairs.len(),
        median(pairs.clone()).unwrap_or(f64::NAN),
        pairs.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_has_ten_rules_each_way() {
        assert_eq!(PUBLISH_ALLOW.len() + PUBLISH_DENY.len(), 10);
        assert_eq!(SUBSCRIBE_ALLOW.len() + SUBSCRIBE_DENY.len(), 10);
        let text = users_config();
        assert_eq!(text.matches("[[users]]").count(), USERS);
        assert!(text.contains(&token_sha256(&token(0))));
        // The known SHA-256 of "abc".
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_summary_gives_medians_round_ratios_and_cpu() {
        let target = crate::workload::Target::for_tests(crate::driver::Kind::Corecast);
        let run = |per_s: f64, cpu_s: f64| {
            let mut r = target.result("fanout", "fanout 1->1000 64B".into(), Default::default());
            r.flow = Some(crate::result::Flow {
                delivered_per_s: per_s,
                delivered: 1_000_000,
                ..Default::default()
            });
            r.broker_usage = Some(crate::result::BrokerUsage { cpu_s, ..Default::default() });
            r
        };
        let a = [run(10e6, 0.04), run(8e6, 0.05), run(12e6, 0.03)];
        let b = [run(9e6, 0.05), run(8e6, 0.05), run(12e6, 0.04)];
        let text = summary(&a, &b).expect("a summary");
        assert!(
            text.starts_with(
                "median delivered/s without users 10.00M and with users 9.00M (ratio 0.900)"
            ),
            "{text}"
        );
        assert!(
            text.contains("median of the 3 rounds' own ratios 1.000 (0.900, 1.000, 1.000)"),
            "{text}"
        );
        assert!(text.ends_with("40.0 ns without users and 50.0 ns with (×1.250)"), "{text}");
        assert!(summary(&[], &b).is_none());
    }

    #[test]
    fn the_wildcard_overlaps_deny_rules_and_the_topic_is_allowed() {
        let [literal, wildcard] = specs(1000, 10, 64);
        assert!(!literal.needs_v1_1() && wildcard.needs_v1_1());
        assert_eq!(literal.publishers, wildcard.publishers);
        assert_eq!(wildcard.expected(&[10]), 10_000, "bench.* gets every bench.fanout");
        assert!(
            SUBSCRIBE_DENY
                .iter()
                .filter(|d| d.starts_with("bench.") && d.split('.').count() == 2)
                .count()
                >= 2
        );
        assert!(
            !PUBLISH_DENY.contains(&"bench.fanout") && !SUBSCRIBE_DENY.contains(&"bench.fanout")
        );
        assert!(wildcard.case.starts_with("fanout"));
    }
}
