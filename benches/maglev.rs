//! Maglev beside the ring, at 10, 100 and 1,000 equal backends: how even each is
//! (the most and least loaded backend's share over the mean), what one removal
//! moves (the removed backend's keys, and keys that move between backends that
//! stayed), and what building a Maglev table costs the control plane.
//!
//!     cargo bench --bench maglev

use std::time::Instant;

use ringway::balance::maglev::{table_size, Maglev};
use ringway::balance::ring::DEFAULT_VNODES;
use ringway::balance::{Backend, Snapshot};

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

fn spread(shares: &[f64]) -> (f64, f64) {
    let live: Vec<f64> = shares.iter().copied().filter(|&s| s > 0.0).collect();
    let mean = live.iter().sum::<f64>() / live.len() as f64;
    let max = live.iter().copied().fold(0.0, f64::max);
    let min = live.iter().copied().fold(1.0, f64::min);
    (max / mean, min / mean)
}

fn main() {
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
