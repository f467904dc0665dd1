//! What a listener's workers and the control plane share: the listener's settings
//! ([`ListenerParams`]), the [`Routing`] the control plane publishes and workers load
//! once per new connection or flow (its routes and the routings of its pools), the
//! connection count `max_connections` bounds, the counters, and the channel of
//! passive health results.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::admission::{Rules, SourceTable};
use super::pool::{PoolRouting, PoolShared};
use super::stats::{ListenerCounters, Sharded};
use crate::balance::{HashMode, Routes};

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
    /// `route_by = "sni"`: how long a client may take to send its hello.
    pub sni_timeout: Duration,
    /// How long a connection may wait in a full backend's queue (`queue_timeout`).
    pub queue_timeout: Duration,
    /// Past it (or with the queue full), try the next backend that has room
    /// (`queue_overflow = "next"`) instead of closing.
    pub queue_next: bool,
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
/// connection or flow. Its parts that change only with a reload (settings, routes,
/// the backends' counters) are shared between routings; a connection keeps only
/// those (never a snapshot), so routings published while connections are open cost no
/// memory once they are replaced.
#[derive(Debug)]
pub struct Routing {
    /// The listener's settings.
    pub params: Arc<ListenerParams>,
    /// Which pool a connection goes to (a slot of `pools`).
    pub routes: Arc<Routes>,
    /// The pools it routes to, by slot.
    pub pools: Vec<Arc<PoolRouting>>,
}

impl Routing {
    /// The pool for server name `name` (or none): its slot and routing.
    pub fn route(&self, name: Option<&str>) -> Option<(usize, &PoolRouting)> {
        let slot = self.routes.pick(name)?;
        Some((slot, self.pools.get(slot)?))
    }

    /// Pool `pool` in this routing, looked for at `slot` first (where it was when a
    /// connection was routed): a reload may have moved or removed it.
    pub fn find(&self, slot: usize, pool: &Arc<PoolShared>) -> Option<(usize, &PoolRouting)> {
        match self.pools.get(slot) {
            Some(p) if Arc::ptr_eq(&p.shared, pool) => Some((slot, p)),
            _ => self
                .pools
                .iter()
                .enumerate()
                .find(|(_, p)| Arc::ptr_eq(&p.shared, pool))
                .map(|(i, p)| (i, &**p)),
        }
    }
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
}

impl ListenerShared {
    /// New shared state.
    pub fn new(name: &str, listen: SocketAddr, routing: Routing, workers: usize) -> ListenerShared {
        ListenerShared {
            name: name.into(),
            listen,
            sources: SourceTable::new(routing.params.source_table_size, workers),
            routing: ArcSwap::from_pointee(routing),
            active: AtomicUsize::new(0),
            stats: Sharded::new(workers),
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

    /// Gives back the place `admitted` holds for `ip` in its per-source table (a
    /// connection or flow ended, or left: an upgrade).
    pub fn release_source(
        &self,
        admitted: super::admission::Admitted,
        ip: std::net::IpAddr,
        now: super::timers::Millis,
    ) {
        let routing = self.routing.load();
        routing
            .params
            .admission
            .release(&self.sources, admitted, ip, now);
    }

    /// Takes a place for `ip` in the per-source table again (a connection or flow an
    /// upgrade handed over; one the table refuses now goes on without).
    pub fn readmit_source(
        &self,
        ip: std::net::IpAddr,
        now: super::timers::Millis,
    ) -> Option<super::admission::Admitted> {
        let routing = self.routing.load();
        routing
            .params
            .admission
            .admit(&self.sources, ip, now)
            .ok()
            .flatten()
    }

    /// Takes a slot whatever `max_connections` says (a session an upgrade handed
    /// over was let in once already).
    pub fn acquire(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back a slot taken by [`ListenerShared::try_acquire`].
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}
