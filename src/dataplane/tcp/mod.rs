//! The TCP plane of a worker: its listening sockets, its sessions and their timers,
//! its pipes and scratch buffer. It owns all of them; the worker hands it events,
//! the poll registry and the time, and asks when it next needs to run.
//!
//! * [`accept`]: listening sockets, accepting, shedding at the descriptor limit.
//! * [`session`]: one proxied connection (with [`connect`] and [`header`]).
//! * [`forward`]: one direction of a session, pure over an I/O trait ([`io`]).
//! * [`pipes`]: the splice pipe pool.

mod accept;
mod connect;
pub mod forward;
mod header;
mod io;
pub mod kernel;
mod pipes;
mod session;

use std::sync::Arc;

use mio::event::Event;
use mio::Registry;

pub use accept::bind_tcp;

use super::admission::Refused;
use super::budget::{FdBudget, SESSION_FDS};
use super::listener::ListenerShared;
use super::load::Grants;
use super::ratelimit::RateLimit;
use super::stats::{BackendStats, ListenerCounters};
use super::timers::{Millis, Timers};
use super::token::{self, Key, Kind, Slots};
use crate::accesslog::{End, Proto, Record, Sink};
use crate::balance::hash::{flow_hash, PROTO_TCP};
use crate::balance::HashMode;
use accept::{Accepted, Listener, Spare};
use connect::{NoRoom, Start};
use forward::COPY_BUF;
use pipes::PipePool;
use session::{Ending, Env, Session, Side, Step};

/// Connections accepted per listener event before other work gets a turn.
const ACCEPT_BATCH: usize = 64;

/// Work left over by a budget or batch limit, done before the next wait.
#[derive(Debug, Clone, Copy)]
enum Work {
    Accept(Key),
    Drive(Key),
}

/// A worker's TCP listeners and sessions.
#[derive(Debug)]
pub(super) struct TcpPlane {
    worker: usize,
    listeners: Slots<Listener>,
    sessions: Slots<Session>,
    timers: Timers,
    buf: Box<[u8]>,
    /// Where ClientHellos are peeked (`route_by = "sni"`; empty until one is).
    hello: Vec<u8>,
    pool: PipePool,
    requeue: Vec<Work>,
    budget: FdBudget,
    spare: Spare,
    warn: RateLimit,
    log: Sink,
    /// Handles on the kernel-forwarding maps, when the program is loaded.
    kernel: Option<kernel::Maps>,
    /// Where full backends' queues hand this worker's waiting sessions their slots.
    grants: Arc<Grants>,
}

impl TcpPlane {
    /// An empty plane for worker `worker` of `workers`, drawing descriptors from
    /// `budget`, handing access-log records to `log`, and receiving queue slots in
    /// `grants`.
    pub fn new(
        worker: usize,
        workers: usize,
        budget: FdBudget,
        log: Sink,
        grants: Arc<Grants>,
    ) -> TcpPlane {
        TcpPlane {
            worker,
            listeners: Slots::default(),
            sessions: Slots::default(),
            timers: Timers::default(),
            buf: vec![0u8; COPY_BUF].into_boxed_slice(),
            hello: Vec::new(),
            pool: PipePool::new(budget.clone(), worker, workers),
            requeue: Vec::new(),
            budget,
            spare: Spare::new(),
            warn: RateLimit::default(),
            log,
            kernel: None,
            grants,
        }
    }

    /// Hands the slots full backends' queues granted since the last call to the
    /// sessions that wait for them (a slot whose session is gone goes to the next
    /// waiter).
    pub fn take_grants(&mut self, registry: &Registry, now: Millis) {
        for g in self.grants.take() {
            let (key, ticket, claim) = g.into_parts();
            self.run_session(key, registry, now, |s, env| s.granted(ticket, claim, env));
        }
    }

    /// Lets sessions of `forward = "kernel"` listeners be forwarded by the kernel.
    pub fn set_kernel(&mut self, maps: kernel::Maps) {
        self.kernel = Some(maps);
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Starts serving a listening socket. Connections queued before it was registered
    /// raise no edge, so it is accepted from at once.
    pub fn add_listener(
        &mut self,
        socket: std::net::TcpListener,
        shared: Arc<ListenerShared>,
        registry: &Registry,
    ) -> std::io::Result<()> {
        let routing = shared.routing.load_full();
        let key = self.listeners.insert_with(|k| {
            Listener::new(socket, shared, registry, token::token(Kind::TcpListener, k))
        })?;
        if let Some(l) = self.listeners.get_mut(key) {
            let by_name = routing.routes.by_server_name();
            l.defer_accept(by_name.then_some(routing.params.sni_timeout));
        }
        self.requeue.push(Work::Accept(key));
        Ok(())
    }

    /// Stops accepting on `shared`'s socket: connections already queued are taken
    /// (closing the socket would reset them); open sessions carry on.
    pub fn remove_listener(
        &mut self,
        shared: &Arc<ListenerShared>,
        registry: &Registry,
        now: Millis,
    ) {
        let keys = self
            .listeners
            .keys_where(|l| Arc::ptr_eq(l.shared(), shared));
        for key in keys {
            while self.accept(key, registry, now, true) {}
            if let Some(l) = self.listeners.remove(key) {
                l.deregister(registry);
            }
        }
    }

    /// Stops accepting on every listener (a drain). As a removed listener does, each
    /// first takes the connections already in its accept queue (closing the socket
    /// would reset them): they are served and drained with the rest.
    pub fn close_listeners(&mut self, registry: &Registry, now: Millis) {
        for key in self.listeners.keys_where(|_| true) {
            while self.accept(key, registry, now, true) {}
            if let Some(l) = self.listeners.remove(key) {
                l.deregister(registry);
            }
        }
    }

    /// An event for a token of this plane.
    pub fn on_event(
        &mut self,
        kind: Kind,
        key: Key,
        event: &Event,
        registry: &Registry,
        now: Millis,
    ) {
        match kind {
            Kind::TcpListener if self.accept(key, registry, now, false) => {
                self.requeue.push(Work::Accept(key));
            }
            Kind::Client | Kind::Backend => {
                let side = if kind == Kind::Client {
                    Side::Client
                } else {
                    Side::Backend
                };
                self.run_session(key, registry, now, |s, env| {
                    Some(s.on_event(side, event, env))
                });
            }
            _ => {}
        }
    }

    /// Runs the work a budget left over; true if some is still left.
    pub fn run_requeued(&mut self, registry: &Registry, now: Millis) -> bool {
        for work in std::mem::take(&mut self.requeue) {
            match work {
                Work::Accept(key) => {
                    if self.accept(key, registry, now, false) {
                        self.requeue.push(work);
                    }
                }
                Work::Drive(key) => {
                    self.run_session(key, registry, now, |s, env| Some(s.drive(env)));
                }
            }
        }
        !self.requeue.is_empty()
    }

    /// Work is waiting: the worker must not sleep.
    pub fn busy(&self) -> bool {
        !self.requeue.is_empty()
    }

    /// Fires due timers and ends accept pauses that are over.
    pub fn fire_timers(&mut self, registry: &Registry, now: Millis) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            // Only the entry the session is armed for fires; others are stale.
            self.run_session(key, registry, now, |s, env| {
                Timers::fired(s.armed(), at).then(|| s.on_timer(env))
            });
        }
        let sessions = &mut self.sessions;
        self.timers.compact(sessions.len(), |at, key| {
            sessions.get_mut(key).is_some_and(|s| s.armed().is(at))
        });
        for (key, l) in self.listeners.iter_mut() {
            if l.resume(now) {
                // One batch now, the rest behind other work: no burst after a pause.
                self.requeue.push(Work::Accept(key));
            }
        }
    }

    /// When a timer or an accept pause is next due.
    pub fn next_deadline(&self) -> Option<Millis> {
        let pauses = self.listeners.iter().filter_map(|(_, l)| l.pause_ends());
        self.timers.next().into_iter().chain(pauses).min()
    }

    /// Resets every open connection to `backend` (`on_down = "close"`); returns how
    /// many.
    pub fn close_backend(&mut self, backend: &Arc<BackendStats>, now: Millis) -> usize {
        let doomed = self.sessions.keys_where(|s| s.serves(backend));
        let n = doomed.len();
        for key in doomed {
            self.end(key, Ending::Aborted, now);
        }
        n
    }

    /// Hands every session that can go to `exporter` (an upgrade: see
    /// [`Session::export`]); returns how many went. Those that cannot yet (still
    /// connecting, say) stay, and go at a later call.
    pub fn export(
        &mut self,
        exporter: &crate::dataplane::handoff::Exporter,
        registry: &Registry,
        now: Millis,
    ) -> usize {
        let mut n = 0;
        for key in self.sessions.keys_where(Session::exportable) {
            let worker = self.worker;
            let kernel = self.kernel.as_mut();
            if !self
                .sessions
                .get_mut(key)
                .is_some_and(|s| s.leave_kernel(kernel, worker))
            {
                // The kernel holds bytes of it now: at a later call.
                continue;
            }
            let Some(s) = self.sessions.remove(key) else {
                continue;
            };
            let shared = Arc::clone(s.listener());
            let (client, admitted) = (s.client(), s.admitted());
            let out = s.export(registry, (self.worker, now));
            if let Some(a) = admitted {
                shared.release_source(a, client.ip(), now);
            }
            self.budget.give(SESSION_FDS);
            // The receiver gone (the hand-off failed): the session is lost with it.
            let _ = exporter.send(crate::dataplane::handoff::Handed::One(Box::new(out)));
            n += 1;
        }
        n
    }

    /// Takes a session another process handed over: registered, counted, and run
    /// once (its sockets may hold what arrived meanwhile).
    pub fn adopt(
        &mut self,
        a: crate::dataplane::handoff::Adopted,
        registry: &Registry,
        now: Millis,
    ) {
        let shared = Arc::clone(&a.listener);
        let client = a.exported.state.client();
        let was_admitted = match &a.exported.state {
            crate::dataplane::handoff::State::Session(s) => s.admitted,
            crate::dataplane::handoff::State::Flow(_) => return,
        };
        // Held over any limit: it was admitted once already.
        let admitted = was_admitted
            .then(|| shared.readmit_source(client.ip(), now))
            .flatten();
        shared.acquire();
        let _ = self.budget.take(SESSION_FDS);
        let worker = self.worker;
        let inserted = self.sessions.insert_with(|k| {
            let mut s = Session::adopt(a, admitted, (worker, now))?;
            let (c, b) = s.sockets();
            let both = mio::Interest::READABLE | mio::Interest::WRITABLE;
            registry.register(c, token::token(Kind::Client, k), both)?;
            if let Some(b) = b {
                if let Err(e) = registry.register(b, token::token(Kind::Backend, k), both) {
                    let _ = registry.deregister(c);
                    return Err(e);
                }
            }
            Ok(s)
        });
        match inserted {
            Ok(key) => self.run_session(key, registry, now, |s, env| Some(s.drive(env))),
            Err(e) => {
                shared.release();
                self.budget.give(SESSION_FDS);
                if let Some(a) = admitted {
                    shared.release_source(a, client.ip(), now);
                }
                tracing::warn!(listener = %shared.name, %client, "cannot take a session over: {e}");
            }
        }
    }

    /// Closes every session (the drain deadline passed).
    pub fn close_all(&mut self, now: Millis) {
        for key in self.sessions.keys_where(|_| true) {
            self.end(key, Ending::Shutdown, now);
        }
    }

    /// Accepts up to a batch on listener `key`; true when it stopped at the batch limit
    /// (more may be waiting). `all`: even while paused (a listener being removed).
    fn accept(&mut self, key: Key, registry: &Registry, now: Millis, all: bool) -> bool {
        for _ in 0..ACCEPT_BATCH {
            let Some(l) = self.listeners.get_mut(key) else {
                return false;
            };
            if l.paused() && !all {
                return false;
            }
            match l.accept() {
                Accepted::Client(stream, peer) => self.admit(key, stream, peer, registry, now),
                Accepted::Drained => return false,
                Accepted::FdLimit(e) => {
                    let shared = Arc::clone(l.shared());
                    if let Some(peer) = self.spare.shed(l) {
                        self.log_refused(&shared, peer, End::Rejected, Some("fd_limit"));
                        self.refused(
                            &shared,
                            now,
                            |c| &c.rejected_fd_limit,
                            || format!("accept failed ({e}): closing the newest connection"),
                        );
                    } else {
                        l.pause(now);
                        self.log_accept_error(&shared, &e, now);
                        return false;
                    }
                }
                Accepted::Failed(e) => {
                    l.pause(now);
                    let shared = Arc::clone(l.shared());
                    self.log_accept_error(&shared, &e, now);
                    return false;
                }
            }
        }
        true
    }

    fn log_accept_error(&mut self, shared: &ListenerShared, e: &std::io::Error, now: Millis) {
        if let Some(suppressed) = self.warn.allow(now) {
            tracing::warn!(listener = %shared.name, suppressed, "accept failed: {e}; retrying shortly");
        }
    }

    /// Admits a client or refuses it at once: its source refused (lists, per-source
    /// limits), no descriptor budget left, the listener full, no backend up.
    fn admit(
        &mut self,
        lkey: Key,
        mut stream: mio::net::TcpStream,
        peer: std::net::SocketAddr,
        registry: &Registry,
        now: Millis,
    ) {
        let Some(shared) = self.listeners.get(lkey).map(|l| Arc::clone(l.shared())) else {
            return;
        };
        let routing = shared.routing.load_full();
        let params = &routing.params;
        let header = params.expects_header(peer.ip());
        // Behind a PROXY header, the client it names is judged once it is read.
        let admitted = if header {
            None
        } else {
            match params.admission.admit(&shared.sources, peer.ip(), now) {
                Ok(admitted) => admitted,
                Err(refused) => return self.refuse_source(&shared, peer, refused, now),
            }
        };
        // Refused further on: its place in the per-source table goes back.
        let undo = || {
            if let Some(a) = admitted {
                params.admission.release(&shared.sources, a, peer.ip(), now);
            }
        };
        if !self.budget.take(SESSION_FDS) {
            undo();
            self.log_refused(&shared, peer, End::Rejected, Some("fd_limit"));
            let (used, limit) = (self.budget.used(), self.budget.limit());
            return self.refused(&shared, now, |c| &c.rejected_fd_limit, || {
                format!("{used} of this worker's {limit} file descriptors in use: closing new connection")
            });
        }
        if !shared.try_acquire(params.max_connections) {
            undo();
            self.budget.give(SESSION_FDS);
            self.log_refused(&shared, peer, End::Rejected, Some("max_connections"));
            let max = params.max_connections;
            return self.refused(
                &shared,
                now,
                |c| &c.rejected_max_connections,
                || format!("max_connections ({max}) reached: closing new connection"),
            );
        }
        let by_name = routing.routes.by_server_name();
        if let Some(l) = self.listeners.get_mut(lkey) {
            l.defer_accept(by_name.then_some(params.sni_timeout));
        }
        let (flow, pool) = if header {
            // The backend is chosen once the PROXY header says who the client is.
            (None, None)
        } else {
            // The source-IP hash ignores the destination: no getsockname for it.
            let reached = match params.hash {
                HashMode::SourceIp => shared.listen,
                HashMode::FiveTuple => session::reached(shared.listen, &stream),
            };
            let flow = flow_hash(params.hash, PROTO_TCP, peer, reached);
            match routing.route(None).filter(|_| !by_name) {
                // Routed by name: the pool is chosen once the hello names one.
                None if by_name => (Some(flow), None),
                Some((slot, pool)) if pool.snapshot.pick(flow).is_some() => {
                    (Some(flow), Some((slot, Arc::clone(&pool.shared))))
                }
                placed => {
                    undo();
                    shared.release();
                    self.budget.give(SESSION_FDS);
                    if placed.is_some_and(|(_, p)| p.loops) {
                        self.log_refused(&shared, peer, End::Rejected, Some("loop"));
                        return self.refused(&shared, now, |c| &c.rejected_loop, || {
                            "no backend but ringway's own addresses (a loop): closing new connection".to_string()
                        });
                    }
                    self.log_refused(&shared, peer, End::NoBackend, None);
                    return self.refused(
                        &shared,
                        now,
                        |c| &c.rejected_no_backend,
                        || "no backend is up: closing new connection".to_string(),
                    );
                }
            }
        };
        let inserted = self.sessions.insert_with(|k| {
            registry
                .register(
                    &mut stream,
                    token::token(Kind::Client, k),
                    mio::Interest::READABLE | mio::Interest::WRITABLE,
                )
                .map(|()| {
                    let client = (stream, peer);
                    let params = Arc::clone(&routing.params);
                    let route = Start::new(flow, pool, by_name);
                    Session::new(Arc::clone(&shared), client, route, params, admitted, now)
                })
        });
        let key = match inserted {
            Ok(key) => key,
            Err(e) => {
                undo();
                shared.release();
                self.budget.give(SESSION_FDS);
                if let Some(suppressed) = self.warn.allow(now) {
                    tracing::warn!(listener = %shared.name, suppressed, "cannot register a client socket: {e}");
                }
                return;
            }
        };
        self.run_session(key, registry, now, |s, env| Some(s.start(env)));
    }

    /// Closes a client whose source is refused at the door: counted, logged, and
    /// warned about (at most once a second) when it is a per-source limit; a refusal
    /// by the lists is policy working, not news.
    fn refuse_source(
        &mut self,
        shared: &ListenerShared,
        client: std::net::SocketAddr,
        refused: Refused,
        now: Millis,
    ) {
        self.log_refused(shared, client, End::Rejected, Some(refused.reason()));
        let counter = refused_counter(refused);
        if refused == Refused::Denied {
            counter(shared.stats.shard(self.worker)).inc();
            return;
        }
        self.refused(shared, now, counter, || {
            format!(
                "{client}: {} reached: closing new connection",
                match refused {
                    Refused::SourceRate => "connection_rate_per_source",
                    _ => "max_connections_per_source (or a source table full of busy sources)",
                }
            )
        });
    }

    /// Closes the open connections of `listener` whose source its lists refuse now (a
    /// reload changed them); returns how many.
    pub fn close_denied(&mut self, listener: &Arc<ListenerShared>, now: Millis) -> usize {
        let routing = listener.routing.load();
        let rules = &routing.params.admission;
        let doomed = self.sessions.keys_where(|s| {
            Arc::ptr_eq(s.listener(), listener) && s.source().is_some_and(|ip| !rules.permits(ip))
        });
        let n = doomed.len();
        for key in doomed {
            self.end(key, Ending::Refused(Refused::Denied), now);
        }
        n
    }

    /// Runs `work` on session `key` (if the key still names it: a stale key finds
    /// nothing) and acts on the step it returns.
    fn run_session(
        &mut self,
        key: Key,
        registry: &Registry,
        now: Millis,
        work: impl FnOnce(&mut Session, &mut Env<'_>) -> Option<Step>,
    ) {
        let mut env = Env::new(
            registry,
            key,
            self.worker,
            now,
            (&mut self.buf, &mut self.hello),
            (&mut self.pool, self.kernel.as_mut()),
            &self.grants,
        );
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(step) = work(s, &mut env) {
            self.settle(key, step, now);
        }
    }

    /// Counts a refused connection and logs why (at most once a second; the message is
    /// only built when it is logged).
    fn refused(
        &mut self,
        shared: &ListenerShared,
        now: Millis,
        counter: impl Fn(&ListenerCounters) -> &super::stats::Counter,
        why: impl FnOnce() -> String,
    ) {
        counter(shared.stats.shard(self.worker)).inc();
        if let Some(suppressed) = self.warn.allow(now) {
            tracing::warn!(listener = %shared.name, suppressed, "{}", why());
        }
    }

    /// Acts on what a session said: re-arm its timer, run it again, or end it.
    fn settle(&mut self, key: Key, step: Step, now: Millis) {
        match step {
            Step::End(ending) => return self.end(key, ending, now),
            Step::Again => self.requeue.push(Work::Drive(key)),
            Step::Wait => {}
        }
        if let Some(s) = self.sessions.get_mut(key) {
            let at = s.deadline(now);
            self.timers.arm(s.armed(), at, key);
        }
    }

    /// Ends session `key`: counts and logs why, hands its access-log record over,
    /// closes it, gives its descriptors back.
    fn end(&mut self, key: Key, ending: Ending, now: Millis) {
        let Some(mut s) = self.sessions.remove(key) else {
            return;
        };
        s.count_kernel(self.kernel.as_ref(), self.worker);
        let shared = s.listener();
        let client = s.client();
        let (end, detail) = match &ending {
            Ending::Done => match s.first_eof() {
                Some(Side::Backend) => (End::BackendClosed, None),
                _ => (End::ClientClosed, None),
            },
            Ending::Failed { failed, .. } => match failed {
                Side::Client => (End::ClientReset, None),
                Side::Backend => (End::BackendReset, None),
            },
            Ending::Idle => (End::IdleTimeout, None),
            Ending::NoBackend(c) => {
                self.refused(
                    shared,
                    now,
                    |x| &x.rejected_no_backend,
                    || format!("no backend is up: closing the connection of {c}"),
                );
                (End::NoBackend, None)
            }
            Ending::BackendsFailed { client, attempts } => {
                self.refused(
                    shared,
                    now,
                    |x| &x.rejected_backends_failed,
                    || {
                        format!(
                            "every backend attempt failed ({attempts}): resetting client {client}"
                        )
                    },
                );
                (End::ConnectFailed, None)
            }
            Ending::ProxyHeader(why) => {
                self.refused(
                    shared,
                    now,
                    |x| &x.rejected_proxy_header,
                    || format!("accept_proxy: {why}: closing the connection of {client}"),
                );
                (End::ProxyHeader, None)
            }
            Ending::Local(e) => {
                let fd = crate::sys::is_fd_limit(e);
                let counter: fn(&ListenerCounters) -> &super::stats::Counter = if fd {
                    |x| &x.rejected_fd_limit
                } else {
                    |x| &x.rejected_local_error
                };
                self.refused(shared, now, counter, || {
                    format!("cannot open a backend socket ({e}): resetting client {client}")
                });
                (End::LocalError, fd.then_some("fd_limit"))
            }
            Ending::Refused(refused) => {
                refused_counter(*refused)(shared.stats.shard(self.worker)).inc();
                (End::Rejected, Some(refused.reason()))
            }
            Ending::NoRoom(NoRoom::QueueTimeout) => {
                self.refused(
                    shared,
                    now,
                    |x| &x.rejected_queue_timeout,
                    || format!("{client} waited queue_timeout for a full backend: closing"),
                );
                (End::QueueTimeout, None)
            }
            Ending::NoRoom(NoRoom::QueueFull) => {
                self.refused(
                    shared,
                    now,
                    |x| &x.rejected_queue_full,
                    || format!("{client}: its backend's queue is full (max_queue): closing"),
                );
                (End::Rejected, Some("queue_full"))
            }
            Ending::NoData => {
                self.refused(
                    shared,
                    now,
                    |x| &x.rejected_first_data_timeout,
                    || format!("{client} sent nothing within first_data_timeout: closing"),
                );
                (End::FirstDataTimeout, None)
            }
            // Names nobody routes and bytes that are not TLS are the listener's
            // policy at work (scanners send both): counted, not warned about.
            Ending::NoRoute => {
                shared.stats.shard(self.worker).rejected_no_route.inc();
                (End::Rejected, Some("no_route"))
            }
            Ending::NotTls(why) => {
                tracing::debug!(listener = %shared.name, %client, "{why}: closing (no default pool)");
                shared.stats.shard(self.worker).rejected_not_tls.inc();
                (End::Rejected, Some("not_tls"))
            }
            Ending::SniTimeout => {
                self.refused(
                    shared,
                    now,
                    |x| &x.rejected_sni_timeout,
                    || format!("{client} sent no whole ClientHello within sni_timeout: closing"),
                );
                (End::Rejected, Some("sni_timeout"))
            }
            Ending::ClosedEarly => (End::ClientClosed, None),
            Ending::Aborted => (End::BackendDown, None),
            Ending::Shutdown => (End::Shutdown, None),
        };
        if self.log.wants(end) {
            self.log.send(s.record(end, detail, now));
        }
        if let Some(admitted) = s.admitted() {
            shared.release_source(admitted, client.ip(), now);
        }
        s.close(
            ending.reset(),
            self.worker,
            &mut self.pool,
            self.kernel.as_mut(),
        );
        self.budget.give(SESSION_FDS);
    }

    /// Hands over the record of a connection refused at the door, if wanted.
    fn log_refused(
        &mut self,
        shared: &ListenerShared,
        client: std::net::SocketAddr,
        end: End,
        detail: Option<&'static str>,
    ) {
        if self.log.wants(end) {
            self.log.send(Record::refused(
                &shared.name,
                Proto::Tcp,
                client,
                end,
                detail,
            ));
        }
    }
}

/// The counter of connections refused for `refused`.
fn refused_counter(refused: Refused) -> fn(&ListenerCounters) -> &super::stats::Counter {
    match refused {
        Refused::Denied => |c| &c.rejected_denied,
        Refused::SourceLimit => |c| &c.rejected_source_limit,
        Refused::SourceRate => |c| &c.rejected_source_rate,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::{Backend, HashMode, Snapshot};
    use crate::dataplane::listener::{ListenerParams, Mode, Routing};

    /// A listener whose `max_connections` is 0: every connection accepted is counted
    /// as refused, which counts accepts.
    fn counting_listener(listen: std::net::SocketAddr) -> Arc<ListenerShared> {
        let params = ListenerParams {
            hash: HashMode::FiveTuple,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            unanswered_timeout: Duration::from_secs(60),
            retries: 0,
            max_connections: 0,
            udp_responses: 0,
            forward: Mode::Auto,
            send_proxy: None,
            accept_proxy: false,
            accept_proxy_from: Vec::new(),
            admission: Default::default(),
            source_table_size: 64,
            first_data: None,
            sni_timeout: Duration::from_secs(1),
            queue_timeout: Duration::from_secs(1),
            queue_next: false,
        };
        let backend = Backend {
            id: "b".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            addr_text: "127.0.0.1:1".into(),
            weight: 1,
            set: None,
            backup: false,
            limits: Default::default(),
        };
        let pool = crate::dataplane::PoolShared::detached("t");
        let stats = BackendStats::new("b", "127.0.0.1:1".parse().unwrap(), 1, Arc::clone(&pool));
        let routing = Routing {
            params: Arc::new(params),
            routes: Arc::new(crate::balance::Routes::single(Some(0))),
            pools: vec![Arc::new(crate::dataplane::PoolRouting {
                shared: pool,
                snapshot: Snapshot::new(vec![backend], 16),
                backends: Arc::new(crate::dataplane::BackendTable::new(vec![Arc::new(stats)])),
                loops: false,
                policy: crate::balance::Policy::ring(),
                least: None,
            })],
        };
        Arc::new(ListenerShared::new("t", listen, routing, 1))
    }

    /// The accept-burst risk: when an accept pause ends, one batch is accepted and
    /// the rest waits behind other work (it used to be up to 64 batches at once).
    #[test]
    fn an_accept_pause_ends_with_one_batch_not_a_burst() {
        let poll = mio::Poll::new().unwrap();
        let registry = poll.registry();
        let socket = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let shared = counting_listener(addr);
        let (log, sinks) = crate::accesslog::AccessLog::start(1, None).unwrap();
        let sink = sinks.into_iter().next().unwrap();
        let waker = Arc::new(mio::Waker::new(registry, token::WAKER).unwrap());
        let grants = Arc::new(Grants::new(waker));
        let mut plane = TcpPlane::new(0, 1, FdBudget::new(100_000), sink, grants);
        plane
            .add_listener(socket, Arc::clone(&shared), registry)
            .unwrap();
        plane.requeue.clear();
        let _clients: Vec<std::net::TcpStream> = (0..300)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let key = plane.listeners.iter().next().unwrap().0;
        plane.listeners.get_mut(key).unwrap().pause(0);
        let accepted = || shared.stats.shard(0).rejected_max_connections.get();
        plane.fire_timers(registry, 50);
        assert!(!plane.busy(), "still paused");
        plane.fire_timers(registry, 100);
        assert!(plane.busy(), "the pause ended: one batch queued");
        plane.run_requeued(registry, 100);
        assert_eq!(accepted(), ACCEPT_BATCH as u64);
        assert!(plane.busy(), "the rest waits behind other work");
        let mut rounds = 1;
        while plane.run_requeued(registry, 100) {
            rounds += 1;
        }
        assert_eq!(accepted(), 300);
        assert!(rounds >= 300 / ACCEPT_BATCH, "{rounds} rounds");
        log.stop();
    }
}
