//! The connect phase of a session: which backend each attempt goes to, the connect
//! itself, what a failure counts as, and the PROXY header written once connected.
//!
//! Attempt 0 goes to the ring's pick for the flow key; a refused or timed-out connect
//! moves on to the next distinct backend clockwise, up to `retries` more times. Each
//! failure is counted against its backend and reported as a passive health result,
//! unless it was this machine running short of something (descriptors, ports): that
//! ends the session (`fd_limit`) and says nothing about any backend.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::balance::hash::{flow_hash, PROTO_TCP};
use crate::dataplane::listener::{ListenerShared, Routing};
use crate::dataplane::stats::BackendStats;
use crate::dataplane::timers::{millis, Millis};
use crate::proxy_protocol::{self, Version};

/// State of a session until its backend connection is established.
#[derive(Debug)]
pub(super) struct Connecting {
    routing: Arc<Routing>,
    /// The flow key (known once a PROXY header, if expected, is read).
    key: u64,
    /// The client: the peer, or what a received PROXY header says.
    client: SocketAddr,
    /// The address the client reached, when a received PROXY header said it.
    local: Option<SocketAddr>,
    /// 0 for the ring's pick, then 1..=retries.
    attempt: u32,
    /// What it waits for.
    phase: Phase,
    /// When the header wait, the wait for data or the current connect attempt gives up.
    deadline: Millis,
}

/// What a session waits for before it has a backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// `accept_proxy`: the client's PROXY header (no backend is chosen before it).
    Header,
    /// `backend_connect = "on-data"`: the client's first byte.
    FirstData,
    /// A connect attempt (or the next one).
    Connect,
}

/// What starting a connect attempt gave.
#[derive(Debug)]
pub(super) enum Attempt {
    /// A connect is in progress; the socket is registered.
    Started(TcpStream),
    /// Every candidate was tried (`attempts` of them).
    Exhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// This machine could not open a socket (descriptors, ports, memory).
    Local(io::Error),
}

impl Connecting {
    /// A session's connect state: connecting to the owner of `key` (once the client
    /// has sent a byte, with `backend_connect = "on-data"`), or, without a key
    /// (`accept_proxy`), waiting for the client's PROXY header first.
    pub fn new(
        routing: Arc<Routing>,
        key: Option<u64>,
        client: SocketAddr,
        now: Millis,
    ) -> Connecting {
        let mut c = Connecting {
            deadline: now + millis(routing.params.connect_timeout),
            routing,
            key: key.unwrap_or_default(),
            client,
            local: None,
            attempt: 0,
            phase: Phase::Header,
        };
        if key.is_some() {
            c.keyed(now);
        }
        c
    }

    /// The key is known: wait for data first if the listener says so, else connect.
    fn keyed(&mut self, now: Millis) {
        self.phase = match self.routing.params.first_data {
            Some(wait) => {
                self.deadline = now + millis(wait);
                Phase::FirstData
            }
            None => Phase::Connect,
        };
    }

    /// What it waits for.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Waiting for a PROXY header.
    pub fn awaiting_header(&self) -> bool {
        self.phase == Phase::Header
    }

    /// The client's first byte arrived: connecting is next.
    pub fn data_arrived(&mut self) {
        self.phase = Phase::Connect;
    }

    /// The listener's settings it started with.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// When the current wait gives up.
    pub fn deadline(&self) -> Millis {
        self.deadline
    }

    /// The client (as a PROXY header named it, if one did).
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The PROXY header has been read at `now`: `addresses` are the client and the
    /// address it reached (`None` for LOCAL/UNKNOWN: the connection's own, `client` and
    /// `own`). Returns false when no backend is up for the key they give.
    pub fn header_read(
        &mut self,
        addresses: Option<(SocketAddr, SocketAddr)>,
        own: SocketAddr,
        now: Millis,
    ) -> bool {
        self.keyed(now);
        let (client, local) = match addresses {
            Some((client, local)) => {
                self.client = client;
                self.local = Some(local);
                (client, local)
            }
            None => (self.client, own),
        };
        self.key = flow_hash(self.routing.params.hash, PROTO_TCP, client, local);
        self.routing.snapshot.pick(self.key).is_some()
    }

    /// The current attempt's number: 0 for the ring's pick, then one per retry; one
    /// past the last once every attempt failed.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The backend (index in the routing) of the current attempt.
    pub fn current(&self) -> Option<usize> {
        if self.attempt > self.routing.params.retries {
            return None;
        }
        self.routing.snapshot.attempt(self.key, self.attempt)
    }

    /// Starts the current attempt, moving on past backends whose connect fails at once.
    pub fn start(
        &mut self,
        registry: &Registry,
        token: Token,
        shared: &Arc<ListenerShared>,
        worker: usize,
        now: Millis,
    ) -> Attempt {
        loop {
            let Some(bi) = self.current() else {
                return Attempt::Exhausted {
                    attempts: self.attempt,
                };
            };
            let addr = self.routing.snapshot.backends()[bi].addr;
            let error = match TcpStream::connect(addr) {
                Ok(mut stream) => match registry.register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => {
                        self.deadline = now + millis(self.routing.params.connect_timeout);
                        return Attempt::Started(stream);
                    }
                    // Registering can only fail for lack of kernel memory: local.
                    Err(e) => return Attempt::Local(e),
                },
                Err(e) => e,
            };
            if crate::sys::is_resource_shortage(&error) {
                return Attempt::Local(error);
            }
            tracing::debug!(listener = %shared.name, backend = %self.routing.snapshot.backends()[bi].id, "connect failed at once: {error}");
            self.failed(shared, worker, &error);
        }
    }

    /// The current attempt failed: counted against its backend, reported as a passive
    /// health result, and the next attempt is up.
    pub fn failed(&mut self, shared: &Arc<ListenerShared>, worker: usize, error: &io::Error) {
        if let Some(bi) = self.current() {
            self.routing.backends[bi]
                .counters
                .shard(worker)
                .connect_errors
                .inc();
            shared.report_failure(&self.routing, bi, error);
        }
        self.attempt += 1;
    }

    /// The backend it is connected to, now counted as one more connection there.
    pub fn established(&self, worker: usize) -> Option<Arc<BackendStats>> {
        let target = Arc::clone(&self.routing.backends[self.current()?]);
        let counters = target.counters.shard(worker);
        counters.connections.inc();
        counters.active.add(1);
        Some(target)
    }

    /// Writes the PROXY header (when the listener sends one) to a backend that just
    /// connected, ahead of any client byte. Its send buffer is empty, so the few bytes
    /// go in one write; a short write fails this connect (the next backend is tried)
    /// rather than send a torn header. `reached`: the address the client reached, when
    /// no received header said it.
    pub fn send_header(&self, backend: &TcpStream, reached: SocketAddr) -> io::Result<()> {
        let Some(version) = self.routing.params.send_proxy else {
            return Ok(());
        };
        send_header(backend, version, self.client, self.local.unwrap_or(reached))
    }
}

fn send_header(
    backend: &TcpStream,
    version: Version,
    client: SocketAddr,
    local: SocketAddr,
) -> io::Result<()> {
    let header = proxy_protocol::relayed(version, client, local);
    match (&*backend).write(&header) {
        Ok(n) if n == header.len() => Ok(()),
        Ok(n) => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("PROXY header: wrote {n} of {} bytes", header.len()),
        )),
        Err(e) => Err(e),
    }
}

/// Whether a connect in progress on `stream` has finished: `Ok(true)` connected,
/// `Ok(false)` not yet, `Err` failed. `writable`: the event said writable with no
/// error or hang-up, which means connected.
pub(super) fn outcome(stream: &TcpStream, writable: bool) -> io::Result<bool> {
    if writable {
        return Ok(true);
    }
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
            Err(e) => Err(e),
        },
    }
}
