//! The subscription lifecycle: a connection subscribes, unsubscribes, or
//! leaves with every subscription. The core's interest in a pattern (a
//! topic, possibly with wildcards) follows: the other cores are told when
//! the first local subscription to a pattern arrives and when the last one
//! goes, and what they tell this core is recorded here too.

use std::rc::Rc;

use super::topics::{Change, LocalSub};
use crate::{
    core::{
        shard::{Shard, State},
        slot::SlotSub,
    },
    counters::CoreCounters,
    mesh::{record::Record, staging::Outbound},
};

/// Adds subscription `sid` of connection `key` to `topic`, telling the
/// other cores when the topic is new to this core. The caller has checked
/// that `sid` is free and within the connection's limit.
pub(crate) fn subscribe(
    shard: &Shard,
    st: &mut State,
    key: usize,
    sid: u32,
    topic: &str,
    lossy: bool,
) {
    let hmsg = st.slots[key].session().v1_1;
    let local = LocalSub { key, sid, lossy, hmsg };
    let change = st.routes.topics.add_local(topic, None, local);
    tell_peers(&mut st.outbound, topic, change);
    st.slots[key].add_sub(sid, SlotSub { topic: Rc::from(topic), lossy, dropped: 0 });
    CoreCounters::add(&shard.counters.subscriptions, 1);
}

/// Removes subscription `sid` of connection `key`; returns it (with its
/// unreported drops), or `None` when there is no such subscription.
pub(crate) fn unsubscribe(shard: &Shard, st: &mut State, key: usize, sid: u32) -> Option<SlotSub> {
    let sub = st.slots[key].remove_sub(sid)?;
    forget(shard, st, key, sid, &sub.topic);
    Some(sub)
}

/// Removes every subscription of connection `key`, which is leaving.
pub(crate) fn unsubscribe_all(shard: &Shard, st: &mut State, key: usize) {
    let subs = st.slots[key].take_subs();
    for (sid, sub) in subs {
        forget(shard, st, key, sid, &sub.topic);
    }
}

/// Takes one subscription out of the topic table, telling the other cores
/// when it was this core's last one for the topic.
fn forget(shard: &Shard, st: &mut State, key: usize, sid: u32, topic: &str) {
    let change = st.routes.topics.remove_local(topic, None, key, sid);
    tell_peers(&mut st.outbound, topic, change);
    CoreCounters::sub(&shard.counters.subscriptions, 1);
}

/// Stages the interest record a change calls for, if any, for every other
/// core.
fn tell_peers(outbound: &mut Outbound, topic: &str, change: Change) {
    let record = match change {
        Change::Plain(true) => Record::InterestAdd { topic },
        Change::Plain(false) => Record::InterestRemove { topic },
        Change::Members(_) | Change::Quiet => return,
    };
    outbound.stage_all(record);
}

/// Records what core `from` said about its interest in `topic`, a
/// pattern.
pub(crate) fn peer_interest(st: &mut State, from: usize, topic: &str, interested: bool) {
    st.routes.topics.set_remote(topic, from, interested);
}
