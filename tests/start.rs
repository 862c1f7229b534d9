#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real binary at start-up: it refuses an address something else
//! listens on, a locked-memory limit glommio cannot run with, and a bad
//! configuration, each with one line on stderr and exit 1 before anything
//! listens; and it listens on what a host name resolves to.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener, ToSocketAddrs},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_corecast");

/// A broker process serving until the test stops it; killed if left running.
struct Proc {
    child: Child,
    /// Every address from its "corecast listening" line (`addrs=`).
    addrs: Vec<SocketAddr>,
}

impl Proc {
    fn spawn(command: Command) -> Proc {
        let mut child = piped(command).spawn().expect("start the corecast binary");
        let lines = lines_of(child.stdout.take().expect("piped stdout"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let addrs = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).expect("a 'corecast listening' line on stdout");
            if line.contains("corecast listening") {
                break addrs_in(&line);
            }
        };
        // Keep draining stdout so the broker never blocks on its log.
        thread::spawn(move || lines.iter().count());
        Proc { child, addrs }
    }

    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// SIGTERM by PID, then the exit status.
    fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        wait_at_most(&mut self.child, Duration::from_secs(10)).expect("the broker stops")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The binary with the given flags, at info level, as a test would run it.
fn corecast(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    command
}

/// The same under `prlimit` with this soft and hard locked-memory limit.
fn corecast_with_memlock(soft: u64, hard: u64, args: &[&str]) -> Command {
    let mut command = Command::new("prlimit");
    command.arg(format!("--memlock={soft}:{hard}")).arg(BIN).args(args);
    command
}

fn piped(mut command: Command) -> Command {
    command
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "1")
        .env_remove("CORECAST_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn lines_of(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `addrs=a,b` from a "corecast listening" line.
fn addrs_in(line: &str) -> Vec<SocketAddr> {
    let list = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addrs="))
        .unwrap_or_else(|| panic!("no addrs= in {line:?}"));
    list.split(',').map(|a| a.parse().expect("addrs= holds addresses")).collect()
}

fn wait_at_most(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// How a broker run that should not start ended.
struct Refused {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs a broker that must exit by itself within 10 s.
fn run_refused(command: Command) -> Refused {
    let mut child = piped(command).spawn().expect("start the corecast binary");
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let status = wait_at_most(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let refused = Refused {
        status: status.unwrap_or_default(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "the broker kept running; stdout:\n{}\nstderr:\n{}",
        refused.stdout,
        refused.stderr
    );
    refused
}

fn read_all(mut out: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    })
}

impl Refused {
    /// Exit 1 with one line on stderr, the line containing `what`, with no
    /// cause chain or backtrace, and nothing listening.
    fn assert_one_line(&self, what: &str) -> &str {
        let context = format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert_eq!(self.status.code(), Some(1), "{context}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr; {context}");
        let line = lines[0];
        assert!(line.starts_with("corecast: error: "), "{context}");
        assert!(line.contains(what), "{what:?} missing; {context}");
        for noise in ["Caused by", "backtrace", "stack", "panicked"] {
            assert!(!self.stderr.contains(noise), "{noise:?} on stderr; {context}");
        }
        assert!(!self.stdout.contains("listening"), "it listened; {context}");
        line
    }
}

/// A subscriber on `addr`, then `n` publishers each on a new connection
/// (so the kernel picks a listener for each), one message each: the
/// subscriber must get all `n`, in order.
fn deliver_each_of(addr: SocketAddr, n: u64) {
    let mut sub = Client::connect(addr);
    sub.sub(1, "start.t");
    sub.flush_empty();
    for i in 0..n {
        let mut publisher = Client::connect(addr);
        publisher.publish("start.t", &seq_payload(i, 8));
        publisher.flush_empty();
    }
    for i in 0..n {
        assert_eq!(sub.recv(), Got::msg(1, "start.t", &seq_payload(i, 8)), "message {i}");
    }
}

#[test]
fn a_second_broker_on_the_same_port_exits_1_and_the_first_keeps_its_clients() {
    let first = Proc::spawn(corecast(&["--listen", "127.0.0.1:0", "--cores", "2"]));
    let addr = first.addr().to_string();
    let second = run_refused(corecast(&["--listen", &addr, "--cores", "2"]));
    second.assert_one_line(&format!("cannot listen on {addr}: address already in use"));
    // Had the second joined the port, about half of these would reach it.
    deliver_each_of(first.addr(), 20);
    assert!(first.stop().success());
}

#[test]
fn a_port_another_program_listens_on_is_refused_even_through_a_wildcard() {
    // std's listener has SO_REUSEADDR and no SO_REUSEPORT; 0.0.0.0 covers
    // 127.0.0.1.
    let other = TcpListener::bind("0.0.0.0:0").unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], other.local_addr().unwrap().port())).to_string();
    let refused = run_refused(corecast(&["--listen", &addr, "--cores", "2"]));
    refused.assert_one_line("address already in use");
    // And the other way round: our wildcard covers its loopback listener.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let any = format!("0.0.0.0:{}", other.local_addr().unwrap().port());
    run_refused(corecast(&["--listen", &any])).assert_one_line("address already in use");
}

#[test]
fn a_broker_restarts_at_once_on_the_port_it_just_left() {
    let first = Proc::spawn(corecast(&["--listen", "127.0.0.1:0", "--cores", "2"]));
    let addr = first.addr();
    // Connections the broker closes first stay in TIME_WAIT on its port.
    let clients: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
    assert!(first.stop().success());
    drop(clients);
    let again = Proc::spawn(corecast(&["--listen", &addr.to_string(), "--cores", "2"]));
    assert_eq!(again.addr(), addr);
    deliver_each_of(addr, 5);
    assert!(again.stop().success());
}

#[test]
fn too_little_locked_memory_is_one_line_before_anything_listens() {
    let refused = run_refused(corecast_with_memlock(65536, 65536, &["--listen", "127.0.0.1:0"]));
    let line = refused.assert_one_line("locked-memory limit is 64 KiB");
    for needed in ["needs 512 KiB", "ulimit -l 512", "LimitMEMLOCK=512K"] {
        assert!(line.contains(needed), "{needed:?} missing in {line:?}");
    }
}

/// The soft and hard "Max open files" of a running process.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("its limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files");
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().expect("soft"), numbers.next().expect("hard"))
}

#[test]
fn a_low_soft_open_file_limit_is_raised_to_the_hard_one() {
    let mut command = Command::new("prlimit");
    command.arg("--nofile=256:4096").arg(BIN).args(["--listen", "127.0.0.1:0", "--cores", "1"]);
    let broker = Proc::spawn(command);
    assert_eq!(open_file_limits(broker.child.id()), (4096, 4096));
    deliver_each_of(broker.addr(), 3);
    assert!(broker.stop().success());
}

#[test]
fn a_low_soft_locked_memory_limit_is_raised_to_the_hard_one() {
    let args = ["--listen", "127.0.0.1:0", "--cores", "2"];
    let broker = Proc::spawn(corecast_with_memlock(65536, 1 << 20, &args));
    deliver_each_of(broker.addr(), 3);
    assert!(broker.stop().success());
}

#[test]
fn listen_takes_a_host_name_and_serves_each_address_it_resolves_to() {
    let broker = Proc::spawn(corecast(&["--listen", "localhost:0", "--cores", "2"]));
    let port = broker.addr().port();
    assert_ne!(port, 0);
    let resolved: Vec<SocketAddr> = ("localhost", port).to_socket_addrs().unwrap().collect();
    assert!(broker.addrs.iter().all(|a| resolved.contains(a)), "{:?}", broker.addrs);
    assert!(broker.addrs.contains(&SocketAddr::from(([127, 0, 0, 1], port))), "{:?}", broker.addrs);
    deliver_each_of(SocketAddr::from(([127, 0, 0, 1], port)), 5);
    match resolved.iter().find(|a| a.is_ipv6()) {
        Some(v6) => {
            assert!(broker.addrs.contains(v6), "{:?}", broker.addrs);
            let mut sub = Client::connect(*v6);
            sub.sub(1, "v6.t");
            sub.flush_empty();
            let mut publisher = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)));
            publisher.publish("v6.t", b"to ::1");
            publisher.flush_empty();
            assert_eq!(sub.recv(), Got::msg(1, "v6.t", b"to ::1"));
        }
        None => {
            eprintln!("note: localhost does not resolve to an IPv6 address here; ::1 not tried")
        }
    }
    assert!(broker.stop().success());
}

#[test]
fn the_embedding_api_takes_a_host_name() {
    let config = corecast::Config { listen: "localhost:0".parse().unwrap(), ..test_config(2) };
    let broker = start(config);
    let first = broker.local_addr();
    assert_eq!(broker.local_addrs()[0], first);
    assert!(broker.local_addrs().iter().all(|a| a.port() == first.port() && a.ip().is_loopback()));
    deliver_each_of(first, 3);
    finish(broker);
}

#[test]
fn a_host_that_does_not_resolve_is_named() {
    let refused = run_refused(corecast(&["--listen", "no-such-host.invalid:7400"]));
    refused.assert_one_line("cannot resolve the host `no-such-host.invalid`");
}

#[test]
fn a_toml_error_is_one_line_with_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("corecast-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broker.toml");
    std::fs::write(&file, "cores = 1\nserver_name = \"x\"\nmax_conections = 10\n").unwrap();
    let refused = run_refused(corecast(&["--config", file.to_str().unwrap()]));
    let line = refused.assert_one_line(&format!("{}:3:1: ", file.display()));
    assert!(line.contains("unknown field `max_conections`"), "{line}");
    std::fs::write(&file, "io_memory = 262144\n").unwrap();
    let refused = run_refused(corecast(&["--config", file.to_str().unwrap()]));
    refused.assert_one_line(":1:1: io_memory was removed: it cannot lower the 512 KiB");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags_are_one_line_and_exit_1() {
    let cases: [(&[&str], &str); 4] = [
        (&["--cores", "two"], "invalid value 'two' for '--cores <CORES>'"),
        (&["--listen", "localhost"], "`localhost` has no port"),
        (&["--no-such-flag"], "unexpected argument '--no-such-flag'"),
        (&["--io-memory", "262144"], "--io-memory was removed: it cannot lower the 512 KiB"),
    ];
    for (args, what) in cases {
        run_refused(corecast(args)).assert_one_line(what);
    }
}
