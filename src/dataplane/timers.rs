//! Deadlines of a worker's sessions and flows: a min-heap of (when, whose).
//!
//! An entry is only a wake-up: the session or flow it names holds its real deadlines
//! and the one time it is armed for ([`Armed`]). An entry that does not match that
//! time is stale (the owner re-armed earlier, or closed) and is dropped when it comes
//! up. So an idle connection costs one entry that fires once per idle timeout, not a
//! look at every sweep, and moving bytes costs no timer work at all.
//!
//! Time is [`Millis`]: milliseconds since the workers started, passed in by the caller
//! (nothing here reads a clock).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::token::Key;

/// Milliseconds since the workers started (one time zero for all of them).
pub type Millis = u64;

/// `d` in milliseconds, rounded up (a deadline never fires early). No 128-bit
/// arithmetic: the worker converts its clock once per loop.
pub fn millis(d: Duration) -> Millis {
    let sub = d.subsec_nanos();
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(sub.div_ceil(1_000_000)))
}

/// The time an owner is armed for. Kept by the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Armed(Millis);

/// Not armed.
const NOT_ARMED: Millis = Millis::MAX;

impl Default for Armed {
    fn default() -> Self {
        Armed(NOT_ARMED)
    }
}

impl Armed {
    /// Armed for time `at`.
    pub fn is(&self, at: Millis) -> bool {
        self.0 == at
    }
}

/// The heap.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Millis, u64)>>,
}

impl Timers {
    /// Makes sure `key` wakes by `at`: pushes an entry unless one as early is armed.
    pub fn arm(&mut self, armed: &mut Armed, at: Millis, key: Key) {
        if armed.0 <= at {
            return;
        }
        armed.0 = at;
        self.heap.push(Reverse((at, key.pack())));
    }

    /// The earliest entry's time.
    pub fn next(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the next entry due at `now`: `(time, key)`. The caller asks the owner of
    /// `key` whether it is armed for that time ([`Timers::fired`]).
    pub fn pop_due(&mut self, now: Millis) -> Option<(Millis, Key)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let Reverse((at, key)) = self.heap.pop()?;
                Some((at, Key::unpack(key)))
            }
            _ => None,
        }
    }

    /// Whether an entry for time `at` is the one `armed` waits for; if so the owner is
    /// no longer armed (it re-arms for its next deadline, if any).
    pub fn fired(armed: &mut Armed, at: Millis) -> bool {
        if armed.0 == at {
            armed.0 = NOT_ARMED;
            true
        } else {
            false
        }
    }

    /// Entries, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// No entries.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops stale entries once they outnumber the `live` owners by far (owners that
    /// keep re-arming earlier leave one behind each time).
    pub fn compact(&mut self, live: usize, mut is_armed: impl FnMut(Millis, Key) -> bool) {
        if self.heap.len() <= 2 * live + 1024 {
            return;
        }
        let entries = std::mem::take(&mut self.heap).into_vec();
        self.heap = entries
            .into_iter()
            .filter(|Reverse((at, key))| is_armed(*at, Key::unpack(*key)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::super::token::Slots;
    use super::*;

    #[test]
    fn millis_round_up() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(7)), 7);
        assert_eq!(millis(Duration::from_micros(7001)), 8);
        assert_eq!(millis(Duration::new(3, 999_999_999)), 4000);
        assert_eq!(millis(Duration::new(2, 0)), 2000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn only_the_armed_entry_fires_and_earlier_wins() {
        let mut slots = Slots::default();
        let a = slots.insert_with(|_| Ok::<_, ()>(())).unwrap();
        let b = slots.insert_with(|_| Ok::<_, ()>(())).unwrap();
        let (mut ta, mut tb) = (Armed::default(), Armed::default());
        let mut t = Timers::default();
        t.arm(&mut ta, 100, a);
        t.arm(&mut ta, 200, a); // later: the armed entry already wakes it sooner
        assert_eq!(t.len(), 1);
        t.arm(&mut ta, 50, a); // earlier: a new entry, the one at 100 goes stale
        t.arm(&mut tb, 70, b);
        assert_eq!(t.next(), Some(50));
        assert_eq!(t.pop_due(49), None);
        let mut fired = Vec::new();
        while let Some((at, key)) = t.pop_due(1000) {
            let armed = if key == a { &mut ta } else { &mut tb };
            if Timers::fired(armed, at) {
                fired.push((at, key));
            }
        }
        assert_eq!(
            fired,
            vec![(50, a), (70, b)],
            "the stale entry at 100 was dropped"
        );
        assert!(t.is_empty());
    }

    #[test]
    fn compaction_keeps_armed_entries_only() {
        let mut slots = Slots::default();
        let k = slots.insert_with(|_| Ok::<_, ()>(())).unwrap();
        let mut armed = Armed::default();
        let mut t = Timers::default();
        for at in (0..3000u64).rev() {
            t.arm(&mut armed, at, k);
        }
        assert_eq!(t.len(), 3000);
        t.compact(1, |at, _| armed.is(at));
        assert_eq!(t.len(), 1);
        assert_eq!(t.next(), Some(0));
    }
}
