//! What load-aware balancing reads: the connections and flows open to each backend
//! and to each pool, every worker together.
//!
//! Unlike the statistics (one shard per worker, summed when scraped), these are one
//! atomic each, shared by every worker: a pick reads a backend's count in one load,
//! whatever the number of workers. A connection counts from the moment a backend is
//! chosen for it (connecting ones weigh too, or a burst would overshoot a bound) to
//! the moment it closes or its attempt fails; a [`Claim`] holds that count, so it
//! cannot leak on any path.
//!
//! A backend with `max_connections` gives a claim only while it has room and nobody
//! waits in its queue ([`super::queue`]); a claim let go there goes to the oldest
//! waiter ([`Claim::drop`]), whose session holds its [`Place`] until then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::queue::{Inbox, QueueFull};
use super::stats::BackendStats;
use super::table::BackendTable;
use super::token::Key;
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

    /// One more unless `max` are open already; whether it took one.
    fn add_below(&self, max: u64) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// One less. Sequentially consistent: see [`super::queue::Queue::len`].
    fn sub(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where a worker receives the slots other workers freed for its waiting sessions.
pub type Grants = Inbox<Claim>;

/// One connection or flow counted on its backend and its pool while it lives.
#[derive(Debug)]
pub struct Claim(Arc<BackendStats>);

impl Claim {
    /// Counts one more on `backend` (and its pool), whatever its `max_connections`.
    pub fn new(backend: Arc<BackendStats>) -> Claim {
        backend.open.add();
        Claim::counted(backend)
    }

    /// One more on `backend` if it has room: under its `max_connections` (if any), with
    /// nobody waiting in its queue (who came first is served first).
    #[inline]
    pub fn try_new(backend: &Arc<BackendStats>) -> Option<Claim> {
        let max = backend.limit.max();
        if max == 0 {
            return Some(Claim::new(Arc::clone(backend)));
        }
        if !backend.queue.is_empty() || !backend.open.add_below(u64::from(max)) {
            return None;
        }
        Some(Claim::counted(Arc::clone(backend)))
    }

    /// `backend` is at its `max_connections`, or has waiters.
    #[inline]
    pub fn full(backend: &BackendStats) -> bool {
        let max = backend.limit.max();
        max > 0 && (backend.open.get() >= u64::from(max) || !backend.queue.is_empty())
    }

    /// The backend's own count is taken: the pool's too.
    fn counted(backend: Arc<BackendStats>) -> Claim {
        backend.pool.open.add();
        backend.pool.least_changed(&backend);
        Claim(backend)
    }

    /// Gives `backend`'s free slots to its oldest waiters (after a slot was freed, a
    /// waiter joined, or its limit was raised).
    pub fn hand_out(backend: &Arc<BackendStats>) {
        backend.queue.hand_out(|| {
            let max = backend.limit.max();
            if max == 0 {
                backend.open.add();
            } else if !backend.open.add_below(u64::from(max)) {
                return None;
            }
            Some(Claim::counted(Arc::clone(backend)))
        });
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
    /// The slot is free: the backend's oldest waiter (if any) takes it at once.
    fn drop(&mut self) {
        self.0.open.sub();
        self.0.pool.open.sub();
        self.0.pool.least_changed(&self.0);
        if !self.0.queue.is_empty() {
            Claim::hand_out(&self.0);
        }
    }
}

/// A session's place in a backend's queue: left when dropped, unless its slot was
/// granted.
#[derive(Debug)]
pub struct Place {
    backend: Arc<BackendStats>,
    inbox: Arc<Grants>,
    ticket: u64,
    waiting: bool,
}

impl Place {
    /// Session `key` of the worker behind `inbox` waits last for `backend`, with
    /// ticket `ticket` (unique on that worker), unless its `max_queue` wait already.
    pub fn join(
        backend: &Arc<BackendStats>,
        inbox: &Arc<Grants>,
        key: Key,
        ticket: u64,
    ) -> Result<Place, QueueFull> {
        backend
            .queue
            .push(inbox, key, ticket, backend.limit.max_queue())?;
        let place = Place {
            backend: Arc::clone(backend),
            inbox: Arc::clone(inbox),
            ticket,
            waiting: true,
        };
        // A slot freed since the caller found none must not be missed.
        Claim::hand_out(backend);
        Ok(place)
    }

    /// Its ticket.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// The backend it waits for.
    pub fn backend(&self) -> &Arc<BackendStats> {
        &self.backend
    }

    /// Its slot came: it is out of the queue already.
    pub fn granted(mut self) {
        self.waiting = false;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.waiting {
            // Not there: its grant is on the way, and is dropped (freed) on arrival.
            self.backend.queue.remove(&self.inbox, self.ticket);
        }
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
