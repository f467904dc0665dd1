use super::build::{message, Parts};
use super::*;

fn named(name: &str) -> Parts {
    Parts {
        name: Some(name.as_bytes().to_vec()),
        others: vec![(10, vec![0, 2, 0, 29]), (43, vec![2, 3, 4])],
        name_at: 1,
        ..Parts::default()
    }
}

#[test]
fn the_name_wherever_it_stands() {
    for at in 0..=2 {
        let p = Parts {
            name_at: at,
            ..named("Api.Example.")
        };
        assert_eq!(
            server_name(&message(&p)),
            Verdict::Name(ServerName::new(b"api.example").unwrap())
        );
    }
}

#[test]
fn no_name_without_the_extension_or_without_extensions() {
    let p = Parts {
        name: None,
        ..named("x")
    };
    assert_eq!(server_name(&message(&p)), Verdict::NoName);
    let p = Parts {
        no_extensions: true,
        ..named("x")
    };
    assert_eq!(server_name(&message(&p)), Verdict::NoName);
    // An empty server_name extension (as servers echo it).
    let p = Parts {
        name: None,
        others: vec![(0, vec![0, 0])],
        ..Parts::default()
    };
    assert_eq!(server_name(&message(&p)), Verdict::NoName);
}

#[test]
fn malformed_hellos_are_refused_not_misread() {
    let good = message(&named("a.example"));
    // Every truncation with the length fixed up, and every length that lies.
    for cut in 4..good.len() {
        let mut m = good[..cut].to_vec();
        let len = cut - 4;
        m[1..4].copy_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
        assert!(
            matches!(server_name(&m), Verdict::Not(_) | Verdict::NoName),
            "cut at {cut}: {:?}",
            server_name(&m)
        );
        assert!(matches!(server_name(&good[..cut]), Verdict::Not(_)));
    }
    let two = Parts {
        others: vec![(0, vec![0, 4, 0, 0, 1, b'b'])],
        ..named("a")
    };
    assert!(matches!(server_name(&message(&two)), Verdict::Not(_)));
    let not_host = named("a\u{7f}b");
    assert_eq!(
        server_name(&message(&not_host)),
        Verdict::Not("the server name is not a host name")
    );
    let mut server_hello = good.clone();
    server_hello[0] = 2;
    assert!(matches!(server_name(&server_hello), Verdict::Not(_)));
}

#[test]
fn the_size_limit() {
    assert_eq!(message_len(&[1, 0, 0x40, 0x00]), Ok(4 + MAX_HELLO));
    assert!(message_len(&[1, 0, 0x40, 0x01]).is_err());
    assert!(message_len(&[2, 0, 0, 1]).is_err());
    let big = message(&Parts::sized("pq.example", 2100));
    assert!(big.len() > 2000);
    assert_eq!(
        server_name(&big),
        Verdict::Name(ServerName::new(b"pq.example").unwrap())
    );
}
