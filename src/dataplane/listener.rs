//! What a listener's workers and the control plane share: the listener's settings
//! ([`ListenerParams`]), the [`Routing`] the control plane publishes and workers load
//! once per new connection or flow, the connection count `max_connections` bounds,
//! the counters, and the channel of passive health results.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::admission::{Rules, SourceTable};
use super::stats::{BackendStats, ListenerCounters, Sharded};
use crate::balance::{HashMode, Snapshot};

/// How a listener moves bytes (`forward` in the config).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy small messages, splice bulk data (the default).
    #[default]
    Auto,
    /// Always splice (what HAProxy's `option splice-request/response` does).
    Splice,
    /// Never splice: read/write through the scratch buffer.
    Copy,
    /// The kernel forwards established sessions (sockmap); see `tcp::kernel`.
    Kernel,
}

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
    /// Who is served: access lists and per-source limits.
    pub admission: Rules,
    /// Sources the listener's table tracks at most.
    pub source_table_size: usize,
    /// TCP, `backend_connect = "on-data"`: the backend connection waits for the
    /// client's first byte, this long at most.
    pub first_data: Option<Duration>,
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
    /// Listener name, for logs, metrics and the access log.
    pub name: Arc<str>,
    /// The address it listens on (fixed: a reload that changes it makes a new listener).
    pub listen: SocketAddr,
    /// Settings, backends and ring, replaced whole by the control plane.
    pub routing: ArcSwap<Routing>,
    /// Connections (TCP) or flows (UDP) open now, all workers together.
    pub active: AtomicUsize,
    /// Per-worker counters.
    pub stats: Sharded<ListenerCounters>,
    /// Open connections (or flows) and rates per source, for per-source limits.
    pub sources: SourceTable,
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
            name: name.into(),
            listen,
            sources: SourceTable::new(routing.params.source_table_size, workers),
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
