//! The bridge's thread: a current-thread tokio runtime whose tasks move
//! records between the cores' links, the bridge's state and Redis.
//!
//! - per core, a receiver (the core's records, held while the window to
//!   Redis is full under `hold`) and a forwarder (records for the core);
//! - the supervisor: connects, joins, sends heartbeats, reconnects with a
//!   capped, jittered backoff;
//! - the sender: one round at a time, snapshot changes then frames;
//! - the dispatcher: what arrives from Redis, into the cores' staging;
//! - the loader: other nodes' snapshots, when a gap says so;
//! - the ticker: forgets nodes silent past the TTL.

use std::{
    cell::RefCell,
    future::poll_fn,
    rc::Rc,
    sync::Arc,
    task::Poll,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::{sync::Notify, task::LocalSet, time};

use super::{
    bridge::{Bridge, Me},
    redis::{self as io, Inbound},
    wire::Announce,
    ClusterCounters,
};
use crate::{
    config::Config,
    mesh::{
        link::{CoreLinks, LinkRx},
        record::Record,
        staging::Forwarded,
    },
};

/// What the bridge's tasks share.
struct Shared {
    bridge: RefCell<Bridge>,
    /// The command connection while connected.
    redis: RefCell<Option<io::Commands>>,
    /// Raised when a task finds the connection broken.
    broken: Notify,
}

/// Starts the bridge's thread with its ends of the mesh.
pub(crate) fn start(
    cfg: &Config,
    links: CoreLinks,
    counters: Arc<ClusterCounters>,
) -> std::io::Result<JoinHandle<()>> {
    let cluster =
        cfg.cluster.clone().ok_or_else(|| std::io::Error::other("no [cluster] section"))?;
    let me = Me { name: cluster.node_name(), incarnation: incarnation(), max_frame: cfg.max_frame };
    let (cores, staging) = (cfg.cores, cfg.cross_core_batch);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("corecast-cluster".into()).spawn(move || {
        let bridge = Bridge::new(cluster, me, counters, cores, staging);
        LocalSet::new().block_on(&runtime, run(bridge, links));
    })
}

/// A run's identity: different for every process start.
fn incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (fastrand::u64(..) ^ nanos.rotate_left(17) ^ u64::from(std::process::id())).max(1)
}

async fn run(bridge: Bridge, links: CoreLinks) {
    tracing::info!(node = %bridge.me().name, redis = %bridge.cfg().redis, "cluster bridge starting");
    let shared = Rc::new(Shared {
        bridge: RefCell::new(bridge),
        redis: RefCell::new(None),
        broken: Notify::new(),
    });
    let cores: Vec<usize> = links.to.iter().map(|(core, _)| *core).collect();
    for (core, tx) in links.to {
        shared.bridge.borrow_mut().connect_core(core, tx);
    }
    let forwarders: Vec<_> =
        cores.iter().map(|&c| tokio::task::spawn_local(forward(Rc::clone(&shared), c))).collect();
    let receivers: Vec<_> = links
        .from
        .into_iter()
        .map(|(c, rx)| tokio::task::spawn_local(receive(Rc::clone(&shared), rx, c)))
        .collect();
    let (inbound, inbound_rx) = io::inbound_queues();
    let io::InboundRx { frames, announcements } = inbound_rx;
    let background = [
        tokio::task::spawn_local(supervise(Rc::clone(&shared), inbound)),
        tokio::task::spawn_local(dispatch(Rc::clone(&shared), frames)),
        tokio::task::spawn_local(hear(Rc::clone(&shared), announcements)),
        tokio::task::spawn_local(send(Rc::clone(&shared))),
        tokio::task::spawn_local(load(Rc::clone(&shared))),
        tokio::task::spawn_local(tick(Rc::clone(&shared))),
    ];
    // The cores close their links at shutdown.
    for r in receivers {
        let _ = r.await;
    }
    shared.bridge.borrow_mut().close_cores();
    for f in forwarders {
        let _ = f.await;
    }
    say_bye(&shared).await;
    for task in background {
        task.abort();
    }
    tracing::info!("cluster bridge stopped");
}

/// Sends what is left for the other nodes, then leaves: the snapshot and
/// the registry entry go, and the others hear `bye`, so none of them waits
/// for the TTL.
async fn say_bye(shared: &Shared) {
    let con = shared.redis.borrow().clone();
    let Some(mut con) = con else { return };
    let (body, names, node, ttl, timeout) = {
        let b = shared.bridge.borrow();
        let mut body = Vec::new();
        Announce::Bye(b.presence()).encode(&mut body);
        let timeout = Duration::from_millis(b.cfg().command_timeout_ms);
        (body, b.names().clone(), b.me().name.clone(), b.cfg().ttl_ms, timeout)
    };
    let round = shared.bridge.borrow_mut().next_round();
    if let Some(round) = round {
        let written =
            time::timeout(timeout, io::write_round(&mut con, &names, &node, ttl, &round)).await;
        match written {
            Ok(Ok(w)) => shared.bridge.borrow_mut().round_done(&round, (w.kept, &w.readers)),
            _ => shared.bridge.borrow_mut().round_failed(&round),
        }
    }
    let _ = time::timeout(timeout, io::leave(&mut con, &names, &node, &body)).await;
}

/// Applies the batches core `core` sends until it closes its link.
async fn receive(shared: Rc<Shared>, link: LinkRx, core: usize) {
    while let Some(batch) = link.recv().await {
        wait_for_window(&shared).await;
        let mut bridge = shared.bridge.borrow_mut();
        let mut src = &batch[..];
        while let Some(record) = Record::decode(&mut src) {
            bridge.on_core_record(core, record);
        }
    }
}

/// Under `hold`, waits while the window to Redis is full: the link fills,
/// then the core's staging for the bridge, and the publishers whose
/// messages go to other nodes wait for room.
async fn wait_for_window(shared: &Shared) {
    let mut counted = false;
    poll_fn(|cx| {
        let mut bridge = shared.bridge.borrow_mut();
        if bridge.cfg().backpressure != super::Backpressure::Hold || !bridge.window_full() {
            return Poll::Ready(());
        }
        if !counted {
            counted = true;
            crate::counters::CoreCounters::add(&bridge.counters().holds, 1);
        }
        bridge.hold(cx.waker());
        Poll::Pending
    })
    .await;
}

/// Hands what is staged for core `core` to its link.
async fn forward(shared: Rc<Shared>, core: usize) {
    poll_fn(|cx| loop {
        match shared.bridge.borrow_mut().poll_forward(core, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Forwarded::Batch) => continue,
            Poll::Ready(Forwarded::Done | Forwarded::PeerGone) => return Poll::Ready(()),
        }
    })
    .await;
}

/// Connects, joins, keeps the heartbeat, and starts over after any
/// failure, waiting from `reconnect_min` doubling to `reconnect_max`, with
/// ±20% jitter so that nodes do not all come back at once.
async fn supervise(shared: Rc<Shared>, inbound: Inbound) {
    let (cfg, names, me) = {
        let b = shared.bridge.borrow();
        (b.cfg().clone(), b.names().clone(), b.me().clone())
    };
    let inbox = names.inbox(&me.name, me.incarnation);
    let control = names.control();
    let counters = Arc::clone(shared.bridge.borrow().counters());
    let mut backoff = cfg.reconnect_min_ms;
    let mut outage: Option<Instant> = None;
    let mut first = true;
    loop {
        let inbound = inbound.fresh();
        let connected =
            io::connect(&cfg, (&inbox, &control), inbound.clone(), Arc::clone(&counters)).await;
        match connected {
            Ok(conns) => {
                match outage.take() {
                    Some(since) => {
                        crate::counters::CoreCounters::add(&counters.reconnects, 1);
                        tracing::warn!(
                            down_ms = since.elapsed().as_millis() as u64,
                            "cluster: Redis reachable again"
                        );
                    }
                    None => tracing::info!(node = %me.name, "cluster: connected to Redis"),
                }
                backoff = cfg.reconnect_min_ms;
                *shared.redis.borrow_mut() = Some(conns.commands.clone());
                if let Err(e) = serve(&shared, conns.commands.clone(), &inbound.closed).await {
                    tracing::warn!(error = %e, "cluster: lost Redis; remote forwarding paused");
                } else {
                    tracing::warn!("cluster: lost Redis; remote forwarding paused");
                }
                drop(conns);
            }
            Err(e) if outage.is_none() => {
                let verb = if first { "cannot reach" } else { "lost" };
                tracing::warn!(error = %e, "cluster: {verb} Redis; remote forwarding paused, retrying");
            }
            Err(_) => {}
        }
        first = false;
        outage.get_or_insert_with(Instant::now);
        *shared.redis.borrow_mut() = None;
        shared.bridge.borrow_mut().down();
        let jitter = 0.8 + 0.4 * fastrand::f64();
        time::sleep(Duration::from_millis((backoff as f64 * jitter) as u64)).await;
        backoff = (backoff * 2).min(cfg.reconnect_max_ms);
    }
}

/// One spell of being connected: join, then heartbeats until something
/// breaks.
async fn serve(
    shared: &Shared,
    mut con: io::Commands,
    closed: &tokio::sync::Notify,
) -> redis::RedisResult<()> {
    let (cfg, names, me) = {
        let b = shared.bridge.borrow();
        (b.cfg().clone(), b.names().clone(), b.me().clone())
    };
    let timeout = Duration::from_millis(cfg.command_timeout_ms);
    let timed_out =
        || redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"));
    // A failure of the connection before this one may have left its signal
    // behind: it must not end this one.
    let _ = futures_lite::future::poll_once(shared.broken.notified()).await;
    // The snapshot goes first, so that those who hear the hello find it.
    shared.bridge.borrow_mut().up();
    let round = shared.bridge.borrow_mut().next_round();
    if let Some(round) = round {
        let written =
            time::timeout(timeout, io::write_round(&mut con, &names, &me.name, cfg.ttl_ms, &round))
                .await
                .map_err(|_| timed_out())??;
        shared.bridge.borrow_mut().round_done(&round, (written.kept, &written.readers));
    }
    let hello = encode(|b| Announce::Hello(b.presence()), shared);
    time::timeout(timeout, io::announce(&mut con, &names, &hello))
        .await
        .map_err(|_| timed_out())??;
    let peers = io::read_registry(&mut con, &names, timeout).await?;
    for (name, snapshot) in peers {
        shared.bridge.borrow_mut().joined_from_registry(&name, snapshot, Instant::now());
    }
    let heartbeat = Duration::from_millis(cfg.heartbeat_ms);
    loop {
        tokio::select! {
            () = shared.broken.notified() => return Ok(()),
            () = closed.notified() => return Ok(()),
            () = time::sleep(heartbeat) => {}
        }
        let alive = encode(|b| Announce::Alive(b.presence()), shared);
        let kept =
            time::timeout(timeout, io::heartbeat(&mut con, &names, &me.name, cfg.ttl_ms, &alive))
                .await
                .map_err(|_| timed_out())??;
        if !kept {
            tracing::warn!("cluster: Redis lost this node's snapshot; writing it again");
            shared.bridge.borrow_mut().rewrite_snapshot();
        }
    }
}

fn encode(what: impl FnOnce(&Bridge) -> Announce<'_>, shared: &Shared) -> Vec<u8> {
    let b = shared.bridge.borrow();
    let mut body = Vec::new();
    what(&b).encode(&mut body);
    body
}

/// Writes rounds, one at a time: what gathers meanwhile goes in the next.
async fn send(shared: Rc<Shared>) {
    loop {
        let round = poll_fn(|cx| {
            let mut b = shared.bridge.borrow_mut();
            match b.next_round() {
                Some(round) => Poll::Ready(round),
                None => {
                    b.park_sender(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await;
        let con = shared.redis.borrow().clone();
        let (names, node, ttl, timeout) = {
            let b = shared.bridge.borrow();
            (
                b.names().clone(),
                b.me().name.clone(),
                b.cfg().ttl_ms,
                Duration::from_millis(b.cfg().command_timeout_ms),
            )
        };
        let result = match con {
            Some(mut con) => {
                time::timeout(timeout, io::write_round(&mut con, &names, &node, ttl, &round)).await
            }
            None => Ok(Err(redis::RedisError::from((redis::ErrorKind::Io, "not connected")))),
        };
        match result {
            Ok(Ok(written)) => {
                shared.bridge.borrow_mut().round_done(&round, (written.kept, &written.readers));
            }
            Ok(Err(_)) | Err(_) => {
                shared.bridge.borrow_mut().round_failed(&round);
                shared.broken.notify_one();
            }
        }
    }
}

/// Hands the frames that arrive from Redis to the bridge, each once the
/// cores' staging has room for it. Waiting is how a busy node pushes back:
/// its senders run out of the credit it grants as it takes frames in, and
/// hold their publishers. A frame that waits past `command_timeout` (a core
/// that does not take anything) has its messages dropped and counted.
/// Redis's reader never waits: it only queues.
async fn dispatch(shared: Rc<Shared>, mut frames: tokio::sync::mpsc::Receiver<bytes::Bytes>) {
    while let Some(frame) = frames.recv().await {
        let counters = Arc::clone(shared.bridge.borrow().counters());
        counters.in_queue_bytes.fetch_sub(frame.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let patience = Duration::from_millis(shared.bridge.borrow().cfg().command_timeout_ms);
        if time::timeout(patience, core_room(&shared)).await.is_err() {
            crate::counters::CoreCounters::add(&counters.in_dropped_full, 1);
            shared.bridge.borrow_mut().skip_frame(&frame, Instant::now());
            continue;
        }
        shared.bridge.borrow_mut().on_frame(&frame, Instant::now());
    }
}

/// Hands the announcements to the bridge as they come.
async fn hear(shared: Rc<Shared>, mut announcements: tokio::sync::mpsc::Receiver<bytes::Bytes>) {
    while let Some(body) = announcements.recv().await {
        shared.bridge.borrow_mut().on_announce(&body, Instant::now());
    }
}

/// Ready once every core's staging has room.
async fn core_room(shared: &Shared) {
    poll_fn(|cx| match shared.bridge.borrow_mut().cores_have_room(cx.waker()) {
        true => Poll::Ready(()),
        false => Poll::Pending,
    })
    .await;
}

/// Reads other nodes' snapshots when the bridge asks for them.
async fn load(shared: Rc<Shared>) {
    loop {
        let (key, snapshot_key) = poll_fn(|cx| {
            let mut b = shared.bridge.borrow_mut();
            let next = if b.is_connected() { b.next_load() } else { None };
            match next {
                Some(next) => Poll::Ready(next),
                None => {
                    b.park_loader(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await;
        let con = shared.redis.borrow().clone();
        let timeout = Duration::from_millis(shared.bridge.borrow().cfg().command_timeout_ms);
        let snapshot = match con {
            Some(mut con) => {
                match time::timeout(timeout, io::read_snapshot(&mut con, &snapshot_key)).await {
                    Ok(Ok(snapshot)) => snapshot,
                    _ => None,
                }
            }
            None => None,
        };
        if !shared.bridge.borrow_mut().loaded(key, snapshot) {
            // Not there yet, of another run, or Redis is away: try again
            // shortly.
            time::sleep(RELOAD_PAUSE).await;
        }
    }
}

/// The pause before a snapshot that was not there is read again.
const RELOAD_PAUSE: Duration = Duration::from_millis(50);

/// Forgets nodes silent past the TTL, connected or not.
async fn tick(shared: Rc<Shared>) {
    let every = Duration::from_millis(shared.bridge.borrow().cfg().heartbeat_ms);
    loop {
        time::sleep(every).await;
        shared.bridge.borrow_mut().expire(Instant::now());
    }
}
