//! The JSON views: `/healthz`, `/stats`, `/connz`, `/subsz`. Each asks the
//! cores what only they know and merges the answers.

use std::{collections::HashMap, time::Duration};

use corecast_proto::topic::TopicKind;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::routes::Answer;
use crate::{
    broker::Control,
    core::{
        closed::ClosedConn,
        inspect::{ConnInfo, CoreSubs, Query, SortKey, SubMatch},
    },
};

/// How long a core has to answer a health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a core has to answer any other question.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections per `/connz` page unless asked otherwise.
const DEFAULT_LIMIT: usize = 1024;
/// Most connections per `/connz` page.
const MAX_LIMIT: usize = 10_000;
/// Topics listed in `/subsz` unless asked otherwise.
const DEFAULT_TOP: usize = 10;

pub(super) async fn health(control: &Control) -> Answer {
    let signal = control.signal();
    let reason = if signal.is_raised() {
        Some("shutting down".to_string())
    } else if signal.is_lame_duck() {
        Some("lame duck: not accepting connections".to_string())
    } else {
        control.ask(HEALTH_TIMEOUT, Query::Ping).await.err()
    };
    let cluster = control.cluster().map(|c| {
        let grace = control.config().cluster.as_ref().map_or(0, |s| s.health_grace_ms);
        (c.degraded(grace), serde_json::json!({ "connected": c.connected == 1, "peers": c.peers }))
    });
    match (reason, cluster) {
        // Cut off from Redis is not down: local clients are served, so a
        // load balancer keeps the node; the status says what is missing.
        (None, Some((Some(why), cluster))) => Answer::ok(
            &serde_json::json!({ "status": "degraded", "reason": why, "cluster": cluster }),
        ),
        (None, Some((None, cluster))) => {
            Answer::ok(&serde_json::json!({ "status": "ok", "cluster": cluster }))
        }
        (None, None) => Answer::ok(&serde_json::json!({ "status": "ok" })),
        (Some(reason), _) => Answer::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "unavailable", "reason": reason }),
        ),
    }
}

pub(super) fn stats(control: &Control) -> Answer {
    Answer::ok(&control.stats())
}

/// `/connz` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnzQuery {
    /// `open` (default) or `closed`.
    #[serde(default)]
    state: ConnState,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// Order of open connections; closed ones come newest first.
    #[serde(default)]
    sort: SortKey,
    /// `1` or `true`: list each connection's subscriptions.
    #[serde(default, deserialize_with = "flag")]
    subs: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum ConnState {
    #[default]
    Open,
    Closed,
}

/// A page of connections.
#[derive(Debug, Serialize)]
struct ConnPage<T> {
    state: ConnState,
    /// Connections in that state (closed: kept in the record).
    total: usize,
    offset: usize,
    limit: usize,
    connections: Vec<T>,
}

pub(super) async fn connz(control: &Control, q: ConnzQuery) -> Answer {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Answer::error(StatusCode::BAD_REQUEST, format!("limit must be 1..={MAX_LIMIT}"));
    }
    let page = Page { state: q.state, offset: q.offset, limit };
    match q.state {
        ConnState::Open => open_page(control, &q, page).await,
        ConnState::Closed => closed_page(control, page).await,
    }
    .unwrap_or_else(Answer::unavailable)
}

/// Which page of connections is asked for.
#[derive(Debug, Clone, Copy)]
struct Page {
    state: ConnState,
    offset: usize,
    limit: usize,
}

impl Page {
    /// The first `offset + limit` of every connection, in order.
    fn keep(self) -> usize {
        self.offset.saturating_add(self.limit)
    }

    /// The page out of `all`, sorted and cut to [`Self::keep`].
    fn answer<T: Serialize>(self, total: usize, all: Vec<T>) -> Answer {
        let Self { state, offset, limit } = self;
        let connections = all.into_iter().skip(offset).take(limit).collect();
        Answer::ok(&ConnPage { state, total, offset, limit, connections })
    }
}

async fn open_page(control: &Control, q: &ConnzQuery, page: Page) -> Result<Answer, String> {
    let (sort, subs, keep) = (q.sort, q.subs, page.keep());
    let cores =
        control.ask(ANSWER_TIMEOUT, |reply| Query::Conns { sort, keep, subs, reply }).await?;
    let mut all: Vec<ConnInfo> = cores.into_iter().flatten().collect();
    all.sort_by(|a, b| sort.compare(a, b));
    all.truncate(keep);
    let total = control.counters().total.slots_in_use as usize;
    Ok(page.answer(total, all))
}

async fn closed_page(control: &Control, page: Page) -> Result<Answer, String> {
    let keep = page.keep();
    let cores = control.ask(ANSWER_TIMEOUT, |reply| Query::Closed { keep, reply }).await?;
    let total = cores.iter().map(|(kept, _)| kept).sum();
    let mut all: Vec<ClosedConn> = cores.into_iter().flat_map(|(_, conns)| conns).collect();
    all.sort_by_key(|c| std::cmp::Reverse(c.closed_at));
    all.truncate(keep);
    Ok(page.answer(total, all))
}

/// `/subsz` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubszQuery {
    /// List the subscriptions a publish to this topic would reach.
    topic: Option<String>,
    /// Topics to list, most subscribed first.
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct SubsView {
    subscriptions: usize,
    /// Distinct topics and patterns subscribed to.
    topics: usize,
    /// A core had more distinct patterns, or receivers, than it lists
    /// (100 000 and 10 000): `topics`, `top` and `receivers` count only
    /// those listed.
    truncated: bool,
    top: Vec<TopicCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// Who a publish to `topic` would reach: every subscription listed;
    /// of those in one queue group, one member gets each message.
    #[serde(skip_serializing_if = "Option::is_none")]
    receivers: Option<Vec<SubMatch>>,
}

#[derive(Debug, Serialize)]
struct TopicCount {
    topic: String,
    subscriptions: usize,
}

pub(super) async fn subsz(control: &Control, q: SubszQuery) -> Answer {
    let top = q.limit.unwrap_or(DEFAULT_TOP);
    if top > MAX_LIMIT {
        return Answer::error(StatusCode::BAD_REQUEST, format!("limit must be 0..={MAX_LIMIT}"));
    }
    if let Some(topic) = &q.topic {
        match corecast_proto::topic::validate(topic) {
            Ok(TopicKind::Literal) => {}
            Ok(TopicKind::Wildcard) => {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    "topic must be literal, as published",
                )
            }
            Err(e) => {
                return Answer::error(StatusCode::BAD_REQUEST, format!("topic {topic:?}: {e}"))
            }
        }
    }
    let topic = q.topic.clone();
    let cores = match control
        .ask(ANSWER_TIMEOUT, |reply| Query::Subs { topic: topic.clone(), reply })
        .await
    {
        Ok(cores) => cores,
        Err(reason) => return Answer::unavailable(reason),
    };
    Answer::ok(&merge_subs(cores, top, q.topic))
}

fn merge_subs(cores: Vec<CoreSubs>, top: usize, topic: Option<String>) -> SubsView {
    let mut patterns: HashMap<String, usize> = HashMap::new();
    let (mut subscriptions, mut truncated, mut receivers) = (0, false, Vec::new());
    for core in cores {
        subscriptions += core.subscriptions;
        truncated |= core.truncated;
        receivers.extend(core.matches);
        for (pattern, n) in core.patterns {
            *patterns.entry(pattern).or_default() += n;
        }
    }
    let topics = patterns.len();
    let mut counts: Vec<TopicCount> = patterns
        .into_iter()
        .map(|(topic, subscriptions)| TopicCount { topic, subscriptions })
        .collect();
    counts
        .sort_by(|a, b| b.subscriptions.cmp(&a.subscriptions).then_with(|| a.topic.cmp(&b.topic)));
    counts.truncate(top);
    receivers.sort_by_key(|m| (m.conn, m.sub.sid));
    let receivers = topic.is_some().then_some(receivers);
    SubsView { subscriptions, topics, truncated, top: counts, topic, receivers }
}

/// `1`, `true`, `0`, `false` or nothing.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match String::deserialize(d)?.as_str() {
        "1" | "true" | "" => Ok(true),
        "0" | "false" => Ok(false),
        other => Err(serde::de::Error::custom(format!("{other:?} is not 1, true, 0 or false"))),
    }
}
