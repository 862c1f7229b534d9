//! `HELLO`: version check, authentication, `WELCOME`.

use corecast_proto::{ErrorCode, Hello, ServerFrame11, Welcome, VERSION};

use super::{Ctx, Flow};
use crate::{core::slot::Session, counters::CoreCounters};

/// Opens the session. A `HELLO` with the 1.1 bit is granted 1.1 (and its
/// no-echo bit honoured); without it the `WELCOME` is the version 1 one,
/// flags 0, byte for byte.
pub(super) fn apply(ctx: &mut Ctx<'_>, hello: Hello<'_>, v1_1: bool, no_echo: bool) -> Flow {
    if hello.version != VERSION {
        let text =
            format!("version {} is not supported; this server speaks {VERSION}", hello.version);
        return ctx.fail(ErrorCode::UnsupportedVersion, &text);
    }
    let cfg = ctx.shard.cfg();
    if let Some(token) = &cfg.auth_token {
        if !constant_time_eq(token.as_bytes(), hello.token) {
            return ctx.fail(ErrorCode::AuthFailed, "auth token missing or wrong");
        }
    }
    let welcome = Welcome {
        version: VERSION,
        max_frame: cfg.max_frame,
        ping_interval_ms: u32::try_from(cfg.ping_interval_ms).unwrap_or(u32::MAX),
        core_id: ctx.shard.core as u16,
        connection_id: ctx.slot().id(),
        server_name: &cfg.server_name,
    };
    if !ctx.st.push(ctx.shard, ctx.key, &ServerFrame11::Welcome { welcome, v1_1 }) {
        return Flow::Stop;
    }
    let slot = ctx.slot();
    slot.open(Session { v1_1, no_echo: v1_1 && no_echo }, hello.name);
    tracing::debug!(conn = slot.id(), peer = %slot.peer(), name = hello.name, "session open");
    CoreCounters::add(&ctx.shard.counters.connections_open, 1);
    Flow::Continue
}

/// Compares without an early exit, so timing does not reveal the prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
