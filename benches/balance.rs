//! What choosing a backend costs a new connection in each `balance` mode, at 10, 100
//! and 1,000 backends, through the data plane's own loads (one shared atomic per
//! backend and per pool, read through its counters): the plain ring, the ring bounded
//! by `balance_factor = 1.25` with a hot backend at its cap (so some keys walk on),
//! least connections, and round robin. The budget: <= 100 ns a pick. Then
//! what counting costs a connection (a claim and its release), with and without the
//! least-connections tree to keep. First, printed: Maglev beside the ring at 10, 100
//! and 1,000 equal backends: how even each is (the most and least loaded backend's
//! share over the mean), what one removal moves (the removed backend's keys, and
//! keys that move between backends that stayed), and one cold build of each.
//!
//!     cargo bench --bench balance

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringway::balance::maglev::{table_size, Maglev};
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
                limits: Default::default(),
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

criterion_group!(benches, maglev_beside_the_ring, bench);
fn spread(shares: &[f64]) -> (f64, f64) {
    let live: Vec<f64> = shares.iter().copied().filter(|&s| s > 0.0).collect();
    let mean = live.iter().sum::<f64>() / live.len() as f64;
    let max = live.iter().copied().fold(0.0, f64::max);
    let min = live.iter().copied().fold(1.0, f64::min);
    (max / mean, min / mean)
}

/// Maglev beside the ring (printed, not timed by criterion): balance, disruption and
/// one cold build of each.
fn maglev_beside_the_ring(_: &mut Criterion) {
    println!("| backends | mode | max / mean | min / mean | removed backend's keys | moved between others | build |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for n in [10usize, 100, 1000] {
        let b = backends(n);
        let gone = n / 3;
        // The ring: shares are exact arcs; a removal moves exactly the removed arcs.
        let t0 = Instant::now();
        let ring = Snapshot::new(b.clone(), DEFAULT_VNODES);
        let ring_build = t0.elapsed();
        let (rmax, rmin) = spread(&ring.shares());
        let mut up = vec![true; n];
        up[gone] = false;
        let less = ring.with_up(up.clone());
        let own = ring.shares()[gone];
        let moved = ring.remapped(&less);
        println!(
            "| {n} | ring ({DEFAULT_VNODES} vnodes) | {rmax:.3} | {rmin:.3} | {:.3}% | {:.4}% | {:.1} ms |",
            own * 100.0,
            (moved - own).max(0.0) * 100.0,
            ring_build.as_secs_f64() * 1e3
        );
        // Maglev: count entries.
        let m = table_size(n);
        let t0 = Instant::now();
        let all = Maglev::build(&b, &vec![true; n], m);
        let mag_build = t0.elapsed();
        let less = Maglev::build(&b, &up, m);
        let mut count = vec![0u64; n];
        let (mut own, mut others) = (0u64, 0u64);
        for k in 0..m {
            let (x, y) = (all.lookup(k).unwrap(), less.lookup(k).unwrap());
            count[x] += 1;
            if x == gone {
                own += 1;
            } else if x != y {
                others += 1;
            }
        }
        let shares: Vec<f64> = count.iter().map(|&c| c as f64 / m as f64).collect();
        let (mmax, mmin) = spread(&shares);
        println!(
            "| {n} | maglev (M = {m}) | {mmax:.3} | {mmin:.3} | {:.3}% | {:.4}% | {:.1} ms |",
            own as f64 / m as f64 * 100.0,
            others as f64 / m as f64 * 100.0,
            mag_build.as_secs_f64() * 1e3
        );
    }
}

criterion_main!(benches);
