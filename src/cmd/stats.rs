//! `STATS` (extension): the broker's counters, summed and per core, as JSON.

use corecast_proto::ServerFrame;

use super::{Ctx, Flow};
use crate::counters::Counters;

pub(super) fn apply(ctx: &mut Ctx<'_>, nonce: u64) -> Flow {
    let counters = Counters::collect(ctx.shard.all_counters.iter().map(|c| c.as_ref()));
    let limit = ctx.shard.cfg.max_frame as usize;
    let mut json = serde_json::to_string(&counters).unwrap_or_default();
    if json.len() + 16 > limit {
        // Many cores and a small max_frame: the totals still fit.
        json = serde_json::json!({ "total": counters.total }).to_string();
    }
    if ctx.st.push(ctx.shard, ctx.key, &ServerFrame::StatsReply { nonce, json: &json }) {
        Flow::Continue
    } else {
        Flow::Stop
    }
}
