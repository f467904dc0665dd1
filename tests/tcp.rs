//! Bytes arrive intact, EOF travels both ways, IPv6 works.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use ringway::balance::hash::xxh3;

use crate::util::*;

/// Pseudo-random bytes (xorshift), different per seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn sixty_four_mib_each_way_arrive_intact() {
    integrity("auto", 64 * 1024 * 1024);
}

#[test]
fn forced_splice_is_intact_too() {
    integrity("splice", 16 * 1024 * 1024);
}

#[test]
fn forced_copy_is_intact_too() {
    integrity("copy", 16 * 1024 * 1024);
}

#[test]
fn kernel_forwarding_is_intact_too() {
    integrity("kernel", 16 * 1024 * 1024);
}

/// Echoes `len` pseudo-random bytes through ringway in `forward` mode; checks count and
/// checksum of what comes back.
fn integrity(forward: &str, len: usize) {
    let b = Backend::echo("127.0.0.1:0");
    let listen = free_addr();
    let _rw = Ringway::start(
        &config(
            listen,
            &[(b.addr, "echo")],
            &format!("forward = \"{forward}\""),
        ),
        &[listen],
    );
    let payload = data(len, 7);
    let want = xxh3(&payload);
    let s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        // Odd-sized writes exercise partial reads/writes and both forwarding modes.
        for chunk in payload.chunks(100_003) {
            w.write_all(chunk).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(len);
    (&s).read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), len, "{forward}: byte count");
    assert_eq!(xxh3(&got), want, "{forward}: checksum of the echoed bytes");
}

#[test]
fn client_half_close_lets_the_backend_answer_after_eof() {
    // The backend reads to EOF, then reports how much it got, then closes.
    let b = Backend::spawn("127.0.0.1:0", |mut s| {
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        thread::sleep(Duration::from_millis(100));
        s.write_all(format!("got {} bytes", all.len()).as_bytes())
            .unwrap();
    });
    let listen = free_addr();
    let _rw = Ringway::start(&config(listen, &[(b.addr, "b")], ""), &[listen]);
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[1u8; 12345]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got 12345 bytes");
}

#[test]
fn backend_half_close_lets_the_client_keep_sending() {
    let (tx, rx) = std::sync::mpsc::channel();
    let b = Backend::spawn("127.0.0.1:0", move |mut s| {
        s.write_all(b"bye").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        tx.send(rest).unwrap();
    });
    let listen = free_addr();
    let _rw = Ringway::start(&config(listen, &[(b.addr, "b")], ""), &[listen]);
    // The readiness probe of Ringway::start made one connection: drain its report.
    let _ = rx.recv_timeout(Duration::from_secs(5));
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut first = String::new();
    s.read_to_string(&mut first).unwrap();
    assert_eq!(first, "bye", "the backend's data, then EOF");
    s.write_all(b"still here").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "still here"
    );
}

#[test]
fn a_backend_reset_closes_the_client_promptly() {
    let b = Backend::spawn("127.0.0.1:0", |s| {
        thread::sleep(Duration::from_millis(100));
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
    });
    let listen = free_addr();
    let _rw = Ringway::start(&config(listen, &[(b.addr, "b")], ""), &[listen]);
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    // Either a reset or EOF, and quickly: not a timeout.
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes"),
        Err(e) => assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "timed out: the close was not passed on"
        ),
    }
}

#[test]
fn ipv6_on_both_sides() {
    let b = Backend::named_echo("[::1]:0", "six");
    let port = free_port("::1");
    let listen = format!("[::1]:{port}").parse().unwrap();
    let _rw = Ringway::start(&config(listen, &[(b.addr, "six")], ""), &[listen]);
    let (mut s, name) = connect_named(listen);
    assert_eq!(name, "six");
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

/// A backend named by host name (`localhost` from /etc/hosts) is resolved when the
/// config loads; `route` still names it as written.
#[test]
fn a_backend_named_by_host_name_is_resolved() {
    // localhost may resolve to 127.0.0.1 or to ::1 first: the backend answers on both.
    let v4 = Backend::named_echo("127.0.0.1:0", "named");
    let port = v4.addr.port();
    let _v6 = Backend::named_echo(&format!("[::1]:{port}"), "named");
    let listen = free_addr();
    let toml = config(listen, &[(v4.addr, "named")], "").replace(
        &format!("address = \"{}\"", v4.addr),
        &format!("address = \"localhost:{port}\""),
    );
    assert!(toml.contains("localhost"), "{toml}");
    let (metrics, admin) = (free_addr(), free_addr());
    let toml = with_tables(&toml, &ops_tables(metrics, admin, None));
    let rw = Ringway::start(&toml, &[listen, admin]);
    let b = &status(admin)["listeners"][0]["backends"][0];
    assert_eq!(b["address"], format!("localhost:{port}"));
    let resolved: std::net::SocketAddr = b["resolved"].as_str().unwrap().parse().unwrap();
    assert!(
        resolved.ip().is_loopback() && resolved.port() == port,
        "{b}"
    );
    let shown = ctl(admin, None, &["status"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("localhost:{port} -> {resolved}")),
        "{shown}"
    );
    for _ in 0..3 {
        let (mut s, name) = connect_named(listen);
        assert_eq!(name, "named");
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
    let client: std::net::SocketAddr = "192.0.2.1:1000".parse().unwrap();
    assert_eq!(
        rw.route("t", &[], &[client]),
        [(client.to_string(), format!("localhost:{port}"))]
    );
}

#[test]
fn many_small_messages_keep_order() {
    // Request/response traffic stays in copy mode; this checks that path end to end.
    let b = Backend::echo("127.0.0.1:0");
    let listen = free_addr();
    let _rw = Ringway::start(&config(listen, &[(b.addr, "b")], ""), &[listen]);
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    for i in 0..2000u32 {
        let msg = format!("message {i:05}\n");
        s.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
}

/// Host names are resolved again every `resolve_interval` while running: when a name
/// moves, new connections follow it without a reload and open ones carry on. ringway
/// runs in a private mount namespace with its own /etc/hosts, which the test rewrites.
#[test]
#[ignore = "needs root"]
fn a_moved_host_name_is_followed_without_a_reload() {
    require_root();
    let has_unshare = std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_unshare,
        "needs unshare (util-linux) for a private /etc/hosts"
    );
    // Both backends on one port (the name carries no port): retried, because another
    // test's socket may hold the port on 127.0.0.2 (CI saw EADDRINUSE once).
    let (one, _two) = (0..50)
        .find_map(|_| {
            let one = Backend::named_echo("127.0.0.1:0", "one");
            let two = Backend::try_named_echo(&format!("127.0.0.2:{}", one.addr.port()), "two");
            two.ok().map(|two| (one, two))
        })
        .expect("no port free on both 127.0.0.1 and 127.0.0.2 in 50 tries");
    let port = one.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 svc.ringway.test\n").unwrap();
    let wrapper = dir.path().join("with-hosts.sh");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nmount --bind \"$RW_HOSTS\" /etc/hosts || exit 97\nexec \"$@\"\n",
    )
    .unwrap();
    let listen = free_addr();
    let toml = format!(
        "resolve_interval = \"200ms\"\n{}",
        config(listen, &[(one.addr, "svc")], "").replace(
            &format!("address = \"{}\"", one.addr),
            &format!("address = \"svc.ringway.test:{port}\""),
        )
    );
    assert!(toml.contains("svc.ringway.test"), "{toml}");
    let hosts_env = hosts.to_str().unwrap();
    let wrapper_path = wrapper.to_str().unwrap();
    let rw = Ringway::spawn_via(
        &toml,
        &[("RW_HOSTS", hosts_env)],
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            wrapper_path,
        ],
    );
    assert!(
        eventually(Duration::from_secs(10), || TcpStream::connect(listen)
            .is_ok()),
        "ringway did not start: {}",
        rw.log()
    );
    let (mut held, name) = connect_named(listen);
    assert_eq!(name, "one");
    // The name moves (written in place: the bind mount sees the same file).
    std::fs::write(&hosts, "127.0.0.2 svc.ringway.test\n").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || connect_named(listen).1 == "two"),
        "new connections did not follow the name: {}",
        rw.log()
    );
    assert!(
        rw.log().contains("now resolves to 127.0.0.2"),
        "{}",
        rw.log()
    );
    // The connection opened before the move still reaches the old address.
    held.write_all(b"still").unwrap();
    let mut back = [0u8; 5];
    held.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still");
}
