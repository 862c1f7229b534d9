//! What the bench reads from the operating system: a broker's CPU time and
//! memory from `/proc/PID`, its own CPU time, its file limit and its CPU
//! affinity.

use std::{fs, net::TcpStream, os::fd::AsRawFd};

use anyhow::{bail, Context};

/// A process observed through `/proc/PID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Its process id.
    pub pid: u32,
}

impl Proc {
    /// User plus system CPU seconds so far (`/proc/PID/stat` utime + stime).
    pub fn cpu_seconds(self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/stat", self.pid);
        let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        parse_stat_ticks(&text).map(|ticks| ticks as f64 / clock_ticks_per_second())
    }

    /// Resident set size now, KiB (`VmRSS`).
    pub fn rss_kib(self) -> anyhow::Result<u64> {
        self.status_kib("VmRSS")
    }

    /// Peak resident set size since the process started, KiB (`VmHWM`).
    pub fn peak_rss_kib(self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM")
    }

    fn status_kib(self, key: &str) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        parse_status_kib(&text, key).with_context(|| format!("no {key} in {path}"))
    }
}

/// utime + stime, in clock ticks, from the text of `/proc/PID/stat`.
fn parse_stat_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from the last ')'. utime and stime are fields 14 and 15.
    let after = stat.rfind(')').map(|i| &stat[i + 1..]).context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        bail!("stat has too few fields");
    };
    Ok(utime.parse::<u64>()? + stime.parse::<u64>()?)
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU seconds the whole machine has been busy (every CPU, every process:
/// user, nice, system, irq, softirq, steal from `/proc/stat`).
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let text = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = text.lines().next().context("empty /proc/stat")?;
    parse_busy_ticks(line).map(|t| t as f64 / clock_ticks_per_second())
}

fn parse_busy_ticks(cpu_line: &str) -> anyhow::Result<u64> {
    let fields: Vec<u64> = cpu_line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("parse /proc/stat")?;
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    Ok(busy)
}

/// The 1-minute load average.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU seconds (user + system) used by this process so far, every thread.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Makes sure this process may open `needed` files, raising the soft (and
/// if allowed the hard) `RLIMIT_NOFILE`. Returns (limit before, limit now).
pub fn raise_nofile(needed: u64) -> anyhow::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur >= needed {
        return Ok((before, before));
    }
    lim.rlim_cur = needed;
    lim.rlim_max = lim.rlim_max.max(needed);
    // SAFETY: `lim` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!("cannot raise RLIMIT_NOFILE to {needed}: {}", std::io::Error::last_os_error());
    }
    Ok((before, needed))
}

/// Raises the soft `RLIMIT_NOFILE` of this process to its hard limit (the
/// bench holds thousands of connections). Returns (soft limit before,
/// soft limit now).
pub fn raise_nofile_to_hard() -> anyhow::Result<(u64, u64)> {
    use rlimit::{getrlimit, setrlimit, Resource};
    let (before, hard) = getrlimit(Resource::NOFILE).context("getrlimit RLIMIT_NOFILE")?;
    if before >= hard {
        return Ok((before, before));
    }
    setrlimit(Resource::NOFILE, hard, hard).context("setrlimit RLIMIT_NOFILE")?;
    Ok((before, hard))
}

/// `TCP_ESTABLISHED` in `tcp_info.tcpi_state` and in `/proc/net/tcp`.
const TCP_ESTABLISHED: u8 = 1;

/// The kernel's TCP state of a socket (`TCP_INFO`).
fn tcp_state(stream: &TcpStream) -> anyhow::Result<u8> {
    // SAFETY: an all-zero tcp_info is a valid value to be overwritten.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes; the fd is a live socket.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        bail!("getsockopt TCP_INFO: {}", std::io::Error::last_os_error());
    }
    Ok(info.tcpi_state)
}

/// TCP states of the IPv4 sockets bound to local `port`, from
/// `/proc/net/tcp`: (remote port, state) per socket.
fn tcp_states_of_port(table: &str, port: u16) -> Vec<(u16, u8)> {
    let hex_port =
        |addr: &str| addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let (local, remote, state) = (fields.next()?, fields.next()?, fields.next()?);
            (hex_port(local)? == port)
                .then(|| Some((hex_port(remote)?, u8::from_str_radix(state, 16).ok()?)))?
        })
        .collect()
}

/// For each of `streams` (loopback IPv4 connections to a server on
/// `server_port` that this process never reads from), whether the server
/// has closed its end. A server that closes a connection whose client does
/// not read cannot get its FIN through a full receive window, so the client
/// side alone does not show it: a connection counts as closed when this
/// side saw the FIN or a reset (its state is no longer ESTABLISHED), or the
/// server's socket of the pair (in `/proc/net/tcp`) is no longer
/// ESTABLISHED (FIN_WAIT1 with unsent data queued, for instance) or gone.
pub fn closed_by_server(streams: &[&TcpStream], server_port: u16) -> anyhow::Result<Vec<bool>> {
    let table = fs::read_to_string("/proc/net/tcp").context("read /proc/net/tcp")?;
    let server_side: std::collections::HashMap<u16, u8> =
        tcp_states_of_port(&table, server_port).into_iter().collect();
    streams
        .iter()
        .map(|s| {
            if tcp_state(s)? != TCP_ESTABLISHED {
                return Ok(true);
            }
            let port = s.local_addr()?.port();
            Ok(server_side.get(&port) != Some(&TCP_ESTABLISHED))
        })
        .collect()
}

/// Restricts the calling thread (and the threads it starts afterwards) to
/// `cpus`, or lets it run anywhere with `None`.
pub fn pin_current_thread(cpus: Option<&[usize]>) -> anyhow::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let all: Vec<usize> = (0..online_cpus()).collect();
    for &cpu in cpus.unwrap_or(&all) {
        // SAFETY: `set` is a valid cpu_set_t and CPU_SET bounds-checks.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        bail!("sched_setaffinity({cpus:?}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the nice value of the calling thread; threads and processes it
/// starts afterwards inherit it.
pub fn set_nice(nice: i32) -> anyhow::Result<()> {
    // SAFETY: setpriority takes plain integers; 0 = the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        bail!("setpriority({nice}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// CPUs this thread may run on.
pub fn allowed_cpus() -> usize {
    // SAFETY: an all-zero cpu_set_t is valid to be overwritten.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return online_cpus();
    }
    // SAFETY: `set` was filled in by the kernel.
    (unsafe { libc::CPU_COUNT(&set) }).max(1) as usize
}

/// CPUs online on this machine.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat).expect("valid"), 300);
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(parse_busy_ticks("cpu  10 1 5 100 7 2 3 4 0 0").expect("valid"), 25);
    }

    #[test]
    fn parses_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1CE8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0\n\
   1: 0100007F:1CE8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0\n\
   2: 0100007F:1CE8 0100007F:9C41 04 00000000:00000000 00:00000000 00000000     0        0 0 1 0\n\
   3: 0100007F:9C40 0100007F:1CE8 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0\n";
        assert_eq!(tcp_states_of_port(table, 0x1CE8), [(0, 0x0A), (0x9C40, 1), (0x9C41, 4)]);
        assert_eq!(tcp_states_of_port(table, 0x9C40), [(0x1CE8, 1)]);
    }

    #[test]
    fn sees_a_server_close_a_connection_that_is_never_read() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (a, b) = (
            TcpStream::connect(("127.0.0.1", port)).expect("a"),
            TcpStream::connect(("127.0.0.1", port)).expect("b"),
        );
        let (mut server_a, _) = listener.accept().expect("accept a");
        let (server_b, _) = listener.accept().expect("accept b");
        assert_eq!(closed_by_server(&[&a, &b], port).expect("states"), [false, false]);
        // Fill a's receive window, then close the server's end: its FIN
        // stays queued behind the data a never reads.
        server_a.set_nonblocking(true).expect("nonblocking");
        let chunk = vec![7u8; 1 << 16];
        while server_a.write(&chunk).is_ok() {}
        drop(server_a);
        drop(server_b);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(closed_by_server(&[&a, &b], port).expect("states"), [true, true]);
    }

    #[test]
    fn reads_own_process() {
        let me = Proc { pid: std::process::id() };
        assert!(me.rss_kib().expect("rss") > 0);
        let (proc_before, self_before) = (me.cpu_seconds().expect("cpu"), self_cpu_seconds());
        // Burn CPU until both figures move (a tick is 10 ms at most).
        let start = std::time::Instant::now();
        let mut x = 1u64;
        while self_cpu_seconds() <= self_before || me.cpu_seconds().expect("cpu") <= proc_before {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
            assert!(start.elapsed().as_secs() < 10, "CPU time did not rise");
        }
    }
}
