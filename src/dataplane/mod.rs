//! The data plane: worker threads that accept, connect and forward.
//!
//! Each worker owns a mio `Poll` (epoll, edge-triggered), its own `SO_REUSEPORT`
//! listening socket per listener, a slab of sessions, a pipe pool and a scratch buffer.
//! Workers share nothing mutable with each other except one atomic connection counter
//! per listener (for `max_connections`) and relaxed statistics counters. They read
//! backends only from the [`Snapshot`] the control plane publishes in
//! [`ListenerShared::snapshot`], once per new connection, and never see the config.
//!
//! A session's life (see `docs/LIFECYCLE.md`): accepted -> connecting (to the ring's
//! pick; on refusal or `connect_timeout`, to the next distinct backend clockwise, up to
//! `retries` times) -> streaming (two [`forward::Half`]s) -> closed when both directions
//! have passed their EOF on, on an error or reset of either side, or after
//! `idle_timeout` without traffic.

mod accept;
pub mod forward;
pub mod pipes;
mod session;
pub mod token;
mod udp;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use accept::bind_tcp;
pub use udp::bind_udp;

use crate::balance::{HashMode, Snapshot};

/// What a worker needs to know about one listener (built by the control plane).
#[derive(Debug, Clone)]
pub struct ListenerParams {
    /// Listener name, for logs.
    pub name: String,
    /// The configured listen address.
    pub listen: SocketAddr,
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
    pub forward: forward::Mode,
}

/// Counters of one listener, summed over workers (relaxed atomics, off the byte path).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted and handed to a backend.
    pub accepted: AtomicU64,
    /// Connections closed at once because `max_connections` was reached.
    pub rejected_max_connections: AtomicU64,
    /// Connections closed because no backend was up.
    pub rejected_no_backend: AtomicU64,
    /// Connect attempts that failed (refused, timed out, unreachable).
    pub connect_errors: AtomicU64,
    /// Clients that got an error because every attempt failed.
    pub failed: AtomicU64,
    /// UDP flows created.
    pub udp_flows: AtomicU64,
    /// UDP datagrams received from clients.
    pub udp_in: AtomicU64,
    /// UDP datagrams sent back to clients.
    pub udp_out: AtomicU64,
    /// New UDP flows dropped because `udp_max_flows` was reached.
    pub udp_dropped_max_flows: AtomicU64,
    /// New UDP flows dropped because no backend was up.
    pub udp_dropped_no_backend: AtomicU64,
    /// UDP datagrams the kernel would not send (either direction).
    pub udp_dropped_send: AtomicU64,
    /// ICMP errors (port unreachable) reported by backends' UDP sockets.
    pub backend_icmp_errors: AtomicU64,
}

/// A failed connect (TCP) or an ICMP error (UDP) seen on the data path: a passive
/// health check result for the control plane.
#[derive(Debug)]
pub struct PassiveFailure {
    /// Listener index (config order).
    pub listener: usize,
    /// Backend index (snapshot order).
    pub backend: usize,
    /// What happened.
    pub error: String,
}

/// Where a listener's workers report passive failures (absent when passive checks are
/// off). Sending never blocks.
#[derive(Debug, Clone)]
pub struct PassiveSink {
    /// This listener's index.
    pub listener: usize,
    /// The control plane's channel.
    pub tx: tokio::sync::mpsc::UnboundedSender<PassiveFailure>,
}

/// State of one listener shared by the control plane and all workers.
#[derive(Debug)]
pub struct ListenerShared {
    /// Fixed parameters.
    pub params: ListenerParams,
    /// Backends and ring, replaced whole by the control plane.
    pub snapshot: ArcSwap<Snapshot>,
    /// Connections open now, all workers together.
    pub active: AtomicUsize,
    /// Counters.
    pub stats: ListenerStats,
    /// Passive health reports go here, when enabled.
    pub passive: Option<PassiveSink>,
}

impl ListenerShared {
    /// New shared state with an initial snapshot.
    pub fn new(
        params: ListenerParams,
        snapshot: Snapshot,
        passive: Option<PassiveSink>,
    ) -> ListenerShared {
        ListenerShared {
            params,
            snapshot: ArcSwap::from_pointee(snapshot),
            active: AtomicUsize::new(0),
            stats: ListenerStats::default(),
            passive,
        }
    }

    /// Takes one of the listener's `max_connections` (or `udp_max_flows`) slots; false,
    /// taking nothing, when all are in use. Every `true` is matched by one
    /// [`ListenerShared::release`].
    pub fn try_acquire(&self) -> bool {
        if self.active.fetch_add(1, Ordering::Relaxed) >= self.params.max_connections {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back a slot taken by [`ListenerShared::try_acquire`].
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reports a data-plane failure of backend `backend` (no-op when passive checks are off).
    pub fn report_failure(&self, backend: usize, error: &dyn std::fmt::Display) {
        if let Some(p) = &self.passive {
            let _ = p.tx.send(PassiveFailure {
                listener: p.listener,
                backend,
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
    /// Close every open TCP session of listener `listener` to backend `backend`
    /// (`on_down = "close"`).
    CloseBackend {
        /// Listener index.
        listener: usize,
        /// Backend index.
        backend: usize,
    },
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
