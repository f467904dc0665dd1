//! Listening sockets shared by both planes: one per worker per listener, bound with
//! `SO_REUSEPORT` so the kernel spreads connections and datagrams across workers.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking socket for `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` (every worker
/// binds its own), IPv6-only for an IPv6 address (so `[::]` and `0.0.0.0` can be
/// separate listeners). Not bound yet.
pub fn reuseport_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Makes the kernel hand each new connection or datagram of a listener to the socket
/// (so the worker) of the CPU that received it: `sockets` are the listener's sockets in
/// worker order, worker `i` running on CPU `i`.
pub fn steer_by_cpu(sockets: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
    match sockets.first() {
        Some(first) => crate::sys::sockopt::attach_reuseport_cpu(*first, sockets.len() as u32),
        None => Ok(()),
    }
}
