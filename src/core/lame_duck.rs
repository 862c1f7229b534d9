//! Lame duck on one core: its listeners are closed already; after the
//! grace it sends its connections `GOAWAY` a few at a time, spread over
//! the configured duration, so they do not all reconnect elsewhere at once.

use std::{rc::Rc, time::Duration};

use glommio::timer::sleep;

use super::{
    shard::Shard,
    slot::{ms_duration, Exit},
};

/// How often eviction looks at the clock.
const TICK: Duration = Duration::from_millis(10);

fn send_away(shard: &Shard, keys: &[usize]) {
    let mut st = shard.state.borrow_mut();
    for &key in keys {
        st.leave(shard, key, Exit::LameDuck, "");
    }
}

/// Sends every connection of the core away over the lame-duck duration.
pub(super) async fn evict(shard: Rc<Shard>) {
    let cfg = shard.cfg();
    sleep(ms_duration(cfg.lame_duck_grace_ms)).await;
    let keys: Vec<usize> = {
        let st = shard.state.borrow();
        st.slots.iter().filter(|(_, slot)| slot.is_live()).map(|(key, _)| key).collect()
    };
    let spread = ms_duration(cfg.lame_duck_duration_ms).max(TICK);
    tracing::info!(
        core = shard.core,
        connections = keys.len(),
        ?spread,
        "lame duck: sending clients away"
    );
    let start = std::time::Instant::now();
    let mut sent = 0;
    while sent < keys.len() {
        let elapsed = start.elapsed().min(spread);
        // Connections due by now: an even share of the spread each, the
        // k-th of n at (k - 1) / n of it, so the last goes before the
        // spread is over (and the shutdown with it). A tick with none due
        // sends none.
        let due = (keys.len() as u128 * elapsed.as_nanos()).div_ceil(spread.as_nanos()) as usize;
        let due = due.min(keys.len());
        if due > sent {
            send_away(&shard, &keys[sent..due]);
            sent = due;
        }
        sleep(TICK).await;
    }
}
