//! What a listener's workers and the control plane share: the listener's settings
//! ([`ListenerParams`]), the [`Routing`] the control plane publishes and workers load
//! once per new connection or flow, the connection count `max_connections` bounds,
//! the counters, and the channel of passive health results.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::admission::{Rules, SourceTable};
use super::passive;
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
    /// UDP: close flows their backend never answered after this long idle (they are
    /// also the first to go when the flow table is full).
    pub unanswered_timeout: Duration,
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
    /// Whether data-plane failures are reported as passive health results.
    pub passive: bool,
    /// Some backends are held out because their address is ringway's own: a
    /// connection that finds no other is refused as `loop`, not `no_backend`.
    pub loops: bool,
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
/// connection or flow. Its parts that change only with a reload (settings, the
/// backends' counters) are shared between routings; a connection keeps only those
/// (never a snapshot), so routings published while connections are open cost no
/// memory once they are replaced.
#[derive(Debug)]
pub struct Routing {
    /// The listener's settings.
    pub params: Arc<ListenerParams>,
    /// Backends, ring and states.
    pub snapshot: Snapshot,
    /// Counters of each backend, in snapshot order.
    pub backends: Arc<BackendTable>,
}

/// The counters of a routing's backends, in snapshot order, and the index of each.
#[derive(Debug, Default)]
pub struct BackendTable {
    stats: Vec<Arc<BackendStats>>,
    /// Index by the counters' address (identity: a backend a reload replaced is not
    /// found).
    index: HashMap<usize, usize>,
}

impl BackendTable {
    /// The table of `stats`, in snapshot order.
    pub fn new(stats: Vec<Arc<BackendStats>>) -> BackendTable {
        let index = stats
            .iter()
            .enumerate()
            .map(|(i, s)| (Arc::as_ptr(s) as usize, i))
            .collect();
        BackendTable { stats, index }
    }

    /// The index of these counters, if they are one of these backends'.
    pub fn position(&self, stats: &Arc<BackendStats>) -> Option<usize> {
        self.index.get(&(Arc::as_ptr(stats) as usize)).copied()
    }

    /// The backends' counters, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<BackendStats>> {
        self.stats.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.stats.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }
}

impl std::ops::Index<usize> for BackendTable {
    type Output = Arc<BackendStats>;

    fn index(&self, i: usize) -> &Arc<BackendStats> {
        &self.stats[i]
    }
}

/// "A backend of this listener has failures to take": the message a worker sends
/// when a backend's data-path failure count leaves zero (see [`super::passive`]).
#[derive(Debug)]
pub struct PassiveFailure {
    /// The listener.
    pub listener: Arc<ListenerShared>,
    /// The backend.
    pub backend: Arc<BackendStats>,
}

/// The sending end of passive failures (workers).
pub type PassiveSender = tokio::sync::mpsc::Sender<PassiveFailure>;
/// The receiving end of passive failures (the control plane).
pub type PassiveReceiver = tokio::sync::mpsc::Receiver<PassiveFailure>;

/// A bounded channel for passive failures.
pub fn passive_channel() -> (PassiveSender, PassiveReceiver) {
    tokio::sync::mpsc::channel(passive::CHANNEL)
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
    passive: PassiveSender,
    /// Set when a passive failure's message did not fit in the channel.
    pub passive_lost: passive::Lost,
}

impl ListenerShared {
    /// New shared state.
    pub fn new(
        name: &str,
        listen: SocketAddr,
        routing: Routing,
        workers: usize,
        passive: PassiveSender,
    ) -> ListenerShared {
        ListenerShared {
            name: name.into(),
            listen,
            sources: SourceTable::new(routing.params.source_table_size, workers),
            routing: ArcSwap::from_pointee(routing),
            active: AtomicUsize::new(0),
            stats: Sharded::new(workers),
            passive,
            passive_lost: passive::Lost::default(),
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

    /// Reports a data-plane failure of `backend` (no-op when the listener's passive
    /// checks are off): counted into the backend, and the control plane told when
    /// nobody has yet (see [`super::passive`]). Never waits.
    pub fn report_failure(
        self: &Arc<Self>,
        params: &ListenerParams,
        backend: &Arc<BackendStats>,
        error: &std::io::Error,
    ) {
        if params.passive && backend.failures.record(error) {
            let sent = self.passive.try_send(PassiveFailure {
                listener: Arc::clone(self),
                backend: Arc::clone(backend),
            });
            if sent.is_err() {
                self.passive_lost.mark();
            }
        }
    }
}
