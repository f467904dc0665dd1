//! TCP listening sockets: binding with `SO_REUSEPORT`, accepting, and shedding
//! connections at the descriptor limit.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use socket2::{Protocol, Type};

use crate::dataplane::listener::ListenerShared;
use crate::dataplane::socket::reuseport_socket;
use crate::dataplane::timers::Millis;

/// Accept backlog of each listening socket.
const BACKLOG: i32 = 4096;

/// How long a listener pauses after `accept` fails for lack of resources it cannot
/// shed (kernel memory).
const ACCEPT_PAUSE: Millis = 100;

/// Binds a non-blocking TCP listening socket with `SO_REUSEPORT` (one per worker, so the
/// kernel spreads new connections across workers) and `SO_REUSEADDR`. `TCP_NODELAY` is
/// set on the listener, so accepted connections have it too.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = reuseport_socket(addr, Type::STREAM, Protocol::TCP)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one setsockopt
    // per listener instead of one per connection.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// What one `accept` gave.
#[derive(Debug)]
pub(super) enum Accepted {
    /// A client.
    Client(TcpStream, SocketAddr),
    /// Nobody is waiting.
    Drained,
    /// The process or the system is out of descriptors.
    FdLimit(io::Error),
    /// Another shortage (kernel memory): try again shortly.
    Failed(io::Error),
}

/// Errors after which `accept` should simply be called again.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    )
}

/// One worker's socket of one TCP listener.
#[derive(Debug)]
pub(super) struct Listener {
    socket: mio::net::TcpListener,
    shared: Arc<ListenerShared>,
    paused_until: Option<Millis>,
    /// The `TCP_DEFER_ACCEPT` seconds set on the socket (0: none).
    deferred: i32,
}

impl Listener {
    /// Registers `socket` under `token`.
    pub fn new(
        socket: std::net::TcpListener,
        shared: Arc<ListenerShared>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Listener> {
        let mut socket = mio::net::TcpListener::from_std(socket);
        registry.register(&mut socket, token, Interest::READABLE)?;
        Ok(Listener {
            socket,
            shared,
            paused_until: None,
            deferred: 0,
        })
    }

    /// Hands connections to `accept` only once they have sent something, for up to
    /// `wait` (`None`: at once, the default). A listener that routes by server name
    /// has nothing to do before the ClientHello: deferring saves a wake-up and an
    /// empty read per connection (HAProxy's `defer-accept`, NGINX's `deferred`). Set
    /// when the routing asks for a change; a refusal is logged once and left.
    pub fn defer_accept(&mut self, wait: Option<std::time::Duration>) {
        let seconds = wait.map_or(0, |w| {
            i32::try_from(w.as_millis().div_ceil(1000))
                .unwrap_or(i32::MAX)
                .max(1)
        });
        if seconds == self.deferred {
            return;
        }
        self.deferred = seconds;
        if let Err(e) = crate::sys::sockopt::set_defer_accept(self.socket.as_fd(), seconds) {
            tracing::warn!(listener = %self.shared.name, "TCP_DEFER_ACCEPT: {e}");
        }
    }

    /// The listener's shared state.
    pub fn shared(&self) -> &Arc<ListenerShared> {
        &self.shared
    }

    /// Accepts one connection.
    pub fn accept(&self) -> Accepted {
        loop {
            match self.socket.accept() {
                Ok((stream, peer)) => return Accepted::Client(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::Drained,
                Err(e) if transient(&e) => {}
                Err(e) if crate::sys::is_fd_limit(&e) => return Accepted::FdLimit(e),
                Err(e) => return Accepted::Failed(e),
            }
        }
    }

    /// Not accepting until a pause ends.
    pub fn paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// Stops accepting for a short while.
    pub fn pause(&mut self, now: Millis) {
        self.paused_until = Some(now + ACCEPT_PAUSE);
    }

    /// When the pause ends.
    pub fn pause_ends(&self) -> Option<Millis> {
        self.paused_until
    }

    /// Ends a pause that is over; true if it did (connections queued meanwhile raised
    /// no new edge, so the caller accepts at once).
    pub fn resume(&mut self, now: Millis) -> bool {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
            return true;
        }
        false
    }

    /// Takes the socket out of the poll (it closes when dropped).
    pub fn deregister(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }
}

/// One descriptor held in reserve (on `/dev/null`), so that at EMFILE a worker can
/// still accept the newest connection and close it at once: its client learns now
/// instead of waiting in the backlog for its own timeout (the "spare fd" trick).
#[derive(Debug)]
pub(super) struct Spare(Option<std::fs::File>);

impl Spare {
    /// Opens the spare descriptor.
    pub fn new() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }

    /// Frees the spare, accepts and closes one waiting connection, takes the spare
    /// back. The client closed, if one was.
    pub fn shed(&mut self, listener: &Listener) -> Option<SocketAddr> {
        self.0.take()?;
        let shed = match listener.accept() {
            Accepted::Client(_, peer) => Some(peer),
            _ => None,
        };
        self.0 = std::fs::File::open("/dev/null").ok();
        shed
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
        let accepted = (0..500)
            .find_map(|_| {
                let got = a.accept().or_else(|_| b.accept()).ok();
                if got.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                got
            })
            .expect("the connection is accepted by one of the sockets")
            .0;
        assert!(accepted.nodelay().unwrap());
    }
}
