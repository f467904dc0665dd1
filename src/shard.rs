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

/// Bounds (seconds) of the buckets of duration histograms, `+Inf` after the last:
/// from half a millisecond to ten seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of a duration histogram, `+Inf` included.
pub const DURATION_SLOTS: usize = DURATION_BUCKETS.len() + 1;

/// A duration histogram's shard (single writer, as [`Counter`]): a count per bucket
/// of [`DURATION_BUCKETS`] and the sum, in microseconds.
#[derive(Debug, Default)]
pub struct Durations {
    counts: [Counter; DURATION_SLOTS],
    micros: Counter,
}

impl Durations {
    /// Counts one observation of `micros` microseconds.
    pub fn record(&self, micros: u64) {
        let secs = micros as f64 / 1e6;
        let slot = DURATION_BUCKETS.partition_point(|&b| b < secs);
        self.counts[slot].inc();
        self.micros.add(micros);
    }

    /// Observations in bucket `slot` (not cumulative).
    pub fn count(&self, slot: usize) -> u64 {
        self.counts[slot].get()
    }

    /// Their sum, in microseconds.
    pub fn micros(&self) -> u64 {
        self.micros.get()
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

    /// The sum of `f` over all shards, per bucket of a duration histogram, and the
    /// sum of its observations in seconds.
    pub fn durations(&self, f: impl Fn(&T) -> &Durations) -> ([u64; DURATION_SLOTS], f64) {
        let mut counts = [0; DURATION_SLOTS];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = self.sum(|s| f(s).count(i));
        }
        (counts, self.sum(|s| f(s).micros()) as f64 / 1e6)
    }

    /// The sum of a signed `f` over all shards.
    pub fn sum_signed(&self, f: impl Fn(&T) -> i64) -> i64 {
        self.shards.iter().map(|s| f(&s.0)).sum()
    }
}
