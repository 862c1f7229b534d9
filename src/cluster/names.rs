//! The names of everything a cluster keeps in Redis.
//!
//! Every name carries a hash tag (`{...}`), so that on a Redis Cluster an
//! inbox lives in one slot, and the control channel and the snapshots
//! share one.

/// The names one node uses.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    cluster: String,
}

impl Names {
    pub(crate) fn new(cluster: &str) -> Self {
        Self { cluster: cluster.to_string() }
    }

    /// The inbox channel of run `incarnation` of node `node`.
    pub(crate) fn inbox(&self, node: &str, incarnation: u64) -> String {
        format!("{{cc:{}:{node}}}:{incarnation:016x}", self.cluster)
    }

    /// The channel nodes announce themselves on.
    pub(crate) fn control(&self) -> String {
        format!("{{cc:{}}}:ctl", self.cluster)
    }

    /// The hash holding node `node`'s interest (its snapshot).
    pub(crate) fn snapshot(&self, node: &str) -> String {
        format!("{{cc:{}}}:node:{node}", self.cluster)
    }

    /// The set of node names that may have a snapshot.
    pub(crate) fn registry(&self) -> String {
        format!("{{cc:{}}}:nodes", self.cluster)
    }

    /// A snapshot's field for subscriptions without a group on `pattern`
    /// (`p PATTERN`) or for `group`'s members on it (`q PATTERN GROUP`).
    /// Topics and group names hold no white space, so the space parts
    /// them.
    pub(crate) fn field(pattern: &str, group: Option<&str>) -> String {
        match group {
            None => format!("p {pattern}"),
            Some(group) => format!("q {pattern} {group}"),
        }
    }

    /// What [`Self::field`] made; `None` for the meta field or anything
    /// else.
    pub(crate) fn parse_field(field: &str) -> Option<(&str, Option<&str>)> {
        if let Some(pattern) = field.strip_prefix("p ") {
            return Some((pattern, None));
        }
        let (pattern, group) = field.strip_prefix("q ")?.split_once(' ')?;
        Some((pattern, Some(group)))
    }

    /// The snapshot field holding `incarnation seq max_frame`.
    pub(crate) const META: &'static str = "meta";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_names_carry_hash_tags() {
        for (p, g) in [("a.*", None), ("a.>", Some("workers")), ("x", Some("g"))] {
            assert_eq!(Names::parse_field(&Names::field(p, g)), Some((p, g)));
        }
        assert_eq!(Names::parse_field(Names::META), None);
        let n = Names::new("prod");
        assert_eq!(n.inbox("eu-1", 255), "{cc:prod:eu-1}:00000000000000ff");
        assert_eq!(n.control(), "{cc:prod}:ctl");
        assert_eq!(n.snapshot("eu-1"), "{cc:prod}:node:eu-1");
        assert_eq!(n.registry(), "{cc:prod}:nodes");
    }
}
