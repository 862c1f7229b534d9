//! The listening sockets: on every address, one `SO_REUSEPORT` socket per
//! core, so the kernel spreads connections over the cores; and the check
//! that no other process listens there already.
//!
//! `SO_REUSEPORT` alone would let a second broker (or anything else of the
//! same user with `SO_REUSEPORT`) join our port silently, and the kernel
//! would split the connections between the two. So before the cores bind,
//! each address is claimed with a probe socket that lacks `SO_REUSEPORT`:
//! Linux refuses such a bind (`EADDRINUSE`) while any socket listens on an
//! overlapping address (the same one, or a wildcard such as `0.0.0.0`
//! covering it, or the reverse), whatever options that listener has. The
//! probe has `SO_REUSEADDR` and never listens, which lets our own
//! `SO_REUSEPORT` listeners bind beside it, and connections of an earlier
//! run in `TIME_WAIT` do not block it. It is closed once our listeners hold
//! the address; from then on, they refuse any probe themselves.
//!
//! What remains open: two sockets with `SO_REUSEADDR` may both be bound
//! while neither listens, so two brokers started within the same instant
//! (between one's probe and its listen) can both pass the check. And a
//! process of the same user that binds later with `SO_REUSEPORT` and no
//! probe of its own joins our listeners, as the kernel allows.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel accept queue length per listener.
const BACKLOG: i32 = 1024;

/// Ports tried when the port picked for the first address (port 0) is
/// taken on another one.
const PORT_TRIES: usize = 8;

/// A bind or listen that failed, with the address it was for.
pub(crate) type BindError = (SocketAddr, io::Error);

/// Every core's listeners and the addresses they are bound to.
#[derive(Debug)]
pub(crate) struct Listeners {
    /// The bound addresses, with the real port, in the order asked for.
    pub addrs: Vec<SocketAddr>,
    /// For each core, one listening socket per address.
    pub per_core: Vec<Vec<Socket>>,
}

/// Listens on each of `addrs` (which share one port) with `cores` sockets,
/// after checking that no other process listens there. With port 0 the
/// port picked for the first address is used for the others. When both
/// IPv4 and IPv6 addresses are given, the IPv6 ones are IPv6-only, so a
/// wildcard `[::]` does not also take `0.0.0.0`.
pub(crate) fn bind_all(addrs: &[SocketAddr], cores: usize) -> Result<Listeners, BindError> {
    let v6only = addrs.iter().any(SocketAddr::is_ipv4);
    let claim = claim(addrs, v6only)?;
    let mut per_core: Vec<Vec<Socket>> = (0..cores).map(|_| Vec::new()).collect();
    for &addr in &claim.addrs {
        for sockets in &mut per_core {
            sockets.push(listener(addr, v6only).map_err(|e| (addr, e))?);
        }
    }
    // Our listeners hold the addresses now: the probes may go.
    drop(claim.probes);
    Ok(Listeners { addrs: claim.addrs, per_core })
}

/// Probes bound to the addresses about to be listened on, held until our
/// own listeners are up.
struct Claim {
    addrs: Vec<SocketAddr>,
    probes: Vec<Socket>,
}

/// Claims every address; with port 0, tries other ports while a later
/// address has the first one's port taken.
fn claim(addrs: &[SocketAddr], v6only: bool) -> Result<Claim, BindError> {
    let tries = if addrs[0].port() == 0 { PORT_TRIES } else { 1 };
    let mut outcome = claim_once(addrs, v6only);
    for _ in 1..tries {
        match &outcome {
            Err((_, e)) if e.kind() == io::ErrorKind::AddrInUse => {
                outcome = claim_once(addrs, v6only);
            }
            _ => break,
        }
    }
    outcome
}

fn claim_once(addrs: &[SocketAddr], v6only: bool) -> Result<Claim, BindError> {
    let mut claim = Claim { addrs: Vec::new(), probes: Vec::new() };
    let mut port = addrs[0].port();
    for &asked in addrs {
        let mut addr = asked;
        addr.set_port(port);
        let probe = probe(addr, v6only).map_err(|e| (addr, e))?;
        let bound = bound_addr(&probe).map_err(|e| (addr, e))?;
        port = bound.port();
        claim.addrs.push(bound);
        claim.probes.push(probe);
    }
    Ok(claim)
}

/// A socket bound to `addr` without `SO_REUSEPORT`: `EADDRINUSE` when
/// anything listens on an overlapping address.
fn probe(addr: SocketAddr, v6only: bool) -> io::Result<Socket> {
    let socket = new_socket(addr, v6only)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// One core's listening socket on `addr`, sharing it with the other cores.
fn listener(addr: SocketAddr, v6only: bool) -> io::Result<Socket> {
    let socket = new_socket(addr, v6only)?;
    socket.set_reuse_port(true)?;
    crate::core::unsent::limit(&socket)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

fn new_socket(addr: SocketAddr, v6only: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6only)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn bound_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "socket has no IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn cores_share_the_port_picked_for_port_0() {
        let group = bind_all(&[loopback()], 3).expect("bind");
        let port = group.addrs[0].port();
        assert_ne!(port, 0);
        for sockets in &group.per_core {
            assert_eq!(bound_addr(&sockets[0]).expect("addr").port(), port);
        }
    }

    #[test]
    fn a_second_group_on_the_same_address_is_refused() {
        let first = bind_all(&[loopback()], 2).expect("bind");
        let again = bind_all(&first.addrs, 2).expect_err("taken");
        assert_eq!(again.1.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_wildcard_listener_covers_loopback() {
        let any = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = any.local_addr().expect("addr").port();
        let taken = bind_all(&[SocketAddr::from(([127, 0, 0, 1], port))], 1).expect_err("taken");
        assert_eq!(taken.1.kind(), io::ErrorKind::AddrInUse);
    }
}
