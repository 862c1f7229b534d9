//! Server-sent events on the web port, over real TCP: messages as events
//! (wildcards, line breaks, base64, drops the ids show), the request's
//! credential and the HTTP answers to what is refused, keep-alives, a slow
//! stream cut by the pending limit, and every slot returned as soon as its
//! client is gone. Also the credential a WebSocket upgrade carries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{start, test_config, wait_counters, wait_idle, Client, Got};
use corecast::{
    auth::{hash_password, hash_token, JwtConfig, Permissions, Rules, UserConfig},
    web::WebConfig,
    Broker, Config,
};
use corecast_proto::{ClientFrame, Hello, ServerFrame, VERSION};
use tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

fn web_broker(tweak: impl FnOnce(&mut Config)) -> Broker {
    let mut cfg = Config {
        web: Some(WebConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allowed_origins: Vec::new(),
            tls: false,
        }),
        ..test_config(2)
    };
    tweak(&mut cfg);
    start(cfg)
}

/// An SSE client: the request, then the stream read event by event.
struct Stream {
    tcp: TcpStream,
    status: u16,
    head: String,
    buf: Vec<u8>,
}

/// One event as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    id: Option<u64>,
    kind: String,
    data: String,
}

impl Stream {
    fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Self {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).unwrap();
        let mut stream = Stream { tcp, status: 0, head: String::new(), buf: Vec::new() };
        let end = loop {
            if let Some(end) = find(&stream.buf, b"\r\n\r\n") {
                break end;
            }
            assert!(stream.fill(), "closed before the head: {:?}", stream.text());
        };
        stream.head = String::from_utf8(stream.buf.drain(..end + 4).collect()).unwrap();
        stream.status = stream.head[9..12].parse().unwrap();
        stream
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// Reads more; false at the end of the stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 << 10];
        match self.tcp.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) => panic!("read: {e}; so far {:?}", self.text()),
        }
    }

    /// The next block up to a blank line (an event, or a comment).
    fn block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\n\n") {
                let block = self.buf.drain(..end + 2).collect::<Vec<_>>();
                return Some(String::from_utf8(block).unwrap());
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next event, skipping comments.
    fn event(&mut self) -> Event {
        loop {
            let block = self.block().expect("an event before the end");
            if let Some(event) = parse(&block) {
                return event;
            }
        }
    }

    /// The rest of the stream until the broker closes it.
    fn rest(&mut self) -> String {
        while self.fill() {}
        self.text()
    }
}

/// An event's fields, as the browser's EventSource reads them; `None` for
/// a comment.
fn parse(block: &str) -> Option<Event> {
    let mut event = Event { id: None, kind: "message".into(), data: String::new() };
    let mut data = Vec::new();
    for line in block.lines().filter(|line| !line.is_empty()) {
        let (field, value) = line.split_once(':')?;
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => event.id = Some(value.parse().unwrap()),
            "event" => event.kind = value.into(),
            "data" => data.push(value),
            "" => return None,
            other => panic!("unknown field {other:?} in {block:?}"),
        }
    }
    event.data = data.join("\n");
    Some(event)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn ev(id: u64, kind: &str, data: &str) -> Event {
    Event { id: Some(id), kind: kind.into(), data: data.into() }
}

fn sse_target(topics: &[&str]) -> String {
    let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    format!("/sse?{}", query.join("&"))
}

#[test]
fn messages_arrive_as_events() {
    let broker = web_broker(|cfg| {
        cfg.max_frame = 1 << 20;
        cfg.max_pending = 4 << 20;
    });
    let web = broker.web_addr().unwrap();
    let mut stream = Stream::open(web, &sse_target(&["chat.*", "news"]), &[]);
    assert_eq!(stream.status, 200, "{}", stream.head);
    let head = stream.head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream; charset=utf-8"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    let mut tcp = Client::connect(broker.local_addr());
    let too_large = vec![b'x'; 70_000];
    let payloads: [(&str, &[u8]); 8] = [
        ("chat.lobby", b"hello"),
        ("chat.lobby", b"two\nlines\r\nand\rthree"),
        ("news", b" leading space"),
        ("news", b""),
        ("chat.deep.no", b"not matched"),
        ("news", &[0xff, 0xfe, 0x00]),
        ("news", &too_large),
        ("chat.x", "ünïcode ✓".as_bytes()),
    ];
    for (topic, payload) in payloads {
        tcp.publish(topic, payload);
    }
    tcp.flush();
    assert_eq!(stream.event(), ev(1, "chat.lobby", "hello"));
    assert_eq!(stream.event(), ev(2, "chat.lobby", "two\nlines\nand\nthree"));
    assert_eq!(stream.event(), ev(3, "news", " leading space"));
    assert_eq!(stream.event(), ev(4, "news", ""));
    // 5 was not UTF-8 and 6 larger than an event carries: the ids skip them.
    assert_eq!(stream.event(), ev(7, "chat.x", "ünïcode ✓"));
    let c = wait_counters(&broker, "events", |c| c.sse_events >= 5);
    assert_eq!((c.sse_streams, c.sse_events, c.sse_dropped), (1, 5, 2));
    assert_eq!(c.subscriptions, 2);
    drop(stream);
    drop(tcp);
    wait_idle(&broker);
}

#[test]
fn base64_carries_any_payload() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let mut stream = Stream::open(web, "/sse?topic=bin&encoding=base64", &[]);
    assert_eq!(stream.status, 200);
    let mut tcp = Client::connect(broker.local_addr());
    tcp.publish("bin", &[0xff, 0x00, 0x10]);
    tcp.publish("bin", b"text too");
    tcp.flush();
    assert_eq!(stream.event(), ev(1, "bin", "/wAQ"));
    assert_eq!(stream.event(), ev(2, "bin", "dGV4dCB0b28="));
}

#[test]
fn refused_requests_get_their_status() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let long_topic = format!("/sse?topic={}", "t".repeat(300));
    let cases = [
        ("/sse", 400, "name at least one topic"),
        ("/sse?topic=a..b", 400, "empty token"),
        ("/sse?topic=a&topic=b.>.c", 400, ""),
        ("/sse?topic=a&encoding=utf16", 400, "unknown encoding"),
        (&long_topic, 400, "more than 255"),
    ];
    for (target, status, why) in cases {
        let mut stream = Stream::open(web, target, &[]);
        assert_eq!(stream.status, status, "{target}: {}", stream.head);
        let body = stream.rest();
        assert!(body.contains(why), "{target}: {body:?}");
    }
    let c = wait_counters(&broker, "refusals", |c| c.web_refusals >= 5);
    assert_eq!(c.sse_streams, 0);
    assert_eq!(c.task_panics, 0);
    // The cores still serve.
    assert_eq!(Stream::open(web, "/sse?topic=a", &[]).status, 200);
    let mut tcp = Client::connect(broker.local_addr());
    tcp.flush();
    drop(tcp);
    wait_idle(&broker);
}

fn user_with(name: &str, subscribe: &[&str]) -> UserConfig {
    let allow = subscribe.iter().map(|s| s.to_string()).collect();
    UserConfig {
        name: name.into(),
        password: Some(hash_password(b"pw")),
        token_sha256: Some(hash_token(format!("tok-{name}").as_bytes())),
        permissions: Some(Permissions {
            publish: Rules { allow: Some(Vec::new()), deny: Vec::new() },
            subscribe: Rules { allow: Some(allow), deny: Vec::new() },
            allow_responses: None,
        }),
        ..UserConfig::default()
    }
}

#[test]
fn the_credential_comes_from_the_header_or_the_token_parameter() {
    let broker = web_broker(|cfg| cfg.users = vec![user_with("reader", &["news.>"])]);
    let web = broker.web_addr().unwrap();
    let ok = |stream: Stream| assert_eq!(stream.status, 200, "{}", stream.head);
    ok(Stream::open(web, "/sse?topic=news.a&token=tok-reader", &[]));
    ok(Stream::open(web, "/sse?topic=news.a", &[("Authorization", "Bearer tok-reader")]));
    // "reader:pw"
    ok(Stream::open(web, "/sse?topic=news.a", &[("Authorization", "Basic cmVhZGVyOnB3")]));
    let refused = |target: &str, headers: &[(&str, &str)], status: u16| {
        let mut stream = Stream::open(web, target, headers);
        assert_eq!(stream.status, status, "{target} {headers:?}: {}", stream.head);
        let body = stream.rest();
        (stream.head, body)
    };
    let (head, body) = refused("/sse?topic=news.a", &[], 401);
    assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    assert!(body.contains("auth failed"), "{body}");
    refused("/sse?topic=news.a&token=wrong", &[], 401);
    // Another scheme (a proxy's) is not ours: no credential, as without it.
    refused("/sse?topic=news.a", &[("Authorization", "Digest x")], 401);
    refused("/sse?topic=news.a&token=tok-reader", &[("Authorization", "Basic Og==")], 400);
    let (_, body) = refused("/sse?topic=news.a&topic=secrets&token=tok-reader", &[], 403);
    assert!(body.contains("secrets"), "{body}");
    // A failed login is counted as one; the other two as refusals.
    let c = wait_counters(&broker, "refusals", |c| c.web_refusals >= 2 && c.auth_failures >= 3);
    assert_eq!(c.sse_streams, 3);
    wait_idle(&broker);
}

/// A JWT in the `token` parameter or the header: its signature, time and
/// the user's rules decide, as in a `HELLO`.
#[test]
fn a_jwt_opens_a_stream_within_its_users_rules() {
    let dir = std::env::temp_dir().join(format!("corecast-sse-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = b"a-long-enough-test-secret-for-hs256";
    std::fs::write(dir.join("hs256"), secret).unwrap();
    let jwt = JwtConfig { hs256_secret_file: Some(dir.join("hs256")), ..JwtConfig::default() };
    let broker = web_broker(|cfg| {
        cfg.users = vec![user_with("reader", &["news.>"])];
        cfg.jwt = Some(jwt);
    });
    std::fs::remove_dir_all(&dir).unwrap();
    let web = broker.web_addr().unwrap();
    let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let sign = |exp: u64| {
        let claims = serde_json::json!({ "sub": "reader", "exp": exp });
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let good = sign(now.as_secs() + 600);
    let status =
        |target: String, headers: &[(&str, &str)]| Stream::open(web, &target, headers).status;
    assert_eq!(status(format!("/sse?topic=news.a&token={good}"), &[]), 200);
    let bearer = format!("Bearer {good}");
    assert_eq!(status("/sse?topic=news.a".into(), &[("Authorization", &bearer)]), 200);
    assert_eq!(status(format!("/sse?topic=secret&token={good}"), &[]), 403);
    let expired = sign(now.as_secs() - 3600);
    assert_eq!(status(format!("/sse?topic=news.a&token={expired}"), &[]), 401);
    wait_idle(&broker);
}

#[test]
fn a_websocket_upgrade_carries_the_credential_for_its_hello() {
    let mut bob = user_with("bob", &[">"]);
    bob.permissions = None;
    let broker = web_broker(|cfg| cfg.users = vec![bob]);
    let web = broker.web_addr().unwrap();
    let hello = |path: &str, auth: Option<&str>, token: &[u8]| {
        let mut request = format!("ws://{web}{path}").into_client_request().unwrap();
        if let Some(auth) = auth {
            request.headers_mut().insert("authorization", HeaderValue::from_str(auth).unwrap());
        }
        let tcp = TcpStream::connect(web).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut ws, _) = tungstenite::client(request, tcp).expect("upgrade");
        let mut bytes = Vec::new();
        ClientFrame::Hello(Hello { version: VERSION, name: "ws", token }).encode(&mut bytes);
        ws.send(Message::binary(bytes)).unwrap();
        let Message::Binary(answer) = ws.read().unwrap() else { panic!("not binary") };
        match ServerFrame::decode(&mut &answer[..], u32::MAX).unwrap().unwrap() {
            ServerFrame::Welcome(_) => Ok(()),
            ServerFrame::Err(e) => Err(e.code),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(hello("/ws?token=tok-bob", None, b""), Ok(()));
    assert_eq!(hello("/", Some("Bearer tok-bob"), b""), Ok(()));
    assert_eq!(hello("/", None, b""), Err(7), "no credential at all");
    assert_eq!(hello("/ws?token=nope", None, b""), Err(7));
    // A HELLO's own credential wins over the request's.
    assert_eq!(hello("/ws?token=tok-bob", None, b"wrong"), Err(7));
    assert_eq!(hello("/ws?token=nope", None, b"tok-bob"), Ok(()));
}

#[test]
fn keep_alive_comments_hold_an_idle_stream_open() {
    let broker = web_broker(|cfg| {
        cfg.ping_interval_ms = 100;
        cfg.stale_after_ms = 300;
    });
    let web = broker.web_addr().unwrap();
    let mut stream = Stream::open(web, "/sse?topic=quiet", &[]);
    assert_eq!(stream.status, 200);
    let start = Instant::now();
    let mut comments = 0;
    while start.elapsed() < Duration::from_millis(1_000) {
        assert_eq!(stream.block().expect("open"), ":\n\n");
        comments += 1;
    }
    assert!(comments >= 3, "{comments} keep-alives in 1 s at a 100 ms ping interval");
    let mut tcp = Client::connect(broker.local_addr());
    tcp.publish("quiet", b"still here");
    tcp.flush();
    assert_eq!(stream.event(), ev(1, "quiet", "still here"));
    assert_eq!(broker.counters().total.stale_closes, 0);
}

/// The leak of the gateways corecast replaces: a stream whose client left
/// must not outlive it. Each client's leaving is noticed at once: the slot,
/// its subscriptions and its buffers are back without any publish or
/// keep-alive to discover it.
#[test]
fn a_client_that_leaves_returns_its_slot_at_once() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let streams: Vec<Stream> =
        (0..200).map(|i| Stream::open(web, &format!("/sse?topic=t.{i}&topic=all"), &[])).collect();
    assert!(streams.iter().all(|s| s.status == 200));
    let c = wait_counters(&broker, "streams", |c| c.subscriptions == 400);
    assert_eq!(c.web_connections, 200);
    let mut tcp = Client::connect(broker.local_addr());
    tcp.publish("all", b"to everyone");
    tcp.flush();
    drop(tcp);
    let left = Instant::now();
    drop(streams);
    let c = wait_idle(&broker);
    let took = left.elapsed();
    assert!(took < Duration::from_secs(2), "200 streams took {took:?} to be freed");
    assert_eq!((c.web_connections, c.sse_streams), (0, 200));
}

#[test]
fn a_stream_that_does_not_read_is_cut_as_a_slow_consumer() {
    let broker = web_broker(|cfg| cfg.max_pending = 256 << 10);
    let web = broker.web_addr().unwrap();
    let stalled = Stream::open(web, "/sse?topic=firehose", &[]);
    let mut reader = Stream::open(web, "/sse?topic=firehose", &[]);
    assert_eq!((stalled.status, reader.status), (200, 200));
    let mut tcp = Client::connect(broker.local_addr());
    let payload = vec![b'p'; 8 << 10];
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.counters().total.closes_max_pending == 0 {
        assert!(Instant::now() < deadline, "never cut");
        for _ in 0..64 {
            tcp.publish("firehose", &payload);
        }
        tcp.flush();
        sent += 64;
        // The reader keeps up.
        while reader.event().id.unwrap() < sent {}
    }
    wait_counters(&broker, "the stalled stream gone", |c| c.web_connections == 1);
    tcp.publish("firehose", b"after");
    tcp.flush();
    assert_eq!(reader.event().data, "after");
    drop((stalled, reader, tcp));
    wait_idle(&broker);
}

#[test]
fn shutdown_ends_streams() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let mut stream = Stream::open(web, "/sse?topic=a", &[]);
    assert_eq!(stream.status, 200);
    let mut tcp = Client::connect(broker.local_addr());
    tcp.publish("a", b"last");
    assert_eq!(tcp.flush(), Vec::<Got>::new());
    assert_eq!(stream.event(), ev(1, "a", "last"));
    drop(tcp);
    broker.shutdown();
    let rest = stream.rest();
    assert!(!rest.contains("data"), "{rest:?}");
}

/// Connections reset (`SO_LINGER` 0) at every stage: mid request head,
/// right after the `101` or the `200`, with a message on its way, over
/// WebSocket and SSE. Afterwards every counter is back to idle.
#[test]
fn resets_at_every_stage_leave_nothing_behind() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let mut publisher = Client::connect(broker.local_addr());
    let reset = |tcp: TcpStream| {
        socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO)).unwrap();
        drop(tcp);
    };
    for i in 0..600 {
        match i % 6 {
            0 => {
                let mut tcp = TcpStream::connect(web).unwrap();
                tcp.write_all(b"GET /sse?topic=churn HTTP/1.1\r\nHo").unwrap();
                reset(tcp);
            }
            1 => reset(Stream::open(web, "/sse?topic=churn", &[]).tcp),
            2 => {
                let stream = Stream::open(web, "/sse?topic=churn&topic=c.%3E", &[]);
                publisher.publish("churn", &[b'x'; 2000]);
                reset(stream.tcp);
            }
            3 => {
                let tcp = TcpStream::connect(web).unwrap();
                let (ws, _) = tungstenite::client(format!("ws://{web}/ws"), tcp).unwrap();
                reset(ws.into_inner());
            }
            4 => {
                let tcp = TcpStream::connect(web).unwrap();
                let (mut ws, _) = tungstenite::client(format!("ws://{web}/"), tcp).unwrap();
                let mut frames = Vec::new();
                ClientFrame::Hello(Hello { version: VERSION, name: "c", token: b"" })
                    .encode(&mut frames);
                ClientFrame::Sub(corecast_proto::Sub {
                    sid: 1,
                    topic: "churn",
                    queue_group: "",
                    lossy: false,
                })
                .encode(&mut frames);
                // Half of the last frame: the rest never comes.
                ws.send(Message::binary(frames[..frames.len() - 3].to_vec())).unwrap();
                publisher.publish("churn", b"on its way");
                reset(ws.into_inner());
            }
            _ => {
                let mut tcp = TcpStream::connect(web).unwrap();
                tcp.write_all(b"GET /demo/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                reset(tcp);
            }
        }
    }
    publisher.flush();
    drop(publisher);
    let c = wait_idle(&broker);
    assert_eq!((c.web_connections, c.subscriptions, c.pending_bytes), (0, 0, 0));
    assert_eq!((c.sse_streams, c.ws_sessions, c.web_refusals), (200, 200, 0), "{c:?}");
    assert_eq!(c.task_panics, 0);
}
