//! The ring: random backend sets, weights, vnodes, down states and keys; every lookup
//! agrees with a naive model written from the hash contract (docs/hashing.md): points
//! at XXH3-64("{id}#{i}") for i < weight x vnodes, sorted by hash then id, a key owned
//! by the first point at or after it (wrapping) whose backend is up.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::balance::hash::vnode_hash;
use ringway::balance::{Backend, Snapshot};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(head % 12) + 1;
    let vnodes = u32::from(head / 12 % 16) + 1;
    if rest.len() < n * 2 {
        return;
    }
    let (spec, keys) = rest.split_at(n * 2);
    let backends: Vec<Backend> = (0..n)
        .map(|i| {
            // Ids may collide in their hashes' order but not in name.
            let id = format!("b{}-{}", i, spec[2 * i] % 7);
            Backend {
                id,
                addr: "192.0.2.1:80".parse().unwrap(),
                addr_text: "192.0.2.1:80".into(),
                weight: u32::from(spec[2 * i + 1] % 4) + 1,
                set: None,
                backup: false,
                limits: Default::default(),
            }
        })
        .collect();
    let up: Vec<bool> = (0..n).map(|i| spec[2 * i] & 0x80 == 0).collect();
    let snapshot = Snapshot::new(backends.clone(), vnodes).with_up(up.clone());
    // The model.
    let mut points: Vec<(u64, &str, usize)> = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        for v in 0..b.weight * vnodes {
            points.push((vnode_hash(&b.id, v), b.id.as_str(), i));
        }
    }
    points.sort();
    let live: Vec<&(u64, &str, usize)> = points.iter().filter(|p| up[p.2]).collect();
    for key in keys.chunks(8) {
        let mut k = [0u8; 8];
        k[..key.len()].copy_from_slice(key);
        let key = u64::from_le_bytes(k);
        let want = live
            .iter()
            .find(|p| p.0 >= key)
            .or(live.first())
            .map(|p| p.2);
        assert_eq!(snapshot.pick(key), want, "key {key:#x}");
    }
});
