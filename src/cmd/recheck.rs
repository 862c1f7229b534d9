//! A reload re-checks open connections against the new users and rules.
//! New connections simply log in under them; open ones keep their
//! session, take the new rules and limits, and lose each subscription the
//! rules no longer allow, with a non-fatal `ERR` naming its sid. A user
//! no longer configured is logged out (`ERR auth failed`), but for a JWT
//! subject outside the configuration, whose rules came with its token.

use std::{rc::Rc, sync::Arc, time::Instant};

use corecast_proto::{ErrFrame, ErrorCode, ServerFrame};

use crate::{
    auth::{access::Access, grant::Grant, principal, Authenticator, CredentialKind, ANSWER},
    core::{
        shard::{Shard, State},
        slot::Exit,
    },
    counters::CoreCounters,
    route,
};

/// Re-checks every open connection of this core that has a user.
pub(crate) fn recheck_access(shard: &Shard) {
    let auth = shard.auth();
    let mut st = shard.state.borrow_mut();
    let keys: Vec<usize> = st
        .slots
        .iter()
        .filter(|(_, slot)| slot.is_open() && slot.user().is_some())
        .map(|(key, _)| key)
        .collect();
    for key in keys {
        recheck(shard, &mut st, &auth, key);
    }
    route::reap(shard, &mut st);
}

fn recheck(shard: &Shard, st: &mut State, auth: &Authenticator, key: usize) {
    let slot = &st.slots[key];
    let Some(user) = slot.user().cloned() else { return };
    let Some((rules, limits)) = auth.rules_of(&user) else {
        if slot.credential() != CredentialKind::Jwt {
            tracing::info!(conn = slot.id(), %user, "reload: user removed; connection closed");
            st.leave(shard, key, Exit::Protocol(ErrorCode::AuthFailed), ANSWER);
        }
        return;
    };
    let same = slot
        .access()
        .is_some_and(|a| Arc::ptr_eq(a.grant().rules(), &rules) && a.grant().limits() == limits);
    if same {
        return;
    }
    let grant = shard.grants.borrow_mut().grant(Some(Arc::clone(&user)), &rules, limits);
    revoke_denied(shard, st, key, &grant);
    let slot = &mut st.slots[key];
    match slot.access_mut() {
        Some(access) => access.regrant(Rc::clone(&grant)),
        None => {
            let principal = principal(Some(&user));
            let access = Access::new(Rc::clone(&grant), (None, principal), Instant::now());
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
