#![allow(clippy::unwrap_used)]
//! The async client against a real embedded broker on loopback.

mod common;

use std::{
    future::poll_fn,
    pin::Pin,
    time::{Duration, Instant},
};

use common::*;
use corecast::{Broker, Config};
use corecast_client::{
    tokio::{Client, Subscription},
    ClientError, DisconnectReason, DropSite, Event, HeaderBlock, Message, SubscribeOptions,
};
use corecast_proto::{ErrFrame, ErrorCode, ServerFrame};
use futures_core::Stream;
use tokio::time::timeout;

const SHORT: Duration = Duration::from_secs(5);

async fn connect(broker: &Broker, name: &str) -> Client {
    Client::connect_with(broker.local_addr(), options(name)).await.unwrap()
}

/// Stops a broker without blocking the runtime's threads.
async fn stop_broker(broker: Broker) {
    tokio::task::spawn_blocking(move || stop(broker)).await.unwrap();
}

async fn recv(sub: &mut Subscription) -> Message {
    timeout(SHORT, sub.recv()).await.expect("a message within 5 s").expect("subscription open")
}

/// Events until `pred` matches one (5 s at most); returns them all.
async fn events_until(client: &Client, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + SHORT;
    while Instant::now() < deadline {
        match timeout(Duration::from_millis(100), client.next_event()).await {
            Ok(Some(e)) => {
                let done = pred(&e);
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    panic!("event never came; saw {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_a_stream_of_exact_messages_in_order() {
    let broker = start(config());
    let subscriber = connect(&broker, "sub").await;
    let publisher = connect(&broker, "pub").await;
    let mut sub = subscriber.subscribe("prices.eur").await.unwrap();
    for i in 0..200u32 {
        publisher.publish("prices.eur", i.to_le_bytes()).await.unwrap();
    }
    publisher.publish_with_reply("prices.eur", "_INBOX.me.1", "last").await.unwrap();
    publisher.flush().await.unwrap();
    for i in 0..200u32 {
        let msg =
            timeout(SHORT, poll_fn(|cx| Pin::new(&mut sub).poll_next(cx))).await.unwrap().unwrap();
        assert_eq!((msg.topic.as_str(), &msg.payload[..]), ("prices.eur", &i.to_le_bytes()[..]));
        assert_eq!(msg.reply_to, None);
    }
    let last = recv(&mut sub).await;
    assert_eq!((last.reply_to.as_deref(), &last.payload[..]), (Some("_INBOX.me.1"), &b"last"[..]));
    subscriber.flush().await.unwrap();
    assert_eq!(sub.try_recv(), None);
    drop((sub, subscriber, publisher));
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_gets_the_reply_of_a_responder_task() {
    let broker = start(config());
    let responder = connect(&broker, "responder").await;
    let mut requests = responder.subscribe("svc.upper").await.unwrap();
    let answering = tokio::spawn(async move {
        for _ in 0..30 {
            let request = recv(&mut requests).await;
            let answer = String::from_utf8(request.payload.to_vec()).unwrap().to_uppercase();
            responder.respond(&request, answer).await.unwrap();
        }
        (responder, requests)
    });
    let requester = connect(&broker, "requester").await;
    let mut tasks = Vec::new();
    for t in 0..3 {
        let requester = requester.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let ask = format!("task {t} asks {i}");
                let reply = requester.request("svc.upper", &ask, SHORT).await.unwrap();
                assert_eq!(reply.payload, ask.to_uppercase().into_bytes());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let _responder = answering.await.unwrap();
    requester.flush().await.unwrap();
    // A 1.1 session hears at once that nobody listens.
    let started = Instant::now();
    let err = requester.request("svc.nobody", "?", SHORT).await.unwrap_err();
    assert!(matches!(err, ClientError::NoResponders { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    requester.flush().await.unwrap();
    wait_counters(&broker, "only the responder's subscription", |c| c.subscriptions == 1);
    drop((requester, _responder));
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_subscription_unsubscribes() {
    let broker = start(config());
    let client = connect(&broker, "subs").await;
    let a = client.subscribe("t.a").await.unwrap();
    let mut b = client.subscribe("t.b").await.unwrap();
    assert_eq!(broker.counters().total.subscriptions, 2);
    drop(a);
    client.flush().await.unwrap();
    assert_eq!(broker.counters().total.subscriptions, 1);
    client.publish("t.b", "kept").await.unwrap();
    assert_eq!(&recv(&mut b).await.payload[..], b"kept");
    b.unsubscribe();
    client.flush().await.unwrap();
    assert_eq!(broker.counters().total.subscriptions, 0);
    drop(client);
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_restart_on_the_same_port_and_restores_subscriptions() {
    let broker = start(config());
    let addr = broker.local_addr();
    let client = connect(&broker, "survivor").await;
    let mut sub = client.subscribe("restart.topic").await.unwrap();
    stop_broker(broker).await;
    let seen = events_until(&client, |e| matches!(e, Event::Disconnected(_))).await;
    assert!(seen.contains(&Event::Disconnected(DisconnectReason::GoAway)), "{seen:?}");
    let broker = start_on(addr);
    events_until(&client, |e| matches!(e, Event::Reconnected { .. })).await;
    client.flush().await.unwrap();
    wait_counters(&broker, "subscription restored", |c| c.subscriptions == 1);
    let publisher = connect(&broker, "pub").await;
    publisher.publish("restart.topic", "after restart").await.unwrap();
    assert_eq!(&recv(&mut sub).await.payload[..], b"after restart");
    assert_eq!(client.stats().reconnects, 1);
    drop((sub, client, publisher));
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_while_the_broker_is_down_completes_once_it_is_back() {
    let broker = start(config());
    let addr = broker.local_addr();
    let client = connect(&broker, "patient").await;
    stop_broker(broker).await;
    events_until(&client, |e| matches!(e, Event::Disconnected(_))).await;
    let subscriber = client.clone();
    let subscribing = tokio::spawn(async move { subscriber.subscribe("later.topic").await });
    let buffered = async {
        while client.stats().buffered_bytes == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(SHORT, buffered).await.expect("the SUB waits in the send buffer");
    let broker = start_on(addr);
    let mut sub = subscribing.await.unwrap().unwrap();
    let publisher = connect(&broker, "pub").await;
    publisher.publish("later.topic", "arrived").await.unwrap();
    assert_eq!(&recv(&mut sub).await.payload[..], b"arrived");
    drop((sub, client, publisher));
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_ends_the_stream_after_every_accepted_message_when_not_reconnecting() {
    let broker = start(config());
    let client =
        Client::connect_with(broker.local_addr(), options("drained").no_reconnect()).await.unwrap();
    let mut sub = client.subscribe("drain.topic").await.unwrap();
    let publisher = connect(&broker, "pub").await;
    for i in 0..20u8 {
        publisher.publish("drain.topic", [i]).await.unwrap();
    }
    publisher.flush().await.unwrap();
    broker.shutdown();
    let events = events_until(&client, |e| matches!(e, Event::Closed { .. })).await;
    assert!(matches!(events[0], Event::GoAway { .. }), "{events:?}");
    for i in 0..20u8 {
        assert_eq!(&recv(&mut sub).await.payload[..], [i]);
    }
    assert_eq!(timeout(SHORT, sub.recv()).await.unwrap(), None, "the stream ends");
    assert!(matches!(client.publish("drain.topic", "late").await, Err(ClientError::Closed)));
    drop((sub, client, publisher));
    tokio::task::spawn_blocking(move || broker.wait().unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undrained_subscription_stays_bounded_and_counts_its_drops() {
    let broker = start(config());
    let client = connect(&broker, "hoarder").await;
    let mut sub = client
        .subscribe_with("flood.topic", SubscribeOptions { lossy: false, capacity: Some(5) })
        .await
        .unwrap();
    for i in 0..50u32 {
        client.publish("flood.topic", i.to_le_bytes()).await.unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(sub.dropped(), 45);
    let mut reported = 0;
    while let Some(event) = client.try_next_event() {
        if let Event::Dropped { count, site: DropSite::Client, .. } = event {
            reported += count;
        }
    }
    assert_eq!(reported, 45);
    for i in 0..5u32 {
        assert_eq!(&sub.try_recv().unwrap().payload[..], i.to_le_bytes());
    }
    assert_eq!(sub.try_recv(), None);
    drop((sub, client));
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_outrunning_a_stuck_socket_waits_then_fails_with_bounded_memory() {
    let mut stuck = StuckBroker::start();
    let client = Client::connect_with(
        stuck.addr,
        options("eager").send_buffer(32 << 10).send_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let _unread = tokio::task::spawn_blocking(move || stuck.connection()).await.unwrap();
    let payload = vec![0x5a; 16 << 10];
    let mut outcome = None;
    for _ in 0..4096 {
        if let Err(e) = client.publish("stuck.topic", &payload).await {
            outcome = Some(e);
            break;
        }
        assert!(client.stats().buffered_bytes <= 32 << 10);
    }
    let err = outcome.expect("the publisher was held back within 64 MiB");
    assert!(
        matches!(err, ClientError::Timeout { waiting_for: "room in the send buffer", .. }),
        "{err:?}"
    );
    assert!(matches!(
        client.try_publish("stuck.topic", &payload),
        Err(ClientError::SendBufferFull)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_errors() {
    let broker = start(Config { auth_token: Some("s3cret".into()), ..config() });
    let err = Client::connect_with(broker.local_addr(), options("intruder")).await.unwrap_err();
    let ClientError::Refused(refusal) = err else { panic!("{err:?}") };
    assert_eq!(refusal.error_code(), Some(ErrorCode::AuthFailed));
    let v1 = options("friend").auth_token("s3cret").protocol_1_1(false);
    let client = Client::connect_with(broker.local_addr(), v1).await.unwrap();
    let err = client.subscribe("a.>").await.unwrap_err();
    let ClientError::Server(refusal) = err else { panic!("{err:?}") };
    assert_eq!(refusal.error_code(), Some(ErrorCode::Unsupported));
    assert!(matches!(client.publish("$SYS.x", "").await, Err(ClientError::InvalidTopic { .. })));
    let err = Client::connect_with(closed_port(), options("nobody")).await.unwrap_err();
    let ClientError::Connect { source, .. } = err else { panic!("{err:?}") };
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
    client.close().await.unwrap();
    assert!(!client.is_connected());
    wait_counters(&broker, "closed", |c| c.connections_open == 0);
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_capacity_subscription_holds_one_message_instead_of_panicking() {
    let broker = start(config());
    let client = connect(&broker, "tiny").await;
    let options = SubscribeOptions { lossy: false, capacity: Some(0) };
    let mut sub = client.subscribe_with("tiny.topic", options).await.unwrap();
    client.publish("tiny.topic", "one").await.unwrap();
    client.publish("tiny.topic", "two").await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(&recv(&mut sub).await.payload[..], b"one");
    assert_eq!(sub.dropped(), 1);
    drop((sub, client));
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_event_ends_once_the_client_is_closed() {
    let broker = start(config());
    let client = connect(&broker, "closer").await;
    client.close().await.unwrap();
    let end = timeout(SHORT, async {
        while let Some(event) = client.next_event().await {
            eprintln!("event after close: {event:?}");
        }
    })
    .await;
    assert!(end.is_ok(), "next_event kept waiting after close");
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_are_answered_and_a_refused_inbox_fails_the_request_at_once() {
    let mut fake = StuckBroker::start();
    let client = Client::connect_with(fake.addr, options("pinged")).await.unwrap();
    let requester = client.clone();
    let request = tokio::spawn(async move { requester.request("svc.x", "?", SHORT).await });
    let started = Instant::now();
    let broker_side = tokio::task::spawn_blocking(move || {
        let mut conn = fake.connection();
        let mut frames = FrameReader::new(conn.try_clone().unwrap());
        send(&mut conn, ServerFrame::Ping { nonce: 0xC0FFEE });
        let mut seen = frames.until(|f| f == format!("PONG {}", 0xC0FFEE));
        if !seen.iter().any(|f| f == "PUB svc.x") {
            seen.extend(frames.until(|f| f == "PUB svc.x"));
        }
        let refusal = ErrFrame { code: 101, fatal: false, text: "too many subscriptions" };
        send(&mut conn, ServerFrame::Err(refusal));
        (conn, seen)
    });
    let (_conn, seen) = broker_side.await.unwrap();
    assert!(seen.iter().any(|f| f.starts_with("SUB ")), "{seen:?}");
    let err = request.await.unwrap().unwrap_err();
    let ClientError::Server(e) = err else { panic!("{err:?}") };
    assert_eq!(e.error_code(), Some(ErrorCode::TooManySubscriptions));
    assert!(started.elapsed() < SHORT, "the request did not wait for its timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_round_trip_and_a_version_1_request_times_out() {
    let broker = start(config());
    let client = connect(&broker, "headers").await;
    assert!(client.server_info().v1_1);
    let mut sub = client.subscribe("h.t").await.unwrap();
    let mut headers = HeaderBlock::new();
    headers.push("content-type", "text/plain").unwrap();
    client.publish_with_headers("h.t", &headers, "hi").await.unwrap();
    let got = recv(&mut sub).await;
    assert_eq!((&got.payload[..], &got.headers), (&b"hi"[..], &headers));
    assert_eq!(got.header("content-type"), Some("text/plain"));
    let v1 =
        Client::connect_with(broker.local_addr(), options("v1").protocol_1_1(false)).await.unwrap();
    assert!(!v1.server_info().v1_1);
    let err = v1.request("svc.nobody", "?", Duration::from_millis(100)).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { waiting_for: "a reply", .. }), "{err:?}");
    drop((client, v1, sub));
    stop_broker(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_members_share_the_messages_of_a_pattern() {
    let broker = start(config());
    let (a, b) = (connect(&broker, "a").await, connect(&broker, "b").await);
    let mut members = [
        a.queue_subscribe("tasks.>", "workers").await.unwrap(),
        b.queue_subscribe_with("tasks.*", "workers", SubscribeOptions::default()).await.unwrap(),
    ];
    let err = a.queue_subscribe("tasks.x", "").await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidQueueGroup { .. }), "{err:?}");
    let publisher = connect(&broker, "pub").await;
    let n = 100u32;
    for i in 0..n {
        publisher.publish("tasks.x", i.to_le_bytes()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let mut shared = Vec::new();
    for m in &mut members {
        while let Some(msg) = m.try_recv() {
            shared.push(u32::from_le_bytes(msg.payload[..].try_into().unwrap()));
        }
    }
    shared.sort_unstable();
    assert_eq!(shared, (0..n).collect::<Vec<_>>(), "each message to one member");
    drop((a, b, publisher, members));
    stop_broker(broker).await;
}
