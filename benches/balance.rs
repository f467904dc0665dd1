//! What choosing a backend costs a new connection in each `balance` mode, at 10, 100
//! and 1,000 backends, through the data plane's own loads (one shared atomic per
//! backend and per pool, read through its counters): the plain ring, the ring bounded
//! by `balance_factor = 1.25` with a hot backend at its cap (so some keys walk on),
//! least connections, and round robin. The budget: <= 100 ns a pick. Then
//! what counting costs a connection (a claim and its release), with and without the
//! least-connections tree to keep.
//!
//!     cargo bench --bench balance

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringway::balance::ring::DEFAULT_VNODES;
use ringway::balance::{Backend, Balance, Mode, Policy, Snapshot};
use ringway::dataplane::load::{Claim, Least};
use ringway::dataplane::stats::BackendStats;
use ringway::dataplane::{BackendTable, PoolRouting, PoolShared};

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let addr = format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256);
            Backend {
                id: addr.clone(),
                addr: addr.parse().unwrap(),
                addr_text: addr,
                weight: 1,
                set: None,
                backup: false,
            }
        })
        .collect()
}

/// A pool of `n` backends balanced by `balance`, with connections held open: 20 on
/// average, and backend 0 at 1.25 x the average (the bound's cap).
fn pool(n: usize, balance: Balance) -> (PoolRouting, Vec<Claim>) {
    let b = backends(n);
    let shared = PoolShared::detached("bench");
    let stats: Vec<Arc<BackendStats>> = b
        .iter()
        .map(|b| Arc::new(BackendStats::new(&b.id, b.addr, 2, Arc::clone(&shared))))
        .collect();
    let mut held = Vec::new();
    for (i, s) in stats.iter().enumerate() {
        let open = if i == 0 { 25 } else { 15 + (i * 7) % 10 };
        held.extend((0..open).map(|_| Claim::new(Arc::clone(s))));
    }
    let snapshot = Snapshot::new(b.clone(), DEFAULT_VNODES);
    let table = Arc::new(BackendTable::new(stats));
    // As the control plane publishes it: a least-connections pool keeps its tree.
    let least = (balance.mode == Mode::LeastConnections)
        .then(|| Arc::new(Least::new(&snapshot, Arc::clone(&table))));
    shared.set_least(least.clone());
    let routing = PoolRouting {
        shared,
        policy: Policy::new(balance, &b).for_snapshot(&snapshot),
        snapshot,
        backends: table,
        loops: false,
        least,
    };
    (routing, held)
}

fn keys() -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let modes = [
        ("ring", Balance::default()),
        (
            "ring_bounded",
            Balance {
                mode: Mode::Ring,
                factor: Some(1.25),
            },
        ),
        (
            "least_connections",
            Balance {
                mode: Mode::LeastConnections,
                factor: None,
            },
        ),
        (
            "round_robin",
            Balance {
                mode: Mode::RoundRobin,
                factor: None,
            },
        ),
        (
            "maglev",
            Balance {
                mode: Mode::Maglev,
                factor: None,
            },
        ),
    ];
    let mut g = c.benchmark_group("choose");
    g.sample_size(50);
    for n in [10usize, 100, 1000] {
        for (name, balance) in modes {
            let (routing, _held) = pool(n, balance);
            g.bench_with_input(BenchmarkId::new(name, n), &routing, |b, r| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & 4095;
                    r.choose(black_box(keys[i]), |_| false).map(|c| c.0)
                })
            });
        }
    }
    g.finish();
    // What counting costs a connection: one claim and its release (open and close),
    // with the least-connections tree kept up to date and without one.
    let mut g = c.benchmark_group("claim_release");
    g.sample_size(50);
    for (name, balance) in [modes[0], modes[2]] {
        let (routing, _held) = pool(1000, balance);
        g.bench_with_input(BenchmarkId::new(name, 1000), &routing, |b, r| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 7) % 1000;
                drop(Claim::new(Arc::clone(&r.backends[black_box(i)])))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
