//! A reload re-checks open connections against the new users, keys and
//! rules. New connections simply log in under them; each open one keeps its
//! session while what vouched for it at login still does (the same
//! password hash, token, certificate subject, JWT keys or shared token),
//! takes the new rules and limits (a JWT subject that is no configured user
//! keeps the rules its token gave it), and loses each subscription the
//! rules no longer allow, with a non-fatal `ERR` naming its sid. A session
//! nothing vouches for any more is logged out (`ERR auth failed`).

use std::{rc::Rc, sync::Arc, time::Instant};

use corecast_proto::{ErrFrame, ErrorCode, ServerFrame};

use crate::{
    auth::{
        access::Access, grant::Grant, permissions::Compiled, Authenticator, CredentialKind,
        UserLimits, ANSWER,
    },
    core::{
        shard::{Shard, State},
        slot::{Exit, Slot, TokenRules},
    },
    counters::CoreCounters,
    route,
};

/// Re-checks every open connection of this core.
pub(crate) fn recheck_access(shard: &Shard) {
    let auth = shard.auth();
    let mut st = shard.state.borrow_mut();
    let keys: Vec<usize> =
        st.slots.iter().filter(|(_, slot)| slot.is_open()).map(|(key, _)| key).collect();
    for key in keys {
        match standing(&auth, &st.slots[key]) {
            Standing::Out => {
                let slot = &st.slots[key];
                tracing::info!(conn = slot.id(), user = ?slot.user(), "reload: logged out");
                st.leave(shard, key, Exit::Protocol(ErrorCode::AuthFailed), ANSWER);
            }
            Standing::Keep => {}
            Standing::Rules(rules, limits) => regrant(shard, &mut st, key, &rules, limits),
        }
    }
    route::reap(shard, &mut st);
}

/// What a reload means for one session.
enum Standing {
    /// Nothing vouches for it any more.
    Out,
    /// It keeps what it has: it never authenticated, and still need not.
    Keep,
    /// It stays, under these rules and limits.
    Rules(Arc<Compiled>, UserLimits),
}

fn standing(auth: &Authenticator, slot: &Slot) -> Standing {
    let who = slot.who();
    let user = who.user.as_deref();
    let no_limits = UserLimits::default();
    if auth.voucher(user, who.credential) != Some(who.voucher) {
        return Standing::Out;
    }
    match user {
        None if who.credential == CredentialKind::None => Standing::Keep,
        None => Standing::Rules(auth.default_rules(), no_limits),
        Some(user) => match (auth.rules_of(user), &who.token_rules) {
            (Some((rules, limits)), _) => Standing::Rules(rules, limits),
            (None, _) if who.configured => Standing::Out,
            (None, TokenRules::Claim(rules)) => Standing::Rules(Arc::clone(rules), no_limits),
            (None, TokenRules::Default) => Standing::Rules(auth.default_rules(), no_limits),
            (None, TokenRules::None) => Standing::Out,
        },
    }
}

/// Puts `rules` and `limits` in force on connection `key`, revoking the
/// subscriptions they no longer allow.
fn regrant(shard: &Shard, st: &mut State, key: usize, rules: &Arc<Compiled>, limits: UserLimits) {
    let slot = &st.slots[key];
    let same = slot
        .access()
        .is_some_and(|a| Arc::ptr_eq(a.grant().rules(), rules) && a.grant().limits() == limits);
    if same || (slot.access().is_none() && rules.is_allow_all() && limits == UserLimits::default())
    {
        return;
    }
    let tag = slot.who().principal;
    // Counted, not refused: it is open already, over a new limit or not.
    let census = &shard.logins.census;
    let lease = || match (slot.user(), limits.max_connections) {
        (Some(user), Some(_)) => census.enter(user, None),
        _ => None,
    };
    let lease = lease();
    let grant = shard.grants.borrow_mut().grant(rules, limits);
    revoke_denied(shard, st, key, &grant);
    let slot = &mut st.slots[key];
    match slot.access_mut() {
        Some(access) => {
            access.regrant(Rc::clone(&grant));
            access.count_with(|| lease);
        }
        None => {
            let access = Access::new(Rc::clone(&grant), (lease, tag), Instant::now());
            slot.authorize(Box::new(access));
        }
    }
    slot.reguard(|pattern| grant.overlaps_deny(pattern));
}

/// Removes the subscriptions `grant` no longer allows, telling the client
/// which.
fn revoke_denied(shard: &Shard, st: &mut State, key: usize, grant: &Grant) {
    let denied: Vec<(u32, String)> = st.slots[key]
        .subscriptions()
        .filter(|(_, sub)| !grant.may_subscribe(&sub.topic))
        .map(|(sid, sub)| (sid, sub.topic.to_string()))
        .collect();
    for (sid, topic) in denied {
        route::subs::unsubscribe(shard, st, key, sid);
        CoreCounters::add(&shard.counters.subscriptions_revoked, 1);
        let text = format!("permission denied: subscription {sid} to {topic} revoked");
        let frame = ServerFrame::Err(ErrFrame {
            code: ErrorCode::PermissionDenied.as_u16(),
            fatal: false,
            text: &text,
        });
        if !st.push(shard, key, &frame) {
            return;
        }
    }
}
