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
    kernel_datagrams_of(metrics, "u", direction)
}

/// [`kernel_datagrams`] of listener `listener`.
fn kernel_datagrams_of(metrics: SocketAddr, listener: &str, direction: &str) -> f64 {
    sample(
        &scrape(metrics),
        "ringway_udp_kernel_datagrams_total",
        &[("listener", listener), ("direction", direction)],
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

/// Runs `f` on a thread inside network namespace `ns` (sockets it makes live there).
fn inside<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn run(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Across interfaces, both families: the client and the backend each in a namespace of
/// their own, behind veths; the kernel path finds each direction's next hop (route
/// lookup, neighbour) and sends it out of the other interface. Fragmented datagrams
/// go up to ringway and arrive whole all the same.
#[test]
#[ignore = "needs root (BPF, network namespaces)"]
fn a_kernel_flow_crosses_interfaces_over_ipv4_and_ipv6() {
    across_interfaces(Variant::Now);
}

/// The same at XDP (`udp_kernel_xdp` names both veths; the namespaces' ends send whole
/// checksums and take redirected frames). A checksum the program got wrong would be
/// dropped by the receiver, and the round trips would fail.
#[test]
#[ignore = "needs root (BPF, network namespaces)"]
fn a_kernel_flow_crosses_interfaces_at_xdp() {
    across_interfaces(Variant::Xdp);
}

/// The same, with the interfaces made after ringway started (a container's veth): the
/// program attaches to each within a second, and the log says so.
#[test]
#[ignore = "needs root (BPF, network namespaces)"]
fn interfaces_made_after_start_get_the_kernel_path() {
    across_interfaces(Variant::Later);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The veths exist before ringway starts.
    Now,
    /// Ringway starts before the veths exist.
    Later,
    /// As `Now`, with the program at XDP on both veths.
    Xdp,
}

/// Listeners on the wildcard addresses (ports 5353 and 5354), backends at
/// 10.61.2.2:7001 and [fd61:2::2]:7001.
fn across_interfaces(variant: Variant) {
    let later = variant == Variant::Later;
    let tag = match variant {
        Variant::Now => "x",
        Variant::Later => "l",
        Variant::Xdp => "d",
    };
    in_named_netns(&format!("uk{tag}"), move |lb| {
        let pid = std::process::id();
        // Named after the test's own namespace (the variants run at once).
        let (cns, bns) = (format!("rw-ukc{tag}-{pid}"), format!("rw-ukb{tag}-{pid}"));
        for ns in [&cns, &bns] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let cleanup = |cns: &str, bns: &str| {
            for ns in [cns, bns] {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", ns])
                    .output();
            }
        };
        let metrics = free_addr();
        let mut toml = format!("workers = 2\n[metrics]\nlisten = \"{metrics}\"\n");
        if variant == Variant::Xdp {
            toml.insert_str(0, "udp_kernel_xdp = [\"ukl1\", \"ukl2\"]\n");
        }
        for (name, listen, backend) in [
            ("u4", "0.0.0.0:5353", "10.61.2.2:7001"),
            ("u6", "[::]:5354", "[fd61:2::2]:7001"),
        ] {
            toml.push_str(&format!(
                "[[listener]]\nname = \"{name}\"\nprotocol = \"udp\"\nlisten = \"{listen}\"\nforward = \"kernel\"\n[[listener.backend]]\naddress = \"{backend}\"\nid = \"k\"\n[listener.health]\ncheck = \"none\"\n"
            ));
        }
        // Serving (its metrics answer) before the interfaces are made.
        let rw = later.then(|| Ringway::start(&toml, &[metrics]));
        // lb <-> client on 10.61.1.0/24 and fd61:1::/64; lb <-> backend on .2.
        for (i, ns) in [(1, &cns), (2, &bns)] {
            let (here, there) = (format!("ukl{i}"), format!("ukp{i}"));
            run(&[
                "ip", "link", "add", &here, "type", "veth", "peer", "name", &there,
            ]);
            run(&["ip", "link", "set", &there, "netns", ns]);
            run(&[
                "ip",
                "addr",
                "add",
                &format!("10.61.{i}.1/24"),
                "dev",
                &here,
            ]);
            run(&[
                "ip",
                "addr",
                "add",
                &format!("fd61:{i}::1/64"),
                "dev",
                &here,
                "nodad",
            ]);
            run(&["ip", "link", "set", &here, "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.61.{i}.2/24"),
                "dev",
                &there,
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("fd61:{i}::2/64"),
                "dev",
                &there,
                "nodad",
            ]);
            run(&["ip", "-n", ns, "link", "set", &there, "up"]);
            if variant == Variant::Xdp {
                // Whole checksums (XDP updates them from the frame), and NAPI for
                // the frames redirected to it (GRO on).
                run(&[
                    "ip", "netns", "exec", ns, "ethtool", "-K", &there, "tx", "off", "gro", "on",
                ]);
            }
            run(&[
                "ip",
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.61.{i}.1"),
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd61:{i}::1"),
            ]);
        }
        // The kernel path's route lookup forwards as the stack would: forwarding on.
        run(&[
            "ip",
            "netns",
            "exec",
            lb,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.forwarding=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        let _b4 = inside(&bns, || UdpBackend::spawn("10.61.2.2:7001", "k"));
        let _b6 = inside(&bns, || UdpBackend::spawn("[fd61:2::2]:7001", "k"));
        let (l4, l6): (SocketAddr, SocketAddr) = (
            "10.61.1.1:5353".parse().unwrap(),
            "[fd61:1::1]:5354".parse().unwrap(),
        );
        let rw = rw.unwrap_or_else(|| Ringway::spawn(&toml));
        if variant == Variant::Xdp {
            let at_xdp = |i: &str| {
                rw.log()
                    .lines()
                    .any(|l| l.contains("UDP kernel path at XDP") && l.contains(i))
            };
            let ok = eventually(Duration::from_secs(5), || at_xdp("ukl1") && at_xdp("ukl2"));
            if !ok {
                cleanup(&cns, &bns);
            }
            assert!(ok, "not at XDP on ukl1 and ukl2: {}", rw.log());
        }
        if later {
            let attached = |i: &str| {
                rw.log()
                    .lines()
                    .any(|l| l.contains("attached to a new interface") && l.contains(i))
            };
            let ok = eventually(Duration::from_secs(10), || {
                attached("ukl1") && attached("ukl2")
            });
            if !ok {
                cleanup(&cns, &bns);
            }
            assert!(
                ok,
                "the program did not attach to ukl1 and ukl2: {}",
                rw.log()
            );
        }
        for (name, listen, bind) in [("u4", l4, "10.61.1.2:0"), ("u6", l6, "[fd61:1::2]:0")] {
            let client = inside(&cns, move || UdpSocket::bind(bind).unwrap());
            assert!(
                eventually(Duration::from_secs(10), || udp_ask(
                    &client, listen, b"probe"
                )
                .is_some()),
                "{name}: {}",
                rw.log()
            );
            round_trips(&client, listen, 200);
            let counted = |d: &str| kernel_datagrams_of(metrics, name, d);
            // 196 of the 200 (and the probe's reply): every 50th datagram (9.4 KB) is
            // fragmented on these 1,500-byte links, and fragments go up to ringway,
            // which forwards them.
            let ok = eventually(Duration::from_secs(5), || {
                counted("in") >= 190.0 && counted("out") >= 190.0
            });
            std::thread::sleep(Duration::from_millis(300));
            let (i, o) = (counted("in"), counted("out"));
            let ok = ok && i <= 196.0 && o <= 197.0;
            if !ok {
                cleanup(&cns, &bns);
            }
            assert!(
                ok,
                "{name}: the kernel forwarded {i} in, {o} out (expected 190 to 196 in, 197 out)"
            );
        }
        cleanup(&cns, &bns);
    });
}

/// A client that reuses its port and pipelines (dnsperf, a forwarder's socket pool),
/// with udp_responses = 1: each time its queries are all answered its flow ends, and
/// the next flow waits in the kernel before that last reply leaves, so the next
/// queries go through the kernel too (before, every round opened in ringway). Each
/// round still gets a new upstream socket and one access-log record, and the flow
/// presumed after the last round, never used, leaves no record and no count.
#[test]
#[ignore = "needs root (BPF)"]
fn a_port_reusing_client_finds_its_next_flow_in_the_kernel() {
    let b = UdpBackend::spawn("127.0.0.1:0", "k");
    let (listen, metrics, admin) = (free_udp_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = with_tables(
        &udp_config(
            listen,
            &[(b.addr, "k")],
            "forward = \"kernel\"\nudp_responses = 1",
        ),
        &format!(
            "[metrics]\nlisten = \"{metrics}\"\n[admin]\nlisten = \"{admin}\"\n[access_log]\npath = \"{}\"\n",
            log.display()
        ),
    );
    let rw = start_udp(&toml, listen);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = client.local_addr().unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let records = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["client"].as_str() == Some(&me.to_string()))
            .collect()
    };
    let flows = || {
        sample(
            &scrape(metrics),
            "ringway_udp_flows_total",
            &[("listener", "u")],
        )
        .unwrap_or(0.0)
    };
    let (flows_before, in_before) = (flows(), kernel_datagrams(metrics, "in"));
    let rounds = 30;
    let mut buf = [0u8; 64];
    let mut sources = Vec::new();
    for round in 0..rounds {
        // Two queries at once, then both replies: this round's flow.
        client.send_to(b"q1", listen).unwrap();
        client.send_to(b"q2", listen).unwrap();
        for n in 0..2 {
            assert!(
                client.recv_from(&mut buf).is_ok(),
                "round {round}: reply {n} missing; log:\n{}",
                rw.log()
            );
        }
        sources.push(b.last_source().unwrap());
        // The flow ends at its last reply: wait for its record.
        assert!(
            eventually(Duration::from_secs(5), || records().len() > round),
            "round {round}: no record; log:\n{}",
            rw.log()
        );
    }
    sources.dedup();
    assert_eq!(
        sources.len(),
        rounds,
        "a finished flow's socket was used again"
    );
    // Rounds 2 to 30 (58 queries) found their flow in the kernel.
    assert!(
        eventually(Duration::from_secs(5), || kernel_datagrams(metrics, "in")
            - in_before
            >= 50.0),
        "the kernel forwarded {} queries of {}",
        kernel_datagrams(metrics, "in") - in_before,
        2 * rounds
    );
    // The flow presumed after the last round expires unused within a second: no
    // record, no count. (A round may be two flows: when q1's reply comes back before
    // q2 arrives, it completes the flow, as in userspace mode.)
    std::thread::sleep(Duration::from_millis(1500));
    let r = records();
    let sum = |k: &str| r.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(
        (sum("datagrams_in"), sum("datagrams_out")),
        (2 * rounds as u64, 2 * rounds as u64),
        "{r:?}"
    );
    assert!(
        r.iter().all(|r| r["datagrams_in"].as_u64() >= Some(1)),
        "a record of a flow that carried nothing: {r:?}"
    );
    assert_eq!(flows() - flows_before, r.len() as f64, "{r:?}");
}

/// Under per-source limits no flow is presumed: it would hold the client's seat (and
/// spend a token of its rate) that the client may want for another port. A client
/// allowed one flow at a time ends a two-query flow, then asks from another port at
/// once, and is served.
#[test]
#[ignore = "needs root (BPF)"]
fn a_per_source_limit_is_not_spent_on_a_presumed_flow() {
    let b = UdpBackend::spawn("127.0.0.1:0", "k");
    let listen = free_udp_addr();
    let toml = udp_config(
        listen,
        &[(b.addr, "k")],
        "forward = \"kernel\"\nudp_responses = 1\nudp_max_flows_per_source = 1",
    );
    let rw = start_udp(&toml, listen);
    let mut buf = [0u8; 64];
    for round in 0..5 {
        let first = UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&first, &other] {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        // Two queries at once: a port-reusing client; its flow ends at the last reply.
        first.send_to(b"q1", listen).unwrap();
        first.send_to(b"q2", listen).unwrap();
        for n in 0..2 {
            assert!(
                first.recv_from(&mut buf).is_ok(),
                "round {round}: reply {n} missing; log:\n{}",
                rw.log()
            );
        }
        // Its seat is free again: the same client, from another port, gets in.
        other.send_to(b"q3", listen).unwrap();
        assert!(
            other.recv_from(&mut buf).is_ok(),
            "round {round}: the client's other port was refused; log:\n{}",
            rw.log()
        );
    }
}
