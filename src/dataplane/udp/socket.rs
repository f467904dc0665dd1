//! UDP sockets: a listener's (one per worker, `SO_REUSEPORT`) and a flow's upstream.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

use crate::dataplane::socket::reuseport_socket;

/// Receive buffer asked for listener sockets (`SO_RCVBUFFORCE`, else `SO_RCVBUF`, which
/// the kernel caps at `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 << 20;

/// Binds a non-blocking UDP socket with `SO_REUSEPORT`, one per worker: the kernel
/// hashes each client's datagrams to one of them, so a flow lives on one worker.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = reuseport_socket(addr, Type::DGRAM, Protocol::UDP)?;
    // Bursts of small datagrams overflow the default buffer (about 200 KiB, a few hundred
    // datagrams) before a worker gets to run: ask for more, past rmem_max when allowed.
    if crate::sys::sockopt::set_recv_buffer_force(socket.as_fd(), RECV_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    }
    if addr.ip().is_unspecified() {
        // Which local address did the client reach? Replies must leave from it.
        crate::sys::sockopt::set_recv_pktinfo(socket.as_fd(), addr.is_ipv6())?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A non-blocking UDP socket connected to `backend`: `socket` + `connect` (which also
/// picks the local port), two syscalls per new flow.
pub(super) fn upstream(backend: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(backend),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    s.connect(&backend.into())?;
    Ok(UdpSocket::from_std(s.into()))
}

/// The address a client reached: the listener's, with the IP it sent to when the
/// listener binds a wildcard address.
pub(super) fn reached(listen: SocketAddr, local: Option<IpAddr>) -> SocketAddr {
    match local {
        Some(ip) => SocketAddr::new(ip, listen.port()),
        None => listen,
    }
}
