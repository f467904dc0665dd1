use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn limits(max_open: Option<u32>, per_second: Option<u32>) -> SourceLimits {
    let rate = per_second.map(|r| Rate::new(r, Duration::from_secs(1)));
    SourceLimits::new(max_open, rate, 32, 64)
}

#[test]
fn at_most_max_open_per_source_and_others_untouched() {
    let l = limits(Some(3), None);
    let mut s = Shard::default();
    let a = ip("192.0.2.1");
    for _ in 0..3 {
        assert_eq!(s.admit(a, &l, 100, 0), Ok(()));
    }
    assert_eq!(s.admit(a, &l, 100, 0), Err(Refusal::Limit));
    assert_eq!(s.open(&a), 3, "a refusal changes nothing");
    let b = ip("192.0.2.2");
    assert_eq!(
        s.admit(b, &l, 100, 0),
        Ok(()),
        "another source is not affected"
    );
    s.release(&a, None, 0);
    assert_eq!(s.admit(a, &l, 100, 0), Ok(()));
    for _ in 0..3 {
        s.release(&a, None, 0);
    }
    s.release(&b, None, 0);
    assert!(
        s.is_empty(),
        "without a rate, a source with nothing open is forgotten"
    );
    s.release(&a, None, 0);
    assert_eq!(s.open(&a), 0, "releasing what is not there does nothing");
    assert_eq!(
        Shard::default().admit(a, &limits(Some(0), None), 100, 0),
        Err(Refusal::Limit)
    );
}

#[test]
fn a_burst_of_r_then_r_per_second() {
    let l = limits(None, Some(10));
    let mut s = Shard::default();
    let a = ip("2001:db8::1");
    for _ in 0..10 {
        assert_eq!(s.admit(a, &l, 100, 5_000), Ok(()));
    }
    assert_eq!(s.admit(a, &l, 100, 5_000), Err(Refusal::Rate));
    assert_eq!(
        s.admit(a, &l, 100, 5_099),
        Err(Refusal::Rate),
        "99 ms: not a whole token"
    );
    assert_eq!(s.admit(a, &l, 100, 5_100), Ok(()), "100 ms: one token");
    assert_eq!(s.admit(a, &l, 100, 5_100), Err(Refusal::Rate));
    // Tokens stop at the burst: a long pause buys ten, not more.
    for _ in 0..10 {
        assert_eq!(s.admit(a, &l, 100, 60_000), Ok(()));
    }
    assert_eq!(s.admit(a, &l, 100, 60_000), Err(Refusal::Rate));
    assert_eq!(s.admit(ip("2001:db9::1"), &l, 100, 60_000), Ok(()));
    // Closing gives no token back, and the entry stays while its bucket is not full.
    for _ in 0..21 {
        s.release(&a, l.rate.as_ref(), 60_000);
    }
    assert_eq!(s.admit(a, &l, 100, 60_000), Err(Refusal::Rate));
    assert_eq!(s.len(), 2);
    s.release(&ip("2001:db9::1"), l.rate.as_ref(), 62_000);
    assert_eq!(s.len(), 1, "a full bucket and nothing open: forgotten");
}

#[test]
fn time_going_backwards_between_workers_gives_no_tokens() {
    let l = limits(None, Some(1));
    let mut s = Shard::default();
    let a = ip("192.0.2.9");
    assert_eq!(s.admit(a, &l, 100, 10_000), Ok(()));
    assert_eq!(s.admit(a, &l, 100, 9_990), Err(Refusal::Rate));
    assert_eq!(s.admit(a, &l, 100, 10_999), Err(Refusal::Rate));
    assert_eq!(s.admit(a, &l, 100, 11_000), Ok(()));
}

#[test]
fn sources_are_prefixes() {
    let l = SourceLimits::new(Some(1), None, 24, 64);
    assert_eq!(l.source_of(ip("192.0.2.77")), ip("192.0.2.0"));
    assert_eq!(l.source_of(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
    assert_eq!(
        l.source_of(ip("2001:db8:1:2:3:4:5:6")),
        ip("2001:db8:1:2::")
    );
    let all = SourceLimits::new(Some(1), None, 0, 128);
    assert_eq!(all.source_of(ip("203.0.113.5")), ip("0.0.0.0"));
    assert_eq!(all.source_of(ip("2001:db8::5")), ip("2001:db8::5"));
    assert_eq!(limits(None, None).source_of(ip("10.1.2.3")), ip("10.1.2.3"));
}

#[test]
fn a_full_table_evicts_idle_sources_never_busy_ones() {
    let l = limits(Some(5), Some(100));
    let mut s = Shard::default();
    // Four sources hold a connection; four more only have bucket state.
    for i in 0..4u8 {
        assert_eq!(s.admit(IpAddr::from([10, 0, 0, i]), &l, 8, 0), Ok(()));
    }
    for i in 0..4u8 {
        let src = IpAddr::from([10, 0, 1, i]);
        assert_eq!(s.admit(src, &l, 8, 0), Ok(()));
        s.release(&src, l.rate.as_ref(), 0);
    }
    assert_eq!(s.len(), 8);
    // A flood of new sources: each evicts an idle one, never a busy one.
    for i in 0..100u8 {
        let src = IpAddr::from([172, 16, 0, i]);
        assert_eq!(s.admit(src, &l, 8, 1), Ok(()), "source {i}");
        s.release(&src, l.rate.as_ref(), 1);
        assert!(s.len() <= 8);
    }
    for i in 0..4u8 {
        assert_eq!(
            s.open(&IpAddr::from([10, 0, 0, i])),
            1,
            "busy source {i} kept"
        );
    }
    // Every entry busy: a new source is refused, not counted wrong.
    let mut s = Shard::default();
    for i in 0..8u8 {
        assert_eq!(s.admit(IpAddr::from([10, 0, 0, i]), &l, 8, 0), Ok(()));
    }
    assert_eq!(s.admit(ip("10.9.9.9"), &l, 8, 0), Err(Refusal::Full));
    assert_eq!(s.len(), 8);
    s.release(&IpAddr::from([10, 0, 0, 3]), None, 0);
    assert_eq!(s.admit(ip("10.9.9.9"), &l, 8, 0), Ok(()), "room again");
}

#[test]
fn a_table_spreads_over_shards_and_stays_bounded() {
    let t = SourceTable::new(1024, 2);
    let l = limits(None, Some(5));
    for i in 0..20_000u32 {
        let src = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        assert_eq!(t.admit(src, &l, 0), Ok(()));
        t.release(&src, l.rate.as_ref(), 0);
    }
    let per_shard = 1024usize.div_ceil(t.shards.len());
    assert!(t.len() <= per_shard * t.shards.len(), "{}", t.len());
    assert!(t.len() >= 900, "the shards are all used: {}", t.len());
    t.set_capacity(100);
    assert!(t.len() <= 100 + t.shards.len(), "shrunk: {}", t.len());
    assert!(SourceTable::new(16, 64).shards.len() == 1);
}

/// What happens to one source, as a naive model: every admission's time and every
/// open connection, no table, no eviction.
#[derive(Default)]
struct Model {
    open: HashMap<IpAddr, u32>,
    bucket: HashMap<IpAddr, (u64, Millis)>,
}

impl Model {
    fn admit(&mut self, src: IpAddr, l: &SourceLimits, now: Millis) -> Result<(), Refusal> {
        let open = self.open.get(&src).copied().unwrap_or(0);
        if l.max_open.is_some_and(|m| open >= m) {
            return Err(Refusal::Limit);
        }
        if let Some(r) = &l.rate {
            // In tokens of 1/period_ms: every millisecond adds `count`.
            let (tokens, at) = self.bucket.get(&src).copied().unwrap_or((r.burst(), now));
            let tokens = (tokens + now.saturating_sub(at) * r.count).min(r.burst());
            self.bucket.insert(src, (tokens, at.max(now)));
            if tokens < r.period_ms {
                return Err(Refusal::Rate);
            }
            self.bucket.insert(src, (tokens - r.period_ms, at.max(now)));
        }
        *self.open.entry(src).or_default() += 1;
        Ok(())
    }

    fn release(&mut self, src: IpAddr) {
        if let Some(n) = self.open.get_mut(&src) {
            *n = n.saturating_sub(1);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Admit(u8),
    Release(u8),
    Wait(u16),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0u8..6).prop_map(Op::Admit),
            2 => (0u8..6).prop_map(Op::Release),
            1 => (0u16..800).prop_map(Op::Wait),
        ],
        1..200,
    )
}

proptest! {
    /// With room for every source, the table decides exactly as the naive model.
    #[test]
    fn with_room_it_agrees_with_the_model(
        max_open in proptest::option::of(0u32..4),
        rate in proptest::option::of(1u32..8),
        ops in ops(),
    ) {
        let l = limits(max_open, rate);
        let (mut s, mut m, mut now) = (Shard::default(), Model::default(), 0);
        for op in ops {
            match op {
                Op::Admit(i) => {
                    let src = IpAddr::from([192, 0, 2, i]);
                    prop_assert_eq!(s.admit(src, &l, 64, now), m.admit(src, &l, now));
                }
                Op::Release(i) => {
                    let src = IpAddr::from([192, 0, 2, i]);
                    s.release(&src, l.rate.as_ref(), now);
                    m.release(src);
                }
                Op::Wait(ms) => now += u64::from(ms),
            }
            for i in 0..6u8 {
                let src = IpAddr::from([192, 0, 2, i]);
                prop_assert_eq!(s.open(&src), m.open.get(&src).copied().unwrap_or(0));
            }
        }
    }

    /// With little room: never more entries than room, open counts always right, and
    /// a refusal for lack of room only when every source in the table holds something.
    #[test]
    fn without_room_it_stays_bounded_and_counts_right(
        cap in 1usize..5,
        rate in proptest::option::of(1u32..8),
        ops in ops(),
    ) {
        let l = limits(None, rate);
        let (mut s, mut open, mut now) = (Shard::default(), HashMap::new(), 0);
        for op in ops {
            match op {
                Op::Admit(i) => {
                    let src = IpAddr::from([192, 0, 2, i]);
                    match s.admit(src, &l, cap, now) {
                        Ok(()) => *open.entry(src).or_insert(0u32) += 1,
                        Err(Refusal::Full) => {
                            let busy = open.values().filter(|&&n| n > 0).count();
                            prop_assert!(busy >= cap.min(EVICTION_TRIES), "{busy} busy of {cap}");
                        }
                        Err(_) => {}
                    }
                }
                Op::Release(i) => {
                    let src = IpAddr::from([192, 0, 2, i]);
                    s.release(&src, l.rate.as_ref(), now);
                    if let Some(n) = open.get_mut(&src) {
                        *n = n.saturating_sub(1);
                    }
                }
                Op::Wait(ms) => now += u64::from(ms),
            }
            prop_assert!(s.len() <= cap);
            for (src, n) in &open {
                prop_assert_eq!(s.open(src), *n);
            }
        }
    }
}
