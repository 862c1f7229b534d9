//! One `SO_REUSEPORT` listening socket per core, all on the same address.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel accept queue length per listener.
const BACKLOG: i32 = 1024;

/// Binds `count` listeners to `addr`. With port 0 the first one picks a port
/// and the others join it, so every core accepts on the same address.
pub(crate) fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<Socket>> {
    let first = bind_one(addr)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "listener has no IP address"))?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind_one(bound)?);
    }
    Ok(all)
}

fn bind_one(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}
