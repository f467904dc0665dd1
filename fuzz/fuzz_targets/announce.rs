//! What a peer says on `[cluster] port` (a leaving node's UDP flows): any datagram
//! decodes to flows or is refused, never a panic; what decodes encodes back to the
//! same bytes (nothing is read that was not in them).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::dataplane::cluster::announce::{decode, encode, PER_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    if let Ok(flows) = decode(data) {
        if flows.len() <= PER_DATAGRAM {
            let again = encode(&flows);
            let whole: Vec<u8> = again.into_iter().flatten().collect();
            if flows.is_empty() {
                assert!(whole.is_empty());
            } else {
                assert_eq!(whole, data, "{flows:?}");
            }
        }
    }
});
