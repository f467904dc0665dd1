//! A proxied TCP connection: waiting for a PROXY header (`accept_proxy`), for the
//! ClientHello that names its pool (`route_by = "sni"`), connecting to a backend (with
//! retries), then forwarding both ways until both directions end, either side fails,
//! or it idles out. See `docs/LIFECYCLE.md`.
//!
//! A session only decides; the plane ([`super::TcpPlane`]) owns the slab, the timers,
//! the counters of why sessions end and the log. Every entry point returns a [`Step`]
//! and the plane re-arms the session's timer from [`Session::deadline`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use mio::net::TcpStream;
use mio::Registry;

use super::connect::{self, Attempt, Connecting, NoRoom, Phase, Start, Unrouted};
use super::forward::{self, Half, Ready};
use super::header;
use super::kernel::{JoinError, Maps, Pair};
use super::pipes::PipePool;
use crate::accesslog::{End, Proto, Reached, Record};
use crate::dataplane::admission::{Admitted, Refused};
use crate::dataplane::handoff::{Adopted, Exported, SessionState, State};
use crate::dataplane::listener::{ListenerParams, ListenerShared, Mode};
use crate::dataplane::load::{Claim, Grants};
use crate::dataplane::stats::BackendStats;
use crate::dataplane::timers::{millis, Armed, Millis};
use crate::dataplane::token::{self, Key, Kind};
use crate::sni::ServerName;
use crate::sys::Pipe;

/// Source reads one direction may do per wake-up before others get a turn.
const PUMP_BUDGET: u32 = 16;

/// How often a direction holding a pipe is looked at: idle ones give it back.
const PIPE_CHECK: Millis = 1000;

/// Which socket of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The accepted client connection.
    Client,
    /// The connection to the backend.
    Backend,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        }
    }
}

/// Why a session ends.
#[derive(Debug)]
pub(super) enum Ending {
    /// Both directions passed their EOF on.
    Done,
    /// A socket failed or was reset.
    Failed {
        /// Whose socket failed.
        failed: Side,
        /// Who gets a reset for it.
        reset: Side,
    },
    /// No bytes either way for the idle timeout.
    Idle,
    /// No backend is up for its key.
    NoBackend(SocketAddr),
    /// `route_by = "sni"`: no route takes its server name (or it named none) and
    /// there is no default pool.
    NoRoute,
    /// `route_by = "sni"`: its first bytes are not a ClientHello read here (why), and
    /// there is no default pool.
    NotTls(&'static str),
    /// `route_by = "sni"`: no whole ClientHello within `sni_timeout`.
    SniTimeout,
    /// Every connect attempt failed.
    BackendsFailed {
        /// The client.
        client: SocketAddr,
        /// Attempts made.
        attempts: u32,
    },
    /// `accept_proxy`: no usable PROXY header.
    ProxyHeader(String),
    /// The source its PROXY header named is refused (lists, per-source limits), or a
    /// reload's lists refuse it now.
    Refused(Refused),
    /// `backend_connect = "on-data"`: nothing arrived within `first_data_timeout`.
    NoData,
    /// Its backend was full (`max_connections`) and it found no room in time.
    NoRoom(NoRoom),
    /// Closed before sending a byte (a health check of a balancer in front).
    ClosedEarly,
    /// This machine ran short (descriptors, ports) while connecting, or handing the
    /// session to the kernel failed half-way.
    Local(io::Error),
    /// Its backend went down and the listener closes such connections.
    Aborted,
    /// The drain deadline passed.
    Shutdown,
}

impl Ending {
    /// The side that gets a reset (`SO_LINGER` 0) instead of an orderly close.
    pub fn reset(&self) -> Option<Side> {
        match self {
            Ending::Done
            | Ending::Idle
            | Ending::NoBackend(_)
            | Ending::ClosedEarly
            | Ending::NoData
            | Ending::NoRoom(_)
            | Ending::NoRoute
            | Ending::NotTls(_)
            | Ending::SniTimeout
            | Ending::Shutdown => None,
            Ending::Failed { reset, .. } => Some(*reset),
            Ending::BackendsFailed { .. }
            | Ending::ProxyHeader(_)
            | Ending::Refused(_)
            | Ending::Local(_)
            | Ending::Aborted => Some(Side::Client),
        }
    }
}

/// What the plane does next with a session.
#[derive(Debug)]
pub(super) enum Step {
    /// Nothing until the next event or deadline.
    Wait,
    /// It stopped at its budget with more to do: run it again before the next wait.
    Again,
    /// It has ended.
    End(Ending),
}

/// What a session's work needs besides the session: the poll registry, the session's
/// own key, the worker, the time, and the worker's scratch buffer and pipes.
#[derive(Debug)]
pub(super) struct Env<'a> {
    registry: &'a Registry,
    key: Key,
    worker: usize,
    now: Millis,
    buf: &'a mut [u8],
    /// Where a ClientHello is peeked (grown to its limit on first use).
    hello: &'a mut Vec<u8>,
    pool: &'a mut PipePool,
    /// The worker's handles on the kernel-forwarding maps, where it has them.
    kernel: Option<&'a mut Maps>,
    /// Where slots of full backends' queues come to this worker.
    grants: &'a Arc<Grants>,
}

impl<'a> Env<'a> {
    /// Bundles the arguments.
    pub fn new(
        registry: &'a Registry,
        key: Key,
        worker: usize,
        now: Millis,
        (buf, hello): (&'a mut [u8], &'a mut Vec<u8>),
        (pool, kernel): (&'a mut PipePool, Option<&'a mut Maps>),
        grants: &'a Arc<Grants>,
    ) -> Env<'a> {
        Env {
            registry,
            key,
            worker,
            now,
            buf,
            hello,
            pool,
            kernel,
            grants,
        }
    }
}

/// A session between a client and a backend.
#[derive(Debug)]
pub(super) struct Session {
    listener: Arc<ListenerShared>,
    /// The client's address once connected (while connecting, the connect state's,
    /// which a PROXY header may change).
    client_addr: SocketAddr,
    client: TcpStream,
    client_ready: Ready,
    backend: Option<TcpStream>,
    backend_ready: Ready,
    /// Present until a backend connection is established (boxed: an established
    /// session, the common idle case, carries 8 bytes for it instead of the whole).
    connecting: Option<Box<Connecting>>,
    /// Client -> backend.
    up: Half<Pipe>,
    /// Backend -> client.
    down: Half<Pipe>,
    /// When it was accepted.
    started: Millis,
    last_active: Millis,
    /// The idle timeout of the routing the session started with.
    idle: u32,
    /// Milliseconds from accept to the backend connection (`u32::MAX`: not yet).
    connect_ms: u32,
    /// Connect attempts after the first.
    retries: u8,
    /// Whose EOF came first (for the access log's `client_closed`/`backend_closed`).
    first_eof: Option<Side>,
    /// The backend forwarded to (set once connected): its counters, and its identity
    /// for `on_down = "close"`.
    target: Option<Claim>,
    /// Its place in the listener's per-source table, given back when it ends.
    admitted: Option<Admitted>,
    /// Set once the kernel forwards it (`forward = "kernel"`).
    kernel: Option<Box<Pair>>,
    /// What its log record says about how it connected, kept past the connect when
    /// there is something to say (boxed: 8 bytes on every session).
    notes: Option<Box<Notes>>,
    /// Hand it to the kernel once nothing is in flight (a PROXY header was read off
    /// the client: the kernel would forward the rest of its packet whole, header
    /// included, so ringway first forwards what is queued).
    join_at_rest: bool,
    armed: Armed,
}

/// What an established session's log record says about how it connected: the server
/// name its ClientHello asked for (`route_by = "sni"`) and the backends whose connect
/// attempts failed before the one it reached.
#[derive(Debug)]
struct Notes {
    sni: Option<ServerName>,
    failed: Vec<Arc<str>>,
}

impl Session {
    /// A session for an accepted client (already registered under `key`'s client
    /// token): it connects to the owner of `flow` in `pool` or, without a flow
    /// (`accept_proxy`), waits for the client's PROXY header first, or without a pool
    /// (`by_name`: `route_by = "sni"`), for its ClientHello. `admitted`: what it holds
    /// in the per-source table. Call [`Session::start`] next.
    pub fn new(
        listener: Arc<ListenerShared>,
        (client, peer): (TcpStream, SocketAddr),
        route: Start,
        params: Arc<ListenerParams>,
        admitted: Option<Admitted>,
        now: Millis,
    ) -> Session {
        let mode = params.forward;
        let idle = u32::try_from(millis(params.idle_timeout)).unwrap_or(u32::MAX);
        Session {
            listener,
            client_addr: peer,
            client,
            client_ready: Ready::default(),
            backend: None,
            backend_ready: Ready::default(),
            connecting: Some(Box::new(Connecting::new(params, route, peer, now))),
            up: Half::new(mode),
            down: Half::new(mode),
            started: now,
            last_active: now,
            idle,
            connect_ms: u32::MAX,
            retries: 0,
            first_eof: None,
            target: None,
            admitted,
            kernel: None,
            notes: None,
            join_at_rest: false,
            armed: Armed::default(),
        }
    }

    /// The listener it belongs to.
    pub fn listener(&self) -> &Arc<ListenerShared> {
        &self.listener
    }

    /// Its timer slot.
    pub fn armed(&mut self) -> &mut Armed {
        &mut self.armed
    }

    /// The client (the one a PROXY header named, when one did).
    pub fn client(&self) -> SocketAddr {
        match &self.connecting {
            Some(c) => c.client(),
            None => self.client_addr,
        }
    }

    /// What it holds in its listener's per-source table.
    pub fn admitted(&self) -> Option<Admitted> {
        self.admitted
    }

    /// The source the listener's lists judge: the client, once known (not while a
    /// PROXY header is awaited).
    pub fn source(&self) -> Option<std::net::IpAddr> {
        match &self.connecting {
            Some(c) if c.awaiting_header() => None,
            _ => Some(self.client().ip()),
        }
    }

    /// Its access-log record, ending now (`now`) so.
    pub fn record(&self, end: End, detail: Option<&'static str>, now: Millis) -> Record {
        let ms = |m: u64| std::time::Duration::from_millis(m);
        Record {
            time: std::time::SystemTime::now(),
            listener: Arc::clone(&self.listener.name),
            proto: Proto::Tcp,
            client: self.client(),
            backend: self.target.as_ref().map(|t| Reached {
                id: Arc::clone(&t.id),
                addr: t.addr,
            }),
            pool: match (&self.target, &self.connecting) {
                (Some(t), _) => Some(Arc::clone(&t.pool.name)),
                (None, Some(c)) => c.pool().map(|p| Arc::clone(&p.name)),
                (None, None) => None,
            },
            sni: match &self.connecting {
                Some(c) => c.sni().cloned(),
                None => self.notes.as_ref().and_then(|n| n.sni.clone()),
            },
            failed: match &self.connecting {
                Some(c) => c.failed_ids(),
                None => self.notes.as_ref().map_or(Vec::new(), |n| n.failed.clone()),
            },
            bytes_in: self.up.bytes(),
            bytes_out: self.down.bytes(),
            duration: ms(now.saturating_sub(self.started)),
            connect: (self.connect_ms != u32::MAX).then(|| ms(u64::from(self.connect_ms))),
            retries: match &self.connecting {
                // Every attempt failed: the number points one past the last.
                Some(c) if end == End::ConnectFailed => c.attempts().saturating_sub(1),
                Some(c) => c.attempts(),
                None => u32::from(self.retries),
            },
            end,
            detail,
            datagrams: None,
        }
    }

    /// Whose EOF came first, once both directions are done.
    pub fn first_eof(&self) -> Option<Side> {
        self.first_eof
    }

    /// Established: it can be handed to another process (not while connecting).
    pub fn exportable(&self) -> bool {
        self.connecting.is_none() && self.backend.is_some() && !self.join_at_rest
    }

    /// Takes it from the kernel (`forward = "kernel"`) so that it can be handed
    /// over: true unless the kernel holds bytes between its sockets now (a
    /// destination that does not read), then it stays (see [`Maps::leave`]).
    pub fn leave_kernel(&mut self, maps: Option<&mut Maps>, worker: usize) -> bool {
        if self.kernel.is_none() {
            return true;
        }
        let (Some(maps), Some(backend), Some(pair)) =
            (maps, self.backend.as_ref(), self.kernel.as_deref())
        else {
            return false;
        };
        if !matches!(
            maps.leave(pair, [self.client.as_fd(), backend.as_fd()]),
            Ok(true)
        ) {
            return false;
        }
        // What the kernel moved is counted before its entries go.
        self.count_kernel(Some(maps), worker);
        if let Some(pair) = self.kernel.take() {
            maps.forget(&pair);
        }
        true
    }

    /// Hands the session over (an upgrade), leaving nothing behind here: its sockets
    /// leave the poll (and the kernel's sockhash), its counts here end (the listener's
    /// and the backend's; the caller gives its per-source place and descriptors back),
    /// and no log record is written (the new process writes it when it ends). Every
    /// field is named: one added does not compile until it is carried or said not to
    /// be. Only for an [`Session::exportable`] session the kernel has let go of
    /// ([`Session::leave_kernel`]).
    pub fn export(self, registry: &Registry, (worker, now): (usize, Millis)) -> Exported {
        self.uncount(worker);
        let Session {
            listener,
            client_addr,
            mut client,
            // Not carried: the new process looks at both sockets at once.
            client_ready: _,
            backend,
            backend_ready: _,
            // None: only an established session is exported.
            connecting: _,
            up,
            down,
            started,
            last_active,
            idle,
            connect_ms,
            retries,
            first_eof,
            target,
            admitted,
            // None: taken from the kernel first (`leave_kernel`); the new process
            // forwards it itself.
            kernel: _,
            notes,
            // False: only a session at rest is exported.
            join_at_rest: _,
            // Its timer here fires for nobody (the key is gone).
            armed: _,
        } = self;
        let mut backend = backend.expect("an exported session is established");
        let _ = registry.deregister(&mut client);
        let _ = registry.deregister(&mut backend);
        let (up, up_pipe) = up.export();
        let (down, down_pipe) = down.export();
        let (sni, failed) = match notes {
            Some(n) => (
                n.sni.map(|s| s.as_str().to_string()),
                n.failed.iter().map(|f| f.to_string()).collect(),
            ),
            None => (None, Vec::new()),
        };
        let state = SessionState {
            listener: listener.name.to_string(),
            client: client_addr,
            backend: target
                .as_ref()
                .map(|t| (t.pool.name.to_string(), t.id.to_string(), t.addr)),
            age_ms: now.saturating_sub(started),
            idle_ms: now.saturating_sub(last_active),
            idle_timeout_ms: idle,
            connect_ms,
            retries,
            first_eof: first_eof.map(|s| {
                match s {
                    Side::Client => "client",
                    Side::Backend => "backend",
                }
                .to_string()
            }),
            admitted: admitted.is_some(),
            sni,
            failed,
            up,
            down,
        };
        let mut fds = vec![OwnedFd::from(client), OwnedFd::from(backend)];
        for p in [up_pipe, down_pipe].into_iter().flatten() {
            let (r, w) = p.into_fds();
            fds.extend([r, w]);
        }
        Exported {
            state: State::Session(state),
            fds,
        }
    }

    /// The session another process exported (`a`), established here: its sockets
    /// registered under `key`'s tokens by the caller next, counted on its listener
    /// and backend here, `admitted` in the per-source table. Call
    /// [`Session::drive`] next: both sockets are taken as ready.
    pub fn adopt(
        a: Adopted,
        admitted: Option<Admitted>,
        (worker, now): (usize, Millis),
    ) -> std::io::Result<Session> {
        let Adopted {
            exported: Exported { state, fds },
            listener,
            target,
        } = a;
        let State::Session(s) = state else {
            return Err(std::io::Error::other("not a session"));
        };
        let mut fds = fds.into_iter();
        let mut next = || {
            fds.next()
                .ok_or_else(|| std::io::Error::other("a session came with too few descriptors"))
        };
        let client = TcpStream::from(next()?);
        let backend = TcpStream::from(next()?);
        let mut pipe = |has: bool| -> std::io::Result<Option<Pipe>> {
            if !has {
                return Ok(None);
            }
            let (r, w) = (next()?, next()?);
            Pipe::from_fds(r, w).map(Some)
        };
        let (up_pipe, down_pipe) = (pipe(s.up.pipe)?, pipe(s.down.pipe)?);
        let target = target.map(Claim::new);
        if let Some(t) = &target {
            t.counters.shard(worker).active.add(1);
        }
        let notes = (s.sni.is_some() || !s.failed.is_empty()).then(|| {
            Box::new(Notes {
                sni: s.sni.as_deref().and_then(|n| ServerName::new(n.as_bytes())),
                failed: s.failed.iter().map(|f| Arc::from(f.as_str())).collect(),
            })
        });
        let ready = Ready::all();
        Ok(Session {
            listener,
            client_addr: s.client,
            client,
            client_ready: ready,
            backend: Some(backend),
            backend_ready: ready,
            connecting: None,
            up: Half::adopt(s.up, up_pipe),
            down: Half::adopt(s.down, down_pipe),
            started: now.saturating_sub(s.age_ms),
            last_active: now.saturating_sub(s.idle_ms),
            idle: s.idle_timeout_ms,
            connect_ms: s.connect_ms,
            retries: s.retries,
            first_eof: match s.first_eof.as_deref() {
                Some("client") => Some(Side::Client),
                Some("backend") => Some(Side::Backend),
                _ => None,
            },
            target,
            admitted,
            kernel: None,
            notes,
            join_at_rest: false,
            armed: Armed::default(),
        })
    }

    /// Its sockets, to register an adopted session.
    pub fn sockets(&mut self) -> (&mut TcpStream, Option<&mut TcpStream>) {
        (&mut self.client, self.backend.as_mut())
    }

    /// Established to `backend`.
    pub fn serves(&self, backend: &Arc<BackendStats>) -> bool {
        self.connecting.is_none()
            && self
                .target
                .as_ref()
                .is_some_and(|t| Arc::ptr_eq(t, backend))
    }

    /// The first step: read the header already there, look for data already there
    /// (`on-data`), or start connecting.
    pub fn start(&mut self, env: &mut Env<'_>) -> Step {
        match self.connecting.as_ref().map(|c| c.phase()) {
            // The header often arrives with the handshake: no need to wait for epoll.
            Some(Phase::Header) => {
                self.client_ready.set_readable(true);
                self.read_header(env)
            }
            Some(Phase::Hello) => {
                self.client_ready.set_readable(true);
                self.await_hello(env)
            }
            Some(Phase::FirstData) => {
                self.client_ready.set_readable(true);
                self.await_data(env)
            }
            _ => self.connect(env),
        }
    }

    /// An event on one of its sockets.
    pub fn on_event(&mut self, side: Side, event: &mio::event::Event, env: &mut Env<'_>) -> Step {
        let ready = match side {
            Side::Client => &mut self.client_ready,
            Side::Backend => &mut self.backend_ready,
        };
        let err = event.is_error();
        ready.mark(
            event.is_readable() || err,
            event.is_read_closed() || err,
            event.is_writable() || event.is_write_closed() || err,
        );
        match &self.connecting {
            None if err && self.kernel.is_none() => match self.failed_after_eof(side) {
                Some(step) => step,
                None => self.drive(env),
            },
            None => self.drive(env),
            Some(_) if side == Side::Backend => {
                let clean = event.is_writable() && !err && !event.is_write_closed();
                self.check_connect(clean, false, env)
            }
            Some(c) if self.client_ready.readable() => match c.phase() {
                Phase::Header => self.read_header(env),
                Phase::Hello => self.await_hello(env),
                Phase::FirstData => self.await_data(env),
                Phase::Queue => self.queued_client(),
                Phase::Connect => Step::Wait,
            },
            Some(_) => Step::Wait,
        }
    }

    /// A queued session's client stirred: it may have given up (closed before
    /// sending anything). Bytes it sent stay queued for the backend.
    fn queued_client(&mut self) -> Step {
        // Its bytes wait; the readable flag stays set so they are read once connected.
        self.first_byte().err().unwrap_or(Step::Wait)
    }

    /// Whether the client has sent a byte (peeked: it stays queued); otherwise what
    /// the session does: wait for one, or end (closed first, or failed).
    fn first_byte(&mut self) -> Result<(), Step> {
        let mut byte = [0u8; 1];
        let peeked = loop {
            match self.client.peek(&mut byte) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match peeked {
            Ok(0) => Err(Step::End(Ending::ClosedEarly)),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.client_ready.set_readable(false);
                Err(Step::Wait)
            }
            Err(_) => Err(Step::End(Ending::Failed {
                failed: Side::Client,
                reset: Side::Client,
            })),
        }
    }

    /// A slot of the queue it waits in came, with ticket `ticket`: it connects with it
    /// (a grant for a session that no longer waits is let go, to the next waiter).
    pub fn granted(&mut self, ticket: u64, claim: Claim, env: &mut Env<'_>) -> Option<Step> {
        let c = self.connecting.as_mut()?;
        if !c.grant(ticket, claim, env.worker, env.now) {
            return None;
        }
        Some(self.connect(env))
    }

    /// An error on `side` after its EOF was passed on: nothing reads that socket any
    /// more (its direction is done), so no read would see the reset, and nothing may be
    /// written to it for a long time. The pending socket error says what happened: a
    /// reset ends the session now, as it does before the EOF, instead of at its idle
    /// timeout.
    fn failed_after_eof(&mut self, side: Side) -> Option<Step> {
        let (done, stream) = match side {
            Side::Client => (self.up.done(), &self.client),
            Side::Backend => (self.down.done(), self.backend.as_ref()?),
        };
        if !done {
            return None;
        }
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                tracing::debug!(listener = %self.listener.name, "{side:?} failed after its EOF: {e}");
                Some(Step::End(Ending::Failed {
                    failed: side,
                    reset: side.other(),
                }))
            }
            Ok(None) => None,
        }
    }

    /// Its timer fired: a deadline may have passed.
    pub fn on_timer(&mut self, env: &mut Env<'_>) -> Step {
        if let Some(c) = self.connecting.as_mut() {
            if env.now < c.deadline() {
                return Step::Wait;
            }
            match c.phase() {
                Phase::Header => {
                    return Step::End(Ending::ProxyHeader(
                        "no complete PROXY header within connect_timeout".into(),
                    ))
                }
                Phase::Hello => return Step::End(Ending::SniTimeout),
                Phase::FirstData => return Step::End(Ending::NoData),
                Phase::Queue => {
                    if !c.waited_out(env.worker, env.now) {
                        return Step::End(Ending::NoRoom(NoRoom::QueueTimeout));
                    }
                    return self.connect(env);
                }
                Phase::Connect => {}
            }
            return self.check_connect(false, true, env);
        }
        if self.kernel.is_some() {
            return self.kernel_timer(env);
        }
        if env.now >= self.last_active + u64::from(self.idle) {
            return Step::End(Ending::Idle);
        }
        self.up.sweep(env.pool);
        self.down.sweep(env.pool);
        Step::Wait
    }

    /// When it next needs a look: its connect or header deadline, its idle deadline,
    /// or the next check of a pipe it holds.
    pub fn deadline(&self, now: Millis) -> Millis {
        if let Some(c) = &self.connecting {
            return c.deadline();
        }
        let idle_at = self.last_active + u64::from(self.idle);
        if let Some(k) = self.kernel.as_ref().filter(|k| k.draining()) {
            return idle_at.min(now + k.next_look());
        }
        if self.up.has_pipe() || self.down.has_pipe() {
            idle_at.min(now + PIPE_CHECK)
        } else {
            idle_at
        }
    }

    fn read_header(&mut self, env: &mut Env<'_>) -> Step {
        let Some(c) = self.connecting.as_mut() else {
            return Step::Wait;
        };
        match header::read(&self.client, &mut self.client_ready) {
            header::Read::Wait => Step::Wait,
            header::Read::ClosedEarly => Step::End(Ending::ClosedEarly),
            header::Read::Broken => Step::End(Ending::Failed {
                failed: Side::Client,
                reset: Side::Client,
            }),
            header::Read::Invalid(why) => Step::End(Ending::ProxyHeader(why)),
            header::Read::Header(addresses) => {
                self.join_at_rest = true;
                let own = reached(self.listener.listen, &self.client);
                let routed = c.header_read(&self.listener, addresses, own, env.now);
                // The client the header names is the one the lists and limits judge.
                let rules = &c.params().admission;
                match rules.admit(&self.listener.sources, c.client().ip(), env.now) {
                    Ok(admitted) => self.admitted = admitted,
                    Err(refused) => return Step::End(Ending::Refused(refused)),
                }
                if let Err(why) = routed {
                    return Step::End(unrouted(why, c.client()));
                }
                match c.phase() {
                    Phase::Hello => self.await_hello(env),
                    Phase::FirstData => self.await_data(env),
                    _ => self.connect(env),
                }
            }
        }
    }

    /// `route_by = "sni"`: reads the ClientHello as it arrives (peeked: every byte
    /// stays queued for the backend), then routes and connects.
    fn await_hello(&mut self, env: &mut Env<'_>) -> Step {
        let Some(c) = self.connecting.as_mut() else {
            return Step::Wait;
        };
        if env.hello.len() < crate::sni::tls::MAX_INPUT {
            env.hello.resize(crate::sni::tls::MAX_INPUT, 0);
        }
        let peeked = loop {
            match self.client.peek(env.hello) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match peeked {
            Ok(0) => Step::End(Ending::ClosedEarly),
            Ok(n) if n <= c.hello_seen() => {
                // Nothing new (an edge for bytes already seen): wait for more.
                self.client_ready.set_readable(false);
                Step::Wait
            }
            Ok(n) => match c.hello_read(&self.listener, &env.hello[..n]) {
                None => {
                    self.client_ready.set_readable(false);
                    Step::Wait
                }
                Some(Err(why)) => Step::End(unrouted(why, c.client())),
                Some(Ok(())) => self.connect(env),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.client_ready.set_readable(false);
                Step::Wait
            }
            Err(_) => Step::End(Ending::Failed {
                failed: Side::Client,
                reset: Side::Client,
            }),
        }
    }

    /// `on-data`: connects once the client has sent a byte (peeked: it stays for the
    /// forwarding path).
    fn await_data(&mut self, env: &mut Env<'_>) -> Step {
        if let Err(step) = self.first_byte() {
            return step;
        }
        match self.connecting.as_mut() {
            Some(c) => {
                c.data_arrived();
                self.connect(env)
            }
            None => Step::Wait,
        }
    }

    /// Starts the current connect attempt (moving past backends that refuse at once).
    fn connect(&mut self, env: &mut Env<'_>) -> Step {
        let Some(c) = self.connecting.as_mut() else {
            return Step::Wait;
        };
        let token = token::token(Kind::Backend, env.key);
        let listener = (&self.listener, env.grants);
        match c.start(
            env.registry,
            (token, env.key),
            listener,
            env.worker,
            env.now,
        ) {
            Attempt::Started(stream) => {
                self.backend = Some(stream);
                self.backend_ready = Ready::default();
                Step::Wait
            }
            Attempt::Queued => Step::Wait,
            Attempt::NoRoom(why) => Step::End(Ending::NoRoom(why)),
            Attempt::Exhausted { attempts } => Step::End(Ending::BackendsFailed {
                client: c.client(),
                attempts,
            }),
            Attempt::Local(e) => Step::End(Ending::Local(e)),
        }
    }

    /// The backend socket reported readiness (`writable`: cleanly, which means
    /// connected) or the connect deadline passed (`timed_out`).
    fn check_connect(&mut self, writable: bool, timed_out: bool, env: &mut Env<'_>) -> Step {
        let (Some(c), Some(stream)) = (self.connecting.as_mut(), self.backend.as_ref()) else {
            return Step::Wait;
        };
        let result = if timed_out {
            Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        } else {
            connect::outcome(stream, writable)
        };
        let result = result.and_then(|connected| {
            if connected {
                c.send_header(stream, reached(self.listener.listen, &self.client))?;
            }
            Ok(connected)
        });
        match result {
            Ok(false) => Step::Wait,
            Ok(true) => {
                let _ = stream.set_nodelay(true);
                let kernel = c.params().forward == Mode::Kernel;
                self.target = c.established(env.worker);
                let notes = Notes {
                    sni: c.take_sni(),
                    failed: c.failed_ids(),
                };
                self.notes =
                    (notes.sni.is_some() || !notes.failed.is_empty()).then(|| Box::new(notes));
                self.client_addr = c.client();
                self.retries = u8::try_from(c.attempts()).unwrap_or(u8::MAX);
                self.connect_ms =
                    u32::try_from(env.now.saturating_sub(self.started)).unwrap_or(u32::MAX - 1);
                self.connecting = None;
                self.backend_ready.set_writable();
                self.last_active = env.now;
                self.listener.stats.shard(env.worker).connections.inc();
                if !kernel {
                    self.join_at_rest = false;
                } else if !self.join_at_rest {
                    if let Some(step) = self.join_kernel(env) {
                        return step;
                    }
                }
                self.drive(env)
            }
            Err(e) => {
                tracing::debug!(listener = %self.listener.name, client = %c.client(), "connect failed: {e}");
                c.failed(env.worker, &e);
                // Dropping the stream closes it and takes it out of epoll.
                self.backend = None;
                self.connect(env)
            }
        }
    }

    /// Moves bytes both ways as far as readiness allows.
    pub fn drive(&mut self, env: &mut Env<'_>) -> Step {
        if self.connecting.is_some() {
            return Step::Wait;
        }
        if self.kernel.is_some() {
            return self.kernel_drive(env);
        }
        let Some(backend) = self.backend.as_ref() else {
            return Step::Wait;
        };
        let before = (self.up.bytes(), self.down.bytes());
        let up = self.up.pump(
            (&self.client, &mut self.client_ready),
            (backend, &mut self.backend_ready),
            (&mut *env.buf, &mut *env.pool),
            PUMP_BUDGET,
            self.down.done(),
        );
        let down = match &up {
            Ok(_) => Some(self.down.pump(
                (backend, &mut self.backend_ready),
                (&self.client, &mut self.client_ready),
                (&mut *env.buf, &mut *env.pool),
                PUMP_BUDGET,
                self.up.done(),
            )),
            Err(_) => None,
        };
        if let Some(t) = &self.target {
            let counters = t.counters.shard(env.worker);
            let (sent, received) = (self.up.bytes() - before.0, self.down.bytes() - before.1);
            if sent > 0 {
                counters.sent_bytes.add(sent);
            }
            if received > 0 {
                counters.received_bytes.add(received);
            }
        }
        let failed = |f: forward::Failure, src: Side| {
            tracing::debug!(listener = %self.listener.name, "{src:?} -> {:?}: {:?} failed: {}", src.other(), f.end(), f.error());
            let reset = reset_for(f.end(), src);
            Step::End(Ending::Failed {
                failed: reset.other(),
                reset,
            })
        };
        let (up, down) = match (up, down) {
            (Err(f), _) => return failed(f, Side::Client),
            (Ok(_), Some(Err(f))) => return failed(f, Side::Backend),
            (Ok(a), b) => (a, b.and_then(Result::ok).unwrap_or_default()),
        };
        if up.moved() || down.moved() {
            self.last_active = env.now;
        }
        if self.first_eof.is_none() {
            if self.up.done() {
                self.first_eof = Some(Side::Client);
            } else if self.down.done() {
                self.first_eof = Some(Side::Backend);
            }
        }
        if self.up.done() && self.down.done() {
            Step::End(Ending::Done)
        } else if up.more() || down.more() {
            Step::Again
        } else if self.join_at_rest
            && self.up.at_rest()
            && self.down.at_rest()
            && !self.client_ready.readable()
            && !self.backend_ready.readable()
        {
            self.join_at_rest = false;
            self.join_kernel(env).unwrap_or(Step::Wait)
        } else {
            Step::Wait
        }
    }

    /// Hands the just-connected session to the kernel; `None`: it stays with ringway
    /// (no maps, or the kernel said no without side effects).
    fn join_kernel(&mut self, env: &mut Env<'_>) -> Option<Step> {
        let maps = env.kernel.as_deref_mut()?;
        let backend = self.backend.as_ref()?;
        let counters = self.listener.stats.shard(env.worker);
        match maps.join(self.client.as_fd(), backend.as_fd()) {
            Ok(pair) => {
                counters.kernel_joined.inc();
                self.kernel = Some(Box::new(pair));
                // EOFs or resets that came with the handshake are in the flags.
                Some(self.kernel_drive(env))
            }
            Err(JoinError::Fallback(e)) => {
                counters.kernel_declined.inc();
                tracing::debug!(listener = %self.listener.name, "kernel forwarding refused this session, ringway forwards it: {e}");
                None
            }
            Err(JoinError::Fatal(e)) => {
                counters.kernel_failed.inc();
                Some(Step::End(Ending::Local(io::Error::other(e))))
            }
        }
    }

    /// An event or a drain check on a kernel-forwarded session: a failed socket ends
    /// it, an EOF is passed on once its direction is delivered.
    fn kernel_drive(&mut self, env: &mut Env<'_>) -> Step {
        let (Some(pair), Some(backend), Some(maps)) = (
            self.kernel.as_deref_mut(),
            self.backend.as_ref(),
            env.kernel.as_deref_mut(),
        ) else {
            return Step::Wait;
        };
        for (side, stream, ready) in [
            (Side::Client, &self.client, &self.client_ready),
            (Side::Backend, backend, &self.backend_ready),
        ] {
            if ready.closed() {
                if let Ok(Some(e)) | Err(e) = stream.take_error() {
                    tracing::debug!(listener = %self.listener.name, "{side:?} failed: {e}");
                    return Step::End(Ending::Failed {
                        failed: side,
                        reset: side.other(),
                    });
                }
            }
        }
        let fds = [self.client.as_fd(), backend.as_fd()];
        let closed = [self.client_ready.closed(), self.backend_ready.closed()];
        let verdict = pair.advance(|cookies| maps.moved(cookies), fds, closed);
        if self.first_eof.is_none() {
            if pair.eof(0) {
                self.first_eof = Some(Side::Client);
            } else if pair.eof(1) {
                self.first_eof = Some(Side::Backend);
            }
        }
        match verdict {
            Ok(true) => Step::End(Ending::Done),
            Ok(false) => Step::Wait,
            Err(e) => {
                tracing::debug!(listener = %self.listener.name, "passing an EOF on failed: {e}");
                Step::End(Ending::Failed {
                    failed: Side::Backend,
                    reset: Side::Client,
                })
            }
        }
    }

    /// The timer of a kernel-forwarded session: a drain check, or the idle timeout
    /// measured by the kernel's own time since each socket last received data.
    fn kernel_timer(&mut self, env: &mut Env<'_>) -> Step {
        let step = self.kernel_drive(env);
        if !matches!(step, Step::Wait) {
            return step;
        }
        let Some(backend) = self.backend.as_ref() else {
            return Step::Wait;
        };
        if let Ok(quiet) = Pair::quiet([self.client.as_fd(), backend.as_fd()]) {
            self.last_active = env.now.saturating_sub(quiet).max(self.last_active);
        }
        self.count_kernel(env.kernel.as_deref(), env.worker);
        if env.now >= self.last_active + u64::from(self.idle) {
            return Step::End(Ending::Idle);
        }
        Step::Wait
    }

    /// Adds what the kernel moved since the last call to the session's and its
    /// backend's byte counts.
    pub fn count_kernel(&mut self, maps: Option<&Maps>, worker: usize) {
        let (Some(pair), Some(maps)) = (self.kernel.as_deref_mut(), maps) else {
            return;
        };
        let [sent, received] = pair.take_moved(maps.moved(pair.cookies()));
        self.up.count(sent);
        self.down.count(received);
        if let Some(t) = &self.target {
            let counters = t.counters.shard(worker);
            counters.sent_bytes.add(sent);
            counters.received_bytes.add(received);
        }
    }

    /// Ends the session: returns its pipes, resets one side if asked, takes it off
    /// its backend's and listener's counts. The sockets close when it is dropped.
    pub fn close(
        mut self,
        reset: Option<Side>,
        worker: usize,
        pool: &mut PipePool,
        kernel: Option<&mut Maps>,
    ) {
        if let (Some(pair), Some(maps)) = (self.kernel.as_deref(), kernel) {
            maps.forget(pair);
        }
        self.up.release(pool);
        self.down.release(pool);
        let target = match reset {
            Some(Side::Client) => Some(&self.client),
            Some(Side::Backend) => self.backend.as_ref(),
            None => None,
        };
        if let Some(t) = target {
            let _ = socket2::SockRef::from(t).set_linger(Some(std::time::Duration::ZERO));
        }
        self.uncount(worker);
    }

    /// Takes it off its backend's and listener's counts (it ends, or leaves).
    fn uncount(&self, worker: usize) {
        if let Some(t) = &self.target {
            t.counters.shard(worker).active.add(-1);
        }
        self.listener.release();
    }
}

/// The ending of a session its route or pool could not take.
fn unrouted(why: Unrouted, client: SocketAddr) -> Ending {
    match why {
        Unrouted::NoRoute => Ending::NoRoute,
        Unrouted::NotTls(why) => Ending::NotTls(why),
        Unrouted::NoBackend => Ending::NoBackend(client),
    }
}

/// A failure at `end` of the direction whose source is `src`: which side gets a reset.
fn reset_for(end: forward::End, src: Side) -> Side {
    match end {
        // The source failed (e.g. reset): reset the destination, the other side.
        forward::End::Source => src.other(),
        // The destination failed: reset the source side.
        forward::End::Destination => src,
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
    /// An idle connection's memory is mostly its session (the goal: under 300 bytes
    /// of RSS per idle connection, measured by `scripts/bench.sh`'s memory test):
    /// growing it is a decision, not an accident. 248: 8 bytes for the server name a
    /// `route_by = "sni"` connection asked for (its access-log record names it).
    #[test]
    fn a_session_stays_small() {
        let size = std::mem::size_of::<super::Session>();
        assert!(size <= 248, "Session is {size} bytes");
    }
}
