//! UDP through ringway: integrity, flows, affinity, expiry, limits.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::util::*;

fn name_of(reply: &[u8]) -> String {
    let i = reply.iter().position(|&b| b == b'|').expect("name|payload");
    String::from_utf8(reply[..i].to_vec()).unwrap()
}

#[test]
fn datagrams_of_every_size_round_trip_intact() {
    let b = UdpBackend::spawn("127.0.0.1:0", "b");
    let listen = free_udp_addr();
    let _rw = start_udp(&udp_config(listen, &[(b.addr, "b")], ""), listen);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for size in [0usize, 1, 512, 1472, 9000, 65507] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        let reply =
            udp_ask(&sock, listen, &payload).unwrap_or_else(|| panic!("no reply for {size} bytes"));
        // The backend prefixes its name unless that would exceed the UDP maximum.
        let body = if size + 2 <= 65507 {
            &reply[2..]
        } else {
            &reply[..]
        };
        assert_eq!(body.len(), size, "size {size}");
        assert_eq!(body, &payload[..], "bytes of the {size}-byte datagram");
    }
}

#[test]
fn ten_thousand_flows_spread_stick_and_agree_with_route() {
    ringway::sys::rlimit::raise_nofile().unwrap();
    let names = ["alpha", "beta", "gamma"];
    let bs: Vec<UdpBackend> = names
        .iter()
        .map(|n| UdpBackend::spawn("127.0.0.1:0", n))
        .collect();
    let list: Vec<(SocketAddr, &str)> = bs.iter().zip(names).map(|(b, n)| (b.addr, n)).collect();
    let listen = free_udp_addr();
    let rw = start_udp(
        &udp_config(
            listen,
            &list,
            "udp_max_flows = 12000\nudp_idle_timeout = \"60s\"",
        ),
        listen,
    );
    const FLOWS: usize = 10_000;
    let socks: Vec<UdpSocket> = (0..FLOWS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut got: Vec<String> = Vec::with_capacity(FLOWS);
    for (i, s) in socks.iter().enumerate() {
        let r = udp_ask(s, listen, format!("first {i}").as_bytes())
            .unwrap_or_else(|| panic!("flow {i}: no reply"));
        got.push(name_of(&r));
    }
    // Every later datagram of a flow reaches the same backend, while all flows are open.
    for (i, s) in socks.iter().enumerate().step_by(7) {
        for k in 0..2 {
            let r = udp_ask(s, listen, format!("again {i} {k}").as_bytes()).unwrap();
            assert_eq!(name_of(&r), got[i], "flow {i} moved");
        }
    }
    let mut per: HashMap<&str, usize> = HashMap::new();
    for n in &got {
        *per.entry(n.as_str()).or_default() += 1;
    }
    for n in names {
        assert!(per.get(n).copied().unwrap_or(0) > 2500, "{per:?}");
    }
    let clients: Vec<SocketAddr> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    let by_addr: HashMap<String, &str> = list.iter().map(|(a, n)| (a.to_string(), *n)).collect();
    let routed = rw.route("u", &[], &clients);
    for (i, (c, b)) in routed.iter().enumerate() {
        assert_eq!(c, &clients[i].to_string());
        assert_eq!(by_addr[b], got[i], "route disagrees for {c}");
    }
}

#[test]
fn udp_responses_one_closes_the_flow_after_its_reply() {
    let b = UdpBackend::spawn("127.0.0.1:0", "dns");
    let listen = free_udp_addr();
    let _rw = start_udp(
        &udp_config(listen, &[(b.addr, "dns")], "udp_responses = 1"),
        listen,
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_ask(&sock, listen, b"q1").unwrap();
    let first = b.last_source().unwrap();
    udp_ask(&sock, listen, b"q2").unwrap();
    let second = b.last_source().unwrap();
    assert_ne!(
        first, second,
        "the second query reused the closed flow's upstream socket"
    );
}

#[test]
fn without_udp_responses_a_flow_keeps_its_upstream_socket() {
    let b = UdpBackend::spawn("127.0.0.1:0", "g");
    let listen = free_udp_addr();
    let _rw = start_udp(&udp_config(listen, &[(b.addr, "g")], ""), listen);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_ask(&sock, listen, b"a").unwrap();
    let first = b.last_source().unwrap();
    udp_ask(&sock, listen, b"b").unwrap();
    assert_eq!(b.last_source().unwrap(), first);
}

#[test]
fn idle_flows_expire_and_free_their_slots() {
    let b = UdpBackend::spawn("127.0.0.1:0", "g");
    let (listen, metrics) = (free_udp_addr(), free_addr());
    let cfg = with_tables(
        &udp_config(
            listen,
            &[(b.addr, "g")],
            "udp_idle_timeout = \"1s\"\nudp_max_flows = 2",
        ),
        &format!("[metrics]\nlisten = \"{metrics}\"\n"),
    );
    let _rw = start_udp(&cfg, listen);
    let flows = || {
        sample(
            &scrape(metrics),
            "ringway_udp_flows_active",
            &[("listener", "u")],
        )
    };
    // The readiness probe's flow expires first.
    assert!(
        eventually(Duration::from_secs(5), || flows() == Some(0.0)),
        "{:?}",
        flows()
    );
    let (s1, s2, s3) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    udp_ask(&s1, listen, b"1").unwrap();
    let first = b.last_source().unwrap();
    udp_ask(&s2, listen, b"2").unwrap();
    // Two flows open: the third client's datagram is dropped (asked once, well within
    // the idle timeout, so the first two flows are still there).
    s3.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s3.send_to(b"3", listen).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        s3.recv_from(&mut buf).is_err(),
        "udp_max_flows = 2 let a third flow in"
    );
    // After the idle timeout both flows are gone (the count is back to zero) ...
    assert!(
        eventually(Duration::from_secs(5), || flows() == Some(0.0)),
        "flows were not freed: {:?}",
        flows()
    );
    // ... so the third client gets in, and the first one gets a new flow.
    assert!(udp_ask(&s3, listen, b"3").is_some(), "flows were not freed");
    udp_ask(&s1, listen, b"1 again").unwrap();
    assert_ne!(
        b.last_source().unwrap(),
        first,
        "an expired flow's upstream socket was reused"
    );
}

#[test]
fn a_vanished_backend_does_not_stall_other_flows() {
    let good = UdpBackend::spawn("127.0.0.1:0", "good");
    let bad = UdpBackend::spawn("127.0.0.1:0", "bad");
    let listen = free_udp_addr();
    let rw = start_udp(
        &udp_config(listen, &[(good.addr, "good"), (bad.addr, "bad")], ""),
        listen,
    );
    let socks: Vec<UdpSocket> = (0..60)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let names: Vec<String> = socks
        .iter()
        .map(|s| name_of(&udp_ask(s, listen, b"hi").unwrap()))
        .collect();
    assert!(
        names.iter().any(|n| n == "bad") && names.iter().any(|n| n == "good"),
        "{names:?}"
    );
    bad.stop(); // its port closes: datagrams to it now draw ICMP port-unreachable
    wait_udp_closed(bad.addr);
    for round in 0..3 {
        for (s, n) in socks.iter().zip(&names) {
            if n == "good" {
                let r = udp_ask(s, listen, b"still?")
                    .unwrap_or_else(|| panic!("round {round}: a good flow stalled"));
                assert_eq!(name_of(&r), "good");
            } else {
                s.send_to(b"into the void", listen).unwrap();
            }
        }
    }
    let mut rw = rw;
    assert!(
        rw.wait_exit(Duration::from_millis(100)).is_none(),
        "ringway died: {}",
        rw.log()
    );
}

/// A UDP listener on a wildcard address (in a network namespace of the test's own):
/// every reply comes from the address the client sent to, a client reaching two local
/// addresses has two flows, and each goes where `route --dst` says.
#[test]
#[ignore = "needs root"]
fn a_wildcard_listener_replies_from_the_address_each_client_reached() {
    in_netns("udpwild", || {
        for (wild, dsts) in [
            ("0.0.0.0", &["127.0.0.1", "127.0.0.2", "127.0.0.3"][..]),
            ("[::]", &["[::1]"][..]),
        ] {
            let x = UdpBackend::spawn("127.0.0.1:0", "x");
            let y = UdpBackend::spawn("127.0.0.1:0", "y");
            let port = free_udp_addr().port();
            let listen: SocketAddr = format!("{wild}:{port}").parse().unwrap();
            let rw = Ringway::spawn(&udp_config(listen, &[(x.addr, "x"), (y.addr, "y")], ""));
            let names: HashMap<String, String> = [
                (x.addr.to_string(), "x".to_string()),
                (y.addr.to_string(), "y".to_string()),
            ]
            .into();
            for dst in dsts {
                let to: SocketAddr = format!("{dst}:{port}").parse().unwrap();
                let bind = if to.is_ipv6() {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                };
                let probe = UdpSocket::bind(bind).unwrap();
                let up = eventually(Duration::from_secs(10), || {
                    udp_ask(&probe, to, b"probe").is_some()
                });
                assert!(up, "no answer on {to}; log:\n{}", rw.log());
                // udp_ask checks that each reply comes from `to`.
                let seen: Vec<(SocketAddr, String)> = (0..40)
                    .map(|_| {
                        let s = UdpSocket::bind(bind).unwrap();
                        let r = udp_ask(&s, to, b"hello").expect("no reply");
                        let who = String::from_utf8_lossy(&r)
                            .split('|')
                            .next()
                            .unwrap()
                            .to_string();
                        (s.local_addr().unwrap(), who)
                    })
                    .collect();
                let clients: Vec<SocketAddr> = seen.iter().map(|s| s.0).collect();
                let routed = route_to(&rw.config, "u", &[], Some(to), &clients);
                for ((client, who), (_, addr)) in seen.iter().zip(&routed) {
                    assert_eq!(
                        &names[addr], who,
                        "{client} -> {to} went to {who}, route says {addr}"
                    );
                }
            }
            // One client, two local addresses: two flows, each answered from its own.
            if dsts.len() > 1 {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                for dst in &dsts[..2] {
                    let to: SocketAddr = format!("{dst}:{port}").parse().unwrap();
                    assert!(udp_ask(&s, to, b"again").is_some());
                }
            }
        }
    });
}
