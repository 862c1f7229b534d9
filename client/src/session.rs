//! What both clients do the same way around one connection: the attempt to
//! open a session (connect, `HELLO`, `WELCOME`), and the watch over a
//! session (heartbeat probes, the end of a `GOAWAY` drain, the close after
//! a fatal `ERR`).

use std::{
    io,
    time::{Duration, Instant},
};

use corecast_proto::{ClientFrame11, ErrorCode, Hello, ServerFrame11, VERSION};

use super::{
    decoder::{server_frame_limit, Decoder},
    state::ReadOutcome,
    Backoff, ClientError, DisconnectReason, Options, ServerError, ServerInfo,
};

/// How long the reader waits for the broker to close after a fatal `ERR`.
const FATAL_LINGER: Duration = Duration::from_secs(1);

/// Extra time given after a `GOAWAY`'s grace period before the reader
/// stops waiting for the broker to close.
const DRAIN_SLACK: Duration = Duration::from_secs(1);

/// The shortest silence before the client probes the broker.
const MIN_PROBE: Duration = Duration::from_millis(50);

/// One attempt to open a session, without the socket: the client connects,
/// writes [`Handshake::hello`], reports how that went, then reads into
/// [`Handshake::spare`] and reports each read until [`Handshake::on_read`]
/// has the broker's `WELCOME`. Everything the attempt decides (what each
/// read means, which error it ends with, how much time is left) is here,
/// so that the blocking and the tokio client only move the bytes.
#[derive(Debug)]
pub(crate) struct Handshake<'a> {
    addr: &'a str,
    timeout: Duration,
    deadline: Instant,
    hello: Vec<u8>,
    /// Whether `hello` asks for protocol 1.1.
    asks_v1_1: bool,
    /// Why writing `HELLO` failed, if it did: the error to report if the
    /// broker then closes without an answer.
    write_error: Option<io::Error>,
    decoder: Decoder,
}

impl<'a> Handshake<'a> {
    /// An attempt to reach the broker at `addr` with `options`, started
    /// `now`: it has [`Options::connect_timeout`] for connecting and the
    /// handshake together.
    pub(crate) fn new(addr: &'a str, options: &Options, now: Instant) -> Self {
        Self {
            addr,
            timeout: options.connect_timeout,
            deadline: now + options.connect_timeout,
            hello: encode_hello(options, options.v1_1),
            asks_v1_1: options.v1_1,
            write_error: None,
            decoder: Decoder::new(),
        }
    }

    /// Whether the attempt, which failed with `e`, starts over as a version
    /// 1 client: a version 1 broker refuses the `HELLO` that asks for 1.1
    /// with *malformed frame* (PROTOCOL.md §13.1). If so, the client
    /// connects again and writes the new [`Handshake::hello`], within the
    /// time the attempt has left.
    pub(crate) fn falls_back(&mut self, e: &ClientError, options: &Options) -> bool {
        let refused_v1_1 = matches!(e, ClientError::Refused(err)
            if err.error_code() == Some(ErrorCode::MalformedFrame));
        // A typed credential exists only in 1.1 (PROTOCOL.md §14): a version
        // 1 HELLO would present its text as a plain token.
        if !(self.asks_v1_1 && refused_v1_1) || options.credentials.is_typed() {
            return false;
        }
        self.asks_v1_1 = false;
        self.hello = encode_hello(options, false);
        self.write_error = None;
        self.decoder = Decoder::new();
        true
    }

    /// The address as given.
    pub(crate) fn addr(&self) -> &'a str {
        self.addr
    }

    /// The time left for the attempt.
    ///
    /// # Errors
    /// [`ClientError::ConnectTimeout`] once none is left.
    pub(crate) fn time_left(&self, now: Instant) -> Result<Duration, ClientError> {
        let left = self.deadline.checked_duration_since(now).filter(|d| !d.is_zero());
        left.ok_or_else(|| self.timed_out())
    }

    /// The error of an attempt that ran out of time.
    pub(crate) fn timed_out(&self) -> ClientError {
        ClientError::ConnectTimeout { addr: self.addr.to_owned(), timeout: self.timeout }
    }

    /// The error of an attempt whose connection could not be opened or
    /// failed, with what the operating system said.
    pub(crate) fn failed(&self, source: io::Error) -> ClientError {
        ClientError::Connect { addr: self.addr.to_owned(), source }
    }

    /// The `HELLO` frame to write first, encoded.
    pub(crate) fn hello(&self) -> &[u8] {
        &self.hello
    }

    /// Writing [`Handshake::hello`] ended as `wrote` says. A failed write
    /// does not end the attempt: a broker that is full answers before it
    /// reads `HELLO`, so its answer is read all the same, and the write's
    /// error is reported only when no answer comes.
    pub(crate) fn hello_written(&mut self, wrote: io::Result<()>) {
        self.write_error = wrote.err();
    }

    /// Room for the next read; report it with [`Handshake::on_read`].
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        self.decoder.spare()
    }

    /// A read into [`Handshake::spare`] ended as `read` says: the session's
    /// `WELCOME` once it has arrived, `None` while more must be read.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with the broker's refusal,
    /// [`ClientError::Protocol`] for an answer that is not a `WELCOME` of
    /// this version, [`ClientError::ConnectTimeout`] for a read that timed
    /// out, and [`ClientError::Connect`] when reading failed or the broker
    /// closed the connection first.
    pub(crate) fn on_read(
        &mut self,
        read: io::Result<usize>,
    ) -> Result<Option<ServerInfo>, ClientError> {
        match read {
            Ok(0) => Err(self.closed()),
            Ok(n) => {
                self.decoder.filled(n);
                handshake_answer(&mut self.decoder, self.asks_v1_1)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(self.timed_out())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The decoder of the session, once [`Handshake::on_read`] gave its
    /// `WELCOME`: it takes frames up to the session's limit and holds what
    /// arrived after the `WELCOME`.
    pub(crate) fn take_decoder(&mut self) -> Decoder {
        std::mem::replace(&mut self.decoder, Decoder::new())
    }

    /// The error for a broker that closed the connection before it
    /// answered: the failed write of `HELLO` if there was one.
    fn closed(&mut self) -> ClientError {
        let source = self.write_error.take().unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the broker closed the connection during the handshake",
            )
        });
        self.failed(source)
    }
}

/// `HELLO` for `options`, asking for protocol 1.1 if `v1_1` (no echo is
/// defined only then).
fn encode_hello(options: &Options, v1_1: bool) -> Vec<u8> {
    let token = options.credentials.token_field();
    let hello = Hello { version: VERSION, name: &options.name, token: &token };
    let credential = v1_1 && options.credentials.is_typed();
    let frame = ClientFrame11::Hello { hello, v1_1, no_echo: v1_1 && options.no_echo, credential };
    let mut out = Vec::with_capacity(frame.encoded_len());
    frame.encode(&mut out);
    out
}

/// The broker's answer to a `HELLO` that asked for 1.1 if `asked_v1_1`,
/// once it has arrived in `decoder`; `decoder` then takes frames up to the
/// session's limit, of the session's version.
fn handshake_answer(
    decoder: &mut Decoder,
    asked_v1_1: bool,
) -> Result<Option<ServerInfo>, ClientError> {
    let Some(frame) = decoder.next_frame()? else {
        return Ok(None);
    };
    let info = welcome(frame, asked_v1_1)?;
    decoder.set_limit(server_frame_limit(info.max_frame));
    decoder.set_v1_1(info.v1_1);
    Ok(Some(info))
}

/// Interprets the broker's answer to a `HELLO` that asked for 1.1 if
/// `asked_v1_1`.
fn welcome(frame: ServerFrame11<'_>, asked_v1_1: bool) -> Result<ServerInfo, ClientError> {
    match frame {
        ServerFrame11::Welcome { welcome: w, v1_1 } if w.version == VERSION => {
            if v1_1 && !asked_v1_1 {
                return Err(ClientError::Protocol("the broker granted 1.1 unasked".into()));
            }
            Ok(ServerInfo {
                server_name: w.server_name.to_owned(),
                version: w.version,
                max_frame: w.max_frame,
                ping_interval_ms: w.ping_interval_ms,
                core_id: w.core_id,
                connection_id: w.connection_id,
                v1_1,
            })
        }
        ServerFrame11::Welcome { welcome: w, .. } => {
            Err(ClientError::Protocol(format!("the broker answered with version {}", w.version)))
        }
        ServerFrame11::Err(e) => Err(ClientError::Refused(ServerError {
            code: e.code,
            fatal: e.fatal,
            text: e.text.to_owned(),
        })),
        other => Err(ClientError::Protocol(format!("expected WELCOME, got {other:?}"))),
    }
}

/// Whether reconnecting after this error is pointless: the broker will say
/// the same again.
fn is_permanent(e: &ClientError) -> bool {
    match e {
        ClientError::Refused(err) => {
            matches!(err.error_code(), Some(ErrorCode::AuthFailed | ErrorCode::UnsupportedVersion))
        }
        ClientError::InvalidOption(_) | ClientError::Protocol(_) | ClientError::TlsConfig(_) => {
            true
        }
        _ => false,
    }
}

/// The decisions of a reconnection loop: how long to wait before each
/// attempt, and when to give up.
#[derive(Debug)]
pub(crate) struct Retry {
    backoff: Option<Backoff>,
    attempts: u32,
}

impl Retry {
    /// A loop that waits as `backoff` says; `None` = do not reconnect.
    pub(crate) fn new(backoff: Option<Backoff>) -> Self {
        Self { backoff, attempts: 0 }
    }

    /// The wait before the next attempt, or why to give up.
    pub(crate) fn next_delay(&mut self) -> Result<Duration, String> {
        let Some(backoff) = self.backoff else {
            return Err("reconnection is disabled".into());
        };
        if !backoff.allows(self.attempts) {
            return Err(format!("no connection after {} attempts", self.attempts));
        }
        let delay = backoff.delay(self.attempts);
        self.attempts += 1;
        Ok(delay)
    }

    /// Attempts made so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// An attempt failed with `e`: why to give up, if trying again is
    /// pointless (the broker would say the same again).
    pub(crate) fn failed(e: &ClientError) -> Result<(), String> {
        if is_permanent(e) {
            return Err(e.to_string());
        }
        Ok(())
    }
}

/// What a read timeout means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Silence {
    /// Keep reading: the broker is expected to close soon.
    Wait,
    /// Send a liveness probe and keep reading.
    Probe,
    /// The session is over.
    End(DisconnectReason),
}

/// The reader's view of one session's timing.
#[derive(Debug)]
pub(crate) struct Watch {
    probe_after: Duration,
    probe_outstanding: bool,
    /// When the reader stops waiting for the broker to close.
    deadline: Option<Instant>,
    goaway: bool,
    fatal: Option<ServerError>,
}

impl Watch {
    /// A watch for a session whose broker pings every `ping_interval_ms`.
    pub(crate) fn new(ping_interval_ms: u32) -> Self {
        Self {
            probe_after: Duration::from_millis(u64::from(ping_interval_ms)).max(MIN_PROBE),
            probe_outstanding: false,
            deadline: None,
            goaway: false,
            fatal: None,
        }
    }

    /// How long the next read may wait.
    pub(crate) fn read_timeout(&self, now: Instant) -> Duration {
        match self.deadline {
            Some(d) => d.saturating_duration_since(now).min(self.probe_after).max(MIN_PROBE),
            None => self.probe_after,
        }
    }

    /// Bytes arrived, with the frames' outcome: `Some` ends the session now.
    pub(crate) fn on_read(
        &mut self,
        outcome: &ReadOutcome,
        now: Instant,
    ) -> Option<DisconnectReason> {
        self.probe_outstanding = false;
        if let Some(e) = &outcome.protocol {
            return Some(DisconnectReason::Protocol(e.clone()));
        }
        if let Some(grace_ms) = outcome.goaway {
            self.goaway = true;
            let grace = Duration::from_millis(u64::from(grace_ms)) + DRAIN_SLACK;
            self.deadline = Some(now + grace);
        }
        if let Some(e) = &outcome.fatal {
            self.fatal = Some(e.clone());
            self.deadline = Some(now + FATAL_LINGER);
        }
        match self.deadline {
            Some(deadline) if now >= deadline => Some(self.end_reason(DisconnectReason::Silent)),
            _ => None,
        }
    }

    /// A read waited [`Watch::read_timeout`] and got nothing.
    pub(crate) fn on_silence(&mut self, now: Instant) -> Silence {
        if let Some(deadline) = self.deadline {
            if now < deadline {
                return Silence::Wait;
            }
            return Silence::End(self.end_reason(DisconnectReason::Silent));
        }
        if self.probe_outstanding {
            return Silence::End(DisconnectReason::Silent);
        }
        self.probe_outstanding = true;
        Silence::Probe
    }

    /// The broker closed the connection.
    pub(crate) fn on_eof(&self) -> DisconnectReason {
        self.end_reason(DisconnectReason::Closed)
    }

    /// Reading failed.
    pub(crate) fn on_error(&self, e: &io::Error) -> DisconnectReason {
        self.end_reason(DisconnectReason::Io(e.to_string()))
    }

    fn end_reason(&self, otherwise: DisconnectReason) -> DisconnectReason {
        match (&self.fatal, self.goaway) {
            (Some(e), _) => DisconnectReason::Server(e.clone()),
            (None, true) => DisconnectReason::GoAway,
            (None, false) => otherwise,
        }
    }
}

#[cfg(test)]
mod tests {
    use corecast_proto::{
        frame::{ErrFrame, Welcome},
        ClientFrame, ServerFrame,
    };

    use super::*;
    use crate::decoder::HANDSHAKE_LIMIT;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn silence_is_probed_once_then_ends_the_session() {
        let start = Instant::now();
        let mut watch = Watch::new(100);
        assert_eq!(watch.read_timeout(start), 100 * MS);
        assert_eq!(watch.on_silence(start), Silence::Probe);
        assert_eq!(watch.on_read(&ReadOutcome::default(), start), None);
        assert_eq!(watch.on_silence(start), Silence::Probe, "bytes came back in between");
        assert_eq!(watch.on_silence(start), Silence::End(DisconnectReason::Silent));
    }

    #[test]
    fn after_goaway_the_reader_waits_for_the_close_until_the_grace_ends() {
        let start = Instant::now();
        let mut watch = Watch::new(30_000);
        let goaway = ReadOutcome { goaway: Some(500), ..ReadOutcome::default() };
        assert_eq!(watch.on_read(&goaway, start), None);
        assert_eq!(watch.read_timeout(start), 500 * MS + DRAIN_SLACK);
        assert_eq!(watch.on_silence(start + 100 * MS), Silence::Wait);
        assert_eq!(watch.on_eof(), DisconnectReason::GoAway);
        let late = start + 500 * MS + DRAIN_SLACK;
        assert_eq!(watch.on_silence(late), Silence::End(DisconnectReason::GoAway));
        assert_eq!(watch.on_read(&ReadOutcome::default(), late), Some(DisconnectReason::GoAway));
    }

    #[test]
    fn a_fatal_error_is_the_reason_of_the_close_that_follows() {
        let mut watch = Watch::new(30_000);
        let err = ServerError { code: 9, fatal: true, text: "slow consumer".into() };
        let outcome = ReadOutcome { fatal: Some(err.clone()), ..ReadOutcome::default() };
        assert_eq!(watch.on_read(&outcome, Instant::now()), None);
        assert_eq!(watch.on_eof(), DisconnectReason::Server(err));
    }

    #[test]
    fn handshake_answers_are_interpreted() {
        let welcome = Welcome {
            version: 1,
            max_frame: 4096,
            ping_interval_ms: 50,
            core_id: 1,
            connection_id: 7,
            server_name: "b",
        };
        let info = super::welcome(ServerFrame::Welcome(welcome).into(), true).expect("welcome");
        assert_eq!((info.max_frame, info.core_id, info.server_name.as_str()), (4096, 1, "b"));
        let refusal = ErrFrame { code: 7, fatal: true, text: "auth failed" };
        let err = super::welcome(ServerFrame::Err(refusal).into(), true).expect_err("refused");
        assert!(is_permanent(&err), "{err:?}");
        let full = ErrFrame { code: 8, fatal: true, text: "full" };
        let err = super::welcome(ServerFrame::Err(full).into(), true).expect_err("refused");
        assert!(!is_permanent(&err) && err.is_transient(), "{err:?}");
        let odd =
            super::welcome(ServerFrame::Pong { nonce: 1 }.into(), true).expect_err("not a welcome");
        assert!(matches!(odd, ClientError::Protocol(_)));
    }

    /// A handshake with the broker at `here:1`, started now.
    fn handshake(options: &Options) -> Handshake<'_> {
        Handshake::new("here:1", options, Instant::now())
    }

    /// Reports a read of `bytes` (all at once) to `handshake`.
    fn feed(
        handshake: &mut Handshake<'_>,
        bytes: &[u8],
    ) -> Result<Option<ServerInfo>, ClientError> {
        handshake.spare()[..bytes.len()].copy_from_slice(bytes);
        handshake.on_read(Ok(bytes.len()))
    }

    fn encoded(frame: &ServerFrame<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        out
    }

    const WELCOME: Welcome<'static> = Welcome {
        version: 1,
        max_frame: 16,
        ping_interval_ms: 50,
        core_id: 0,
        connection_id: 1,
        server_name: "b",
    };

    #[test]
    fn a_welcome_sets_the_session_limit_and_keeps_what_follows() {
        let mut bytes = encoded(&ServerFrame::Welcome(WELCOME));
        bytes.extend(encoded(&ServerFrame::Ping { nonce: 5 }));
        let msg = corecast_proto::Msg { sid: 1, topic: "t", reply_to: "", payload: &[0; 64] };
        bytes.extend(encoded(&ServerFrame::Msg(msg)));
        let options = Options::new();
        let mut handshake = handshake(&options);
        let info = feed(&mut handshake, &bytes).expect("valid").expect("complete");
        assert_eq!(info.max_frame, 16);
        let mut decoder = handshake.take_decoder();
        assert!(matches!(decoder.next_frame(), Ok(Some(ServerFrame11::Ping { nonce: 5 }))));
        assert!(decoder.next_frame().is_err(), "a MSG above max_frame + 4");
    }

    #[test]
    fn a_welcome_in_pieces_is_waited_for() {
        let bytes = encoded(&ServerFrame::Welcome(WELCOME));
        let options = Options::new();
        let mut handshake = handshake(&options);
        for piece in bytes.chunks(3) {
            let Some(info) = feed(&mut handshake, piece).expect("valid") else { continue };
            assert_eq!(info.server_name, "b");
            return;
        }
        panic!("no WELCOME");
    }

    #[test]
    fn another_version_is_a_permanent_protocol_error() {
        let bytes = encoded(&ServerFrame::Welcome(Welcome { version: 2, ..WELCOME }));
        let options = Options::new();
        let err = feed(&mut handshake(&options), &bytes).expect_err("version 2");
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
        assert!(is_permanent(&err));
    }

    #[test]
    fn a_frame_above_the_handshake_limit_is_refused_before_it_arrives() {
        let mut bytes = (HANDSHAKE_LIMIT + 1).to_le_bytes().to_vec();
        bytes.extend([0x05, 0]);
        let options = Options::new();
        let err = feed(&mut handshake(&options), &bytes).expect_err("too long");
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    }

    #[test]
    fn the_end_of_the_stream_mid_welcome_is_a_connect_error() {
        let bytes = encoded(&ServerFrame::Welcome(WELCOME));
        let options = Options::new();
        let mut handshake = handshake(&options);
        assert!(feed(&mut handshake, &bytes[..bytes.len() - 1]).expect("valid so far").is_none());
        let err = handshake.on_read(Ok(0)).expect_err("closed");
        let ClientError::Connect { addr, source } = &err else { panic!("{err:?}") };
        assert_eq!((addr.as_str(), source.kind()), ("here:1", io::ErrorKind::ConnectionAborted));
        assert!(err.is_transient());
    }

    #[test]
    fn a_failed_hello_is_reported_only_when_no_answer_comes() {
        let options = Options::new();
        let mut refused = handshake(&options);
        refused.hello_written(Err(io::ErrorKind::BrokenPipe.into()));
        let full = ErrFrame { code: 8, fatal: true, text: "server full" };
        let err = feed(&mut refused, &encoded(&ServerFrame::Err(full))).expect_err("refused");
        assert!(matches!(&err, ClientError::Refused(e) if e.code == 8), "the answer: {err:?}");
        let mut closed = handshake(&options);
        closed.hello_written(Err(io::ErrorKind::BrokenPipe.into()));
        let err = closed.on_read(Ok(0)).expect_err("closed");
        assert!(
            matches!(&err, ClientError::Connect { source, .. }
            if source.kind() == io::ErrorKind::BrokenPipe),
            "the write's error: {err:?}"
        );
    }

    #[test]
    fn reads_that_fail_or_time_out_end_the_attempt_but_interruptions_do_not() {
        let options = Options::new().connect_timeout(100 * MS);
        let mut handshake = handshake(&options);
        assert!(matches!(handshake.on_read(Err(io::ErrorKind::Interrupted.into())), Ok(None)));
        for timed_out in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
            let err = handshake.on_read(Err(timed_out.into())).expect_err("timed out");
            assert!(
                matches!(err, ClientError::ConnectTimeout { timeout, .. } if timeout == 100 * MS)
            );
        }
        let err = handshake.on_read(Err(io::ErrorKind::ConnectionReset.into())).expect_err("reset");
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    }

    #[test]
    fn the_attempt_has_the_connect_timeout() {
        let options = Options::new().connect_timeout(100 * MS);
        let start = Instant::now();
        let handshake = Handshake::new("here:1", &options, start);
        assert_eq!(handshake.time_left(start).ok(), Some(100 * MS));
        assert_eq!(handshake.time_left(start + 60 * MS).ok(), Some(40 * MS));
        let late = handshake.time_left(start + 100 * MS).expect_err("no time left");
        assert!(matches!(late, ClientError::ConnectTimeout { .. }), "{late:?}");
    }

    #[test]
    fn retries_follow_the_backoff_and_stop_on_permanent_errors() {
        let backoff = Backoff { initial: 10 * MS, max: 20 * MS, max_attempts: Some(2) };
        let mut retry = Retry::new(Some(backoff));
        assert!(retry.next_delay().is_ok_and(|d| d <= 10 * MS));
        assert!(retry.next_delay().is_ok_and(|d| d <= 20 * MS));
        assert_eq!(retry.attempts(), 2);
        assert_eq!(retry.next_delay(), Err("no connection after 2 attempts".into()));
        assert!(Retry::new(None).next_delay().is_err());
        let refused = ServerError { code: 7, fatal: true, text: "auth failed".into() };
        assert!(Retry::failed(&ClientError::Refused(refused)).is_err());
        assert!(Retry::failed(&ClientError::ConnectionLost).is_ok());
    }

    #[test]
    fn hello_carries_name_and_token() {
        let options = Options::new().name("n").auth_token("t").protocol_1_1(false);
        let handshake = handshake(&options);
        let mut src = handshake.hello();
        let frame = ClientFrame::decode(&mut src, u32::MAX).expect("valid").expect("whole");
        let ClientFrame::Hello(h) = frame else { panic!("{frame:?}") };
        assert_eq!((h.version, h.name, h.token), (VERSION, "n", &b"t"[..]));
    }

    /// The 1.1 flag bits of a `HELLO`: (v1.1, no echo).
    fn hello_bits(handshake: &Handshake<'_>) -> (bool, bool) {
        let mut src = handshake.hello();
        match ClientFrame11::decode(&mut src, u32::MAX).expect("valid").expect("whole") {
            ClientFrame11::Hello { v1_1, no_echo, .. } => (v1_1, no_echo),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hello_asks_for_1_1_by_default_and_no_echo_only_with_it() {
        assert_eq!(hello_bits(&handshake(&Options::new())), (true, false));
        assert_eq!(hello_bits(&handshake(&Options::new().no_echo(true))), (true, true));
        let v1 = Options::new().no_echo(true).protocol_1_1(false);
        assert_eq!(hello_bits(&handshake(&v1)), (false, false));
    }

    /// The token field and the credential bit of a `HELLO`.
    fn hello_credential(handshake: &Handshake<'_>) -> (Vec<u8>, bool) {
        let mut src = handshake.hello();
        match ClientFrame11::decode(&mut src, u32::MAX).expect("valid").expect("whole") {
            ClientFrame11::Hello { hello, credential, .. } => (hello.token.to_vec(), credential),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn typed_credentials_set_the_credential_bit_and_plain_tokens_do_not() {
        use crate::Credentials;
        let cases = [
            (Credentials::password("alice", "pw"), &b"password alice:pw"[..], true),
            (Credentials::bearer("t0k"), b"bearer t0k", true),
            (Credentials::jwt("a.b.c"), b"jwt a.b.c", true),
            (Credentials::token("shared"), b"shared", false),
            (Credentials::None, b"", false),
        ];
        for (credentials, token, bit) in cases {
            let options = Options::new().credentials(credentials);
            assert_eq!(hello_credential(&handshake(&options)), (token.to_vec(), bit));
            assert_eq!(hello_bits(&handshake(&options)), (true, false), "1.1 with it");
        }
        // A plain token in a version 1 HELLO, as ever.
        let v1 = Options::new().auth_token("shared").protocol_1_1(false);
        assert_eq!(hello_credential(&handshake(&v1)), (b"shared".to_vec(), false));
    }

    #[test]
    fn a_typed_credential_never_falls_back_to_version_1() {
        let options = Options::new().credentials(crate::Credentials::bearer("t"));
        let mut handshake = handshake(&options);
        let malformed = ErrFrame { code: 1, fatal: true, text: "undefined flag bits" };
        let err = feed(&mut handshake, &encoded(&ServerFrame::Err(malformed))).expect_err("no");
        assert!(!handshake.falls_back(&err, &options), "{err:?}");
        assert!(hello_credential(&handshake).1, "the HELLO keeps its credential bit");
        let v1 = Options::new().credentials(crate::Credentials::bearer("t")).protocol_1_1(false);
        assert!(matches!(v1.check(), Err(ClientError::InvalidOption(_))));
    }

    #[test]
    fn a_granted_1_1_is_told_in_the_server_info() {
        let mut bytes = Vec::new();
        ServerFrame11::Welcome { welcome: WELCOME, v1_1: true }.encode(&mut bytes);
        let options = Options::new();
        let info = feed(&mut handshake(&options), &bytes).expect("valid").expect("complete");
        assert!(info.v1_1);
        let v1 = Options::new().protocol_1_1(false);
        let err = feed(&mut handshake(&v1), &bytes).expect_err("granted unasked");
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
        let declined = encoded(&ServerFrame::Welcome(WELCOME));
        let info = feed(&mut handshake(&options), &declined).expect("valid").expect("complete");
        assert!(!info.v1_1, "a broker may decline");
    }

    #[test]
    fn a_version_1_broker_refusing_the_1_1_hello_makes_the_client_start_over_as_v1() {
        let options = Options::new().no_echo(true);
        let mut handshake = handshake(&options);
        let malformed = ErrFrame { code: 1, fatal: true, text: "undefined flag bits" };
        let err = feed(&mut handshake, &encoded(&ServerFrame::Err(malformed))).expect_err("no");
        assert!(handshake.falls_back(&err, &options), "{err:?}");
        assert_eq!(hello_bits(&handshake), (false, false));
        let info = feed(&mut handshake, &encoded(&ServerFrame::Welcome(WELCOME)));
        assert!(!info.expect("valid").expect("complete").v1_1);
        assert!(!handshake.falls_back(&err, &options), "only once");
    }

    #[test]
    fn other_refusals_and_v1_clients_do_not_fall_back() {
        let options = Options::new();
        let auth = ErrFrame { code: 7, fatal: true, text: "auth failed" };
        let err = feed(&mut handshake(&options), &encoded(&ServerFrame::Err(auth))).expect_err("");
        assert!(!handshake(&options).falls_back(&err, &options));
        let v1 = Options::new().protocol_1_1(false);
        let malformed = ClientError::Refused(ServerError { code: 1, fatal: true, text: "".into() });
        assert!(!handshake(&v1).falls_back(&malformed, &v1));
    }
}
