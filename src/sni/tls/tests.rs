use proptest::prelude::*;

use super::*;
use crate::sni::client_hello::build::{message, records, Parts};
use crate::sni::ServerName;

fn name(n: &str) -> Verdict {
    Verdict::Name(ServerName::new(n.as_bytes()).unwrap())
}

/// Feeds `bytes` in pieces ending at `cuts`; every answer before the last piece.
fn feed_cut(bytes: &[u8], cuts: &[usize]) -> (Vec<Verdict>, Verdict) {
    let mut r = TlsHello::new();
    let mut from = 0;
    let mut before = Vec::new();
    for &to in cuts {
        if to > from && to < bytes.len() {
            before.push(r.feed(&bytes[from..to]));
            from = to;
        }
    }
    (before, r.feed(&bytes[from..]))
}

/// ClientHellos OpenSSL 3.0 sent (Python's `ssl`, through a memory BIO): one for
/// `api.example`, one for `big.example` made 2 KB by 152 ALPN names.
#[test]
fn real_hellos_in_any_pieces() {
    for (bytes, n) in [
        (
            &include_bytes!("openssl3-api.example.bin")[..],
            "api.example",
        ),
        (
            &include_bytes!("openssl3-2k-big.example.bin")[..],
            "big.example",
        ),
    ] {
        assert_eq!(TlsHello::new().feed(bytes), name(n));
        for cut in 1..bytes.len() {
            let (before, last) = feed_cut(bytes, &[cut]);
            assert_eq!(before, vec![Verdict::NeedMore], "cut at {cut}");
            assert_eq!(last, name(n), "cut at {cut}");
        }
    }
}

#[test]
fn one_record_in_one_piece() {
    let wire = records(&message(&Parts::sized("api.example", 600)), &[]);
    assert_eq!(TlsHello::new().feed(&wire), name("api.example"));
}

#[test]
fn one_byte_at_a_time_over_three_records() {
    let msg = message(&Parts::sized("Slow.Example.", 2500));
    assert!(msg.len() > 2400);
    let wire = records(&msg, &[100, 1500]);
    let mut r = TlsHello::new();
    for (i, b) in wire.iter().enumerate() {
        let v = r.feed(std::slice::from_ref(b));
        if i + 1 < wire.len() {
            assert_eq!(v, Verdict::NeedMore, "at byte {i}");
        } else {
            assert_eq!(v, name("slow.example"));
        }
    }
    // The answer stays, whatever follows.
    assert_eq!(r.feed(b"anything"), name("slow.example"));
}

#[test]
fn what_is_not_tls() {
    for (first, why) in [
        (
            &b"GET / HTTP/1.1\r\n"[..],
            "not TLS: the first bytes are not a handshake record",
        ),
        (
            &[0x80, 0x2e, 0x01, 0x03, 0x01][..],
            "not TLS: an SSLv2 hello",
        ),
        (
            &[22, 2, 0, 0, 5][..],
            "not TLS: the record's version is not 3.x",
        ),
        (
            &[22, 3, 1, 0, 0][..],
            "not TLS: a handshake record of 0 or over 16 KiB",
        ),
        (
            &[22, 3, 1, 0x40, 0x01][..],
            "not TLS: a handshake record of 0 or over 16 KiB",
        ),
        (
            &[22, 3, 1, 0, 4, 2, 0, 0, 0][..],
            "the first handshake message is not a ClientHello",
        ),
    ] {
        assert_eq!(TlsHello::new().feed(first), Verdict::Not(why), "{first:?}");
        // The same, byte by byte.
        let mut r = TlsHello::new();
        let last = first
            .iter()
            .map(|b| r.feed(std::slice::from_ref(b)))
            .find(Verdict::is_final);
        assert_eq!(last, Some(Verdict::Not(why)), "{first:?} byte by byte");
    }
    // A record of another type between two fragments.
    let msg = message(&Parts::sized("a", 600));
    let mut wire = records(&msg[..100], &[]);
    wire.extend([20, 3, 3, 0, 1, 1]);
    wire.extend(records(&msg[100..], &[]));
    assert!(matches!(TlsHello::new().feed(&wire), Verdict::Not(_)));
}

#[test]
fn a_hello_in_thousands_of_tiny_records_is_given_up_on() {
    let msg = message(&Parts::sized("a", 16_000));
    let cuts: Vec<usize> = (1..msg.len()).collect();
    let wire = records(&msg, &cuts);
    let (before, last) = feed_cut(&wire, &[MAX_INPUT - 10]);
    assert_eq!(before, vec![Verdict::NeedMore]);
    assert!(matches!(last, Verdict::Not(_)));
}

fn arb_parts() -> impl Strategy<Value = Parts> {
    (
        proptest::option::of("[a-zA-Z0-9.-]{1,60}"),
        proptest::collection::vec(any::<u8>(), 0..=32),
        proptest::collection::vec(
            (1u16..60, proptest::collection::vec(any::<u8>(), 0..300)),
            0..6,
        ),
        0usize..7,
        0usize..3000,
    )
        .prop_filter("a name that is a host name", |(n, ..)| {
            n.as_ref()
                .is_none_or(|n| ServerName::new(n.as_bytes()).is_some())
        })
        .prop_map(|(name, session, mut others, name_at, pad)| {
            others.push((21, vec![0; pad]));
            Parts {
                name: name.map(String::into_bytes),
                session,
                others,
                name_at,
                no_extensions: false,
            }
        })
}

proptest! {
    /// Any hello, in any records, fed in any pieces: "need more" until its last
    /// byte, then its name (or none), never anything else.
    #[test]
    fn every_cut_of_a_valid_hello_needs_more(
        parts in arb_parts(),
        record_cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        feed_cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let msg = message(&parts);
        let mut rc: Vec<usize> = record_cuts.iter().map(|i| i.index(msg.len())).collect();
        rc.sort_unstable();
        let wire = records(&msg, &rc);
        let mut fc: Vec<usize> = feed_cuts.iter().map(|i| i.index(wire.len())).collect();
        fc.sort_unstable();
        let (before, last) = feed_cut(&wire, &fc);
        for v in before {
            prop_assert_eq!(v, Verdict::NeedMore);
        }
        let expected = match &parts.name {
            Some(n) => Verdict::Name(ServerName::new(n).unwrap()),
            None => Verdict::NoName,
        };
        prop_assert_eq!(&last, &expected);
        // And every proper prefix alone needs more.
        let cut = fc.first().copied().unwrap_or(wire.len() / 2).min(wire.len() - 1);
        prop_assert_eq!(TlsHello::new().feed(&wire[..cut]), Verdict::NeedMore);
    }

    /// Whatever the bytes, the reader answers without panicking, and the same
    /// bytes in other pieces give the same answer.
    #[test]
    fn any_bytes_any_pieces_one_answer(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cut in any::<prop::sample::Index>(),
    ) {
        let whole = TlsHello::new().feed(&bytes);
        let (_, split) = feed_cut(&bytes, &[cut.index(bytes.len().max(1))]);
        prop_assert_eq!(whole, split);
    }

    /// A valid hello with bytes changed anywhere: one answer in one piece or two,
    /// never a panic (the lengths that now lie are caught, not followed).
    #[test]
    fn changed_hellos_answer_alike_in_any_pieces(
        parts in arb_parts(),
        record_cut in any::<prop::sample::Index>(),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let msg = message(&parts);
        let mut wire = records(&msg, &[record_cut.index(msg.len())]);
        for (at, b) in changes {
            let i = at.index(wire.len());
            wire[i] = b;
        }
        let whole = TlsHello::new().feed(&wire);
        let (_, split) = feed_cut(&wire, &[cut.index(wire.len())]);
        prop_assert_eq!(whole, split);
    }
}
