//! A `redis-server` of the test's own, on a free loopback port: started,
//! killed, restarted on the same port, paused, and asked simple commands
//! over a tiny RESP2 client.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

/// How long a start, a restart or one command may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running (or killed, or paused) `redis-server`, killed when dropped.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    /// The directory holding the server's log (and nothing else: no
    /// snapshot, no append-only file).
    dir: PathBuf,
    paused: bool,
}

impl Redis {
    /// Starts a server on a free loopback port and waits until it answers
    /// `PING`.
    pub fn start() -> Redis {
        check_installed();
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("corecast-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the redis log");
        let mut redis = Redis { child: None, port: 0, dir, paused: false };
        // The port is free when the listener gives it back, but another
        // process may take it before redis binds it: then try another.
        for _ in 0..5 {
            redis.port = free_port();
            if redis.spawn_and_wait(Duration::from_secs(3)) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 ports; log: {}", redis.log());
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and waits for the process to be gone: every client
    /// connection breaks at once, and everything the server held is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Starts a new, empty server on the same port (after [`Self::kill`];
    /// kills the running one first). Retries while the port is not free
    /// again yet.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.spawn_and_wait(Duration::from_secs(3)) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {}; log: {}", self.port, self.log());
    }

    /// SIGSTOP: the server holds its connections open but answers nothing.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("redis-server runs") as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own child, which we have not
        // waited for yet, so the pid is still ours.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }

    /// Sends one command and renders its reply as text: a simple string
    /// or bulk string as it is, an integer in decimal, a nil as `(nil)`,
    /// an error as `(error) MESSAGE`, and an array as its elements, one
    /// per line (nested arrays flattened).
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis {args:?} on port {}: {e}", self.port))
    }

    /// [`Self::command`], or why it failed (no server, no answer in time).
    pub fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        self.try_command_within(args, PATIENCE)
    }

    /// [`Self::try_command`], waiting at most `timeout` for each step.
    pub fn try_command_within(&self, args: &[&str], timeout: Duration) -> std::io::Result<String> {
        let stream = TcpStream::connect_timeout(&self.addr(), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        (&stream).write_all(&out)?;
        let mut lines = Vec::new();
        read_reply(&mut BufReader::new(&stream), &mut lines)?;
        Ok(lines.join("\n"))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Starts the process on `self.port` and waits up to `limit` for its
    /// `PONG`; false when it exited first (the port was taken, say) or
    /// never answered.
    fn spawn_and_wait(&mut self, limit: Duration) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("the redis log file");
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file again"))
            .stderr(log)
            .spawn();
        self.child = Some(child.unwrap_or_else(|e| panic!("cannot run redis-server: {e}")));
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            // Ours, not another test's server that holds the port.
            if self.answers_as_ours() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }
}

impl Redis {
    /// Whether the server on the port answers `PING` and is our process.
    fn answers_as_ours(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        let quick = Duration::from_secs(1);
        matches!(self.try_command_within(&["PING"], quick).as_deref(), Ok("PONG"))
            && self
                .try_command_within(&["INFO", "server"], quick)
                .is_ok_and(|info| info.lines().any(|l| l.trim_end() == format!("process_id:{pid}")))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        // A failed test keeps the log for whoever reads its message.
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Panics with what to do when `redis-server` is not on the PATH.
fn check_installed() {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(found, "redis-server is missing: run tools/test, which installs it");
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// Reads one RESP2 reply, appending its text lines to `lines`.
fn read_reply(r: &mut impl BufRead, lines: &mut Vec<String>) -> std::io::Result<()> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut head = String::new();
    if r.read_line(&mut head)? == 0 {
        return Err(bad("the connection closed before a reply".into()));
    }
    let head = head.trim_end_matches("\r\n");
    let (kind, rest) = head.split_at(head.chars().next().map_or(0, char::len_utf8));
    match kind {
        "+" | ":" => lines.push(rest.to_string()),
        "-" => lines.push(format!("(error) {rest}")),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad(format!("bulk length {rest:?}")))?;
            if len < 0 {
                lines.push("(nil)".into());
            } else {
                let mut body = vec![0u8; len as usize + 2];
                r.read_exact(&mut body)?;
                body.truncate(len as usize);
                lines.push(String::from_utf8_lossy(&body).into_owned());
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad(format!("array length {rest:?}")))?;
            if n < 0 {
                lines.push("(nil)".into());
            }
            for _ in 0..n.max(0) {
                read_reply(r, lines)?;
            }
        }
        _ => return Err(bad(format!("not a RESP2 reply: {head:?}"))),
    }
    Ok(())
}
