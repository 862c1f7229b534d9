//! A connection slot: the per-connection state other tasks of the core can
//! reach (to queue messages, to wake it, to close it), and its lifecycle.
//!
//! ```text
//! Handshake ──HELLO──▶ Open ──any way out──▶ Draining ──flushed/deadline──▶ Closed ──▶ Free
//!     └───────────────────────────────────────────┴──── EOF / reset ───────────▲
//! ```
//!
//! Leaving `Open` ([`Slot::begin_leave`]) gives back every chunk of input and
//! every queued frame that has not started going out, and queues the final
//! frame; the core removes the subscriptions at the same moment. `Draining`
//! only delivers the final `ERR` or `GOAWAY` within a deadline; `Free` is the
//! slab entry removed with nothing left to give back.
//!
//! The slot's fields are its own: the phase changes only through
//! [`Slot::open`], [`Slot::begin_leave`], [`Slot::drain_until`] and
//! [`Slot::close`], and everything else through methods named for what
//! happened (bytes arrived, the socket took output, a `PING` went out).

use std::{collections::HashMap, net::SocketAddr, rc::Rc, sync::Arc, task::Waker, time::Instant};

use corecast_proto::{
    ErrFrame, ErrorCode, ServerFrame, ServerFrame11, GOAWAY_LAME_DUCK, GOAWAY_SHUTDOWN,
};

use crate::{
    auth::{access::Access, verifier::Pending, CredentialKind},
    cmd::LoginAnswer,
    mem::{
        prefetch,
        queue::{ChunkQueue, Item},
        Charge, Memory, PageBuf, CHUNK,
    },
    mesh::barrier::Pongs,
    tls::TlsFailure,
};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted; waiting for `HELLO`.
    Handshake,
    /// Welcomed; may subscribe and publish.
    Open,
    /// Left `Open`: subscriptions gone, flushing a final frame until `until`.
    Draining { until: Instant },
    /// The task ends and frees the slot.
    Closed,
}

/// Which limit a frame ran into, and so why a subscriber was a slow
/// consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// It had `max_pending` bytes queued.
    MaxPending,
    /// Its socket took nothing for `write_deadline_ms` with output queued.
    WriteDeadline,
    /// The core's pending budget was full and it held the most.
    Budget,
}

/// Why a connection left `Open` (or never reached it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The client closed its side.
    Eof,
    /// The socket failed (reset, broken pipe).
    Reset,
    /// The client broke the protocol; the code goes out in a fatal `ERR`.
    Protocol(ErrorCode),
    /// The client could not take its messages.
    SlowConsumer(Limit),
    /// The budget could not hold a frame the client was sending.
    OutOfMemory,
    /// The client went silent past the idle limit.
    Stale,
    /// No `HELLO` within the handshake timeout.
    HandshakeTimeout,
    /// The broker is shutting down.
    Shutdown,
    /// The broker is in lame duck mode and sends its clients elsewhere.
    LameDuck,
    /// The connection task panicked.
    Panic,
    /// TLS failed: a handshake that did not complete, or a bad record.
    Tls(TlsFailure),
    /// The credential it logged in with expired (a JWT's `exp`).
    CredentialExpired,
    /// The web port refused its request, or its WebSocket session closed.
    Web(WebExit),
}

/// How a web-port connection ended at the HTTP or WebSocket level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebExit {
    /// Its request was answered with this HTTP status and closed.
    Refused(u16),
    /// Its request was for a page (the demo), answered with this HTTP
    /// status and closed.
    Served(u16),
    /// Its WebSocket session closed with this code (1000: the client
    /// closed it; others: a protocol violation the broker closed it for).
    Closed(u16),
}

impl Exit {
    /// The code and text of the final `ERR`, for exits that send one.
    fn error(self) -> Option<(ErrorCode, &'static str)> {
        Some(match self {
            Self::Protocol(code) => (code, code.name()),
            Self::SlowConsumer(Limit::MaxPending) => {
                (ErrorCode::SlowConsumer, "slow consumer: max_pending bytes queued")
            }
            Self::SlowConsumer(Limit::WriteDeadline) => (
                ErrorCode::SlowConsumer,
                "slow consumer: socket took nothing within write_deadline",
            ),
            Self::SlowConsumer(Limit::Budget) => {
                (ErrorCode::SlowConsumer, "slow consumer: server memory budget full")
            }
            Self::OutOfMemory => {
                (ErrorCode::OutOfMemory, "server memory budget cannot hold this frame")
            }
            Self::Stale => (ErrorCode::StaleConnection, "no traffic within the idle limit"),
            Self::HandshakeTimeout => (ErrorCode::HandshakeTimeout, "no HELLO within the timeout"),
            Self::CredentialExpired => (ErrorCode::AuthFailed, "credential expired"),
            Self::Eof
            | Self::Reset
            | Self::Panic
            | Self::Shutdown
            | Self::LameDuck
            | Self::Web(_)
            | Self::Tls(_) => return None,
        })
    }
}

impl Exit {
    /// Whether the broker chose to end the connection (as opposed to the
    /// client closing, its socket failing, or a shutdown): what an operator
    /// is told about at the default log level.
    pub(crate) fn is_broker_choice(self) -> bool {
        !matches!(
            self,
            Self::Eof
                | Self::Reset
                | Self::Shutdown
                | Self::LameDuck
                | Self::Tls(TlsFailure::Abandoned)
                | Self::Web(WebExit::Closed(1000) | WebExit::Served(_))
        )
    }

    /// The reason in words, for logs and `/connz?state=closed`.
    pub(crate) fn describe(self) -> String {
        match self {
            Self::Eof => "client closed".into(),
            Self::Reset => "connection reset".into(),
            Self::Protocol(ErrorCode::AuthFailed) => "auth failed".into(),
            Self::Protocol(code) => format!("protocol error {} ({})", code.as_u16(), code.name()),
            Self::SlowConsumer(Limit::MaxPending) => "slow consumer: max_pending".into(),
            Self::SlowConsumer(Limit::WriteDeadline) => "slow consumer: write_deadline".into(),
            Self::SlowConsumer(Limit::Budget) => "slow consumer: pending_budget".into(),
            Self::OutOfMemory => "frame too large for pending_budget".into(),
            Self::Stale => "stale: no traffic within stale_after".into(),
            Self::HandshakeTimeout => "handshake timeout".into(),
            Self::Shutdown => "server shutdown".into(),
            Self::LameDuck => "lame duck: sent elsewhere".into(),
            Self::Panic => "connection task panicked".into(),
            Self::Tls(failure) => failure.describe().into(),
            Self::CredentialExpired => "auth: credential expired".into(),
            Self::Web(WebExit::Refused(status)) => {
                format!("web: request refused with HTTP {status}")
            }
            Self::Web(WebExit::Served(status)) => format!("web: page served with HTTP {status}"),
            Self::Web(WebExit::Closed(1000)) => "websocket: client closed".into(),
            Self::Web(WebExit::Closed(code)) => format!("websocket: closed with code {code}"),
        }
    }

    /// The protocol error code sent in the final `ERR`, if one was.
    pub(crate) fn code(self) -> Option<u16> {
        self.error().map(|(code, _)| code.as_u16())
    }
}

/// What a connection sent and received, for `/connz` and its closed record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Messages it published.
    pub msgs_in: u64,
    /// Messages queued to it.
    pub msgs_out: u64,
    /// Bytes read from its socket.
    pub bytes_in: u64,
    /// Bytes written to its socket.
    pub bytes_out: u64,
    /// Messages dropped on its lossy subscriptions.
    pub drops: u64,
}

/// A subscription as its connection sees it.
#[derive(Debug)]
pub(crate) struct SlotSub {
    /// The topic (a pattern in 1.1 sessions), to find the subscription in
    /// the core's topic table when it goes.
    pub topic: Rc<str>,
    /// The queue group it is a member of, if any (1.1 sessions only).
    pub queue: Option<Rc<str>>,
    /// Drop and count instead of disconnecting when the subscriber is slow.
    pub lossy: bool,
    /// Messages dropped since the last `DROPPED` notice.
    pub dropped: u64,
    /// The pattern overlaps a deny rule of the user: each delivery's topic
    /// is checked.
    pub guarded: bool,
}

/// What the client asked for in `HELLO` and was granted: the protocol
/// version of the session and its options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Session {
    /// A version 1.1 session: it decodes 1.1 frames and receives `HMSG`
    /// and `NO_RESPONDERS`. Otherwise every byte is as in version 1.
    pub v1_1: bool,
    /// Its own publications never reach its own subscriptions.
    pub no_echo: bool,
}

/// Input read from the socket and not yet applied.
#[derive(Debug, Default)]
pub(crate) struct Input {
    /// Bytes left over after the last whole frame, in chunks.
    pub stash: ChunkQueue<false>,
    /// A frame too large for the core's read scratch, being filled.
    pub large: Option<LargeFrame>,
}

/// One large input frame, read straight into a buffer of its own size.
#[derive(Debug)]
pub(crate) struct LargeFrame {
    pub buf: PageBuf,
    /// Bytes of the frame read so far.
    pub filled: usize,
}

impl Input {
    /// Budget bytes held.
    fn held(&self) -> usize {
        self.stash.chunks() * CHUNK + self.large.as_ref().map_or(0, |l| l.buf.mapped())
    }

    /// Whether it holds no input.
    pub(crate) fn is_empty(&self) -> bool {
        self.stash.is_empty() && self.large.is_none()
    }

    /// Gives everything back.
    fn release(&mut self, mem: &mut Memory) {
        self.stash.clear(mem);
        if let Some(large) = self.large.take() {
            mem.give_large(large.buf);
        }
    }
}

/// One connection's shared state.
///
/// `repr(C)`, hot fields first: a fan-out touches `out`, `phase`,
/// `write_blocked_since`, `notified` and `waker` of every subscriber, and
/// keeping them in the slot's first lines lets [`Slot::prefetch`] bring
/// exactly those in ahead of the loop.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Slot {
    /// Frames queued for the client.
    out: ChunkQueue<true>,
    phase: Phase,
    /// Since when the socket has refused output while some was queued; the
    /// sweeper cuts the connection once this is `write_deadline_ms` old.
    write_blocked_since: Option<Instant>,
    /// The connection task, to wake when there is something to write.
    waker: Option<Waker>,
    /// Set once the task has been woken for the current batch, so a fan-out
    /// of many messages wakes it once.
    notified: bool,
    /// A server `PING` went out and no bytes arrived since.
    ping_outstanding: bool,
    /// Some subscription has drops not yet reported with `DROPPED`.
    unreported_drops: bool,
    /// Deliveries need a look at [`Slot::admit`]: a subscription's pattern
    /// overlaps a deny rule, or the user answers requests under
    /// `allow_responses`. Everyone else's deliveries skip it.
    watch: bool,
    /// The last fan-out pass that saw this connection among a topic's
    /// subscribers ([`Slot::visit`]).
    visited: u32,
    /// Broker-wide connection id, sent in `WELCOME`.
    id: u64,
    /// Client address, for logs.
    peer: SocketAddr,
    /// Negotiated in `HELLO`; version 1 until then.
    session: Session,
    /// Input not yet applied; taken out by the connection while it applies.
    input: Input,
    /// Subscriptions by sid.
    subs: HashMap<u32, SlotSub>,
    /// Drops of subscriptions already removed whose `DROPPED` did not fit
    /// yet, by sid, oldest first; at most `max_subscriptions` long.
    orphan_drops: Vec<(u32, u64)>,
    /// `PONG`s waiting for a barrier or for drop reports, in order.
    pongs: Pongs,
    /// When the connection was accepted, for the handshake timeout.
    accepted_at: Instant,
    /// Last time bytes arrived (coarse clock).
    last_inbound: Instant,
    /// The name the client gave in `HELLO`, if any, for operators.
    name: Option<Box<str>>,
    /// What it sent and received.
    traffic: Traffic,
    /// Why it left `Open` (or never reached it), once it has.
    exit: Option<Exit>,
    /// Subscriptions it held when it left.
    subs_at_exit: usize,
    /// What its user may do; none when everything is allowed.
    access: Option<Box<Access>>,
    /// Who it authenticated as, for operators and reloads.
    who: Who,
    /// A password check under way for its `HELLO`.
    login: Option<Arc<Pending<LoginAnswer>>>,
    /// TLS on this connection; `None` for plain TCP (one pointer).
    tls: Option<Box<SlotTls>>,
    /// The credential a web request carried (`Authorization`, or the
    /// `token` parameter) as a typed credential, for a `HELLO` without one.
    at_upgrade: Option<Box<[u8]>>,
}

/// What the slot of a TLS connection knows of its TLS.
#[derive(Debug, Default)]
pub(crate) struct SlotTls {
    /// The handshake is complete.
    pub established: bool,
    /// The protocol version negotiated, once established.
    pub version: Option<&'static str>,
    /// The verified client certificate's subject (RFC 4514), if any.
    pub subject: Option<Box<str>>,
}

/// Who a client proved to be, and what vouched for it.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    /// The user; `None` for a client without one (no authentication, or
    /// the shared token).
    pub user: Option<Arc<str>>,
    /// How it proved it.
    pub credential: CredentialKind,
    /// When that credential stops being good (a JWT's `exp`): the sweeper
    /// ends the session then.
    pub expires: Option<Instant>,
    /// What vouched for it at login ([`crate::auth::Authenticator::voucher`]):
    /// a reload keeps the session while the same still does.
    pub voucher: u64,
    /// Its rules came from a configured user (not a JWT's claim).
    pub configured: bool,
    /// For a JWT subject that is no configured user: the rules its token
    /// gave it, which it goes back to when a reload removes a user of its
    /// name that it had taken the rules of.
    pub token_rules: TokenRules,
    /// Its user's tag ([`crate::auth::principal`]), which its requests
    /// carry.
    pub principal: u64,
}

/// The rules a JWT gave a subject that is no configured user.
#[derive(Debug, Clone)]
pub(crate) enum TokenRules {
    /// Not such a session.
    None,
    /// `default_permissions`, whatever a reload makes them.
    Default,
    /// The token's `corecast` claim.
    Claim(Arc<crate::auth::permissions::Compiled>),
}

impl Who {
    /// Not authenticated (yet).
    pub(crate) fn nobody() -> Self {
        Self {
            user: None,
            credential: CredentialKind::None,
            expires: None,
            voucher: 0,
            configured: false,
            token_rules: TokenRules::None,
            principal: 0,
        }
    }
}

/// Bytes from a slot's start that hold the fields a fan-out touches.
const HOT_BYTES: usize = std::mem::offset_of!(Slot, id);

impl Slot {
    pub(crate) fn new(id: u64, peer: SocketAddr, now: Instant) -> Self {
        Self {
            id,
            peer,
            session: Session::default(),
            phase: Phase::Handshake,
            out: ChunkQueue::default(),
            input: Input::default(),
            waker: None,
            notified: false,
            subs: HashMap::new(),
            unreported_drops: false,
            orphan_drops: Vec::new(),
            pongs: Pongs::default(),
            accepted_at: now,
            last_inbound: now,
            write_blocked_since: None,
            ping_outstanding: false,
            visited: 0,
            name: None,
            traffic: Traffic::default(),
            exit: None,
            subs_at_exit: 0,
            access: None,
            watch: false,
            who: Who::nobody(),
            login: None,
            tls: None,
            at_upgrade: None,
        }
    }

    /// The connection arrived on the TLS port; its handshake begins.
    pub(crate) fn start_tls(&mut self) {
        self.tls = Some(Box::default());
    }

    /// The TLS handshake completed with `version`, and the client
    /// certificate with `subject` if one was presented.
    pub(crate) fn tls_established(&mut self, version: &'static str, subject: Option<String>) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.established = true;
            tls.version = Some(version);
            tls.subject = subject.map(String::into_boxed_str);
        }
    }

    /// Keeps the typed credential a web request carried.
    pub(crate) fn present_at_upgrade(&mut self, credential: Vec<u8>) {
        self.at_upgrade = Some(credential.into_boxed_slice());
    }

    /// The typed credential the web request carried, if any.
    pub(crate) fn credential_at_upgrade(&self) -> Option<&[u8]> {
        self.at_upgrade.as_deref()
    }

    /// The login is over: the request's credential is not kept longer.
    pub(crate) fn forget_credential_at_upgrade(&mut self) {
        self.at_upgrade = None;
    }

    /// Whether the connection came in on the TLS port.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A TLS connection whose handshake is not complete yet.
    pub(crate) fn tls_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.established)
    }

    /// The TLS version negotiated, once the handshake completed.
    pub(crate) fn tls_version(&self) -> Option<&'static str> {
        self.tls.as_ref().and_then(|t| t.version)
    }

    /// The subject (RFC 4514, e.g. `CN=svc-a,O=corp`) of the client
    /// certificate the TLS handshake verified, if one was presented.
    pub(crate) fn tls_subject(&self) -> Option<&str> {
        self.tls.as_ref().and_then(|t| t.subject.as_deref())
    }

    /// Marks the connection as seen by fan-out pass `pass`; false when it
    /// was already (it holds two of the subscriptions being walked). A mark
    /// left from 2³² passes ago only makes a batch go message by message.
    pub(crate) fn visit(&mut self, pass: u32) -> bool {
        std::mem::replace(&mut self.visited, pass) != pass
    }

    /// Hints the CPU to fetch the lines a fan-out will touch.
    #[inline(always)]
    pub(crate) fn prefetch(&self) {
        let start = (self as *const Self).cast::<u8>();
        for off in (0..HOT_BYTES).step_by(64) {
            prefetch::line(start.wrapping_add(off));
        }
    }

    /// Broker-wide connection id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// In `Handshake` or `Open`: not yet leaving.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Handshake | Phase::Open)
    }

    /// What `HELLO` negotiated.
    pub(crate) fn session(&self) -> Session {
        self.session
    }

    /// `Handshake → Open`, once `WELCOME` is queued, with what it granted
    /// and the name the client gave.
    pub(crate) fn open(&mut self, session: Session, name: &str) {
        debug_assert_eq!(self.phase, Phase::Handshake);
        self.phase = Phase::Open;
        self.session = session;
        self.name = (!name.is_empty()).then(|| name.into());
    }

    /// The name the client gave in `HELLO`, if any.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Records who the client authenticated as.
    pub(crate) fn identify(&mut self, who: Who) {
        self.who = who;
    }

    /// Who the client authenticated as.
    pub(crate) fn who(&self) -> &Who {
        &self.who
    }

    /// Whether its credential has expired by `now`.
    pub(crate) fn credential_expired(&self, now: Instant) -> bool {
        self.who.expires.is_some_and(|at| now >= at)
    }

    /// The user it authenticated as, if any.
    pub(crate) fn user(&self) -> Option<&Arc<str>> {
        self.who.user.as_ref()
    }

    /// How it proved who it is.
    pub(crate) fn credential(&self) -> CredentialKind {
        self.who.credential
    }

    /// The password check under way for its `HELLO`, if any.
    pub(crate) fn login(&self) -> Option<Arc<Pending<LoginAnswer>>> {
        self.login.clone()
    }

    /// A password check started for its `HELLO`.
    pub(crate) fn start_login(&mut self, pending: Arc<Pending<LoginAnswer>>) {
        self.login = Some(pending);
    }

    /// The password check answered.
    pub(crate) fn end_login(&mut self) {
        self.login = None;
    }

    /// Gives the connection its user's access: at `HELLO`, and again when
    /// a reload changes the rules.
    pub(crate) fn authorize(&mut self, access: Box<Access>) {
        self.watch = access.notes_requests() || self.subs.values().any(|s| s.guarded);
        self.access = Some(access);
    }

    /// Marks again which subscriptions' deliveries are checked, after a
    /// reload changed the deny rules.
    pub(crate) fn reguard(&mut self, overlaps_deny: impl Fn(&str) -> bool) {
        for sub in self.subs.values_mut() {
            sub.guarded = overlaps_deny(&sub.topic);
        }
        let notes = self.access.as_ref().is_some_and(|a| a.notes_requests());
        self.watch = notes || self.subs.values().any(|s| s.guarded);
    }

    /// What its user may do; `None` when everything is allowed.
    pub(crate) fn access(&self) -> Option<&Access> {
        self.access.as_deref()
    }

    /// As [`Slot::access`], to use a permit or charge the rate.
    pub(crate) fn access_mut(&mut self) -> Option<&mut Access> {
        self.access.as_deref_mut()
    }

    /// Whether deliveries to this connection go through [`Slot::admit`].
    #[inline]
    pub(crate) fn watches(&self) -> bool {
        self.watch
    }

    /// Whether subscription `sid` may receive a message on `topic` (no
    /// deny rule of its user covers it), without taking any permit: what
    /// the draw of a queue group member asks.
    pub(crate) fn may_deliver(&self, sid: u32, topic: &str) -> bool {
        if !self.watch {
            return true;
        }
        let guarded = self.subs.get(&sid).is_some_and(|s| s.guarded);
        !guarded || self.access.as_ref().is_none_or(|a| a.grant().may_receive(topic))
    }

    /// Whether messages on `topic` may reach subscription `sid`; the
    /// requests of other users among them (`requests`: reply-to and
    /// requester) become permits to answer.
    pub(crate) fn admit<'a>(
        &mut self,
        sid: u32,
        topic: &str,
        requests: impl Iterator<Item = (&'a str, u64)>,
        now: &mut Option<Instant>,
    ) -> bool {
        let guarded = self.subs.get(&sid).is_some_and(|s| s.guarded);
        self.access.as_mut().is_none_or(|a| a.admit(guarded, topic, requests, now))
    }

    /// Why it left `Open` (or never reached it), once it has.
    pub(crate) fn exit(&self) -> Option<Exit> {
        self.exit
    }

    /// Subscriptions it held when it left.
    pub(crate) fn subs_at_exit(&self) -> usize {
        self.subs_at_exit
    }

    /// What it sent and received so far.
    pub(crate) fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// It published `n` messages.
    pub(crate) fn count_published(&mut self, n: u64) {
        self.traffic.msgs_in += n;
    }

    /// `n` messages were queued to it.
    pub(crate) fn count_delivered(&mut self, n: u64) {
        self.traffic.msgs_out += n;
    }

    /// Its subscriptions, by sid.
    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = (u32, &SlotSub)> + '_ {
        self.subs.iter().map(|(&sid, sub)| (sid, sub))
    }

    /// `Draining → Closed`: the final frame went out, or its time is up.
    pub(crate) fn close(&mut self) {
        self.phase = Phase::Closed;
        self.notify();
    }

    /// Shortens the drain to end by `at` at the latest.
    pub(crate) fn drain_until(&mut self, at: Instant) {
        if let Phase::Draining { until } = &mut self.phase {
            *until = (*until).min(at);
        }
    }

    /// The connection task starts a poll, with `waker`. It flushes before
    /// it returns, so wakes for the frames queued meanwhile are moot.
    pub(crate) fn begin_poll(&mut self, waker: &Waker) {
        self.notified = true;
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }

    /// The connection task's poll ended: the next frame queued wakes it.
    pub(crate) fn end_poll(&mut self) {
        self.notified = false;
    }

    /// Wakes the connection task even if it was woken for this batch
    /// already: what it waited for (a barrier) is there.
    pub(crate) fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }

    /// Frames queued for the client.
    pub(crate) fn out(&self) -> &ChunkQueue<true> {
        &self.out
    }

    /// The socket took the first `n` bytes of the output.
    pub(crate) fn sent(&mut self, mem: &mut Memory, n: usize) {
        self.traffic.bytes_out += n as u64;
        self.out.consume(mem, n);
        self.write_blocked_since = None;
    }

    /// Everything queued went out: no write deadline runs.
    pub(crate) fn flushed(&mut self) {
        self.write_blocked_since = None;
    }

    /// The socket refused output while some was queued: the write deadline
    /// runs from the first refusal.
    pub(crate) fn write_blocked(&mut self) {
        self.write_blocked_since.get_or_insert_with(Instant::now);
    }

    /// Since when the socket has refused the output queued, if it has.
    pub(crate) fn write_blocked_since(&self) -> Option<Instant> {
        self.write_blocked_since
    }

    /// Input read and not yet applied.
    pub(crate) fn input(&self) -> &Input {
        &self.input
    }

    /// Input read and not yet applied, for the connection to fill and take.
    pub(crate) fn input_mut(&mut self) -> &mut Input {
        &mut self.input
    }

    /// Bytes arrived (at `now`, by the coarse clock): the connection is not
    /// silent, and any server `PING` is answered.
    pub(crate) fn note_inbound(&mut self, now: Instant, n: usize) {
        self.traffic.bytes_in += n as u64;
        self.last_inbound = now;
        self.ping_outstanding = false;
    }

    /// When bytes last arrived (coarse clock).
    pub(crate) fn last_inbound(&self) -> Instant {
        self.last_inbound
    }

    /// When the connection was accepted.
    pub(crate) fn accepted_at(&self) -> Instant {
        self.accepted_at
    }

    /// A server `PING` went out and no bytes arrived since.
    pub(crate) fn ping_outstanding(&self) -> bool {
        self.ping_outstanding
    }

    /// A server `PING` went out.
    pub(crate) fn ping_sent(&mut self) {
        self.ping_outstanding = true;
    }

    /// Whether subscription `sid` exists.
    pub(crate) fn has_sub(&self, sid: u32) -> bool {
        self.subs.contains_key(&sid)
    }

    /// How many subscriptions the connection holds.
    pub(crate) fn sub_count(&self) -> usize {
        self.subs.len()
    }

    /// Records subscription `sid`; the core's table has it too.
    pub(crate) fn add_sub(&mut self, sid: u32, sub: SlotSub) {
        self.watch |= sub.guarded;
        self.subs.insert(sid, sub);
    }

    /// Forgets subscription `sid` and returns it.
    pub(crate) fn remove_sub(&mut self, sid: u32) -> Option<SlotSub> {
        self.subs.remove(&sid)
    }

    /// Forgets every subscription and returns them, for a connection that
    /// leaves.
    pub(crate) fn take_subs(&mut self) -> HashMap<u32, SlotSub> {
        std::mem::take(&mut self.subs)
    }

    /// Some drops are not yet reported with `DROPPED`.
    pub(crate) fn has_unreported_drops(&self) -> bool {
        self.unreported_drops
    }

    /// The `PONG`s the connection is owed.
    pub(crate) fn pongs(&self) -> &Pongs {
        &self.pongs
    }

    /// The `PONG`s the connection is owed, for the barrier to change.
    pub(crate) fn pongs_mut(&mut self) -> &mut Pongs {
        &mut self.pongs
    }

    /// Gives back every chunk and buffer the slot holds, as it is freed.
    pub(crate) fn release(&mut self, mem: &mut Memory) {
        self.out.clear(mem);
        self.input.release(mem);
    }

    /// Budget bytes this connection holds: queued output and input.
    pub(crate) fn held(&self) -> usize {
        self.out.held() + self.input.held()
    }

    /// Whether every subscription drops rather than disconnects.
    pub(crate) fn all_lossy(&self) -> bool {
        !self.subs.is_empty() && self.subs.values().all(|s| s.lossy)
    }

    /// Wakes the connection task once per batch of queued frames.
    pub(crate) fn notify(&mut self) {
        if !self.notified {
            self.notified = true;
            if let Some(w) = &self.waker {
                w.wake_by_ref();
            }
        }
    }

    /// Queues encoded frame bytes within `max_pending` and the budget.
    /// A connection whose socket is full is not woken: the socket wakes it
    /// when it has room, so a stalled subscriber costs the copy and nothing
    /// more (no failed `sendmsg` per burst).
    pub(crate) fn queue(&mut self, mem: &mut Memory, item: Item<'_>) -> Result<(), Limit> {
        queue_within(&mut self.out, mem, item)?;
        if self.write_blocked_since.is_none() {
            self.notify();
        }
        Ok(())
    }

    /// Queues a frame; see [`Self::queue`].
    pub(crate) fn push(&mut self, mem: &mut Memory, frame: &impl OutFrame) -> Result<(), Limit> {
        encoded(frame, |bytes| self.queue(mem, Item::Bytes(bytes)))
    }

    /// Queues the frame that ends the session, past any limit (from the
    /// reserve). Without room even there the connection closes without it.
    fn push_final(&mut self, mem: &mut Memory, frame: &ServerFrame<'_>) -> bool {
        encoded(frame, |bytes| self.out.push(mem, bytes, Charge::Reserve))
    }

    /// Leaves `Handshake` or `Open` for `why`: input and unstarted output go
    /// back to the pool at once, the final frame is queued, and the slot
    /// drains until its deadline or closes. Returns whether it was `Open`,
    /// or `None` if it had already left.
    pub(crate) fn begin_leave(
        &mut self,
        mem: &mut Memory,
        why: Exit,
        text: &str,
        deadlines: Deadlines,
    ) -> Option<bool> {
        let was_open = match self.phase {
            Phase::Open => true,
            Phase::Handshake => false,
            Phase::Draining { .. } | Phase::Closed => return None,
        };
        self.exit = Some(why);
        self.subs_at_exit = self.subs.len();
        self.pongs.clear();
        self.input.release(mem);
        let now = Instant::now();
        let drain = |ms: u64| Phase::Draining { until: now + ms_duration(ms) };
        self.phase = match why {
            // Nothing can be said in a TLS session that has not started.
            _ if self.tls_handshaking() => {
                self.out.clear(mem);
                Phase::Closed
            }
            Exit::Eof | Exit::Reset | Exit::Panic | Exit::Tls(_) => {
                self.out.clear(mem);
                Phase::Closed
            }
            // The answer or the close frame the web session holds goes out,
            // then the socket closes; nothing of the queue follows it.
            Exit::Web(_) => {
                self.out.clear(mem);
                drain(deadlines.grace_ms)
            }
            // Every message accepted before the shutdown goes out first.
            Exit::Shutdown | Exit::LameDuck if was_open => {
                let grace_ms = u32::try_from(deadlines.grace_ms).unwrap_or(u32::MAX);
                let reason = if why == Exit::LameDuck { GOAWAY_LAME_DUCK } else { GOAWAY_SHUTDOWN };
                self.push_final(mem, &ServerFrame::GoAway { reason, grace_ms });
                drain(deadlines.grace_ms)
            }
            Exit::Shutdown | Exit::LameDuck => {
                self.push_final_err(mem, ErrorCode::ShuttingDown, "server is shutting down");
                drain(deadlines.grace_ms)
            }
            _ => {
                let (code, default_text) = why.error().unwrap_or((ErrorCode::ShuttingDown, ""));
                if matches!(why, Exit::SlowConsumer(_) | Exit::OutOfMemory) {
                    // What it could not take, or memory it may not keep.
                    self.out.drop_unstarted(mem);
                }
                self.push_final_err(mem, code, if text.is_empty() { default_text } else { text });
                drain(deadlines.linger_ms)
            }
        };
        self.write_blocked_since = None;
        self.notify();
        Some(was_open)
    }

    fn push_final_err(&mut self, mem: &mut Memory, code: ErrorCode, text: &str) {
        let frame = ServerFrame::Err(ErrFrame { code: code.as_u16(), fatal: true, text });
        self.push_final(mem, &frame);
    }

    /// Counts a message dropped on a lossy subscription.
    pub(crate) fn record_drop(&mut self, sid: u32) {
        if let Some(sub) = self.subs.get_mut(&sid) {
            sub.dropped += 1;
            self.unreported_drops = true;
        }
        self.traffic.drops += 1;
    }

    /// Drops every queued message that has not started going out, counting
    /// each on its subscription; other frames stay. Returns how many.
    pub(crate) fn shed_messages(&mut self, mem: &mut Memory) -> u64 {
        let Self { out, subs, unreported_drops, traffic, .. } = self;
        out.shed_messages(mem, |sid| {
            traffic.drops += 1;
            if let Some(sub) = subs.get_mut(&sid) {
                sub.dropped += 1;
                *unreported_drops = true;
            }
        })
    }

    /// Keeps the drop count of a subscription being removed until its
    /// `DROPPED` fits. False when too many are waiting already.
    pub(crate) fn orphan_drops(&mut self, sid: u32, count: u64, max: usize) -> bool {
        if self.orphan_drops.len() >= max {
            return false;
        }
        self.orphan_drops.push((sid, count));
        self.unreported_drops = true;
        true
    }

    /// Queues `DROPPED` notices while they fit, removed subscriptions first;
    /// true when none is left.
    pub(crate) fn report_drops(&mut self, mem: &mut Memory) -> bool {
        let mut reported = 0;
        for &(sid, count) in &self.orphan_drops {
            let frame = ServerFrame::Dropped { sid, count };
            if encoded(&frame, |b| queue_within(&mut self.out, mem, Item::Bytes(b))).is_err() {
                break;
            }
            reported += 1;
        }
        self.orphan_drops.drain(..reported);
        let mut all = self.orphan_drops.is_empty();
        for (&sid, sub) in self.subs.iter_mut().filter(|(_, s)| all && s.dropped > 0) {
            let frame = ServerFrame::Dropped { sid, count: sub.dropped };
            if encoded(&frame, |b| queue_within(&mut self.out, mem, Item::Bytes(b))).is_err() {
                all = false;
                break;
            }
            sub.dropped = 0;
        }
        self.unreported_drops = !all;
        self.notify();
        all
    }
}

/// Appends a frame if the queue stays within `max_pending` and the budget
/// has the chunks.
fn queue_within(out: &mut ChunkQueue<true>, mem: &mut Memory, item: Item<'_>) -> Result<(), Limit> {
    if out.len() + item.len() > mem.max_pending() {
        return Err(Limit::MaxPending);
    }
    if !out.push_item(mem, item, Charge::Budget) {
        return Err(Limit::Budget);
    }
    Ok(())
}

/// The settings `begin_leave` needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub grace_ms: u64,
    pub linger_ms: u64,
}

/// A frame a connection can be sent: one of version 1, or of 1.1 (only to
/// 1.1 sessions), so both go through one queueing path.
pub(crate) trait OutFrame {
    fn encoded_len(&self) -> usize;
    fn encode<B: bytes::BufMut>(&self, dst: &mut B);
}

impl OutFrame for ServerFrame<'_> {
    fn encoded_len(&self) -> usize {
        ServerFrame::encoded_len(self)
    }
    fn encode<B: bytes::BufMut>(&self, dst: &mut B) {
        ServerFrame::encode(self, dst);
    }
}

impl OutFrame for ServerFrame11<'_> {
    fn encoded_len(&self) -> usize {
        ServerFrame11::encoded_len(self)
    }
    fn encode<B: bytes::BufMut>(&self, dst: &mut B) {
        ServerFrame11::encode(self, dst);
    }
}

/// Encodes `frame` on the stack when it is small (every frame but large
/// `STATS_REPLY`s and `ERR` texts) and hands the bytes to `f`.
pub(crate) fn encoded<R>(frame: &impl OutFrame, f: impl FnOnce(&[u8]) -> R) -> R {
    let len = frame.encoded_len();
    let mut small = [0u8; 512];
    if len <= small.len() {
        let mut dst = &mut small[..len];
        frame.encode(&mut dst);
        f(&small[..len])
    } else {
        let mut big = Vec::with_capacity(len);
        frame.encode(&mut big);
        f(&big)
    }
}

pub(crate) fn ms_duration(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}
