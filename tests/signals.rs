//! The broker binary under the signals an operator sends it: SIGHUP
//! reloads the config file (what may change applies, what may not is
//! refused by name, a broken file changes nothing), SIGUSR2 starts lame
//! duck mode and ends in exit 0, and the closes the broker chooses are
//! logged at `info`, in text or JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use common::{process::Proc, Client, Got, StreamEnd};

/// SIGHUP reads the file again: a lower `max_connections` refuses the next
/// connection and keeps the open ones; a key that cannot change live is
/// named in a warning and keeps its value; a file that does not parse
/// changes nothing, so the lowered limit still holds after it.
#[test]
fn sighup_applies_what_may_change_and_a_broken_file_changes_nothing() {
    let file = ConfigFile::new("reload", "cores = 1\nmax_connections = 10\n");
    let mut broker = Proc::spawn(&["--config", file.path(), "--listen", "127.0.0.1:0"]);
    let mut first = Client::connect(broker.addr);
    let mut second = Client::connect(broker.addr);

    file.write("cores = 1\nmax_connections = 2\ncross_core_batch = 131072\n");
    broker.signal("HUP");
    broker.wait_for("reload done");
    assert!(broker.saw(|l| l.contains("reload: changed") && l.contains("max_connections")));
    let refused = |l: &str| l.contains("needs a restart") && l.contains("cross_core_batch");
    assert!(broker.saw(refused), "the fixed key is not named: {:#?}", broker.lines);
    expect_server_full(broker.addr);
    for client in [&mut first, &mut second] {
        let nonce = client.ping();
        client.until_pong(nonce);
    }

    file.write("cores = 1\nmax_connections = \n");
    broker.signal("HUP");
    broker.wait_for("reload refused");
    drop(first);
    let mut third = connect_when_a_slot_is_free(broker.addr);
    expect_server_full(broker.addr);
    let nonce = third.ping();
    third.until_pong(nonce);
    drop((second, third));
    assert!(broker.stop().success());
}

/// SIGUSR2: the listeners close at once, each client gets `GOAWAY` with
/// reason 2 (lame duck), and the process exits 0 once they are gone.
#[test]
fn sigusr2_sends_every_client_away_and_exits_0() {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "2",
        "--http",
        "off",
        "--lame-duck-grace",
        "0s",
        "--lame-duck-duration",
        "1s",
    ];
    let mut broker = Proc::spawn(&args);
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(broker.addr)).collect();
    broker.signal("USR2");
    broker.wait_for_all("lame duck: listeners closed", 2);
    // The sockets close as the runtime completes the cancelled accepts.
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect_timeout(&broker.addr, Duration::from_secs(1)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting in lame duck");
        thread::sleep(Duration::from_millis(5));
    }
    for client in &mut clients {
        let (frames, end) = client.read_to_end(Duration::from_secs(10));
        assert!(
            frames.contains(&Got::GoAway { reason: 2, grace_ms: 5000 }),
            "no lame-duck GOAWAY: {frames:?} {end:?}"
        );
        assert_ne!(end, StreamEnd::Timeout);
    }
    drop(clients);
    let (status, _) = broker.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

/// A protocol error closes the connection and says so at `info`, once,
/// with the client's name, its address, the reason and its counters; with
/// `--log-format json` the line is a JSON object with those fields.
#[test]
fn a_close_the_broker_chose_is_one_log_line_with_name_reason_and_counters() {
    for json in [false, true] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--http", "off"];
        if json {
            args.extend(["--log-format", "json"]);
        }
        let mut broker = Proc::spawn(&args);
        let mut client = Client::connect_raw(broker.addr);
        client.hello("billing-7", b"");
        client.expect_welcome();
        client.publish("orders.eu", b"one");
        // An unknown opcode: a fatal protocol error.
        client.send_raw(&[2, 0, 0, 0, 0x7f, 0]);
        client.expect_fatal();
        let line = broker.wait_for("connection closed by the server");
        if json {
            let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            assert_eq!(value["level"], "INFO", "{line}");
            assert_eq!(value["name"], "billing-7", "{line}");
            assert_eq!(value["msgs_in"], 1, "{line}");
            assert!(value["reason"].as_str().unwrap().starts_with("protocol error"), "{line}");
            assert!(value["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{line}");
        } else {
            for part in ["INFO", "name=billing-7", "reason=protocol error", "msgs_in=1", "peer="] {
                assert!(line.contains(part), "{part} is missing from {line}");
            }
        }
        let closes = broker.lines.iter().filter(|l| l.contains("closed by the server")).count();
        assert_eq!(closes, 1, "{:#?}", broker.lines);
        drop(client);
        assert!(broker.stop().success());
    }
}

/// A config file in a directory of its own, rewritten by the test.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("corecast-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = Self(dir.join("corecast.toml"));
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The next connection gets `ERR server full` (8).
fn expect_server_full(addr: SocketAddr) {
    let mut client = Client::connect_raw(addr);
    assert_eq!(client.expect_fatal(), 8, "expected ERR server full");
}

/// A connection, once the core has freed the slot a closed one held.
fn connect_when_a_slot_is_free(addr: SocketAddr) -> Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = Client::connect_raw(addr);
        client.hello("test", b"");
        match client.next_frame(Duration::from_secs(5)) {
            Ok(welcome @ Got::Welcome { .. }) => {
                client.welcome = Some(welcome);
                return client;
            }
            other => assert!(Instant::now() < deadline, "no free slot: {other:?}"),
        }
        thread::sleep(Duration::from_millis(20));
    }
}
