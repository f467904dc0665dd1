use proptest::prelude::*;

use super::build::{datagrams, initial};
use super::*;
use crate::sni::client_hello::build::{message, Parts};
use crate::sni::ServerName;

fn hex(text: &str) -> Vec<u8> {
    let t: String = text.split_whitespace().collect();
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
        .collect()
}

fn name(n: &str) -> Verdict {
    Verdict::Name(ServerName::new(n.as_bytes()).unwrap())
}

const DCID: &[u8] = &[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

/// RFC 9001 A.2 and RFC 9369 A.2: the same ClientHello (for "example.com") in a v1
/// and a v2 Initial, byte for byte as the RFCs print them.
#[test]
fn the_rfc_client_initials() {
    for (file, v) in [
        (include_str!("rfc9001_a2.hex"), Version::V1),
        (include_str!("rfc9369_a2.hex"), Version::V2),
    ] {
        let packet = hex(file);
        assert_eq!(packet.len(), 1200);
        assert_eq!(Packet::parse(&packet).unwrap().version(), v);
        assert_eq!(QuicHello::new().feed(&packet), name("example.com"), "{v:?}");
        // One bit off anywhere in the protected part: it does not open.
        let mut bad = packet.clone();
        bad[600] ^= 1;
        assert_eq!(
            QuicHello::new().feed(&bad),
            Verdict::Not("not QUIC: an Initial that does not open")
        );
    }
}

fn pq_hello(n: &str) -> Vec<u8> {
    message(&Parts::sized(n, 2100))
}

#[test]
fn a_post_quantum_hello_over_two_datagrams() {
    for v in [Version::V1, Version::V2] {
        let d = datagrams(v, DCID, &pq_hello("Big.Example"), 1100, 1, |_| {});
        assert_eq!(d.len(), 2);
        let mut r = QuicHello::new();
        assert_eq!(r.feed(&d[0]), Verdict::NeedMore);
        assert_eq!(r.feed(&d[1]), name("big.example"));
        // Second datagram first.
        let mut r = QuicHello::new();
        assert_eq!(r.feed(&d[1]), Verdict::NeedMore);
        assert_eq!(r.feed(&d[0]), name("big.example"));
    }
}

#[test]
fn frames_in_any_order_repeated() {
    let hello = pq_hello("chaos.example");
    let d = datagrams(Version::V1, DCID, &hello, 97, 4, |f| {
        f.reverse();
        let again = f[3].clone();
        f.push(again);
    });
    let mut r = QuicHello::new();
    let answers: Vec<Verdict> = d.iter().map(|x| r.feed(x)).collect();
    assert_eq!(answers.last(), Some(&name("chaos.example")));
    assert!(answers[..answers.len() - 1]
        .iter()
        .all(|v| *v == Verdict::NeedMore));
}

#[test]
fn what_is_not_quic() {
    let dns = hex("abcd01000001000000000000076578616d706c6503636f6d0000010001");
    let short = {
        let mut p = initial(Version::V1, DCID, 0, &[1], 1200);
        p[0] &= 0x7f;
        p
    };
    let other_version = {
        let mut p = initial(Version::V1, DCID, 0, &[1], 1200);
        p[1..5].copy_from_slice(&0xff00_001du32.to_be_bytes());
        p
    };
    for (d, why) in [
        (&dns[..], "not QUIC: the fixed bit is clear"),
        (&short[..], "not QUIC: a short header packet first"),
        (&other_version[..], "not QUIC v1 or v2: another version"),
        (
            &[0xc0, 0, 0, 0, 1, 21][..],
            "not QUIC: a connection ID over 20 bytes",
        ),
        (
            &[0xc0, 0, 0, 0][..],
            "malformed QUIC packet: a field runs past its end",
        ),
        (&[][..], "not QUIC: no Initial"),
    ] {
        assert_eq!(QuicHello::new().feed(d), Verdict::Not(why), "{why}");
    }
    // A Handshake packet first, then nothing.
    let mut hs = initial(Version::V1, DCID, 0, &[1], 1200);
    hs[0] = (hs[0] & 0xcf) | 0x20;
    assert_eq!(
        QuicHello::new().feed(&hs),
        Verdict::Not("not QUIC: the first packet is not an Initial")
    );
    // A STREAM frame in an Initial.
    let stream = initial(Version::V1, DCID, 0, &[0x08, 0, 0], 1200);
    assert_eq!(
        QuicHello::new().feed(&stream),
        Verdict::Not("not QUIC: a frame an Initial cannot carry")
    );
}

#[test]
fn a_spoofed_datagram_after_the_first_spoils_nothing() {
    let d = datagrams(Version::V1, DCID, &pq_hello("a.example"), 1100, 1, |_| {});
    let mut r = QuicHello::new();
    assert_eq!(r.feed(&d[0]), Verdict::NeedMore);
    assert_eq!(r.feed(b"garbage"), Verdict::NeedMore);
    let mut forged = d[1].clone();
    forged[900] ^= 0xff;
    assert_eq!(r.feed(&forged), Verdict::NeedMore);
    assert_eq!(r.feed(&d[1]), name("a.example"));
}

#[test]
fn a_hello_that_never_completes_is_given_up_on() {
    let d = datagrams(Version::V1, DCID, &pq_hello("a.example"), 1100, 1, |_| {});
    let mut r = QuicHello::new();
    for _ in 1..MAX_DATAGRAMS {
        assert_eq!(r.feed(&d[0]), Verdict::NeedMore);
    }
    assert!(matches!(r.feed(&d[0]), Verdict::Not(_)));
    assert!(matches!(r.feed(&d[1]), Verdict::Not(_)), "the answer stays");
}

#[test]
fn coalesced_packets_after_the_initial_are_passed_over() {
    let mut d = initial(
        Version::V2,
        DCID,
        0,
        &build::crypto_frame(0, &pq_hello("x")[..1000]),
        0,
    );
    // A 0-RTT packet after it (type 0b10 in v2): skipped by its length.
    let mut zero_rtt = initial(Version::V2, DCID, 1, &[1], 0);
    zero_rtt[0] = (zero_rtt[0] & 0xcf) | 0x20;
    d.extend(&zero_rtt);
    assert_eq!(QuicHello::new().feed(&d), Verdict::NeedMore);
}

proptest! {
    /// Any hello, in CRYPTO frames of any size, in any order, any number a packet:
    /// "need more" until the last datagram, then its name.
    #[test]
    fn every_cut_of_a_valid_hello_needs_more(
        host in "[a-z0-9]{1,20}\\.[a-z]{2,6}",
        size in 200usize..3000,
        chunk in 20usize..1200,
        per_packet in 1usize..4,
        seed in any::<u64>(),
        v2 in any::<bool>(),
        dcid in proptest::collection::vec(any::<u8>(), 0..=20),
    ) {
        let hello = message(&Parts::sized(&host, size));
        let v = if v2 { Version::V2 } else { Version::V1 };
        let d = datagrams(v, &dcid, &hello, chunk, per_packet, |f| {
            // A deterministic shuffle from the seed.
            let mut x = seed | 1;
            for i in (1..f.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                f.swap(i, (x % (i as u64 + 1)) as usize);
            }
        });
        prop_assume!(d.len() <= MAX_DATAGRAMS as usize);
        let mut r = QuicHello::new();
        for (i, x) in d.iter().enumerate() {
            let got = r.feed(x);
            if i + 1 < d.len() {
                prop_assert_eq!(got, Verdict::NeedMore);
            } else {
                prop_assert_eq!(got, name(&host));
            }
        }
    }

    /// Whatever the datagram, an answer and no panic.
    #[test]
    fn any_datagram_is_answered(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = QuicHello::new().feed(&bytes);
    }
}

/// A real client's first Initial: ngtcp2 0.12 (Debian 12's gtlsclient, GnuTLS) asking
/// for api.example.
#[test]
fn a_real_ngtcp2_initial() {
    let d = include_bytes!("ngtcp2-v1.bin");
    assert_eq!(QuicHello::new().feed(d), name("api.example"));
}
