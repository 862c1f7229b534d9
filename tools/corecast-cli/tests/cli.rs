#![allow(clippy::unwrap_used)]
//! Runs the `corecast-cli` binary against an embedded broker on loopback.

use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener},
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use assert_cmd::Command as Cli;
use corecast::{Broker, Config};
use predicates::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_corecast-cli");

fn start_broker(auth_token: Option<&str>) -> Broker {
    Broker::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: 2,
        max_connections: 32,
        shutdown_grace_ms: 500,
        auth_token: auth_token.map(str::to_owned),
        ..Config::default()
    })
    .unwrap()
}

fn stop(broker: Broker) {
    broker.shutdown();
    broker.wait().unwrap();
}

/// The binary, pointed at `addr`, with no token from the environment.
fn cli(addr: SocketAddr) -> Cli {
    let mut cmd = Cli::new(BIN);
    cmd.arg("--server").arg(addr.to_string()).env_remove("CORECAST_AUTH_TOKEN");
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
