//! Upgrading the binary in place (`ringway ctl upgrade`, SIGUSR2), from outside: the
//! new process takes the listening sockets over while clients keep connecting, the old
//! one drains and exits; a new binary that cannot serve changes nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

/// The pause between a load thread's connections: a steady load of a few hundred
/// connections a second, not a CPU hog that slows the rest of the suite beside it.
const PACE: Duration = Duration::from_millis(1);

/// Kills the process serving now (after an upgrade, no longer the test's child).
pub struct Serving(pub SocketAddr);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(pid) = serving_pid(self.0) {
            let _ = ringway::sys::signal::send(pid as u32, ringway::sys::signal::Signal::Kill);
        }
    }
}

/// The pid `/status` reports.
fn serving_pid(admin: SocketAddr) -> Option<u64> {
    try_get(admin, "/status")
        .ok()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["process"]["pid"].as_u64())
}

/// Gone: no such process, or a zombie nobody has reaped yet.
fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// One TCP listener on `listen` in front of the echo backend at `backend`, with the
/// admin API and `/metrics` at `(admin, metrics)`.
fn echo_config(
    backend: SocketAddr,
    listen: SocketAddr,
    (admin, metrics): (SocketAddr, SocketAddr),
) -> String {
    with_tables(
        &config(listen, &[(backend, "b")], ""),
        &ops_tables(metrics, admin, None),
    )
}

/// One connect-echo-close through `listen`; false on any failure.
fn round_trip(listen: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&listen, Duration::from_secs(5)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

/// Clients that connect, echo and close without end (bounded: two minutes at most),
/// each pausing [`PACE`] between connections unless `burst` is set.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(listen: SocketAddr, clients: usize, burst: &Arc<AtomicBool>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
                let burst = Arc::clone(burst);
                std::thread::spawn(move || {
                    let until = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        let counter = if round_trip(listen) { &ok } else { &failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if !burst.load(Ordering::Relaxed) {
                            std::thread::sleep(PACE);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Connections that succeeded so far.
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until 50 more have succeeded.
    fn flows(&self) -> bool {
        let before = self.ok();
        eventually(Duration::from_secs(5), || self.ok() > before + 50)
    }

    /// Stops the clients: how many connections succeeded and failed.
    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            t.join().unwrap();
        }
        (self.ok(), self.failed.load(Ordering::Relaxed))
    }
}

/// Five upgrades in a row while two clients connect, echo and close without pause:
/// no connection fails, each upgrade names the new process, which `/status` then
/// reports, and each old process exits. The success counter carries across.
#[test]
fn five_upgrades_under_load_fail_no_connection() {
    let (backend, listen, admin, metrics) = (
        Backend::echo("127.0.0.1:0"),
        free_addr(),
        free_addr(),
        free_addr(),
    );
    let toml = echo_config(backend.addr, listen, (admin, metrics));
    let rw = Ringway::start(&toml, &[listen, admin, metrics]);
    let _serving = Serving(admin);
    // Paced between upgrades, flat out while one is under way (its window is where
    // a lost connection would be).
    let burst = Arc::new(AtomicBool::new(false));
    let load = Load::start(listen, 2, &burst);
    let mut pid = u64::from(rw.pid() as u32);
    for n in 1..=5 {
        assert!(load.flows(), "no traffic before upgrade {n}");
        burst.store(true, Ordering::Relaxed);
        let out = ctl(admin, None, &["upgrade"]);
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "upgrade {n} failed: {said}{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            rw.log()
        );
        // Once `ctl upgrade` has answered, the old process accepts no request: the
        // admin socket both hold is the new one's (CI once saw /status name the old
        // process here, when the answer came before the old one stopped accepting).
        let new = serving_pid(admin).unwrap();
        assert!(
            said.contains(&format!("process {new} took over from process {pid}")),
            "/status names process {new}; ctl said: {said}"
        );
        assert!(
            eventually(Duration::from_secs(10), || gone(pid)),
            "old process {pid} still runs"
        );
        burst.store(false, Ordering::Relaxed);
        pid = new;
    }
    assert!(load.flows());
    let (ok, failed) = load.stop();
    assert_eq!(
        failed, 0,
        "connections failed across upgrades ({ok} succeeded)"
    );
    let text = scrape(metrics);
    assert_eq!(
        sample(&text, "ringway_upgrades_total", &[("result", "success")]),
        Some(5.0),
        "{text}"
    );
}

/// SIGUSR2 upgrades as `ctl upgrade` does.
#[test]
fn sigusr2_upgrades() {
    let (backend, listen, admin) = (Backend::echo("127.0.0.1:0"), free_addr(), free_addr());
    let toml = echo_config(backend.addr, listen, (admin, free_addr()));
    let rw = Ringway::start(&toml, &[listen, admin]);
    let _serving = Serving(admin);
    let old = u64::from(rw.pid() as u32);
    rw.signal(ringway::sys::signal::Signal::Usr2);
    assert!(
        eventually(Duration::from_secs(10), || serving_pid(admin)
            .is_some_and(|p| p != old)
            && gone(old)),
        "no new process took over; log:\n{}",
        rw.log()
    );
    assert!(round_trip(listen));
}

/// A new binary that cannot serve changes nothing: one that exits 1, and one whose
/// config (changed on disk since) is invalid. `ctl upgrade` fails and says why; the
/// old process serves on, counts the failures, and can still be upgraded.
#[test]
fn a_failed_upgrade_changes_nothing() {
    let (backend, listen, admin, metrics) = (
        Backend::echo("127.0.0.1:0"),
        free_addr(),
        free_addr(),
        free_addr(),
    );
    let toml = echo_config(backend.addr, listen, (admin, metrics));
    // Started from a copy of the binary, which the test then replaces.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("ringway");
    std::fs::copy(bin(), &exe).unwrap();
    let exe_s = exe.to_str().unwrap().to_string();
    let script = format!("shift; exec {exe_s} \"$@\"");
    let rw = Ringway::spawn_via(&toml, &[], &["/bin/sh", "-c", &script, "sh"]);
    assert!(eventually(Duration::from_secs(10), || {
        TcpStream::connect(admin).is_ok() && TcpStream::connect(listen).is_ok()
    }));
    let _serving = Serving(admin);
    let pid = serving_pid(admin).unwrap();
    let replace = |content: &[u8]| {
        use std::os::unix::fs::PermissionsExt;
        let next = dir.path().join("ringway.next");
        std::fs::write(&next, content).unwrap();
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&next, &exe).unwrap();
    };
    let failed_upgrade = |what: &str, says: &str| {
        let out = ctl(admin, None, &["upgrade"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{what}: the upgrade succeeded");
        assert!(err.contains(says), "{what}: {err}");
        assert_eq!(
            serving_pid(admin),
            Some(pid),
            "{what}: another process serves"
        );
        assert!(
            round_trip(listen),
            "{what}: the old process stopped serving"
        );
    };
    // A binary that exits 1 before speaking.
    replace(b"#!/bin/sh\necho 'not a ringway' >&2\nexit 1\n");
    failed_upgrade("exit 1", "exited before taking over (exit status: 1)");
    // The real binary again, but the config on disk is broken now.
    replace(&std::fs::read(bin()).unwrap());
    let good = std::fs::read_to_string(&rw.config).unwrap();
    std::fs::write(
        &rw.config,
        good.replacen("[[listener]]", "[[listener]]\nbogus_key = 1", 1),
    )
    .unwrap();
    failed_upgrade("bad config", "bogus_key");
    let text = scrape(metrics);
    assert_eq!(
        sample(&text, "ringway_upgrades_total", &[("result", "failure")]),
        Some(2.0),
        "{text}"
    );
    // Fixed: the same process upgrades.
    std::fs::write(&rw.config, &good).unwrap();
    let out = ctl(admin, None, &["upgrade"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(eventually(Duration::from_secs(10), || gone(pid)));
    assert!(round_trip(listen));
}

/// The processes whose parent is `pid` (from every `/proc/N/stat`).
fn children(pid: u64) -> Vec<u64> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    // "pid (comm) state ppid ...": the fields after the command.
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u64>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The new process is killed (SIGKILL) while the old one waits for its answer: the
/// upgrade fails and says so, no connection fails meanwhile (the new process accepts
/// nothing before it answers), and the old process serves on.
#[test]
fn a_new_process_killed_mid_hand_off_changes_nothing() {
    let (backend, listen, admin) = (Backend::echo("127.0.0.1:0"), free_addr(), free_addr());
    let toml = echo_config(backend.addr, listen, (admin, free_addr()));
    // Inherited by the new process: it waits 3 s before it answers.
    let rw = Ringway::spawn_env(&toml, &[("RINGWAY_TEST_UPGRADE_PAUSE_MS", "3000")]);
    assert!(eventually(Duration::from_secs(10), || {
        TcpStream::connect(admin).is_ok() && TcpStream::connect(listen).is_ok()
    }));
    let old = u64::from(rw.pid() as u32);
    let load = Load::start(listen, 1, &Arc::new(AtomicBool::new(false)));
    let upgrading = std::thread::spawn(move || ctl(admin, None, &["upgrade"]));
    let mut new = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            new = children(old);
            !new.is_empty()
        }),
        "no new process started"
    );
    // Well inside its pause: it holds the sockets and has answered nothing.
    std::thread::sleep(Duration::from_millis(500));
    for pid in &new {
        ringway::sys::signal::send(*pid as u32, ringway::sys::signal::Signal::Kill).unwrap();
    }
    let out = upgrading.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the upgrade succeeded");
    assert!(err.contains("signal: 9"), "{err}");
    assert!(load.flows());
    let (_, failed) = load.stop();
    assert_eq!(failed, 0, "connections failed");
    assert_eq!(serving_pid(admin), Some(old));
    drop(rw);
}

/// `ctl upgrade`, which must succeed; the new process's pid (from what it printed).
pub fn upgrade(admin: SocketAddr, rw: &Ringway) -> u64 {
    let out = ctl(admin, None, &["upgrade"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "upgrade failed: {said}{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        rw.log()
    );
    said.split("process ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {said:?}"))
}

/// The first `/status` the process `pid` answers (the old one may still answer on
/// the shared socket for a moment).
pub fn status_of(admin: SocketAddr, pid: u64) -> serde_json::Value {
    let mut got = None;
    eventually(Duration::from_secs(5), || {
        got = try_get(admin, "/status")
            .ok()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .filter(|v| v["process"]["pid"].as_u64() == Some(pid));
        got.is_some()
    });
    got.unwrap_or_else(|| panic!("process {pid} never answered /status"))
}

/// Backend `id` of the first listener in `/status` JSON.
fn backend_status<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["listeners"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no backend {id} in {status}"))
}

/// Health and admin state go over with an upgrade, and the counters continue: a
/// backend down before it is down in the new process's first answer (its check takes
/// 2 s to fail: a new process starting from scratch would call it up until then), a
/// drained one stays drained, a disabled one disabled; clients go only where they
/// went before; `/metrics` goes on from the old process's counts.
#[test]
fn health_admin_state_and_counters_carry_over() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let c = Backend::named_echo("127.0.0.1:0", "c");
    // Reads the check's bytes and never answers: each check fails at its timeout.
    let mute = Backend::spawn("127.0.0.1:0", |mut s| {
        let mut buf = [0u8; 64];
        while s.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let (listen, admin, metrics) = (free_addr(), free_addr(), free_addr());
    let health = "health = { check = \"send-expect\", send = \"PING\\n\", interval = \"300ms\", timeout = \"2s\", rise = 1, fall = 1 }";
    let toml = with_tables(
        &config(
            listen,
            &[
                (a.addr, "a"),
                (b.addr, "b"),
                (c.addr, "c"),
                (mute.addr, "mute"),
            ],
            health,
        ),
        &ops_tables(metrics, admin, None),
    );
    let rw = Ringway::start(&toml, &[listen, admin, metrics]);
    let _serving = Serving(admin);
    assert!(
        eventually(Duration::from_secs(10), || backend_status(
            &status(admin),
            "mute"
        )["state"]
            == "down"),
        "the mute backend never went down; log:\n{}",
        rw.log()
    );
    for (id, action) in [("b", "drain"), ("c", "disable")] {
        let path = format!("/listeners/t/backends/{id}/{action}");
        assert_eq!(http("POST", admin, &path, None).status, 200, "{path}");
    }
    for _ in 0..20 {
        let (_, name) = connect_named(listen);
        assert_eq!(name, "a");
    }
    let before = scrape(metrics);
    let count = |text: &str, name: &str, labels: &[(&str, &str)]| {
        sample(text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
    };
    let conns = count(
        &before,
        "ringway_listener_connections_total",
        &[("listener", "t")],
    );
    let ok_a = [
        ("listener", "t"),
        ("pool", "t"),
        ("backend", "a"),
        ("result", "success"),
    ];
    let checks = count(&before, "ringway_health_checks_total", &ok_a);
    assert!(conns >= 20.0 && checks >= 1.0, "{before}");

    let old = u64::from(rw.pid() as u32);
    let new = upgrade(admin, &rw);
    let first = status_of(admin, new);
    let state = |id: &str| {
        let b = backend_status(&first, id);
        (
            b["state"].as_str().unwrap().to_string(),
            b["admin"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(state("mute"), ("down".into(), "enabled".into()), "{first}");
    assert!(
        backend_status(&first, "mute")["reason"].is_string(),
        "{first}"
    );
    assert_eq!(
        state("b"),
        ("draining".into(), "draining".into()),
        "{first}"
    );
    assert_eq!(state("c"), ("down".into(), "disabled".into()), "{first}");
    assert_eq!(state("a"), ("up".into(), "enabled".into()), "{first}");
    for _ in 0..10 {
        let (_, name) = connect_named(listen);
        assert_eq!(name, "a", "a client went elsewhere after the upgrade");
    }
    assert!(
        eventually(Duration::from_secs(10), || gone(old)),
        "old process {old} still runs"
    );
    let after = scrape(metrics);
    assert!(
        count(
            &after,
            "ringway_listener_connections_total",
            &[("listener", "t")]
        ) >= conns + 10.0,
        "connections did not count on from {conns}:\n{after}"
    );
    assert!(
        count(&after, "ringway_health_checks_total", &ok_a) >= checks,
        "{after}"
    );
    let down = [
        ("listener", "t"),
        ("pool", "t"),
        ("backend", "mute"),
        ("to", "down"),
    ];
    assert_eq!(
        count(&after, "ringway_backend_transitions_total", &down),
        1.0,
        "the mute backend went down once, before the upgrade:\n{after}"
    );
}

/// Established connections go over with an upgrade, three times: opened before, they
/// echo after each (bytes sent just before an upgrade come back after it), the new
/// process counts them, they close cleanly, and no old process is left while they
/// are open (a process that drained them instead would wait for them, up to its
/// 5 s `shutdown_timeout`).
#[test]
fn open_connections_go_over_and_no_old_process_lingers() {
    let (backend, listen, admin) = (Backend::echo("127.0.0.1:0"), free_addr(), free_addr());
    let toml = echo_config(backend.addr, listen, (admin, free_addr()));
    let rw = Ringway::start(&toml, &[listen, admin]);
    let _serving = Serving(admin);
    let mut conns: Vec<TcpStream> = (0..20)
        .map(|_| {
            let s = TcpStream::connect(listen).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .collect();
    let echo = |s: &mut TcpStream, msg: &[u8]| {
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)
            .map(|()| back == msg)
            .unwrap_or(false)
    };
    for (i, s) in conns.iter_mut().enumerate() {
        let msg = format!("before {i}");
        s.write_all(msg.as_bytes()).unwrap();
        assert!(echo(s, msg.as_bytes()), "connection {i} before any upgrade");
    }
    let mut old = u64::from(rw.pid() as u32);
    for n in 1..=3 {
        // In flight across the upgrade: sent before, read after.
        for (i, s) in conns.iter_mut().enumerate() {
            s.write_all(format!("<{n}:{i}>").as_bytes()).unwrap();
        }
        let new = upgrade(admin, &rw);
        assert!(
            eventually(Duration::from_secs(3), || gone(old)),
            "upgrade {n}: old process {old} still runs with the connections open; log:\n{}",
            rw.log()
        );
        for (i, s) in conns.iter_mut().enumerate() {
            let msg = format!("<{n}:{i}>");
            assert!(
                echo(s, msg.as_bytes()),
                "upgrade {n}: connection {i} lost {msg}"
            );
            let msg = format!("after {n} {i}");
            s.write_all(msg.as_bytes()).unwrap();
            assert!(
                echo(s, msg.as_bytes()),
                "upgrade {n}: connection {i} does not echo"
            );
        }
        let st = status_of(admin, new);
        assert_eq!(
            st["listeners"][0]["active_connections"], 20,
            "upgrade {n}: the new process does not count them: {st}"
        );
        old = new;
    }
    for (i, s) in conns.iter_mut().enumerate() {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        assert!(
            s.read_to_end(&mut rest).is_ok() && rest.is_empty(),
            "connection {i} did not end cleanly"
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || status_of(admin, old)
            ["listeners"][0]["active_connections"]
            == 0),
        "closed connections still counted"
    );
}

/// The byte of a bulk stream at `i` (no period a lost or repeated pipe could hide in).
fn pattern(i: usize) -> u8 {
    ((i * 7 + i / 4093) % 251) as u8
}

/// A session in the middle of a bulk transfer goes over with the bytes it holds
/// (in its pipe, or in memory): the client, which reads slowly, gets every byte in
/// order, and the access log's record (written by the new process) counts all of
/// them and the session's whole life.
#[test]
fn a_bulk_transfer_goes_over_with_the_bytes_in_flight() {
    const TOTAL: usize = 16 << 20;
    let backend = Backend::spawn("127.0.0.1:0", |mut s| {
        let chunk: Vec<u8> = (0..TOTAL).map(pattern).collect();
        let _ = s.write_all(&chunk);
    });
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = with_tables(
        &config(listen, &[(backend.addr, "b")], ""),
        &format!(
            "{}[access_log]\npath = \"{}\"\n",
            ops_tables(free_addr(), admin, None),
            log.display()
        ),
    );
    let rw = Ringway::start(&toml, &[listen, admin]);
    let _serving = Serving(admin);
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = s.local_addr().unwrap().to_string();
    let mut got = vec![0u8; 1 << 20];
    s.read_exact(&mut got).unwrap();
    // The backend is blocked now, ringway holds what the client does not read.
    std::thread::sleep(Duration::from_millis(300));
    let old = u64::from(rw.pid() as u32);
    upgrade(admin, &rw);
    // (With `forward = "kernel"` the session goes over once the kernel holds none
    // of its bytes: as the client reads.)
    s.read_to_end(&mut got).unwrap();
    assert!(
        eventually(Duration::from_secs(3), || gone(old)),
        "old process still runs"
    );
    assert_eq!(got.len(), TOTAL, "bytes lost or added across the upgrade");
    if let Some(i) = (0..TOTAL).find(|&i| got[i] != pattern(i)) {
        panic!("byte {i} of {TOTAL} differs after the upgrade");
    }
    drop(s);
    let mut record = None;
    eventually(Duration::from_secs(5), || {
        record = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .filter(|v| v["client"] == me.as_str())
            });
        record.is_some()
    });
    let record = record.expect("no access-log record for the session");
    assert_eq!(record["bytes_out"], TOTAL as u64, "{record}");
    assert!(record["duration_ms"].as_u64().unwrap() >= 300, "{record}");
}

/// UDP flows go over with an upgrade: each client's datagrams reach the same backend
/// after it, from the same source address and port (the flow's own upstream socket
/// went over), as stateful UDP (WireGuard, QUIC, games) needs; those sent while the
/// upgrade is under way too (the new process reads none before the flows are in).
#[test]
fn udp_flows_go_over_with_their_backend_and_source_port() {
    let names = ["a", "b", "c"];
    let backends: Vec<UdpBackend> = names
        .iter()
        .map(|n| UdpBackend::spawn("127.0.0.1:0", n))
        .collect();
    let list: Vec<(SocketAddr, &str)> = backends
        .iter()
        .zip(names)
        .map(|(b, n)| (b.addr, n))
        .collect();
    let (listen, admin) = (free_udp_addr(), free_addr());
    let toml = with_tables(
        &udp_config(listen, &list, "health = { check = \"none\" }"),
        &ops_tables(free_addr(), admin, None),
    );
    let rw = start_udp(&toml, listen);
    let _serving = Serving(admin);
    assert!(eventually(Duration::from_secs(10), || serving_pid(admin).is_some()));
    let clients: Vec<std::net::UdpSocket> = (0..12)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    // Which backend answers client `i`, and the source it saw the datagram from.
    let seen = |i: usize, tag: &str| -> (String, SocketAddr) {
        let msg = format!("{tag}{i:03}");
        let reply = udp_ask(&clients[i], listen, msg.as_bytes()).expect("no reply");
        let who = String::from_utf8_lossy(&reply)
            .split('|')
            .next()
            .unwrap()
            .to_string();
        let b = &backends[names.iter().position(|n| *n == who).unwrap()];
        let from = b
            .sources
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, d)| d == msg.as_bytes())
            .map(|(s, _)| *s);
        (who, from.expect("the backend saw no such datagram"))
    };
    let before: Vec<_> = (0..clients.len()).map(|i| seen(i, "pre")).collect();
    let spread: std::collections::HashSet<&String> = before.iter().map(|(w, _)| w).collect();
    assert!(spread.len() > 1, "all flows on one backend: {before:?}");
    let old = u64::from(rw.pid() as u32);
    // Every client sends all along the upgrade.
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<std::net::UdpSocket> =
        clients.iter().map(|c| c.try_clone().unwrap()).collect();
    let stream = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                for (i, c) in senders.iter().enumerate() {
                    let _ = c.send_to(format!("mid{i:03}").as_bytes(), listen);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    upgrade(admin, &rw);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    stream.join().unwrap();
    assert!(
        eventually(Duration::from_secs(3), || gone(old)),
        "old process still runs"
    );
    // The replies to the stream are not wanted.
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 256];
        while c.recv_from(&mut buf).is_ok() {}
    }
    for (i, (_, src)) in before.iter().enumerate() {
        let msg = format!("mid{i:03}");
        let froms: std::collections::HashSet<SocketAddr> = backends
            .iter()
            .flat_map(|b| {
                b.sources
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, d)| d == msg.as_bytes())
                    .map(|(s, _)| *s)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            froms,
            [*src].into_iter().collect(),
            "client {i}: datagrams sent during the upgrade came from another source"
        );
    }
    let after: Vec<_> = (0..clients.len()).map(|i| seen(i, "post")).collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(
            b, a,
            "client {i}: backend or upstream source changed across the upgrade"
        );
    }
}

/// Plays an old process of hand-off `version` that offers the UDP listener socket
/// `sock` (listener "u" on `listen`) and then sends nothing more, keeping its end
/// open: the new ringway started on `toml`, and the channel.
fn take_over_from(
    version: u32,
    toml: &str,
    listen: SocketAddr,
    sock: &std::net::UdpSocket,
) -> (Ringway, std::os::fd::OwnedFd) {
    use ringway::sys::fdpass;
    use std::os::fd::{AsFd, AsRawFd};
    let (ours, theirs) = fdpass::pair().unwrap();
    fdpass::inheritable(theirs.as_fd()).unwrap();
    let fd = theirs.as_raw_fd().to_string();
    let rw = Ringway::spawn_env(toml, &[("RINGWAY_UPGRADE_FD", fd.as_str())]);
    drop(theirs);
    // As an older binary writes it: the fields of its version only.
    let offer = format!(
        r#"{{"version":{version},"pid":1,"sockets":[{{"kind":"udp","name":"u","addr":"{listen}","count":1}}]}}"#
    );
    fdpass::send(ours.as_fd(), offer.as_bytes(), &[]).unwrap();
    fdpass::send(ours.as_fd(), b"fds", &[sock.as_fd()]).unwrap();
    socket2::SockRef::from(&ours)
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = fdpass::recv(ours.as_fd(), &mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        answer.starts_with(r#"{"ready""#),
        "answer {answer:?}; log:\n{}",
        rw.log()
    );
    (rw, ours)
}

/// A new binary takes over from an older one as that one speaks: a version-1 process
/// (listening sockets only, no state, no flows) and a version-2 one that sends no
/// flows (it hangs, say). The UDP listener it handed over answers at once in the
/// first case, and within about a second in the second (the new process waits that
/// long at most for flows before it reads datagrams itself).
#[test]
fn a_new_binary_takes_over_from_an_older_hand_off_and_udp_never_waits_long() {
    let backend = UdpBackend::spawn("127.0.0.1:0", "a");
    for version in [1, 2] {
        let listen = free_udp_addr();
        // As ringway binds it: the new process binds its second worker's beside it.
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        sock.set_reuse_port(true).unwrap();
        sock.bind(&listen.into()).unwrap();
        let sock: std::net::UdpSocket = sock.into();
        let toml = udp_config(
            listen,
            &[(backend.addr, "a")],
            "health = { check = \"none\" }",
        );
        let (rw, _channel) = take_over_from(version, &toml, listen, &sock);
        drop(sock);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let reply = udp_ask(&client, listen, b"hi");
        assert_eq!(
            reply.as_deref(),
            Some(&b"a|hi"[..]),
            "version {version}: the handed-over UDP listener does not answer; log:\n{}",
            rw.log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "version {version}: UDP waited {:?}",
            started.elapsed()
        );
    }
}
