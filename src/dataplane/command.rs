//! What the control plane hands workers: their sockets at start, and commands later.

use std::sync::Arc;
use std::time::Instant;

use super::listener::ListenerShared;
use super::stats::BackendStats;

/// A worker's own bound socket for one listener.
#[derive(Debug)]
pub enum BoundSocket {
    /// From [`bind_tcp`](super::bind_tcp).
    Tcp(std::net::TcpListener),
    /// From [`bind_udp`](super::bind_udp).
    Udp(std::net::UdpSocket),
}

impl BoundSocket {
    /// Its descriptor.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            BoundSocket::Tcp(s) => s.as_fd(),
            BoundSocket::Udp(s) => s.as_fd(),
        }
    }
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
    /// Where its access-log records go.
    pub access_log: crate::accesslog::Sink,
    /// The CPU to pin the worker's thread to (`worker_cpu_affinity`).
    pub cpu: Option<usize>,
    /// Time zero of every worker's clock: per-source rates are shared by workers, so
    /// their times must agree.
    pub epoch: Instant,
    /// Its handles on the kernel-forwarding maps, when the program is loaded.
    pub kernel: Option<super::tcp::kernel::Maps>,
    /// Its handle on the UDP kernel path's maps, when that program is loaded.
    pub udp_kernel: Option<super::udp::kernel::Flows>,
    /// Started by an upgrade: its UDP listeners are not read until
    /// [`Command::StartUdp`] (the old process's flows come first).
    pub hold_udp: bool,
}

/// Messages from the control plane.
#[derive(Debug)]
pub enum Command {
    /// Stop accepting; finish open sessions until `deadline`, then close them and exit.
    Drain {
        /// When to give up on open sessions.
        deadline: Instant,
        /// An upgrade: hand every established session here instead of finishing it
        /// (those still connecting go once established).
        export: Option<super::handoff::Exporter>,
    },
    /// Take over sessions and flows another process handed over (an upgrade).
    Adopt(Vec<super::handoff::Adopted>),
    /// Start reading the UDP listeners held at start (`WorkerParams::hold_udp`).
    StartUdp,
    /// Close every open TCP session to `backend` (`on_down = "close"`).
    CloseBackend {
        /// The backend.
        backend: Arc<BackendStats>,
    },
    /// Start serving a listener added by a reload.
    AddListener(WorkerListener),
    /// A reload changed `listener`'s `allow`/`deny`: close its open TCP connections
    /// whose source the new lists refuse (UDP flows are checked at their next
    /// datagram).
    Recheck(Arc<ListenerShared>),
    /// Stop accepting on a listener removed by a reload; its open connections and
    /// flows carry on until they end.
    RemoveListener(Arc<ListenerShared>),
    /// A reload changed the control plane's reserve: this is the worker's new share
    /// of file descriptors.
    FdBudget(usize),
    /// Send the worker's open UDP flows (client, the address it sends to) here
    /// (`[cluster]`: a leaving node tells its peers).
    ListFlows(std::sync::mpsc::Sender<Vec<(std::net::SocketAddr, std::net::SocketAddr)>>),
}
