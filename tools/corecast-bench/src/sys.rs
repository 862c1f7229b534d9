//! What the bench reads from the operating system: a broker's CPU time and
//! memory from `/proc/PID`, its own CPU time, its file limit and its CPU
//! affinity.

use std::{collections::HashMap, net::TcpStream, os::fd::AsRawFd};

use anyhow::{bail, Context};
use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    sys::resource::{getrusage, UsageWho},
    sys::time::TimeVal,
    unistd::{sysconf, Pid, SysconfVar},
};
use procfs::{
    net::{TcpNetEntry, TcpState},
    process::{Process, Status},
    CpuTime, Current, CurrentSI, KernelStats, LoadAverage,
};
use rlimit::{getrlimit, setrlimit, Resource};

/// A process observed through `/proc/PID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Its process id.
    pub pid: u32,
}

impl Proc {
    /// User plus system CPU seconds so far (`/proc/PID/stat` utime + stime).
    pub fn cpu_seconds(self) -> anyhow::Result<f64> {
        let stat = self
            .process()
            .and_then(|p| p.stat())
            .with_context(|| format!("read /proc/{}/stat", self.pid))?;
        Ok(ticks_to_seconds(stat.utime + stat.stime))
    }

    /// Resident set size now, KiB (`VmRSS`).
    pub fn rss_kib(self) -> anyhow::Result<u64> {
        self.status()?.vmrss.with_context(|| format!("no VmRSS in /proc/{}/status", self.pid))
    }

    /// Peak resident set size since the process started, KiB (`VmHWM`).
    pub fn peak_rss_kib(self) -> anyhow::Result<u64> {
        self.status()?.vmhwm.with_context(|| format!("no VmHWM in /proc/{}/status", self.pid))
    }

    fn status(self) -> anyhow::Result<Status> {
        self.process()
            .and_then(|p| p.status())
            .with_context(|| format!("read /proc/{}/status", self.pid))
    }

    fn process(self) -> procfs::ProcResult<Process> {
        Process::new(self.pid as i32)
    }
}

fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / procfs::ticks_per_second() as f64
}

/// CPU seconds the whole machine has been busy (every CPU, every process:
/// user, nice, system, irq, softirq, steal from `/proc/stat`).
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stats = KernelStats::current().context("read /proc/stat")?;
    Ok(ticks_to_seconds(busy_ticks(&stats.total)))
}

/// Every tick of `cpu` but idle, iowait and guest time (guest time is
/// already counted in user time).
fn busy_ticks(cpu: &CpuTime) -> u64 {
    let irq_softirq_steal = [cpu.irq, cpu.softirq, cpu.steal].into_iter().flatten().sum::<u64>();
    cpu.user + cpu.nice + cpu.system + irq_softirq_steal
}

/// The 1, 5 and 15-minute load averages, as `/proc/loadavg` shows them.
pub fn loadavg() -> String {
    LoadAverage::current()
        .map(|l| format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen))
        .unwrap_or_else(|_| "?".into())
}

/// CPU seconds (user + system) used by this process so far, every thread.
pub fn self_cpu_seconds() -> f64 {
    let secs = |tv: TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| secs(u.user_time()) + secs(u.system_time()))
}

/// Makes sure this process may open `needed` files, raising the soft (and
/// if allowed the hard) `RLIMIT_NOFILE`. Returns (limit before, limit now).
pub fn raise_nofile(needed: u64) -> anyhow::Result<(u64, u64)> {
    let (before, hard) = getrlimit(Resource::NOFILE).context("getrlimit")?;
    if before >= needed {
        return Ok((before, before));
    }
    setrlimit(Resource::NOFILE, needed, hard.max(needed))
        .with_context(|| format!("cannot raise RLIMIT_NOFILE to {needed}"))?;
    Ok((before, needed))
}

/// Raises the soft `RLIMIT_NOFILE` of this process to its hard limit (the
/// bench holds thousands of connections). Returns (soft limit before,
/// soft limit now).
pub fn raise_nofile_to_hard() -> anyhow::Result<(u64, u64)> {
    let (before, hard) = getrlimit(Resource::NOFILE).context("getrlimit RLIMIT_NOFILE")?;
    if before >= hard {
        return Ok((before, before));
    }
    setrlimit(Resource::NOFILE, hard, hard).context("setrlimit RLIMIT_NOFILE")?;
    Ok((before, hard))
}

/// `TCP_ESTABLISHED` in `tcp_info.tcpi_state`.
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

/// TCP states of the IPv4 sockets bound to local `port` in `table`, by
/// remote port.
fn tcp_states_of_port(table: &[TcpNetEntry], port: u16) -> HashMap<u16, TcpState> {
    table
        .iter()
        .filter(|e| e.local_address.port() == port)
        .map(|e| (e.remote_address.port(), e.state.clone()))
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
    let table = procfs::net::tcp().context("read /proc/net/tcp")?;
    let server_side = tcp_states_of_port(&table, server_port);
    streams
        .iter()
        .map(|s| {
            if tcp_state(s)? != TCP_ESTABLISHED {
                return Ok(true);
            }
            let port = s.local_addr()?.port();
            Ok(server_side.get(&port) != Some(&TcpState::Established))
        })
        .collect()
}

/// Restricts the calling thread (and the threads it starts afterwards) to
/// `cpus`, or lets it run anywhere with `None`.
pub fn pin_current_thread(cpus: Option<&[usize]>) -> anyhow::Result<()> {
    let all: Vec<usize> = (0..online_cpus().min(CpuSet::count())).collect();
    let mut set = CpuSet::new();
    for &cpu in cpus.unwrap_or(&all) {
        set.set(cpu).with_context(|| format!("no CPU {cpu} in a cpu_set_t"))?;
    }
    // Pid 0 is the calling thread.
    sched_setaffinity(Pid::from_raw(0), &set)
        .with_context(|| format!("sched_setaffinity({cpus:?})"))
}

/// Sets the nice value of the calling thread; threads and processes it
/// starts afterwards inherit it.
pub fn set_nice(nice: i32) -> anyhow::Result<()> {
    // No pid: the calling thread.
    rustix::process::setpriority_process(None, nice).with_context(|| format!("setpriority({nice})"))
}

/// CPUs this thread may run on.
pub fn allowed_cpus() -> usize {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&cpu| set.is_set(cpu) == Ok(true)).count().max(1),
        Err(_) => online_cpus(),
    }
}

/// CPUs online on this machine.
pub fn online_cpus() -> usize {
    let n = sysconf(SysconfVar::_NPROCESSORS_ONLN).ok().flatten().unwrap_or(1);
    n.max(1) as usize
}

#[cfg(test)]
mod tests {
    use procfs::{net::TcpNetEntries, FromBufReadSI};

    use super::*;

    #[test]
    fn sums_busy_ticks() {
        let text = "cpu  10 1 5 100 7 2 3 4 0 0\ncpu0 10 1 5 100 7 2 3 4 0 0\nctxt 1\nbtime 1\nprocesses 1\n";
        let stats = KernelStats::from_buf_read(text.as_bytes(), procfs::current_system_info())
            .expect("valid");
        assert_eq!(busy_ticks(&stats.total), 25);
    }

    #[test]
    fn finds_the_sockets_of_a_port() {
        use TcpState::{Established, FinWait1, Listen};
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1CE8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0\n\
   1: 0100007F:1CE8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0\n\
   2: 0100007F:1CE8 0100007F:9C41 04 00000000:00000000 00:00000000 00000000     0        0 0 1 0\n\
   3: 0100007F:9C40 0100007F:1CE8 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0\n";
        let entries = TcpNetEntries::from_buf_read(table.as_bytes(), procfs::current_system_info())
            .expect("valid")
            .0;
        let of = |port| tcp_states_of_port(&entries, port);
        assert_eq!(
            of(0x1CE8),
            HashMap::from([(0, Listen), (0x9C40, Established), (0x9C41, FinWait1)])
        );
        assert_eq!(of(0x9C40), HashMap::from([(0x1CE8, Established)]));
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
        let rss = me.rss_kib().expect("rss");
        assert!(rss > 0 && me.peak_rss_kib().expect("peak rss") >= rss);
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
