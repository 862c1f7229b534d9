//! The web port over real TCP: WebSocket sessions carrying corecast frames
//! beside TCP clients, bad requests and bad frames answered with their
//! HTTP status or close code (and nothing else disturbed), and every slot
//! back to idle afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{start, test_config, wait_counters, wait_idle, Client, Got};
use corecast::{web::WebConfig, Broker, Config};
use corecast_proto::{ClientFrame, Hello, Pub, ServerFrame, Sub, VERSION};
use tungstenite::{protocol::frame::coding::CloseCode, Message, WebSocket};

fn web_broker(tweak: impl FnOnce(&mut Config)) -> Broker {
    let mut cfg = Config {
        web: Some(WebConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allowed_origins: Vec::new(),
            tls: false,
        }),
        handshake_timeout_ms: 1_000,
        ..test_config(2)
    };
    tweak(&mut cfg);
    start(cfg)
}

/// A WebSocket client speaking corecast frames.
struct WsClient {
    ws: WebSocket<TcpStream>,
    buf: Vec<u8>,
}

impl WsClient {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (ws, response) = tungstenite::client(format!("ws://{addr}/"), stream).expect("upgrade");
        assert_eq!(response.status(), 101);
        WsClient { ws, buf: Vec::new() }
    }

    /// Connects and says HELLO, its frame split over two messages.
    fn hello(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr);
        let mut bytes = Vec::new();
        ClientFrame::Hello(Hello { version: VERSION, name: "ws", token: b"" }).encode(&mut bytes);
        let (a, b) = bytes.split_at(3);
        c.ws.send(Message::binary(a.to_vec())).unwrap();
        c.ws.send(Message::binary(b.to_vec())).unwrap();
        match c.recv() {
            Got::Welcome { .. } => c,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// Sends frames in messages of at most 16 KiB: small frames share a
    /// message, large ones span several.
    fn send(&mut self, frames: &[ClientFrame<'_>]) {
        let mut bytes = Vec::new();
        for f in frames {
            f.encode(&mut bytes);
        }
        for chunk in bytes.chunks(16 << 10) {
            self.ws.send(Message::binary(chunk.to_vec())).unwrap();
        }
    }

    fn recv(&mut self) -> Got {
        loop {
            let mut src = &self.buf[..];
            if let Some(frame) = ServerFrame::decode(&mut src, u32::MAX).expect("decodable") {
                let got = Got::from_frame(frame);
                let used = self.buf.len() - src.len();
                self.buf.drain(..used);
                return got;
            }
            match self.ws.read().expect("a message") {
                Message::Binary(b) => self.buf.extend_from_slice(&b),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn sub(sid: u32, topic: &str) -> ClientFrame<'_> {
    ClientFrame::Sub(Sub { sid, topic, queue_group: "", lossy: false })
}

fn publish<'a>(topic: &'a str, payload: &'a [u8]) -> ClientFrame<'a> {
    ClientFrame::Pub(Pub { topic, reply_to: "", payload })
}

#[test]
fn websocket_and_tcp_clients_reach_each_other() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().expect("a web port");
    let mut ws = WsClient::hello(web);
    ws.send(&[sub(1, "chat"), ClientFrame::Ping { nonce: 7 }]);
    assert_eq!(ws.recv(), Got::Pong(7));
    let mut tcp = Client::connect(broker.local_addr());
    tcp.sub(2, "chat");
    tcp.flush();
    tcp.publish("chat", b"from tcp");
    assert_eq!(ws.recv(), Got::msg(1, "chat", b"from tcp"));
    assert_eq!(tcp.recv(), Got::msg(2, "chat", b"from tcp"));
    // Many frames in one message, and a large one over several frames.
    let big = vec![9u8; 60_000];
    ws.send(&[publish("chat", b"one"), publish("chat", b"two"), publish("chat", &big)]);
    for expected in [&b"one"[..], b"two", &big] {
        assert_eq!(tcp.recv(), Got::msg(2, "chat", expected));
        assert_eq!(ws.recv(), Got::msg(1, "chat", expected));
    }
    let c = broker.counters().total;
    assert_eq!((c.web_connections, c.ws_sessions), (1, 1));
    drop(ws);
    drop(tcp);
    wait_idle(&broker);
    assert_eq!(broker.counters().total.web_connections, 0);
    broker.shutdown();
    broker.wait().unwrap();
}

/// Sends a raw request to the web port; the response until close.
fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn bad_requests_get_their_status_and_a_close() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    let cases = [
        (format!("GET / HTTP/1.1\r\nHost: h\r\n{upgrade}Sec-WebSocket-Version: 13\r\n\r\n"), "400"),
        (format!("GET / HTTP/1.1\r\nHost: h\r\n{upgrade}{key}Sec-WebSocket-Version: 8\r\n\r\n"), "426"),
        (format!("GET / HTTP/1.1\r\nHost: h\r\n{upgrade}{key}\r\n"), "426"),
        ("GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n".to_string(), "404"),
        (format!("GET / HTTP/1.1\r\nHost: h\r\nOrigin: http://evil.example\r\n{upgrade}{key}Sec-WebSocket-Version: 13\r\n\r\n"), "403"),
        (format!("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n", "p".repeat(9000)), "431"),
        ("\x16\x03\x01 not http at all\r\n\r\n".to_string(), "400"),
    ];
    let mut tcp = Client::connect(broker.local_addr());
    for (request, status) in &cases {
        let response = raw_request(web, request.as_bytes());
        assert!(response.starts_with(&format!("HTTP/1.1 {status}")), "{request:?} → {response:?}");
    }
    // A head that never ends is closed at the handshake timeout.
    let mut slow = TcpStream::connect(web).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let began = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(began.elapsed() < Duration::from_secs(4), "slowloris kept for {:?}", began.elapsed());
    // The TCP client never noticed.
    tcp.flush();
    let c = wait_counters(&broker, "refusals counted", |c| c.web_refusals >= cases.len() as u64);
    assert!(c.handshake_timeouts >= 1, "{c:?}");
    drop(tcp);
    wait_idle(&broker);
    broker.shutdown();
    broker.wait().unwrap();
}

/// GETs `path` from the web port as a browser would: the response, read
/// until the broker closes the connection.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).expect("closed after the response");
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    (head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn the_demo_page_and_its_client_are_served_then_closed() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let (head, body) = get(web, "/demo/");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
    assert!(body.contains("demo.js"), "{body}");
    let (head, body) = get(web, "/demo/corecast/index.js");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert_eq!(body, include_str!("../clients/js/index.js"));
    let (head, _) = get(web, "/demo");
    assert!(head.starts_with("http/1.1 308") && head.contains("location: /demo/"), "{head}");
    let (head, _) = get(web, "/demo/missing");
    assert!(head.starts_with("http/1.1 404"), "{head}");
    let c = wait_counters(&broker, "the 404 counted", |c| c.web_refusals == 1);
    assert_eq!(c.ws_sessions, 0, "{c:?}");
    wait_idle(&broker);
    broker.shutdown();
    broker.wait().unwrap();
}

/// A raw WebSocket connection after a valid upgrade, to send frames no
/// client library would.
fn raw_session(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// A masked client frame.
fn masked(op: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 2, 3];
    let mut frame = vec![op];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The close code the server's close frame carries, reading until it.
fn close_code(s: &mut TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let at = bytes.iter().position(|&b| b == 0x88)?;
    Some(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]))
}

#[test]
fn bad_frames_get_their_close_code_and_others_go_on() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let mut bystander = WsClient::hello(web);
    let cases: [(Vec<u8>, CloseCode); 6] = [
        (vec![0x82, 0x01, 0x00], CloseCode::Protocol),
        (masked(0x81, b"text"), CloseCode::Unsupported),
        (masked(0xC2, b"x"), CloseCode::Protocol),
        (masked(0x83, b"x"), CloseCode::Protocol),
        (masked(0x09, b"x"), CloseCode::Protocol),
        (masked(0x82, &vec![0u8; 70_000]), CloseCode::Size),
    ];
    for (frame, code) in &cases {
        let mut s = raw_session(web);
        s.write_all(frame).unwrap();
        assert_eq!(close_code(&mut s), Some(u16::from(*code)), "{:02x?}", &frame[..2]);
    }
    bystander.send(&[ClientFrame::Ping { nonce: 1 }]);
    assert_eq!(bystander.recv(), Got::Pong(1));
    wait_counters(&broker, "closes counted", |c| c.ws_protocol_closes >= cases.len() as u64);
    drop(bystander);
    wait_idle(&broker);
    broker.shutdown();
    broker.wait().unwrap();
}

#[test]
fn a_storm_of_sessions_leaves_every_slot_idle() {
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let mut kept = Vec::new();
    for i in 0..200 {
        let mut c = WsClient::hello(web);
        c.send(&[sub(1, &format!("t.{i}"))]);
        if i % 2 == 0 {
            kept.push(c);
        } else if i % 3 == 0 {
            let _ = c.ws.close(None);
        }
    }
    let c = broker.counters().total;
    assert!(c.web_connections >= 100, "{c:?}");
    drop(kept);
    wait_idle(&broker);
    let c = broker.counters().total;
    assert_eq!((c.web_connections, c.subscriptions, c.slots_in_use), (0, 0, 0));
    assert_eq!(c.ws_sessions, 200);
    broker.shutdown();
    broker.wait().unwrap();
}

/// A burst fanned out to several WebSocket subscribers that read late
/// arrives whole and in order at each (long queues of shared bodies go
/// out as many slices behind one frame header).
#[test]
fn a_burst_reaches_every_websocket_subscriber_in_order() {
    const MSGS: u32 = 3_000;
    let broker = web_broker(|_| {});
    let web = broker.web_addr().unwrap();
    let mut subs: Vec<WsClient> = (0..3).map(|_| WsClient::hello(web)).collect();
    for s in &mut subs {
        s.send(&[sub(1, "burst"), ClientFrame::Ping { nonce: 1 }]);
        assert_eq!(s.recv(), Got::Pong(1));
    }
    let mut publisher = Client::connect(broker.local_addr());
    for n in 0..MSGS {
        publisher.publish("burst", &n.to_le_bytes());
    }
    publisher.flush();
    for s in &mut subs {
        for n in 0..MSGS {
            assert_eq!(s.recv(), Got::msg(1, "burst", &n.to_le_bytes()));
        }
    }
    drop(subs);
    drop(publisher);
    wait_idle(&broker);
    broker.shutdown();
    broker.wait().unwrap();
}

/// Heartbeats: a session that answers nothing is closed as stale, like a
/// TCP client; one that sends only WebSocket pings is alive, and gets its
/// pongs.
#[test]
fn websocket_pings_keep_a_session_alive_and_silence_does_not() {
    let broker = web_broker(|cfg| {
        cfg.ping_interval_ms = 100;
        cfg.stale_after_ms = 300;
    });
    let web = broker.web_addr().unwrap();
    let mut silent = WsClient::hello(web);
    let mut pinger = WsClient::hello(web);
    pinger.ws.get_mut().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    let mut pongs = 0;
    while start.elapsed() < Duration::from_millis(1_200) {
        pinger.ws.send(Message::Ping(b"hb".to_vec().into())).unwrap();
        match pinger.ws.read() {
            Ok(Message::Pong(p)) if &p[..] == b"hb" => pongs += 1,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("the pinging session ended: {e}"),
        }
    }
    assert!(pongs >= 5, "{pongs} pongs");
    wait_counters(&broker, "the silent session closed", |c| c.stale_closes == 1);
    // The silent one got the broker's PINGs, then its close.
    let mut got_ping = false;
    loop {
        match silent.ws.read() {
            Ok(Message::Binary(b)) => got_ping |= b.get(4) == Some(&0x82),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(got_ping);
    drop(silent);
    wait_counters(&broker, "the pinging session left alone", |c| c.web_connections == 1);
    drop(pinger);
    wait_idle(&broker);
}
