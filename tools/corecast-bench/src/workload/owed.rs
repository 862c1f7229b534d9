//! What a throughput run owes its subscribers: which published topics a
//! subscription matches, and how many messages reach a set of
//! subscriptions when each publisher spreads its messages round-robin over
//! its topics.

use std::collections::{HashMap, HashSet};

use crate::driver::Subscription;

/// Whether `subscription` (a topic, or a pattern in NATS and corecast 1.1
/// syntax) matches the published `topic`: `*` is one token, `>` (last) one
/// or more.
pub fn matches(subscription: &str, topic: &str) -> bool {
    let mut topic_tokens = topic.split('.');
    for token in subscription.split('.') {
        match (token, topic_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (literal, Some(t)) if literal == t => {}
            _ => return false,
        }
    }
    topic_tokens.next().is_none()
}

/// Messages sent to each topic when publisher `i` sent `sent[i]` messages
/// round-robin over `topics[i]` (message `seq` to `topics[i][seq % len]`).
pub fn per_topic<'a, T: AsRef<[String]>>(topics: &'a [T], sent: &[u64]) -> HashMap<&'a str, u64> {
    let mut counts = HashMap::new();
    for (list, &n) in topics.iter().zip(sent) {
        let list = list.as_ref();
        let len = list.len().max(1) as u64;
        for (j, topic) in list.iter().enumerate() {
            let share = n / len + u64::from((j as u64) < n % len);
            *counts.entry(topic.as_str()).or_insert(0) += share;
        }
    }
    counts
}

/// Messages among `counts` that reach a holder of `subscriptions` (a
/// connection, or the members of a queue group together): each message
/// once, however many of the subscriptions match it.
pub fn reaching(counts: &HashMap<&str, u64>, subscriptions: &[&str]) -> u64 {
    if subscriptions.iter().any(|s| Subscription::plain(s).is_pattern()) {
        return counts
            .iter()
            .filter(|(topic, _)| subscriptions.iter().any(|s| matches(s, topic)))
            .map(|(_, n)| n)
            .sum();
    }
    let distinct: HashSet<&str> = subscriptions.iter().copied().collect();
    distinct.iter().filter_map(|s| counts.get(s)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_nats() {
        let cases = [
            ("orders.*", "orders.eu", true),
            ("orders.*", "orders", false),
            ("orders.*", "orders.eu.42", false),
            ("orders.*.paid", "orders.eu.paid", true),
            ("orders.*.paid", "orders.eu.42.paid", false),
            ("orders.>", "orders.eu.42", true),
            ("orders.>", "orders", false),
            ("*.eu.>", "x.eu.y.z", true),
            ("*.eu.>", "orders.eu", false),
            (">", "a", true),
            ("*", "a.b", false),
            ("a.b", "a.b", true),
            ("a.b", "a.bc", false),
            ("a.b", "a", false),
        ];
        for (pattern, topic, want) in cases {
            assert_eq!(matches(pattern, topic), want, "{pattern} vs {topic}");
        }
    }

    #[test]
    fn round_robin_shares_and_what_reaches_a_holder() {
        let topics: Vec<Vec<String>> =
            vec![(0..4).map(|i| format!("bench.{i}.x")).collect(), vec!["bench.0.x".into()]];
        let counts = per_topic(&topics, &[10, 5]);
        // 10 over 4 topics: 3, 3, 2, 2; and 5 more to bench.0.x.
        assert_eq!(counts["bench.0.x"], 8);
        assert_eq!(counts["bench.1.x"], 3);
        assert_eq!(counts["bench.3.x"], 2);
        assert_eq!(reaching(&counts, &["bench.*.x"]), 15);
        assert_eq!(reaching(&counts, &["bench.>", "bench.*.x"]), 15, "each message once");
        assert_eq!(reaching(&counts, &["bench.1.x", "bench.1.x", "nothing"]), 3);
        assert_eq!(reaching(&counts, &["bench.1.x", "bench.2.x"]), 5);
        assert_eq!(reaching(&counts, &[]), 0);
    }
}
