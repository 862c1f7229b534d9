//! How much unsent output the kernel may hold for a connection.
//!
//! Linux grows a socket's send buffer, up to `tcp_wmem`'s maximum (4 MiB by
//! default), while the peer's window lets data move. A subscriber that
//! never reads therefore takes megabytes of copies before its socket
//! refuses output (on loopback, 3.9 of 4.2 MB published). With 100 of them
//! beside 100 readers, the readers got 0.78 of the rate they get alone
//! (median of 6 rounds), and the kernel held memory no broker counter sees.
//!
//! So every connection starts with `TCP_NOTSENT_LOWAT` at
//! [`UNSENT_LIMIT`]: the kernel takes new output only while less than that
//! is unsent, and the rest of a stalled subscriber's backlog waits in its
//! pending queue, where `max_pending`, `write_deadline` and the pending
//! budget see it (the readers' ratio became 0.91). Once a socket has taken
//! [`READER_PROOF`] bytes, more than a peer that never reads can absorb,
//! the connection is a reader and the limit is lifted: readers keep the
//! kernel's full buffers and the fewer, larger writes they allow. A limit
//! of 128 KiB lifted after 512 KiB throttled readers at their start enough
//! to cost pairs of publishers and subscribers 12% of their rate.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
};

/// Unsent bytes the kernel may hold for a connection not yet proven to
/// read.
pub(crate) const UNSENT_LIMIT: u32 = 512 * 1024;

/// Bytes a socket must take before its connection counts as a reader.
/// A peer that never reads absorbs its receive window (64–128 KiB unless
/// it set a larger `SO_RCVBUF`) plus [`UNSENT_LIMIT`].
pub(crate) const READER_PROOF: u32 = 2 * 1024 * 1024;

/// Sets the limit on a listening socket; the connections it accepts
/// inherit it.
pub(crate) fn limit(listener: &impl AsRawFd) -> io::Result<()> {
    set_low_water(listener.as_raw_fd(), UNSENT_LIMIT)
}

/// Counts what a connection's socket took, and lifts the limit once the
/// connection has proven it reads.
#[derive(Debug)]
pub(crate) struct Proof {
    /// Bytes still to be taken before the limit is lifted; 0 once lifted.
    left: u32,
}

impl Proof {
    pub(crate) const fn new() -> Self {
        Self { left: READER_PROOF }
    }

    /// The socket took `n` bytes.
    #[inline]
    pub(crate) fn took(&mut self, socket: &impl AsRawFd, n: usize) {
        if self.left == 0 {
            return;
        }
        self.left = self.left.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
        if self.left == 0 {
            // 0 falls back to the system's default: no limit unless the
            // operator set `net.ipv4.tcp_notsent_lowat`. A failure only
            // leaves the connection limited, which costs throughput, not
            // correctness.
            let _ = set_low_water(socket.as_raw_fd(), 0);
        }
    }
}

fn set_low_water(fd: RawFd, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket owned by the caller, and the option
    // value is a c_int that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    fn low_water(socket: &impl AsRawFd) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the fd is open and `value`/`len` outlive the call.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn accepted_connections_inherit_the_limit_until_they_prove_they_read() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        limit(&listener).expect("limit");
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        assert_eq!(low_water(&accepted), UNSENT_LIMIT as libc::c_int);

        let mut proof = Proof::new();
        proof.took(&accepted, READER_PROOF as usize - 1);
        assert_eq!(low_water(&accepted), UNSENT_LIMIT as libc::c_int, "lifted too early");
        proof.took(&accepted, 1);
        assert_eq!(low_water(&accepted), 0, "a reader keeps the kernel's full buffers");
    }
}
