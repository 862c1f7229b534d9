//! `PING` from the client: a `PONG` once everything sent before took effect
//! on every core, and never ahead of an unreported `DROPPED`
//! ([`crate::mesh::barrier`]).

use super::{Ctx, Flow};
use crate::mesh::barrier;

pub(super) fn ping(ctx: &mut Ctx<'_>, nonce: u64) -> Flow {
    if ctx.slot().pongs().is_full() {
        return Flow::Stall;
    }
    barrier::owe_pong(ctx.st, ctx.key, nonce);
    if barrier::release_pongs(ctx.shard, ctx.st, ctx.key) {
        Flow::Continue
    } else {
        Flow::Stop
    }
}
