//! One core: its slots, its topic table, its staging for the other cores,
//! and the ways a connection leaves.

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
    sync::Arc,
    task::{Poll, Waker},
    time::Instant,
};

use corecast_proto::{ErrorCode, ServerFrame, GOAWAY_SHUTDOWN};
use glommio::sync::Gate;
use slab::Slab;

use crate::{
    buffer::{BufferPool, ReadBuf, WriteBuf},
    config::Config,
    counters::CoreCounters,
    mesh::{Outbound, Record},
    slot::{Exit, Phase, Slot},
    topics::Topics,
};

/// The state of one core that its tasks share. Borrowed only in short,
/// synchronous stretches: never across an `.await` or a `spawn_local`.
#[derive(Debug)]
pub(crate) struct State {
    pub slots: Slab<Slot>,
    pub topics: Topics,
    pub outbound: Outbound,
    read_pool: BufferPool,
    write_pool: BufferPool,
    /// Slots found too slow during one delivery; emptied right after it.
    pub doomed: Vec<usize>,
    /// Slots whose `PONG`s wait for the barrier in flight.
    pub barrier_waiters: Vec<usize>,
    /// Fan-out scratch: the message encoded once, the burst so far.
    pub fanout: crate::fanout::Fanout,
    next_conn: u64,
    next_ping: u64,
}

/// One core of the broker.
#[derive(Debug)]
pub(crate) struct Shard {
    pub core: usize,
    pub cfg: Arc<Config>,
    pub counters: Arc<CoreCounters>,
    /// Every core's counters, for `STATS`.
    pub all_counters: Arc<[Arc<CoreCounters>]>,
    pub state: RefCell<State>,
    /// Raised at shutdown: connections stop reading.
    pub shutting_down: Cell<bool>,
    /// Coarse clock, advanced by the sweeper, for last-inbound stamps.
    pub clock: Cell<Instant>,
    /// Connection tasks enter here; shutdown waits for all to leave.
    pub gate: Gate,
    /// The sweeper, parked on its long idle tick; woken when a slot gets a
    /// short deadline (handshake, draining).
    sweeper: RefCell<Option<Waker>>,
    /// Set by `nudge_sweeper`, taken by the parked sweeper.
    sweeper_nudged: Cell<bool>,
}

impl Shard {
    pub(crate) fn new(
        core: usize,
        cfg: Arc<Config>,
        all_counters: Arc<[Arc<CoreCounters>]>,
    ) -> Self {
        let counters = Arc::clone(&all_counters[core]);
        let state = State {
            slots: Slab::with_capacity(cfg.max_connections),
            topics: Topics::default(),
            outbound: Outbound::new(core, cfg.cores, cfg.cross_core_batch),
            read_pool: BufferPool::new(cfg.read_buffer),
            write_pool: BufferPool::new(cfg.write_buffer),
            doomed: Vec::new(),
            barrier_waiters: Vec::new(),
            fanout: Default::default(),
            next_conn: 0,
            next_ping: 0,
        };
        Self {
            core,
            cfg,
            counters,
            all_counters,
            state: RefCell::new(state),
            shutting_down: Cell::new(false),
            clock: Cell::new(Instant::now()),
            gate: Gate::new(),
            sweeper: RefCell::new(None),
            sweeper_nudged: Cell::new(false),
        }
    }

    /// For the sweeper on its idle tick: ready once nudged, else parks.
    pub(crate) fn poll_nudge(&self, waker: &Waker) -> Poll<()> {
        if self.sweeper_nudged.take() {
            return Poll::Ready(());
        }
        *self.sweeper.borrow_mut() = Some(waker.clone());
        Poll::Pending
    }

    /// Wakes the sweeper if it is parked on its idle tick.
    pub(crate) fn nudge_sweeper(&self) {
        if let Some(w) = self.sweeper.borrow_mut().take() {
            self.sweeper_nudged.set(true);
            w.wake();
        }
    }

    /// Takes a slot and both buffers for a new connection; `None` when the
    /// core is full (all slots taken, or no memory for the buffers).
    pub(crate) fn open_slot(&self, peer: SocketAddr) -> Option<(usize, ReadBuf)> {
        let mut st = self.state.borrow_mut();
        if st.slots.len() >= self.cfg.max_connections {
            return None;
        }
        let (rbuf, new_r) = st.read_pool.take()?;
        let Some((wbuf, new_w)) = st.write_pool.take() else {
            st.read_pool.give(rbuf);
            return None;
        };
        let c = &self.counters;
        CoreCounters::add(&c.buffers_allocated, u64::from(new_r) + u64::from(new_w));
        CoreCounters::add(&c.buffers_out, 2);
        CoreCounters::add(&c.slots_in_use, 1);
        CoreCounters::add(&c.connections_accepted, 1);
        st.next_conn += 1;
        let id = (self.core as u64) << 48 | st.next_conn;
        let now = Instant::now();
        self.clock.set(now);
        let key = st.slots.insert(Slot::new(id, peer, WriteBuf::new(wbuf), now));
        self.nudge_sweeper();
        Some((key, ReadBuf::new(rbuf)))
    }

    /// Frees a slot and gives both buffers back. Leaves `Open` first if the
    /// connection had not (a panic or a cancelled task).
    pub(crate) fn free_slot(&self, key: usize, rbuf: ReadBuf) {
        let Ok(mut st) = self.state.try_borrow_mut() else {
            tracing::error!(core = self.core, key, "slot freed while state is borrowed");
            return;
        };
        if st.slots.get(key).is_some_and(|s| matches!(s.phase, Phase::Handshake | Phase::Open)) {
            st.leave(self, key, Exit::Panic, "");
        }
        let slot = st.slots.remove(key);
        st.read_pool.give(rbuf.into_inner());
        st.write_pool.give(slot.wbuf.into_inner());
        let c = &self.counters;
        CoreCounters::sub(&c.buffers_out, 2);
        CoreCounters::sub(&c.slots_in_use, 1);
    }

    /// A fresh nonce for a server `PING`.
    pub(crate) fn next_ping_nonce(st: &mut State) -> u64 {
        st.next_ping += 1;
        st.next_ping
    }
}

impl State {
    /// Moves a connection out of `Handshake` or `Open`: removes its
    /// subscriptions now, queues the final frame that `why` calls for, and
    /// either closes it or lets it drain until a deadline.
    pub(crate) fn leave(&mut self, shard: &Shard, key: usize, why: Exit, text: &str) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        let was_open = match slot.phase {
            Phase::Open => true,
            Phase::Handshake => false,
            Phase::Draining { .. } | Phase::Closed => return,
        };
        let c = &shard.counters;
        if was_open {
            CoreCounters::sub(&c.connections_open, 1);
        }
        count_exit(c, why);
        slot.pongs.clear();
        let linger = |ms: u64| Phase::Draining { until: Instant::now() + ms_duration(ms) };
        slot.phase = match why {
            Exit::Eof | Exit::Reset | Exit::Panic => Phase::Closed,
            Exit::Shutdown => {
                let grace = shard.cfg.shutdown_grace_ms;
                if was_open {
                    let grace_ms = u32::try_from(grace).unwrap_or(u32::MAX);
                    slot.wbuf.push(
                        &ServerFrame::GoAway { reason: GOAWAY_SHUTDOWN, grace_ms },
                        slot.wbuf.capacity(),
                    );
                } else {
                    slot.push_err(ErrorCode::ShuttingDown, "server is shutting down");
                }
                linger(grace)
            }
            _ => {
                let (code, default_text) = exit_error(why);
                if why == Exit::SlowConsumer {
                    slot.wbuf.drop_unstarted();
                }
                slot.push_err(code, if text.is_empty() { default_text } else { text });
                linger(shard.cfg.close_linger_ms)
            }
        };
        tracing::debug!(core = shard.core, conn = slot.id, peer = %slot.peer, ?why, "connection leaves");
        slot.notify();
        shard.nudge_sweeper();
        self.unsubscribe_all(shard, key);
    }

    /// Removes every subscription of a slot, telling other cores when this
    /// core loses interest in a topic.
    fn unsubscribe_all(&mut self, shard: &Shard, key: usize) {
        let subs = std::mem::take(&mut self.slots[key].subs);
        CoreCounters::sub(&shard.counters.subscriptions, subs.len() as u64);
        for (sid, sub) in subs {
            self.remove_subscription(key, sid, &sub.topic);
        }
    }

    /// Takes one subscription out of the topic table.
    pub(crate) fn remove_subscription(&mut self, key: usize, sid: u32, topic: &str) {
        if self.topics.remove_local(topic, key, sid) {
            self.outbound.stage_all(Record::InterestRemove { topic });
        }
    }

    /// Closes the slots a delivery found too slow.
    pub(crate) fn reap_doomed(&mut self, shard: &Shard) {
        while let Some(key) = self.doomed.pop() {
            self.leave(shard, key, Exit::SlowConsumer, "");
        }
    }

    /// Wakes connections whose `PONG`s waited for the barrier that just
    /// completed.
    pub(crate) fn wake_barrier_waiters(&mut self) {
        for key in self.barrier_waiters.drain(..) {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.awaiting_barrier = false;
                if let Some(w) = &slot.waker {
                    w.wake_by_ref();
                }
            }
        }
    }
}

fn exit_error(why: Exit) -> (ErrorCode, &'static str) {
    match why {
        Exit::Protocol(code) => (code, code.name()),
        Exit::SlowConsumer => (ErrorCode::SlowConsumer, "write buffer full: client too slow"),
        Exit::Stale => (ErrorCode::StaleConnection, "no traffic within the idle limit"),
        Exit::HandshakeTimeout => (ErrorCode::HandshakeTimeout, "no HELLO within the timeout"),
        _ => (ErrorCode::ShuttingDown, "closing"),
    }
}

fn count_exit(c: &CoreCounters, why: Exit) {
    let counter = match why {
        Exit::SlowConsumer => &c.slow_consumer_closes,
        Exit::Stale => &c.stale_closes,
        Exit::HandshakeTimeout => &c.handshake_timeouts,
        Exit::Protocol(_) => &c.protocol_errors,
        Exit::Panic => &c.task_panics,
        _ => return,
    };
    CoreCounters::add(counter, 1);
}

pub(crate) fn ms_duration(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}
