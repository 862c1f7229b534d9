//! `STATS` (extension): the broker's counters, summed and per core, and the
//! answering core's connections with the most output queued, as JSON.

use corecast_proto::ServerFrame;
use serde_json::json;

use super::{Ctx, Flow};
use crate::{core::shard::State, counters::Counters};

/// Connections listed in `connections`: the ones with the most queued.
const LISTED: usize = 16;

pub(super) fn apply(ctx: &mut Ctx<'_>, nonce: u64) -> Flow {
    let counters = Counters::collect(ctx.shard.all_counters.iter().map(|c| c.as_ref()));
    let limit = ctx.shard.cfg().max_frame as usize;
    let doc = json!({
        "total": counters.total,
        "per_core": counters.per_core,
        "connections": most_pending(ctx.st, ctx.shard.core),
    });
    let mut json = doc.to_string();
    if json.len() + 16 > limit {
        // Many cores and a small max_frame: the totals still fit.
        json = json!({ "total": counters.total }).to_string();
    }
    if ctx.st.push(ctx.shard, ctx.key, &ServerFrame::StatsReply { nonce, json: &json }) {
        Flow::Continue
    } else {
        Flow::Stop
    }
}

/// This core's connections with output queued, most first.
fn most_pending(st: &State, core: usize) -> serde_json::Value {
    let mut queued: Vec<_> = st.slots.iter().filter(|(_, s)| !s.out().is_empty()).collect();
    queued.sort_unstable_by_key(|(_, s)| std::cmp::Reverse(s.out().len()));
    queued
        .into_iter()
        .take(LISTED)
        .map(|(_, s)| {
            json!({
                "id": s.id(),
                "core": core,
                "peer": s.peer().to_string(),
                "pending_bytes": s.out().len(),
                "held_bytes": s.held(),
            })
        })
        .collect()
}
