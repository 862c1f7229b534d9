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
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, ProtocolVersion, PushKind, Value};
use tokio::sync::mpsc;

use super::{bridge::Round, names::Names, peers::Snapshot, ClusterConfig, ClusterCounters};

/// What the subscriber connection hands the dispatcher.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A frame on this node's inbox.
    Frame(Bytes),
    /// An announcement on the control channel.
    Control(Bytes),
    /// The connection closed.
    Closed,
}

/// Most frames waiting for the dispatcher, whatever their size (bytes are
/// bounded by `in_queue` too).
const INBOUND_FRAMES: usize = 4096;

/// The connections of one spell of being connected.
pub(crate) struct Connections {
    pub commands: MultiplexedConnection,
    /// Kept open: dropping it ends the subscription.
    _subscriber: MultiplexedConnection,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connections")
    }
}

/// The queue from the subscriber connection to the dispatcher.
pub(crate) fn inbound_queue() -> (mpsc::Sender<Inbound>, mpsc::Receiver<Inbound>) {
    mpsc::channel(INBOUND_FRAMES)
}

fn client(cfg: &ClusterConfig) -> redis::RedisResult<redis::Client> {
    let mut info: redis::ConnectionInfo =
        redis::IntoConnectionInfo::into_connection_info(cfg.redis.as_str())?;
    let mut settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    if let Some(user) = &cfg.username {
        settings = settings.set_username(user);
    }
    if let Some(path) = &cfg.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "cannot read cluster.password_file",
                e.to_string(),
            ))
        })?;
        settings = settings.set_password(text.lines().next().unwrap_or("").trim());
    }
    info = info.set_redis_settings(settings);
    match &cfg.tls {
        None => redis::Client::open(info),
        Some(tls) => redis::Client::build_with_tls(info, certificates(tls)?),
    }
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
    inbound: mpsc::Sender<Inbound>,
    counters: Arc<ClusterCounters>,
) -> redis::RedisResult<Connections> {
    let client = client(cfg)?;
    let timeout = Duration::from_millis(cfg.command_timeout_ms);
    let base = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let commands = client.get_multiplexed_async_connection_with_config(&base).await?;
    let (inbox, control) = (channels.0.to_string(), channels.1.to_string());
    let limit = cfg.in_queue as u64;
    let push = move |info: redis::PushInfo| -> Result<(), ()> {
        on_push(info, (&inbox, &control), &inbound, &counters, limit);
        Ok(())
    };
    // Pushes are handled as they are read; the subscriber sends no
    // commands that could wait behind them, so no response timeout.
    let sub_cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None)
        .set_push_sender(push);
    let mut subscriber = client.get_multiplexed_async_connection_with_config(&sub_cfg).await?;
    subscriber.subscribe(&[channels.0, channels.1]).await?;
    Ok(Connections { commands, _subscriber: subscriber })
}

/// One push from the subscriber connection, into the bounded queue.
fn on_push(
    info: redis::PushInfo,
    (inbox, control): (&str, &str),
    inbound: &mpsc::Sender<Inbound>,
    counters: &ClusterCounters,
    limit: u64,
) {
    let item = match info.kind {
        PushKind::Disconnection => Inbound::Closed,
        PushKind::Message => {
            let mut data = info.data.into_iter();
            let (Some(channel), Some(Value::BulkString(payload))) = (data.next(), data.next())
            else {
                return;
            };
            let channel = match channel {
                Value::BulkString(c) => c,
                _ => return,
            };
            if channel == control.as_bytes() {
                Inbound::Control(Bytes::from(payload))
            } else if channel == inbox.as_bytes() {
                let len = payload.len() as u64;
                let queued = counters.in_queue_bytes.load(Ordering::Relaxed);
                if queued + len > limit {
                    bump(&counters.in_dropped_full);
                    return;
                }
                counters.in_queue_bytes.fetch_add(len, Ordering::Relaxed);
                Inbound::Frame(Bytes::from(payload))
            } else {
                return;
            }
        }
        _ => return,
    };
    let frame_len = match &item {
        Inbound::Frame(b) => b.len() as u64,
        _ => 0,
    };
    if inbound.try_send(item).is_err() {
        counters.in_queue_bytes.fetch_sub(frame_len, Ordering::Relaxed);
        bump(&counters.in_dropped_full);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Writes one round: the snapshot's changes, then the frames, in one
/// transaction. Returns how many read each frame's channel.
pub(crate) async fn write_round(
    con: &mut MultiplexedConnection,
    names: &Names,
    node: &str,
    ttl_ms: u64,
    round: &Round,
) -> redis::RedisResult<Vec<i64>> {
    let key = names.snapshot(node);
    let mut pipe = redis::pipe();
    pipe.atomic();
    if let Some(items) = &round.rewrite {
        pipe.del(&key).ignore();
        let mut fields: Vec<(&str, String)> = vec![(Names::META, round.meta.clone())];
        fields.extend(items.iter().map(|(f, n)| (f.as_str(), n.to_string())));
        pipe.hset_multiple(&key, &fields).ignore();
        pipe.pexpire(&key, ttl_ms as i64).ignore();
        pipe.sadd(names.registry(), node).ignore();
    }
    if !round.changes.is_empty() {
        let (set, gone): (Vec<_>, Vec<_>) = round.changes.iter().partition(|(_, n)| *n > 0);
        let mut fields: Vec<(&str, String)> = vec![(Names::META, round.meta.clone())];
        fields.extend(set.iter().map(|(f, n)| (f.as_str(), n.to_string())));
        pipe.hset_multiple(&key, &fields).ignore();
        if !gone.is_empty() {
            let gone: Vec<&str> = gone.iter().map(|(f, _)| f.as_str()).collect();
            pipe.hdel(&key, gone).ignore();
        }
    }
    for ready in &round.frames {
        pipe.publish(&ready.channel, ready.frame.as_ref());
    }
    if round.frames.is_empty() {
        pipe.query_async::<()>(con).await?;
        return Ok(Vec::new());
    }
    pipe.query_async(con).await
}

/// The heartbeat: keeps the snapshot alive and says so on the control
/// channel. Returns false when Redis had lost the snapshot.
pub(crate) async fn heartbeat(
    con: &mut MultiplexedConnection,
    names: &Names,
    node: &str,
    ttl_ms: u64,
    alive: &[u8],
) -> redis::RedisResult<bool> {
    let (kept, _, _): (i64, i64, i64) = redis::pipe()
        .pexpire(names.snapshot(node), ttl_ms as i64)
        .sadd(names.registry(), node)
        .publish(names.control(), alive)
        .query_async(con)
        .await?;
    Ok(kept == 1)
}

/// Says something on the control channel.
pub(crate) async fn announce(
    con: &mut MultiplexedConnection,
    names: &Names,
    body: &[u8],
) -> redis::RedisResult<()> {
    redis::cmd("PUBLISH").arg(names.control()).arg(body).query_async::<i64>(con).await.map(drop)
}

/// Reads one snapshot; `None` when the key is gone.
pub(crate) async fn read_snapshot(
    con: &mut MultiplexedConnection,
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
/// others leave the registry.
pub(crate) async fn read_registry(
    con: &mut MultiplexedConnection,
    names: &Names,
) -> redis::RedisResult<Vec<(String, Snapshot)>> {
    let members: Vec<String> =
        redis::cmd("SMEMBERS").arg(names.registry()).query_async(con).await?;
    let mut live = Vec::new();
    for name in members {
        match read_snapshot(con, &names.snapshot(&name)).await? {
            Some(snapshot) => live.push((name, snapshot)),
            None => {
                redis::cmd("SREM").arg(names.registry()).arg(&name).query_async::<i64>(con).await?;
            }
        }
    }
    Ok(live)
}
