//! Which flows of a listener their backend has not answered yet, oldest first: when
//! the flow table is full, they are the first to go (a flood of spoofed sources makes
//! exactly such flows, one datagram each, and would otherwise hold every place for
//! `udp_idle_timeout`).
//!
//! Flows are added as they open and skipped lazily when looked at (answered or closed
//! since); the queue is compacted when it holds many more entries than open flows, so
//! it never outgrows them.

use std::collections::VecDeque;

use crate::dataplane::token::Key;

/// A listener's flows in the order they opened, possibly answered or closed since.
#[derive(Debug, Default)]
pub(super) struct Unanswered {
    queue: VecDeque<Key>,
}

impl Unanswered {
    /// A flow opened (it has no answer yet). `open`: the listener's open flows now;
    /// `waiting(k)`: whether flow `k` is open and still unanswered (for compaction).
    pub fn opened(&mut self, key: Key, open: usize, waiting: impl Fn(Key) -> bool) {
        self.queue.push_back(key);
        if self.queue.len() > 2 * open + 64 {
            self.queue.retain(|&k| waiting(k));
        }
    }

    /// Takes the oldest flow that is still waiting for an answer, if any.
    pub fn oldest(&mut self, waiting: impl Fn(Key) -> bool) -> Option<Key> {
        while let Some(k) = self.queue.pop_front() {
            if waiting(k) {
                return Some(k);
            }
        }
        None
    }

    /// Entries held (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_waiting_flow_goes_first_and_the_queue_stays_bounded() {
        let mut u = Unanswered::default();
        let keys: Vec<Key> = (0..10).map(|i| Key::unpack(((i) as u64) << 29)).collect();
        for &k in &keys {
            u.opened(k, 10, |_| true);
        }
        // 0 and 1 were answered (or closed): skipped.
        let waiting = |k: Key| k != keys[0] && k != keys[1];
        assert_eq!(u.oldest(waiting), Some(keys[2]));
        assert_eq!(u.oldest(waiting), Some(keys[3]));
        // Thousands of flows that get answered: the queue never holds many more
        // entries than flows are open.
        for i in 0..10_000 {
            u.opened(Key::unpack(((100 + i) as u64) << 29), 5, |_| false);
        }
        assert!(u.len() <= 2 * 5 + 64 + 1, "{}", u.len());
        assert_eq!(u.oldest(|_| false), None);
    }
}
