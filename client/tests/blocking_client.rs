#![allow(clippy::unwrap_used)]
//! The blocking client against a real embedded broker on loopback.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::*;
use corecast::Config;
use corecast_client::{
    blocking::{Client, Subscription},
    ClientError, DisconnectReason, DropSite, Event, HeaderBlock, Message, SubscribeOptions,
    TopicProblem,
};
use corecast_proto::{ErrFrame, ErrorCode, QueueGroupError, ServerFrame, TopicError};

const SHORT: Duration = Duration::from_secs(5);

fn connect(broker: &corecast::Broker, name: &str) -> Client {
    Client::connect_with(broker.local_addr(), options(name)).unwrap()
}

/// Every event until `pred` matches one (5 s at most); returns them all.
fn events_until(client: &Client, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + SHORT;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(e) = client.next_event(Duration::from_millis(50)) {
            let done = pred(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
    panic!("event never came; saw {seen:?}");
}

fn recv(sub: &Subscription) -> Message {
    sub.recv_timeout(SHORT).unwrap().expect("a message within 5 s")
}

#[test]
fn published_messages_arrive_exactly_and_in_order() {
    let broker = start(config());
    let subscriber = connect(&broker, "sub");
    let publisher = connect(&broker, "pub");
    let sub = subscriber.subscribe("orders.eu").unwrap();
    assert_eq!(sub.topic(), "orders.eu");
    for i in 0..100u32 {
        publisher.publish("orders.eu", format!("order {i}")).unwrap();
    }
    publisher.publish_with_reply("orders.eu", "_INBOX.x.1", [0u8, 255, 7]).unwrap();
    publisher.publish("orders.us", "not for us").unwrap();
    publisher.flush().unwrap();
    for i in 0..100u32 {
        let msg = recv(&sub);
        assert_eq!(msg.topic, "orders.eu");
        assert_eq!(msg.reply_to, None);
        assert_eq!(&msg.payload[..], format!("order {i}").as_bytes());
    }
    let last = recv(&sub);
    assert_eq!(last.reply_to.as_deref(), Some("_INBOX.x.1"));
    assert_eq!(&last.payload[..], [0u8, 255, 7]);
    subscriber.flush().unwrap();
    assert_eq!(sub.try_recv().unwrap(), None, "nothing else was delivered");
    assert_eq!(publisher.stats().published, 102);
    drop((sub, subscriber, publisher));
    stop(broker);
}

#[test]
fn flush_returns_once_the_broker_applied_everything_before_it() {
    let broker = start(config());
    let subscriber = connect(&broker, "sub");
    let publisher = connect(&broker, "pub");
    let sub = subscriber.subscribe("flush.check").unwrap();
    for round in 0..5u64 {
        for i in 0..50u64 {
            publisher.publish("flush.check", (round * 50 + i).to_le_bytes()).unwrap();
        }
        publisher.flush().unwrap();
        // Once the publisher's flush returned, the messages are routed; the
        // subscriber's flush then proves they were all read.
        subscriber.flush().unwrap();
        for i in 0..50u64 {
            let msg = sub.try_recv().unwrap().expect("already here after both flushes");
            assert_eq!(&msg.payload[..], (round * 50 + i).to_le_bytes());
        }
        assert_eq!(sub.try_recv().unwrap(), None);
    }
    wait_counters(&broker, "250 messages in", |c| c.msgs_in == 250);
    drop((sub, subscriber, publisher));
    stop(broker);
}

/// Answers `count` requests on `topic` with "echo: " and the request, then
/// hands back its client and subscription (still open).
fn echo_responder(
    client: Client,
    topic: &'static str,
    count: usize,
) -> thread::JoinHandle<(Client, Subscription)> {
    let sub = client.subscribe(topic).unwrap();
    thread::spawn(move || {
        for _ in 0..count {
            let request = recv(&sub);
            let mut answer = b"echo: ".to_vec();
            answer.extend_from_slice(&request.payload);
            client.respond(&request, answer).unwrap();
        }
        client.flush().unwrap();
        (client, sub)
    })
}

#[test]
fn request_gets_the_reply_of_a_responder() {
    let broker = start(config());
    let responder = echo_responder(connect(&broker, "responder"), "svc.echo", 41);
    let requester = connect(&broker, "requester");
    let reply = requester.request("svc.echo", "hi", SHORT).unwrap();
    assert_eq!(&reply.payload[..], b"echo: hi");
    assert!(reply.topic.starts_with("_INBOX."), "{}", reply.topic);
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let requester = requester.clone();
            thread::spawn(move || {
                for i in 0..10 {
                    let ask = format!("thread {t} request {i}");
                    let reply = requester.request("svc.echo", &ask, SHORT).unwrap();
                    assert_eq!(reply.payload, format!("echo: {ask}").into_bytes());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let responder = responder.join().unwrap();
    requester.flush().unwrap();
    // Only the responder's subscription is left: every inbox was removed.
    wait_counters(&broker, "one subscription", |c| c.subscriptions == 1);
    drop((requester, responder));
    stop(broker);
}

#[test]
fn request_without_a_responder_times_out_and_leaves_nothing_behind() {
    let broker = start(config());
    // A version 1 session has no NO_RESPONDERS: the request waits it out.
    let client =
        Client::connect_with(broker.local_addr(), options("lonely").protocol_1_1(false)).unwrap();
    assert!(!client.server_info().v1_1);
    let started = Instant::now();
    let err = client.request("svc.nobody", "anyone?", Duration::from_millis(200)).unwrap_err();
    assert!(matches!(err, ClientError::Timeout { waiting_for: "a reply", .. }), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    client.flush().unwrap();
    wait_counters(&broker, "no subscription", |c| c.subscriptions == 0);
    drop(client);
    stop(broker);
}

#[test]
fn dropping_a_subscription_unsubscribes() {
    let broker = start(config());
    let client = connect(&broker, "subs");
    let a = client.subscribe("t.a").unwrap();
    let b = client.subscribe("t.b").unwrap();
    let c = client.subscribe("t.c").unwrap();
    assert_eq!(broker.counters().total.subscriptions, 3);
    drop(a);
    c.unsubscribe();
    client.flush().unwrap();
    assert_eq!(broker.counters().total.subscriptions, 1);
    client.publish("t.a", "gone").unwrap();
    client.publish("t.b", "kept").unwrap();
    client.flush().unwrap();
    assert_eq!(&recv(&b).payload[..], b"kept");
    assert_eq!(b.try_recv().unwrap(), None);
    drop(b);
    client.flush().unwrap();
    assert_eq!(broker.counters().total.subscriptions, 0);
    drop(client);
    stop(broker);
}

#[test]
fn reconnects_after_a_restart_on_the_same_port_and_restores_subscriptions() {
    let broker = start(config());
    let addr = broker.local_addr();
    let client = connect(&broker, "survivor");
    let sub = client.subscribe("restart.topic").unwrap();
    let lossy = client
        .subscribe_with("restart.lossy", SubscribeOptions { lossy: true, capacity: Some(4) })
        .unwrap();
    stop(broker);
    events_until(&client, |e| matches!(e, Event::Disconnected(_)));
    let broker = start_on(addr);
    let seen = events_until(&client, |e| matches!(e, Event::Reconnected { .. }));
    let Some(Event::Reconnected { attempts, info }) = seen.last() else { unreachable!() };
    assert!(*attempts >= 1);
    assert_eq!(*info, client.server_info());
    assert!(client.is_connected());
    client.flush().unwrap();
    wait_counters(&broker, "both subscriptions restored", |c| c.subscriptions == 2);
    let publisher = connect(&broker, "pub");
    publisher.publish("restart.topic", "after restart").unwrap();
    publisher.publish("restart.lossy", "lossy too").unwrap();
    publisher.flush().unwrap();
    assert_eq!(&recv(&sub).payload[..], b"after restart");
    assert_eq!(&recv(&lossy).payload[..], b"lossy too");
    assert_eq!(client.stats().reconnects, 1);
    drop((sub, lossy, client, publisher));
    stop(broker);
}

#[test]
fn a_subscribe_while_the_broker_is_down_completes_once_it_is_back() {
    let broker = start(config());
    let addr = broker.local_addr();
    let client = connect(&broker, "patient");
    stop(broker);
    events_until(&client, |e| matches!(e, Event::Disconnected(_)));
    let subscriber = client.clone();
    let subscribing = thread::spawn(move || subscriber.subscribe("later.topic"));
    wait_for("the SUB waits in the send buffer", || client.stats().buffered_bytes > 0);
    let broker = start_on(addr);
    let sub = subscribing.join().unwrap().unwrap();
    let publisher = connect(&broker, "pub");
    publisher.publish("later.topic", "arrived").unwrap();
    publisher.flush().unwrap();
    assert_eq!(&recv(&sub).payload[..], b"arrived");
    drop((sub, client, publisher));
    stop(broker);
}

#[test]
fn goaway_comes_after_every_message_accepted_before_shutdown() {
    let broker = start(config());
    let client =
        Client::connect_with(broker.local_addr(), options("drained").no_reconnect()).unwrap();
    let sub = client.subscribe("drain.topic").unwrap();
    let publisher = connect(&broker, "pub");
    for i in 0..20u8 {
        publisher.publish("drain.topic", [i]).unwrap();
    }
    publisher.flush().unwrap();
    broker.shutdown();
    let events = events_until(&client, |e| matches!(e, Event::Closed { .. }));
    let kinds: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::GoAway { .. } => "goaway",
            Event::Disconnected(DisconnectReason::GoAway) => "disconnected after goaway",
            Event::Closed { .. } => "closed",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["goaway", "disconnected after goaway", "closed"], "{events:?}");
    for i in 0..20u8 {
        assert_eq!(&recv(&sub).payload[..], [i]);
    }
    assert!(matches!(sub.recv(), Err(ClientError::Closed)));
    assert!(matches!(client.publish("drain.topic", "late"), Err(ClientError::Closed)));
    drop((sub, client, publisher));
    broker.wait().unwrap();
}

#[test]
fn an_undrained_subscription_stays_bounded_and_counts_its_drops() {
    let broker = start(config());
    let client = connect(&broker, "hoarder");
    let sub = client
        .subscribe_with("flood.topic", SubscribeOptions { lossy: false, capacity: Some(8) })
        .unwrap();
    for i in 0..100u32 {
        client.publish("flood.topic", i.to_le_bytes()).unwrap();
    }
    client.flush().unwrap();
    assert_eq!(sub.dropped(), 92);
    assert_eq!(client.stats().dropped_by_client, 92);
    let mut reported = 0;
    while let Some(event) = client.try_next_event() {
        if let Event::Dropped { topic, count, site: DropSite::Client, .. } = event {
            assert_eq!(topic, "flood.topic");
            reported += count;
        }
    }
    assert_eq!(reported, 92, "every drop is reported");
    for i in 0..8u32 {
        assert_eq!(&sub.try_recv().unwrap().unwrap().payload[..], i.to_le_bytes());
    }
    assert_eq!(sub.try_recv().unwrap(), None, "the queue held 8, the first ones");
    drop((sub, client));
    stop(broker);
}

#[test]
fn a_publisher_outrunning_a_stuck_socket_waits_then_fails_with_bounded_memory() {
    let mut stuck = StuckBroker::start();
    let client = Client::connect_with(
        stuck.addr,
        options("eager").send_buffer(64 << 10).send_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let _unread = stuck.connection();
    let payload = vec![0x5a; 16 << 10];
    let mut outcome = None;
    for _ in 0..4096 {
        if let Err(e) = client.publish("stuck.topic", &payload) {
            outcome = Some(e);
            break;
        }
        let buffered = client.stats().buffered_bytes;
        assert!(buffered <= 64 << 10, "send buffer grew to {buffered}");
    }
    let err = outcome.expect("the publisher was held back within 64 MiB");
    assert!(
        matches!(err, ClientError::Timeout { waiting_for: "room in the send buffer", .. }),
        "{err:?}"
    );
    assert!(client.stats().buffered_bytes <= 64 << 10);
    assert!(matches!(
        client.try_publish("stuck.topic", &payload),
        Err(ClientError::SendBufferFull)
    ));
}

#[test]
fn flushes_and_subscriptions_on_a_stuck_socket_stay_within_the_send_buffer() {
    let mut stuck = StuckBroker::start();
    let short = Duration::from_millis(20);
    let client = Client::connect_with(
        stuck.addr,
        options("stuck").send_buffer(4096).send_timeout(short).flush_timeout(short),
    )
    .unwrap();
    let _unread = stuck.connection();
    // One publication larger than the socket buffers holds the writer in
    // its write; then the send buffer fills up.
    client.publish("stuck.big", vec![0u8; 16 << 20]).unwrap();
    while client.publish("stuck.small", [0u8; 512]).is_ok() {}
    for _ in 0..100 {
        assert!(matches!(client.flush(), Err(ClientError::Timeout { .. })));
    }
    for _ in 0..10 {
        let err = client.subscribe("stuck.sub").unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    }
    let buffered = client.stats().buffered_bytes;
    assert!(buffered <= 4096, "the send buffer grew to {buffered} bytes");
}

#[test]
fn bad_topics_and_oversized_payloads_are_refused_before_sending() {
    let broker = start(Config { max_frame: 4096, ..config() });
    let client = connect(&broker, "careful");
    let problem = |r: Result<(), ClientError>| match r {
        Err(ClientError::InvalidTopic { problem, .. }) => problem,
        other => panic!("expected InvalidTopic, got {other:?}"),
    };
    let long = "a".repeat(256);
    assert_eq!(problem(client.publish("a..b", "")), TopicProblem::Rules(TopicError::EmptyToken));
    assert_eq!(problem(client.publish(&long, "")), TopicProblem::Rules(TopicError::TooLong(256)));
    assert_eq!(problem(client.publish("a.*", "")), TopicProblem::Wildcard);
    assert_eq!(problem(client.publish("$SYS.x", "")), TopicProblem::Reserved);
    assert_eq!(
        problem(client.publish_with_reply("ok", "bad reply", "")),
        TopicProblem::Rules(TopicError::ForbiddenChar(' '))
    );
    let err = client.publish("ok.topic", vec![0; 4096]).unwrap_err();
    let ClientError::PayloadTooLarge { len, max, max_frame } = err else { panic!("{err:?}") };
    assert_eq!((len, max, max_frame), (4096, 4096 - 4 - 8, 4096));
    client.publish("ok.topic", vec![0; max]).unwrap();
    let Err(ClientError::InvalidTopic { field, .. }) = client.subscribe("a b") else { panic!() };
    assert_eq!(field, "topic");
    let err = client.queue_subscribe("ok", "a.b").unwrap_err();
    let ClientError::InvalidQueueGroup { name, problem } = err else { panic!("{err:?}") };
    assert_eq!((name.as_str(), problem), ("a.b", QueueGroupError::ForbiddenChar('.')));
    // A version 1 session: the broker refuses wildcards and queue groups.
    let v1 = Client::connect_with(broker.local_addr(), options("v1").protocol_1_1(false)).unwrap();
    for refused in [v1.subscribe("orders.*"), v1.queue_subscribe("orders", "workers")] {
        let err = refused.unwrap_err();
        let ClientError::Server(refusal) = err else { panic!("{err:?}") };
        assert_eq!(refusal.error_code(), Some(ErrorCode::Unsupported));
    }
    events_until(&v1, |e| matches!(e, Event::ServerError(s) if s.code == 105));
    v1.flush().unwrap();
    assert_eq!(broker.counters().total.subscriptions, 0);
    assert_eq!(broker.counters().total.protocol_errors, 2, "only those two reached it");
    drop((client, v1));
    stop(broker);
}

#[test]
fn server_pings_are_answered_with_their_nonce() {
    // The fake broker announces a long ping interval, so the client never
    // probes by itself: the only PONG it can send is the answer.
    let mut fake = StuckBroker::start();
    let client = Client::connect_with(fake.addr, options("pinged")).unwrap();
    let mut conn = fake.connection();
    let mut frames = FrameReader::new(conn.try_clone().unwrap());
    send(&mut conn, ServerFrame::Ping { nonce: 0xC0FFEE });
    assert_eq!(frames.next(), format!("PONG {}", 0xC0FFEE));
    send(&mut conn, ServerFrame::Ping { nonce: 7 });
    assert_eq!(frames.next(), "PONG 7");
    assert!(client.is_connected());
}

#[test]
fn a_zero_capacity_subscription_holds_one_message() {
    let broker = start(config());
    let client = connect(&broker, "tiny");
    let sub = client
        .subscribe_with("tiny.topic", SubscribeOptions { lossy: false, capacity: Some(0) })
        .unwrap();
    client.publish("tiny.topic", "one").unwrap();
    client.publish("tiny.topic", "two").unwrap();
    client.flush().unwrap();
    assert_eq!(&recv(&sub).payload[..], b"one");
    assert_eq!(sub.dropped(), 1);
    drop((sub, client));
    stop(broker);
}

/// The sid of a `SUB sid topic` frame as [`FrameReader::next`] tells it.
fn sid_of(frame: &str) -> &str {
    frame.split(' ').nth(1).unwrap()
}

#[test]
fn a_refusal_that_may_be_another_subscriptions_leaves_nothing_on_the_broker() {
    let mut fake = StuckBroker::start();
    let client = Client::connect_with(fake.addr, options("racer")).unwrap();
    let mut conn = fake.connection();
    let mut frames = FrameReader::new(conn.try_clone().unwrap());
    let subscriber = client.clone();
    let subscribing = thread::spawn(move || subscriber.subscribe("race.mine").map(drop));
    let seen = frames.until(|f| f.starts_with("PING"));
    let mine = sid_of(&seen[0]).to_owned();
    let ping = seen.last().unwrap().replace("PING ", "");
    // A request's inbox SUB comes after the PING; the broker refuses one of
    // the two SUBs and answers the PING only after (a PONG waits for the
    // cores, later frames do not).
    let requester = client.clone();
    let requesting =
        thread::spawn(move || requester.request("race.svc", "?", Duration::from_millis(300)));
    frames.until(|f| f == "PUB race.svc");
    let refusal = ErrFrame { code: 101, fatal: false, text: "too many subscriptions" };
    send(&mut conn, ServerFrame::Err(refusal));
    send(&mut conn, ServerFrame::Pong { nonce: ping.parse().unwrap() });
    let err = subscribing.join().unwrap().unwrap_err();
    let ClientError::Server(e) = err else { panic!("{err:?}") };
    assert_eq!(e.error_code(), Some(ErrorCode::TooManySubscriptions));
    // The client cannot know which SUB was refused: if it was the inbox,
    // the broker holds "race.mine", which must not stay behind unknown.
    client.publish("race.sentinel", "").unwrap();
    let rest = frames.until(|f| f == "PUB race.sentinel");
    assert!(rest.contains(&format!("UNSUB {mine}")), "{rest:?}");
    let _ = requesting.join().unwrap();
}

#[test]
fn a_refusal_of_the_only_subscription_in_flight_is_its_own() {
    let mut fake = StuckBroker::start();
    let client = Client::connect_with(fake.addr, options("precise")).unwrap();
    let mut conn = fake.connection();
    let mut frames = FrameReader::new(conn.try_clone().unwrap());
    // A request whose inbox is refused fails at once, with the refusal.
    let requester = client.clone();
    let requesting = thread::spawn(move || requester.request("svc.x", "?", SHORT));
    frames.until(|f| f == "PUB svc.x");
    let refusal = ErrFrame { code: 101, fatal: false, text: "too many subscriptions" };
    send(&mut conn, ServerFrame::Err(refusal));
    let err = requesting.join().unwrap().unwrap_err();
    let ClientError::Server(e) = err else { panic!("{err:?}") };
    assert_eq!(e.code, 101);
    // A subscription refused alone needs no UNSUB.
    let subscriber = client.clone();
    let subscribing = thread::spawn(move || subscriber.subscribe("only.mine").map(drop));
    let seen = frames.until(|f| f.starts_with("PING"));
    let ping = seen.last().unwrap().replace("PING ", "");
    send(&mut conn, ServerFrame::Err(refusal));
    send(&mut conn, ServerFrame::Pong { nonce: ping.parse().unwrap() });
    assert!(matches!(subscribing.join().unwrap(), Err(ClientError::Server(_))));
    client.publish("precise.sentinel", "").unwrap();
    let rest = frames.until(|f| f == "PUB precise.sentinel");
    assert!(!rest.iter().any(|f| f.starts_with("UNSUB")), "{rest:?}");
}

#[test]
fn a_refused_handshake_reports_the_brokers_reason() {
    let broker = start(Config { auth_token: Some("s3cret".into()), ..config() });
    let err = Client::connect_with(broker.local_addr(), options("intruder")).unwrap_err();
    let ClientError::Refused(refusal) = err else { panic!("{err:?}") };
    assert_eq!(refusal.error_code(), Some(ErrorCode::AuthFailed));
    assert!(refusal.fatal);
    let ok = Client::connect_with(broker.local_addr(), options("friend").auth_token("s3cret"));
    ok.unwrap().flush().unwrap();
    stop(broker);
}

#[test]
fn a_full_broker_refuses_with_server_full() {
    // One slot per core and two cores: of three connections, one at least
    // finds its core full.
    let broker = start(Config { max_connections: 1, ..config() });
    let attempts: Vec<_> = (0..3)
        .map(|i| Client::connect_with(broker.local_addr(), options(&format!("c{i}"))))
        .collect();
    let refusals: Vec<_> = attempts
        .iter()
        .filter_map(|a| match a {
            Err(ClientError::Refused(e)) => Some(e.error_code()),
            Err(other) => panic!("{other:?}"),
            Ok(_) => None,
        })
        .collect();
    assert!(!refusals.is_empty());
    assert!(refusals.iter().all(|code| *code == Some(ErrorCode::ServerFull)), "{refusals:?}");
    drop(attempts);
    stop(broker);
}

#[test]
fn a_broker_that_stops_answering_is_detected() {
    let mut silent = StuckBroker::start_with(100);
    let client = Client::connect_with(silent.addr, options("watchful").no_reconnect()).unwrap();
    let _unanswering = silent.connection();
    let started = Instant::now();
    let events = events_until(&client, |e| matches!(e, Event::Closed { .. }));
    assert_eq!(events[0], Event::Disconnected(DisconnectReason::Silent), "{events:?}");
    // One ping interval of silence, a probe, one more interval unanswered.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(3), "{waited:?}");
    assert!(matches!(client.flush(), Err(ClientError::Closed)));
}

#[test]
fn connecting_to_a_closed_port_says_connection_refused() {
    let addr = closed_port();
    let err = Client::connect_with(addr, options("nobody home")).unwrap_err();
    let ClientError::Connect { addr: shown, source } = &err else { panic!("{err:?}") };
    assert_eq!(*shown, addr.to_string());
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(err.to_string().starts_with(&format!("cannot connect to {addr}: ")), "{err}");
}

#[test]
fn publications_queued_during_a_write_go_out_together_in_order() {
    let mut fake = StuckBroker::start();
    let client = Client::connect_with(fake.addr, options("batcher")).unwrap();
    let mut conn = fake.connection();
    // A payload larger than the socket buffers keeps the writer in one
    // write until the fake broker reads; meanwhile 1000 more are queued.
    let big = vec![0xb1; 16 << 20];
    client.publish("batch.big", &big).unwrap();
    for i in 0..1000u32 {
        client.publish("batch.small", i.to_le_bytes()).unwrap();
    }
    let got = read_publications(&mut conn, 1001);
    assert_eq!(got[0], ("batch.big".to_owned(), big));
    for (i, (topic, payload)) in got[1..].iter().enumerate() {
        assert_eq!((topic.as_str(), &payload[..]), ("batch.small", &(i as u32).to_le_bytes()[..]));
    }
    let stats = client.stats();
    assert_eq!((stats.published, stats.writes), (1001, 2), "{stats:?}");
}

#[test]
fn closing_flushes_and_ends_subscriptions() {
    let broker = start(config());
    let subscriber = connect(&broker, "sub");
    let sub = subscriber.subscribe("close.topic").unwrap();
    let publisher = connect(&broker, "pub");
    for i in 0..10u8 {
        publisher.publish("close.topic", [i]).unwrap();
    }
    publisher.close().unwrap();
    assert!(matches!(publisher.publish("close.topic", "x"), Err(ClientError::Closed)));
    for i in 0..10u8 {
        assert_eq!(&recv(&sub).payload[..], [i]);
    }
    let clone = subscriber.clone();
    drop(subscriber);
    assert!(clone.is_connected(), "a clone keeps the connection");
    drop(clone);
    assert!(matches!(sub.recv_timeout(SHORT), Err(ClientError::Closed)));
    wait_counters(&broker, "everyone gone", |c| c.connections_open == 0);
    stop(broker);
}

#[test]
fn a_request_nobody_would_receive_fails_at_once_with_no_responders() {
    let broker = start(config());
    let client = connect(&broker, "hasty");
    assert!(client.server_info().v1_1, "the broker grants 1.1 when asked");
    let started = Instant::now();
    let err = client.request("svc.nobody", "anyone?", SHORT).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    let ClientError::NoResponders { topic } = &err else { panic!("{err:?}") };
    assert_eq!(topic, "svc.nobody");
    client.flush().unwrap();
    wait_counters(&broker, "the inbox unsubscribed", |c| c.subscriptions == 0);
    let responder = echo_responder(connect(&broker, "responder"), "svc.echo", 1);
    assert_eq!(&client.request("svc.echo", "hi", SHORT).unwrap().payload[..], b"echo: hi");
    drop((client, responder.join().unwrap()));
    stop(broker);
}

fn headers(pairs: &[(&str, &str)]) -> HeaderBlock {
    let mut block = HeaderBlock::new();
    for (k, v) in pairs {
        block.push(k, v).unwrap();
    }
    block
}

#[test]
fn headers_reach_1_1_subscribers_and_version_1_ones_get_the_message_alone() {
    let broker = start(config());
    let subscriber = connect(&broker, "sub11");
    let v1 =
        Client::connect_with(broker.local_addr(), options("sub1").protocol_1_1(false)).unwrap();
    let sub = subscriber.subscribe("h.t").unwrap();
    let sub1 = v1.subscribe("h.t").unwrap();
    let publisher = connect(&broker, "pub");
    let sent = headers(&[("trace-id", "42"), ("k", "a"), ("k", "b")]);
    publisher.publish_with_headers("h.t", &sent, "body").unwrap();
    publisher.publish("h.t", "plain").unwrap();
    let got = recv(&sub);
    assert_eq!((&got.payload[..], &got.headers), (&b"body"[..], &sent));
    assert_eq!((got.header("trace-id"), got.header("k")), (Some("42"), Some("a")));
    assert!(recv(&sub).headers.is_empty(), "a MSG has none");
    let old = recv(&sub1);
    assert_eq!((&old.payload[..], old.headers.is_empty()), (&b"body"[..], true));
    let err = v1.publish_with_headers("h.t", &sent, "x").unwrap_err();
    assert!(matches!(err, ClientError::Unsupported(_)), "{err:?}");
    drop((subscriber, v1, publisher, sub, sub1));
    stop(broker);
}

#[test]
fn no_echo_keeps_a_clients_publications_from_its_own_subscriptions() {
    let broker = start(config());
    let quiet = Client::connect_with(broker.local_addr(), options("quiet").no_echo(true)).unwrap();
    let other = connect(&broker, "other");
    let own = quiet.subscribe("echo.t").unwrap();
    let theirs = other.subscribe("echo.t").unwrap();
    quiet.publish("echo.t", "mine").unwrap();
    other.publish("echo.t", "theirs").unwrap();
    let mut seen = [recv(&theirs).payload, recv(&theirs).payload];
    seen.sort();
    assert_eq!(seen, [&b"mine"[..], &b"theirs"[..]], "echo is on for the other client");
    assert_eq!(&recv(&own).payload[..], b"theirs", "only the other client's message");
    quiet.flush().unwrap();
    assert!(own.recv_timeout(Duration::from_millis(100)).unwrap().is_none());
    drop(theirs);
    other.flush().unwrap();
    // Its own subscription does not count as a responder either.
    let err = quiet.request("echo.t", "?", SHORT).unwrap_err();
    assert!(matches!(err, ClientError::NoResponders { .. }), "{err:?}");
    drop((quiet, other, own));
    stop(broker);
}

#[test]
fn queue_members_share_the_messages_and_wildcards_match_across_cores() {
    let broker = start(config());
    let (a, b) = (connect(&broker, "a"), connect(&broker, "b"));
    let members = [
        a.queue_subscribe("jobs.*", "workers").unwrap(),
        b.queue_subscribe_with("jobs.>", "workers", SubscribeOptions::default()).unwrap(),
    ];
    let watcher = connect(&broker, "watcher");
    let every = watcher.subscribe("jobs.>").unwrap();
    let publisher = connect(&broker, "pub");
    let n = 200u32;
    for i in 0..n {
        publisher.publish("jobs.x", i.to_le_bytes()).unwrap();
    }
    publisher.flush().unwrap();
    let seq = |m: Message| u32::from_le_bytes(m.payload[..].try_into().unwrap());
    let watched: Vec<u32> = (0..n).map(|_| seq(recv(&every))).collect();
    assert_eq!(watched, (0..n).collect::<Vec<_>>(), "a plain subscriber gets them all");
    let mut shared = Vec::new();
    while shared.len() < n as usize {
        let got = members.iter().find_map(|m| m.recv_timeout(Duration::from_millis(10)).unwrap());
        match got {
            Some(msg) => shared.push(seq(msg)),
            None => panic!("the group got {} of {n}", shared.len()),
        }
    }
    a.flush().unwrap();
    b.flush().unwrap();
    for m in &members {
        assert!(m.try_recv().unwrap().is_none(), "each message reaches one member only");
    }
    shared.sort_unstable();
    assert_eq!(shared, (0..n).collect::<Vec<_>>());
    drop((a, b, watcher, publisher, members, every));
    stop(broker);
}
