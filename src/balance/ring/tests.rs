use super::*;
use crate::balance::test_keys::keys;
use proptest::prelude::*;

fn members(ids: &[String], weights: &[u32]) -> Vec<Member<'static>> {
    ids.iter()
        .zip(weights)
        .map(|(id, &w)| Member {
            id: Box::leak(id.clone().into_boxed_str()),
            weight: w,
        })
        .collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
}

#[test]
fn empty_ring_has_no_owner() {
    let r = Ring::build(&[], 10);
    assert!(r.is_empty());
    assert_eq!(r.lookup(42), None);
    assert_eq!(r.walk(42).count(), 0);
}

#[test]
fn point_count_is_vnodes_times_weight() {
    let ids = ids(3);
    let r = Ring::build(&members(&ids, &[1, 2, 3]), 7);
    assert_eq!(r.len(), 7 * 6);
    assert_eq!(r.members(), 3);
}

#[test]
fn a_key_goes_to_the_first_point_at_or_after_it_and_wraps() {
    let ids = ids(2);
    let r = Ring::build(&members(&ids, &[1, 1]), 4);
    for (i, &h) in r.hashes.iter().enumerate() {
        assert_eq!(r.lookup(h), Some(r.owners.get(i)), "exact hit");
        if h > 0 && (i == 0 || r.hashes[i - 1] < h - 1) {
            assert_eq!(r.lookup(h - 1), Some(r.owners.get(i)), "just before");
        }
    }
    let last = *r.hashes.last().unwrap();
    if last < u64::MAX {
        assert_eq!(r.lookup(last + 1), Some(r.owners.get(0)), "wraps to first");
    }
}

#[test]
fn positions_are_xxh3_of_id_hash_index() {
    let ids = vec!["app-1".to_string()];
    let r = Ring::build(&members(&ids, &[1]), 3);
    let mut want: Vec<u64> = (0..3).map(|i| vnode_hash_of("app-1", i)).collect();
    want.sort_unstable();
    assert_eq!(r.hashes, want);
}

fn vnode_hash_of(id: &str, i: u32) -> u64 {
    crate::balance::hash::vnode_hash(id, i)
}

#[test]
fn member_order_does_not_matter() {
    let ids = ids(5);
    let weights = [1, 3, 2, 1, 5];
    let a = Ring::build(&members(&ids, &weights), 50);
    let rev_ids: Vec<String> = ids.iter().rev().cloned().collect();
    let rev_w: Vec<u32> = weights.iter().rev().copied().collect();
    let b = Ring::build(&members(&rev_ids, &rev_w), 50);
    for k in keys(5000) {
        let x = &ids[a.lookup(k).unwrap()];
        let y = &rev_ids[b.lookup(k).unwrap()];
        assert_eq!(x, y);
    }
}

#[test]
fn walk_starts_at_owner_and_visits_every_member_once() {
    let ids = ids(7);
    let r = Ring::build(&members(&ids, &[1; 7]), 20);
    for k in keys(500) {
        let w: Vec<usize> = r.walk(k).collect();
        assert_eq!(w[0], r.lookup(k).unwrap());
        let mut sorted = w.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..7).collect::<Vec<_>>());
    }
}

#[test]
fn filtered_lookup_is_the_first_kept_member_of_the_walk() {
    let ids = ids(6);
    let r = Ring::build(&members(&ids, &[1, 2, 1, 3, 1, 1]), 30);
    for down_mask in 0u32..64 {
        let keep = |m: usize| down_mask & (1 << m) == 0;
        let f = r.filtered(keep);
        for k in keys(300) {
            let want = r.walk(k).find(|&m| keep(m));
            assert_eq!(f.lookup(k), want, "mask {down_mask:#b}");
        }
    }
}

#[test]
fn shares_sum_to_one_and_follow_weight() {
    let ids = ids(3);
    let r = Ring::build(&members(&ids, &[1, 1, 2]), 1024);
    let s = r.shares();
    assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(s[2] > s[0] && s[2] > s[1]);
    let single = Ring::build(&members(&ids[..1], &[1]), 1);
    assert_eq!(single.shares(), vec![1.0]);
}

#[test]
fn default_vnodes_balance_ten_equal_backends_within_ten_percent() {
    // Three id schemes operators actually use: addresses, names, and IPv6 addresses.
    let schemes: Vec<Vec<String>> = vec![
        (1..=10)
            .map(|i| format!("127.0.0.1:{}", 9000 + i))
            .collect(),
        (1..=10).map(|i| format!("app-{i}")).collect(),
        (1..=10).map(|i| format!("[2001:db8::{i}]:443")).collect(),
    ];
    for ids in schemes {
        let r = Ring::build(&members(&ids, &[1; 10]), DEFAULT_VNODES);
        let max = r.shares().into_iter().fold(0.0, f64::max);
        assert!(
            max * 10.0 <= 1.10,
            "{ids:?}: max share {max} is {:.3}x the mean",
            max * 10.0
        );
    }
}

fn arb_members() -> impl Strategy<Value = (Vec<String>, Vec<u32>)> {
    prop::collection::btree_set("[a-z0-9.:-]{1,12}", 2..12).prop_flat_map(|set| {
        let ids: Vec<String> = set.into_iter().collect();
        let n = ids.len();
        (Just(ids), prop::collection::vec(1u32..5, n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Taking a member out moves only the keys it owned; putting it back restores
    /// exactly the previous mapping; no key moves between members that stayed.
    #[test]
    fn removing_a_member_moves_only_its_keys((ids, weights) in arb_members(), victim_seed in any::<usize>()) {
        let all = members(&ids, &weights);
        let victim = victim_seed % ids.len();
        let full = Ring::build(&all, 16);
        let without = full.filtered(|m| m != victim);
        // Also as a separately built ring of the survivors: same answer (by id).
        let survivors: Vec<Member<'_>> = all.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, m)| *m).collect();
        let rebuilt = Ring::build(&survivors, 16);
        let back = Ring::build(&all, 16);
        for k in keys(2000) {
            let before = full.lookup(k).unwrap();
            let after = without.lookup(k).unwrap();
            prop_assert_ne!(after, victim);
            if before != victim {
                prop_assert_eq!(before, after, "a key moved between two survivors");
            }
            prop_assert_eq!(survivors[rebuilt.lookup(k).unwrap()].id, all[after].id);
            prop_assert_eq!(back.lookup(k).unwrap(), before, "re-adding did not restore the mapping");
        }
    }

    /// Changing one member's weight moves keys only to or from that member.
    #[test]
    fn reweighting_moves_keys_only_to_or_from_that_member((ids, weights) in arb_members(), who in any::<usize>(), new_w in 1u32..8) {
        let who = who % ids.len();
        let a = Ring::build(&members(&ids, &weights), 16);
        let mut w2 = weights.clone();
        w2[who] = new_w;
        let b = Ring::build(&members(&ids, &w2), 16);
        for k in keys(2000) {
            let (x, y) = (a.lookup(k).unwrap(), b.lookup(k).unwrap());
            if x != y {
                prop_assert!(x == who || y == who, "key moved from {} to {}", x, y);
            }
        }
    }

    /// Adding a member takes keys only for itself.
    #[test]
    fn adding_a_member_takes_keys_only_for_itself((ids, weights) in arb_members()) {
        let n = ids.len();
        let a = Ring::build(&members(&ids[..n - 1], &weights[..n - 1]), 16);
        let b = Ring::build(&members(&ids, &weights), 16);
        for k in keys(2000) {
            let y = b.lookup(k).unwrap();
            if y != n - 1 {
                prop_assert_eq!(a.lookup(k).unwrap(), y);
            }
        }
    }
}

/// The radix index changes nothing: every lookup equals a plain binary search.
#[test]
fn indexed_lookup_equals_binary_search() {
    for n in [1usize, 2, 3, 10, 57] {
        let ids = ids(n);
        for vnodes in [1u32, 3, 100] {
            let r = Ring::build(&members(&ids, &vec![1; n]), vnodes);
            let plain = |k: u64| {
                let i = r.hashes.partition_point(|&h| h < k);
                r.owners.get(if i == r.len() { 0 } else { i })
            };
            for k in keys(3000).chain([0, u64::MAX, r.hashes[0], *r.hashes.last().unwrap()]) {
                assert_eq!(
                    r.lookup(k),
                    Some(plain(k)),
                    "n {n} vnodes {vnodes} key {k:#x}"
                );
            }
        }
    }
}

#[test]
fn moved_is_zero_for_the_same_ring_and_the_lost_share_for_a_removal() {
    let ids = ids(5);
    let full = Ring::build(&members(&ids, &[1; 5]), 64);
    assert_eq!(full.moved(&full, |a, b| a == b), 0.0);
    let without_2 = full.filtered(|m| m != 2);
    let share = full.shares()[2];
    assert!((full.moved(&without_2, |a, b| a == b) - share).abs() < 1e-12);
    let empty = full.filtered(|_| false);
    assert_eq!(full.moved(&empty, |a, b| a == b), 1.0);
    assert_eq!(empty.moved(&empty, |a, b| a == b), 0.0);
}

proptest! {
    /// The measured fraction agrees with sampled keys (to sampling error).
    #[test]
    fn moved_matches_sampled_keys(n in 2usize..8, gone in 0usize..8, w in 1u32..4) {
        let ids = ids(n);
        let a = Ring::build(&members(&ids, &vec![1; n]), 32);
        // A re-weighted ring: member `gone % n` gets weight w.
        let mut weights = vec![1; n];
        weights[gone % n] = w + 1;
        let b = Ring::build(&members(&ids, &weights), 32);
        let exact = a.moved(&b, |x, y| x == y);
        let sample = 20_000;
        let differ = keys(sample).filter(|&k| a.lookup(k) != b.lookup(k)).count();
        prop_assert!((exact - differ as f64 / sample as f64).abs() < 0.02, "{exact} vs {differ}");
    }
}
