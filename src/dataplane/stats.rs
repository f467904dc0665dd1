//! Data-plane counters: one shard per worker, so counting never contends.
//!
//! Each worker writes only its own shard (a cache-line-aligned block of plain relaxed
//! atomics: a load and a store, no locked instruction), and a metrics scrape reads
//! and sums all shards when scraped. A reader may see a shard a few increments behind;
//! nothing is ever lost.

use std::net::SocketAddr;
use std::sync::Arc;

use super::admission::Refused::{Denied, SourceLimit, SourceRate};
pub use crate::shard::{Counter, Durations, Gauge, Sharded};

/// Counters of one listener (one shard).
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// TCP connections accepted and established to a backend.
    pub connections: Counter,
    /// Connections closed at once because `max_connections` was reached.
    pub rejected_max_connections: Counter,
    /// Connections closed because no backend was up.
    pub rejected_no_backend: Counter,
    /// Clients reset because every connect attempt failed.
    pub rejected_backends_failed: Counter,
    /// Connections closed because they did not start with a PROXY header
    /// (`accept_proxy`), or it came too late.
    pub rejected_proxy_header: Counter,
    /// Connections closed at once because the worker's file-descriptor budget was
    /// spent (or the process hit its limit).
    pub rejected_fd_limit: Counter,
    /// Clients reset because this machine could not open a backend socket for
    /// another reason (no local port, no memory).
    pub rejected_local_error: Counter,
    /// Connections closed at once: `allow`/`deny` refuse their source.
    pub rejected_denied: Counter,
    /// Connections closed at once: their source holds `max_connections_per_source`.
    pub rejected_source_limit: Counter,
    /// Connections closed at once: their source opens them faster than
    /// `connection_rate_per_source`.
    pub rejected_source_rate: Counter,
    /// Connections closed because the client sent nothing within
    /// `first_data_timeout` (`backend_connect = "on-data"`).
    pub rejected_first_data_timeout: Counter,
    /// Connections closed because the only backends left are ringway's own
    /// addresses (a loop).
    pub rejected_loop: Counter,
    /// `route_by = "sni"`: connections closed because no route takes their server
    /// name (or they named none) and the listener has no default pool.
    pub rejected_no_route: Counter,
    /// ... because their first bytes are not a TLS ClientHello (or one ringway does
    /// not read: malformed, over 16 KiB) and there is no default pool.
    pub rejected_not_tls: Counter,
    /// ... because the client sent no whole ClientHello within `sni_timeout`.
    pub rejected_sni_timeout: Counter,
    /// Closed after waiting `queue_timeout` for a full backend (`max_connections`).
    pub rejected_queue_timeout: Counter,
    /// Closed because its backend's queue was full (`max_queue`).
    pub rejected_queue_full: Counter,
    /// `forward = "kernel"`: sessions the kernel took over.
    pub kernel_joined: Counter,
    /// ... sessions it would not take, which ringway forwarded (e.g. the client had
    /// already sent its EOF).
    pub kernel_declined: Counter,
    /// ... sessions reset because handing them over failed half-way.
    pub kernel_failed: Counter,
    /// UDP flows created.
    pub udp_flows: Counter,
    /// UDP datagrams received from clients.
    pub udp_in: Counter,
    /// UDP datagrams sent back to clients.
    pub udp_out: Counter,
    /// Of `udp_in`, those the kernel forwarded (`forward = "kernel"`).
    pub udp_kernel_in: Counter,
    /// Of `udp_out`, those the kernel forwarded.
    pub udp_kernel_out: Counter,
    /// New UDP flows dropped because `udp_max_flows` was reached.
    pub udp_dropped_max_flows: Counter,
    /// New UDP flows dropped because no backend was up.
    pub udp_dropped_no_backend: Counter,
    /// UDP datagrams dropped: every backend up is at its `max_connections`.
    pub udp_dropped_backend_full: Counter,
    /// New UDP flows dropped because the worker's file-descriptor budget was spent.
    pub udp_dropped_fd_limit: Counter,
    /// New UDP flows dropped because the only backends left are ringway's own
    /// addresses (a loop).
    pub udp_dropped_loop: Counter,
    /// UDP datagrams the kernel would not send (either direction).
    pub udp_dropped_send: Counter,
    /// Datagrams for new flows on a listener removed by a reload (its old flows live on).
    pub udp_dropped_removed: Counter,
    /// Datagrams dropped: `allow`/`deny` refuse their source.
    pub udp_dropped_denied: Counter,
    /// Datagrams for new flows dropped: their source holds `udp_max_flows_per_source`.
    pub udp_dropped_source_limit: Counter,
    /// Datagrams for new flows dropped: their source opens flows faster than
    /// `udp_flow_rate_per_source`.
    pub udp_dropped_source_rate: Counter,
    /// `route_by = "sni"`: datagrams of new flows dropped because no route takes
    /// their server name and the listener has no default pool.
    pub udp_dropped_no_route: Counter,
    /// ... because they are not QUIC Initials ringway reads (another protocol or
    /// version) and there is no default pool.
    pub udp_dropped_not_quic: Counter,
    /// ... because the flow's hello was not whole within `sni_timeout` (or took more
    /// datagrams than are held).
    pub udp_dropped_sni_timeout: Counter,
    /// ICMP errors (port unreachable) reported by backends' UDP sockets.
    pub backend_icmp_errors: Counter,
}

impl ListenerCounters {
    /// TCP connections refused or reset by ringway, by reason (the `reason` label of
    /// `ringway_listener_rejected_connections_total`), all workers together.
    pub fn rejected(s: &Sharded<ListenerCounters>) -> [(&'static str, u64); 16] {
        [
            (
                "max_connections",
                s.sum(|c| c.rejected_max_connections.get()),
            ),
            ("no_backend", s.sum(|c| c.rejected_no_backend.get())),
            (
                "backends_failed",
                s.sum(|c| c.rejected_backends_failed.get()),
            ),
            ("proxy_header", s.sum(|c| c.rejected_proxy_header.get())),
            ("fd_limit", s.sum(|c| c.rejected_fd_limit.get())),
            ("local_error", s.sum(|c| c.rejected_local_error.get())),
            (Denied.reason(), s.sum(|c| c.rejected_denied.get())),
            (
                SourceLimit.reason(),
                s.sum(|c| c.rejected_source_limit.get()),
            ),
            (SourceRate.reason(), s.sum(|c| c.rejected_source_rate.get())),
            (
                "first_data_timeout",
                s.sum(|c| c.rejected_first_data_timeout.get()),
            ),
            ("loop", s.sum(|c| c.rejected_loop.get())),
            ("no_route", s.sum(|c| c.rejected_no_route.get())),
            ("not_tls", s.sum(|c| c.rejected_not_tls.get())),
            ("sni_timeout", s.sum(|c| c.rejected_sni_timeout.get())),
            ("queue_timeout", s.sum(|c| c.rejected_queue_timeout.get())),
            ("queue_full", s.sum(|c| c.rejected_queue_full.get())),
        ]
    }

    /// `forward = "kernel"` sessions by what became of them (the `result` label of
    /// `ringway_listener_kernel_sessions_total`), all workers together.
    pub fn kernel(s: &Sharded<ListenerCounters>) -> [(&'static str, u64); 3] {
        [
            ("joined", s.sum(|c| c.kernel_joined.get())),
            ("declined", s.sum(|c| c.kernel_declined.get())),
            ("failed", s.sum(|c| c.kernel_failed.get())),
        ]
    }

    /// UDP datagrams dropped, by reason (the `reason` label of
    /// `ringway_udp_dropped_datagrams_total`), all workers together.
    pub fn udp_dropped(s: &Sharded<ListenerCounters>) -> [(&'static str, u64); 13] {
        [
            ("max_flows", s.sum(|c| c.udp_dropped_max_flows.get())),
            ("no_backend", s.sum(|c| c.udp_dropped_no_backend.get())),
            ("backend_full", s.sum(|c| c.udp_dropped_backend_full.get())),
            ("send_failed", s.sum(|c| c.udp_dropped_send.get())),
            ("listener_removed", s.sum(|c| c.udp_dropped_removed.get())),
            ("fd_limit", s.sum(|c| c.udp_dropped_fd_limit.get())),
            (Denied.reason(), s.sum(|c| c.udp_dropped_denied.get())),
            (
                SourceLimit.reason(),
                s.sum(|c| c.udp_dropped_source_limit.get()),
            ),
            (
                SourceRate.reason(),
                s.sum(|c| c.udp_dropped_source_rate.get()),
            ),
            ("loop", s.sum(|c| c.udp_dropped_loop.get())),
            ("no_route", s.sum(|c| c.udp_dropped_no_route.get())),
            ("not_quic", s.sum(|c| c.udp_dropped_not_quic.get())),
            ("sni_timeout", s.sum(|c| c.udp_dropped_sni_timeout.get())),
        ]
    }
}

/// Counters of one backend of one listener (one shard).
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Connections (TCP) or flows (UDP) established to it.
    pub connections: Counter,
    /// Connections or flows open to it now.
    pub active: Gauge,
    /// Failed connect attempts.
    pub connect_errors: Counter,
    /// Bytes received from it.
    pub received_bytes: Counter,
    /// Bytes sent to it.
    pub sent_bytes: Counter,
    /// Connections or flows it took because `balance_factor` passed over the ring's
    /// pick, which held its cap.
    pub overflowed: Counter,
    /// How long connections waited in its queue (`max_connections`), served or not.
    pub queue_waits: Durations,
    /// Connections that gave up waiting in its queue (`queue_timeout`).
    pub queue_timeouts: Counter,
}

/// A backend's identity and counters. It outlives snapshots and reloads: the control
/// plane hands the same one to every snapshot while a backend with this id and address
/// exists (a changed address makes a new one), and sessions hold it until they close.
#[derive(Debug)]
pub struct BackendStats {
    /// The backend's id.
    pub id: Arc<str>,
    /// Where it is connected to.
    pub addr: SocketAddr,
    /// Per-worker counters.
    pub counters: Sharded<BackendCounters>,
    /// Failures seen on the data path that the control plane has not taken yet.
    pub failures: super::passive::Failures,
    /// The pool it belongs to.
    pub pool: Arc<super::pool::PoolShared>,
    /// Connections or flows open to it now, connecting ones included, all workers
    /// together: what load-aware balancing reads (see [`super::load`]).
    pub open: super::load::Open,
    /// Its `max_connections` and `max_queue`.
    pub limit: super::queue::Limit,
    /// Connections waiting for a slot (`max_connections`).
    pub queue: super::queue::Queue<super::load::Claim>,
}

impl BackendStats {
    /// Zeroed counters for backend `id` at `addr` of `pool`.
    pub fn new(
        id: &str,
        addr: SocketAddr,
        workers: usize,
        pool: Arc<super::pool::PoolShared>,
    ) -> BackendStats {
        BackendStats {
            id: id.into(),
            addr,
            counters: Sharded::new(workers),
            failures: Default::default(),
            pool,
            open: Default::default(),
            limit: Default::default(),
            queue: Default::default(),
        }
    }

    /// Reports a failure of this backend on the data path to its pool's health.
    pub fn report_failure(self: &Arc<Self>, error: &std::io::Error) {
        self.pool.report_failure(self, error);
    }

    /// Connections or flows open to it now, all workers together.
    pub fn active(&self) -> u64 {
        // Never negative: each worker's shard pairs its own +1 and -1.
        self.counters.sum_signed(|c| c.active.get()) as u64
    }
}

/// What second chance (`[cluster]`, `cluster/`) has done since it was loaded, every
/// CPU together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    /// Packets and bytes sent on to each peer, in peers order.
    pub forwarded: Vec<(u64, u64)>,
    /// Packets from a peer that a socket here held: delivered here.
    pub delivered: (u64, u64),
    /// Packets from a peer that no node held (the end of the chain): reset here.
    pub dropped: (u64, u64),
    /// Packets not passed on for want of a route or neighbour to the next peer.
    pub no_route: (u64, u64),
    /// Packets not passed on because they would exceed the path's MTU once
    /// encapsulated (20 bytes more).
    pub too_big: (u64, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_sum_and_are_separate_cache_lines() {
        let s: Sharded<BackendCounters> = Sharded::new(3);
        s.shard(0).connections.add(2);
        s.shard(2).connections.inc();
        s.shard(1).active.add(-1);
        s.shard(0).active.add(3);
        assert_eq!(s.sum(|c| c.connections.get()), 3);
        assert_eq!(s.sum_signed(|c| c.active.get()), 2);
        let a = s.shard(0) as *const _ as usize;
        let b = s.shard(1) as *const _ as usize;
        assert!(b - a >= 128);
    }
}
