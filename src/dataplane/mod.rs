//! The data plane: worker threads that accept, connect and forward.
//!
//! Each worker owns a mio `Poll` (epoll, edge-triggered), its own `SO_REUSEPORT`
//! listening socket per listener, a slab of sessions, a pipe pool and a scratch buffer.
//! Workers share nothing mutable with each other except one atomic connection counter
//! per listener (for `max_connections`); each counts into its own shard of the
//! statistics ([`stats`]). They read settings and backends only from the [`Routing`]
//! the control plane publishes in [`ListenerShared::routing`], once per new connection
//! or flow, and never see the config. A reload adds and removes listeners with
//! [`Command`]s; open connections keep the routing they started with.
//!
//! A session's life (see `docs/LIFECYCLE.md`): accepted -> connecting (to the ring's
//! pick; on refusal or `connect_timeout`, to the next distinct backend clockwise, up to
//! `retries` times) -> streaming (two [`forward::Half`]s) -> closed when both directions
//! have passed their EOF on, on an error or reset of either side, or after
//! `idle_timeout` without traffic.

mod budget;
mod ratelimit;
mod socket;
pub mod stats;
mod tcp;
mod timers;
mod token;
mod udp;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use tcp::bind_tcp;
pub use tcp::forward::Mode;
pub use udp::bind_udp;

use crate::balance::{HashMode, Snapshot};
use stats::{BackendStats, ListenerCounters, Sharded};

/// A listener's settings that workers use (built by the control plane; a reload
/// publishes new ones with the next [`Routing`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerParams {
    /// What is hashed onto the ring.
    pub hash: HashMode,
    /// Limit on one connect attempt.
    pub connect_timeout: Duration,
    /// Close connections (TCP) or flows (UDP) idle this long.
    pub idle_timeout: Duration,
    /// Other backends tried after a failed connect.
    pub retries: u32,
    /// Connections (TCP) or flows (UDP) open at once, all workers together.
    pub max_connections: usize,
    /// UDP: replies expected per forwarded datagram before a flow closes (0: no limit).
    pub udp_responses: u32,
    /// Copy, splice, or both.
    pub forward: Mode,
    /// TCP: the PROXY protocol header written to a backend once connected.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// TCP: read a PROXY protocol header first; its addresses stand for the client's.
    pub accept_proxy: bool,
    /// With `accept_proxy`: the peers whose header is read (empty: every peer's).
    pub accept_proxy_from: Vec<ipnet::IpNet>,
}

impl ListenerParams {
    /// Whether a connection from `peer` must start with a PROXY header.
    pub fn expects_header(&self, peer: std::net::IpAddr) -> bool {
        self.accept_proxy
            && (self.accept_proxy_from.is_empty()
                || self.accept_proxy_from.iter().any(|n| n.contains(&peer)))
    }
}

/// Everything a worker reads to place a new connection or flow: replaced whole by the
/// control plane (health transitions, admin calls, reloads), loaded once per new
/// connection or flow.
#[derive(Debug)]
pub struct Routing {
    /// The listener's settings.
    pub params: ListenerParams,
    /// Backends, ring and states.
    pub snapshot: Snapshot,
    /// Counters of each backend, in snapshot order.
    pub backends: Vec<Arc<BackendStats>>,
    /// Whether data-plane failures are reported as passive health results.
    pub passive: bool,
}

/// A failed connect (TCP) or an ICMP error (UDP) seen on the data path: a passive
/// health check result for the control plane.
#[derive(Debug)]
pub struct PassiveFailure {
    /// The listener.
    pub listener: Arc<ListenerShared>,
    /// The backend.
    pub backend: Arc<BackendStats>,
    /// What happened.
    pub error: String,
}

/// State of one listener shared by the control plane and all workers.
#[derive(Debug)]
pub struct ListenerShared {
    /// Listener name, for logs and metrics.
    pub name: String,
    /// The address it listens on (fixed: a reload that changes it makes a new listener).
    pub listen: SocketAddr,
    /// Settings, backends and ring, replaced whole by the control plane.
    pub routing: ArcSwap<Routing>,
    /// Connections (TCP) or flows (UDP) open now, all workers together.
    pub active: AtomicUsize,
    /// Per-worker counters.
    pub stats: Sharded<ListenerCounters>,
    /// Where passive failures go.
    passive: tokio::sync::mpsc::UnboundedSender<PassiveFailure>,
}

impl ListenerShared {
    /// New shared state.
    pub fn new(
        name: &str,
        listen: SocketAddr,
        routing: Routing,
        workers: usize,
        passive: tokio::sync::mpsc::UnboundedSender<PassiveFailure>,
    ) -> ListenerShared {
        ListenerShared {
            name: name.to_string(),
            listen,
            routing: ArcSwap::from_pointee(routing),
            active: AtomicUsize::new(0),
            stats: Sharded::new(workers),
            passive,
        }
    }

    /// Takes one of the listener's `max` connection (or flow) slots; false, taking
    /// nothing, when all are in use. Every `true` is matched by one
    /// [`ListenerShared::release`].
    pub fn try_acquire(&self, max: usize) -> bool {
        if self.active.fetch_add(1, Ordering::Relaxed) >= max {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back a slot taken by [`ListenerShared::try_acquire`].
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reports a data-plane failure of backend `bi` of `routing` (no-op when passive
    /// checks are off).
    pub fn report_failure(
        self: &Arc<Self>,
        routing: &Routing,
        bi: usize,
        error: &dyn std::fmt::Display,
    ) {
        if routing.passive {
            let _ = self.passive.send(PassiveFailure {
                listener: Arc::clone(self),
                backend: Arc::clone(&routing.backends[bi]),
                error: error.to_string(),
            });
        }
    }
}

/// A worker's own bound socket for one listener.
#[derive(Debug)]
pub enum BoundSocket {
    /// From [`bind_tcp`].
    Tcp(std::net::TcpListener),
    /// From [`bind_udp`].
    Udp(std::net::UdpSocket),
}

/// One listener as handed to one worker: its own bound socket plus the shared state.
#[derive(Debug)]
pub struct WorkerListener {
    /// A non-blocking socket bound with `SO_REUSEPORT`.
    pub socket: BoundSocket,
    /// Shared state.
    pub shared: Arc<ListenerShared>,
}

/// Everything a worker starts with.
#[derive(Debug)]
pub struct WorkerParams {
    /// Worker number, for logs and the thread name.
    pub index: usize,
    /// How many workers there are.
    pub workers: usize,
    /// File descriptors this worker may open for traffic (its share of what the
    /// control plane does not reserve).
    pub fd_budget: usize,
    /// Its listeners.
    pub listeners: Vec<WorkerListener>,
}

/// Messages from the control plane.
#[derive(Debug)]
pub enum Command {
    /// Stop accepting; finish open sessions until `deadline`, then close them and exit.
    Drain {
        /// When to give up on open sessions.
        deadline: Instant,
    },
    /// Close every open TCP session of `listener` to `backend` (`on_down = "close"`).
    CloseBackend {
        /// The listener.
        listener: Arc<ListenerShared>,
        /// The backend.
        backend: Arc<BackendStats>,
    },
    /// Start serving a listener added by a reload.
    AddListener(WorkerListener),
    /// Stop accepting on a listener removed by a reload; its open connections and
    /// flows carry on until they end.
    RemoveListener(Arc<ListenerShared>),
}

/// A cloneable way to send commands to a worker.
#[derive(Debug, Clone)]
pub struct WorkerControl {
    waker: Arc<mio::Waker>,
    commands: mpsc::Sender<Command>,
}

impl WorkerControl {
    /// Sends a command and wakes the worker.
    pub fn send(&self, cmd: Command) -> io::Result<()> {
        self.commands
            .send(cmd)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "worker has exited"))?;
        self.waker.wake()
    }
}

/// The control plane's handle on a running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    control: WorkerControl,
    thread: JoinHandle<()>,
}

impl WorkerHandle {
    /// Sends a command and wakes the worker.
    pub fn send(&self, cmd: Command) -> io::Result<()> {
        self.control.send(cmd)
    }

    /// A cloneable command sender for this worker.
    pub fn control(&self) -> WorkerControl {
        self.control.clone()
    }

    /// True when the worker thread has exited.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the worker thread; `Err` if it panicked.
    pub fn join(self) -> std::thread::Result<()> {
        self.thread.join()
    }
}

/// Starts a worker thread.
pub fn spawn(params: WorkerParams) -> io::Result<WorkerHandle> {
    let (tx, rx) = mpsc::channel();
    let (worker, waker) = worker::Worker::new(params, rx)?;
    let name = format!("ringway-w{}", worker.index());
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || worker.run())?;
    Ok(WorkerHandle {
        control: WorkerControl {
            waker,
            commands: tx,
        },
        thread,
    })
}
