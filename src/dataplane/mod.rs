//! The data plane: worker threads that accept, connect and forward.
//!
//! Each worker owns a mio `Poll` (epoll, edge-triggered) and dispatches its events to
//! two planes that own their state (`worker.rs`): the TCP plane (`tcp/`: its own
//! `SO_REUSEPORT` listening sockets, a slab of sessions, a deadline heap, a pipe pool
//! and a scratch buffer) and the UDP plane (`udp/`: the flow table and datagram
//! batches). Tokens name a slot and its generation (`token.rs`). Workers share nothing
//! mutable with each other except one atomic connection counter per listener (for
//! `max_connections`); each counts into its own shard of the statistics ([`stats`])
//! and draws file descriptors from its own budget (`budget.rs`). They read settings and
//! backends only from the [`Routing`] the control plane publishes in
//! [`ListenerShared::routing`], once per new connection or flow, and never see the
//! config. A reload adds and removes listeners with [`Command`]s; open connections keep
//! the routing they started with.
//!
//! A session's life (see `docs/LIFECYCLE.md`): accepted -> connecting (to the ring's
//! pick; on refusal or `connect_timeout`, to the next distinct backend clockwise, up to
//! `retries` times) -> streaming (two directions, `tcp/forward.rs`) -> closed when both
//! directions have passed their EOF on, on an error or reset of either side, or after
//! its `idle_timeout` without traffic.

pub mod admission;
mod budget;
pub mod cluster;
mod command;
pub mod handoff;
mod listener;
pub mod load;
pub mod passive;
mod pool;
mod queue;
mod ratelimit;
mod socket;
pub mod stats;
mod table;
mod tcp;
mod timers;
mod token;
mod udp;
mod worker;

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use command::{BoundSocket, Command, WorkerListener, WorkerParams};
pub use listener::{ListenerParams, ListenerShared, Mode, Routing};
pub use pool::{
    passive_channel, PassiveFailure, PassiveReceiver, PassiveSender, PoolRouting, PoolShared,
};
pub use socket::steer_by_cpu;
pub use table::BackendTable;
pub use tcp::bind_tcp;
/// One direction of a TCP session, public for `benches/forward.rs`.
pub use tcp::forward;
pub use tcp::kernel;
pub use udp::bind_udp;
/// `forward = "kernel"` for UDP flows.
pub use udp::kernel as udp_kernel;

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
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
    index: usize,
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

    /// The worker's number.
    pub fn index(&self) -> usize {
        self.index
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
    let cpu = params.cpu;
    let (worker, waker) = worker::Worker::new(params, rx)?;
    let index = worker.index();
    let name = format!("ringway-w{index}");
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        if let Some(cpu) = cpu {
            if let Err(e) = pin(cpu) {
                tracing::warn!(worker = worker.index(), "cannot pin to CPU {cpu}: {e}");
            }
        }
        worker.run()
    })?;
    Ok(WorkerHandle {
        control: WorkerControl {
            waker,
            commands: tx,
        },
        thread,
        index,
    })
}
