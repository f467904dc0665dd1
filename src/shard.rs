//! Counters written by one thread and read by others: one shard per writer, so
//! counting never contends.
//!
//! Each writer (a worker) writes only its own shard (a cache-line-aligned block of
//! plain relaxed atomics: a load and a store, no locked instruction), and readers (the
//! a metrics scrape) sum all shards. A reader may see a shard a few increments behind;
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
