//! Choosing a backend: the hash contract, the ring, and the immutable snapshot that
//! workers read.
//!
//! Nothing in here does I/O or reads a clock. The control plane builds a [`Snapshot`]
//! (backends, the full ring, which backends are up, and the ring of the up ones) and
//! publishes it; data-plane workers only call [`Snapshot::pick`] and
//! [`Snapshot::candidates`] on it.

pub mod hash;
pub mod ring;

use std::net::SocketAddr;
use std::sync::Arc;

pub use hash::HashMode;
use ring::{Member, Ring};

/// A backend as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Ring identity: the configured `id`, or the address as written.
    pub id: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The address exactly as written in the config (what `route` prints).
    pub addr_text: String,
    /// Weight, 1..=1000.
    pub weight: u32,
    /// The `backend_set` it was discovered by (its name), `None` when configured.
    pub set: Option<String>,
}

/// An immutable view of one listener's backends: what workers load per new flow.
#[derive(Debug)]
pub struct Snapshot {
    backends: Arc<[Backend]>,
    full: Arc<Ring>,
    /// Healthy and not disabled: flows already on it stay.
    up: Vec<bool>,
    /// Up and not draining: new flows may go to it.
    accepting: Vec<bool>,
    /// The ring of accepting backends: what picks use.
    live: Ring,
}

impl Snapshot {
    /// All backends up.
    pub fn new(backends: Vec<Backend>, vnodes: u32) -> Snapshot {
        let members: Vec<Member<'_>> = backends
            .iter()
            .map(|b| Member {
                id: &b.id,
                weight: b.weight,
            })
            .collect();
        let full = Ring::build(&members, vnodes);
        let up = vec![true; backends.len()];
        Snapshot {
            live: full.clone(),
            full: Arc::new(full),
            backends: backends.into(),
            accepting: up.clone(),
            up,
        }
    }

    /// The same ring for `backends` that differ from these only in where they are
    /// (addresses): the ring is a function of ids, weights and vnodes alone, so it is
    /// shared, not rebuilt. Every backend is up. `None` when an id or weight differs.
    pub fn with_addresses(&self, backends: Vec<Backend>) -> Option<Snapshot> {
        let same_ring = backends.len() == self.backends.len()
            && backends
                .iter()
                .zip(self.backends.iter())
                .all(|(a, b)| a.id == b.id && a.weight == b.weight);
        if !same_ring {
            return None;
        }
        let up = vec![true; backends.len()];
        Some(Snapshot {
            backends: backends.into(),
            full: Arc::clone(&self.full),
            live: (*self.full).clone(),
            accepting: up.clone(),
            up,
        })
    }

    /// A copy with every backend up (shares the ring; rebuilds nothing but the live ring).
    pub fn clone_all_up(&self) -> Snapshot {
        self.with_up(vec![true; self.backends.len()])
    }

    /// The same backends and ring with the up/down state given by `up` (one flag per
    /// backend, in backend order). Only the live ring is rebuilt, by filtering: no hash
    /// is recomputed and no key moves between two backends that stay up.
    ///
    /// # Panics
    /// Panics if `up` does not have one flag per backend.
    pub fn with_up(&self, up: Vec<bool>) -> Snapshot {
        self.with_states(up.clone(), up, false)
    }

    /// Like [`Snapshot::with_up`], but when `fail_open` is set and no backend is up,
    /// every backend is used (`all_down = "use-all"`); their flags still say down.
    pub fn with_health(&self, up: Vec<bool>, fail_open: bool) -> Snapshot {
        self.with_states(up.clone(), up, fail_open)
    }

    /// The general form: `up` says which backends keep the flows they have (healthy and
    /// not disabled), `accepting` which ones take new flows (up and not draining).
    /// When `fail_open` is set and no backend accepts, every backend does.
    ///
    /// # Panics
    /// Panics if either list does not have one flag per backend.
    pub fn with_states(&self, up: Vec<bool>, accepting: Vec<bool>, fail_open: bool) -> Snapshot {
        assert_eq!(up.len(), self.backends.len(), "one flag per backend");
        assert_eq!(accepting.len(), self.backends.len(), "one flag per backend");
        let live = if fail_open && !accepting.iter().any(|&a| a) {
            (*self.full).clone()
        } else {
            self.full.filtered(|m| accepting[m])
        };
        Snapshot {
            backends: Arc::clone(&self.backends),
            full: Arc::clone(&self.full),
            up,
            accepting,
            live,
        }
    }

    /// The backends, in config order (indices used everywhere else refer to it).
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Index of the backend with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.id == id)
    }

    /// Whether backend `i` is up: flows already on it stay there.
    pub fn is_up(&self, i: usize) -> bool {
        self.up[i]
    }

    /// Whether backend `i` takes new flows (up and not draining).
    pub fn is_accepting(&self, i: usize) -> bool {
        self.accepting[i]
    }

    /// Fraction of the key space (0.0..=1.0) whose backend differs between `self` and
    /// `other` (backends matched by id; a key with no backend in one of them counts).
    pub fn remapped(&self, other: &Snapshot) -> f64 {
        self.live.moved(&other.live, |a, b| {
            self.backends[a].id == other.backends[b].id
        })
    }

    /// The up backend owning `key`; `None` when every backend is down.
    #[inline]
    pub fn pick(&self, key: u64) -> Option<usize> {
        self.live.lookup(key)
    }

    /// Up backends in ring order from `key`: the pick first, then the next distinct
    /// backends clockwise (what a retry tries next).
    pub fn candidates(&self, key: u64) -> ring::Walk<'_> {
        self.live.walk(key)
    }

    /// The backend for connect attempt `n` (0-based) of `key`: the pick for 0, then the
    /// `n`-th distinct up backend clockwise. Attempt 0 allocates nothing.
    #[inline]
    pub fn attempt(&self, key: u64, n: u32) -> Option<usize> {
        match n {
            0 => self.pick(key),
            n => self.candidates(key).nth(n as usize),
        }
    }

    /// Fraction of key space each backend owns now (0 for a down backend).
    pub fn shares(&self) -> Vec<f64> {
        self.live.shares()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend {
                id: format!("b{i}"),
                addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                addr_text: format!("127.0.0.1:{}", 9000 + i),
                set: None,
                weight: 1,
            })
            .collect()
    }

    #[test]
    fn new_addresses_share_the_ring_a_rebuild_would_give() {
        let s = Snapshot::new(backends(5), 64);
        let mut moved = backends(5);
        moved[2].addr = "127.0.0.9:9".parse().unwrap();
        let shared = s.with_addresses(moved.clone()).unwrap();
        let rebuilt = Snapshot::new(moved.clone(), 64);
        assert_eq!(shared.backends()[2].addr, moved[2].addr);
        for k in (0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
            assert_eq!(shared.pick(k), rebuilt.pick(k));
        }
        moved[2].weight = 2;
        assert!(
            s.with_addresses(moved).is_none(),
            "a weight change needs a new ring"
        );
        assert!(s.with_addresses(backends(4)).is_none());
    }

    #[test]
    fn down_backend_gets_nothing_and_others_keep_their_keys() {
        let s = Snapshot::new(backends(4), 64);
        let d = s.with_up(vec![true, false, true, true]);
        assert!(!d.is_up(1));
        for k in (0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
            let before = s.pick(k).unwrap();
            let after = d.pick(k).unwrap();
            assert_ne!(after, 1);
            if before != 1 {
                assert_eq!(before, after);
            }
            assert_eq!(d.candidates(k).next(), Some(after));
            assert_eq!(d.attempt(k, 0), Some(after));
            assert_eq!(d.attempt(k, 2), d.candidates(k).nth(2));
        }
        assert_eq!(d.shares()[1], 0.0);
    }

    #[test]
    fn all_down_picks_nothing() {
        let s = Snapshot::new(backends(2), 8).with_up(vec![false, false]);
        assert_eq!(s.pick(7), None);
        assert_eq!(s.candidates(7).count(), 0);
    }

    #[test]
    fn fail_open_uses_every_backend_only_when_all_are_down() {
        let s = Snapshot::new(backends(3), 16);
        let open = s.with_health(vec![false, false, false], true);
        assert_eq!(open.pick(99), s.pick(99));
        assert!(!open.is_up(0));
        let closed = s.with_health(vec![false, false, false], false);
        assert_eq!(closed.pick(99), None);
        let one = s.with_health(vec![false, true, false], true);
        assert_eq!(one.pick(99), Some(1));
    }

    #[test]
    fn draining_takes_no_new_keys_but_stays_up() {
        let s = Snapshot::new(backends(3), 32);
        let d = s.with_states(vec![true; 3], vec![true, false, true], false);
        assert!(d.is_up(1) && !d.is_accepting(1));
        assert!((0..5_000u64).all(|k| d.pick(k.wrapping_mul(0x9E37_79B9)) != Some(1)));
        assert!((s.remapped(&d) - s.shares()[1]).abs() < 1e-12);
    }

    #[test]
    fn remapped_matches_backends_by_id_across_lists() {
        let a = Snapshot::new(backends(3), 32);
        let mut more = backends(3);
        more.insert(0, backends(4).pop().unwrap());
        let b = Snapshot::new(more, 32);
        // b3 is new: exactly its share moved, though every index shifted by one.
        assert!((a.remapped(&b) - b.shares()[0]).abs() < 1e-12);
    }

    #[test]
    fn index_of_finds_by_id() {
        let s = Snapshot::new(backends(3), 8);
        assert_eq!(s.index_of("b2"), Some(2));
        assert_eq!(s.index_of("nope"), None);
    }
}
