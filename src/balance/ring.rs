//! A consistent-hash ring of virtual nodes. Pure: no I/O, no clock, no randomness.
//!
//! The ring is a function of the set of `(id, weight)` members and `vnodes` alone: the
//! order members are given in does not matter, and the same input gives the same ring in
//! every process and release (positions come from [`super::hash::vnode_hash`]).
//!
//! A key belongs to the first point at or clockwise after it, wrapping at 2^64. Points
//! with an equal hash (a 64-bit collision, practically never) are ordered by member id,
//! so even that case does not depend on input order.
//!
//! Members are referred to by their index in the slice given to [`Ring::build`]; the
//! caller keeps the table of ids and addresses.
//!
//! ```
//! use ringway::balance::ring::{Member, Ring};
//!
//! let members = [Member { id: "app-1", weight: 1 }, Member { id: "app-2", weight: 2 }];
//! let ring = Ring::build(&members, 1024);
//! assert_eq!(ring.len(), 3 * 1024);
//! // A key belongs to the first point at or after it; the same input, the same answer.
//! let owner = ring.lookup(0xDEAD_BEEF).unwrap();
//! assert_eq!(Ring::build(&members, 1024).lookup(0xDEAD_BEEF), Some(owner));
//! // Without a member, only its keys move: the rest keep their owner.
//! let without_2 = ring.filtered(|m| m != 1);
//! for key in (0..1000u64).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
//!     if ring.lookup(key) == Some(0) {
//!         assert_eq!(without_2.lookup(key), Some(0));
//!     }
//! }
//! ```

use super::hash::{vnode_label, xxh3};
use super::owners::Owners;
use super::seen::Seen;

/// Virtual nodes per unit of weight when the config does not say.
///
/// The share of key space a backend owns varies around the mean with a relative standard
/// deviation of about `1/sqrt(vnodes)`. The contract asks the most loaded of 10 equal
/// backends to own at most 1.10x the mean share; 160 points (NGINX's and ketama's number)
/// gives 1.15-1.25x in practice, 1024 gives 1.03-1.07x (see `docs/BENCHMARKS.md`, which
/// reports the figure for 3, 10 and 100 backends). Cost: 12 bytes per point, so 10
/// backends take 120 KiB and 1,000 backends 12 MiB; a lookup is one binary search.
pub const DEFAULT_VNODES: u32 = 1024;

/// Upper bound on points in one ring (`vnodes * total weight`), enforced by config
/// validation: 16M points are 192 MiB and about a second to build.
pub const MAX_POINTS: u64 = 16 * 1024 * 1024;

/// One member of a ring: a backend's identity and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// Ring identity (the backend `id`, by default its address as written).
    pub id: &'a str,
    /// Weight, 1..=1000: the member gets `vnodes * weight` points.
    pub weight: u32,
}

/// A built ring: points sorted by hash, each owned by a member index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    /// Sorted point positions; kept apart from `owners` so the binary search touches
    /// only 8 bytes per probe.
    hashes: Vec<u64>,
    /// `owners.get(i)` is the member index owning `hashes[i]`.
    owners: Owners,
    /// Number of members the ring was built from (owner indices are below it).
    members: usize,
    /// Radix index over the top bits of a hash: `index[b]` is the first point whose
    /// top bits are `>= b`, so a lookup searches only one bucket (a few points, one or
    /// two cache lines) instead of the whole ring. Derived from `hashes`.
    index: Vec<u32>,
    /// `64 - bits` of the index.
    shift: u32,
    /// Points per unit of weight it was built with.
    vnodes: u32,
}

/// Bits of the radix index for `n` points: about one bucket per point, at most 2^16.
fn index_bits(n: usize) -> u32 {
    let n = n.max(1);
    (usize::BITS - 1 - n.leading_zeros()).clamp(1, 16)
}

impl Ring {
    /// Builds the ring of `members` with `vnodes` points per unit of weight.
    ///
    /// A member with weight 0 gets no points. Member ids must be distinct (config
    /// validation guarantees it); with duplicates the ring is still deterministic.
    ///
    /// Each point is hashed once into the ring's own arrays (12 bytes a point, 10 with
    /// at most 65,536 members: no temporary copy), then put in its radix bucket in
    /// place (an American flag sort over the top bits, whose counts are the ring's
    /// index), then each bucket, a few points, is sorted by hash and id.
    pub fn build(members: &[Member<'_>], vnodes: u32) -> Ring {
        let total: usize = members
            .iter()
            .map(|m| m.weight as usize * vnodes as usize)
            .sum();
        let bits = index_bits(total);
        let shift = 64 - bits;
        let buckets = 1usize << bits;
        let mut hashes = Vec::with_capacity(total);
        let mut owners = Owners::with_capacity(total, members.len());
        let mut label = Vec::with_capacity(64);
        for (owner, m) in members.iter().enumerate() {
            for i in 0..m.weight.saturating_mul(vnodes) {
                vnode_label(&mut label, m.id, i);
                hashes.push(xxh3(&label));
                owners.push(owner);
            }
        }
        // Each bucket's first point (the radix index), from the counts.
        let bucket_of = |h: u64| (h >> shift) as usize;
        let mut index = vec![0u32; buckets + 1];
        for &h in &hashes {
            index[bucket_of(h) + 1] += 1;
        }
        for b in 0..buckets {
            index[b + 1] += index[b];
        }
        // Every point into its bucket, in place: swap it to where its bucket fills up
        // next, until the one that lands here belongs here.
        let mut next: Vec<u32> = index[..buckets].to_vec();
        for b in 0..buckets {
            let end = index[b + 1];
            while next[b] < end {
                let i = next[b] as usize;
                let home = bucket_of(hashes[i]);
                if home == b {
                    next[b] += 1;
                } else {
                    let j = next[home] as usize;
                    next[home] += 1;
                    hashes.swap(i, j);
                    owners.swap(i, j);
                }
            }
        }
        drop(next);
        // Each bucket sorted by hash, then member id (a 64-bit collision, practically
        // never, is ordered by id, not by input order).
        let mut bucket: Vec<(u64, u32)> = Vec::new();
        for b in 0..buckets {
            let (lo, hi) = (index[b] as usize, index[b + 1] as usize);
            if hi - lo < 2 {
                continue;
            }
            bucket.clear();
            bucket.extend((lo..hi).map(|i| (hashes[i], owners.get(i) as u32)));
            bucket.sort_unstable_by(|x, y| {
                x.0.cmp(&y.0)
                    .then_with(|| members[x.1 as usize].id.cmp(members[y.1 as usize].id))
            });
            for (j, (h, o)) in bucket.iter().enumerate() {
                hashes[lo + j] = *h;
                owners.set(lo + j, *o as usize);
            }
        }
        Ring {
            hashes,
            owners,
            members: members.len(),
            index,
            shift,
            vnodes,
        }
    }

    /// Builds the radix index: about one bucket per point, at most 2^16 buckets.
    fn reindex(&mut self) {
        let bits = index_bits(self.hashes.len());
        self.shift = 64 - bits;
        let buckets = 1usize << bits;
        self.index = Vec::with_capacity(buckets + 1);
        let mut pos = 0usize;
        for b in 0..buckets {
            while pos < self.hashes.len() && ((self.hashes[pos] >> self.shift) as usize) < b {
                pos += 1;
            }
            self.index.push(pos as u32);
        }
        self.index.push(self.hashes.len() as u32);
    }

    /// The ring of `members` from this one, which was built with `vnodes` from members
    /// of which `kept[i]` says what became of member `i`: its index among `members`,
    /// or `None` when it left. A member `i` kept must have the same id and weight in
    /// both; members no old one maps to are added. The same ring as
    /// [`Ring::build`]`(members, vnodes)` (a property test holds it to that), in time
    /// linear in the points, hashing only the added members' points: the points of
    /// members that stay are never hashed again.
    ///
    /// # Panics
    /// Panics if `kept` does not have one entry per member of this ring.
    pub fn rebase(&self, members: &[Member<'_>], kept: &[Option<usize>]) -> Ring {
        assert_eq!(kept.len(), self.members, "one entry per member");
        let mut is_old = vec![false; members.len()];
        for &k in kept.iter().flatten() {
            is_old[k] = true;
        }
        let mut added: Vec<(u64, u32)> = Vec::new();
        let mut label = Vec::with_capacity(64);
        for (owner, m) in members.iter().enumerate().filter(|(i, _)| !is_old[*i]) {
            for i in 0..m.weight.saturating_mul(self.vnodes) {
                vnode_label(&mut label, m.id, i);
                added.push((xxh3(&label), owner as u32));
            }
        }
        let by_hash_then_id = |a: &(u64, u32), b: &(u64, u32)| {
            a.0.cmp(&b.0)
                .then_with(|| members[a.1 as usize].id.cmp(members[b.1 as usize].id))
        };
        added.sort_unstable_by(by_hash_then_id);
        let stays = self
            .hashes
            .iter()
            .enumerate()
            .filter_map(|(i, &h)| kept[self.owners.get(i)].map(|n| (h, n as u32)));
        let total = self.hashes.len() + added.len();
        let mut ring = Ring {
            hashes: Vec::with_capacity(total),
            owners: Owners::with_capacity(total, members.len()),
            members: members.len(),
            index: Vec::new(),
            shift: 64,
            vnodes: self.vnodes,
        };
        let mut added = added.into_iter().peekable();
        for p in stays {
            while let Some(a) = added.next_if(|a| by_hash_then_id(a, &p).is_lt()) {
                ring.push(a);
            }
            ring.push(p);
        }
        for a in added {
            ring.push(a);
        }
        ring.hashes.shrink_to_fit();
        ring.owners.shrink_to_fit();
        ring.reindex();
        ring
    }

    fn push(&mut self, (h, o): (u64, u32)) {
        self.hashes.push(h);
        self.owners.push(o as usize);
    }

    /// The same ring with only the points of members for which `keep` is true.
    ///
    /// Looking a key up in the filtered ring gives exactly what walking the full ring
    /// clockwise to the first kept member gives: this is how "down" backends are skipped
    /// without ever moving a key between two backends that stayed up. (Snapshots do it
    /// without copying the ring, with a [`super::live::Live`] set of points; this is
    /// the reference their tests compare with.)
    pub fn filtered(&self, keep: impl Fn(usize) -> bool) -> Ring {
        let mut out = Ring {
            hashes: Vec::with_capacity(self.hashes.len()),
            owners: Owners::with_capacity(self.owners.len(), self.members),
            members: self.members,
            index: Vec::new(),
            shift: 64,
            vnodes: self.vnodes,
        };
        for (i, &h) in self.hashes.iter().enumerate() {
            let o = self.owners.get(i);
            if keep(o) {
                out.hashes.push(h);
                out.owners.push(o);
            }
        }
        out.reindex();
        out
    }

    /// Points per unit of weight.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The hash of point `i`.
    pub fn hash_at(&self, i: usize) -> u64 {
        self.hashes[i]
    }

    /// The member owning point `i`.
    pub fn owner_at(&self, i: usize) -> usize {
        self.owners.get(i)
    }

    /// The points (indices) of member `member`, whose id and weight are `m`: found by
    /// hashing its labels again and searching for them, so the ring stores nothing per
    /// member. Each point once, in no particular order.
    pub fn points_of(&self, member: usize, m: Member<'_>) -> Vec<usize> {
        let mut label = Vec::with_capacity(64);
        let mut hashes: Vec<u64> = (0..m.weight.saturating_mul(self.vnodes))
            .map(|i| {
                vnode_label(&mut label, m.id, i);
                xxh3(&label)
            })
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            let mut i = self.first_at_or_after(h);
            while i < self.hashes.len() && self.hashes[i] == h {
                if self.owners.get(i) == member {
                    out.push(i);
                }
                i += 1;
            }
        }
        out
    }

    /// Fraction of the key space, as a length out of 2^64, that each member owns:
    /// `arcs()[m]` is the total length of the arcs ending at `m`'s points.
    pub fn arcs(&self) -> Vec<u128> {
        let mut arcs = vec![0u128; self.members];
        let n = self.hashes.len();
        for i in 0..n {
            arcs[self.owners.get(i)] += self.arc_before(i, (i + n - 1) % n);
        }
        arcs
    }

    /// The length of the arc `(hashes[prev], hashes[i]]`: the keys point `i` owns when
    /// `prev` is the point before it (the whole circle when `prev == i`).
    pub fn arc_before(&self, i: usize, prev: usize) -> u128 {
        if prev == i {
            1u128 << 64
        } else {
            self.hashes[i].wrapping_sub(self.hashes[prev]) as u128
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// True when the ring has no points (no members, or all filtered out).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Number of members the ring was built from.
    pub fn members(&self) -> usize {
        self.members
    }

    /// Index of the first point at or clockwise after `key` (wrapping to the first);
    /// 0 for an empty ring.
    pub fn position(&self, key: u64) -> usize {
        let i = self.first_at_or_after(key);
        if i == self.hashes.len() {
            0
        } else {
            i
        }
    }

    /// Index of the first point whose hash is `>= key`; the number of points when
    /// there is none.
    fn first_at_or_after(&self, key: u64) -> usize {
        if self.hashes.is_empty() {
            return 0;
        }
        // Every point before `lo` has smaller top bits than `key`, every point from `hi`
        // on larger ones: the answer is in lo..=hi.
        let b = (key >> self.shift) as usize;
        let (lo, hi) = (self.index[b] as usize, self.index[b + 1] as usize);
        lo + self.hashes[lo..hi].partition_point(|&h| h < key)
    }

    /// The member owning `key`; `None` only when the ring is empty.
    pub fn lookup(&self, key: u64) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        Some(self.owners.get(self.position(key)))
    }

    /// Distinct members clockwise from `key`: the owner first, then each next member
    /// met walking the ring, each once. Used to retry on the next backend.
    pub fn walk(&self, key: u64) -> Walk<'_> {
        Walk {
            ring: self,
            pos: if self.is_empty() {
                0
            } else {
                self.position(key)
            },
            left: self.hashes.len(),
            seen: Seen::default(),
        }
    }

    /// Fraction of the key space (0.0..=1.0) whose owner differs between `self` and
    /// `other`; `same(a, b)` says whether member `a` of `self` and member `b` of `other`
    /// are the same backend (members are indices, which need not agree between rings).
    /// Keys with no owner in either ring count as moved only if the other has one.
    ///
    /// Every point of either ring bounds an arc; inside one arc both rings have one
    /// owner each, so comparing the owners at each arc's end point is exact.
    pub fn moved(&self, other: &Ring, same: impl Fn(usize, usize) -> bool) -> f64 {
        let mut points: Vec<u64> = self.hashes.iter().chain(&other.hashes).copied().collect();
        points.sort_unstable();
        points.dedup();
        let n = points.len();
        let mut moved = 0u128;
        for i in 0..n {
            let p = points[i];
            let len = if n == 1 {
                1u128 << 64
            } else {
                p.wrapping_sub(points[(i + n - 1) % n]) as u128
            };
            let differs = match (self.lookup(p), other.lookup(p)) {
                (Some(a), Some(b)) => !same(a, b),
                (None, None) => false,
                _ => true,
            };
            if differs {
                moved += len;
            }
        }
        moved as f64 / (1u128 << 64) as f64
    }

    /// Fraction of the key space (0.0..=1.0) each member owns, indexed by member.
    pub fn shares(&self) -> Vec<f64> {
        let circle = (1u128 << 64) as f64;
        self.arcs().into_iter().map(|a| a as f64 / circle).collect()
    }
}

/// Iterator of [`Ring::walk`].
#[derive(Debug)]
pub struct Walk<'a> {
    ring: &'a Ring,
    pos: usize,
    left: usize,
    seen: Seen,
}

impl Iterator for Walk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.left > 0 {
            let owner = self.ring.owners.get(self.pos);
            self.left -= 1;
            self.pos = (self.pos + 1) % self.ring.hashes.len();
            if self.seen.first(owner, self.ring.members) {
                return Some(owner);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
