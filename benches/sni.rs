//! What reading the server name costs per connection or flow: a real ClientHello
//! (OpenSSL 3.0, 517 bytes) in one read, a 2 KB one over two records in two reads,
//! and the RFC 9001 QUIC Initial (1,200 bytes: header protection off, AES-128-GCM
//! open, CRYPTO frames). The bound for the TLS parse is 1 µs.
//!
//!     cargo bench --bench sni

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringway::sni::quic::QuicHello;
use ringway::sni::tls::TlsHello;

fn bench(c: &mut Criterion) {
    let hello = include_bytes!("../src/sni/tls/openssl3-api.example.bin");
    let big = include_bytes!("../src/sni/tls/openssl3-2k-big.example.bin");
    let payload = &big[5..];
    let mut split = Vec::new();
    for part in [&payload[..1000], &payload[1000..]] {
        split.extend([22, 3, 1]);
        split.extend((part.len() as u16).to_be_bytes());
        split.extend(part);
    }
    let quic: Vec<u8> = {
        let t: String = include_str!("../src/sni/quic/rfc9001_a2.hex")
            .split_whitespace()
            .collect();
        (0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut g = c.benchmark_group("sni");
    g.bench_function("tls_517B_one_read", |b| {
        b.iter(|| TlsHello::new().feed(black_box(hello)))
    });
    g.bench_function("tls_2KB_two_records_two_reads", |b| {
        b.iter(|| {
            let mut r = TlsHello::new();
            r.feed(black_box(&split[..1005]));
            r.feed(black_box(&split[1005..]))
        })
    });
    g.bench_function("quic_v1_initial", |b| {
        b.iter(|| QuicHello::new().feed(black_box(&quic)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
