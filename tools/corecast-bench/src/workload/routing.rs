//! The routing cases (corecast protocol 1.1 against the same features of
//! nats-server and, where it has them, Redis), as throughput runs of
//! [`super::flow`]:
//!
//! - `wildcard`: one publisher spreads its messages over 1000 topics
//!   `bench.<i>.x`; the subscribers alternate between the patterns
//!   `bench.*.x` and `bench.>`, both of which match every one of those
//!   topics, so each subscriber is owed every message. Redis subscribes
//!   with `PSUBSCRIBE` and the globs `bench.*.x` and `bench.*`: a glob's
//!   `*` matches dots too, which makes no difference for these topics.
//! - `queue`: one publisher, one topic, one queue group of members; each
//!   message is owed to exactly one member. Redis has no queue groups.
//! - `topics`: many distinct topics with one subscription each, spread over
//!   a hundred or so connections (topic `i` on connection `i % conns`, so
//!   every batch of publications reaches every connection); one publisher
//!   round-robin over all of them; the broker's RSS per subscription as
//!   well as the delivery rate.
//!
//! The fourth routing case, `request`, has its own loop: see
//! [`super::request`].

use std::sync::Arc;

use super::flow::{FlowSpec, Subscriber};
use crate::driver::Kind;

/// The two patterns the `wildcard` subscribers alternate between.
pub const WILDCARD_PATTERNS: [&str; 2] = ["bench.*.x", "bench.>"];

/// The queue group of the `queue` case.
pub const QUEUE_GROUP: &str = "bench-workers";

/// How Redis takes the `wildcard` case, for the report.
pub const REDIS_GLOB_NOTE: &str = "wildcard, redis-server: `PSUBSCRIBE` with the globs `bench.*.x` and `bench.*` (for `bench.>`); in a Redis glob `*` matches dots too (`bench.*.x` would also match `bench.a.b.x`), which makes no difference here: every topic published is `bench.<i>.x`";

/// `subs` subscribers, alternately on `bench.*.x` and `bench.>`, and one
/// publisher spreading `msgs` messages over `topics` topics `bench.<i>.x`.
pub fn wildcard(subs: usize, topics: usize, msgs: u64, size: usize) -> FlowSpec {
    let list: Arc<[String]> = (0..topics.max(1)).map(|i| format!("bench.{i}.x")).collect();
    let subscribers = (0..subs).map(|i| Subscriber::on(WILDCARD_PATTERNS[i % 2])).collect();
    let case = format!("wildcard 1->{subs} over {topics} topics {size}B");
    FlowSpec::new(("wildcard", case), vec![list], subscribers, msgs, size)
}

/// One publisher and one queue group of `members` on one topic.
pub fn queue(members: usize, msgs: u64, size: usize) -> FlowSpec {
    let topic = "bench.queue";
    let member = Subscriber { topics: vec![topic.to_owned()], group: Some(QUEUE_GROUP.into()) };
    let case = format!("queue 1->group of {members} {size}B");
    FlowSpec::new(
        ("queue", case),
        vec![Arc::from(vec![topic.to_owned()])],
        vec![member; members],
        msgs,
        size,
    )
}

/// `conns` connections with `per_conn` subscriptions each, every one to a
/// topic of its own (`bench.t.<i>`, topic `i` on connection `i % conns`),
/// and one publisher round-robin over all of them. Measures the broker's
/// RSS per subscription.
pub fn topics(conns: usize, per_conn: usize, msgs: u64, size: usize) -> FlowSpec {
    let total = conns * per_conn;
    let list: Arc<[String]> = (0..total).map(|i| format!("bench.t.{i}")).collect();
    let subscribers = (0..conns)
        .map(|c| Subscriber {
            topics: (0..per_conn).map(|k| list[k * conns + c].clone()).collect(),
            group: None,
        })
        .collect();
    let case = format!("topics {total} on {conns} conns {size}B");
    let spec = FlowSpec::new(("topics", case), vec![list], subscribers, msgs, size);
    FlowSpec { subs_memory: true, ..spec }
}

/// Why `kind` cannot run `workload`, if it cannot.
pub fn unsupported(kind: Kind, workload: &str) -> Option<&'static str> {
    match (kind, workload) {
        (Kind::Redis, "queue") => Some("Redis pub/sub has no queue groups"),
        (Kind::Redis, "request") => Some("Redis pub/sub has no queue groups and no reply-to"),
        (Kind::Nats | Kind::Redis, "scraped") => {
            Some("it has no corecast monitoring port to scrape")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::owed;

    #[test]
    fn wildcard_subscribers_are_owed_every_message() {
        let spec = wildcard(4, 1000, 5000, 64);
        assert!(spec.needs_v1_1());
        let p = spec.params();
        assert_eq!(
            (p.subscribers, p.topics, p.subscriptions, p.groups),
            (Some(4), Some(1000), None, None)
        );
        assert_eq!(spec.publishers[0][999], "bench.999.x");
        for s in &spec.subscribers {
            assert!(spec.publishers[0].iter().all(|t| owed::matches(&s.topics[0], t)));
        }
        assert_eq!(spec.subscribers[1].topics, ["bench.>"]);
        assert!(spec.case.starts_with("wildcard"));
    }

    #[test]
    fn queue_members_share_one_group() {
        let spec = queue(8, 1000, 64);
        assert!(spec.needs_v1_1());
        assert_eq!(spec.params().groups, Some(1));
        assert!(spec.subscribers.iter().all(|s| s.group.as_deref() == Some(QUEUE_GROUP)));
        assert!(unsupported(Kind::Redis, "queue").is_some());
        assert!(unsupported(Kind::Nats, "queue").is_none());
    }

    #[test]
    fn topics_are_each_subscribed_once() {
        let spec = topics(10, 30, 1000, 64);
        assert!(!spec.needs_v1_1(), "literal topics need no 1.1 session");
        assert!(spec.subs_memory);
        let p = spec.params();
        assert_eq!((p.subscribers, p.topics, p.subscriptions), (Some(10), Some(300), Some(300)));
        let mut all: Vec<&String> = spec.subscribers.iter().flat_map(|s| &s.topics).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 300);
        assert!(spec.subscribers[3].topics.iter().all(|t| {
            let i: usize = t.trim_start_matches("bench.t.").parse().expect("a number");
            i % 10 == 3
        }));
    }
}
