#![allow(clippy::unwrap_used)]
//! Runs the `corecast-cli` binary against an embedded broker on loopback.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use assert_cmd::Command as Cli;
use corecast::{Broker, Config};
use predicates::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_corecast-cli");

fn config(auth_token: Option<&str>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: 2,
        max_connections: 32,
        shutdown_grace_ms: 500,
        auth_token: auth_token.map(str::to_owned),
        http: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    }
}

fn start_broker(auth_token: Option<&str>) -> Broker {
    Broker::start(config(auth_token)).unwrap()
}

fn stop(broker: Broker) {
    broker.shutdown();
    broker.wait().unwrap();
}

/// The address of `broker`'s monitoring port.
fn http(broker: &Broker) -> String {
    broker.http_addr().unwrap().to_string()
}

/// The binary, pointed at `addr`, with no token or monitoring port from
/// the environment.
fn cli(addr: SocketAddr) -> Cli {
    let mut cmd = Cli::new(BIN);
    cmd.arg("--server").arg(addr.to_string()).env_remove("CORECAST_AUTH_TOKEN");
    cmd.env_remove("CORECAST_HTTP");
    for credential in ["CORECAST_PASSWORD", "CORECAST_BEARER", "CORECAST_JWT", "CORECAST_TLS_CA"] {
        cmd.env_remove(credential);
    }
    cmd.timeout(Duration::from_secs(10));
    cmd
}

/// A long-running `corecast-cli` (sub, reply), started once it has said on
/// standard error that it is ready.
struct Background {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
}

impl Background {
    fn start(addr: SocketAddr, args: &[&str], ready: &str) -> Self {
        let mut child = Command::new(BIN)
            .arg("--server")
            .arg(addr.to_string())
            .args(args)
            .env_remove("CORECAST_AUTH_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr_lines = forward_lines(child.stderr.take().unwrap());
        let mut seen = Vec::new();
        loop {
            match stderr_lines.recv_timeout(Duration::from_secs(5)) {
                Ok(line) if line.contains(ready) => break,
                Ok(line) => seen.push(line),
                Err(e) => panic!("{args:?} never said {ready:?} ({e}); said {seen:?}"),
            }
        }
        Self { child, stderr_lines }
    }

    /// Waits (5 s at most) for the process to end by itself; returns its
    /// standard output.
    fn finish(mut self) -> String {
        for _ in 0..500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stderr: Vec<String> = self.stderr_lines.try_iter().collect();
                assert!(status.success(), "{status}; stderr {stderr:?}");
                let mut out = String::new();
                self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                return out;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the process did not end within 5 s");
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn sub_prints_what_pub_publishes() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    let sub = Background::start(addr, &["sub", "news.eu", "--count", "5"], "subscribed to news.eu");
    cli(addr)
        .args(["pub", "news.eu", "hello world"])
        .assert()
        .success()
        .stderr(predicate::str::contains("published 1 message to news.eu (11 bytes)"));
    cli(addr)
        .args(["pub", "news.eu", "--reply-to", "answers.here"])
        .write_stdin("from stdin\n")
        .assert()
        .success();
    cli(addr)
        .args(["pub", "news.eu", "again", "--count", "2"])
        .assert()
        .success()
        .stderr(predicate::str::contains("published 2 messages to news.eu (5 bytes each)"));
    cli(addr)
        .args(["pub", "news.eu", "with headers", "--header", "trace-id=42", "--header", "k=a=b"])
        .assert()
        .success();
    assert_eq!(
        sub.finish(),
        concat!(
            "[news.eu] hello world\n",
            "[news.eu reply-to answers.here] from stdin\n",
            "[news.eu] again\n",
            "[news.eu] again\n",
            "[news.eu trace-id=42 k=a=b] with headers\n",
        )
    );
    stop(broker);
}

#[test]
fn sub_raw_prints_payloads_only() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    let sub = Background::start(addr, &["sub", "raw.topic", "--raw", "--count", "2"], "subscribed");
    cli(addr).args(["pub", "raw.topic", "one"]).assert().success();
    cli(addr).args(["pub", "raw.topic"]).write_stdin("two\n").assert().success();
    assert_eq!(sub.finish(), "one\ntwo\n");
    stop(broker);
}

#[test]
fn sub_raw_null_keeps_payloads_with_newlines_apart() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    let args = ["sub", "nul.topic", "--raw", "--null", "--count", "2"];
    let sub = Background::start(addr, &args, "subscribed");
    cli(addr).args(["pub", "nul.topic"]).write_stdin("one\ntwo\n").assert().success();
    cli(addr).args(["pub", "nul.topic", "three"]).assert().success();
    assert_eq!(sub.finish(), "one\ntwo\n\0three\0");
    cli(addr)
        .args(["sub", "nul.topic", "--null"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--raw"));
    stop(broker);
}

#[test]
fn sub_prints_a_payload_that_is_not_utf8_in_hex() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    let sub = Background::start(addr, &["sub", "bin.topic", "--count", "2"], "subscribed");
    cli(addr).args(["pub", "bin.topic"]).write_stdin(vec![0xff, 0x00, 0x41]).assert().success();
    cli(addr).args(["pub", "bin.topic", "plain"]).assert().success();
    assert_eq!(sub.finish(), "[bin.topic] hex:ff0041\n[bin.topic] plain\n");
    stop(broker);
}

#[test]
fn req_gets_the_echo_of_reply() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    let responder = Background::start(addr, &["reply", "svc.echo", "--count", "2"], "answering");
    cli(addr)
        .args(["req", "svc.echo", "ping me", "--timeout", "5s"])
        .assert()
        .success()
        .stdout("ping me\n");
    cli(addr)
        .args(["req", "svc.echo"])
        .write_stdin("from stdin")
        .assert()
        .success()
        .stdout("from stdin\n");
    assert_eq!(responder.finish(), "");
    stop(broker);
}

#[test]
fn reply_exec_answers_with_the_commands_output() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    let args = ["reply", "svc.upper", "--exec", "tr a-z A-Z", "--count", "1"];
    let responder = Background::start(addr, &args, "answering requests on svc.upper");
    cli(addr)
        .args(["req", "svc.upper", "make me loud"])
        .assert()
        .success()
        .stdout("MAKE ME LOUD\n");
    responder.finish();
    stop(broker);
}

#[test]
fn req_without_a_responder_says_so() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    cli(addr)
        .args(["req", "svc.nobody", "hello?", "--timeout", "10s"])
        .timeout(Duration::from_secs(3))
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("error: no responders for svc.nobody"));
    stop(broker);
}

#[test]
fn ping_prints_round_trips() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    let out = cli(addr).args(["ping", "--count", "3", "--interval", "10ms"]).assert().success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(lines[0].starts_with(&format!("connected to corecast at {addr}")), "{stdout}");
    for (i, line) in lines[1..4].iter().enumerate() {
        assert!(line.starts_with(&format!("pong from {addr}: seq={} time=", i + 1)), "{line}");
    }
    assert!(lines[4].starts_with("3 round trips: min "), "{stdout}");
    stop(broker);
}

#[test]
fn no_broker_running_is_told_plainly() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    cli(addr).args(["pub", "orders", "hello"]).assert().failure().code(1).stderr(format!(
        "error: cannot connect to {addr}: connection refused — is the broker running? \
         start it with `cargo run --release`\n"
    ));
}

#[test]
fn invalid_topics_name_the_rule_they_break() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    cli(addr).args(["pub", "orders..eu", "x"]).assert().failure().stderr(
        predicate::str::starts_with(
            "error: invalid topic \"orders..eu\": topic has an empty token",
        ),
    );
    cli(addr)
        .args(["sub", "orders eu"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("forbidden character ' '"));
    cli(addr).args(["pub", "$SYS.x", "x"]).assert().failure().stderr(
        "error: invalid topic \"$SYS.x\": topics starting with '$' are reserved for the broker\n",
    );
}

#[test]
fn auth_failures_say_where_the_token_goes() {
    let broker = start_broker(Some("s3cret"));
    let addr = broker.local_addr();
    cli(addr).args(["pub", "t", "x"]).assert().failure().stderr(
        predicate::str::contains("refused the connection: auth failed (7)")
            .and(predicate::str::contains("--auth-token or CORECAST_AUTH_TOKEN")),
    );
    cli(addr).args(["pub", "t", "x", "--auth-token", "s3cret"]).assert().success();
    cli(addr).args(["pub", "t", "x"]).env("CORECAST_AUTH_TOKEN", "s3cret").assert().success();
    stop(broker);
}

#[test]
fn a_broker_that_never_answers_the_handshake_is_a_connect_timeout() {
    // Connections to a listener that never accepts complete in the kernel,
    // and HELLO is never answered.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    cli(addr).args(["--connect-timeout", "200ms", "ping"]).assert().failure().code(1).stderr(
        format!(
            "error: cannot connect to {addr}: no answer within 200ms — is the address right \
             and the broker reachable? (--connect-timeout waits longer)\n"
        ),
    );
}

#[test]
fn a_refused_subscription_names_the_topic_and_the_reason() {
    let addr = version_1_broker();
    cli(addr).args(["sub", "orders.*"]).assert().failure().code(1).stderr(
        predicate::str::starts_with(format!(
            "error: cannot subscribe to orders.*: the broker at {addr} refused it: unsupported (105)"
        ))
        .and(predicate::str::contains("speaks protocol version 1 only")),
    );
}

#[test]
fn a_bad_queue_group_is_refused_before_sending() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    cli(addr).args(["sub", "--queue", "a.b", "orders"]).assert().failure().code(1).stderr(
        predicate::str::contains("invalid queue group \"a.b\"")
            .and(predicate::str::contains("one token of 1-255 bytes")),
    );
    assert_eq!(broker.counters().total.protocol_errors, 0, "nothing reached the broker");
    stop(broker);
}

#[test]
fn sub_takes_wildcards_and_queue_groups() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    let pattern = Background::start(addr, &["sub", "orders.>", "--count", "3"], "subscribed");
    let member = Background::start(
        addr,
        &["sub", "--queue", "workers", "orders.*", "--count", "2"],
        "subscribed to orders.* in queue group workers",
    );
    cli(addr).args(["pub", "orders.eu", "one"]).assert().success();
    cli(addr).args(["pub", "orders.eu.x", "two"]).assert().success();
    cli(addr).args(["pub", "orders.us", "three"]).assert().success();
    assert_eq!(pattern.finish(), "[orders.eu] one\n[orders.eu.x] two\n[orders.us] three\n");
    assert_eq!(member.finish(), "[orders.eu] one\n[orders.us] three\n", "the group's only member");
    stop(broker);
}

/// A fake broker that speaks version 1 only, as a broker before 1.1 did:
/// a `HELLO` asking for 1.1 gets `ERR 1` and a close, and every `SUB`
/// gets `ERR 105` (`PING`s are answered). Serves connections until the
/// test ends.
fn version_1_broker() -> SocketAddr {
    use corecast_proto::{frame::Welcome, ClientFrame, ErrFrame, ErrorCode, ServerFrame};
    use std::io::Write;

    fn send(stream: &mut std::net::TcpStream, frame: ServerFrame<'_>) {
        let mut out = Vec::new();
        frame.encode(&mut out);
        stream.write_all(&out).unwrap();
    }
    fn err(code: ErrorCode, fatal: bool) -> ServerFrame<'static> {
        ServerFrame::Err(ErrFrame { code: code.as_u16(), fatal, text: code.name() })
    }
    fn serve(mut stream: std::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let mut src = &buf[..];
            match ClientFrame::decode(&mut src, u32::MAX) {
                Ok(Some(frame)) => {
                    let reply = match frame {
                        ClientFrame::Hello(_) => Some(ServerFrame::Welcome(Welcome {
                            version: 1,
                            max_frame: 1 << 20,
                            ping_interval_ms: 30_000,
                            core_id: 0,
                            connection_id: 1,
                            server_name: "v1",
                        })),
                        ClientFrame::Sub(_) => Some(err(ErrorCode::Unsupported, false)),
                        ClientFrame::Ping { nonce } => Some(ServerFrame::Pong { nonce }),
                        _ => None,
                    };
                    let used = buf.len() - src.len();
                    buf.drain(..used);
                    if let Some(reply) = reply {
                        send(&mut stream, reply);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(_) => return send(&mut stream, err(ErrorCode::MalformedFrame, true)),
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// What `cmd` printed on standard output, once it succeeded.
fn stdout_of(cmd: &mut Cli) -> String {
    let out = cmd.assert().success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

/// What `cmd` printed once it printed what `done` wants (2 s at most: a
/// connection's record is kept once its slot is freed, just after it
/// closed).
fn eventually(cmd: &mut Cli, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let out = stdout_of(cmd);
        if done(&out) || Instant::now() >= deadline {
            return out;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The value `stats` prints for `label`: the last word of its line.
fn counter<'a>(stats: &'a str, label: &str) -> &'a str {
    let line = stats.lines().find(|l| l.trim_start().starts_with(label));
    let line = line.unwrap_or_else(|| panic!("no {label:?} in\n{stats}"));
    line.split_whitespace().last().unwrap()
}

#[test]
fn stats_counts_a_known_workload() {
    let broker = start_broker(None);
    let addr = broker.local_addr();
    let sub = Background::start(addr, &["sub", "work.done", "--count", "3"], "subscribed");
    cli(addr).args(["pub", "work.done", "twelve bytes", "--count", "3"]).assert().success();
    sub.finish();

    // Over the client port, with a STATS frame: the stats connection counts.
    let stats = stdout_of(cli(addr).arg("stats"));
    assert!(stats.starts_with(&format!("corecast at {addr}, 2 cores (STATS")), "{stats}");
    assert_eq!(counter(&stats, "in (published)"), "3", "{stats}");
    assert_eq!(counter(&stats, "out (queued to subscribers)"), "3", "{stats}");
    assert_eq!(counter(&stats, "open"), "1", "{stats}");
    assert_eq!(counter(&stats, "accepted since start"), "3", "{stats}");
    for group in ["connections", "messages", "bytes", "drops", "closes", "cross-core"] {
        assert!(stats.lines().any(|l| l == group), "no {group} group in\n{stats}");
    }
    let bytes = stats.lines().skip_while(|l| *l != "bytes").nth(1).unwrap();
    assert!(bytes.starts_with("  in ") && bytes.ends_with(" B"), "{stats}");

    // From /stats: the same counts, and who the broker is.
    let http = http(&broker);
    let stats = stdout_of(cli(addr).args(["stats", "--http", &http]));
    let title = format!(
        "corecast {} at {http}, pid {}, up ",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    assert!(stats.starts_with(&title), "{stats}");
    assert_eq!(counter(&stats, "in (published)"), "3", "{stats}");
    assert_eq!(counter(&stats, "open"), "0", "{stats}");
    // --http without a value: CORECAST_HTTP.
    let stats = stdout_of(cli(addr).args(["stats", "--http"]).env("CORECAST_HTTP", &http));
    assert!(stats.starts_with(&title), "{stats}");
    stop(broker);
}

#[test]
fn stats_over_the_client_port_takes_the_token() {
    let broker = start_broker(Some("s3cret"));
    let addr = broker.local_addr();
    cli(addr).arg("stats").assert().failure().code(1).stderr(
        predicate::str::contains("refused the connection: auth failed (7)")
            .and(predicate::str::contains("--auth-token or CORECAST_AUTH_TOKEN")),
    );
    let stats = stdout_of(cli(addr).args(["stats", "--auth-token", "s3cret"]));
    assert_eq!(counter(&stats, "open"), "1", "{stats}");
    stop(broker);
}

#[test]
fn conns_lists_open_and_closed_connections() {
    let broker = start_broker(None);
    let (addr, http) = (broker.local_addr(), http(&broker));
    let _watcher =
        Background::start(addr, &["--name", "watcher-7", "sub", "conns.t"], "subscribed");
    cli(addr).args(["--name", "leaver-9", "pub", "conns.t", "bye"]).assert().success();

    let open = stdout_of(cli(addr).args(["conns", "--http", &http]));
    let lines: Vec<&str> = open.lines().collect();
    assert_eq!(lines[0], "1 open connection, by id", "{open}");
    assert!(lines[1].split_whitespace().eq([
        "ID", "CORE", "PEER", "NAME", "STATE", "UPTIME", "IDLE", "PENDING", "SUBS", "MSGS", "IN",
        "MSGS", "OUT", "BYTES", "IN", "BYTES", "OUT", "DROPS"
    ]));
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!((row[3], row[4]), ("watcher-7", "open"), "{open}");
    // PENDING is "0 B": two words.
    assert_eq!((row[7], row[8]), ("0", "B"), "{open}");
    assert_eq!(row[9], "1", "one subscription: {open}");
    assert_eq!(row[11], "1", "one message out: {open}");

    // The port from the environment; sorted by bytes queued.
    let mut sorted = cli(addr);
    sorted.args(["conns", "--sort", "pending"]).env("CORECAST_HTTP", &http);
    let sorted = stdout_of(&mut sorted);
    assert!(sorted.starts_with("1 open connection, by pending\n"), "{sorted}");
    assert!(sorted.contains("watcher-7"), "{sorted}");

    let closed = eventually(cli(addr).args(["conns", "--closed", "--http", &http]), |out| {
        out.contains("leaver-9")
    });
    let lines: Vec<&str> = closed.lines().collect();
    assert_eq!(lines[0], "1 closed connection kept, newest first", "{closed}");
    assert!(lines[1].ends_with("DROPS  REASON"), "{closed}");
    assert!(lines[2].contains(" leaver-9 ") && lines[2].ends_with("client closed"), "{closed}");
    stop(broker);
}

#[test]
fn conns_closed_names_the_brokers_reason() {
    let broker = start_broker(None);
    let (addr, http) = (broker.local_addr(), http(&broker));
    // A length prefix (little-endian) of 16 MiB: past max_frame, so the
    // broker closes with ERR frame too large.
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.write_all(&[0, 0, 0, 1, 0xff]).unwrap();
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    let mut conns = cli(addr);
    conns.args(["conns", "--closed", "--limit", "5", "--http", &http]);
    let closed = eventually(&mut conns, |out| out.contains("protocol error"));
    assert!(
        closed.lines().nth(2).unwrap().ends_with("protocol error 3 (frame too large)"),
        "{closed}"
    );
    stop(broker);
}

#[test]
fn conns_takes_known_sort_keys_only() {
    let broker = start_broker(None);
    let (addr, http) = (broker.local_addr(), http(&broker));
    for key in ["id", "pending", "msgs_out", "msgs-in", "bytes_out", "bytes_in", "idle", "uptime"] {
        cli(addr).args(["conns", "--sort", key, "--http", &http]).assert().success();
    }
    cli(addr)
        .args(["conns", "--sort", "fastest", "--http", &http])
        .assert()
        .failure()
        .code(2)
        .stderr(
            predicate::str::contains("invalid value 'fastest' for '--sort <KEY>'")
                .and(predicate::str::contains("[possible values: id, pending, msgs_out")),
        );
    cli(addr)
        .args(["conns", "--closed", "--sort", "pending", "--http", &http])
        .assert()
        .failure()
        .code(2)
        .stderr(predicate::str::contains("'--closed' cannot be used with '--sort <KEY>'"));
    stop(broker);
}

#[test]
fn an_unreachable_monitoring_port_is_one_line() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for args in [&["conns"][..], &["top", "--count", "1"], &["stats", "--http"], &["lame-duck"]] {
        cli(free)
            .args(args)
            .env("CORECAST_HTTP", free.to_string())
            .assert()
            .failure()
            .code(1)
            .stderr(format!(
                "error: cannot reach the monitoring port at {free}: connection refused (is the \
                 broker running with http enabled? --http or CORECAST_HTTP give its address)\n"
            ));
    }
}

#[test]
fn an_error_answer_is_one_line_with_the_brokers_reason() {
    let port = http_server("503 Service Unavailable", r#"{"error": "core 1 did not answer"}"#);
    cli(port).args(["conns", "--http", &port.to_string()]).assert().failure().code(1).stderr(
        format!(
            "error: the monitoring port at {port} answered /connz?sort=id&limit=100 with 503 \
             Service Unavailable: core 1 did not answer (the broker is busy or shutting down; \
             try again)\n"
        ),
    );
}

/// A server that answers every request with `status` and `body`.
fn http_server(status: &'static str, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn top_prints_frames_with_a_line_per_core() {
    let broker = start_broker(None);
    let (addr, http) = (broker.local_addr(), http(&broker));
    let _busy = Background::start(addr, &["--name", "busy-1", "sub", "top.t"], "subscribed");
    let mut top = cli(addr);
    top.args(["top", "--count", "2", "--interval", "200ms", "--http", &http]);
    let started = Instant::now();
    let out = stdout_of(&mut top);
    assert!(started.elapsed() >= Duration::from_millis(400), "two intervals");
    assert!(!out.contains('\x1b'), "no escapes on a pipe: {out:?}");
    let frames: Vec<&str> = out.split("\n\ncorecast ").collect();
    assert_eq!(frames.len(), 2, "{out}");
    for frame in frames {
        assert!(
            frame.trim_start_matches("corecast ").contains(&format!(" at {http}  up ")),
            "{frame}"
        );
        let lines: Vec<&str> = frame.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("CORE  CONNS")).unwrap();
        assert!(lines[header].ends_with("MSGS IN/S  MSGS OUT/S  BYTES OUT/S  PENDING"), "{frame}");
        assert!(lines[header + 1].starts_with("0 "), "{frame}");
        assert!(lines[header + 2].starts_with("1 "), "{frame}");
        assert!(lines[header + 3].starts_with("all "), "{frame}");
        assert!(lines[header + 3].contains(" B/s "), "{frame}");
        assert!(frame.contains("connections by bytes queued (1 of 1 open)"), "{frame}");
        assert!(frame.contains(" busy-1 "), "{frame}");
    }
    stop(broker);
}

#[test]
fn lame_duck_refuses_a_missing_process() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    cli(free)
        .args(["lame-duck", "--pid", &i32::MAX.to_string()])
        .assert()
        .failure()
        .code(1)
        .stderr(format!("error: no process {}: is the broker running?\n", i32::MAX));
}

/// A `corecast` broker process (the binary `cargo test` builds beside this
/// one), killed if a test leaves it running.
struct BrokerProcess {
    child: Child,
    addr: SocketAddr,
    http: String,
}

impl BrokerProcess {
    /// Starts the binary with a short lame duck; `None` when it is not
    /// built (`cargo test -p corecast-cli` builds only this package).
    fn start() -> Option<Self> {
        let bin = Path::new(BIN).with_file_name("corecast");
        if !bin.exists() {
            return None;
        }
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--cores", "2"])
            .args(["--lame-duck-grace", "100ms", "--lame-duck-duration", "300ms"])
            .env("RUST_LOG", "info")
            .env_remove("CORECAST_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut http) = (None, None);
        for line in lines {
            let line = line.unwrap();
            let at = line.split_whitespace().find_map(|w| w.strip_prefix("addr="));
            if line.contains("corecast listening") {
                addr = at.map(|a| a.parse().unwrap());
            } else if line.contains("monitoring port listening") {
                http = at.map(str::to_owned);
            }
            if addr.is_some() && http.is_some() {
                break;
            }
        }
        let (Some(addr), Some(http)) = (addr, http) else {
            let _ = child.kill();
            panic!("{} did not log its addresses (is it out of date? cargo build)", bin.display());
        };
        Some(Self { child, addr, http })
    }

    /// Waits (10 s at most) for the process to exit.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the broker did not exit within 10 s");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lame_duck_sends_a_broker_process_away() {
    // Never the embedded broker: SIGUSR2 would end this test process.
    let Some(mut broker) = BrokerProcess::start() else {
        eprintln!("note: lame-duck not tested: build the corecast binary (cargo test builds it)");
        return;
    };
    let client = Background::start(broker.addr, &["sub", "ld.t"], "subscribed");
    let pid = broker.child.id();
    let out = stdout_of(cli(broker.addr).args(["lame-duck", "--http", &broker.http]));
    assert_eq!(
        out,
        format!(
            "the broker at {} (pid {pid}) is in lame duck mode: it accepts no connections, \
             sends its 1 client GOAWAY over 300ms, then exits\n",
            broker.http
        )
    );
    let status = broker.wait_exit();
    assert!(status.success(), "{status}");
    // The client was sent GOAWAY (`sub` says so).
    let mut told = Vec::new();
    while let Ok(line) = client.stderr_lines.recv_timeout(Duration::from_secs(5)) {
        if line.contains("the broker is shutting down") {
            return;
        }
        told.push(line);
    }
    panic!("the client was not sent GOAWAY; it said {told:?}");
}

// ------------------------------------------------ credentials and TLS

#[test]
fn hash_password_prints_an_argon2id_hash_that_verifies() {
    use argon2::{password_hash::PasswordHash, Argon2, PasswordVerifier};
    let out = Cli::new(BIN).arg("hash-password").write_stdin("hunter2\n").assert().success();
    let phc = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let phc = phc.trim_end();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    let parsed = PasswordHash::new(phc).unwrap();
    Argon2::default().verify_password(b"hunter2", &parsed).unwrap();
    assert!(Argon2::default().verify_password(b"hunter2\n", &parsed).is_err());
    Cli::new(BIN)
        .arg("hash-password")
        .write_stdin("")
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("no password"));
}

#[test]
fn hash_token_prints_the_sha256_of_the_token() {
    // The SHA-256 test vector of FIPS 180-2: "abc".
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
    for input in ["abc", "abc\n", "abc\r\n"] {
        Cli::new(BIN).arg("hash-token").write_stdin(input).assert().success().stdout(abc);
    }
}

#[test]
fn tls_without_a_ca_is_refused_with_a_clear_message() {
    let addr = "127.0.0.1:1".parse().unwrap();
    cli(addr)
        .args(["--tls", "ping"])
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("TLS needs --tls-ca FILE"))
        .stderr(predicate::str::contains("system's CA roots"));
    // A client certificate needs its key (a command line that does not parse).
    cli(addr).args(["--tls-ca", "ca.pem", "--tls-cert", "me.pem", "ping"]).assert().code(2);
    // A password file goes with --user.
    cli(addr).args(["--password-file", "pw", "ping"]).assert().code(2);
}

/// A JWT for `sub`, signed with HS256 and `secret`, valid for ten minutes.
fn jwt(secret: &[u8], sub: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let claims = serde_json::json!({ "sub": sub, "exp": now.as_secs() + 600 });
    let key = EncodingKey::from_secret(secret).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

#[test]
fn each_credential_flag_logs_in_to_a_broker_with_users() {
    use corecast::auth::{hash_password, hash_token, JwtConfig, UserConfig};
    let dir = temp_dir();
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let secret = b"a-long-enough-test-secret-for-hs256";
    let jwt_config = JwtConfig {
        hs256_secret_file: Some(write("hs256.secret", std::str::from_utf8(secret).unwrap()).into()),
        ..JwtConfig::default()
    };
    let users = vec![
        UserConfig { password: Some(hash_password(b"pw-alice")), ..news_reader("alice") },
        UserConfig { token_sha256: Some(hash_token(b"tok-svc")), ..news_reader("svc") },
        news_reader("reader"),
    ];
    let config = Config { users, jwt: Some(jwt_config), ..config(Some("shared")) };
    let broker = Broker::start(config).unwrap();
    let addr = broker.local_addr();
    // The first line of a password file; a bearer or JWT file trimmed.
    let password_file = write("password", "pw-alice\nignored");
    let bearer_file = write("bearer", "tok-svc\n");
    let jwt_file = write("jwt", &format!("{}\n", jwt(secret, "reader")));
    // The flag, the environment, standard input. Each case sends the
    // message "m" and would fail to log in with the credential it must
    // not take.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 7] = [
        (&["--user", "alice"], &[("CORECAST_PASSWORD", "pw-alice")], "m"),
        (&["--user", "alice"], &[], "pw-alice\nm"),
        (
            &["--user", "alice", "--password-file", &password_file],
            &[("CORECAST_PASSWORD", "no")],
            "m",
        ),
        (&["--bearer-file", &bearer_file], &[], "m"),
        (&[], &[("CORECAST_BEARER", "tok-svc")], "m"),
        (&["--jwt-file", &jwt_file], &[("CORECAST_BEARER", "no")], "m"),
        (&["--auth-token", "shared"], &[("CORECAST_JWT", "no")], "m"),
    ];
    for (args, env, stdin) in cases {
        let mut cmd = cli(addr);
        cmd.args(args).args(["pub", "news.t"]).write_stdin(stdin);
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd.assert()
            .success()
            .stderr(predicate::str::contains("published 1 message to news.t (1 byte)"));
    }
    assert_eq!(broker.counters().total.auth_failures, 0);
    stop(broker);
}

fn temp_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("corecast-cli-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Certificates made with rcgen: a CA, a server certificate for 127.0.0.1,
/// a client certificate with the subject `CN=alice` and another CA, as PEM
/// files in a new directory.
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = temp_dir();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "cli test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let issue = |names: Vec<String>, cn: &str, name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        issue(vec!["127.0.0.1".into()], "broker", "server");
        issue(vec![], "alice", "client");
        // Another CA, which signed nothing here.
        let other_key = KeyPair::generate().unwrap();
        let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        std::fs::write(dir.join("other-ca.pem"), other.self_signed(&other_key).unwrap().pem())
            .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// A broker config with a TLS port on 127.0.0.1 serving the server
    /// certificate; with `client_auth` other than off, client certificates
    /// of the test CA.
    fn broker_config(&self, client_auth: corecast::tls::ClientAuth) -> Config {
        use corecast::tls::{ClientAuth, TlsConfig};
        let tls = TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            client_ca: (client_auth != ClientAuth::Off).then(|| self.dir.join("ca.pem")),
            client_auth,
            min_version: Default::default(),
            handshake_timeout_ms: 5_000,
        };
        Config { tls: Some(tls), ..config(None) }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn ping_pub_and_sub_over_tls_and_mutual_tls() {
    use corecast::tls::ClientAuth;
    let pki = Pki::new();
    let broker = Broker::start(pki.broker_config(ClientAuth::Off)).unwrap();
    let tls = broker.tls_addr().unwrap();
    let ca = pki.path("ca.pem");
    cli(tls).args(["--tls-ca", &ca, "ping", "--count", "1"]).assert().success();
    // The CA from the environment, a message through TLS both ways.
    let sub = Background::start(
        tls,
        &["--tls-ca", &ca, "sub", "tls.t", "--count", "1"],
        "subscribed to tls.t",
    );
    cli(tls)
        .env("CORECAST_TLS_CA", &ca)
        .args(["--tls", "pub", "tls.t", "over tls"])
        .assert()
        .success();
    assert_eq!(sub.finish(), "[tls.t] over tls\n");

    // Another CA: the handshake fails, and the message says what to check.
    cli(tls)
        .args(["--tls-ca", &pki.path("other-ca.pem"), "ping", "--count", "1"])
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("TLS handshake with"))
        .stderr(predicate::str::contains("--tls-ca"));
    assert_eq!(broker.counters().total.tls_handshakes, 3);
    stop(broker);

    // Mutual TLS: with the client certificate, and without it.
    let broker = Broker::start(pki.broker_config(ClientAuth::Required)).unwrap();
    let mutual = broker.tls_addr().unwrap();
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    cli(mutual)
        .args(["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key, "ping", "--count", "1"])
        .assert()
        .success();
    cli(mutual)
        .args(["--tls-ca", &ca, "ping", "--count", "1"])
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("TLS handshake with"));
    // The broker counts the failure once it has seen the client go.
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.counters().total.tls_handshake_failures < 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let c = broker.counters().total;
    assert_eq!((c.tls_handshakes, c.tls_handshake_failures), (1, 1), "{c:#?}");
    stop(broker);
}

/// A user who may subscribe to `news.>` only.
fn news_reader(name: &str) -> corecast::auth::UserConfig {
    use corecast::auth::{Permissions, Rules, UserConfig};
    UserConfig {
        name: name.into(),
        permissions: Some(Permissions {
            subscribe: Rules {
                allow: Some(vec!["news.>".into(), "_INBOX.>".into()]),
                deny: vec![],
            },
            publish: Rules { allow: Some(vec!["news.>".into()]), deny: vec![] },
            ..Permissions::default()
        }),
        ..UserConfig::default()
    }
}

#[test]
fn users_log_in_with_a_password_or_a_bearer_file() {
    use corecast::auth::{hash_password, hash_token, UserConfig};
    let alice = UserConfig { password: Some(hash_password(b"pw-alice")), ..news_reader("alice") };
    let svc = UserConfig { token_sha256: Some(hash_token(b"tok-svc")), ..news_reader("svc") };
    let broker = Broker::start(Config { users: vec![alice, svc], ..config(None) }).unwrap();
    let addr = broker.local_addr();
    let dir = temp_dir();
    let bearer_file = dir.join("bearer");
    std::fs::write(&bearer_file, "tok-svc\n").unwrap();
    let bearer_file = bearer_file.to_str().unwrap();

    // The service subscribes with its bearer token; alice publishes with
    // her password from the environment.
    let sub = Background::start(
        addr,
        &["--bearer-file", bearer_file, "sub", "news.today", "--count", "1"],
        "subscribed to news.today",
    );
    cli(addr)
        .args(["--user", "alice", "pub", "news.today", "hello"])
        .env("CORECAST_PASSWORD", "pw-alice")
        .assert()
        .success();
    assert_eq!(sub.finish(), "[news.today] hello\n");

    // A topic the user may not subscribe to is refused, named.
    cli(addr)
        .args(["--bearer-file", bearer_file, "sub", "secret.plans"])
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("cannot subscribe to secret.plans"))
        .stderr(predicate::str::contains("permission denied (104)"));
    // So is a publish, and the command fails rather than saying it went.
    cli(addr)
        .args(["--user", "alice", "pub", "secret.plans", "leak"])
        .env("CORECAST_PASSWORD", "pw-alice")
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("permission denied: publish to secret.plans (104)"));
    cli(addr)
        .args(["--user", "alice", "req", "secret.plans", "what?", "--timeout", "300ms"])
        .env("CORECAST_PASSWORD", "pw-alice")
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("refused the request: permission denied: publish to"));

    // A wrong password, and a bearer token no user has.
    cli(addr)
        .args(["--user", "alice", "ping", "--count", "1"])
        .env("CORECAST_PASSWORD", "pw-bob")
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("refused the connection: auth failed (7)"))
        .stderr(predicate::str::contains("--user"));
    std::fs::write(dir.join("guess"), "tok-guess\n").unwrap();
    cli(addr)
        .args(["--bearer-file", dir.join("guess").to_str().unwrap(), "ping", "--count", "1"])
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("refused the connection: auth failed (7)"));
    assert_eq!(broker.counters().total.auth_failures, 2);
    stop(broker);
}

#[test]
fn a_client_certificate_logs_in_as_the_user_with_its_subject() {
    use corecast::{auth::UserConfig, tls::ClientAuth};
    let pki = Pki::new();
    let alice = UserConfig { tls_subject: Some("CN=alice".into()), ..news_reader("alice") };
    let config = Config { users: vec![alice], ..pki.broker_config(ClientAuth::Required) };
    let broker = Broker::start(config).unwrap();
    let tls = broker.tls_addr().unwrap();
    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("client.key"));
    let as_alice = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
    let sub = Background::start(
        tls,
        &[&as_alice[..], &["sub", "news.today", "--count", "1"]].concat(),
        "subscribed to news.today",
    );
    cli(tls).args(as_alice).args(["pub", "news.today", "by certificate"]).assert().success();
    assert_eq!(sub.finish(), "[news.today] by certificate\n");
    // Her rules apply.
    cli(tls)
        .args(as_alice)
        .args(["sub", "secret.plans"])
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("cannot subscribe to secret.plans"))
        .stderr(predicate::str::contains("permission denied (104)"));
    assert_eq!(broker.counters().total.auth_failures, 0);
    stop(broker);
}
