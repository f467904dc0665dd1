//! A worker's file-descriptor budget.
//!
//! The process has `RLIMIT_NOFILE` descriptors. The control plane keeps a reserve of
//! them for itself (health checks, `/metrics`, the admin API, reloads) and gives each
//! worker an equal share of the rest. A worker takes from its share before every
//! descriptor it opens for traffic (a client and its backend socket, a pipe's two
//! ends, a UDP flow's socket) and gives back when it closes them. At the limit, new
//! clients are closed at once (counted as `fd_limit`) and transfers fall back to copy
//! mode instead of taking pipes, so the data plane never runs the process out of
//! descriptors and the control plane never sees EMFILE because of traffic.
//!
//! The handle is shared by one worker's planes; only that worker's thread changes it,
//! so its counters are plain loads and stores (no locked instruction).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Descriptors of one TCP session: its client and backend sockets.
pub const SESSION_FDS: usize = 2;

/// Descriptors of one pipe.
pub const PIPE_FDS: usize = 2;

/// Descriptors of one UDP flow: its upstream socket.
pub const FLOW_FDS: usize = 1;

#[derive(Debug)]
struct Inner {
    limit: AtomicUsize,
    used: AtomicUsize,
}

/// A handle on one worker's budget.
#[derive(Debug, Clone)]
pub struct FdBudget(Arc<Inner>);

impl FdBudget {
    /// A budget of `limit` descriptors, none used.
    pub fn new(limit: usize) -> FdBudget {
        FdBudget(Arc::new(Inner {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        }))
    }

    /// Takes `n` descriptors; false, taking nothing, when fewer are left.
    pub fn take(&self, n: usize) -> bool {
        let used = self.0.used.load(Relaxed) + n;
        if used > self.0.limit.load(Relaxed) {
            return false;
        }
        self.0.used.store(used, Relaxed);
        true
    }

    /// Gives back `n` descriptors taken before.
    pub fn give(&self, n: usize) {
        let used = self.0.used.load(Relaxed);
        debug_assert!(used >= n, "gave back more than was taken");
        self.0.used.store(used.saturating_sub(n), Relaxed);
    }

    /// Descriptors in use.
    pub fn used(&self) -> usize {
        self.0.used.load(Relaxed)
    }

    /// The share.
    pub fn limit(&self) -> usize {
        self.0.limit.load(Relaxed)
    }

    /// A new share (a reload changed the reserve): descriptors in use above it are
    /// not taken back, new ones wait until enough are given back.
    pub fn set_limit(&self, limit: usize) {
        self.0.limit.store(limit, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_and_gives_back() {
        let b = FdBudget::new(5);
        let other = b.clone();
        assert!(b.take(SESSION_FDS));
        assert!(other.take(PIPE_FDS));
        assert!(!b.take(SESSION_FDS), "4 + 2 > 5");
        assert!(b.take(FLOW_FDS));
        assert_eq!(other.used(), 5);
        b.give(PIPE_FDS);
        assert!(other.take(SESSION_FDS));
        assert_eq!(b.used(), 5);
    }
}
