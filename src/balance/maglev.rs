//! `balance = "maglev"`: the Maglev lookup table (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI'16), built exactly as
//! docs/hashing.md ("Maglev table") says, so every node builds the same table.
//!
//! The table has M entries, M the smallest prime at least max(65,537, 100 x the
//! pool's backends). Each backend has a permutation of the entries, from its id
//! alone: offset = XXH3-64("{id}#offset") mod M, skip = XXH3-64("{id}#skip") mod
//! (M - 1) + 1, its j-th preference (offset + j x skip) mod M. The live backends, in
//! the order of their ids' bytes, take turns: in each round a backend of weight w
//! takes its next w preferred entries that are still empty, until every entry is
//! taken. A key's backend is entry key mod M. The table is built again whenever the
//! live set changes; a backend that leaves takes only about its own entries with it.
//!
//! Pure: no I/O, no clock.

use super::hash::xxh3;
use super::Backend;

/// The least table size.
pub const MIN_TABLE: u64 = 65_537;

/// The table size for a pool of `n` backends: the smallest prime at least
/// max(65,537, 100 x n).
pub fn table_size(n: usize) -> u64 {
    let mut m = MIN_TABLE.max(100 * n as u64);
    while !is_prime(m) {
        m += 1;
    }
    m
}

fn is_prime(m: u64) -> bool {
    if m < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= m {
        if m % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The offset and skip of backend `id` in a table of `m` entries.
pub fn permutation(id: &str, m: u64) -> (u64, u64) {
    let offset = xxh3(format!("{id}#offset").as_bytes()) % m;
    let skip = xxh3(format!("{id}#skip").as_bytes()) % (m - 1) + 1;
    (offset, skip)
}

/// A built table: for each entry, the index of its backend.
#[derive(Debug, PartialEq, Eq)]
pub struct Maglev {
    entries: Box<[u32]>,
    /// The live set it was built for.
    live: Box<[bool]>,
}

impl Maglev {
    /// The table of `backends` (in snapshot order) of which `live` are used, with
    /// `m` entries (see [`table_size`]). Empty when none is live.
    pub fn build(backends: &[Backend], live: &[bool], m: u64) -> Maglev {
        let mut order: Vec<usize> = (0..backends.len()).filter(|&i| live[i]).collect();
        order.sort_by(|&a, &b| backends[a].id.as_bytes().cmp(backends[b].id.as_bytes()));
        let live_box: Box<[bool]> = live.into();
        if order.is_empty() {
            return Maglev {
                entries: Box::new([]),
                live: live_box,
            };
        }
        let perm: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| permutation(&backends[i].id, m))
            .collect();
        let mut next = vec![0u64; order.len()];
        let mut entries = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        'fill: loop {
            for (k, &i) in order.iter().enumerate() {
                let (offset, skip) = perm[k];
                for _ in 0..backends[i].weight.max(1) {
                    loop {
                        let c = ((u128::from(offset) + u128::from(next[k]) * u128::from(skip))
                            % u128::from(m)) as usize;
                        next[k] += 1;
                        if entries[c] == u32::MAX {
                            entries[c] = i as u32;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Maglev {
            entries: entries.into(),
            live: live_box,
        }
    }

    /// Whether it was built for this live set.
    pub fn built_for(&self, live: &[bool]) -> bool {
        *self.live == *live
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no backend is live.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The backend of `key`: entry key mod M.
    #[inline]
    pub fn lookup(&self, key: u64) -> Option<usize> {
        let m = self.entries.len() as u64;
        (m > 0).then(|| self.entries[(key % m) as usize] as usize)
    }

    /// Distinct backends in table order from `key`'s entry (what a retry, a bound or
    /// a ramp walks to): the key's own first.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let m = self.entries.len();
        let start = if m == 0 { 0 } else { (key % m as u64) as usize };
        let mut seen = super::seen::Seen::default();
        let members = self.live.len();
        self.entries[start..]
            .iter()
            .chain(&self.entries[..start])
            .map(|&b| b as usize)
            .filter(move |&b| seen.first(b, members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_keys::keys;

    fn backends(n: usize) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend {
                id: format!("b{i}"),
                addr: "127.0.0.1:1".parse().unwrap(),
                addr_text: "127.0.0.1:1".into(),
                weight: 1,
                set: None,
                backup: false,
                limits: Default::default(),
            })
            .collect()
    }

    #[test]
    fn table_sizes_are_primes_of_at_least_100_per_backend() {
        assert_eq!(table_size(1), 65_537);
        assert_eq!(table_size(655), 65_537);
        assert_eq!(table_size(1000), 100_003);
        assert!(is_prime(table_size(4000)) && table_size(4000) >= 400_000);
    }

    #[test]
    fn every_entry_is_taken_and_shares_follow_weight() {
        let mut b = backends(5);
        b[0].weight = 3;
        let t = Maglev::build(&b, &[true; 5], 65_537);
        let mut count = [0usize; 5];
        for &e in t.entries.iter() {
            count[e as usize] += 1;
        }
        assert_eq!(count.iter().sum::<usize>(), 65_537);
        // 3/7 and 1/7 of the entries, within one round.
        assert!(count[0].abs_diff(65_537 * 3 / 7) <= 3, "{count:?}");
        assert!(count[1].abs_diff(65_537 / 7) <= 3, "{count:?}");
    }

    #[test]
    fn config_order_does_not_matter() {
        let b = backends(7);
        let mut r = b.clone();
        r.reverse();
        let (t, u) = (
            Maglev::build(&b, &[true; 7], 65_537),
            Maglev::build(&r, &[true; 7], 65_537),
        );
        for k in keys(2000) {
            assert_eq!(b[t.lookup(k).unwrap()].id, r[u.lookup(k).unwrap()].id);
        }
    }

    /// A backend leaving takes its keys and moves few others (Maglev's promise: not
    /// none, unlike the ring).
    #[test]
    fn a_removal_moves_its_own_keys_and_few_others() {
        let b = backends(10);
        let all = Maglev::build(&b, &[true; 10], 65_537);
        let mut live = [true; 10];
        live[3] = false;
        let less = Maglev::build(&b, &live, 65_537);
        let (mut own, mut others) = (0, 0);
        for k in keys(20_000) {
            let (x, y) = (all.lookup(k).unwrap(), less.lookup(k).unwrap());
            assert_ne!(y, 3);
            if x == 3 {
                own += 1;
            } else if x != y {
                others += 1;
            }
        }
        assert!(own > 1500);
        assert!(
            others < 20_000 / 50,
            "{others} keys moved between backends that stayed"
        );
    }

    #[test]
    fn nothing_live_is_an_empty_table_and_a_walk_sees_each_backend_once() {
        let b = backends(3);
        let t = Maglev::build(&b, &[false; 3], 65_537);
        assert!(t.is_empty() && t.lookup(1).is_none());
        let t = Maglev::build(&b, &[true, false, true], 65_537);
        let w: Vec<usize> = t.walk(12345).collect();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0], t.lookup(12345).unwrap());
    }
}
