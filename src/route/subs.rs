//! The subscription lifecycle: a connection subscribes, unsubscribes, or
//! leaves with every subscription. The core's interest in a pattern (a
//! topic, possibly with wildcards) follows: the other cores are told when
//! the first local subscription without a queue group to a pattern arrives
//! and when the last one goes, and how many members each queue group has
//! here on the pattern whenever that changes. What they tell this core is
//! recorded here too.

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

/// Adds subscription `sid` of connection `key` to `topic`, a member of
/// queue group `queue` if given, telling the other cores what changes for
/// them. The caller has checked that `sid` is free and within the
/// connection's limit, and the topic and group name.
pub(crate) fn subscribe(
    shard: &Shard,
    st: &mut State,
    key: usize,
    sid: u32,
    topic: &str,
    queue: Option<&str>,
    lossy: bool,
) {
    let slot = &st.slots[key];
    let hmsg = slot.session().v1_1;
    let guarded = slot.access().is_some_and(|a| a.grant().overlaps_deny(topic));
    let local = LocalSub { key, sid, lossy, hmsg };
    let change = st.routes.topics.add_local(topic, queue, local);
    tell_peers(&mut st.outbound, topic, queue, change);
    let sub =
        SlotSub { topic: Rc::from(topic), queue: queue.map(Rc::from), lossy, dropped: 0, guarded };
    st.slots[key].add_sub(sid, sub);
    CoreCounters::add(&shard.counters.subscriptions, 1);
}

/// Removes subscription `sid` of connection `key`; returns it (with its
/// unreported drops), or `None` when there is no such subscription.
pub(crate) fn unsubscribe(shard: &Shard, st: &mut State, key: usize, sid: u32) -> Option<SlotSub> {
    let sub = st.slots[key].remove_sub(sid)?;
    forget(shard, st, key, sid, &sub);
    Some(sub)
}

/// Removes every subscription of connection `key`, which is leaving.
pub(crate) fn unsubscribe_all(shard: &Shard, st: &mut State, key: usize) {
    let subs = st.slots[key].take_subs();
    for (sid, sub) in subs {
        forget(shard, st, key, sid, &sub);
    }
}

/// Takes one subscription out of the topic table, telling the other cores
/// what changes for them. From here on no message reaches it.
fn forget(shard: &Shard, st: &mut State, key: usize, sid: u32, sub: &SlotSub) {
    let queue = sub.queue.as_deref();
    let change = st.routes.topics.remove_local(&sub.topic, queue, key, sid);
    tell_peers(&mut st.outbound, &sub.topic, queue, change);
    CoreCounters::sub(&shard.counters.subscriptions, 1);
}

/// Stages the interest record a change calls for, if any, for every other
/// core.
fn tell_peers(outbound: &mut Outbound, topic: &str, queue: Option<&str>, change: Change) {
    let record = match (change, queue) {
        (Change::Plain(true), _) => Record::InterestAdd { topic },
        (Change::Plain(false), _) => Record::InterestRemove { topic },
        (Change::Members(members), Some(group)) => Record::QueueInterest { topic, group, members },
        (Change::Members(_), None) | (Change::Quiet, _) => return,
    };
    outbound.stage_all(record);
}

/// Records what core `from` said about its subscriptions without a queue
/// group to `topic`, a pattern.
pub(crate) fn peer_interest(st: &mut State, from: usize, topic: &str, interested: bool) {
    st.routes.topics.set_remote(topic, from, interested);
}

/// Records how many members of queue group `group` core `from` has on
/// `topic`, a pattern.
pub(crate) fn peer_members(st: &mut State, from: usize, topic: &str, group: &str, members: u32) {
    st.routes.topics.set_remote_members(topic, group, from, members);
}
