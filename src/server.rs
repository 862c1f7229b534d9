//! What runs on each core: the accept loop, the sweeper, the cross-core
//! forwarders and receivers, and the shutdown sequence that ends them all.

use std::{
    future::poll_fn,
    os::fd::{FromRawFd, IntoRawFd},
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use corecast_proto::{ErrFrame, ErrorCode, ServerFrame};
use futures_lite::{future, AsyncWriteExt};
use glommio::{
    net::{TcpListener, TcpStream},
    timer::sleep,
    Task,
};

use crate::{
    config::Config,
    connection,
    counters::CoreCounters,
    fanout::{self, Message},
    link::{CoreLinks, LinkRx, LinkTx},
    memory::WARM_KEEP,
    mesh::Record,
    pressure,
    shard::{ms_duration, Shard, State},
    shutdown::ShutdownSignal,
    slot::{Exit, Limit, Phase, Slot},
};

/// What a core needs to start.
pub(crate) struct CoreInit {
    pub core: usize,
    pub cfg: Arc<Config>,
    /// Every core's counters; this core writes its own.
    pub counters: Arc<[Arc<CoreCounters>]>,
    /// This core's listening sockets, one per address.
    pub listeners: Vec<socket2::Socket>,
    /// This core's ends of the links to and from every other core.
    pub links: CoreLinks,
    pub signal: Arc<ShutdownSignal>,
    /// Told once this core is serving.
    pub ready: std::sync::mpsc::SyncSender<()>,
}

/// Runs one core until shutdown completes.
pub(crate) async fn run(init: CoreInit) -> Result<(), String> {
    let CoreInit { core, cfg, counters, listeners, links, signal, ready } = init;
    let shard = Shard::new(core, cfg, counters)
        .ok_or_else(|| "cannot reserve address space for the pending budget".to_string())?;
    let shard = Rc::new(shard);
    let mesh_tasks = MeshTasks::start(&shard, links);
    let sweeper = glommio::spawn_local(sweep(Rc::clone(&shard)));
    let acceptors: Vec<Task<()>> = listeners
        .into_iter()
        .map(|listener| {
            // SAFETY: the fd is a listening TCP socket we own; ownership moves over.
            let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
            glommio::spawn_local(accept_loop(Rc::clone(&shard), listener))
        })
        .collect();
    let _ = ready.send(());
    drop(ready);
    signal.wait(core).await;
    tracing::info!(core, "shutting down");
    for acceptor in acceptors {
        acceptor.cancel().await;
    }
    shutdown(&shard, mesh_tasks).await;
    sweeper.cancel().await;
    Ok(())
}

/// The cross-core tasks of one core.
struct MeshTasks {
    forwarders: Vec<Task<()>>,
    receivers: Vec<Task<()>>,
}

impl MeshTasks {
    fn start(shard: &Rc<Shard>, links: CoreLinks) -> Self {
        let forwarders = links
            .to
            .into_iter()
            .map(|(peer, tx)| glommio::spawn_local(forward(Rc::clone(shard), tx, peer)))
            .collect();
        let receivers = links
            .from
            .into_iter()
            .map(|(peer, rx)| glommio::spawn_local(receive(Rc::clone(shard), rx, peer)))
            .collect();
        Self { forwarders, receivers }
    }
}

/// Hands staged batches for `peer` to its link; waits when it is full.
/// Returning drops the link, which tells the peer nothing more comes.
async fn forward(shard: Rc<Shard>, link: LinkTx, peer: usize) {
    loop {
        let batch = poll_fn(|cx| {
            let _mark = crate::probe::mark();
            shard.state.borrow_mut().outbound.poll_batch(peer, cx)
        })
        .await;
        let Some(batch) = batch else { return };
        if link.send(batch).await.is_err() {
            tracing::warn!(core = shard.core, peer, "peer core left; dropping its traffic");
            return;
        }
        CoreCounters::add(&shard.counters.cross_core_batches, 1);
    }
}

/// Applies the batches `peer` sends until it closes its side.
async fn receive(shard: Rc<Shard>, link: LinkRx, peer: usize) {
    while let Some(batch) = link.recv().await {
        let mut done = 0;
        let mut deferred = false;
        while done < batch.len() {
            let rest = &batch[done..];
            done += apply_batch(&shard, &mut shard.state.borrow_mut(), peer, rest, &mut deferred);
            if done < batch.len() {
                // Subscribers filled up: let them flush, then go on.
                futures_lite::future::yield_now().await;
            }
        }
    }
}

/// Applies records from the front of `batch`; returns how many bytes it
/// used. It stops early after a delivery that filled a subscriber past half,
/// and before one the budget is short for (once per record: `deferred`).
fn apply_batch(
    shard: &Shard,
    st: &mut State,
    from: usize,
    batch: &[u8],
    deferred: &mut bool,
) -> usize {
    let _mark = crate::probe::mark();
    let mut src = batch;
    let mut published = 0;
    loop {
        let before = src;
        let Some(record) = Record::decode(&mut src) else { break };
        match record {
            Record::Publish { topic, reply_to, payload } => {
                let State { slots, topics, doomed, fanout, mem, .. } = &mut *st;
                let mut pressed = false;
                if let Some(entry) = topics.get(topic) {
                    let frame_len = 16 + topic.len() + reply_to.len() + payload.len();
                    let short = pressure::budget_short(mem, entry.local.len(), frame_len);
                    if !std::mem::take(deferred) && short {
                        *deferred = true;
                        src = before;
                        break;
                    }
                    let msg = Message { topic, reply_to, payload };
                    let mut policy = State::policy(shard, doomed);
                    pressed = fanout::deliver(slots, mem, &entry.local, msg, &mut policy, fanout);
                }
                published += 1;
                st.reap_doomed(shard);
                if pressed {
                    break;
                }
            }
            Record::InterestAdd { topic } => st.topics.set_remote(topic, from, true),
            Record::InterestRemove { topic } => st.topics.set_remote(topic, from, false),
            Record::Barrier { seq } => st.outbound.stage(from, Record::BarrierAck { seq }),
            Record::BarrierAck { seq } => {
                if st.outbound.on_ack(seq) {
                    st.wake_barrier_waiters();
                }
            }
        }
    }
    CoreCounters::add(&shard.counters.cross_core_received, published);
    match batch.len() - src.len() {
        0 if !batch.is_empty() && !*deferred => {
            tracing::error!(core = shard.core, from, left = batch.len(), "inconsistent batch");
            batch.len()
        }
        used => used,
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let mut warned: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok(stream) => admit(&shard, stream).await,
            Err(e) => {
                // Out of descriptors and the like: back off instead of
                // spinning, and say so once in a while, not every time.
                CoreCounters::add(&shard.counters.accept_failures, 1);
                if !warned.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
                    tracing::warn!(core = shard.core, error = %e, "accept failed");
                    warned = Some(Instant::now());
                }
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn admit(shard: &Rc<Shard>, stream: TcpStream) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let Some(key) = shard.open_slot(peer) else {
        refuse_full(shard, stream).await;
        return;
    };
    let _ = stream.set_nodelay(true);
    // The state borrow taken by open_slot has ended: spawning polls at once.
    let task = connection::serve(Rc::clone(shard), stream, key);
    match shard.gate.spawn(task) {
        Ok(task) => {
            task.detach();
        }
        Err(_) => tracing::warn!(core = shard.core, "connection arrived during shutdown"),
    }
}

/// Tells a connection the core is full, without taking a slot or buffers.
async fn refuse_full(shard: &Shard, mut stream: TcpStream) {
    CoreCounters::add(&shard.counters.connections_refused, 1);
    let text = "connection limit reached";
    let frame =
        ServerFrame::Err(ErrFrame { code: ErrorCode::ServerFull.as_u16(), fatal: true, text });
    let mut bytes = Vec::with_capacity(frame.encoded_len());
    frame.encode(&mut bytes);
    // One non-blocking attempt: a fresh socket takes a small frame at once.
    let _ = future::poll_once(stream.write_all(&bytes)).await;
    let _ = future::poll_once(stream.close()).await;
}

/// Every tick: ping the silent, close the stale, the never-welcomed and
/// those whose socket took nothing within the write deadline, end drains
/// whose deadline passed, and hand spare pool chunks back to the kernel.
async fn sweep(shard: Rc<Shard>) {
    let (busy_tick, idle_tick) = shard.cfg.sweep_intervals();
    let mut tick = busy_tick;
    let limits = SweepLimits::new(&shard.cfg);
    let mut expired = Vec::new();
    loop {
        if tick == idle_tick {
            future::or(sleep(tick), poll_fn(|cx| shard.poll_nudge(cx.waker()))).await;
        } else {
            sleep(tick).await;
        }
        let now = Instant::now();
        shard.clock.set(now);
        let mut guard = shard.state.borrow_mut();
        let st = &mut *guard;
        tick = idle_tick;
        for (key, slot) in st.slots.iter_mut() {
            if matches!(slot.phase(), Phase::Handshake | Phase::Draining { .. }) {
                tick = busy_tick;
            }
            match limits.due(slot, now) {
                Some(Due::End) => slot.close(),
                Some(due) => expired.push((key, due)),
                None => {}
            }
        }
        for (key, due) in expired.drain(..) {
            match due {
                Due::Ping => {
                    let nonce = Shard::next_ping_nonce(st);
                    let sent = st.push(&shard, key, &ServerFrame::Ping { nonce });
                    if let Some(slot) = st.slots.get_mut(key) {
                        slot.ping_outstanding = sent;
                    }
                }
                Due::Close(why) => st.leave(&shard, key, why, ""),
                Due::End => {}
            }
        }
        let State { fanout, mem, .. } = &mut *st;
        fanout.release_idle(mem);
        let keep = if st.mem.used() == 0 { 0 } else { WARM_KEEP };
        st.mem.trim(keep);
    }
}

/// What the sweeper found a slot due for.
enum Due {
    Ping,
    Close(Exit),
    /// The drain's deadline passed.
    End,
}

/// The sweeper's time limits.
struct SweepLimits {
    ping_after: Duration,
    stale_after: Duration,
    handshake: Duration,
    write_deadline: Duration,
}

impl SweepLimits {
    fn new(cfg: &Config) -> Self {
        Self {
            ping_after: ms_duration(cfg.ping_interval_ms),
            stale_after: ms_duration(cfg.stale_after_ms),
            handshake: ms_duration(cfg.handshake_timeout_ms),
            write_deadline: ms_duration(cfg.write_deadline_ms),
        }
    }

    fn due(&self, slot: &Slot, now: Instant) -> Option<Due> {
        let blocked_too_long =
            slot.write_blocked_since.is_some_and(|since| now - since > self.write_deadline);
        Some(match slot.phase() {
            Phase::Handshake if now - slot.accepted_at > self.handshake => {
                Due::Close(Exit::HandshakeTimeout)
            }
            Phase::Open if blocked_too_long => Due::Close(Exit::SlowConsumer(Limit::WriteDeadline)),
            Phase::Open if now - slot.last_inbound > self.stale_after => Due::Close(Exit::Stale),
            Phase::Open if now - slot.last_inbound > self.ping_after && !slot.ping_outstanding => {
                Due::Ping
            }
            Phase::Draining { until } if now > until => Due::End,
            _ => return None,
        })
    }
}

/// Stops reading everywhere, drains the cross-core channels, sends
/// `GOAWAY` after every message accepted before, and waits for every
/// connection to finish within the grace period.
async fn shutdown(shard: &Rc<Shard>, mesh: MeshTasks) {
    shard.shutting_down.set(true);
    shard.state.borrow_mut().outbound.close();
    // Each forwarder ends once its staging is sent, closing its link.
    for f in mesh.forwarders {
        f.await;
    }
    // Peers close their side once drained; a peer that died never does,
    // so give up on it after the grace period.
    let drained = async {
        for r in mesh.receivers {
            r.await;
        }
        true
    };
    let grace = ms_duration(shard.cfg.shutdown_grace_ms);
    if !future::or(drained, async {
        sleep(grace).await;
        false
    })
    .await
    {
        tracing::warn!(core = shard.core, "a peer core did not close its link");
    }
    {
        let mut st = shard.state.borrow_mut();
        let keys: Vec<usize> = st.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            st.leave(shard, key, Exit::Shutdown, "");
        }
    }
    // Every slot now drains with a deadline the sweeper enforces.
    if shard.gate.close().await.is_err() {
        tracing::warn!(core = shard.core, "gate already closed");
    }
    let c = shard.counters.snapshot();
    tracing::info!(
        core = shard.core,
        slots = c.slots_in_use,
        tasks = c.tasks_alive,
        "core stopped"
    );
}
