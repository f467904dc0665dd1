//! The immutable view of one listener's backends that workers read per new flow: the
//! backends, the ring of all of them (built once, shared by every snapshot of the same
//! backend set), which backends are up and accepting, and which ring points are live.
//!
//! A health change does not rebuild or copy the ring: the next snapshot is derived from
//! the last one by flipping the live bits of the backends that changed
//! ([`Snapshot::with_states`]), and their shares of the key space and the key space
//! that moved are updated from the arcs next to those points alone. So a backend going
//! down costs work in proportion to its own points, not to the ring: with 4,000
//! backends of 1,024 points each, a transition touches 1,024 points of 4 million.
//! A changed backend set (a reload, a DNS answer) rebases the ring
//! ([`Snapshot::rebased`]): points of backends that stay are kept, not hashed again.

use std::collections::HashMap;
use std::sync::Arc;

use super::live::Live;
use super::ring::{Member, Ring};
use super::seen::Seen;
use super::Backend;

/// A full share, in thousandths.
pub const FULL: u16 = 1000;

/// The whole circle of keys, 2^64, as an arc length.
const CIRCLE: u128 = 1 << 64;

/// Which ring points take new flows.
#[derive(Debug, Clone)]
enum View {
    /// Every point: every backend accepts (or none does and the listener fails open).
    All,
    /// These points (perhaps none).
    Points(Arc<Live>),
}

impl View {
    /// The first live point at or after `i` (wrapping) of a ring of `len` points.
    fn next(&self, i: usize, len: usize) -> Option<usize> {
        match self {
            View::All => (len > 0).then_some(i),
            View::Points(l) => l.next(i),
        }
    }

    /// The last live point before `i` (wrapping; `i` when it is the only one).
    fn prev(&self, i: usize, len: usize) -> Option<usize> {
        match self {
            View::All => (len > 0).then(|| (i + len - 1) % len),
            View::Points(l) => l.prev(i),
        }
    }

    fn contains(&self, i: usize) -> bool {
        match self {
            View::All => true,
            View::Points(l) => l.is_live(i),
        }
    }

    fn count(&self, len: usize) -> usize {
        match self {
            View::All => len,
            View::Points(l) => l.count(),
        }
    }
}

/// An immutable view of one listener's backends: what workers load per new flow.
#[derive(Debug)]
pub struct Snapshot {
    backends: Arc<[Backend]>,
    ring: Arc<Ring>,
    /// Each backend's arc of the key space with every backend live (of the ring).
    base_arcs: Arc<[u128]>,
    /// Healthy and not disabled: flows already on it stay.
    up: Vec<bool>,
    /// Up and not draining: new flows may go to it.
    accepting: Vec<bool>,
    /// Whose points are live: the accepting backends, or all of them when none
    /// accepts and the listener fails open.
    live: Vec<bool>,
    /// The weight of the live backends together.
    live_weight: u64,
    view: View,
    /// Each backend's arc of the key space now (its share, out of 2^64).
    arcs: Arc<[u128]>,
    /// Key space that changed backend since the snapshot this one was derived from
    /// (out of 2^64).
    moved: u128,
    /// `slow_start`: each backend's share of its full share, in thousandths, while
    /// any ramps (`None`: every backend at its full share).
    ramp: Option<Arc<[u16]>>,
}

impl Snapshot {
    /// All backends up.
    pub fn new(backends: Vec<Backend>, vnodes: u32) -> Snapshot {
        let ring = Ring::build(&members(&backends), vnodes);
        Snapshot::all_up(backends.into(), Arc::new(ring))
    }

    fn all_up(backends: Arc<[Backend]>, ring: Arc<Ring>) -> Snapshot {
        let base_arcs: Arc<[u128]> = ring.arcs().into();
        let up = vec![true; backends.len()];
        let live_weight = backends.iter().map(|b| u64::from(b.weight)).sum();
        Snapshot {
            live_weight,
            backends,
            ring,
            arcs: Arc::clone(&base_arcs),
            base_arcs,
            accepting: up.clone(),
            live: up.clone(),
            up,
            view: View::All,
            moved: 0,
            ramp: None,
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
        let mut s = Snapshot::all_up(backends.into(), Arc::clone(&self.ring));
        s.base_arcs = Arc::clone(&self.base_arcs);
        s.arcs = Arc::clone(&self.base_arcs);
        Some(s)
    }

    /// The snapshot of another backend set, every backend up: the ring of `backends`
    /// with `vnodes`, rebased from this one's (the points of backends that keep their
    /// id and weight are not hashed again; see [`Ring::rebase`]), or built anew when
    /// `vnodes` changed.
    pub fn rebased(&self, backends: Vec<Backend>, vnodes: u32) -> Snapshot {
        if vnodes != self.ring.vnodes() {
            return Snapshot::new(backends, vnodes);
        }
        let index: HashMap<&str, usize> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.as_str(), i))
            .collect();
        let kept: Vec<Option<usize>> = self
            .backends
            .iter()
            .map(|b| {
                index
                    .get(b.id.as_str())
                    .copied()
                    .filter(|&j| backends[j].weight == b.weight)
            })
            .collect();
        let ring = self.ring.rebase(&members(&backends), &kept);
        drop(index);
        Snapshot::all_up(backends.into(), Arc::new(ring))
    }

    /// A copy with every backend up (shares the ring).
    pub fn clone_all_up(&self) -> Snapshot {
        self.with_up(vec![true; self.backends.len()])
    }

    /// The same backends and ring with the up/down state given by `up` (one flag per
    /// backend, in backend order). No key moves between two backends that stay up.
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
    /// Derived from this snapshot: only the points of backends whose state changed are
    /// touched, and [`Snapshot::moved`] of the result says how much key space changed
    /// backend.
    ///
    /// # Panics
    /// Panics if either list does not have one flag per backend.
    pub fn with_states(&self, up: Vec<bool>, accepting: Vec<bool>, fail_open: bool) -> Snapshot {
        let n = self.backends.len();
        assert_eq!(up.len(), n, "one flag per backend");
        assert_eq!(accepting.len(), n, "one flag per backend");
        let live = if fail_open && !accepting.iter().any(|&a| a) {
            vec![true; n]
        } else {
            accepting.clone()
        };
        let toggled: Vec<usize> = (0..n).filter(|&m| live[m] != self.live[m]).collect();
        let (view, arcs, moved) = if toggled.is_empty() {
            (self.view.clone(), Arc::clone(&self.arcs), 0)
        } else {
            self.toggle(&live, &toggled)
        };
        let live_weight = (0..n)
            .filter(|&m| live[m])
            .map(|m| u64::from(self.backends[m].weight))
            .sum();
        Snapshot {
            live_weight,
            backends: Arc::clone(&self.backends),
            ring: Arc::clone(&self.ring),
            base_arcs: Arc::clone(&self.base_arcs),
            up,
            accepting,
            live,
            view,
            arcs,
            moved,
            ramp: None,
        }
    }

    /// The same snapshot with backends ramping up (`slow_start`): `ramp[i]` is
    /// backend `i`'s thousandths of its full share; `None` or all 1000: none ramps.
    ///
    /// # Panics
    /// Panics if `ramp` does not have one value per backend.
    pub fn with_ramp(mut self, ramp: Option<Vec<u16>>) -> Snapshot {
        self.ramp = ramp
            .inspect(|r| assert_eq!(r.len(), self.backends.len(), "one ramp per backend"))
            .filter(|r| r.iter().any(|&p| p < FULL))
            .map(|r| r.iter().map(|&p| p.min(FULL)).collect());
        self
    }

    /// Backend `i`'s thousandths of its full share (`slow_start`): 1000 unless it
    /// ramps up.
    #[inline]
    pub fn ramp(&self, i: usize) -> u16 {
        self.ramp.as_ref().map_or(FULL, |r| r[i])
    }

    /// Whether any backend ramps up.
    #[inline]
    pub fn ramping(&self) -> bool {
        self.ramp.is_some()
    }

    /// The view, arcs and moved key space once the backends in `toggled` (live now as
    /// `live` says) flipped.
    fn toggle(&self, live: &[bool], toggled: &[usize]) -> (View, Arc<[u128]>, u128) {
        let ring = &*self.ring;
        let len = ring.len();
        let points: Vec<usize> = toggled
            .iter()
            .flat_map(|&m| ring.points_of(m, member(&self.backends[m])))
            .collect();
        let view = if live.iter().all(|&l| l) {
            View::All
        } else {
            let mut next = match &self.view {
                View::All => Live::all(len),
                View::Points(p) => (**p).clone(),
            };
            for &i in &points {
                next.set(i, live[ring.owner_at(i)]);
            }
            View::Points(Arc::new(next))
        };
        let (before, after) = (self.view.count(len), view.count(len));
        if after == 0 {
            let moved = if before == 0 { 0 } else { CIRCLE };
            return (view, vec![0; live.len()].into(), moved);
        }
        if before == 0 {
            return (view.clone(), self.arcs_of(&view), CIRCLE);
        }
        // Few points changed: update from the arcs that end at them. Many: one pass
        // over the ring is cheaper than searching around each.
        if points.len().saturating_mul(8) <= len {
            let (arcs, moved) = self.arcs_moved_at(&points, &view);
            (view, arcs.into(), moved)
        } else {
            let moved = self.moved_everywhere(&view);
            let arcs = self.arcs_of(&view);
            (view, arcs, moved)
        }
    }

    /// Arcs and moved key space of `next` from this snapshot's, looking only at the
    /// points in `changed` (each live in exactly one of the two views). The points
    /// live in either view cut the circle into arcs; one whose end point is live in
    /// both has the same owner in both, so only the arcs ending at changed points can
    /// have changed hands.
    fn arcs_moved_at(&self, changed: &[usize], next: &View) -> (Vec<u128>, u128) {
        let ring = &*self.ring;
        let len = ring.len();
        let mut arcs = self.arcs.to_vec();
        let mut moved = 0u128;
        let distance = |t: usize, x: usize| match (t + len - x) % len {
            0 => len,
            d => d,
        };
        for &t in changed {
            let (Some(a), Some(b)) = (self.view.prev(t, len), next.prev(t, len)) else {
                continue;
            };
            let start = if distance(t, a) <= distance(t, b) {
                a
            } else {
                b
            };
            let arc = ring.arc_before(t, start);
            let (Some(was), Some(now)) = (self.view.next(t, len), next.next(t, len)) else {
                continue;
            };
            let (was, now) = (ring.owner_at(was), ring.owner_at(now));
            if was != now {
                moved += arc;
                arcs[was] -= arc;
                arcs[now] += arc;
            }
        }
        (arcs, moved)
    }

    /// Key space whose backend differs between this view and `next` (same ring), in
    /// one pass over the points.
    fn moved_everywhere(&self, next: &View) -> u128 {
        let ring = &*self.ring;
        let len = ring.len();
        let in_either = |i: usize| self.view.contains(i) || next.contains(i);
        let Some(mut prev) = (0..len).rev().find(|&i| in_either(i)) else {
            return 0;
        };
        let mut moved = 0u128;
        for u in (0..len).filter(|&i| in_either(i)) {
            let arc = ring.arc_before(u, prev);
            let was = self.view.next(u, len).map(|i| ring.owner_at(i));
            let now = next.next(u, len).map(|i| ring.owner_at(i));
            if was != now {
                moved += arc;
            }
            prev = u;
        }
        moved
    }

    /// Each backend's arc of the key space in `view`, in one pass over its points.
    fn arcs_of(&self, view: &View) -> Arc<[u128]> {
        let ring = &*self.ring;
        let live = match view {
            View::All => return Arc::clone(&self.base_arcs),
            View::Points(l) => l,
        };
        let mut arcs = vec![0u128; self.backends.len()];
        if let Some(mut prev) = live.prev(0) {
            for i in live.iter() {
                arcs[ring.owner_at(i)] += ring.arc_before(i, prev);
                prev = i;
            }
        }
        arcs.into()
    }

    /// The backends, in config order (indices used everywhere else refer to it).
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backends, shared.
    pub fn backends_shared(&self) -> &Arc<[Backend]> {
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

    /// Whether backend `i`'s points are live: it takes new flows (or every backend
    /// does, none accepting, when the listener fails open).
    #[inline]
    pub fn is_live(&self, i: usize) -> bool {
        self.live[i]
    }

    /// The weight of the live backends together.
    #[inline]
    pub fn live_weight(&self) -> u64 {
        self.live_weight
    }

    /// Key space (0.0..=1.0) that changed backend between the snapshot this one was
    /// derived from with [`Snapshot::with_states`] and this one.
    pub fn moved(&self) -> f64 {
        self.moved as f64 / CIRCLE as f64
    }

    /// Fraction of the key space (0.0..=1.0) whose backend differs between `self` and
    /// `other`, which may have other backends and rings (backends matched by id; a key
    /// with no backend in one of them counts). One pass over both rings' live points:
    /// every live point of either bounds an arc, and inside one arc each has one owner.
    pub fn remapped(&self, other: &Snapshot) -> f64 {
        let (la, lb) = (self.ring.len(), other.ring.len());
        let ends = |s: &Snapshot, len| Some((s.view.next(0, len)?, s.view.prev(0, len)?));
        let ((first_a, last_a), (first_b, last_b)) = match (ends(self, la), ends(other, lb)) {
            (None, None) => return 0.0,
            (None, _) | (_, None) => return 1.0,
            (Some(a), Some(b)) => (a, b),
        };
        let hash_a = |i: usize| self.ring.hash_at(i);
        let hash_b = |i: usize| other.ring.hash_at(i);
        let (mut a, mut b) = (
            self.live_points().peekable(),
            other.live_points().peekable(),
        );
        let mut prev = hash_a(last_a).max(hash_b(last_b));
        let mut moved = 0u128;
        loop {
            let p = match (a.peek().map(|&i| hash_a(i)), b.peek().map(|&i| hash_b(i))) {
                (None, None) => break,
                (Some(x), None) => x,
                (None, Some(y)) => y,
                (Some(x), Some(y)) => x.min(y),
            };
            let arc = if p == prev {
                CIRCLE
            } else {
                p.wrapping_sub(prev) as u128
            };
            let owner_a = self.ring.owner_at(a.peek().copied().unwrap_or(first_a));
            let owner_b = other.ring.owner_at(b.peek().copied().unwrap_or(first_b));
            if self.backends[owner_a].id != other.backends[owner_b].id {
                moved += arc;
            }
            while a.next_if(|&i| hash_a(i) == p).is_some() {}
            while b.next_if(|&i| hash_b(i) == p).is_some() {}
            prev = p;
        }
        moved as f64 / CIRCLE as f64
    }

    /// The live points in ring order.
    fn live_points(&self) -> impl Iterator<Item = usize> + '_ {
        let (all, some) = match &self.view {
            View::All => (Some(0..self.ring.len()), None),
            View::Points(l) => (None, Some(l.iter())),
        };
        all.into_iter().flatten().chain(some.into_iter().flatten())
    }

    /// The up backend owning `key`; `None` when every backend is down.
    #[inline]
    pub fn pick(&self, key: u64) -> Option<usize> {
        let len = self.ring.len();
        if len == 0 {
            return None;
        }
        let at = self.ring.position(key);
        self.view.next(at, len).map(|i| self.ring.owner_at(i))
    }

    /// Up backends in ring order from `key`: the pick first, then the next distinct
    /// backends clockwise (what a retry tries next).
    pub fn candidates(&self, key: u64) -> Walk<'_> {
        let len = self.ring.len();
        Walk {
            snapshot: self,
            pos: if len == 0 { 0 } else { self.ring.position(key) },
            left: self.view.count(len),
            seen: Seen::default(),
        }
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
        self.arcs
            .iter()
            .map(|&a| a as f64 / CIRCLE as f64)
            .collect()
    }
}

/// Iterator of [`Snapshot::candidates`]: distinct live backends clockwise from a key.
#[derive(Debug)]
pub struct Walk<'a> {
    snapshot: &'a Snapshot,
    pos: usize,
    left: usize,
    /// Backends met so far.
    seen: Seen,
}

impl Iterator for Walk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let s = self.snapshot;
        let len = s.ring.len();
        while self.left > 0 {
            let at = s.view.next(self.pos, len)?;
            let owner = s.ring.owner_at(at);
            self.left -= 1;
            self.pos = (at + 1) % len;
            if self.seen.first(owner, s.backends.len()) {
                return Some(owner);
            }
        }
        None
    }
}

/// The ring members of `backends`.
fn members(backends: &[Backend]) -> Vec<Member<'_>> {
    backends.iter().map(member).collect()
}

fn member(b: &Backend) -> Member<'_> {
    Member {
        id: &b.id,
        weight: b.weight,
    }
}

#[cfg(test)]
mod tests;
