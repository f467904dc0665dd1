//! The connect phase of a session: which backend each attempt goes to, the connect
//! itself, what a failure counts as, and the PROXY header written once connected.
//!
//! First the session is routed to a pool: at once, or, on a `route_by = "sni"`
//! listener, once the ClientHello names a server (its bytes are peeked, not read: they
//! go to the backend as they came). Attempt 0 goes to the pool ring's pick for the
//! flow key; a refused or timed-out connect moves on to the next distinct backend
//! clockwise not tried yet, up to `retries` more times. Each attempt asks the routing
//! published then (a backend that went down meanwhile is not tried), so a connecting
//! session holds the listener's settings, its pool's identity and the backends it
//! tried, never a snapshot. Each failure is counted against its
//! backend and reported as a passive health result, unless it was this machine running
//! short of something (descriptors, ports): that ends the session (`fd_limit`) and says
//! nothing about any backend.
//!
//! A backend at its `max_connections` (or with others already waiting) puts the first
//! attempt in its queue ([`Phase::Queue`]): the session holds its [`Place`] until a slot
//! is granted (then it connects with it), or its `queue_timeout` passes (then it is
//! closed, or with `queue_overflow = "next"` goes to the next backend with room).
//! Retries never queue: they pass over full backends.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::balance::hash::{flow_hash, PROTO_TCP};
use crate::dataplane::listener::{ListenerParams, ListenerShared, Routing};
use crate::dataplane::load::{Claim, Grants, Place};
use crate::dataplane::pool::PoolShared;
use crate::dataplane::stats::BackendStats;
use crate::dataplane::timers::{millis, Millis};
use crate::proxy_protocol::{self, Version};
use crate::sni::tls::TlsHello;
use crate::sni::{ServerName, Verdict};

/// State of a session until its backend connection is established.
#[derive(Debug)]
pub(super) struct Connecting {
    /// The listener's settings when the session started.
    params: Arc<ListenerParams>,
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
    /// When the header wait, the hello wait, the wait for data or the current connect
    /// attempt gives up.
    deadline: Millis,
    /// Its pool, once routed: the slot it had in the routing and its identity.
    pool: Option<(usize, Arc<PoolShared>)>,
    /// `route_by = "sni"`: the listener routes by server name.
    by_name: bool,
    /// The ClientHello read so far (while [`Phase::Hello`]).
    hello: Option<Box<TlsHello>>,
    /// The server name the client asked for.
    sni: Option<ServerName>,
    /// The backend of the current attempt, once it started (counted on it).
    target: Option<Claim>,
    /// Backends whose attempts failed (allocated at the first failure).
    tried: Vec<Arc<BackendStats>>,
    /// Where it stands with backends' queues (`max_connections`).
    queue: Queue,
    /// A slot its backend's queue granted it: the next attempt's.
    granted: Option<Claim>,
}

/// Where a session stands with backends' queues.
#[derive(Debug, Default)]
enum Queue {
    /// It has not met a full backend.
    #[default]
    Never,
    /// It waits, since then.
    Waiting(Place, Millis),
    /// It was given a slot.
    Served,
    /// It waited `queue_timeout` for nothing.
    TimedOut,
    /// The queue it would have joined was full (`max_queue`).
    Full,
}

/// Why a session found no backend with room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoRoom {
    /// Its wait in the queue ran out (and no other backend had room).
    QueueTimeout,
    /// The queue was full (and no other backend had room).
    QueueFull,
}

/// The next backend of an attempt.
enum Next {
    /// Counted on it.
    Claimed(Claim),
    /// It is full: the session may wait for it.
    Full(Arc<BackendStats>),
    /// No backend is left to try; `full`: some were passed over as full.
    Exhausted { full: bool },
}

/// What a session waits for before it has a backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// `accept_proxy`: the client's PROXY header (no backend is chosen before it).
    Header,
    /// `route_by = "sni"`: the client's ClientHello (no pool is chosen before it).
    Hello,
    /// `backend_connect = "on-data"`: the client's first byte.
    FirstData,
    /// A slot in a full backend's queue (`max_connections`).
    Queue,
    /// A connect attempt (or the next one).
    Connect,
}

/// Where a new session stands when it is accepted: its flow key (unless a PROXY header
/// is to say who the client is), its pool (unless its hello is to name one), and
/// whether its listener routes by server name.
#[derive(Debug)]
pub(super) struct Start {
    /// The flow key, when known.
    key: Option<u64>,
    /// The pool's slot and identity, when known.
    pool: Option<(usize, Arc<PoolShared>)>,
    /// `route_by = "sni"`.
    by_name: bool,
}

impl Start {
    /// A session with flow key `key` and pool `pool` (each when known), on a
    /// listener that routes by server name or not (`by_name`).
    pub fn new(key: Option<u64>, pool: Option<(usize, Arc<PoolShared>)>, by_name: bool) -> Start {
        Start { key, pool, by_name }
    }
}

/// Why a session found no pool or no backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unrouted {
    /// No route takes its name (or it named none), and there is no default pool.
    NoRoute,
    /// Its first bytes are not a ClientHello read here, and there is no default pool.
    NotTls(&'static str),
    /// Its pool has no backend up for its key.
    NoBackend,
}

/// What starting a connect attempt gave.
#[derive(Debug)]
pub(super) enum Attempt {
    /// A connect is in progress; the socket is registered.
    Started(TcpStream),
    /// Its backend is full: it waits in its queue.
    Queued,
    /// No backend has room for it.
    NoRoom(NoRoom),
    /// Every candidate was tried (`attempts` of them).
    Exhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// This machine could not open a socket (descriptors, ports, memory).
    Local(io::Error),
}

impl Connecting {
    /// A session's connect state: connecting to the owner of `key` in pool `pool`
    /// (once the client has sent a byte, with `backend_connect = "on-data"`), or,
    /// without a key (`accept_proxy`), waiting for the client's PROXY header first, or
    /// without a pool (`route_by = "sni"`), for its ClientHello.
    pub fn new(
        params: Arc<ListenerParams>,
        Start { key, pool, by_name }: Start,
        client: SocketAddr,
        now: Millis,
    ) -> Connecting {
        let mut c = Connecting {
            deadline: now + millis(params.connect_timeout),
            params,
            key: key.unwrap_or_default(),
            client,
            local: None,
            attempt: 0,
            phase: Phase::Header,
            target: None,
            tried: Vec::new(),
            pool,
            by_name,
            hello: None,
            sni: None,
            queue: Queue::Never,
            granted: None,
        };
        if key.is_some() {
            c.keyed(now);
        }
        c
    }

    /// The key is known: read the hello first on a listener that routes by name,
    /// else wait for data first if the listener says so, else connect.
    fn keyed(&mut self, now: Millis) {
        self.phase = if self.by_name {
            self.deadline = now + millis(self.params.sni_timeout);
            self.hello = Some(Box::default());
            Phase::Hello
        } else {
            match self.params.first_data {
                Some(wait) => {
                    self.deadline = now + millis(wait);
                    Phase::FirstData
                }
                None => Phase::Connect,
            }
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
    pub fn params(&self) -> &ListenerParams {
        &self.params
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
    /// `own`). Routes it now unless its hello is next.
    pub fn header_read(
        &mut self,
        shared: &ListenerShared,
        addresses: Option<(SocketAddr, SocketAddr)>,
        own: SocketAddr,
        now: Millis,
    ) -> Result<(), Unrouted> {
        self.keyed(now);
        let (client, local) = match addresses {
            Some((client, local)) => {
                self.client = client;
                self.local = Some(local);
                (client, local)
            }
            None => (self.client, own),
        };
        self.key = flow_hash(self.params.hash, PROTO_TCP, client, local);
        if self.by_name {
            return Ok(());
        }
        self.route(&shared.routing.load(), None)
    }

    /// Feeds the client's bytes so far (`peeked`: all of them, from the first; they
    /// stay queued for the backend) to the hello reader: `None` while it needs more,
    /// else whether it found a pool with a backend up.
    pub fn hello_read(
        &mut self,
        shared: &ListenerShared,
        peeked: &[u8],
    ) -> Option<Result<(), Unrouted>> {
        let hello = self.hello.as_mut()?;
        let seen = hello.seen().min(peeked.len());
        let verdict = hello.feed(&peeked[seen..]);
        let routing = shared.routing.load();
        let routed = match verdict {
            Verdict::NeedMore => return None,
            Verdict::Name(name) => {
                let r = self.route(&routing, Some(name.as_str()));
                self.sni = Some(name);
                r
            }
            Verdict::NoName => self.route(&routing, None),
            Verdict::Not(why) => match routing.routes.default_slot() {
                Some(_) => self.route(&routing, None),
                None => Err(Unrouted::NotTls(why)),
            },
        };
        self.hello = None;
        self.phase = Phase::Connect;
        Some(routed)
    }

    /// Bytes of the hello read so far.
    pub fn hello_seen(&self) -> usize {
        self.hello.as_ref().map_or(0, |h| h.seen())
    }

    /// Picks its pool for server name `name` (or none) in `routing`; an error when
    /// there is none, or none of its backends is up for the key.
    fn route(&mut self, routing: &Routing, name: Option<&str>) -> Result<(), Unrouted> {
        let (slot, pool) = routing.route(name).ok_or(Unrouted::NoRoute)?;
        self.pool = Some((slot, Arc::clone(&pool.shared)));
        match pool.snapshot.pick(self.key) {
            Some(_) => Ok(()),
            None => Err(Unrouted::NoBackend),
        }
    }

    /// Its pool, once routed.
    pub fn pool(&self) -> Option<&Arc<PoolShared>> {
        self.pool.as_ref().map(|(_, p)| p)
    }

    /// The server name it asked for, if it named one.
    pub fn sni(&self) -> Option<&ServerName> {
        self.sni.as_ref()
    }

    /// The backends whose attempts failed, in order (for the log record).
    pub fn failed_ids(&self) -> Vec<Arc<str>> {
        self.tried.iter().map(|t| Arc::clone(&t.id)).collect()
    }

    /// Takes the server name (for the established session's log record).
    pub fn take_sni(&mut self) -> Option<ServerName> {
        self.sni.take()
    }

    /// The current attempt's number: 0 for the ring's pick, then one per retry; one
    /// past the last once every attempt failed.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The next backend to try: a slot its queue granted, else its pool's choice
    /// (`balance`) in the routing published now among the backends not tried, counted
    /// on it from now on; past the first attempt (or a wait that ran out), backends
    /// without room are passed over. [`Next::Exhausted`] past the last retry (or when
    /// a reload took its pool away).
    fn next_target(&mut self, shared: &ListenerShared, worker: usize) -> Next {
        let none = Next::Exhausted { full: false };
        if self.attempt > self.params.retries {
            return none;
        }
        let routing = shared.routing.load();
        let Some((slot, pool)) = self.pool.as_ref() else {
            return none;
        };
        let Some((slot, pool)) = routing.find(*slot, pool) else {
            return none;
        };
        // A granted slot is used while its backend still takes new connections (a
        // backend that went down or left meanwhile: the slot goes back).
        if let Some(granted) = self.granted.take() {
            let live = pool
                .backends
                .position(granted.stats())
                .is_some_and(|i| pool.snapshot.is_live(i));
            if live {
                return Next::Claimed(granted);
            }
        }
        let tried = |b: usize| self.tried.iter().any(|t| Arc::ptr_eq(t, &pool.backends[b]));
        let pass_full = self.attempt > 0 || !matches!(self.queue, Queue::Never);
        // A backend found full may free a slot between the look and the claim: a few
        // more looks, then it counts as full.
        for _ in 0..4 {
            let chosen = if pass_full {
                pool.choose(self.key, |b| tried(b) || Claim::full(&pool.backends[b]))
            } else {
                pool.choose(self.key, tried)
            };
            let Some((_, target, overflowed)) = chosen else {
                let full = pass_full && pool.choose(self.key, tried).is_some();
                return Next::Exhausted { full };
            };
            match Claim::try_new(target) {
                Some(claim) => {
                    if overflowed {
                        target.counters.shard(worker).overflowed.inc();
                    }
                    if let Some(p) = self.pool.as_mut() {
                        p.0 = slot;
                    }
                    return Next::Claimed(claim);
                }
                None if !pass_full => return Next::Full(Arc::clone(target)),
                None => {}
            }
        }
        Next::Exhausted { full: true }
    }

    /// Waits in `backend`'s queue (it is full), unless that is full too.
    fn join(
        &mut self,
        backend: &Arc<BackendStats>,
        grants: &Arc<Grants>,
        key: crate::dataplane::token::Key,
        now: Millis,
    ) -> bool {
        match Place::join(backend, grants, key, grants.ticket()) {
            Ok(place) => {
                self.queue = Queue::Waiting(place, now);
                self.phase = Phase::Queue;
                self.deadline = now + millis(self.params.queue_timeout);
                true
            }
            Err(_) => {
                self.queue = Queue::Full;
                false
            }
        }
    }

    /// The ticket it waits with, while it waits.
    pub fn ticket(&self) -> Option<u64> {
        match &self.queue {
            Queue::Waiting(place, _) => Some(place.ticket()),
            _ => None,
        }
    }

    /// Its queue granted it `claim` at `now`: the next attempt takes it. False (and
    /// the claim is let go, to the next waiter) when it is not waiting for it.
    pub fn grant(&mut self, ticket: u64, claim: Claim, worker: usize, now: Millis) -> bool {
        if self.ticket() != Some(ticket) {
            return false;
        }
        if let Queue::Waiting(place, since) = std::mem::replace(&mut self.queue, Queue::Served) {
            let waited = now.saturating_sub(since);
            place
                .backend()
                .counters
                .shard(worker)
                .queue_waits
                .record(waited * 1000);
            place.granted();
        }
        self.granted = Some(claim);
        self.phase = Phase::Connect;
        true
    }

    /// Its `queue_timeout` passed at `now`: it leaves the queue (counted on the
    /// backend); true when it is to try the next backend with room
    /// (`queue_overflow = "next"`).
    pub fn waited_out(&mut self, worker: usize, now: Millis) -> bool {
        if let Queue::Waiting(place, since) = std::mem::replace(&mut self.queue, Queue::TimedOut) {
            let counters = place.backend().counters.shard(worker);
            counters
                .queue_waits
                .record(now.saturating_sub(since) * 1000);
            counters.queue_timeouts.inc();
        }
        self.phase = Phase::Connect;
        self.params.queue_next
    }

    /// Starts the current attempt, moving on past backends whose connect fails at once;
    /// a full backend's queue takes the first attempt.
    pub fn start(
        &mut self,
        registry: &Registry,
        (token, key): (Token, crate::dataplane::token::Key),
        (shared, grants): (&Arc<ListenerShared>, &Arc<Grants>),
        worker: usize,
        now: Millis,
    ) -> Attempt {
        loop {
            let target = match self.next_target(shared, worker) {
                Next::Claimed(target) => target,
                Next::Full(backend) => {
                    if self.join(&backend, grants, key, now) {
                        return Attempt::Queued;
                    }
                    if !self.params.queue_next {
                        return Attempt::NoRoom(NoRoom::QueueFull);
                    }
                    continue;
                }
                Next::Exhausted { full } => {
                    return match (full, &self.queue) {
                        (true, Queue::TimedOut) => Attempt::NoRoom(NoRoom::QueueTimeout),
                        (true, Queue::Full) => Attempt::NoRoom(NoRoom::QueueFull),
                        _ => Attempt::Exhausted {
                            attempts: self.attempt,
                        },
                    };
                }
            };
            let addr = target.addr;
            self.target = Some(target);
            let error = match TcpStream::connect(addr) {
                Ok(mut stream) => match registry.register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => {
                        self.phase = Phase::Connect;
                        self.deadline = now + millis(self.params.connect_timeout);
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
            tracing::debug!(listener = %shared.name, backend = %addr, "connect failed at once: {error}");
            self.failed(worker, &error);
        }
    }

    /// The current attempt failed: counted against its backend, reported as a passive
    /// health result, and the next attempt is up.
    pub fn failed(&mut self, worker: usize, error: &io::Error) {
        if let Some(t) = self.target.take() {
            t.counters.shard(worker).connect_errors.inc();
            t.report_failure(error);
            self.tried.push(Arc::clone(t.stats()));
        }
        self.attempt += 1;
    }

    /// The backend it is connected to, now counted as one more connection there:
    /// the session takes the claim.
    pub fn established(&mut self, worker: usize) -> Option<Claim> {
        let target = self.target.take()?;
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
        let Some(version) = self.params.send_proxy else {
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
