//! The broker binary as a process: started with flags, its log lines read
//! as they come, signalled and stopped by PID, killed if a test leaves it
//! running.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// How long a line or an exit is waited for before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running `corecast` binary.
pub struct Proc {
    child: Child,
    /// The first address from its "corecast listening" line.
    pub addr: SocketAddr,
    /// Every stdout line read so far.
    pub lines: Vec<String>,
    rx: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts the binary with `args` at log level `info`, and waits until it
    /// listens.
    pub fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corecast"))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("CORECAST_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the corecast binary");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proc = Proc { child, addr: ([0, 0, 0, 0], 0).into(), lines: Vec::new(), rx };
        let line = proc.wait_for("corecast listening");
        assert!(!line.contains('\x1b'), "ANSI escapes on a pipe: {line:?}");
        proc.addr = addr_in(&line);
        proc
    }

    /// The first line (from the start) holding `text`.
    pub fn wait_for(&mut self, text: &str) -> String {
        self.wait_for_all(text, 1);
        self.lines.iter().find(|l| l.contains(text)).cloned().unwrap_or_default()
    }

    /// Waits until `n` lines hold `text` (one from each of `n` cores, say).
    pub fn wait_for_all(&mut self, text: &str, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.lines.iter().filter(|l| l.contains(text)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.lines.push(line),
                Err(_) => panic!("fewer than {n} lines with {text:?}: {:#?}", self.lines),
            }
        }
    }

    /// Whether a line read so far passes `test`.
    pub fn saw(&self, test: impl Fn(&str) -> bool) -> bool {
        self.lines.iter().any(|l| test(l))
    }

    /// Every line logged so far, after a moment for the last ones.
    pub fn log(&mut self) -> &[String] {
        while let Ok(line) = self.rx.recv_timeout(Duration::from_millis(200)) {
            self.lines.push(line);
        }
        &self.lines
    }

    /// Sends `signal` (`TERM`, `HUP`, `USR2`…) by PID.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(status.expect("run kill").success(), "kill -{signal} failed");
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(PATIENCE).0
    }

    /// Waits for the process to exit, at most `limit`: its status and how
    /// long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            while let Ok(line) = self.rx.try_recv() {
                self.lines.push(line);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < limit, "broker still running after {limit:?}");
            thread::sleep(Duration::from_millis(10));
        }
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

/// `addr=…` from a log line, in text (`addr=1.2.3.4:5`) or JSON.
fn addr_in(line: &str) -> SocketAddr {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
        return value["addr"].as_str().expect("an addr field").parse().expect("an address");
    }
    let word = line.split_whitespace().find_map(|w| w.strip_prefix("addr="));
    word.unwrap_or_else(|| panic!("no addr= in {line:?}")).parse().expect("an address")
}
