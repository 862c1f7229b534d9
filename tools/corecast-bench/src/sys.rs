//! What the bench reads from the operating system: a broker's CPU time and
//! memory from `/proc/PID`, its own CPU time, its file limit and its CPU
//! affinity.

use std::fs;

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
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur >= lim.rlim_max {
        return Ok((before, before));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!("setrlimit RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
    }
    Ok((before, lim.rlim_cur))
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
