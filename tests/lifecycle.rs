//! Connection lifecycle: idle timeout, max_connections, graceful shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringway::sys::signal::Signal;

use crate::util::*;

#[test]
fn idle_connections_are_closed_after_idle_timeout() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let listen = free_addr();
    let _rw = Ringway::start(
        &config(listen, &[(b.addr, "b")], "idle_timeout = \"1s\""),
        &[listen],
    );
    let (mut s, _) = connect_named(listen);
    // Traffic keeps it open past the timeout...
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        s.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
    }
    // ...silence closes it.
    let start = Instant::now();
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).unwrap();
    let waited = start.elapsed();
    assert_eq!(n, 0, "expected EOF");
    assert!(
        waited >= Duration::from_millis(800),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "closed too late: {waited:?}"
    );
}

#[test]
fn max_connections_closes_the_excess_at_once() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let (listen, metrics) = (free_addr(), free_addr());
    let toml = with_tables(
        &config(listen, &[(b.addr, "b")], "max_connections = 5"),
        &format!("[metrics]\nlisten = \"{metrics}\"\n"),
    );
    let rw = Ringway::start(&toml, &[listen, metrics]);
    // The readiness probe's connection is counted out first.
    let open = || {
        sample(
            &scrape(metrics),
            "ringway_listener_active_connections",
            &[("listener", "t")],
        )
    };
    assert!(
        eventually(Duration::from_secs(5), || open() == Some(0.0)),
        "{:?}",
        open()
    );
    let held: Vec<_> = (0..5).map(|_| connect_named(listen)).collect();
    assert!(held.iter().all(|(_, n)| n == "b"));
    let extra = TcpStream::connect(listen).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        closed_by_peer(&extra),
        "the sixth connection was served or left waiting"
    );
    drop(held);
    // Slots come back when connections end.
    assert!(eventually(Duration::from_secs(5), || {
        let s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 2];
        matches!((&s).read(&mut b), Ok(n) if n > 0)
    }));
    assert!(
        rw.log().contains("max_connections (5) reached"),
        "{}",
        rw.log()
    );
}

#[test]
fn sigterm_stops_accepting_and_drains_open_connections() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let listen = free_addr();
    let mut rw = Ringway::start(&config(listen, &[(b.addr, "b")], ""), &[listen]);
    let (mut s, _) = connect_named(listen);
    rw.signal(Signal::Term);
    // New connections are refused once the listeners are closed.
    assert!(
        eventually(Duration::from_secs(5), || TcpStream::connect(listen)
            .is_err()),
        "still accepting"
    );
    // The open connection still works both ways.
    s.write_all(b"during drain").unwrap();
    let mut back = [0u8; 12];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"during drain");
    assert!(
        rw.wait_exit(Duration::from_millis(500)).is_none(),
        "exited with a connection open"
    );
    drop(s);
    let st = rw
        .wait_exit(Duration::from_secs(5))
        .expect("exit after the last connection closed");
    assert!(st.success(), "{st:?}: {}", rw.log());
}

#[test]
fn sigterm_says_how_many_connections_and_flows_it_drains() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let d = UdpBackend::spawn("127.0.0.1:0", "d");
    let (listen, udp, admin) = (free_addr(), free_udp_addr(), free_addr());
    let mut toml = with_tables(
        &config(listen, &[(b.addr, "b")], ""),
        &ops_tables(free_addr(), admin, None),
    );
    toml.push_str(&format!(
        "\n[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nlisten = \"{udp}\"\n\n[[listener.backend]]\naddress = \"{}\"\nid = \"d\"\n",
        d.addr
    ));
    let rw = Ringway::start(&toml, &[listen, admin]);
    let (_s1, _) = connect_named(listen);
    let (_s2, _) = connect_named(listen);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(udp_ask(&client, udp, b"hi").is_some());
    // Counted once the readiness probe's connection is gone: 2 TCP, 1 UDP.
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = status(admin);
            s["listeners"][0]["active_connections"] == 2
                && s["listeners"][1]["active_connections"] == 1
        }),
        "{}",
        status(admin)
    );
    rw.signal(Signal::Term);
    assert!(
        eventually(Duration::from_secs(5), || rw.log().contains(
            "SIGTERM: no longer accepting; draining 2 TCP connection(s) and 1 UDP flow(s)"
        )),
        "{}",
        rw.log()
    );
}

#[test]
fn shutdown_timeout_bounds_the_drain() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let listen = free_addr();
    let cfg = config(listen, &[(b.addr, "b")], "")
        .replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"1s\"");
    let mut rw = Ringway::start(&cfg, &[listen]);
    let (s, _) = connect_named(listen);
    let start = Instant::now();
    rw.signal(Signal::Int);
    let st = rw
        .wait_exit(Duration::from_secs(5))
        .expect("exits after shutdown_timeout");
    assert!(st.success(), "{st:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "did not wait for the open connection"
    );
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(closed_by_peer(&s), "connection closed at the deadline");
}

/// Under systemd (`Type=notify`): READY=1 once listening, RELOADING=1 then READY=1
/// around a reload, STOPPING=1 on SIGTERM, on the socket NOTIFY_SOCKET names.
#[test]
fn tells_systemd_when_ready_reloading_and_stopping() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock
            .recv(&mut buf)
            .expect("no sd_notify message within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let toml = config(listen, &[(a.addr, "a")], "");
    let rw = Ringway::spawn_env(&toml, &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let ready = next();
    assert!(ready.starts_with("READY=1"), "{ready}");
    // Ready means listening.
    assert!(TcpStream::connect(listen).is_ok());
    std::fs::write(
        &rw.config,
        toml.replace("connect_timeout = \"1s\"", "connect_timeout = \"2s\""),
    )
    .unwrap();
    rw.signal(Signal::Hup);
    assert_eq!(next(), "RELOADING=1");
    let after = next();
    assert!(after.starts_with("READY=1\nSTATUS=reloaded"), "{after}");
    rw.signal(Signal::Term);
    assert_eq!(next(), "STOPPING=1");
}

/// A stop or reload signal that arrives the moment ringway listens is handled, never the
/// default action (SIGTERM and SIGHUP would kill the process mid-start): systemd may reload
/// right after start, and a supervisor may stop a process that has only just come up.
#[test]
fn signals_right_after_listening_are_handled_not_fatal() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    for (round, sig) in [Signal::Hup, Signal::Term, Signal::Hup, Signal::Term]
        .into_iter()
        .enumerate()
    {
        let listen = free_addr();
        let mut rw = Ringway::spawn(&config(listen, &[(b.addr, "b")], ""));
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect(listen)
                .is_ok()),
            "round {round}: never listened: {}",
            rw.log()
        );
        rw.signal(sig);
        match sig {
            Signal::Hup => {
                let (_, name) = connect_named(listen);
                assert_eq!(name, "b");
                assert!(
                    rw.wait_exit(Duration::from_millis(200)).is_none(),
                    "round {round}: SIGHUP killed it: {}",
                    rw.log()
                );
            }
            _ => {
                let st = rw
                    .wait_exit(Duration::from_secs(5))
                    .expect("exits after SIGTERM");
                assert!(st.success(), "round {round}: {st:?}: {}", rw.log());
            }
        }
    }
}

/// Signals an operator may send out of habit (HAProxy's and NGINX's USR1, a terminal's
/// WINCH/TTIN/TTOU) are logged and never kill or stop ringway; QUIT drains like TERM
/// (NGINX's graceful stop). Issue 9, defect 7. (USR2 upgrades: tests/upgrade.rs.)
#[test]
fn operator_signals_are_handled_not_fatal() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let listen = free_addr();
    let mut rw = Ringway::start(&config(listen, &[(b.addr, "b")], ""), &[listen]);
    for (sig, name) in [
        (Signal::Usr1, "SIGUSR1"),
        (Signal::Winch, "SIGWINCH"),
        (Signal::Ttin, "SIGTTIN"),
        (Signal::Ttou, "SIGTTOU"),
    ] {
        rw.signal(sig);
        assert!(
            eventually(Duration::from_secs(5), || rw.log().contains(name)),
            "{name} was not logged:\n{}",
            rw.log()
        );
        assert!(
            rw.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "{name} ended the process:\n{}",
            rw.log()
        );
        let (_, greeting) = connect_named(listen);
        assert_eq!(greeting, "b", "not serving after {name}");
    }
    assert!(
        rw.log().contains("SIGUSR1: reopening log files"),
        "{}",
        rw.log()
    );
    // QUIT: a graceful stop, exit 0.
    let (mut held, _) = connect_named(listen);
    rw.signal(Signal::Quit);
    assert!(
        eventually(Duration::from_secs(5), || TcpStream::connect(listen)
            .is_err()),
        "still accepting after SIGQUIT"
    );
    held.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    held.read_exact(&mut one).unwrap();
    drop(held);
    let st = rw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after draining");
    assert!(st.success(), "{st:?}: {}", rw.log());
}

/// The CPUs thread `tid` of process `pid` may run on (`Cpus_allowed_list`).
fn cpus_of(pid: i32, tid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// The worker threads of process `pid`: (name, tid).
fn worker_threads(pid: i32) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let tid = e.ok()?.file_name().to_string_lossy().to_string();
            let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            let name = name.trim().to_string();
            name.starts_with("ringway-w").then_some((name, tid))
        })
        .collect();
    out.sort();
    out
}

/// `worker_cpu_affinity`: with one worker per CPU ringway may use, worker i runs on CPU
/// i (by default, or asked for) and traffic flows; `false` pins nothing; with more
/// workers than CPUs, asking for it says why not and connections are spread by hash.
#[test]
fn worker_cpu_affinity_pins_workers_or_says_why_not() {
    // This process's CPUs (ringway inherits them): affinity applies when they are 0..n.
    let mine = cpus_of(std::process::id() as i32, &std::process::id().to_string());
    let allowed = std::thread::available_parallelism().unwrap().get();
    let from_zero = mine == "0" && allowed == 1 || mine == format!("0-{}", allowed - 1);
    let backend = Backend::named_echo("127.0.0.1:0", "b");
    let cases = [
        (
            allowed,
            "",
            from_zero,
            "worker_cpu_affinity: worker i runs on CPU i",
        ),
        (
            allowed,
            "worker_cpu_affinity = true",
            from_zero,
            "worker_cpu_affinity: worker i runs on CPU i",
        ),
        (allowed, "worker_cpu_affinity = false", false, ""),
        (
            allowed + 1,
            "worker_cpu_affinity = true",
            false,
            "worker_cpu_affinity needs",
        ),
    ];
    for (workers, key, applies, said) in cases {
        let listen = free_addr();
        let toml = config(listen, &[(backend.addr, "b")], "")
            .replace("workers = 2", &format!("workers = {workers}\n{key}"));
        let rw = Ringway::start(&toml, &[listen]);
        let (s, name) = connect_named(listen);
        assert_eq!(name, "b");
        drop(s);
        // Workers start one after another: one serving does not mean all have started.
        eventually(Duration::from_secs(5), || {
            worker_threads(rw.pid()).len() == workers
        });
        let threads = worker_threads(rw.pid());
        assert_eq!(threads.len(), workers, "{threads:?}");
        for (i, (_, tid)) in threads.iter().enumerate() {
            let cpus = cpus_of(rw.pid(), tid);
            if applies {
                assert_eq!(cpus, i.to_string(), "{key:?}: worker {i} runs on {cpus}");
            } else {
                assert_eq!(
                    cpus, mine,
                    "{key:?}: worker {i} pinned though it should not be"
                );
            }
        }
        if !said.is_empty() && (applies || key.ends_with("true")) {
            assert_eq!(log_count(&rw, said), 1, "{key:?}: {}", rw.log());
        }
        if key.ends_with("false") {
            assert_eq!(log_count(&rw, "worker_cpu_affinity"), 0, "{}", rw.log());
        }
    }
}
