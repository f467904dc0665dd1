//! Health checks against real responders: backends die, hang, lie, flap and come back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway::sys::signal::{self, Signal};

use crate::util::*;

fn health_table(lines: &str) -> String {
    format!("\n[listener.health]\n{lines}\n")
}

/// Config text with `[listener.health]` after the backends (TOML needs it there or before
/// the first backend; after keeps `config()` simple).
fn cfg(listen: SocketAddr, backends: &[(SocketAddr, &str)], extra: &str, health: &str) -> String {
    format!(
        "{}{}",
        config(listen, backends, extra),
        health_table(health)
    )
}

#[test]
fn a_killed_backend_leaves_rotation_and_gets_exactly_its_keys_back() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let c = Backend::named_echo("127.0.0.1:0", "c");
    let list = [(a.addr, "a"), (b.addr, "b"), (c.addr, "c")];
    let listen = free_addr();
    let rw = Ringway::start(
        &cfg(
            listen,
            &list,
            "",
            &format!("{FAST_HEALTH}\npassive = false"),
        ),
        &[listen],
    );
    let names = names(&list);
    let killed = Instant::now();
    b.stop();
    // Clients see no errors while the check notices (retries cover the gap).
    let during = connect_many(listen, 100);
    assert!(
        during.iter().all(|(_, n)| n != "b"),
        "b is dead, yet served"
    );
    // After fall x interval + timeout (+ slack): out of rotation, logged once with the reason.
    assert!(
        eventually(Duration::from_secs(3), || log_count(&rw, "backend b (") > 0),
        "{}",
        rw.log()
    );
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(3 * 220 + 150 + 1500), // fall x interval (+jitter) + timeout + slack
        "took {took:?} to mark b down"
    );
    // Killed before its first check, which alone decides (HAProxy's init-state up).
    assert_eq!(
        log_count(&rw, "DOWN after its first check failed: connect failed"),
        1,
        "{}",
        rw.log()
    );
    // Thousands of source ports: each lands exactly where `route --down b` says.
    let down = connect_many(listen, 1500);
    assert_routed(&rw, "t", &["b"], &down, &names);
    // Back on the same port: after rise x interval it gets exactly its old keys again.
    let b2 = Backend::named_echo(&b.addr.to_string(), "b");
    assert!(
        eventually(Duration::from_secs(3), || log_count(&rw, "backend b (")
            >= 2
            && rw.log().contains("UP after 2")),
        "{}",
        rw.log()
    );
    let back = connect_many(listen, 1500);
    assert!(back.iter().any(|(_, n)| n == "b"));
    assert_routed(&rw, "t", &[], &back, &names);
    drop(b2);
}

/// A backend that answers `PING` with `reply`, and echoes other traffic after a greeting.
fn pinger(name: &'static str, reply: &'static [u8]) -> Backend {
    Backend::spawn("127.0.0.1:0", move |mut s| {
        let mut buf = [0u8; 64];
        let Ok(n) = s.read(&mut buf) else { return };
        if buf[..n].starts_with(b"PING") {
            let _ = s.write_all(reply);
            return;
        }
        let _ = s.write_all(format!("{name}\n").as_bytes());
        let _ = s.write_all(&buf[..n]);
        echo(s);
    })
}

#[test]
fn send_expect_takes_out_only_the_backend_that_answers_wrong() {
    let good = pinger("good", b"+PONG\r\n");
    let bad = pinger("bad", b"-ERR no\r\n");
    let listen = free_addr();
    let h =
        format!("check = \"send-expect\"\nsend = 'PING\\r\\n'\nexpect = \"+PONG\"\n{FAST_HEALTH}");
    let rw = Ringway::start(
        &cfg(listen, &[(good.addr, "good"), (bad.addr, "bad")], "", &h),
        &[listen],
    );
    assert!(
        eventually(Duration::from_secs(3), || log_count(&rw, "backend bad (")
            == 1),
        "{}",
        rw.log()
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        rw.log()
            .contains("DOWN after its first check failed: unexpected reply \"-ERR no"),
        "{}",
        rw.log()
    );
    assert_eq!(
        log_count(&rw, "backend good ("),
        0,
        "the good backend flapped: {}",
        rw.log()
    );
    assert_eq!(
        log_count(&rw, "backend bad ("),
        1,
        "transitions are logged once"
    );
}

/// A tiny HTTP server answering `status` to every request.
fn http_server(status: u16) -> Backend {
    Backend::spawn("127.0.0.1:0", move |mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    })
}

#[test]
fn http_check_wants_2xx_or_3xx() {
    let ok = http_server(204);
    let redirect = http_server(302);
    let sick = http_server(503);
    let listen = free_addr();
    let list = [
        (ok.addr, "ok"),
        (redirect.addr, "redirect"),
        (sick.addr, "sick"),
    ];
    let h = format!("check = \"http\"\npath = \"/healthz\"\n{FAST_HEALTH}");
    let rw = Ringway::start(&cfg(listen, &list, "", &h), &[listen]);
    assert!(
        eventually(Duration::from_secs(3), || rw
            .log()
            .contains("backend sick (")),
        "{}",
        rw.log()
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(rw.log().contains("HTTP status 503"), "{}", rw.log());
    assert_eq!(log_count(&rw, "backend ok ("), 0);
    assert_eq!(log_count(&rw, "backend redirect ("), 0);
}

#[test]
fn udp_check_sends_and_expects() {
    let good = UdpBackend::spawn("127.0.0.1:0", "pong");
    let bad = UdpBackend::spawn("127.0.0.1:0", "nope");
    let listen = free_udp_addr();
    // The backends answer "NAME|ping": expect the good one's prefix.
    let h = format!("check = \"udp\"\nsend = \"ping\"\nexpect = \"pong|ping\"\n{FAST_HEALTH}");
    let toml = format!(
        "{}{}",
        udp_config(listen, &[(good.addr, "good"), (bad.addr, "bad")], ""),
        health_table(&h)
    );
    let rw = start_udp(&toml, listen);
    assert!(
        eventually(Duration::from_secs(3), || rw
            .log()
            .contains("backend bad (")),
        "{}",
        rw.log()
    );
    assert!(!rw.log().contains("backend good ("), "{}", rw.log());
    // Every new flow now goes to the good backend: 20 in a row, from 20 ports (once the
    // control plane has published the change, within PUBLISH_GAP of its log line; CI
    // in kernel mode once asked in between). Were the bad one still in the ring, 20 in
    // a row would all miss it about once in a million tries.
    let mut last = Vec::new();
    let twenty_good = || {
        (0..20).all(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let r = udp_ask(&s, listen, b"hello").unwrap_or_default();
            let good = r.starts_with(b"pong|");
            if !good {
                last = r;
            }
            good
        })
    };
    assert!(
        eventually(Duration::from_secs(3), twenty_good),
        "{}",
        String::from_utf8_lossy(&last)
    );
}

/// A DNS responder that answers NOERROR for `known` (wire-format name) and NXDOMAIN
/// for anything else; with `known = None`, NXDOMAIN for everything.
fn dns_responder(known: Option<&'static [u8]>) -> (SocketAddr, Arc<AtomicUsize>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let addr = s.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&asked);
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            if n < 12 {
                continue;
            }
            a.fetch_add(1, Ordering::Relaxed);
            let q = &buf[..n];
            let name = &q[12..n - 4];
            let mut r = q.to_vec();
            r[2] |= 0x80; // QR
            r[3] = if known == Some(name) { 0 } else { 3 };
            let _ = s.send_to(&r, from);
        }
    });
    (addr, asked)
}

#[test]
fn dns_check_wants_noerror_for_the_name() {
    let (good, asked) = dns_responder(Some(b"\x06health\x07example\x00"));
    let (bad, _) = dns_responder(None);
    let listen = free_udp_addr();
    let h = format!("check = \"dns\"\ndns_name = \"health.example.\"\n{FAST_HEALTH}");
    let toml = format!(
        "{}{}",
        udp_config(listen, &[(good, "good"), (bad, "bad")], ""),
        health_table(&h)
    );
    // The responders are not echo servers, so start ringway without the UDP probe.
    let rw = Ringway::spawn(&toml);
    let ok = eventually(Duration::from_secs(4), || {
        let log = rw.log();
        log.contains("backend bad (")
            && log.contains("DNS rcode 3")
            && asked.load(Ordering::Relaxed) >= 3
    });
    assert!(ok, "{}", rw.log());
    assert!(!rw.log().contains("backend good ("), "{}", rw.log());
}

#[test]
fn a_hung_backend_is_detected_by_timeout_and_comes_back() {
    let port = free_port("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(eventually(Duration::from_secs(10), || TcpStream::connect(
        addr
    )
    .is_ok()));
    let other = Backend::named_echo("127.0.0.1:0", "other");
    let listen = free_addr();
    let h = format!("check = \"http\"\npath = \"/\"\n{FAST_HEALTH}\npassive = false");
    let rw = Ringway::start(
        &cfg(listen, &[(addr, "hung"), (other.addr, "other")], "", &h),
        &[listen],
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !rw.log().contains("backend hung ("),
        "healthy at first: {}",
        rw.log()
    );
    let pid = server.id();
    signal::send(pid, Signal::Stop).unwrap();
    let down = eventually(Duration::from_secs(4), || {
        rw.log().contains("backend hung (") && rw.log().contains("timed out")
    });
    signal::send(pid, Signal::Cont).unwrap();
    assert!(
        down,
        "a SIGSTOPped backend was not marked down: {}",
        rw.log()
    );
    let up = eventually(Duration::from_secs(4), || rw.log().contains("UP after 2"));
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "{}", rw.log());
}

#[test]
fn a_flapping_backend_obeys_rise_and_fall() {
    // Answers the check right, wrong, right, wrong...: never 3 failures in a row.
    let n = Arc::new(AtomicUsize::new(0));
    let mode = Arc::new(AtomicUsize::new(0)); // 0: alternate, 1: always wrong
    let (n2, m2) = (Arc::clone(&n), Arc::clone(&mode));
    // Only checks count (they send PING; a client that says nothing is not one): the
    // first check is answered right, and alone decides (see `health::state`).
    let flappy = Backend::spawn("127.0.0.1:0", move |mut s| {
        let mut buf = [0u8; 16];
        if !s
            .read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"PING"))
        {
            return;
        }
        let i = n2.fetch_add(1, Ordering::Relaxed);
        let good = m2.load(Ordering::Relaxed) == 0 && i % 2 == 0;
        let _ = s.write_all(if good { b"+PONG" } else { b"-ERR" });
    });
    let other = pinger("other", b"+PONG");
    let listen = free_addr();
    let h = format!("check = \"send-expect\"\nsend = \"PING\"\nexpect = \"+PONG\"\n{FAST_HEALTH}");
    let rw = Ringway::start(
        &cfg(
            listen,
            &[(flappy.addr, "flappy"), (other.addr, "other")],
            "",
            &h,
        ),
        &[listen],
    );
    assert!(eventually(Duration::from_secs(5), || n
        .load(Ordering::Relaxed)
        >= 10));
    assert!(
        !rw.log().contains("backend flappy ("),
        "went down without 3 failures in a row: {}",
        rw.log()
    );
    mode.store(1, Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(3), || rw
            .log()
            .contains("backend flappy (")),
        "{}",
        rw.log()
    );
}

#[test]
fn failed_connects_eject_a_backend_before_the_next_active_check() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let list = [(a.addr, "a"), (b.addr, "b")];
    let listen = free_addr();
    // Active checks every 30 s: only the data path can notice in time.
    let rw = Ringway::start(
        &cfg(listen, &list, "", "interval = \"30s\"\nfall = 3"),
        &[listen],
    );
    b.stop();
    let start = Instant::now();
    let seen = connect_many(listen, 60);
    assert!(
        seen.iter().all(|(_, n)| n == "a"),
        "clients were served by a, with retries"
    );
    assert!(
        eventually(Duration::from_secs(2), || rw.log().contains("backend b (")),
        "{}",
        rw.log()
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        rw.log().contains("the last a connect on the data path"),
        "{}",
        rw.log()
    );
    assert_routed(&rw, "t", &["b"], &connect_many(listen, 50), &names(&list));
}

#[test]
fn on_down_close_resets_open_connections_and_keep_does_not() {
    for (on_down, closes) in [("close", true), ("keep", false)] {
        let a = pinger("a", b"+PONG");
        let b = pinger("b", b"+PONG");
        let list = [(a.addr, "a"), (b.addr, "b")];
        let listen = free_addr();
        let h = format!("check = \"send-expect\"\nsend = \"PING\"\nexpect = \"+PONG\"\non_down = \"{on_down}\"\n{FAST_HEALTH}");
        let rw = Ringway::start(&cfg(listen, &list, "", &h), &[listen]);
        // Find a connection that lands on b (the pinger greets after the first bytes).
        let mut on_b = None;
        for _ in 0..64 {
            let mut s = TcpStream::connect(listen).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"hi").unwrap();
            if read_line(&s) == "b" {
                let mut two = [0u8; 2];
                s.read_exact(&mut two).unwrap();
                on_b = Some(s);
                break;
            }
        }
        let mut s = on_b.expect("some connection lands on b");
        b.stop(); // checks now fail (refused); the open connection stays with b
        assert!(
            eventually(Duration::from_secs(3), || rw.log().contains("backend b (")),
            "{}",
            rw.log()
        );
        if closes {
            // Reset once the workers get the close command.
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert!(closed_by_peer(&s), "on_down = close kept the connection");
        } else {
            // Nothing comes to close it: it still works a while after the transition.
            std::thread::sleep(Duration::from_millis(300));
            let mut buf = [0u8; 4];
            s.write_all(b"ping").unwrap();
            s.read_exact(&mut buf).unwrap();
        }
    }
}

#[test]
fn all_down_rejects_by_default_and_use_all_fails_open() {
    for (all_down, served) in [("reject", false), ("use-all", true)] {
        let a = pinger("a", b"-ERR");
        let b = pinger("b", b"-ERR");
        let list = [(a.addr, "a"), (b.addr, "b")];
        let listen = free_addr();
        let h = format!("check = \"send-expect\"\nsend = \"PING\"\nexpect = \"+PONG\"\nall_down = \"{all_down}\"\n{FAST_HEALTH}");
        let rw = Ringway::start(&cfg(listen, &list, "", &h), &[listen]);
        assert!(
            eventually(Duration::from_secs(3), || rw
                .log()
                .contains("every backend is down")),
            "{}",
            rw.log()
        );
        let mut s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(b"hi");
        let mut buf = [0u8; 2];
        let got = s.read(&mut buf).map(|n| n > 0).unwrap_or(false);
        assert_eq!(got, served, "all_down = {all_down}");
    }
}

#[test]
fn udp_flows_keep_their_backend_until_it_goes_down_then_move_where_route_says() {
    // "a" and "b" answer the udp check with "a|ping" / "b|ping"; b will start lying.
    let a = UdpBackend::spawn("127.0.0.1:0", "a");
    let b = UdpBackend::spawn("127.0.0.1:0", "b");
    let list = [(a.addr, "a"), (b.addr, "b")];
    let listen = free_udp_addr();
    let h = format!("check = \"udp\"\nsend = \"ping\"\n{FAST_HEALTH}");
    let toml = format!(
        "{}{}",
        udp_config(listen, &list, "udp_idle_timeout = \"60s\""),
        health_table(&h)
    );
    let rw = start_udp(&toml, listen);
    let socks: Vec<UdpSocket> = (0..40)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let first: Vec<Vec<u8>> = socks
        .iter()
        .map(|s| udp_ask(s, listen, b"x").unwrap()[..2].to_vec())
        .collect();
    assert!(first.iter().any(|n| n == b"a|") && first.iter().any(|n| n == b"b|"));
    b.stop(); // b's port closes: checks and datagrams to it fail
    assert!(
        eventually(Duration::from_secs(3), || rw.log().contains("backend b (")),
        "{}",
        rw.log()
    );
    let clients: Vec<SocketAddr> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    let routed = rw.route("u", &["b"], &clients);
    // Flows' upstream sockets, not the health probes' (each probe has a socket of its
    // own and says "ping").
    let distinct = |b: &UdpBackend| {
        b.sources
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, d)| d != b"ping")
            .map(|(from, _)| *from)
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let before = distinct(&a);
    for (i, s) in socks.iter().enumerate() {
        let r = udp_ask(s, listen, b"again")
            .unwrap_or_else(|| panic!("flow {i} got no reply after b went down"));
        assert_eq!(
            &r[..2],
            b"a|",
            "flow {i} did not move to the backend the ring gives now"
        );
        assert_eq!(routed[i].1, a.addr.to_string());
    }
    // Flows that were on a kept their upstream socket (a saw no new source for them);
    // only the flows that moved from b are new to a.
    let moved = first.iter().filter(|n| n.as_slice() == b"b|").count();
    assert_eq!(
        distinct(&a),
        before + moved,
        "flows of the backend that stayed up were re-created"
    );
}
