//! The server-name readers: any bytes as a TCP stream's first bytes (TLS ClientHello)
//! and as a flow's first datagrams (QUIC Initial) never panic, and the TLS reader
//! answers the same however the bytes are cut into reads; once it names a server, no
//! earlier cut has named another.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::sni::quic::QuicHello;
use ringway::sni::tls::TlsHello;
use ringway::sni::Verdict;

fuzz_target!(|data: &[u8]| {
    let whole = TlsHello::new().feed(data);
    let cut = data.first().map_or(0, |&b| usize::from(b) * data.len() / 256);
    let mut split = TlsHello::new();
    let first = split.feed(&data[..cut]);
    let second = split.feed(&data[cut..]);
    assert_eq!(whole, second, "cut at {cut}");
    if first != Verdict::NeedMore {
        assert_eq!(first, whole, "an early answer that changed");
    }
    // As datagrams: the whole input, then its halves as two datagrams.
    let _ = QuicHello::new().feed(data);
    let mut q = QuicHello::new();
    let _ = q.feed(&data[..cut]);
    let _ = q.feed(&data[cut..]);
});
