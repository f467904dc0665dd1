//! The worker's event loop: wait, dispatch by token, run timers and the sweep.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use super::accept::ACCEPT_BATCH;
use super::forward::Scratch;
use super::session::{Close, Session, HEADER_TIMER};
use super::token::{self, Side, Target};
use super::udp::{Flow, FlowKey, UdpListener, BATCH, SLOT};
use super::{BoundSocket, Command, ListenerShared, WorkerListener, WorkerParams};
use crate::sys::mmsg::Batch;

/// Events taken from epoll per wait.
const EVENTS: usize = 1024;

/// Longest wait between sweeps (idle timeouts and pipe recycling).
const MAX_SWEEP: Duration = Duration::from_secs(1);

/// Shortest wait between sweeps, whatever the idle timeout.
const MIN_SWEEP: Duration = Duration::from_millis(50);

/// How long a listener pauses after `accept` fails for lack of resources.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A connect deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    pub deadline: Instant,
    pub session: usize,
    pub id: u64,
    pub attempt: u32,
}

/// One listener inside a worker: a TCP listening socket or a UDP socket (with its reply
/// batch); both `None` once draining.
#[derive(Debug)]
pub(super) struct Slot {
    pub socket: Option<mio::net::TcpListener>,
    pub udp: Option<UdpListener>,
    pub shared: Arc<ListenerShared>,
    pub paused_until: Option<Instant>,
    /// Removed by a reload: accepts nothing new; freed once `open` is 0.
    pub retired: bool,
    /// Sessions and flows of this slot still open.
    pub open: usize,
}

impl Slot {
    fn new(l: WorkerListener, poll: &Poll, token: mio::Token) -> io::Result<Slot> {
        let (tcp, udp) = match l.socket {
            BoundSocket::Tcp(s) => {
                let mut socket = mio::net::TcpListener::from_std(s);
                poll.registry()
                    .register(&mut socket, token, Interest::READABLE)?;
                (Some(socket), None)
            }
            BoundSocket::Udp(s) => {
                let mut socket = mio::net::UdpSocket::from_std(s);
                poll.registry()
                    .register(&mut socket, token, Interest::READABLE)?;
                (
                    None,
                    Some(UdpListener::new(socket, l.shared.routing.load_full())),
                )
            }
        };
        Ok(Slot {
            socket: tcp,
            udp,
            shared: l.shared,
            paused_until: None,
            retired: false,
            open: 0,
        })
    }

    /// A retired slot with nothing open: its place can be reused.
    fn is_free(&self) -> bool {
        self.retired && self.open == 0
    }
}

/// Allows one log line per second and counts the ones it held back.
#[derive(Debug, Default)]
pub(super) struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(suppressed since the last allowed line)` when a line may be logged now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A data-plane worker. Owns everything it touches.
#[derive(Debug)]
pub(super) struct Worker {
    /// Worker number: also which counter shard this worker writes.
    pub index: usize,
    pub poll: Poll,
    commands: mpsc::Receiver<Command>,
    pub listeners: Vec<Slot>,
    pub sessions: Slab<Session>,
    pub flows: Slab<Flow>,
    /// (listener, client, local address when the listener binds a wildcard) -> flow.
    pub flow_index: HashMap<FlowKey, usize>,
    /// Receive batch for UDP listeners (only allocated when the worker has one).
    pub recv_batch: Option<Batch>,
    pub scratch: Scratch,
    pub timers: BinaryHeap<Reverse<Timer>>,
    /// Work left over by a budget or batch limit, done before the next wait.
    requeue: Vec<Target>,
    pub now: Instant,
    next_sweep: Instant,
    sweep_every: Duration,
    pub next_id: u64,
    drain_deadline: Option<Instant>,
    pub warn_limit: RateLimit,
}

impl Worker {
    pub fn new(
        params: WorkerParams,
        commands: mpsc::Receiver<Command>,
    ) -> io::Result<(Worker, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let mut listeners = Vec::with_capacity(params.listeners.len());
        for (i, l) in params.listeners.into_iter().enumerate() {
            listeners.push(Slot::new(l, &poll, token::listener(i))?);
        }
        let any_udp = listeners.iter().any(|l| l.udp.is_some());
        let sweep_every = sweep_interval(&listeners, &idle_timeouts(&listeners));
        let now = Instant::now();
        let worker = Worker {
            index: params.index,
            poll,
            commands,
            listeners,
            sessions: Slab::with_capacity(1024),
            flows: Slab::new(),
            flow_index: HashMap::new(),
            recv_batch: any_udp.then(|| Batch::with_pktinfo(BATCH, SLOT)),
            scratch: Scratch::new(),
            timers: BinaryHeap::new(),
            requeue: Vec::new(),
            now,
            next_sweep: now + sweep_every,
            sweep_every,
            next_id: 0,
            drain_deadline: None,
            warn_limit: RateLimit::default(),
        };
        Ok((worker, waker))
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// Runs until drained.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        tracing::debug!(worker = self.index, "worker started");
        loop {
            let timeout = self.next_wakeup();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.index, "epoll_wait failed: {e}");
                    break;
                }
            }
            self.now = Instant::now();
            for event in events.iter() {
                self.dispatch(event);
            }
            for target in std::mem::take(&mut self.requeue) {
                self.redo(target);
            }
            self.flush_replies();
            self.fire_timers();
            if self.now >= self.next_sweep {
                self.sweep();
            }
            if let Some(deadline) = self.drain_deadline {
                if self.sessions.is_empty() || self.now >= deadline {
                    break;
                }
            }
        }
        let left = self.sessions.len();
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close(k, Close::Normal);
        }
        tracing::debug!(worker = self.index, closed = left, "worker stopped");
    }

    fn next_wakeup(&self) -> Duration {
        if !self.requeue.is_empty() {
            return Duration::ZERO;
        }
        let mut at = self.next_sweep;
        if let Some(Reverse(t)) = self.timers.peek() {
            at = at.min(t.deadline);
        }
        if let Some(d) = self.drain_deadline {
            at = at.min(d);
        }
        for l in &self.listeners {
            if let Some(p) = l.paused_until {
                at = at.min(p);
            }
        }
        // Round up so a sub-millisecond wait is not a busy loop.
        at.saturating_duration_since(Instant::now()) + Duration::from_micros(500)
    }

    fn dispatch(&mut self, event: &Event) {
        match token::decode(event.token()) {
            Target::Waker => self.commands(),
            Target::Listener(li) => {
                let ready = self
                    .listeners
                    .get(li)
                    .is_some_and(|l| l.paused_until.is_none());
                if ready && self.listener_ready(li) {
                    self.requeue.push(Target::Listener(li));
                }
            }
            Target::Flow(key) => {
                if self.flow_readable(key) {
                    self.requeue.push(Target::Flow(key));
                }
            }
            Target::Session(key, side) => {
                let Some(s) = self.sessions.get_mut(key) else {
                    return;
                };
                let ready = match side {
                    Side::Client => &mut s.client_ready,
                    Side::Backend => &mut s.backend_ready,
                };
                let err = event.is_error();
                if event.is_readable() || event.is_read_closed() || err {
                    ready.read = true;
                }
                if event.is_read_closed() || err {
                    ready.hup = true;
                }
                if event.is_writable() || event.is_write_closed() || err {
                    ready.write = true;
                }
                if let Some(c) = s.connecting.as_ref() {
                    if side == Side::Backend {
                        self.check_connect(
                            key,
                            event.is_writable() && !err && !event.is_write_closed(),
                            false,
                        );
                    } else if c.awaiting_header && s.client_ready.read {
                        self.read_header(key);
                    }
                } else {
                    self.drive(key);
                }
            }
        }
    }

    fn redo(&mut self, target: Target) {
        match target {
            Target::Listener(li) => {
                if self.listener_ready(li) {
                    self.requeue.push(target);
                }
            }
            Target::Flow(key) => {
                if self.flow_readable(key) {
                    self.requeue.push(target);
                }
            }
            Target::Session(key, _) => self.drive(key),
            Target::Waker => {}
        }
    }

    /// A listening socket is readable: accept (TCP) or read datagrams (UDP). True when
    /// it stopped at its budget with more waiting.
    fn listener_ready(&mut self, li: usize) -> bool {
        if self.listeners[li].udp.is_some() {
            self.udp_readable(li)
        } else {
            self.accept(li)
        }
    }

    pub(super) fn requeue_session(&mut self, key: usize) {
        self.requeue.push(Target::Session(key, Side::Client));
    }

    pub(super) fn pause_accept(&mut self, li: usize) {
        self.listeners[li].paused_until = Some(self.now + ACCEPT_PAUSE);
    }

    fn fire_timers(&mut self) {
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if t.deadline > self.now {
                break;
            }
            self.timers.pop();
            let Some(c) = self
                .sessions
                .get(t.session)
                .filter(|s| s.id == t.id)
                .and_then(|s| s.connecting.as_ref())
            else {
                continue;
            };
            if c.awaiting_header {
                if t.attempt == HEADER_TIMER {
                    self.reject_header(
                        t.session,
                        "no complete PROXY header within connect_timeout",
                    );
                }
            } else if c.attempt == t.attempt {
                self.check_connect(t.session, false, true);
            }
        }
        for li in 0..self.listeners.len() {
            if self.listeners[li]
                .paused_until
                .is_some_and(|p| p <= self.now)
            {
                self.listeners[li].paused_until = None;
                // Edge-triggered: connections queued meanwhile raised no new event.
                for _ in 0..ACCEPT_BATCH {
                    if !self.accept(li) {
                        break;
                    }
                }
            }
        }
    }

    /// Closes idle sessions and recycles pipes of idle directions.
    fn sweep(&mut self) {
        // One routing load per listener gives both the idle timeouts and the next pace.
        let idle = idle_timeouts(&self.listeners);
        self.sweep_every = sweep_interval(&self.listeners, &idle);
        self.next_sweep = self.now + self.sweep_every;
        let now = self.now;
        let mut expired = Vec::new();
        for (key, s) in self.sessions.iter_mut() {
            if s.connecting.is_some() {
                continue;
            }
            if now.duration_since(s.last_active) >= idle[s.listener] {
                expired.push(key);
                continue;
            }
            s.up.sweep(&mut self.scratch.pool);
            s.down.sweep(&mut self.scratch.pool);
        }
        for key in expired {
            self.close(key, Close::Normal);
        }
        self.expire_flows(&idle);
    }

    /// One connection or flow of slot `li` ended: free the slot if it was the last of a
    /// retired listener.
    pub(super) fn slot_closed(&mut self, li: usize) {
        let slot = &mut self.listeners[li];
        slot.open -= 1;
        if slot.is_free() {
            if let Some(mut udp) = slot.udp.take() {
                let _ = self.poll.registry().deregister(&mut udp.socket);
            }
        }
    }

    fn add_listener(&mut self, l: WorkerListener) {
        let li = self
            .listeners
            .iter()
            .position(Slot::is_free)
            .unwrap_or(self.listeners.len());
        let name = l.shared.name.clone();
        match Slot::new(l, &self.poll, token::listener(li)) {
            Ok(slot) => {
                if slot.udp.is_some() && self.recv_batch.is_none() {
                    self.recv_batch = Some(Batch::with_pktinfo(BATCH, SLOT));
                }
                if li == self.listeners.len() {
                    self.listeners.push(slot);
                } else {
                    self.listeners[li] = slot;
                }
                self.sweep_every = sweep_interval(&self.listeners, &idle_timeouts(&self.listeners));
                // Edge-triggered: connections queued before registration raise no event.
                self.requeue.push(Target::Listener(li));
            }
            Err(e) => {
                tracing::error!(worker = self.index, listener = %name, "cannot add listener: {e}")
            }
        }
    }

    fn remove_listener(&mut self, shared: &Arc<ListenerShared>) {
        let Some(li) = self
            .listeners
            .iter()
            .position(|l| !l.retired && Arc::ptr_eq(&l.shared, shared))
        else {
            return;
        };
        // Take every connection already queued: closing a listening socket resets them.
        if self.listeners[li].socket.is_some() {
            while self.accept(li) {}
        }
        let slot = &mut self.listeners[li];
        slot.retired = true;
        slot.paused_until = None;
        if let Some(mut socket) = slot.socket.take() {
            let _ = self.poll.registry().deregister(&mut socket);
        }
        // A UDP socket stays until its flows end: their replies leave from it.
        if slot.open == 0 {
            if let Some(mut udp) = slot.udp.take() {
                let _ = self.poll.registry().deregister(&mut udp.socket);
            }
        }
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Drain { deadline } => {
                    for slot in &mut self.listeners {
                        if let Some(mut socket) = slot.socket.take() {
                            let _ = self.poll.registry().deregister(&mut socket);
                        }
                        if let Some(mut udp) = slot.udp.take() {
                            let _ = self.poll.registry().deregister(&mut udp.socket);
                        }
                    }
                    // Without its listener socket a flow cannot reply: flows end now.
                    self.close_all_flows();
                    self.drain_deadline = Some(deadline);
                    tracing::debug!(worker = self.index, open = self.sessions.len(), "draining");
                }
                Command::AddListener(l) => self.add_listener(l),
                Command::RemoveListener(shared) => self.remove_listener(&shared),
                Command::CloseBackend { listener, backend } => {
                    let listeners = &self.listeners;
                    let doomed: Vec<usize> = self
                        .sessions
                        .iter()
                        .filter(|(_, s)| {
                            Arc::ptr_eq(&listeners[s.listener].shared, &listener)
                                && s.connecting.is_none()
                                && s.target.as_ref().is_some_and(|t| Arc::ptr_eq(t, &backend))
                        })
                        .map(|(k, _)| k)
                        .collect();
                    let n = doomed.len();
                    for k in doomed {
                        self.close(k, Close::Reset(Side::Client));
                    }
                    if n > 0 {
                        tracing::info!(
                            worker = self.index,
                            closed = n,
                            "closed connections to a backend marked down"
                        );
                    }
                }
            }
        }
    }
}

/// Each listener's idle timeout (TCP connections, UDP flows), by slot.
fn idle_timeouts(listeners: &[Slot]) -> Vec<Duration> {
    listeners
        .iter()
        .map(|l| l.shared.routing.load().params.idle_timeout)
        .collect()
}

/// How often to sweep: an eighth of the shortest idle timeout of the slots in use,
/// within bounds.
fn sweep_interval(listeners: &[Slot], idle: &[Duration]) -> Duration {
    listeners
        .iter()
        .zip(idle)
        .filter(|(l, _)| !l.is_free())
        .map(|(_, &t)| t / 8)
        .fold(MAX_SWEEP, Duration::min)
        .max(MIN_SWEEP)
}
