//! Data-plane counters: one shard per worker, so counting never contends.
//!
//! Each worker writes only its own shard (a cache-line-aligned block of plain relaxed
//! atomics: a load and a store, no locked instruction), and the metrics exporter reads
//! and sums all shards when scraped. A reader may see a shard a few increments behind;
//! nothing is ever lost.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonic counter with a single writer (its shard's worker).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this, so load + store is exact.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge shard: one worker's part of a sum (signed so that it can be decremented;
/// the worker that adds 1 for a connection is the one that takes it off).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `n` (negative to subtract). Single writer, as [`Counter::add`].
    #[inline]
    pub fn add(&self, n: i64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Keeps each shard on its own cache lines (two, against adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// One `T` per worker.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[Padded<T>]>,
}

impl<T: Default> Sharded<T> {
    /// `workers` zeroed shards (at least one).
    pub fn new(workers: usize) -> Sharded<T> {
        Sharded {
            shards: (0..workers.max(1)).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T> Sharded<T> {
    /// Worker `worker`'s shard.
    #[inline]
    pub fn shard(&self, worker: usize) -> &T {
        &self.shards[worker % self.shards.len()].0
    }

    /// The sum of `f` over all shards.
    pub fn sum(&self, f: impl Fn(&T) -> u64) -> u64 {
        self.shards.iter().map(|s| f(&s.0)).sum()
    }

    /// The sum of a signed `f` over all shards.
    pub fn sum_signed(&self, f: impl Fn(&T) -> i64) -> i64 {
        self.shards.iter().map(|s| f(&s.0)).sum()
    }
}

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
    /// UDP flows created.
    pub udp_flows: Counter,
    /// UDP datagrams received from clients.
    pub udp_in: Counter,
    /// UDP datagrams sent back to clients.
    pub udp_out: Counter,
    /// New UDP flows dropped because `udp_max_flows` was reached.
    pub udp_dropped_max_flows: Counter,
    /// New UDP flows dropped because no backend was up.
    pub udp_dropped_no_backend: Counter,
    /// New UDP flows dropped because the worker's file-descriptor budget was spent.
    pub udp_dropped_fd_limit: Counter,
    /// UDP datagrams the kernel would not send (either direction).
    pub udp_dropped_send: Counter,
    /// Datagrams for new flows on a listener removed by a reload (its old flows live on).
    pub udp_dropped_removed: Counter,
    /// ICMP errors (port unreachable) reported by backends' UDP sockets.
    pub backend_icmp_errors: Counter,
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
}

/// A backend's identity and counters. It outlives snapshots and reloads: the control
/// plane hands the same one to every snapshot while a backend with this id exists, and
/// sessions hold it until they close.
#[derive(Debug)]
pub struct BackendStats {
    /// The backend's id.
    pub id: String,
    /// Per-worker counters.
    pub counters: Sharded<BackendCounters>,
}

impl BackendStats {
    /// Zeroed counters for backend `id`.
    pub fn new(id: &str, workers: usize) -> BackendStats {
        BackendStats {
            id: id.to_string(),
            counters: Sharded::new(workers),
        }
    }

    /// Connections or flows open to it now, all workers together.
    pub fn active(&self) -> u64 {
        // Never negative: each worker's shard pairs its own +1 and -1.
        self.counters.sum_signed(|c| c.active.get()) as u64
    }
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
