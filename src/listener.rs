//! The listening sockets: on every address, one `SO_REUSEPORT` socket per
//! core, so the kernel spreads connections over the cores.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel accept queue length per listener.
const BACKLOG: i32 = 1024;

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

/// Listens on each of `addrs` (which share one port) with `cores` sockets.
/// With port 0 the first socket picks a port and the others join it. When
/// both IPv4 and IPv6 addresses are given, the IPv6 ones are IPv6-only, so
/// a wildcard `[::]` does not also take `0.0.0.0`.
pub(crate) fn bind_all(addrs: &[SocketAddr], cores: usize) -> Result<Listeners, BindError> {
    let v6only = addrs.iter().any(SocketAddr::is_ipv4);
    let mut per_core: Vec<Vec<Socket>> = (0..cores).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let mut port = addrs[0].port();
    for &asked in addrs {
        let mut addr = asked;
        addr.set_port(port);
        for sockets in &mut per_core {
            let socket = listener(addr, v6only).map_err(|e| (addr, e))?;
            addr = bound_addr(&socket).map_err(|e| (addr, e))?;
            sockets.push(socket);
        }
        port = addr.port();
        bound.push(addr);
    }
    Ok(Listeners { addrs: bound, per_core })
}

/// One core's listening socket on `addr`, sharing it with the other cores.
fn listener(addr: SocketAddr, v6only: bool) -> io::Result<Socket> {
    let socket = new_socket(addr, v6only)?;
    socket.set_reuse_port(true)?;
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
}
