//! `request`: R requesters, each with one request outstanding at a time
//! (synchronous request/reply), and N responders in one queue group that
//! answer every request by publishing its payload to its reply-to.
//!
//! Each requester subscribes to an inbox topic of its own and publishes its
//! requests with that inbox as the reply-to: corecast with `PUB` flagged as
//! a request in a 1.1 session (as its own clients send them, so a request
//! nobody would receive comes back as `NO_RESPONDERS` at once), nats-server
//! with `PUB subject reply`. Every subscription is confirmed before the
//! first request. A payload carries its requester, sequence number and
//! send time, so a reply is matched to its request and timed from it.
//!
//! Requesters and responders share one `mio` poll loop on one thread, which
//! on the one-core placement is all the bench has: no thread hand-off sits
//! inside a round trip. A request unanswered after [`REQUEST_TIMEOUT`]
//! counts as timed out and its requester goes on; the whole run is bounded
//! by the target's timeout.

use std::{
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use mio::{unix::SourceFd, Events, Interest, Poll, Token};

use super::{routing, Meter, Target};
use crate::{
    clock,
    driver::{Driver, Recv, Subscription},
    hist::Latency,
    payload::{Stamp, HEADER},
    result::{Params, RequestFigures, RunResult},
};

/// The topic the requests go to.
const SUBJECT: &str = "bench.request";
/// The queue group of the responders.
const GROUP: &str = "bench-responders";
/// How long a requester waits for one reply before it counts the request
/// as timed out and sends its next one.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Reads one connection does per turn before the others get theirs.
const TURN_READS: usize = 8;

/// What a request run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSpec {
    /// Requester connections.
    pub requesters: usize,
    /// Responder connections, all in one queue group.
    pub responders: usize,
    /// Round trips each requester does.
    pub requests: u64,
    /// Payload bytes of requests and replies (at least the stamp).
    pub size: usize,
}

impl RequestSpec {
    /// The case name, e.g. `request 8->4 64B`.
    pub fn case(&self) -> String {
        format!("request {}->{} {}B", self.requesters, self.responders, self.size)
    }

    /// The parameters a run records.
    pub fn params(&self) -> Params {
        Params {
            requesters: Some(self.requesters),
            responders: Some(self.responders),
            groups: Some(1),
            msgs: Some(self.requests),
            size: Some(self.size),
            ..Params::default()
        }
    }
}

/// The inbox topic of requester `i`.
fn inbox(i: usize) -> String {
    format!("bench.inbox.{i}")
}

/// One requester and its outstanding request.
struct Requester {
    conn: Box<dyn Driver>,
    inbox: String,
    /// Requests sent so far (the next one's sequence number).
    sent: u64,
    /// The outstanding request: its sequence number and when it went.
    waiting: Option<(u64, Instant)>,
    /// `NO_RESPONDERS` answers counted so far.
    no_responders: u64,
}

/// One responder and what it answered.
struct Responder {
    conn: Box<dyn Driver>,
    answered: u64,
}

/// What the run counts.
#[derive(Debug, Default)]
struct Counts {
    answered: u64,
    timed_out: u64,
    no_responders: u64,
    stray_replies: u64,
    /// Requests that reached a responder without a reply-to.
    no_reply_to: u64,
    round_trip: Latency,
    /// When the last reply arrived.
    last: Option<Instant>,
}

/// Requesters and responders in one poll loop.
struct Exchange {
    spec: RequestSpec,
    poll: Poll,
    requesters: Vec<Requester>,
    responders: Vec<Responder>,
    counts: Counts,
    payload: Vec<u8>,
    /// Requests a responder read, waiting for their reply: reply-to and
    /// payload.
    inbound: Vec<(String, Vec<u8>)>,
    /// Encoded replies waiting to be written.
    out: Vec<u8>,
}

/// Connects the responders and confirms their membership of the group.
fn connect_responders(target: &Target, spec: &RequestSpec) -> anyhow::Result<Vec<Responder>> {
    let mut responders = Vec::with_capacity(spec.responders);
    for i in 0..spec.responders {
        let mut conn = target.connect_as(&format!("responder-{i}"), 256 << 10, true)?;
        conn.subscribe_all(&[Subscription { topic: SUBJECT, group: Some(GROUP) }])?;
        responders.push(Responder { conn, answered: 0 });
    }
    for r in responders.iter_mut() {
        r.conn.confirm()?;
    }
    Ok(responders)
}

/// Connects the requesters and confirms their inbox subscriptions.
fn connect_requesters(target: &Target, spec: &RequestSpec) -> anyhow::Result<Vec<Requester>> {
    let mut requesters = Vec::with_capacity(spec.requesters);
    for i in 0..spec.requesters {
        let mut conn = target.connect_as(&format!("requester-{i}"), 64 << 10, true)?;
        let inbox = inbox(i);
        conn.subscribe(&inbox)?;
        requesters.push(Requester { conn, inbox, sent: 0, waiting: None, no_responders: 0 });
    }
    for r in requesters.iter_mut() {
        r.conn.confirm()?;
    }
    Ok(requesters)
}

impl Exchange {
    /// Registers every connection (non-blocking) with a new poller:
    /// requesters are tokens `0..R`, responders `R..R+N`.
    fn new(
        spec: RequestSpec,
        requesters: Vec<Requester>,
        responders: Vec<Responder>,
    ) -> anyhow::Result<Self> {
        let poll = Poll::new().context("create poller")?;
        let conns = requesters.iter().map(|r| &r.conn).chain(responders.iter().map(|r| &r.conn));
        for (i, conn) in conns.enumerate() {
            conn.stream().set_nonblocking(true)?;
            let fd = conn.stream().as_raw_fd();
            poll.registry().register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
        }
        Ok(Self {
            spec,
            poll,
            requesters,
            responders,
            counts: Counts::default(),
            payload: vec![0x5a; spec.size],
            inbound: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Whether every requester has sent all its requests and none waits.
    fn done(&self) -> bool {
        self.requesters.iter().all(|r| r.sent >= self.spec.requests && r.waiting.is_none())
    }

    /// Sends requester `i`'s next request, if it has one left.
    fn send_next(&mut self, i: usize) -> anyhow::Result<()> {
        let r = &mut self.requesters[i];
        if r.sent >= self.spec.requests || r.waiting.is_some() {
            return Ok(());
        }
        let seq = r.sent;
        let stamp = Stamp { publisher: i as u32, seq, sent_ns: clock::now_ns(), intended_ns: 0 };
        stamp.write(&mut self.payload);
        r.conn.request(SUBJECT, &r.inbox, &self.payload)?;
        r.sent += 1;
        r.waiting = Some((seq, Instant::now()));
        Ok(())
    }

    /// Reads requester `i`'s replies; returns whether its socket may hold
    /// more. A matching reply ends the outstanding request and sends the
    /// next one.
    fn serve_requester(&mut self, i: usize) -> anyhow::Result<bool> {
        let mut stamps = Vec::new();
        let mut more = true;
        for _ in 0..TURN_READS {
            let r = &mut self.requesters[i];
            let outcome = r.conn.receive(&mut |m| stamps.push(Stamp::read(m.payload)))?;
            let now_ns = clock::now_ns();
            for stamp in stamps.drain(..) {
                self.take_reply(i, stamp, now_ns);
            }
            let r = &mut self.requesters[i];
            if r.conn.no_responders() > r.no_responders {
                self.counts.no_responders += r.conn.no_responders() - r.no_responders;
                r.no_responders = r.conn.no_responders();
                r.waiting = None;
            }
            self.send_next(i)?;
            match outcome {
                Recv::Data => continue,
                Recv::Idle => more = false,
                Recv::Closed => bail!("broker closed requester {i}'s connection"),
            }
            break;
        }
        Ok(more)
    }

    /// Counts one message read by requester `i` at `now_ns`.
    fn take_reply(&mut self, i: usize, stamp: Option<Stamp>, now_ns: u64) {
        let r = &mut self.requesters[i];
        match (stamp, r.waiting) {
            (Some(s), Some((seq, _))) if s.publisher as usize == i && s.seq == seq => {
                r.waiting = None;
                self.counts.answered += 1;
                self.counts.round_trip.record(now_ns.saturating_sub(s.sent_ns));
                self.counts.last = Some(Instant::now());
            }
            _ => self.counts.stray_replies += 1,
        }
    }

    /// Reads responder `j`'s requests and answers each to its reply-to;
    /// returns whether its socket may hold more.
    fn serve_responder(&mut self, j: usize) -> anyhow::Result<bool> {
        let mut more = true;
        for _ in 0..TURN_READS {
            let (inbound, responder) = (&mut self.inbound, &mut self.responders[j]);
            let outcome = responder.conn.receive(&mut |m| {
                inbound.push((m.reply_to.to_owned(), m.payload.to_vec()));
            })?;
            for (reply_to, payload) in self.inbound.drain(..) {
                if reply_to.is_empty() {
                    self.counts.no_reply_to += 1;
                    continue;
                }
                responder.conn.encode_publish(&reply_to, &payload, &mut self.out);
                responder.answered += 1;
            }
            if !self.out.is_empty() {
                responder.conn.send(&self.out)?;
                self.out.clear();
            }
            match outcome {
                Recv::Data => continue,
                Recv::Idle => more = false,
                Recv::Closed => bail!("broker closed responder {j}'s connection"),
            }
            break;
        }
        Ok(more)
    }

    /// Gives up on requests older than [`REQUEST_TIMEOUT`] and sends each
    /// such requester's next one.
    fn expire(&mut self) -> anyhow::Result<()> {
        for i in 0..self.requesters.len() {
            let r = &mut self.requesters[i];
            if r.waiting.is_some_and(|(_, at)| at.elapsed() >= REQUEST_TIMEOUT) {
                r.waiting = None;
                self.counts.timed_out += 1;
                self.send_next(i)?;
            }
        }
        Ok(())
    }

    /// Serves connection `token` (requester or responder).
    fn serve(&mut self, token: usize) -> anyhow::Result<bool> {
        match token.checked_sub(self.requesters.len()) {
            None => self.serve_requester(token),
            Some(j) => self.serve_responder(j),
        }
    }

    /// Runs until every request is answered or given up on, or `deadline`.
    fn run(&mut self, deadline: Instant) -> anyhow::Result<()> {
        for i in 0..self.requesters.len() {
            self.send_next(i)?;
        }
        let mut events = Events::with_capacity(256);
        let total = self.requesters.len() + self.responders.len();
        // What arrived with the confirmations is already buffered: every
        // connection gets a first turn.
        let mut ready: Vec<usize> = (0..total).collect();
        let mut queued = vec![true; total];
        while !self.done() && Instant::now() < deadline {
            for token in std::mem::take(&mut ready) {
                queued[token] = false;
                if self.serve(token)? {
                    queued[token] = true;
                    ready.push(token);
                }
            }
            self.expire()?;
            let wait = if ready.is_empty() { Duration::from_millis(10) } else { Duration::ZERO };
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("poll"),
            }
            for token in events.iter().map(|e| e.token().0).filter(|&t| t < total) {
                if !queued[token] {
                    queued[token] = true;
                    ready.push(token);
                }
            }
        }
        Ok(())
    }

    /// The figures, with `seconds` the measured time.
    fn figures(&self, seconds: f64) -> RequestFigures {
        let c = &self.counts;
        let sent: u64 = self.requesters.iter().map(|r| r.sent).sum();
        let answered = self.responders.iter().map(|r| r.answered);
        RequestFigures {
            sent,
            answered: c.answered,
            round_trips_per_s: if seconds > 0.0 { c.answered as f64 / seconds } else { 0.0 },
            round_trip: c.round_trip.summary(),
            timed_out: c.timed_out,
            no_responders: c.no_responders,
            unanswered: self.requesters.iter().filter(|r| r.waiting.is_some()).count() as u64,
            stray_replies: c.stray_replies,
            per_responder_min: answered.clone().min().unwrap_or(0),
            per_responder_max: answered.max().unwrap_or(0),
        }
    }
}

/// The problems a finished run shows, for its `errors`.
fn problems(f: &RequestFigures, spec: &RequestSpec, no_reply_to: u64) -> Vec<String> {
    let mut errors = Vec::new();
    let owed = spec.requests * spec.requesters as u64;
    if f.sent < owed {
        errors.push(format!("{} of {owed} requests sent when the run ended", f.sent));
    }
    let lost = f.timed_out + f.no_responders + f.unanswered;
    if lost > 0 {
        errors.push(format!(
            "{lost} requests without a reply ({} timed out after {} s, {} no responders, {} outstanding at the end)",
            f.timed_out,
            REQUEST_TIMEOUT.as_secs(),
            f.no_responders,
            f.unanswered
        ));
    }
    if f.stray_replies > 0 {
        errors.push(format!("{} replies matched no outstanding request", f.stray_replies));
    }
    if no_reply_to > 0 {
        errors.push(format!("{no_reply_to} requests reached a responder without a reply-to"));
    }
    errors
}

/// Runs the request/reply workload.
pub fn run(target: &Target, spec: &RequestSpec) -> anyhow::Result<RunResult> {
    anyhow::ensure!(spec.size >= HEADER, "payload size must be at least {HEADER} bytes");
    anyhow::ensure!(spec.requesters > 0 && spec.responders > 0, "requesters and responders");
    if let Some(why) = routing::unsupported(target.kind, "request") {
        bail!("{}: {why}", target.kind);
    }
    let mut result = target.result("request", spec.case(), spec.params());
    let responders = connect_responders(target, spec)?;
    let requesters = connect_requesters(target, spec)?;
    let mut exchange = Exchange::new(*spec, requesters, responders)?;
    let meter = Meter::start(target);
    let start = meter.started();
    if let Err(e) = exchange.run(start + target.timeout) {
        result.errors.push(format!("{e:#}"));
    }
    let last = exchange.counts.last.unwrap_or(start);
    result.seconds = (last - start).as_secs_f64();
    meter.finish(&mut result);
    let figures = exchange.figures(result.seconds);
    result.errors.extend(problems(&figures, spec, exchange.counts.no_reply_to));
    result.request = Some(figures);
    drop(exchange);
    target.totals_into(&mut result);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_params() {
        let spec = RequestSpec { requesters: 8, responders: 4, requests: 100, size: 64 };
        assert_eq!(spec.case(), "request 8->4 64B");
        let p = spec.params();
        assert_eq!(
            (p.requesters, p.responders, p.groups, p.msgs),
            (Some(8), Some(4), Some(1), Some(100))
        );
        assert_eq!(inbox(3), "bench.inbox.3");
    }

    #[test]
    fn every_request_without_its_reply_is_a_problem() {
        let spec = RequestSpec { requesters: 2, responders: 1, requests: 10, size: 64 };
        let clean = RequestFigures { sent: 20, answered: 20, ..RequestFigures::default() };
        assert!(problems(&clean, &spec, 0).is_empty());
        let short = RequestFigures { sent: 15, answered: 14, unanswered: 1, ..clean.clone() };
        let errors = problems(&short, &spec, 0);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("15 of 20 requests sent"));
        assert!(errors[1].contains("1 outstanding at the end"));
        let lost = RequestFigures { timed_out: 2, no_responders: 1, stray_replies: 2, ..clean };
        let errors = problems(&lost, &spec, 3);
        assert!(errors[0].starts_with("3 requests without a reply (2 timed out"), "{errors:?}");
        assert!(errors[1].starts_with("2 replies matched no"));
        assert!(errors[2].starts_with("3 requests reached a responder without a reply-to"));
    }
}
