//! Ring cost: build and lookup for 10, 100 and 1,000 backends at the default vnodes,
//! plus the key hash and a lookup that walks past down backends; and at 4,000
//! backends, what a health transition costs the control plane (a snapshot derived
//! from the last one) and what a pick costs when one backend of 4,000 is up.
//!
//!     cargo bench --bench ring

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringway::balance::hash::{flow_hash, HashMode, PROTO_TCP};
use ringway::balance::ring::{Member, Ring, DEFAULT_VNODES};
use ringway::balance::{Backend, Snapshot};

fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256))
        .collect()
}

fn keys() -> Vec<u64> {
    let src: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let dst: SocketAddr = "198.51.100.1:443".parse().unwrap();
    (0..4096u16)
        .map(|p| {
            flow_hash(
                HashMode::FiveTuple,
                PROTO_TCP,
                SocketAddr::new(src.ip(), p),
                dst,
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("ring");
    for n in [10usize, 100, 1000] {
        let ids = ids(n);
        let members: Vec<Member<'_>> = ids.iter().map(|id| Member { id, weight: 1 }).collect();
        g.sample_size(if n == 1000 { 10 } else { 30 });
        g.bench_with_input(BenchmarkId::new("build", n), &members, |b, m| {
            b.iter(|| Ring::build(black_box(m), DEFAULT_VNODES))
        });
        let ring = Ring::build(&members, DEFAULT_VNODES);
        g.sample_size(100);
        g.bench_with_input(BenchmarkId::new("lookup", n), &ring, |b, r| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                r.lookup(black_box(keys[i]))
            })
        });
        let backends = backends(&ids);
        let snap = Snapshot::new(backends, DEFAULT_VNODES);
        // A third of the backends down: lookups go through the filtered live ring.
        let down = snap.with_up((0..n).map(|i| i % 3 != 0).collect());
        g.bench_with_input(BenchmarkId::new("pick_third_down", n), &down, |b, s| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                s.pick(black_box(keys[i]))
            })
        });
    }
    g.finish();
    // Thousands of backends: one transition, and a pick through a sparse live set.
    let mut g = c.benchmark_group("ring_4000");
    g.sample_size(20);
    let ids = ids(4000);
    let backends = backends(&ids);
    let snap = Snapshot::new(backends, DEFAULT_VNODES);
    let mut one_down = vec![true; 4000];
    one_down[1234] = false;
    g.bench_function("one_transition", |b| {
        b.iter(|| snap.with_up(black_box(one_down.clone())))
    });
    let mut only_one = vec![false; 4000];
    only_one[7] = true;
    let sparse = snap.with_up(only_one);
    g.bench_function("pick_one_of_4000_up", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 4095;
            sparse.pick(black_box(keys[i]))
        })
    });
    g.bench_function("pick_all_up", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 4095;
            snap.pick(black_box(keys[i]))
        })
    });
    g.finish();
    let src: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
    let dst: SocketAddr = "[2001:db8::2]:443".parse().unwrap();
    c.bench_function("flow_hash/five_tuple", |b| {
        b.iter(|| {
            flow_hash(
                HashMode::FiveTuple,
                PROTO_TCP,
                black_box(src),
                black_box(dst),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// One backend of weight 1 per id (their addresses are never used).
fn backends(ids: &[String]) -> Vec<Backend> {
    ids.iter()
        .map(|id| Backend {
            id: id.clone(),
            addr: "127.0.0.1:1".parse().unwrap(),
            addr_text: id.clone(),
            weight: 1,
            set: None,
            backup: false,
            limits: Default::default(),
        })
        .collect()
}
