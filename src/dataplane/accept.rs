//! Listening sockets: binding with `SO_REUSEPORT`, accepting, admitting.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use super::worker::Worker;
use crate::balance::hash::{flow_hash, PROTO_TCP};

/// Accept backlog of each listening socket.
const BACKLOG: i32 = 4096;

/// Connections accepted per listener event before other work gets a turn.
pub(super) const ACCEPT_BATCH: usize = 64;

/// Binds a non-blocking TCP listening socket with `SO_REUSEPORT` (one per worker, so the
/// kernel spreads new connections across workers) and `SO_REUSEADDR`. An IPv6 socket is
/// IPv6-only, so `[::]` and `0.0.0.0` can be separate listeners. `TCP_NODELAY` is set
/// on the listener, so accepted connections have it too.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = reuseport_socket(addr, Type::STREAM, Protocol::TCP)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one setsockopt
    // per listener instead of one per connection.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A non-blocking socket for `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` (every worker
/// binds its own), IPv6-only for an IPv6 address. Not bound yet.
pub(super) fn reuseport_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Errors after which `accept` should simply be called again.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    )
}

impl Worker {
    /// Accepts up to [`ACCEPT_BATCH`] connections on listener `li`; returns true when it
    /// stopped because of the batch limit (more may be waiting).
    pub(super) fn accept(&mut self, li: usize) -> bool {
        for _ in 0..ACCEPT_BATCH {
            let Some(socket) = self.listeners[li].socket.as_ref() else {
                return false;
            };
            match socket.accept() {
                Ok((stream, peer)) => self.admit(li, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if transient(&e) => {}
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the connection stays queued; try again soon.
                    if let Some(suppressed) = self.warn_limit.allow(self.now) {
                        tracing::warn!(
                            listener = %self.listeners[li].shared.name,
                            suppressed,
                            "accept failed: {e}; retrying shortly"
                        );
                    }
                    self.pause_accept(li);
                    return false;
                }
            }
        }
        true
    }

    fn admit(&mut self, li: usize, stream: TcpStream, peer: SocketAddr) {
        let slot = &self.listeners[li];
        let shared = &slot.shared;
        let stats = shared.stats.shard(self.index);
        let routing = shared.routing.load_full();
        let params = &routing.params;
        if !shared.try_acquire(params.max_connections) {
            stats.rejected_max_connections.inc();
            if let Some(suppressed) = self.warn_limit.allow(self.now) {
                tracing::warn!(
                    listener = %shared.name,
                    client = %peer,
                    suppressed,
                    "max_connections ({}) reached: closing new connection",
                    params.max_connections
                );
            }
            return;
        }
        if params.expects_header(peer.ip()) {
            // The backend is chosen once the PROXY header says who the client is.
            self.open_session(li, stream, peer, None, routing);
            return;
        }
        let key = flow_hash(
            params.hash,
            PROTO_TCP,
            peer,
            reached(shared.listen, &stream),
        );
        if routing.snapshot.pick(key).is_none() {
            shared.release();
            self.no_backend(li, peer);
            return;
        }
        self.open_session(li, stream, peer, Some(key), routing);
    }

    /// Counts and logs (at most once a second) a connection closed because no backend
    /// of listener `li` is up.
    pub(super) fn no_backend(&mut self, li: usize, client: SocketAddr) {
        let shared = &self.listeners[li].shared;
        shared.stats.shard(self.index).rejected_no_backend.inc();
        if let Some(suppressed) = self.warn_limit.allow(self.now) {
            tracing::warn!(listener = %shared.name, %client, suppressed, "no backend is up: closing new connection");
        }
    }
}

/// The address a client of a listener on `listen` reached: the listen address, or, for
/// a wildcard listener, the accepted socket's own (`getsockname`).
pub(super) fn reached(listen: SocketAddr, client: &TcpStream) -> SocketAddr {
    if listen.ip().is_unspecified() {
        client.local_addr().unwrap_or(listen)
    } else {
        listen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_nodelay_and_ports_are_shared() {
        let a = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = a.local_addr().unwrap();
        // SO_REUSEPORT: a second socket binds the same address (one per worker).
        let b = bind_tcp(addr).unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            if let Ok((s, _)) = a.accept().or_else(|_| b.accept()) {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(accepted.nodelay().unwrap());
    }
}
