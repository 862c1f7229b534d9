//! One core: its slots, its routing state, its staging for the other cores
//! and the barrier, its memory, and the ways a connection leaves.

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
    time::Instant,
};

use glommio::sync::Gate;
use slab::Slab;

use super::{
    accept::Refusals,
    closed::{ClosedConn, ClosedRing},
    pressure::{Doomed, Policy, Queued},
    slot::{self, Deadlines, Exit, Limit, Slot, WebExit},
};
use crate::auth::{grant::Grants, Authenticator, Logins};
use crate::{
    config::Config,
    counters::CoreCounters,
    mem::{queue::Item, Memory},
    mesh::{barrier::Barrier, staging::Outbound},
    route::{self, Routes},
};

/// Bytes a connection reads at once; frames longer than this get a buffer
/// of their own ([`super::slot::LargeFrame`]).
pub(crate) const READ_SCRATCH: usize = 256 << 10;

/// The state of one core that its tasks share. Borrowed only in short,
/// synchronous stretches: never across an `.await` or a `spawn_local`.
#[derive(Debug)]
pub(crate) struct State {
    /// Every connection of this core, by key.
    pub slots: Slab<Slot>,
    /// Topic table and fan-out scratch.
    pub routes: Routes,
    /// Records waiting for the other cores.
    pub outbound: Outbound,
    /// Chunks and the budget every connection's data is charged to.
    pub mem: Memory,
    /// Where connections read into; input left over after the last whole
    /// frame moves to the connection's own chunks. Taken out while a read
    /// is applied ([`State::take_read_scratch`]).
    pub read_scratch: Vec<u8>,
    /// Slots that began leaving during a delivery; finished right after it
    /// ([`route::reap`]).
    pub doomed: Doomed,
    /// What `PONG`s wait for: effects known to have landed on every core.
    pub barrier: Barrier,
    /// The last connections that closed, for `/connz?state=closed`.
    pub closed: ClosedRing,
    next_conn: u64,
    next_ping: u64,
}

/// One core of the broker.
#[derive(Debug)]
pub(crate) struct Shard {
    pub core: usize,
    /// The settings in force; a reload replaces them.
    cfg: RefCell<Rc<Config>>,
    /// Who may connect and what they may do; a reload replaces it.
    auth: RefCell<Arc<Authenticator>>,
    /// Each user's open connections and the password threads, shared by
    /// the cores.
    pub logins: Arc<Logins>,
    /// This core's users' rules, with their cached answers.
    pub grants: RefCell<Grants>,
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
    /// Connections refused for a full core, for the log.
    pub refusals: Refusals,
    /// The sweeper, parked on its long idle tick; woken when a slot gets a
    /// short deadline (handshake, draining).
    sweeper: RefCell<Option<Waker>>,
    /// Set by `nudge_sweeper`, taken by the parked sweeper.
    sweeper_nudged: Cell<bool>,
    /// What new connections on the TLS port are served with; a reload
    /// replaces it (open connections keep theirs).
    tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    /// Where TLS connections read ciphertext into; allocated with the
    /// first TLS read, so a core without TLS never holds it.
    tls_scratch: RefCell<Vec<u8>>,
    /// The raw bytes of one read of a web-port connection (plaintext, past
    /// TLS when the port has it); allocated with the first.
    web_scratch: RefCell<Vec<u8>>,
}

impl Shard {
    /// A core's state; `None` when its memory cannot be reserved.
    pub(crate) fn new(
        core: usize,
        cfg: Arc<Config>,
        all_counters: Arc<[Arc<CoreCounters>]>,
        (auth, logins): (Arc<Authenticator>, Arc<Logins>),
    ) -> Option<Self> {
        let counters = Arc::clone(&all_counters[core]);
        let reserve = cfg.max_connections + 64;
        let mem = Memory::new(cfg.pending_budget, reserve, cfg.max_pending, Arc::clone(&counters))?;
        let state = State {
            slots: Slab::new(),
            routes: Routes::default(),
            outbound: Outbound::new(core, cfg.mesh_size(), cfg.cross_core_batch),
            mem,
            read_scratch: vec![0; READ_SCRATCH],
            doomed: Vec::new(),
            barrier: Barrier::default(),
            closed: ClosedRing::new(cfg.closed_connections.div_ceil(cfg.cores)),
            next_conn: 0,
            next_ping: 0,
        };
        Some(Self {
            core,
            cfg: RefCell::new(Rc::new(Config::clone(&cfg))),
            auth: RefCell::new(auth),
            logins,
            grants: RefCell::default(),
            counters,
            all_counters,
            state: RefCell::new(state),
            shutting_down: Cell::new(false),
            clock: Cell::new(Instant::now()),
            gate: Gate::new(),
            refusals: Refusals::default(),
            sweeper: RefCell::new(None),
            sweeper_nudged: Cell::new(false),
            tls: RefCell::new(None),
            tls_scratch: RefCell::new(Vec::new()),
            web_scratch: RefCell::new(Vec::new()),
        })
    }

    /// What a new TLS connection is served with, if the broker serves TLS.
    pub(crate) fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.borrow().clone()
    }

    /// Serves new TLS connections with `config` (a reload's certificate).
    pub(crate) fn set_tls_config(&self, config: Arc<rustls::ServerConfig>) {
        *self.tls.borrow_mut() = Some(config);
    }

    /// The core's ciphertext scratch, for one TLS read; never borrowed
    /// across an await.
    pub(crate) fn tls_scratch(&self) -> std::cell::RefMut<'_, Vec<u8>> {
        let mut scratch = self.tls_scratch.borrow_mut();
        if scratch.is_empty() {
            scratch.resize(crate::tls::session::CIPHER_SCRATCH, 0);
        }
        scratch
    }

    /// The core's scratch for a web connection's raw bytes, for one read;
    /// never borrowed across an await.
    pub(crate) fn web_scratch(&self) -> std::cell::RefMut<'_, Vec<u8>> {
        let mut scratch = self.web_scratch.borrow_mut();
        if scratch.is_empty() {
            scratch.resize(crate::web::WEB_SCRATCH, 0);
        }
        scratch
    }

    /// The settings in force.
    pub(crate) fn cfg(&self) -> Rc<Config> {
        Rc::clone(&self.cfg.borrow())
    }

    /// Puts reloaded settings in force: new limits apply to the next
    /// frame, connection or sweep.
    pub(crate) fn set_cfg(&self, cfg: Config) {
        self.state.borrow_mut().mem.set_max_pending(cfg.max_pending);
        *self.cfg.borrow_mut() = Rc::new(cfg);
        self.nudge_sweeper();
    }

    /// The authenticator in force.
    pub(crate) fn auth(&self) -> Arc<Authenticator> {
        Arc::clone(&self.auth.borrow())
    }

    /// Puts a reloaded authenticator in force for the next `HELLO`.
    pub(crate) fn set_auth(&self, auth: Arc<Authenticator>) {
        *self.auth.borrow_mut() = auth;
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

    /// Takes a slot for a new connection; `None` when the core is full.
    /// The slot holds no memory until data flows.
    pub(crate) fn open_slot(&self, peer: SocketAddr) -> Option<usize> {
        let mut st = self.state.borrow_mut();
        if st.slots.len() >= self.cfg().max_connections {
            return None;
        }
        let c = &self.counters;
        CoreCounters::add(&c.slots_in_use, 1);
        CoreCounters::add(&c.connections_accepted, 1);
        st.next_conn += 1;
        let id = (self.core as u64) << 48 | st.next_conn;
        let now = Instant::now();
        self.clock.set(now);
        let key = st.slots.insert(Slot::new(id, peer, now));
        self.nudge_sweeper();
        Some(key)
    }

    /// Frees a slot and everything it holds. Leaves `Open` first if the
    /// connection had not (a panic or a cancelled task).
    pub(crate) fn free_slot(&self, key: usize) {
        let Ok(mut st) = self.state.try_borrow_mut() else {
            tracing::error!(core = self.core, key, "slot freed while state is borrowed");
            return;
        };
        if st.slots.get(key).is_some_and(Slot::is_live) {
            st.leave(self, key, Exit::Panic, "");
        }
        let State { slots, mem, closed, .. } = &mut *st;
        let mut slot = slots.remove(key);
        slot.release(mem);
        closed.record(ClosedConn::of(&slot, self.core));
        CoreCounters::sub(&self.counters.slots_in_use, 1);
    }

    /// The settings a connection needs to begin leaving.
    pub(crate) fn deadlines(&self) -> Deadlines {
        let cfg = self.cfg();
        Deadlines { grace_ms: cfg.shutdown_grace_ms, linger_ms: cfg.close_linger_ms }
    }

    /// A fresh nonce for a server `PING`.
    pub(crate) fn next_ping_nonce(st: &mut State) -> u64 {
        st.next_ping += 1;
        st.next_ping
    }
}

impl State {
    /// The read scratch, taken out while a read is applied; give it back
    /// by assigning `read_scratch`. A scratch a panicking task never gave
    /// back is made anew, so one caught panic leaves the core reading.
    pub(crate) fn take_read_scratch(&mut self) -> Vec<u8> {
        let scratch = std::mem::take(&mut self.read_scratch);
        if scratch.len() == READ_SCRATCH {
            return scratch;
        }
        tracing::warn!("the read scratch was lost to a panic; a new one takes its place");
        vec![0; READ_SCRATCH]
    }

    /// Moves a connection out of `Handshake` or `Open`: its memory goes back
    /// and its final frame is queued ([`Slot::begin_leave`]), its
    /// subscriptions are removed, and it either closes or drains until a
    /// deadline.
    pub(crate) fn leave(&mut self, shard: &Shard, key: usize, why: Exit, text: &str) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        if let Some(was_open) = slot.begin_leave(&mut self.mem, why, text, shard.deadlines()) {
            self.finish_leave(shard, key, why, was_open);
        }
    }

    /// The core's half of leaving: counters, subscriptions, the sweeper.
    pub(crate) fn finish_leave(&mut self, shard: &Shard, key: usize, why: Exit, was_open: bool) {
        let c = &shard.counters;
        if was_open {
            CoreCounters::sub(&c.connections_open, 1);
        }
        count_exit(c, why);
        if let Some(slot) = self.slots.get(key) {
            log_leave(shard.core, slot, why);
        }
        shard.nudge_sweeper();
        route::subs::unsubscribe_all(shard, self, key);
    }

    /// The policies for one delivery or frame, listing cut slots in
    /// `doomed`.
    pub(crate) fn policy<'a>(shard: &'a Shard, doomed: &'a mut Doomed) -> Policy<'a> {
        Policy { counters: &shard.counters, deadlines: shard.deadlines(), doomed }
    }

    /// Queues a control frame for `key` under the usual policies; false when
    /// the connection was cut for it.
    pub(crate) fn push(&mut self, shard: &Shard, key: usize, frame: &impl slot::OutFrame) -> bool {
        let State { slots, mem, doomed, .. } = self;
        let mut policy = Self::policy(shard, doomed);
        let queued =
            slot::encoded(frame, |bytes| policy.queue(slots, mem, key, Item::Bytes(bytes), None));
        route::reap(shard, self);
        queued == Queued::Yes
    }
}

/// One line per connection that leaves: at `info` when the broker chose to
/// end it, so an operator sees who was cut off and why without more.
fn log_leave(core: usize, slot: &Slot, why: Exit) {
    let t = slot.traffic();
    macro_rules! leave {
        ($level:ident) => {
            tracing::$level!(
                core,
                conn = slot.id(),
                name = %slot.name().unwrap_or(""),
                peer = %slot.peer(),
                reason = %why.describe(),
                subscriptions = slot.sub_count(),
                pending_bytes = slot.out().len(),
                msgs_in = t.msgs_in,
                msgs_out = t.msgs_out,
                bytes_in = t.bytes_in,
                bytes_out = t.bytes_out,
                drops = t.drops,
                "connection closed by the server"
            )
        };
    }
    if why == Exit::Panic {
        leave!(error);
    } else if why.is_broker_choice() {
        leave!(info);
    } else {
        tracing::debug!(core, conn = slot.id(), peer = %slot.peer(), reason = %why.describe(), "connection leaves");
    }
}

fn count_exit(c: &CoreCounters, why: Exit) {
    if let Exit::Tls(failure) = why {
        if failure.in_handshake() {
            CoreCounters::add(&c.tls_handshake_failures, 1);
        }
        return;
    }
    if let Exit::SlowConsumer(limit) = why {
        CoreCounters::add(&c.slow_consumer_closes, 1);
        let cause = match limit {
            Limit::MaxPending => &c.closes_max_pending,
            Limit::WriteDeadline => &c.closes_write_deadline,
            Limit::Budget => &c.closes_budget,
        };
        CoreCounters::add(cause, 1);
        return;
    }
    let counter = match why {
        Exit::Web(WebExit::Refused(_)) => &c.web_refusals,
        Exit::Web(WebExit::Closed(code)) if code != 1000 => &c.ws_protocol_closes,
        Exit::OutOfMemory => &c.input_budget_closes,
        Exit::Stale => &c.stale_closes,
        Exit::HandshakeTimeout => &c.handshake_timeouts,
        Exit::Protocol(_) => &c.protocol_errors,
        Exit::CredentialExpired => &c.credentials_expired,
        Exit::Panic => &c.task_panics,
        _ => return,
    };
    CoreCounters::add(counter, 1);
}
