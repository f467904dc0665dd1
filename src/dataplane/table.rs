//! The counters of a routing's backends, in snapshot order, with the index of each
//! by identity: what a routing, a least-connections tree and a session's stale
//! counters are matched by.

use std::collections::HashMap;
use std::sync::Arc;

use super::stats::BackendStats;

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
