use super::*;
use crate::balance::test_keys::keys;

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            id: format!("b{i}"),
            addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
            addr_text: format!("127.0.0.1:{}", 9000 + i),
            set: None,
            backup: false,
            limits: Default::default(),
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

// Against the reference: the ring rebuilt without the backends that do not accept
// (`Ring::filtered`), its shares, and `Ring::moved` between two such rings.

use crate::balance::ring::{Member, Ring};
use proptest::prelude::*;

fn weighted(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Backend {
            weight: w,
            ..backends(i + 1).pop().unwrap()
        })
        .collect()
}

fn reference(backends: &[Backend], vnodes: u32, live: &[bool]) -> Ring {
    let members: Vec<Member<'_>> = backends
        .iter()
        .map(|b| Member {
            id: &b.id,
            weight: b.weight,
        })
        .collect();
    Ring::build(&members, vnodes).filtered(|m| live[m])
}

fn assert_like_reference(s: &Snapshot, b: &[Backend], vnodes: u32, live: &[bool]) {
    let r = reference(b, vnodes, live);
    for k in keys(2_000) {
        assert_eq!(s.pick(k), r.lookup(k), "key {k:#x}");
        let walk: Vec<usize> = s.candidates(k).collect();
        assert_eq!(walk, r.walk(k).collect::<Vec<_>>(), "walk from {k:#x}");
    }
    let want = r.shares();
    for (i, (got, want)) in s.shares().iter().zip(&want).enumerate() {
        assert!((got - want).abs() < 1e-12, "share of {i}: {got} vs {want}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any sequence of state changes, each derived from the last snapshot: picks,
    /// walks and shares equal the rebuilt ring's, and `moved` equals the key space
    /// whose owner differs between the two rebuilt rings.
    #[test]
    fn derived_snapshots_equal_rebuilt_rings(
        weights in proptest::collection::vec(1u32..4, 1..9),
        vnodes in 1u32..40,
        steps in proptest::collection::vec((proptest::collection::vec(any::<bool>(), 9), any::<bool>()), 1..8),
    ) {
        let b = weighted(&weights);
        let n = b.len();
        let mut s = Snapshot::new(b.clone(), vnodes);
        let mut was = vec![true; n];
        for (flags, fail_open) in steps {
            let accepting: Vec<bool> = flags[..n].to_vec();
            let next = s.with_states(vec![true; n], accepting.clone(), fail_open);
            let live = if fail_open && !accepting.iter().any(|&a| a) { vec![true; n] } else { accepting };
            assert_like_reference(&next, &b, vnodes, &live);
            let same = |x: usize, y: usize| x == y;
            let want = reference(&b, vnodes, &was).moved(&reference(&b, vnodes, &live), same);
            prop_assert!((next.moved() - want).abs() < 1e-12, "moved {} vs {}", next.moved(), want);
            prop_assert!((s.remapped(&next) - want).abs() < 1e-12, "remapped {} vs {}", s.remapped(&next), want);
            s = next;
            was = live;
        }
    }

    /// A rebased ring is the ring built from scratch, whatever was added, removed or
    /// re-weighted; and `remapped` across the two backend sets equals the reference.
    #[test]
    fn rebased_rings_equal_built_rings(
        before in proptest::collection::vec(0u32..4, 1..12),
        after in proptest::collection::vec(0u32..4, 1..12),
        vnodes in 1u32..30,
    ) {
        // Weight 0 means "not in this set"; ids are by position.
        let set = |ws: &[u32]| -> Vec<Backend> {
            ws.iter().enumerate().filter(|(_, &w)| w > 0).map(|(i, &w)| Backend {
                weight: w,
                ..backends(i + 1).pop().unwrap()
            }).collect()
        };
        let (old, new) = (set(&before), set(&after));
        let a = Snapshot::new(old.clone(), vnodes);
        let rebased = a.rebased(new.clone(), vnodes);
        let built = Snapshot::new(new.clone(), vnodes);
        prop_assert_eq!(&*rebased.ring, &*built.ring);
        prop_assert_eq!(&*rebased.base_arcs, &*built.base_arcs);
        let ra = reference(&old, vnodes, &vec![true; old.len()]);
        let rb = reference(&new, vnodes, &vec![true; new.len()]);
        let want = ra.moved(&rb, |x, y| old[x].id == new[y].id);
        prop_assert!((a.remapped(&rebased) - want).abs() < 1e-12);
    }
}

#[test]
fn a_mass_change_and_a_single_change_agree_with_the_reference() {
    // 300 backends: one change touches few points (the incremental path); most of
    // them at once touch more than an eighth of the ring (the one-pass path).
    let b = backends(300);
    let s = Snapshot::new(b.clone(), 16);
    let mut one = vec![true; 300];
    one[17] = false;
    let a = s.with_states(vec![true; 300], one.clone(), false);
    assert_like_reference(&a, &b, 16, &one);
    let mut most = vec![false; 300];
    most[5] = true;
    most[250] = true;
    let m = a.with_states(vec![true; 300], most.clone(), false);
    assert_like_reference(&m, &b, 16, &most);
    let want = reference(&b, 16, &one).moved(&reference(&b, 16, &most), |x, y| x == y);
    assert!((m.moved() - want).abs() < 1e-12);
    let back = m.with_states(vec![true; 300], vec![true; 300], false);
    assert_like_reference(&back, &b, 16, &[true; 300]);
    assert!((back.moved() - (1.0 - s.shares()[5] - s.shares()[250])).abs() < 1e-9);
}
