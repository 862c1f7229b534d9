//! `HELLO`: version check, authentication, `WELCOME`.
//!
//! The credential is checked by the broker's [`Authenticator`]: at once for
//! tokens, JWTs and certificates; on the password threads for a password,
//! while the `HELLO` waits unapplied (the connection reads nothing more)
//! until the answer wakes the connection. Every failure gets the same
//! fatal `ERR auth failed`; the reason goes only to the log and the
//! counters.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use corecast_proto::{Credential, ErrorCode, Hello, ServerFrame11, Welcome, VERSION};

use super::{Ctx, Flow};
use crate::{
    auth::{
        access::Access, principal, AuthFailure, Begin, CredentialKind, Identity, Presented, ANSWER,
    },
    core::slot::{Session, TokenRules, Who},
    counters::CoreCounters,
};

/// What a password check answers, once it does, with the generation of
/// the authenticator that checked it.
pub(crate) type LoginAnswer = (u64, Result<Identity, AuthFailure>);

/// Where the login stands.
enum Login {
    Done(Result<Identity, AuthFailure>),
    /// A password check is under way; the connection is woken when done.
    Waiting,
    /// The password threads have too many checks waiting.
    Busy,
    /// The client's address has as many checks under way as it may; the
    /// `HELLO` is tried again after a pause.
    Later,
}

/// The pause before a `HELLO` put off for its address's checks under way
/// is tried again.
const RETRY_LOGIN: Duration = Duration::from_millis(10);

/// Opens the session. A `HELLO` with the 1.1 bit is granted 1.1 (and its
/// no-echo bit honoured); without it the `WELCOME` is the version 1 one,
/// flags 0, byte for byte. `typed`: the token field holds a typed
/// credential (1.1 only).
pub(super) fn apply(
    ctx: &mut Ctx<'_>,
    hello: Hello<'_>,
    (v1_1, no_echo, typed): (bool, bool, bool),
) -> Flow {
    if hello.version != VERSION {
        let text =
            format!("version {} is not supported; this server speaks {VERSION}", hello.version);
        return ctx.fail(ErrorCode::UnsupportedVersion, &text);
    }
    let identity = match login(ctx, &hello, typed) {
        Login::Done(Ok(identity)) => {
            ctx.slot().forget_credential_at_upgrade();
            identity
        }
        Login::Done(Err(failure)) => return refuse(ctx, &failure),
        Login::Waiting => return Flow::Stall,
        Login::Later => return Flow::Wait(Instant::now() + RETRY_LOGIN),
        Login::Busy => {
            return ctx.fail(ErrorCode::ServerFull, "too many logins at once; try again")
        }
    };
    let access = match access_for(ctx, &identity) {
        Ok(access) => access,
        Err(flow) => return flow,
    };
    let cfg = ctx.shard.cfg();
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
    let who = who(ctx, &identity, cfg.jwt.as_ref().map_or(0, |j| j.leeway_ms));
    let slot = ctx.slot();
    slot.open(Session { v1_1, no_echo: v1_1 && no_echo }, hello.name);
    slot.identify(who);
    if let Some(access) = access {
        slot.authorize(access);
    }
    tracing::debug!(
        conn = slot.id(),
        peer = %slot.peer(),
        name = hello.name,
        user = identity.user().unwrap_or(""),
        credential = %identity.kind(),
        "session open"
    );
    CoreCounters::add(&ctx.shard.counters.connections_open, 1);
    Flow::Continue
}

/// Checks the credential, or picks up the answer of a password check
/// started by an earlier attempt at this `HELLO`.
fn login(ctx: &mut Ctx<'_>, hello: &Hello<'_>, typed: bool) -> Login {
    let auth = ctx.shard.auth();
    if let Some(pending) = ctx.slot().login() {
        let Some((generation, answer)) = pending.take(ctx.waker) else { return Login::Waiting };
        ctx.slot().end_login();
        // Checked against users a reload has replaced since: check again.
        if generation == auth.generation() {
            return Login::Done(answer);
        }
    }
    // A HELLO without a credential of its own uses the one its web
    // request carried, if any.
    let upgrade = (!typed && hello.token.is_empty())
        .then(|| ctx.slot().credential_at_upgrade().map(Box::<[u8]>::from))
        .flatten();
    let presented = match (&upgrade, typed) {
        (Some(credential), _) => presented(credential),
        (None, true) => presented(hello.token),
        (None, false) => Presented::Token(hello.token),
    };
    let slot = ctx.slot();
    let (peer, subject) = (slot.peer().ip(), slot.tls_subject().map(str::to_owned));
    match auth.begin(presented, peer, subject.as_deref(), unix_now()) {
        Begin::Done(answer) => Login::Done(answer),
        Begin::Later => Login::Later,
        Begin::Verify(job) => {
            let generation = auth.generation();
            match ctx.shard.logins.verifier.submit(move || (generation, job.run()), ctx.waker) {
                Ok(pending) => {
                    ctx.slot().start_login(pending);
                    Login::Waiting
                }
                Err(_) => Login::Busy,
            }
        }
    }
}

/// The typed credential of a `HELLO` with the credential flag.
fn presented(token: &[u8]) -> Presented<'_> {
    match Credential::parse(token) {
        Some(Credential::Password { user, password }) => Presented::Password { user, password },
        Some(Credential::Bearer(token)) => Presented::Bearer(token),
        Some(Credential::Jwt(token)) => Presented::Jwt(token),
        None => Presented::Malformed,
    }
}

/// The same answer whatever failed; the reason goes to the log.
fn refuse(ctx: &mut Ctx<'_>, failure: &AuthFailure) -> Flow {
    let counters = &ctx.shard.counters;
    CoreCounters::add(&counters.auth_failures, 1);
    if matches!(failure, AuthFailure::Throttled) {
        CoreCounters::add(&counters.auth_throttled, 1);
    }
    let slot = ctx.slot();
    tracing::info!(conn = slot.id(), peer = %slot.peer(), reason = %failure, "auth failed");
    ctx.fail(ErrorCode::AuthFailed, ANSWER)
}

/// What the connection may do, counted against its user's
/// `max_connections`; `None` when everything is allowed without limits
/// (the connection then pays for no check at all).
fn access_for(ctx: &mut Ctx<'_>, identity: &Identity) -> Result<Option<Box<Access>>, Flow> {
    let (rules, limits) = (identity.permissions(), identity.limits());
    let lease = match (identity.user_name(), limits.max_connections) {
        (Some(user), Some(max)) => match ctx.shard.logins.census.enter(user, Some(max)) {
            Some(lease) => Some(lease),
            None => {
                CoreCounters::add(&ctx.shard.counters.user_connection_refusals, 1);
                let text = format!("user {user} has its max_connections ({max}) open");
                return Err(ctx.fail(ErrorCode::ServerFull, &text));
            }
        },
        _ => None,
    };
    let limited = limits.max_subscriptions.is_some()
        || limits.publish_msgs_per_sec.is_some()
        || limits.publish_bytes_per_sec.is_some();
    if rules.is_allow_all() && rules.allow_responses().is_none() && !limited && lease.is_none() {
        return Ok(None);
    }
    let grant = ctx.shard.grants.borrow_mut().grant(rules, limits);
    let tag = principal(identity.user());
    Ok(Some(Box::new(Access::new(grant, (lease, tag), Instant::now()))))
}

/// Who the session is: the identity, what vouched for it, and when its
/// credential stops being good (a JWT's `exp`, with the same leeway the
/// login allowed).
fn who(ctx: &Ctx<'_>, identity: &Identity, leeway_ms: u64) -> Who {
    let expires = identity.expires_unix().map(|exp| {
        let left = exp.saturating_sub(unix_now()).saturating_mul(1000).saturating_add(leeway_ms);
        Instant::now() + Duration::from_millis(left)
    });
    let auth = ctx.shard.auth();
    let (user, credential) = (identity.user(), identity.kind());
    let configured = user.is_some_and(|u| auth.rules_of(u).is_some());
    let token_rules = match credential {
        CredentialKind::Jwt if !configured => {
            if Arc::ptr_eq(identity.permissions(), &auth.default_rules()) {
                TokenRules::Default
            } else {
                TokenRules::Claim(Arc::clone(identity.permissions()))
            }
        }
        _ => TokenRules::None,
    };
    Who {
        user: identity.user_name().cloned(),
        credential,
        expires,
        voucher: auth.voucher(user, credential).unwrap_or(0),
        configured,
        token_rules,
        principal: principal(user),
    }
}

/// Seconds since the Unix epoch, for JWT times and the failure throttle.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
