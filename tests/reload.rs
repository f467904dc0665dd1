//! SIGHUP reload: under load, with backends added, removed and re-weighted, listeners
//! added and removed; invalid reloads that keep the running config.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringway::sys::signal::Signal;

use crate::util::*;

/// Rewrites the config file and sends SIGHUP; waits for the `n`-th reload log line
/// (`reloaded` or `reload failed`).
fn reload(rw: &Ringway, toml: &str, n: usize) {
    std::fs::write(&rw.config, toml).unwrap();
    rw.signal(Signal::Hup);
    let done = eventually(Duration::from_secs(10), || {
        log_count(rw, "reloaded ") + log_count(rw, "reload failed") >= n
    });
    assert!(done, "reload {n} never finished; log:\n{}", rw.log());
}

/// A client that echoes 64 KiB chunks through ringway, checking every byte, until told
/// to stop (at most 4,000 chunks or 60 s). Returns (backend name, bytes verified).
fn stream(
    mut s: TcpStream,
    name: String,
    stop: Arc<AtomicBool>,
    seed: u8,
) -> thread::JoinHandle<(String, u64)> {
    thread::spawn(move || {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut back = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let end = Instant::now() + Duration::from_secs(60);
        for i in 0..4_000u32 {
            if stop.load(Ordering::Relaxed) || Instant::now() > end {
                break;
            }
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = (j as u32)
                    .wrapping_mul(31)
                    .wrapping_add(i)
                    .wrapping_add(seed as u32) as u8;
            }
            s.write_all(&chunk)
                .unwrap_or_else(|e| panic!("{name}: write after {total} bytes: {e}"));
            s.read_exact(&mut back)
                .unwrap_or_else(|e| panic!("{name}: read after {total} bytes: {e}"));
            assert!(
                back == chunk,
                "{name}: echoed bytes differ after {total} bytes"
            );
            total += chunk.len() as u64;
        }
        (name, total)
    })
}

#[test]
fn reload_under_load_drops_no_connection_and_loses_no_byte() {
    let (bs, all) = named_backends(&["a", "b", "c", "d"]);
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let tables = ops_tables(metrics, admin, None);
    let first = with_tables(&config(listen, &all[..3], ""), &tables);
    let rw = Ringway::start(&first, &[listen, metrics]);

    // Two streaming clients on each of a, b and c (c is about to be removed).
    let stop = Arc::new(AtomicBool::new(false));
    let mut per: HashMap<String, usize> = HashMap::new();
    let mut streams = Vec::new();
    for _ in 0..200 {
        let (s, name) = connect_named(listen);
        let n = per.entry(name.clone()).or_default();
        if *n < 2 {
            *n += 1;
            streams.push(stream(s, name, Arc::clone(&stop), streams.len() as u8));
        }
        if streams.len() == 6 {
            break;
        }
    }
    assert_eq!(
        streams.len(),
        6,
        "could not place two streams on each backend: {per:?}"
    );
    thread::sleep(Duration::from_millis(300));

    // Reload 1: c removed, d added, a re-weighted to 3.
    let second = first
        .replace(
            &format!(
                "\n[[listener.backend]]\naddress = \"{}\"\nid = \"c\"\n",
                bs[2].addr
            ),
            "",
        )
        .replace("id = \"a\"\n", "id = \"a\"\nweight = 3\n")
        + &format!(
            "\n[[listener.backend]]\naddress = \"{}\"\nid = \"d\"\n",
            bs[3].addr
        );
    reload(&rw, &second, 1);
    assert!(rw.log().contains("reloaded"), "{}", rw.log());
    let fresh = connect_many(listen, 300);
    assert!(
        fresh.iter().all(|(_, n)| n != "c"),
        "a removed backend got a new connection"
    );
    assert!(
        fresh.iter().any(|(_, n)| n == "d"),
        "the added backend got nothing"
    );
    assert_routed(&rw, "t", &[], &fresh, &names(&all));
    let s = status(admin);
    let ids: Vec<&str> = s["listeners"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "d"]);
    assert_eq!(s["listeners"][0]["backends"][0]["weight"], 3);

    // Reload 2: a second listener.
    let listen2 = free_addr();
    let third = format!(
        "{second}\n[[listener]]\nname = \"t2\"\nlisten = \"{listen2}\"\n[[listener.backend]]\naddress = \"{}\"\nid = \"a\"\n",
        bs[0].addr
    );
    reload(&rw, &third, 2);
    let (mut on_t2, name) = connect_named(listen2);
    assert_eq!(name, "a");

    // Reload 3: the second listener removed; its open connection carries on.
    reload(&rw, &second, 3);
    assert!(
        eventually(Duration::from_secs(5), || TcpStream::connect(listen2)
            .is_err()),
        "t2 still accepts"
    );
    on_t2.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    on_t2.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");

    // Every stream, those on the removed c included, ran throughout without a lost byte.
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in streams {
        let (name, total) = h.join().expect("a streaming client failed");
        assert!(total > 0, "{name} moved nothing");
    }
    let m = scrape(metrics);
    assert_eq!(
        sample(&m, "ringway_config_reloads_total", &[("result", "success")]),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "ringway_config_reloads_total", &[("result", "failure")]),
        Some(0.0)
    );
    // Re-weighting and adding moved key space; the ratio says how much.
    let moved = sample(
        &m,
        "ringway_ring_remapped_ratio",
        &[("listener", "t"), ("pool", "t")],
    )
    .unwrap();
    assert!(moved > 0.0 && moved < 1.0, "{moved}");
}

#[test]
fn udp_flows_keep_their_backend_across_a_reload() {
    let x = UdpBackend::spawn("127.0.0.1:0", "x");
    let y = UdpBackend::spawn("127.0.0.1:0", "y");
    let z = UdpBackend::spawn("127.0.0.1:0", "z");
    let listen = free_udp_addr();
    let first = udp_config(
        listen,
        &[(x.addr, "x"), (y.addr, "y")],
        "udp_idle_timeout = \"60s\"",
    );
    let rw = start_udp(&first, listen);
    let who = |s: &std::net::UdpSocket| udp_who(s, listen);
    let old: Vec<(UdpSocket, String)> = (0..60)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let n = who(&s);
            (s, n)
        })
        .collect();
    // z added: flows stay where they are, though the ring now sends some keys to z.
    let second = first.clone()
        + &format!(
            "\n[[listener.backend]]\naddress = \"{}\"\nid = \"z\"\n",
            z.addr
        );
    reload(&rw, &second, 1);
    for (s, before) in &old {
        assert_eq!(&who(s), before, "a live flow moved on reload");
    }
    let new: Vec<(SocketAddr, String)> = (0..60)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let n = who(&s);
            (s.local_addr().unwrap(), n)
        })
        .collect();
    let names = names(&[(x.addr, "x"), (y.addr, "y"), (z.addr, "z")]);
    assert_routed(&rw, "u", &[], &new, &names);
    assert!(new.iter().any(|(_, n)| n == "z"));
}

#[test]
fn invalid_reloads_keep_the_running_config_and_say_why() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let good = with_tables(
        &config(listen, &[(a.addr, "a"), (b.addr, "b")], ""),
        &ops_tables(metrics, admin, None),
    );
    let rw = Ringway::start(&good, &[listen, metrics]);

    // A bad value: the error names file, line, column and key; nothing changes.
    let bad = good.replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\nretries = -1",
    );
    let line = bad.lines().position(|l| l == "retries = -1").unwrap() + 1;
    reload(&rw, &bad, 1);
    let log = rw.log();
    let path = rw.config.display().to_string();
    assert!(
        log.contains(&format!("{path}:{line}:11")),
        "no file:line:col in\n{log}"
    );
    assert!(log.contains("listener[0].retries"), "no key in\n{log}");
    let served = connect_many(listen, 100);
    assert!(served.iter().any(|(_, n)| n == "a") && served.iter().any(|(_, n)| n == "b"));

    // A new listener that cannot bind (the port is taken): nothing of that reload
    // applies, not even its other changes.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let blocked = good.replace(
        &format!(
            "\n[[listener.backend]]\naddress = \"{}\"\nid = \"b\"\n",
            b.addr
        ),
        "",
    ) + &format!(
        "\n[[listener]]\nname = \"t2\"\nlisten = \"{}\"\n[[listener.backend]]\naddress = \"{}\"\n",
        taken.local_addr().unwrap(),
        a.addr
    );
    reload(&rw, &blocked, 2);
    assert!(rw.log().contains("cannot listen on tcp"), "{}", rw.log());
    let served = connect_many(listen, 100);
    assert!(
        served.iter().any(|(_, n)| n == "b"),
        "b was removed by a failed reload"
    );

    // A syntax error through `ringway ctl reload`: non-zero exit with the reason.
    std::fs::write(&rw.config, "workers = \n").unwrap();
    let out = ctl(admin, None, &["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("422") && err.contains(&path), "{err}");
    assert!(
        err.contains(&format!(
            "not reloaded: the running ringway at {admin} refused its config file"
        )),
        "which side refused is not said: {err}"
    );
    // With `-c FILE`, a broken file is caught here, says so, and the server is not
    // asked (the failure count below stays at 3).
    let out = std::process::Command::new(bin())
        .args(["ctl", "-c", &path, "reload"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("not reloaded: {path} does not pass `ringway check` here, so the running ringway was not asked"))
            && err.contains(&format!("{path}:1:")),
        "{err}"
    );

    let m = scrape(metrics);
    assert_eq!(
        sample(&m, "ringway_config_reloads_total", &[("result", "failure")]),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "ringway_config_reloads_total", &[("result", "success")]),
        Some(0.0)
    );
    let s = status(admin);
    assert!(s["process"]["last_reload_error"]
        .as_str()
        .unwrap()
        .contains(&path));

    // Fixed: the next reload applies, and /status no longer shows the old error
    // (issue 9, defect 11).
    reload(&rw, &good, 4);
    assert_eq!(
        sample(
            &scrape(metrics),
            "ringway_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0)
    );
    let s = status(admin);
    assert!(
        s["process"]["last_reload_error"].is_null(),
        "a successful reload leaves the last error: {}",
        s["process"]
    );
}

#[test]
fn reload_changes_health_settings() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let dead = free_addr(); // nothing listens here
    let (listen, admin) = (free_addr(), free_addr());
    let base = with_tables(
        &config(listen, &[(a.addr, "a"), (dead, "b")], ""),
        &format!("[admin]\nlisten = \"{admin}\"\n"),
    );
    let unchecked = format!("{base}\n[listener.health]\ncheck = \"none\"\n");
    let checked = format!("{base}\n[listener.health]\n{FAST_HEALTH}\npassive = false\n");
    let rw = Ringway::start(&unchecked, &[listen, admin]);
    let state_of_b = || {
        let s = status(admin);
        s["listeners"][0]["backends"][1]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state_of_b(), "up", "unchecked backends are up");
    // Checks switched on: the dead backend is found and logged.
    reload(&rw, &checked, 1);
    assert!(
        eventually(Duration::from_secs(5), || log_count(&rw, "backend b (") > 0
            && state_of_b() == "down"),
        "checks did not start on reload; log:\n{}",
        rw.log()
    );
    // Switched off again: nothing could bring it back, so it is up again.
    reload(&rw, &unchecked, 2);
    assert_eq!(state_of_b(), "up");
    let served = connect_many(listen, 50);
    assert!(
        served.iter().all(|(_, n)| n == "a"),
        "retries cover the dead backend"
    );
}

/// A UDP listener renamed on the same address: its old socket stays (for its live
/// flows) beside the new one, and new clients the kernel hashes to the old socket are
/// served by the new listener, not dropped.
#[test]
fn a_renamed_udp_listener_drops_no_new_flow() {
    let x = UdpBackend::spawn("127.0.0.1:0", "x");
    let listen = free_udp_addr();
    let first = udp_config(listen, &[(x.addr, "x")], "udp_idle_timeout = \"60s\"");
    let rw = start_udp(&first, listen);
    let old: Vec<UdpSocket> = (0..20)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            assert!(udp_ask(&s, listen, b"before").is_some());
            s
        })
        .collect();
    reload(&rw, &first.replace("name = \"u\"", "name = \"renamed\""), 1);
    for s in &old {
        assert!(
            udp_ask(s, listen, b"old flow").is_some(),
            "a live flow was dropped"
        );
    }
    for i in 0..40 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(
            udp_ask(&s, listen, b"new flow").is_some(),
            "new client {i} got no answer"
        );
    }
}

/// A connection keeps the idle timeout of the routing it started with (the risk read
/// from the code: the sweep read the current routing's). Raising `idle_timeout` by a
/// reload does not keep an old connection open past its own 1 s; a connection opened
/// after the reload gets the new, longer one.
#[test]
fn open_connections_keep_the_idle_timeout_they_started_with() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let listen = free_addr();
    let short = config(listen, &[(b.addr, "b")], "idle_timeout = \"1s\"");
    let rw = Ringway::start(&short, &[listen]);
    let (old, _) = connect_named(listen);
    reload(
        &rw,
        &short.replace("idle_timeout = \"1s\"", "idle_timeout = \"1h\""),
        1,
    );
    let (new, _) = connect_named(listen);
    // Closed (EOF or reset) within 5 s, or still open (the read timed out).
    old.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let r = (&old).read(&mut buf);
    assert!(
        matches!(&r, Ok(0))
            || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the old connection was kept open: {r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed only after {:?}",
        started.elapsed()
    );
    // The new one is still open after the old one's timeout.
    thread::sleep(Duration::from_millis(1500));
    new.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1];
    let r = (&new).read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "the new connection was closed: {r:?}"
    );
}

/// A reload resolves backend host names off the control task: while it waits on a DNS
/// server that never answers, `/metrics` and `/status` keep answering at once (the
/// risk read from the code: getaddrinfo ran on the control runtime, under its lock).
/// ringway runs under `ip netns exec`, which gives it the namespace's resolv.conf.
#[test]
#[ignore = "needs root"]
fn a_slow_resolver_delays_the_reload_only() {
    in_named_netns("slowdns", |ns| {
        let etc = format!("/etc/netns/{ns}");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            format!("{etc}/resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:3 attempts:1\n",
        )
        .unwrap();
        // The namespace's DNS server: it reads queries and never answers.
        let _silent = UdpSocket::bind("127.0.0.1:53").unwrap();
        let b = Backend::named_echo("127.0.0.1:0", "b");
        let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
        let toml = with_tables(
            &config(listen, &[(b.addr, "b")], ""),
            &ops_tables(metrics, admin, None),
        );
        let rw = Ringway::spawn_via(&toml, &[], &["ip", "netns", "exec", ns]);
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect(metrics)
                .is_ok()),
            "{}",
            rw.log()
        );
        let slow = format!("{toml}\n[[listener.backend]]\naddress = \"slow.example.test:9001\"\n");
        std::fs::write(&rw.config, slow).unwrap();
        rw.signal(Signal::Hup);
        let started = Instant::now();
        let mut worst = Duration::ZERO;
        let mut answers = 0;
        while !rw.log().contains("reload failed") && started.elapsed() < Duration::from_secs(20) {
            let t = Instant::now();
            assert_eq!(http("GET", metrics, "/metrics", None).status, 200);
            assert_eq!(http("GET", admin, "/status", None).status, 200);
            worst = worst.max(t.elapsed());
            answers += 1;
            thread::sleep(Duration::from_millis(100));
        }
        let waited = started.elapsed();
        let _ = std::fs::remove_dir_all(&etc);
        assert!(
            rw.log().contains("cannot resolve \"slow.example.test\""),
            "{}",
            rw.log()
        );
        assert!(
            waited >= Duration::from_secs(2),
            "the lookup did not wait on the silent server ({waited:?}): this proves nothing"
        );
        assert!(answers >= 5, "{answers} answers in {waited:?}");
        assert!(
            worst < Duration::from_secs(1),
            "the control plane stalled {worst:?} behind the resolver"
        );
    });
}
