//! What both clients do the same way around one connection: the handshake
//! frames, and the watch over a session (heartbeat probes, the end of a
//! `GOAWAY` drain, the close after a fatal `ERR`).

use std::time::{Duration, Instant};

use corecast_proto::{ClientFrame, ErrorCode, Hello, ServerFrame, VERSION};

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

/// The `HELLO` frame for `options`, encoded.
pub(crate) fn hello(options: &Options) -> Vec<u8> {
    let frame = ClientFrame::Hello(Hello {
        version: VERSION,
        name: &options.name,
        token: &options.auth_token,
    });
    let mut out = Vec::with_capacity(frame.encoded_len());
    frame.encode(&mut out);
    out
}

/// The broker's answer to `HELLO`, once it has arrived in `decoder`;
/// `decoder` then takes frames up to the session's limit.
pub(crate) fn handshake_answer(decoder: &mut Decoder) -> Result<Option<ServerInfo>, ClientError> {
    let Some(frame) = decoder.next_frame()? else {
        return Ok(None);
    };
    let info = welcome(frame)?;
    decoder.set_limit(server_frame_limit(info.max_frame));
    Ok(Some(info))
}

/// Interprets the broker's answer to `HELLO`.
fn welcome(frame: ServerFrame<'_>) -> Result<ServerInfo, ClientError> {
    match frame {
        ServerFrame::Welcome(w) if w.version == VERSION => Ok(ServerInfo {
            server_name: w.server_name.to_owned(),
            version: w.version,
            max_frame: w.max_frame,
            ping_interval_ms: w.ping_interval_ms,
            core_id: w.core_id,
            connection_id: w.connection_id,
        }),
        ServerFrame::Welcome(w) => {
            Err(ClientError::Protocol(format!("the broker answered with version {}", w.version)))
        }
        ServerFrame::Err(e) => Err(ClientError::Refused(ServerError {
            code: e.code,
            fatal: e.fatal,
            text: e.text.to_owned(),
        })),
        other => Err(ClientError::Protocol(format!("expected WELCOME, got {other:?}"))),
    }
}

/// The error for a broker that closed the connection during the handshake,
/// after `HELLO` was written as `wrote` says. A broker that is full answers
/// before reading `HELLO`, so a failed write is reported only when no
/// answer could be read either.
pub(crate) fn handshake_eof(addr: &str, wrote: std::io::Result<()>) -> ClientError {
    let source = wrote.err().unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the broker closed the connection during the handshake",
        )
    });
    ClientError::Connect { addr: addr.to_owned(), source }
}

/// Whether reconnecting after this error is pointless: the broker will say
/// the same again.
fn is_permanent(e: &ClientError) -> bool {
    match e {
        ClientError::Refused(err) => {
            matches!(err.error_code(), Some(ErrorCode::AuthFailed | ErrorCode::UnsupportedVersion))
        }
        ClientError::InvalidOption(_) | ClientError::Protocol(_) => true,
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
    pub(crate) fn on_error(&self, e: &std::io::Error) -> DisconnectReason {
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
    use corecast_proto::frame::{ErrFrame, Welcome};

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
        let info = super::welcome(ServerFrame::Welcome(welcome)).expect("welcome");
        assert_eq!((info.max_frame, info.core_id, info.server_name.as_str()), (4096, 1, "b"));
        let refusal = ErrFrame { code: 7, fatal: true, text: "auth failed" };
        let err = super::welcome(ServerFrame::Err(refusal)).expect_err("refused");
        assert!(is_permanent(&err), "{err:?}");
        let full = ErrFrame { code: 8, fatal: true, text: "full" };
        let err = super::welcome(ServerFrame::Err(full)).expect_err("refused");
        assert!(!is_permanent(&err) && err.is_transient(), "{err:?}");
        let odd = super::welcome(ServerFrame::Pong { nonce: 1 }).expect_err("not a welcome");
        assert!(matches!(odd, ClientError::Protocol(_)));
    }

    /// A decoder for the handshake that got `bytes`.
    fn fed(bytes: &[u8]) -> Decoder {
        let mut decoder = Decoder::new();
        decoder.spare()[..bytes.len()].copy_from_slice(bytes);
        decoder.filled(bytes.len());
        decoder
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
    fn a_welcome_sets_the_session_limit() {
        let mut bytes = encoded(&ServerFrame::Welcome(WELCOME));
        let msg = corecast_proto::Msg { sid: 1, topic: "t", reply_to: "", payload: &[0; 64] };
        bytes.extend(encoded(&ServerFrame::Msg(msg)));
        let mut decoder = fed(&bytes);
        let info = handshake_answer(&mut decoder).expect("valid").expect("complete");
        assert_eq!(info.max_frame, 16);
        assert!(decoder.next_frame().is_err(), "a MSG above max_frame + 4");
    }

    #[test]
    fn another_version_is_a_permanent_protocol_error() {
        let bytes = encoded(&ServerFrame::Welcome(Welcome { version: 2, ..WELCOME }));
        let err = handshake_answer(&mut fed(&bytes)).expect_err("version 2");
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
        assert!(is_permanent(&err));
    }

    #[test]
    fn a_frame_above_the_handshake_limit_is_refused_before_it_arrives() {
        let mut bytes = (HANDSHAKE_LIMIT + 1).to_le_bytes().to_vec();
        bytes.extend([0x05, 0]);
        let err = handshake_answer(&mut fed(&bytes)).expect_err("too long");
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    }

    #[test]
    fn the_end_of_the_stream_mid_welcome_is_a_connect_error() {
        let bytes = encoded(&ServerFrame::Welcome(WELCOME));
        let mut decoder = fed(&bytes[..bytes.len() - 1]);
        assert!(handshake_answer(&mut decoder).expect("valid so far").is_none());
        let err = handshake_eof("here:1", Ok(()));
        let ClientError::Connect { addr, source } = &err else { panic!("{err:?}") };
        assert_eq!(
            (addr.as_str(), source.kind()),
            ("here:1", std::io::ErrorKind::ConnectionAborted)
        );
        assert!(err.is_transient());
        let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let err = handshake_eof("here:1", Err(broken));
        assert!(
            matches!(&err, ClientError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::BrokenPipe),
            "the write's error: {err:?}"
        );
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
        let bytes = hello(&Options::new().name("n").auth_token("t"));
        let mut src = &bytes[..];
        let frame = ClientFrame::decode(&mut src, u32::MAX).expect("valid").expect("whole");
        let ClientFrame::Hello(h) = frame else { panic!("{frame:?}") };
        assert_eq!((h.version, h.name, h.token), (VERSION, "n", &b"t"[..]));
    }
}
