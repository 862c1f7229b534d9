//! `HELLO`: version check, authentication, `WELCOME`.

use corecast_proto::{ErrorCode, Hello, ServerFrame, Welcome, VERSION};

use super::{Ctx, Flow};
use crate::counters::CoreCounters;

pub(super) fn apply(ctx: &mut Ctx<'_>, hello: Hello<'_>) -> Flow {
    if hello.version != VERSION {
        let text =
            format!("version {} is not supported; this server speaks {VERSION}", hello.version);
        return ctx.fail(ErrorCode::UnsupportedVersion, &text);
    }
    let cfg = &ctx.shard.cfg;
    if let Some(token) = &cfg.auth_token {
        if !constant_time_eq(token.as_bytes(), hello.token) {
            return ctx.fail(ErrorCode::AuthFailed, "auth token missing or wrong");
        }
    }
    let welcome = ServerFrame::Welcome(Welcome {
        version: VERSION,
        max_frame: cfg.max_frame,
        ping_interval_ms: u32::try_from(cfg.ping_interval_ms).unwrap_or(u32::MAX),
        core_id: ctx.shard.core as u16,
        connection_id: ctx.slot().id(),
        server_name: &cfg.server_name,
    });
    if !ctx.st.push(ctx.shard, ctx.key, &welcome) {
        return Flow::Stop;
    }
    let slot = ctx.slot();
    slot.open();
    tracing::debug!(conn = slot.id(), peer = %slot.peer(), name = hello.name, "session open");
    CoreCounters::add(&ctx.shard.counters.connections_open, 1);
    Flow::Continue
}

/// Compares without an early exit, so timing does not reveal the prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
