//! The sweeper: the one timer task of a core.
//!
//! Every tick it pings the silent, closes the stale, the never-welcomed and
//! those whose socket took nothing within the write deadline, ends drains
//! whose deadline passed, and hands spare pool chunks back to the kernel.
//! While no slot has a short deadline it sleeps on a long tick, and a slot
//! that gets one nudges it awake.

use std::{
    future::poll_fn,
    rc::Rc,
    time::{Duration, Instant},
};

use corecast_proto::ServerFrame;
use futures_lite::future;
use glommio::timer::sleep;

use super::{
    shard::{Shard, State},
    slot::{ms_duration, Exit, Limit, Phase, Slot},
};
use crate::{config::Config, mem::WARM_KEEP, tls::TlsFailure};

pub(super) async fn sweep(shard: Rc<Shard>) {
    let mut busy = true;
    let mut expired = Vec::new();
    loop {
        // Read each time: a reload may change them.
        let (busy_tick, idle_tick) = shard.cfg().sweep_intervals();
        if busy {
            sleep(busy_tick).await;
        } else {
            future::or(sleep(idle_tick), poll_fn(|cx| shard.poll_nudge(cx.waker()))).await;
        }
        let limits = SweepLimits::new(&shard.cfg());
        let now = Instant::now();
        shard.clock.set(now);
        let mut guard = shard.state.borrow_mut();
        let st = &mut *guard;
        busy = false;
        for (key, slot) in st.slots.iter_mut() {
            if matches!(slot.phase(), Phase::Handshake | Phase::Draining { .. }) {
                busy = true;
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
                    if st.push(&shard, key, &ServerFrame::Ping { nonce }) {
                        st.slots[key].ping_sent();
                    }
                }
                Due::Close(why) => st.leave(&shard, key, why, ""),
                Due::End => {}
            }
        }
        let State { routes, mem, .. } = &mut *st;
        routes.release_idle(mem);
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
    tls_handshake: Duration,
    write_deadline: Duration,
}

impl SweepLimits {
    fn new(cfg: &Config) -> Self {
        Self {
            ping_after: ms_duration(cfg.ping_interval_ms),
            stale_after: ms_duration(cfg.stale_after_ms),
            handshake: ms_duration(cfg.handshake_timeout_ms),
            tls_handshake: cfg
                .tls
                .as_ref()
                .map_or(Duration::MAX, |t| ms_duration(t.handshake_timeout_ms)),
            write_deadline: ms_duration(cfg.write_deadline_ms),
        }
    }

    fn due(&self, slot: &Slot, now: Instant) -> Option<Due> {
        let blocked_too_long =
            slot.write_blocked_since().is_some_and(|since| now - since > self.write_deadline);
        let waited = now.saturating_duration_since(slot.accepted_at());
        Some(match slot.phase() {
            Phase::Handshake if slot.tls_handshaking() && waited > self.tls_handshake => {
                Due::Close(Exit::Tls(TlsFailure::HandshakeTimeout))
            }
            Phase::Handshake if now - slot.accepted_at() > self.handshake => {
                Due::Close(Exit::HandshakeTimeout)
            }
            Phase::Open if blocked_too_long => Due::Close(Exit::SlowConsumer(Limit::WriteDeadline)),
            Phase::Open if slot.credential_expired(now) => Due::Close(Exit::CredentialExpired),
            Phase::Open if now - slot.last_inbound() > self.stale_after => Due::Close(Exit::Stale),
            Phase::Open
                if now - slot.last_inbound() > self.ping_after && !slot.ping_outstanding() =>
            {
                Due::Ping
            }
            Phase::Draining { until } if now > until => Due::End,
            _ => return None,
        })
    }
}
