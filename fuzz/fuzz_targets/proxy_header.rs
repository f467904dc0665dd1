//! The PROXY protocol reader (v1 and v2): any bytes, and every cut of them, never
//! panic; a header is never longer than the bytes it came in; and a header cut short
//! anywhere reads as incomplete (the reader waits for the rest), never as invalid.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::proxy_protocol::{parse, Received};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Received::Header { len, .. } = &whole {
        assert!(
            *len > 0 && *len <= data.len(),
            "header of {len} bytes in {}",
            data.len()
        );
        for cut in 0..*len {
            let part = parse(&data[..cut]);
            assert_eq!(
                part,
                Received::Incomplete,
                "cut at {cut} of a {len}-byte header"
            );
        }
        // What follows the header is the client's data: it changes nothing.
        assert_eq!(parse(&data[..*len]), whole);
    }
});
