//! The worker's event loop: a small dispatcher. It owns the poll and the clock, hands
//! each event to the plane its token names ([`TcpPlane`] or [`UdpPlane`]) together
//! with the registry and the time, runs what the planes left over, fires their timers
//! and serves the control plane's commands.

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Waker};

use super::budget::FdBudget;
use super::command::{BoundSocket, Command, WorkerListener, WorkerParams};
use super::listener::ListenerShared;
use super::load::Grants;
use super::tcp::TcpPlane;
use super::timers::{millis, Millis};
use super::token::{self, Kind};
use super::udp::UdpPlane;

/// Events taken from epoll per wait.
const EVENTS: usize = 1024;

/// Longest sleep when nothing is due (commands wake the worker anyway).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// A data-plane worker. Owns everything it touches.
#[derive(Debug)]
pub(super) struct Worker {
    /// Worker number: also which counter shard this worker writes.
    index: usize,
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    tcp: TcpPlane,
    udp: UdpPlane,
    /// Time zero of [`Millis`] (the same for every worker).
    epoch: Instant,
    drain_deadline: Option<Millis>,
    /// Draining for an upgrade: where established sessions go.
    export: Option<super::handoff::Exporter>,
    /// Its share of file descriptors (the planes hold clones).
    budget: FdBudget,
}

impl Worker {
    /// A worker with `params`' listeners, taking commands from `commands`; the waker
    /// is how the control plane gets its attention.
    pub fn new(
        params: WorkerParams,
        commands: mpsc::Receiver<Command>,
    ) -> io::Result<(Worker, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let budget = FdBudget::new(params.fd_budget);
        let epoch = params.epoch;
        let grants = Arc::new(Grants::new(Arc::clone(&waker)));
        let mut worker = Worker {
            index: params.index,
            tcp: TcpPlane::new(
                params.index,
                params.workers,
                budget.clone(),
                params.access_log.clone(),
                grants,
            ),
            udp: UdpPlane::new(params.index, budget.clone(), params.access_log),
            poll,
            commands,
            epoch,
            drain_deadline: None,
            export: None,
            budget,
        };
        if let Some(maps) = params.kernel {
            worker.tcp.set_kernel(maps);
        }
        if let Some(flows) = params.udp_kernel {
            worker.udp.set_kernel(flows);
        }
        for l in params.listeners {
            worker.add_listener(l, params.hold_udp)?;
        }
        Ok((worker, waker))
    }

    /// Its number.
    pub fn index(&self) -> usize {
        self.index
    }

    fn now(&self) -> Millis {
        millis(self.epoch.elapsed())
    }

    /// Runs until drained.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        tracing::debug!(worker = self.index, "worker started");
        let mut now = self.now();
        let panics = injected_panic(self.index);
        loop {
            let timeout = self.next_wakeup(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.index, "epoll_wait failed: {e}");
                    break;
                }
            }
            now = self.now();
            for event in events.iter() {
                if panics && !matches!(token::decode(event.token()), Some((Kind::Waker, _))) {
                    panic!("injected by RINGWAY_TEST_PANIC_WORKER");
                }
                self.dispatch(event, now);
            }
            let registry = self.poll.registry();
            self.tcp.run_requeued(registry, now);
            self.udp.run_requeued(registry, now);
            self.udp.flush_replies();
            self.tcp.fire_timers(registry, now);
            self.udp.fire_timers(registry, now);
            if let Some(export) = &self.export {
                self.tcp.export(export, registry, now);
            }
            if let Some(deadline) = self.drain_deadline {
                if self.tcp.sessions() == 0 || now >= deadline {
                    break;
                }
            }
        }
        let left = self.tcp.sessions();
        self.tcp.close_all(self.now());
        // Slots granted to sessions that are gone now go back.
        self.tcp.take_grants(self.poll.registry(), self.now());
        tracing::debug!(worker = self.index, closed = left, "worker stopped");
    }

    /// How long the next wait may last, from `now` (the time this loop pass started:
    /// waking a little late for a deadline is harmless, reading the clock twice a pass
    /// is not free).
    fn next_wakeup(&self, now: Millis) -> Duration {
        if self.tcp.busy() || self.udp.busy() {
            return Duration::ZERO;
        }
        let due = [
            self.tcp.next_deadline(),
            self.udp.next_deadline(),
            self.drain_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        match due {
            // Round up so a sub-millisecond wait is not a busy loop.
            Some(at) => Duration::from_millis(at.saturating_sub(now) + 1).min(MAX_WAIT),
            None => MAX_WAIT,
        }
    }

    /// Hands one event to the plane its token names. A token no plane made (there
    /// are none) is ignored; stale tokens are answered by nobody (see [`token`]).
    fn dispatch(&mut self, event: &Event, now: Millis) {
        let Some((kind, key)) = token::decode(event.token()) else {
            return;
        };
        let registry = self.poll.registry();
        match kind {
            Kind::Waker => {
                self.commands(now);
                self.tcp.take_grants(self.poll.registry(), now);
            }
            Kind::TcpListener | Kind::Client | Kind::Backend => {
                self.tcp.on_event(kind, key, event, registry, now)
            }
            Kind::UdpListener | Kind::Flow => self.udp.on_event(kind, key, registry, now),
        }
    }

    fn add_listener(&mut self, l: WorkerListener, hold_udp: bool) -> io::Result<()> {
        let registry = self.poll.registry();
        match l.socket {
            BoundSocket::Tcp(s) => self.tcp.add_listener(s, l.shared, registry),
            BoundSocket::Udp(s) => self.udp.add_listener(s, l.shared, registry, hold_udp),
        }
    }

    fn remove_listener(&mut self, shared: &Arc<ListenerShared>, now: Millis) {
        let registry = self.poll.registry();
        self.tcp.remove_listener(shared, registry, now);
        self.udp.remove_listener(shared, registry, now);
    }

    fn commands(&mut self, now: Millis) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Drain { deadline, export } => {
                    let registry = self.poll.registry();
                    self.tcp.close_listeners(registry, now);
                    if let Some(export) = &export {
                        let n = self.tcp.export(export, registry, now);
                        let f = self.udp.export(export, registry, now);
                        let _ = export.send(super::handoff::Handed::FlowsDone);
                        tracing::debug!(
                            worker = self.index,
                            sessions = n,
                            flows = f,
                            "handed over"
                        );
                    }
                    self.export = export;
                    // Without its listener socket a flow cannot reply: flows end now
                    // (unless handed over just above).
                    self.udp.close_all(registry, now);
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.drain_deadline = Some(now + millis(left));
                    tracing::debug!(worker = self.index, open = self.tcp.sessions(), "draining");
                }
                Command::AddListener(l) => {
                    let name = l.shared.name.clone();
                    if let Err(e) = self.add_listener(l, false) {
                        tracing::error!(worker = self.index, listener = %name, "cannot add listener: {e}");
                    }
                }
                Command::RemoveListener(shared) => self.remove_listener(&shared, now),
                Command::StartUdp => self.udp.start_held(self.poll.registry()),
                Command::Adopt(handed) => {
                    let registry = self.poll.registry();
                    for a in handed {
                        match a.exported.state {
                            super::handoff::State::Session(_) => self.tcp.adopt(a, registry, now),
                            super::handoff::State::Flow(_) => self.udp.adopt(a, registry, now),
                        }
                    }
                }
                Command::ListFlows(to) => {
                    let _ = to.send(self.udp.flow_keys());
                }
                Command::FdBudget(limit) => {
                    tracing::debug!(
                        worker = self.index,
                        from = self.budget.limit(),
                        to = limit,
                        "file descriptor share"
                    );
                    self.budget.set_limit(limit);
                }
                Command::Recheck(listener) => {
                    // Its flows in the kernel come back: each is checked at its next
                    // datagram, as in userspace mode.
                    self.udp.recheck(&listener, now);
                    let n = self.tcp.close_denied(&listener, now);
                    if n > 0 {
                        tracing::info!(
                            worker = self.index,
                            listener = %listener.name,
                            closed = n,
                            "closed connections whose source the reloaded allow/deny lists refuse"
                        );
                    }
                }
                Command::CloseBackend { backend } => {
                    let n = self.tcp.close_backend(&backend, now);
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

/// Fault injection for the test that a worker's panic is noticed (debug builds only:
/// a release binary has no such switch): worker `RINGWAY_TEST_PANIC_WORKER` panics at
/// its first event.
fn injected_panic(index: usize) -> bool {
    cfg!(debug_assertions)
        && std::env::var("RINGWAY_TEST_PANIC_WORKER")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            == Some(index)
}
