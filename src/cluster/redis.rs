//! The bridge's two connections to Redis: one for commands (pipelined
//! rounds, heartbeats, snapshot reads) and one that receives the node's
//! inbox and the control channel (RESP3 pushes, into a bounded queue).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use redis::{
    aio::MultiplexedConnection, cluster::ClusterClient, cluster_async::ClusterConnection,
    AsyncConnectionConfig, ProtocolVersion, PushKind, Value,
};
use tokio::sync::mpsc;

use super::{bridge::Round, names::Names, peers::Snapshot, ClusterConfig, ClusterCounters, Mode};

/// Where the subscriber connection hands what arrives: frames and
/// announcements in queues of their own, so that announcements never wait
/// behind frames waiting for the cores, and the connection's end as a
/// signal that cannot be lost.
#[derive(Debug, Clone)]
pub(crate) struct Inbound {
    frames: mpsc::Sender<Bytes>,
    announcements: mpsc::Sender<Bytes>,
    pub closed: Arc<tokio::sync::Notify>,
}

impl Inbound {
    /// The same queues with a signal of its own, for a new connection: a
    /// connection dropped on purpose must not end the next one.
    pub(crate) fn fresh(&self) -> Self {
        Self { closed: Arc::new(tokio::sync::Notify::new()), ..self.clone() }
    }
}

/// The receiving ends of [`Inbound`].
#[derive(Debug)]
pub(crate) struct InboundRx {
    pub frames: mpsc::Receiver<Bytes>,
    pub announcements: mpsc::Receiver<Bytes>,
}

/// Most announcements waiting: a few per node and heartbeat.
const ANNOUNCEMENTS: usize = 1024;

/// Most frames waiting for the dispatcher, whatever their size (bytes are
/// bounded by `in_queue` too, which the senders' credit keeps them under).
const INBOUND_FRAMES: usize = 16 << 10;

/// A command connection: to one Redis, or to a Redis Cluster (which routes
/// each command to the shard that owns its key or channel).
#[derive(Clone)]
pub(crate) enum Commands {
    Single(MultiplexedConnection),
    Sharded(ClusterConnection),
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Commands::Single",
            Self::Sharded(_) => "Commands::Sharded",
        })
    }
}

impl redis::aio::ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Sharded(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sharded(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Sharded(c) => c.get_db(),
        }
    }
}

impl Commands {
    fn sharded(&self) -> bool {
        matches!(self, Self::Sharded(_))
    }

    /// `PUBLISH`, or `SPUBLISH` on a Redis Cluster.
    fn publish_verb(&self) -> &'static str {
        if self.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

/// The connections of one spell of being connected.
pub(crate) struct Connections {
    pub commands: Commands,
    /// Kept open: dropping it ends the subscription.
    _subscriber: Commands,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connections")
    }
}

/// The queues from the subscriber connection to the dispatcher.
pub(crate) fn inbound_queues() -> (Inbound, InboundRx) {
    let (frames, frames_rx) = mpsc::channel(INBOUND_FRAMES);
    let (announcements, announcements_rx) = mpsc::channel(ANNOUNCEMENTS);
    let closed = Arc::new(tokio::sync::Notify::new());
    let rx = InboundRx { frames: frames_rx, announcements: announcements_rx };
    (Inbound { frames, announcements, closed }, rx)
}

/// The password of `password_file`, if one is configured.
fn password(cfg: &ClusterConfig) -> redis::RedisResult<Option<String>> {
    let Some(path) = &cfg.password_file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Io,
            "cannot read cluster.password_file",
            e.to_string(),
        ))
    })?;
    Ok(Some(text.lines().next().unwrap_or("").trim().to_string()))
}

fn client(cfg: &ClusterConfig) -> redis::RedisResult<redis::Client> {
    let url = cfg.urls().first().copied().unwrap_or_default();
    let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)?;
    let mut settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    if let Some(user) = &cfg.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = password(cfg)? {
        settings = settings.set_password(password);
    }
    info = info.set_redis_settings(settings);
    match &cfg.tls {
        None => redis::Client::open(info),
        Some(tls) => redis::Client::build_with_tls(info, certificates(tls)?),
    }
}

/// A Redis Cluster client; pushes (sharded messages) go to `push` when
/// given.
fn cluster_client(
    cfg: &ClusterConfig,
    push: Option<impl redis::aio::AsyncPushSender>,
) -> redis::RedisResult<ClusterClient> {
    let timeout = Duration::from_millis(cfg.command_timeout_ms);
    let mut builder = ClusterClient::builder(cfg.urls())
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(timeout)
        .response_timeout(timeout);
    if let Some(user) = &cfg.username {
        builder = builder.username(user);
    }
    if let Some(password) = password(cfg)? {
        builder = builder.password(password);
    }
    if let Some(tls) = &cfg.tls {
        builder = builder.tls(redis::TlsMode::Secure).certs(certificates(tls)?);
    }
    if let Some(push) = push {
        builder = builder.push_sender(push);
    }
    builder.build()
}

/// The PEM files of `[cluster.tls]`, read.
fn certificates(tls: &super::config::RedisTls) -> redis::RedisResult<redis::TlsCertificates> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            let what = format!("cannot read {}", path.display());
            redis::RedisError::from((redis::ErrorKind::Io, "cluster.tls", format!("{what}: {e}")))
        })
    };
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            Some(redis::ClientTlsConfig { client_cert: read(cert)?, client_key: read(key)? })
        }
        _ => None,
    };
    let root_cert = tls.ca.as_deref().map(read).transpose()?;
    Ok(redis::TlsCertificates { client_tls, root_cert })
}

/// Connects both connections and subscribes to `channels`; what arrives
/// goes to `inbound` while it has room (and `in_queue` bytes allow),
/// else it is dropped and counted.
pub(crate) async fn connect(
    cfg: &ClusterConfig,
    channels: (&str, &str),
    inbound: Inbound,
    counters: Arc<ClusterCounters>,
) -> redis::RedisResult<Connections> {
    let (inbox, control) = (channels.0.to_string(), channels.1.to_string());
    let limit = cfg.in_queue as u64;
    let push = move |info: redis::PushInfo| -> Result<(), ()> {
        on_push(info, (&inbox, &control), &inbound, &counters, limit);
        Ok(())
    };
    match cfg.mode {
        Mode::Single => connect_single(cfg, channels, push).await,
        Mode::Sharded => connect_sharded(cfg, channels, push).await,
    }
}

async fn connect_single(
    cfg: &ClusterConfig,
    channels: (&str, &str),
    push: impl redis::aio::AsyncPushSender,
) -> redis::RedisResult<Connections> {
    let client = client(cfg)?;
    let timeout = Duration::from_millis(cfg.command_timeout_ms);
    let base = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let commands = client.get_multiplexed_async_connection_with_config(&base).await?;
    // Pushes are handled as they are read; the subscriber sends no
    // commands that could wait behind them, so no response timeout.
    let sub_cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None)
        .set_push_sender(push);
    let mut subscriber = client.get_multiplexed_async_connection_with_config(&sub_cfg).await?;
    subscriber.subscribe(&[channels.0, channels.1]).await?;
    Ok(Connections {
        commands: Commands::Single(commands),
        _subscriber: Commands::Single(subscriber),
    })
}

async fn connect_sharded(
    cfg: &ClusterConfig,
    channels: (&str, &str),
    push: impl redis::aio::AsyncPushSender,
) -> redis::RedisResult<Connections> {
    let none: Option<fn(redis::PushInfo) -> Result<(), ()>> = None;
    let commands = cluster_client(cfg, none)?.get_async_connection().await?;
    let mut subscriber = cluster_client(cfg, Some(push))?.get_async_connection().await?;
    // One channel per call: the two live in different slots.
    subscriber.ssubscribe(channels.0).await?;
    subscriber.ssubscribe(channels.1).await?;
    Ok(Connections {
        commands: Commands::Sharded(commands),
        _subscriber: Commands::Sharded(subscriber),
    })
}

/// One push from the subscriber connection, into its bounded queue.
fn on_push(
    info: redis::PushInfo,
    (inbox, control): (&str, &str),
    inbound: &Inbound,
    counters: &ClusterCounters,
    limit: u64,
) {
    match info.kind {
        PushKind::Disconnection => inbound.closed.notify_one(),
        PushKind::Message | PushKind::SMessage => {
            let mut data = info.data.into_iter();
            let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                (data.next(), data.next())
            else {
                return;
            };
            if channel == control.as_bytes() {
                if inbound.announcements.try_send(Bytes::from(payload)).is_err() {
                    bump(&counters.in_dropped_full);
                }
            } else if channel == inbox.as_bytes() {
                let len = payload.len() as u64;
                let queued = counters.in_queue_bytes.load(Ordering::Relaxed);
                if queued + len > limit || inbound.frames.try_send(Bytes::from(payload)).is_err() {
                    bump(&counters.in_dropped_full);
                    return;
                }
                counters.in_queue_bytes.fetch_add(len, Ordering::Relaxed);
            }
        }
        _ => {}
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Writes one round: the snapshot's changes, then the frames. Returns how
/// many read each frame's channel.
///
/// On one Redis the round is one transaction. On a Redis Cluster the
/// snapshot (in the control slot) is written first and answered, then each
/// inbox's frames go in one pipeline to the shard that owns it, the
/// inboxes at once: a frame never leaves before the snapshot that covers
/// its interest changes.
pub(crate) async fn write_round(
    con: &mut Commands,
    names: &Names,
    node: &str,
    ttl_ms: u64,
    round: &Round,
) -> redis::RedisResult<Written> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let checked = snapshot_writes(&mut pipe, names, node, ttl_ms, round);
    if con.sharded() {
        let mut kept = true;
        if round.rewrite.is_some() || !round.changes.is_empty() {
            let answers: Vec<i64> = pipe.query_async(con).await?;
            kept = !checked || answers.first() == Some(&1);
        }
        return Ok(Written { kept, readers: publish_sharded(con, round).await? });
    }
    for ready in &round.frames {
        pipe.publish(&ready.channel, ready.frame.as_ref());
    }
    let mut answers: Vec<i64> = pipe.query_async(con).await?;
    let kept = !checked || answers.first() == Some(&1);
    if checked && !answers.is_empty() {
        answers.remove(0);
    }
    Ok(Written { kept, readers: answers })
}

/// What Redis answered to a round.
#[derive(Debug)]
pub(crate) struct Written {
    /// The snapshot was there to change (false: Redis lost it, and the
    /// change wrote only part of it; it must be written whole).
    pub kept: bool,
    /// How many read each frame's channel.
    pub readers: Vec<i64>,
}

/// The snapshot's part of a round.
fn snapshot_writes(
    pipe: &mut redis::Pipeline,
    names: &Names,
    node: &str,
    ttl_ms: u64,
    round: &Round,
) -> bool {
    let key = names.snapshot(node);
    let checked = round.rewrite.is_none() && !round.changes.is_empty();
    if checked {
        // Answers 0 when the key is gone: the changes below then make a
        // partial snapshot, which the next round replaces whole.
        pipe.pexpire(&key, ttl_ms as i64);
    }
    if let Some(items) = &round.rewrite {
        pipe.del(&key).ignore();
        hset(pipe, &key, &round.meta, items.iter());
        pipe.pexpire(&key, ttl_ms as i64).ignore();
        pipe.sadd(names.registry(), node).ignore();
    }
    if !round.changes.is_empty() {
        let (set, gone): (Vec<_>, Vec<_>) = round.changes.iter().partition(|(_, n)| *n > 0);
        hset(pipe, &key, &round.meta, set.into_iter());
        if !gone.is_empty() {
            let gone: Vec<&str> = gone.iter().map(|(f, _)| f.as_str()).collect();
            pipe.hdel(&key, gone).ignore();
        }
    }
    checked
}

/// `HSET key meta META field value...`, its answer ignored.
fn hset<'a>(
    pipe: &mut redis::Pipeline,
    key: &str,
    meta: &str,
    fields: impl Iterator<Item = &'a (String, u32)>,
) {
    let cmd = pipe.cmd("HSET").arg(key).arg(Names::META).arg(meta);
    for (field, n) in fields {
        cmd.arg(field).arg(*n);
    }
    cmd.ignore();
}

/// A round's frames on a Redis Cluster: a pipeline per inbox (one slot
/// each), all under way at once; the answers in the round's order.
async fn publish_sharded(con: &Commands, round: &Round) -> redis::RedisResult<Vec<i64>> {
    let mut by_channel: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, ready) in round.frames.iter().enumerate() {
        match by_channel.iter_mut().find(|(c, _)| *c == ready.channel) {
            Some((_, at)) => at.push(i),
            None => by_channel.push((&ready.channel, vec![i])),
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (channel, at) in by_channel {
        let mut pipe = redis::pipe();
        for &i in &at {
            pipe.cmd("SPUBLISH").arg(channel).arg(round.frames[i].frame.as_ref());
        }
        let mut con = con.clone();
        tasks.spawn_local(async move {
            let readers: Vec<i64> = pipe.query_async(&mut con).await?;
            Ok::<_, redis::RedisError>((at, readers))
        });
    }
    let mut readers = vec![0; round.frames.len()];
    while let Some(done) = tasks.join_next().await {
        let (at, got) = done.map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "publish task", e.to_string()))
        })??;
        for (i, n) in at.into_iter().zip(got) {
            readers[i] = n;
        }
    }
    Ok(readers)
}

/// The heartbeat: keeps the snapshot alive and says so on the control
/// channel. Returns false when Redis had lost the snapshot. Every key and
/// channel here shares the control slot.
pub(crate) async fn heartbeat(
    con: &mut Commands,
    names: &Names,
    node: &str,
    ttl_ms: u64,
    alive: &[u8],
) -> redis::RedisResult<bool> {
    let verb = con.publish_verb();
    let (kept, _, _): (i64, i64, i64) = redis::pipe()
        .pexpire(names.snapshot(node), ttl_ms as i64)
        .sadd(names.registry(), node)
        .cmd(verb)
        .arg(names.control())
        .arg(alive)
        .query_async(con)
        .await?;
    Ok(kept == 1)
}

/// Says something on the control channel.
pub(crate) async fn announce(
    con: &mut Commands,
    names: &Names,
    body: &[u8],
) -> redis::RedisResult<()> {
    let verb = con.publish_verb();
    redis::cmd(verb).arg(names.control()).arg(body).query_async::<i64>(con).await.map(drop)
}

/// Takes this node out of Redis and says `bye`: the snapshot and the
/// registry entry go with it.
pub(crate) async fn leave(
    con: &mut Commands,
    names: &Names,
    node: &str,
    bye: &[u8],
) -> redis::RedisResult<()> {
    let verb = con.publish_verb();
    redis::pipe()
        .del(names.snapshot(node))
        .ignore()
        .srem(names.registry(), node)
        .ignore()
        .cmd(verb)
        .arg(names.control())
        .arg(bye)
        .ignore()
        .query_async::<()>(con)
        .await
}

/// Reads one snapshot; `None` when the key is gone.
pub(crate) async fn read_snapshot(
    con: &mut Commands,
    key: &str,
) -> redis::RedisResult<Option<Snapshot>> {
    let fields: HashMap<String, String> = redis::cmd("HGETALL").arg(key).query_async(con).await?;
    Ok(parse_snapshot(fields))
}

fn parse_snapshot(mut fields: HashMap<String, String>) -> Option<Snapshot> {
    let meta = fields.remove(Names::META)?;
    let mut parts = meta.split(' ').map(str::parse::<u64>);
    let (Some(Ok(incarnation)), Some(Ok(seq)), Some(Ok(max_frame))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let items = fields
        .into_iter()
        .filter_map(|(f, v)| Some((f.into_boxed_str(), v.parse::<u32>().ok().filter(|n| *n > 0)?)))
        .collect();
    Some(Snapshot { incarnation, seq, max_frame: u32::try_from(max_frame).unwrap_or(0), items })
}

/// The names in the registry whose snapshot still exists, with it; the
/// others leave the registry. Each command has `timeout`, so a large
/// cluster takes as long as it needs, one answer at a time.
pub(crate) async fn read_registry(
    con: &mut Commands,
    names: &Names,
    timeout: Duration,
) -> redis::RedisResult<Vec<(String, Snapshot)>> {
    let late = || redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"));
    let mut smembers = redis::cmd("SMEMBERS");
    smembers.arg(names.registry());
    let members: Vec<String> =
        tokio::time::timeout(timeout, smembers.query_async(con)).await.map_err(|_| late())??;
    let mut live = Vec::new();
    for name in members {
        let key = names.snapshot(&name);
        match tokio::time::timeout(timeout, read_snapshot(con, &key))
            .await
            .map_err(|_| late())??
        {
            Some(snapshot) => live.push((name, snapshot)),
            None => {
                let mut srem = redis::cmd("SREM");
                srem.arg(names.registry()).arg(&name);
                let srem = srem.query_async::<i64>(con);
                tokio::time::timeout(timeout, srem).await.map_err(|_| late())??;
            }
        }
    }
    Ok(live)
}
