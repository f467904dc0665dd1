//! `forward = "kernel"` on UDP listeners: the kernel forwards established flows (both
//! ways, IPv4 and IPv6), udp_responses keeps its meaning, and without the privilege
//! ringway forwards them itself after one warning. (CI's kernel-mode run also puts
//! every other UDP test through the kernel path.)

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::util::*;

/// A `forward = "kernel"` UDP listener `u`, with metrics and the admin API.
fn kernel_config(
    listen: SocketAddr,
    backend: SocketAddr,
    (metrics, admin): (SocketAddr, SocketAddr),
    extra: &str,
) -> String {
    with_tables(
        &udp_config(
            listen,
            &[(backend, "k")],
            &format!("forward = \"kernel\"\n{extra}"),
        ),
        &format!("[metrics]\nlisten = \"{metrics}\"\n[admin]\nlisten = \"{admin}\"\n"),
    )
}

/// How `/status` says listener `u` forwards.
fn forward_shown(admin: SocketAddr) -> String {
    let s = status(admin);
    let l = s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "u")
        .unwrap()
        .clone();
    l["forward"].as_str().unwrap().to_string()
}

fn kernel_datagrams(metrics: SocketAddr, direction: &str) -> f64 {
    sample(
        &scrape(metrics),
        "ringway_udp_kernel_datagrams_total",
        &[("listener", "u"), ("direction", direction)],
    )
    .unwrap_or(0.0)
}

/// One flow, `n` datagrams of growing sizes: every reply whole, from the address the
/// client sent to.
fn round_trips(client: &UdpSocket, listen: SocketAddr, n: usize) {
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = vec![0u8; 70_000];
    for i in 0..n {
        let len = 1 + (i * 37) % 1_400 + if i % 50 == 49 { 8_000 } else { 0 };
        let data: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
        client.send_to(&data, listen).unwrap();
        let (got, from) = client.recv_from(&mut buf).expect("no reply");
        assert_eq!(from, listen, "a reply came from another address");
        assert_eq!(
            &buf[..got],
            [b"k|".as_slice(), &data].concat(),
            "datagram {i}"
        );
    }
}

/// After the first datagram (ringway opens the flow), the kernel forwards the flow's
/// datagrams both ways, intact and from the listener's address, over IPv4 and IPv6;
/// the metrics count them.
#[test]
#[ignore = "needs root (BPF)"]
fn the_kernel_forwards_an_established_flow_both_ways() {
    for host in ["127.0.0.1", "[::1]"] {
        let b = UdpBackend::spawn(&format!("{host}:0"), "k");
        let listen: SocketAddr = format!("{host}:{}", free_udp_addr().port())
            .parse()
            .unwrap();
        let (metrics, admin) = (free_addr(), free_addr());
        let rw = Ringway::spawn(&kernel_config(listen, b.addr, (metrics, admin), ""));
        let client = UdpSocket::bind(format!("{host}:0")).unwrap();
        // Its first exchange opens the flow (and shows ringway is up).
        assert!(
            eventually(Duration::from_secs(10), || udp_ask(
                &client, listen, b"probe"
            )
            .is_some()),
            "{}",
            rw.log()
        );
        round_trips(&client, listen, 300);
        // The backend saw one source: the flow's upstream socket.
        let from_client: Vec<_> = b
            .sources
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, d)| !d.starts_with(b"probe"))
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(from_client.len(), 300);
        assert_eq!(forward_shown(admin), "kernel");
        assert!(from_client.iter().all(|s| *s == from_client[0]), "{host}");
        // Counted within about a second; all but the first exchange went through the kernel.
        assert!(
            eventually(Duration::from_secs(5), || {
                kernel_datagrams(metrics, "in") >= 299.0
                    && kernel_datagrams(metrics, "out") >= 299.0
            }),
            "{host}: the kernel forwarded {} in, {} out",
            kernel_datagrams(metrics, "in"),
            kernel_datagrams(metrics, "out")
        );
    }
}

/// udp_responses = 2 against a backend that answers three times: the client gets two
/// replies (the first through the kernel, the one that completes the flow through
/// ringway, which ends it), and its next datagram opens a new flow.
#[test]
#[ignore = "needs root (BPF)"]
fn udp_responses_end_a_kernel_flow_at_its_last_reply() {
    let b = UdpBackend::spawn_with("127.0.0.1:0", "k", 3);
    let (listen, metrics, admin) = (free_udp_addr(), free_addr(), free_addr());
    let _rw = start_udp(
        &kernel_config(listen, b.addr, (metrics, admin), "udp_responses = 2"),
        listen,
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    let mut sources = Vec::new();
    for round in 0..3 {
        client.send_to(b"q", listen).unwrap();
        let mut got = 0;
        while client.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        assert_eq!(got, 2, "round {round}: {got} replies");
        sources.push(b.last_source().unwrap());
    }
    sources.dedup();
    assert_eq!(sources.len(), 3, "a finished flow's socket was used again");
    assert!(
        eventually(Duration::from_secs(5), || kernel_datagrams(metrics, "out")
            >= 1.0),
        "no reply went through the kernel"
    );
}

/// Without CAP_BPF and CAP_NET_ADMIN, a UDP listener that asks for the kernel path
/// serves anyway, in ringway, and the log says so once.
#[test]
#[ignore = "needs root (BPF)"]
fn without_the_privilege_udp_kernel_mode_warns_once_and_forwards_in_ringway() {
    let b = UdpBackend::spawn("127.0.0.1:0", "k");
    let (listen, metrics, admin) = (free_udp_addr(), free_addr(), free_addr());
    let toml = kernel_config(listen, b.addr, (metrics, admin), "");
    let wrapper = [
        "setpriv",
        "--bounding-set=-bpf,-net_admin,-sys_admin,-perfmon",
        "--inh-caps=-bpf,-net_admin,-sys_admin,-perfmon",
    ];
    let rw = Ringway::spawn_via(&toml, &[], &wrapper);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || udp_ask(&client, listen, b"x")
            .is_some()),
        "{}",
        rw.log()
    );
    round_trips(&client, listen, 20);
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(kernel_datagrams(metrics, "in"), 0.0);
    assert_eq!(forward_shown(admin), "ringway");
    let log = rw.log();
    assert_eq!(
        log.matches("forward = \"kernel\" unavailable for UDP")
            .count(),
        1,
        "{log}"
    );
}

/// A flow in the kernel whose backend is disabled (alive, so no ICMP error says
/// anything) moves to the other backend, as in userspace mode: the routing change takes
/// it back from the kernel, and its next datagram is checked.
#[test]
#[ignore = "needs root (BPF)"]
fn a_kernel_flow_moves_when_its_backend_is_disabled() {
    let (a, b) = (
        UdpBackend::spawn("127.0.0.1:0", "a"),
        UdpBackend::spawn("127.0.0.1:0", "b"),
    );
    let (listen, metrics, admin) = (free_udp_addr(), free_addr(), free_addr());
    let toml = with_tables(
        &udp_config(
            listen,
            &[(a.addr, "a"), (b.addr, "b")],
            "forward = \"kernel\"\n",
        ),
        &format!("[metrics]\nlisten = \"{metrics}\"\n[admin]\nlisten = \"{admin}\"\n"),
    );
    let _rw = start_udp(&toml, listen);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let first = udp_ask(&client, listen, b"1").unwrap();
    let (from, other) = if first.starts_with(b"a|") {
        ("a", "b|")
    } else {
        ("b", "a|")
    };
    for i in 0..20 {
        let r = udp_ask(&client, listen, format!("{i}").as_bytes()).unwrap();
        assert!(r.starts_with(from.as_bytes()), "the flow moved on its own");
    }
    assert!(
        eventually(Duration::from_secs(5), || kernel_datagrams(metrics, "in")
            >= 20.0),
        "the flow is not in the kernel"
    );
    assert!(ctl(admin, None, &["disable", "u", from]).status.success());
    assert!(
        eventually(Duration::from_secs(5), || {
            udp_ask(&client, listen, b"x").is_some_and(|r| r.starts_with(other.as_bytes()))
        }),
        "the flow stayed with its disabled backend"
    );
    // And it goes back to the kernel there.
    let before = kernel_datagrams(metrics, "in");
    for _ in 0..20 {
        let r = udp_ask(&client, listen, b"y").unwrap();
        assert!(r.starts_with(other.as_bytes()));
    }
    assert!(
        eventually(Duration::from_secs(5), || kernel_datagrams(metrics, "in")
            >= before + 19.0),
        "the moved flow did not go back to the kernel"
    );
}
