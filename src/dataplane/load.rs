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
use super::table::BackendTable;
use crate::balance::least::LeastTree;
use crate::balance::Snapshot;

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
        backend.pool.least_changed(&backend);
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
        self.0.pool.least_changed(&self.0);
    }
}

/// A least-connections pool's min-tree over one routing's live backends, with the
/// table that says which leaf a backend's counters are.
#[derive(Debug)]
pub struct Least {
    tree: LeastTree,
    table: Arc<BackendTable>,
}

impl Least {
    /// The tree of `snapshot`'s live backends, whose counters are `table`, loaded
    /// with what is open on each now.
    pub fn new(snapshot: &Snapshot, table: Arc<BackendTable>) -> Least {
        let weights: Vec<u32> = snapshot.backends().iter().map(|b| b.weight).collect();
        let live: Vec<bool> = (0..weights.len()).map(|i| snapshot.is_live(i)).collect();
        let ramps: Vec<u16> = (0..weights.len()).map(|i| snapshot.ramp(i)).collect();
        let tree = LeastTree::ramped(&weights, &ramps, &live, |i| table[i].open.get());
        Least { tree, table }
    }

    /// The tree.
    pub fn tree(&self) -> &LeastTree {
        &self.tree
    }

    /// Backend `stats`'s count changed.
    pub fn changed(&self, stats: &Arc<BackendStats>) {
        if let Some(i) = self.table.position(stats) {
            self.tree.set(i, || stats.open.get());
        }
    }

    /// Every leaf read again (after a new tree was put in place: counts that moved
    /// while it was built went to the old one).
    pub fn refresh_all(&self) {
        for (i, s) in self.table.iter().enumerate() {
            self.tree.set(i, || s.open.get());
        }
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
