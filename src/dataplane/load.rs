//! What load-aware balancing reads: the connections and flows open to each backend
//! and to each pool, every worker together.
//!
//! Unlike the statistics (one shard per worker, summed when scraped), these are one
//! atomic each, shared by every worker: a pick reads a backend's count in one load,
//! whatever the number of workers. A connection counts from the moment a backend is
//! chosen for it (connecting ones weigh too, or a burst would overshoot a bound) to
//! the moment it closes or its attempt fails; a [`Claim`] holds that count, so it
//! cannot leak on any path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::stats::BackendStats;

/// A count of open connections or flows, on its own cache lines (every worker
/// writes it).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Open(AtomicU64);

impl Open {
    /// The count now.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn sub(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection or flow counted on its backend and its pool while it lives.
#[derive(Debug)]
pub struct Claim(Arc<BackendStats>);

impl Claim {
    /// Counts one more on `backend` (and its pool).
    pub fn new(backend: Arc<BackendStats>) -> Claim {
        backend.open.add();
        backend.pool.open.add();
        Claim(backend)
    }

    /// The backend it counts on.
    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.0
    }
}

impl std::ops::Deref for Claim {
    type Target = Arc<BackendStats>;

    fn deref(&self) -> &Arc<BackendStats> {
        &self.0
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.open.sub();
        self.0.pool.open.sub();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::PoolShared;

    #[test]
    fn a_claim_counts_while_it_lives() {
        let pool = PoolShared::detached("p");
        let b = Arc::new(BackendStats::new(
            "b",
            "127.0.0.1:1".parse().unwrap(),
            2,
            Arc::clone(&pool),
        ));
        let c1 = Claim::new(Arc::clone(&b));
        let c2 = Claim::new(Arc::clone(&b));
        assert_eq!((b.open.get(), pool.open.get()), (2, 2));
        drop(c1);
        assert_eq!((b.open.get(), pool.open.get()), (1, 1));
        drop(c2);
        assert_eq!((b.open.get(), pool.open.get()), (0, 0));
    }
}
