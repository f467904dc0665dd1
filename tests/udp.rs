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
    let listen = free_udp_addr();
    let cfg = udp_config(
        listen,
        &[(b.addr, "g")],
        "udp_idle_timeout = \"1s\"\nudp_max_flows = 2",
    );
    let _rw = start_udp(&cfg, listen);
    // Let the readiness probe's flow expire.
    std::thread::sleep(Duration::from_millis(1600));
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
    std::thread::sleep(Duration::from_millis(1600));
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
    std::thread::sleep(Duration::from_millis(200));
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
    assert!(rw.child.as_ref().is_some());
    let mut rw = rw;
    assert!(
        rw.wait_exit(Duration::from_millis(100)).is_none(),
        "ringway died: {}",
        rw.log()
    );
}
