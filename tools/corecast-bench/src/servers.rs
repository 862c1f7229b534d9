//! Starting and stopping the brokers a comparison runs against, and
//! installing the ones that are missing.
//!
//! Every broker runs on loopback on a free port, with its output in a log
//! file; corecast's monitoring port (on at its defaults) gets a free port
//! of its own, so that a broker someone else runs on its default port
//! (7422) changes nothing. A [`Server`] stops its process by pid when
//! dropped (SIGTERM, wait, then SIGKILL), so error paths do not leave
//! brokers behind; the child also gets SIGTERM if the bench itself dies
//! (`PR_SET_PDEATHSIG`).

use std::{
    fs::File,
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use nix::{
    sys::{
        prctl,
        signal::{kill, Signal},
    },
    unistd::Pid,
};

use crate::{
    driver::{Access, ConnOpts, Kind},
    pki::Pki,
    workload::perms,
};

/// corecast's tuned flags (the "tuned" section of `compare`): a subscriber
/// may fall 1 GiB behind before it is cut. The one place to change them.
pub const CORECAST_TUNED_FLAGS: &[&str] = &["--max-pending", "1073741824"];
/// nats-server's tuned settings (config file lines).
pub const NATS_TUNED_CONFIG: &str = "max_pending: 1GB\nwrite_deadline: \"60s\"\n";
/// redis-server's tuned flags: no output buffer limit for pub/sub clients.
pub const REDIS_TUNED_FLAGS: &[&str] = &["--client-output-buffer-limit", "pubsub 0 0 0"];

/// Which broker settings a comparison runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Settings {
    /// What each broker ships with: only the address (and the core count)
    /// is given.
    Defaults,
    /// Limits on slow consumers raised out of the way (see the `*_TUNED_*`
    /// constants).
    Tuned,
    /// The shipped defaults plus TLS: corecast on its TLS port
    /// (`--tls-listen`, `--tls-cert`, `--tls-key`), nats-server with a
    /// `tls { cert_file, key_file }` block, the same certificate and key
    /// (see [`Pki`]); every bench connection speaks TLS.
    Tls,
    /// The shipped defaults plus corecast users with permissions (see
    /// [`perms`]); every bench connection logs in with a bearer token.
    /// corecast only.
    Users,
}

impl Settings {
    /// Lower-case name, as used in results and file names.
    pub fn name(self) -> &'static str {
        match self {
            Settings::Defaults => "defaults",
            Settings::Tuned => "tuned",
            Settings::Tls => "tls",
            Settings::Users => "users",
        }
    }
}

/// How a broker is placed on the CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Pinned to CPU 0 with one core's worth of threads.
    OneCore,
    /// Every CPU, default threading.
    AllCores,
}

/// Where things are and how brokers are set up.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The corecast release binary.
    pub corecast_bin: PathBuf,
    /// Directory for logs and config files.
    pub dir: PathBuf,
    /// The certificates of [`Settings::Tls`], made once per run.
    pub pki: Option<Pki>,
}

impl Setup {
    /// What the bench's connections to a broker started with `settings`
    /// need: TLS with [`Settings::Tls`], a token with [`Settings::Users`].
    pub fn access(&self, settings: Settings) -> anyhow::Result<Access> {
        Ok(match settings {
            Settings::Tls => {
                let pki = self.pki.as_ref().context("TLS settings without certificates")?;
                Access { tls: Some(pki.client.clone()), ..Access::default() }
            }
            Settings::Users => Access { token: Some(perms::bench_token()), ..Access::default() },
            Settings::Defaults | Settings::Tuned => Access::default(),
        })
    }
}

/// A running broker, stopped on drop.
#[derive(Debug)]
pub struct Server {
    /// Which broker.
    pub kind: Kind,
    /// Its process id.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// corecast's monitoring port (`--http`); `None` for the others.
    pub http: Option<SocketAddr>,
    /// What a connection to `addr` needs (TLS, a token).
    pub access: Access,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Stops the process: SIGTERM, up to 5 s to exit, then SIGKILL; waits
    /// for it either way. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            // Our own unreaped child: its pid cannot have been reused.
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(10));
            }
            if let Ok(None) = child.try_wait() {
                eprintln!(
                    "corecast-bench: {} (pid {}) ignored SIGTERM; killing it",
                    self.kind, self.pid
                );
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` distinct ports on 127.0.0.1 that were free a moment ago (each
/// probe is held until all are taken, so no two are the same).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let probes = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("bind a probe socket"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    probes.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// The settings each broker runs with, for the report.
pub fn describe(kind: Kind, placement: Placement, settings: Settings) -> String {
    let one = placement == Placement::OneCore;
    let pin = if one { "`taskset -c 0`, " } else { "" };
    let tuned = settings == Settings::Tuned;
    match kind {
        Kind::Corecast => {
            let cores = if one { 1 } else { crate::sys::online_cpus() };
            let flags = match settings {
                Settings::Tuned => {
                    format!("`{}`, everything else", CORECAST_TUNED_FLAGS.join(" "))
                }
                Settings::Tls => "`--tls-listen` (the bench connects there), `--tls-cert`, `--tls-key` (rcgen's ECDSA P-256 server certificate, made for the run), nothing else: every other setting".into(),
                Settings::Users => format!("`--config` with {} `[[users]]`, each with a `token_sha256` and 10 publish and 10 subscribe rules, nothing else: every other setting", perms::USERS),
                Settings::Defaults => "nothing else: every other setting".into(),
            };
            format!(
                "corecast: {pin}`--listen`, `--http` (its monitoring port, on as shipped, on a free port of its own) and `--cores {cores}`, {flags} at its default"
            )
        }
        Kind::Nats => {
            let gomaxprocs = if one { "`GOMAXPROCS=1`, " } else { "" };
            if settings == Settings::Tls {
                format!("nats-server: {pin}{gomaxprocs}config file with the address and `tls {{ cert_file, key_file }}` (the same certificate and key as corecast's), everything else at its default (`INFO` in clear, then the TLS handshake)")
            } else if tuned {
                format!(
                    "nats-server: {pin}{gomaxprocs}config file with the address and `{}`, everything else at its default",
                    NATS_TUNED_CONFIG.trim_end().replace('\n', "`, `")
                )
            } else {
                format!("nats-server: {pin}{gomaxprocs}`-a 127.0.0.1 -p PORT`, no config file: every setting at its default")
            }
        }
        Kind::Redis => {
            let flags = if tuned {
                format!("`{} \"{}\"`, ", REDIS_TUNED_FLAGS[0], REDIS_TUNED_FLAGS[1])
            } else {
                String::new()
            };
            format!(
                "redis-server: {pin}`--port PORT --bind 127.0.0.1`, {flags}`--save \"\"` (no snapshot written at shutdown; pub/sub changes no keys, so no snapshot is triggered during a run either), everything else at its default (single-threaded)"
            )
        }
    }
}

/// Writes a config file `name` into the run's `conf/`.
pub fn write_conf(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).with_context(|| format!("create {}", conf.display()))?;
    let path = conf.join(name);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn nats_config(setup: &Setup, settings: Settings, port: u16) -> anyhow::Result<PathBuf> {
    let mut text = format!("listen: \"127.0.0.1:{port}\"\n");
    match settings {
        Settings::Tuned => text.push_str(NATS_TUNED_CONFIG),
        Settings::Tls => {
            let pki = setup.pki.as_ref().context("TLS settings without certificates")?;
            text.push_str(&format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
                pki.cert.display(),
                pki.key.display()
            ));
        }
        Settings::Defaults | Settings::Users => {}
    }
    write_conf(&setup.dir, &format!("nats-{port}.conf"), &text)
}

fn command(
    kind: Kind,
    placement: Placement,
    settings: Settings,
    setup: &Setup,
    (port, http, tls_port): (u16, u16, u16),
) -> anyhow::Result<Command> {
    let program: &std::ffi::OsStr = match kind {
        Kind::Corecast => setup.corecast_bin.as_os_str(),
        Kind::Nats => "nats-server".as_ref(),
        Kind::Redis => "redis-server".as_ref(),
    };
    // taskset execs the broker, so the child's pid is the broker's.
    let mut cmd = match placement {
        Placement::OneCore => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(program);
            c
        }
        Placement::AllCores => Command::new(program),
    };
    let cores = if placement == Placement::OneCore { 1 } else { crate::sys::online_cpus() };
    let tuned = settings == Settings::Tuned;
    match kind {
        Kind::Corecast => {
            cmd.args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--http", &format!("127.0.0.1:{http}")])
                .args(["--cores", &cores.to_string()]);
            match settings {
                Settings::Tuned => {
                    cmd.args(CORECAST_TUNED_FLAGS);
                }
                Settings::Tls => {
                    let pki = setup.pki.as_ref().context("TLS settings without certificates")?;
                    cmd.args(["--tls-listen", &format!("127.0.0.1:{tls_port}")])
                        .arg("--tls-cert")
                        .arg(&pki.cert)
                        .arg("--tls-key")
                        .arg(&pki.key);
                }
                Settings::Users => {
                    let conf =
                        write_conf(&setup.dir, "corecast-users.toml", &perms::users_config())?;
                    cmd.arg("--config").arg(conf);
                }
                Settings::Defaults => {}
            }
        }
        Kind::Nats if matches!(settings, Settings::Tuned | Settings::Tls) => {
            cmd.arg("-c").arg(nats_config(setup, settings, port)?);
        }
        Kind::Nats => {
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        }
        Kind::Redis => {
            // `--save ""`: no snapshot at shutdown (Redis would write
            // dump.rdb into its working directory); pub/sub changes no
            // keys, so it never triggers one during a run either.
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
            if tuned {
                cmd.args(REDIS_TUNED_FLAGS);
            }
        }
    }
    if kind == Kind::Nats && placement == Placement::OneCore {
        cmd.env("GOMAXPROCS", "1");
    }
    Ok(cmd)
}

/// Starts `kind` on a free loopback port (corecast's monitoring port on
/// another) and waits until it accepts connections and answers a
/// handshake, and corecast's monitoring port accepts connections.
pub fn start(
    kind: Kind,
    placement: Placement,
    settings: Settings,
    setup: &Setup,
    label: &str,
) -> anyhow::Result<Server> {
    if settings == Settings::Users && kind != Kind::Corecast {
        bail!("{kind}: the users and permissions case is corecast's");
    }
    if settings == Settings::Tls && kind == Kind::Redis {
        bail!("redis: the bench has no TLS for redis");
    }
    let ports = free_ports(3)?;
    let (port, http_port, tls_port) = (ports[0], ports[1], ports[2]);
    // corecast's TLS port is the one the bench uses; its plain port stays
    // open beside it.
    let client_port =
        if kind == Kind::Corecast && settings == Settings::Tls { tls_port } else { port };
    let addr = SocketAddr::from(([127, 0, 0, 1], client_port));
    let http = (kind == Kind::Corecast).then(|| SocketAddr::from(([127, 0, 0, 1], http_port)));
    let cmd = command(kind, placement, settings, setup, (port, http_port, tls_port))?;
    let log = setup.dir.join("logs").join(format!("{label}.log"));
    launch(kind, cmd, (addr, http), setup.access(settings)?, log)
}

/// Starts `cmd`, a broker of `kind` that will listen on `addr` (and on
/// its monitoring port `http`), with its output in `log`, and waits until
/// it accepts connections and answers a handshake (with `access`), and
/// its monitoring port accepts connections. The child gets SIGTERM if the
/// bench dies.
pub fn launch(
    kind: Kind,
    mut cmd: Command,
    (addr, http): (SocketAddr, Option<SocketAddr>),
    access: Access,
    log: PathBuf,
) -> anyhow::Result<Server> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // SAFETY: prctl is async-signal-safe; the closure touches no memory of
    // the parent.
    unsafe {
        cmd.pre_exec(|| {
            let _ = prctl::set_pdeathsig(Signal::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("start {kind}: {cmd:?}"))?;
    let mut server = Server { kind, pid: child.id(), addr, http, access, child: Some(child), log };
    wait_ready(&mut server)?;
    Ok(server)
}

fn wait_ready(server: &mut Server) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if !server.alive() {
            bail!("{} exited at start-up:\n{}", server.kind, server.log_tail());
        }
        let accepts = |addr| TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok();
        if accepts(&server.addr) && server.http.as_ref().is_none_or(accepts) {
            let opts = ConnOpts {
                read_buffer: 4096,
                timeout: Duration::from_secs(5),
                source: None,
                v1_1: false,
                access: server.access.clone(),
            };
            let mut conn = server.kind.connect(server.addr, "bench-probe", opts)?;
            conn.flush().with_context(|| format!("{} does not answer a ping", server.kind))?;
            return Ok(());
        }
        if Instant::now() >= end {
            let http = server.http.map_or(String::new(), |h| format!(" (monitoring port {h})"));
            bail!(
                "{} did not listen on {}{http} within 15 s:\n{}",
                server.kind,
                server.addr,
                server.log_tail()
            );
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// The first line `program --version` prints, `?` if it cannot be run.
pub fn version(program: &std::ffi::OsStr) -> String {
    Command::new(program).arg("--version").output().ok().map_or("?".into(), |o| {
        let text = String::from_utf8_lossy(&o.stdout);
        text.lines().next().unwrap_or("?").trim().to_owned()
    })
}

/// Whether an executable named `name` is on `PATH`.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

fn apt(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("corecast-bench: apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("run apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Makes sure every broker in `brokers` is on `PATH`. A missing one is an
/// error that names the Debian packages and the command that installs
/// them, unless `install` says to run it here (with `apt-get update` once
/// if the first attempt fails). Returns what it did.
pub fn ensure_installed(brokers: &[Kind], install: bool) -> anyhow::Result<Vec<String>> {
    let wanted: Vec<(&str, &str)> = brokers
        .iter()
        .filter_map(|k| match k {
            Kind::Nats => Some(("nats-server", "nats-server")),
            Kind::Redis => Some(("redis-server", "redis-server")),
            Kind::Corecast => None,
        })
        .filter(|(bin, _)| !on_path(bin))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let packages: Vec<&str> = wanted.iter().map(|(_, p)| *p).collect();
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&packages);
    if !install {
        bail!(
            "{} not installed: run `apt-get {}`, pass --install to have compare run it, or leave the broker out with --brokers",
            packages.join(" and "),
            args.join(" ")
        );
    }
    if apt(&args).is_err() {
        apt(&["update"])?;
        apt(&args)?;
    }
    for (bin, _) in &wanted {
        if !on_path(bin) {
            bail!("{bin} is still not on PATH after apt-get install");
        }
    }
    Ok(vec![format!("installed with apt-get: {}", packages.join(" "))])
}

/// Makes sure the corecast release binary exists, building it if it is
/// missing (or always, with `force`).
pub fn ensure_corecast(bin: &Path, force: bool) -> anyhow::Result<Option<String>> {
    if bin.is_file() && !force {
        return Ok(None);
    }
    eprintln!("corecast-bench: cargo build --release -p corecast");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "-p", "corecast"])
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p corecast failed: {status}");
    }
    if !bin.is_file() {
        bail!("{} still missing after the build (run from the workspace root)", bin.display());
    }
    Ok(Some("built corecast with `cargo build --release -p corecast`".into()))
}
