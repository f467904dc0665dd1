use std::cell::Cell;

use proptest::prelude::*;

use super::*;
use crate::balance::test_keys::keys;

fn backends(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Backend {
            id: format!("b{i}"),
            addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
            addr_text: format!("127.0.0.1:{}", 9000 + i),
            weight,
            set: None,
            backup: false,
            limits: Default::default(),
        })
        .collect()
}

/// Loads a test sets by hand, counting turns.
struct Held {
    open: Vec<u64>,
    turns: Cell<u64>,
}

impl Held {
    fn new(n: usize) -> Held {
        Held {
            open: vec![0; n],
            turns: Cell::new(0),
        }
    }
}

impl Loads for Held {
    fn open(&self, b: usize) -> u64 {
        self.open[b]
    }
    fn total(&self) -> u64 {
        self.open.iter().sum()
    }
    fn turn(&self) -> u64 {
        let t = self.turns.get();
        self.turns.set(t + 1);
        t
    }
}

fn policy(mode: Mode, factor: Option<f64>, b: &[Backend]) -> Policy {
    Policy::new(Balance { mode, factor }, b)
}

fn none(_: usize) -> bool {
    false
}

#[test]
fn on_an_idle_node_every_hashing_mode_answers_as_the_ring() {
    let b = backends(&[1, 2, 1, 3]);
    let s = Snapshot::new(b.clone(), 64);
    for (mode, factor) in [
        (Mode::Ring, None),
        (Mode::Ring, Some(1.25)),
        (Mode::LeastConnections, None),
    ] {
        let p = policy(mode, factor, &b);
        for k in keys(2000) {
            let c = p.choose(&s, k, &Idle::default(), none).unwrap();
            assert_eq!(c.backend, s.pick(k).unwrap(), "{mode:?} {factor:?}");
            assert!(!c.overflowed);
        }
    }
}

#[test]
fn the_cap_is_the_weighted_average_times_the_factor_rounded_up() {
    assert_eq!(cap(1.25, 300, 1, 3), 125);
    assert_eq!(cap(1.25, 1, 1, 3), 1);
    assert_eq!(cap(2.0, 10, 3, 5), 12);
    assert_eq!(cap(1.5, 0, 1, 0), 1);
}

/// The workload: 300 connections over 3 backends, 180 of them from one hot
/// source. Without a bound the hot source's backend holds ~222; with
/// `balance_factor = 1.25` no backend holds more than 125.
#[test]
fn a_hot_key_is_bounded_and_the_rest_stay_where_the_ring_says() {
    let b = backends(&[1, 1, 1]);
    let s = Snapshot::new(b.clone(), 160);
    let hot = keys(1).next().unwrap();
    let cold: Vec<u64> = keys(121).skip(1).collect();
    for factor in [None, Some(1.25)] {
        let p = policy(Mode::Ring, factor, &b);
        let mut loads = Held::new(3);
        let mut moved = 0;
        for i in 0..300 {
            let k = if i % 5 < 3 {
                hot
            } else {
                cold[i / 5 * 2 + i % 5 - 3]
            };
            let c = p.choose(&s, k, &loads, none).unwrap();
            if c.overflowed {
                moved += 1;
                assert_ne!(c.backend, s.pick(k).unwrap());
            } else {
                assert_eq!(c.backend, s.pick(k).unwrap());
            }
            loads.open[c.backend] += 1;
        }
        let max = *loads.open.iter().max().unwrap();
        match factor {
            None => assert!(max >= 180, "{:?}", loads.open),
            Some(_) => {
                assert!(max <= 125, "{:?}", loads.open);
                assert!(moved > 0);
            }
        }
    }
}

#[test]
fn least_connections_takes_the_least_loaded_per_weight_and_breaks_ties_by_the_ring() {
    let b = backends(&[1, 1, 2]);
    let s = Snapshot::new(b.clone(), 64);
    let p = policy(Mode::LeastConnections, None, &b);
    let mut loads = Held::new(3);
    loads.open = vec![3, 1, 4];
    for k in keys(200) {
        assert_eq!(p.choose(&s, k, &loads, none).unwrap().backend, 1);
    }
    // 2 of weight 1 is 4 of weight 2: a tie, which the ring breaks.
    loads.open = vec![2, 2, 4];
    for k in keys(500) {
        assert_eq!(
            p.choose(&s, k, &loads, none).unwrap().backend,
            s.pick(k).unwrap()
        );
    }
    // A tie between 0 and 1 only: the ring's pick when it is one of them, else the
    // first after it in backend order.
    loads.open = vec![1, 1, 5];
    for k in keys(500) {
        let want = match s.pick(k).unwrap() {
            2 => 0,
            r => r,
        };
        assert_eq!(p.choose(&s, k, &loads, none).unwrap().backend, want);
    }
    // Down backends and tried ones are passed over.
    let s = s.with_up(vec![true, false, true]);
    loads.open = vec![9, 0, 4];
    let c = p.choose(&s, 7, &loads, |b| b == 2).unwrap();
    assert_eq!(c.backend, 0);
}

#[test]
fn round_robin_takes_turns_in_weight_and_skips_the_down_and_the_tried() {
    let b = backends(&[2, 1, 1]);
    let s = Snapshot::new(b.clone(), 64);
    let p = policy(Mode::RoundRobin, None, &b);
    let loads = Held::new(3);
    let mut count = [0; 3];
    for k in keys(400) {
        count[p.choose(&s, k, &loads, none).unwrap().backend] += 1;
    }
    assert_eq!(count, [200, 100, 100]);
    let s = s.with_up(vec![true, false, true]);
    let mut count = [0; 3];
    for k in keys(300) {
        count[p
            .choose(&s, k, &loads, |b| b == 0 && k % 2 == 0)
            .unwrap()
            .backend] += 1;
    }
    assert_eq!(count[1], 0);
    assert!(count[0] > 0 && count[2] > 0, "{count:?}");
}

#[test]
fn nothing_live_is_no_choice_in_any_mode() {
    let b = backends(&[1, 1]);
    let s = Snapshot::new(b.clone(), 8).with_up(vec![false, false]);
    for mode in Mode::ALL {
        for factor in [None, Some(1.5)] {
            let p = policy(mode, factor, &b);
            assert_eq!(p.choose(&s, 1, &Held::new(2), none), None);
        }
    }
}

#[test]
fn mode_names_round_trip() {
    for m in Mode::ALL {
        assert_eq!(Mode::parse(m.name()), Some(m));
    }
    assert_eq!(Mode::parse("leastconn"), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Bounded loads: the choice is the ring's pick whenever that is under its cap;
    /// otherwise it is under its own cap (one always is), and it is the first such
    /// clockwise.
    #[test]
    fn a_bounded_choice_is_the_ring_pick_or_the_first_under_the_cap(
        weights in proptest::collection::vec(1u32..4, 1..8),
        open in proptest::collection::vec(0u64..40, 8),
        up in proptest::collection::vec(any::<bool>(), 8),
        factor in 1.01f64..3.0,
        key in any::<u64>(),
    ) {
        let n = weights.len();
        let b = backends(&weights);
        let mut up = up[..n].to_vec();
        up[0] = true;
        let s = Snapshot::new(b.clone(), 16).with_up(up.clone());
        let mut loads = Held::new(n);
        loads.open = open[..n].to_vec();
        let p = policy(Mode::Ring, Some(factor), &b);
        let c = p.choose(&s, key, &loads, none).unwrap();
        let total = loads.total() + 1;
        let lw = s.live_weight();
        let under = |i: usize| loads.open[i] < cap(factor, total, weights[i], lw);
        let first = s.pick(key).unwrap();
        let want = s.candidates(key).find(|&i| under(i)).unwrap();
        prop_assert_eq!(c.backend, want);
        prop_assert_eq!(c.overflowed, want != first);
        prop_assert!(up[c.backend]);
    }

    /// Least connections: never a backend with more per weight than another live
    /// one.
    #[test]
    fn least_connections_is_never_beaten(
        weights in proptest::collection::vec(1u32..5, 1..8),
        open in proptest::collection::vec(0u64..40, 8),
        key in any::<u64>(),
    ) {
        let n = weights.len();
        let b = backends(&weights);
        let s = Snapshot::new(b.clone(), 16);
        let mut loads = Held::new(n);
        loads.open = open[..n].to_vec();
        let c = policy(Mode::LeastConnections, None, &b)
            .choose(&s, key, &loads, none)
            .unwrap()
            .backend;
        for i in 0..n {
            let (a, wa) = (loads.open[c], u64::from(weights[c]));
            let (o, wo) = (loads.open[i], u64::from(weights[i]));
            prop_assert!(a * wo <= o * wa, "{c} beaten by {i}");
        }
    }
}

/// `slow_start`: a backend at r thousandths takes about r/1000 of the keys the ring
/// gives it, the keys it takes at a lower ramp stay its own at a higher one, and the
/// rest go on to a backend that is not ramping; nothing is refused.
#[test]
fn a_ramping_backend_takes_a_growing_fixed_part_of_its_keys() {
    let b = backends(&[1, 1, 1]);
    let s = Snapshot::new(b.clone(), 64);
    let p = policy(Mode::Ring, None, &b);
    let its: Vec<u64> = keys(6000).filter(|&k| s.pick(k) == Some(1)).collect();
    let mut before: Vec<u64> = Vec::new();
    for ramp in [0u16, 250, 500, 900] {
        let r = s.clone_all_up().with_ramp(Some(vec![1000, ramp, 1000]));
        let took: Vec<u64> = its
            .iter()
            .copied()
            .filter(|&k| p.choose(&r, k, &Idle::default(), none).unwrap().backend == 1)
            .collect();
        let share = took.len() as f64 / its.len() as f64;
        assert!(
            (share - f64::from(ramp) / 1000.0).abs() < 0.05,
            "ramp {ramp}: {share}"
        );
        assert!(
            before.iter().all(|k| took.contains(k)),
            "a key left b as it ramped up"
        );
        before = took;
    }
    // Alone, a backend at 0 still serves.
    let one = backends(&[1]);
    let s = Snapshot::new(one.clone(), 8).with_ramp(Some(vec![0]));
    assert_eq!(
        policy(Mode::Ring, None, &one)
            .choose(&s, 5, &Idle::default(), none)
            .unwrap()
            .backend,
        0
    );
}

#[test]
fn least_connections_and_round_robin_weigh_a_ramping_backend_by_its_ramp() {
    let b = backends(&[1, 1]);
    let s = Snapshot::new(b.clone(), 64).with_ramp(Some(vec![1000, 100]));
    // At 10%, 1 connection weighs as 10: 5 on the other backend is less.
    let mut loads = Held::new(2);
    loads.open = vec![5, 1];
    let p = policy(Mode::LeastConnections, None, &b);
    assert!(keys(100).all(|k| p.choose(&s, k, &loads, none).unwrap().backend == 0));
    loads.open = vec![11, 1];
    assert!(keys(100).all(|k| p.choose(&s, k, &loads, none).unwrap().backend == 1));
    let p = policy(Mode::RoundRobin, None, &b);
    let loads = Held::new(2);
    let took = keys(2000)
        .filter(|&k| p.choose(&s, k, &loads, none).unwrap().backend == 1)
        .count();
    // Its turns are every other one, each taken one time in ten.
    assert!((60..=140).contains(&took), "{took}");
}
