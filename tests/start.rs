#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real binary at start-up: a configuration it cannot run with is one
//! line on stderr and exit 1, before anything listens.

use std::{
    io::Read,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_corecast");

/// The binary with the given flags, at info level, as a test would run it.
fn corecast(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
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

#[test]
fn a_toml_error_is_one_line_with_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("corecast-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broker.toml");
    std::fs::write(&file, "cores = 1\nserver_name = \"x\"\nmax_conections = 10\n").unwrap();
    let refused = run_refused(corecast(&["--config", file.to_str().unwrap()]));
    let line = refused.assert_one_line(&format!("{}:3:1: ", file.display()));
    assert!(line.contains("unknown field `max_conections`"), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags_are_one_line_and_exit_1() {
    let cases: [(&[&str], &str); 2] = [
        (&["--cores", "two"], "invalid value 'two' for '--cores <CORES>'"),
        (&["--no-such-flag"], "unexpected argument '--no-such-flag'"),
    ];
    for (args, what) in cases {
        run_refused(corecast(args)).assert_one_line(what);
    }
}
