//! The access log, read from its file as an operator (or a log shipper) would: one
//! record per TCP connection and UDP flow, every `end` value produced by a real event,
//! through PROXY headers, reloads, drains, SIGUSR1 and logrotate's rename.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ringway::sys::signal::Signal;
use serde_json::Value;

use crate::util::*;

/// The records in `path` (JSON lines).
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits (bounded) until `path` holds a record matching `pred`; returns it.
fn wait_record(rw: &Ringway, path: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    eventually(Duration::from_secs(10), || {
        found = records(path).into_iter().find(&pred);
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no {what} record in {}:\n{}\nlog:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default(),
            rw.log()
        )
    })
}

/// `[access_log]` writing JSON to `path`, plus `extra` lines.
fn log_table(path: &Path, extra: &str) -> String {
    format!("[access_log]\npath = \"{}\"\n{extra}\n", path.display())
}

fn log_path(rw_dir: &tempfile::TempDir) -> PathBuf {
    rw_dir.path().join("access.log")
}

/// A listener block (name, address, extra lines, backends as (address, id)).
fn listener(
    name: &str,
    listen: SocketAddr,
    extra: &str,
    backends: &[(SocketAddr, &str)],
) -> String {
    let mut s = format!("\n[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\n{extra}\n");
    for (addr, id) in backends {
        s.push_str(&format!(
            "[[listener.backend]]\naddress = \"{addr}\"\nid = \"{id}\"\n"
        ));
    }
    s
}

fn client_of(v: &Value) -> String {
    v["client"].as_str().unwrap_or("").to_string()
}

/// Every key of the contract is there, with the right types.
fn assert_keys(v: &Value) {
    for key in [
        "time",
        "listener",
        "protocol",
        "client",
        "backend",
        "backend_address",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "connect_ms",
        "retries",
        "end",
    ] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    let time = v["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[19..20] == ".",
        "RFC 3339 UTC with milliseconds: {time}"
    );
    assert!(v["bytes_in"].is_u64() && v["bytes_out"].is_u64() && v["duration_ms"].is_u64());
}

/// TCP: orderly closes by either side, resets by either side, an idle timeout; every
/// key; the record is on disk within a second or so of the connection's end.
#[test]
fn tcp_connections_end_as_the_log_says() {
    let echo = Backend::named_echo("127.0.0.1:0", "a");
    // Says "bye" and closes its side first.
    let closer = Backend::spawn("127.0.0.1:0", |mut s| {
        let _ = s.write_all(b"bye\n");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    // Resets as soon as it has the client's first bytes.
    let resetter = Backend::spawn("127.0.0.1:0", |mut s| {
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let (l1, l2, l3) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let toml = format!(
        "workers = 2\n{}{}{}{}",
        log_table(&path, ""),
        listener("echo", l1, "idle_timeout = \"1s\"", &[(echo.addr, "a")]),
        listener("closer", l2, "", &[(closer.addr, "c")]),
        listener("resetter", l3, "", &[(resetter.addr, "r")]),
    );
    let rw = Ringway::start(&toml, &[l1, l2, l3]);

    // client_closed: the client's EOF first.
    let (mut s, _) = connect_named(l1);
    s.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_peer(&s));
    let me = s.local_addr().unwrap().to_string();
    let v = wait_record(&rw, &path, "client_closed", |v| client_of(v) == me);
    assert_keys(&v);
    assert_eq!(v["end"], "client_closed");
    assert_eq!(v["listener"], "echo");
    assert_eq!(v["protocol"], "tcp");
    assert_eq!(v["backend"], "a");
    assert_eq!(v["backend_address"], echo.addr.to_string());
    assert_eq!(
        (v["bytes_in"].as_u64(), v["bytes_out"].as_u64()),
        (Some(5), Some(7))
    );
    assert!(v["connect_ms"].is_u64() && v["retries"] == 0);

    // backend_closed.
    let s = TcpStream::connect(l2).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_line(&s), "bye");
    // The backend's EOF reached the client (so ringway saw it) before the client closes:
    // otherwise, on a busy machine, the client's EOF can come first.
    assert!(closed_by_peer(&s));
    let me = s.local_addr().unwrap().to_string();
    drop(s);
    let v = wait_record(&rw, &path, "backend_closed", |v| client_of(v) == me);
    assert_eq!(v["end"], "backend_closed");

    // backend_reset.
    let mut s = TcpStream::connect(l3).unwrap();
    s.write_all(b"x").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = s.local_addr().unwrap().to_string();
    assert!(closed_by_peer(&s));
    let v = wait_record(&rw, &path, "backend_reset", |v| client_of(v) == me);
    assert_eq!(v["end"], "backend_reset");

    // client_reset.
    let (s, _) = connect_named(l1);
    let me = s.local_addr().unwrap().to_string();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    let v = wait_record(&rw, &path, "client_reset", |v| client_of(v) == me);
    assert_eq!(v["end"], "client_reset");

    // idle_timeout.
    let (s, _) = connect_named(l1);
    let me = s.local_addr().unwrap().to_string();
    let v = wait_record(&rw, &path, "idle_timeout", |v| client_of(v) == me);
    assert_eq!(v["end"], "idle_timeout");
    assert!(v["duration_ms"].as_u64().unwrap() >= 1000, "{v}");
}

/// Failures at connect and at the door: every backend refusing (with retries), none
/// up, the listener full, no PROXY header; and the client a PROXY header names.
#[test]
fn refusals_and_failures_are_logged_with_the_real_client() {
    let dead1 = free_addr();
    let dead2 = free_addr();
    let good = Backend::named_echo("127.0.0.1:0", "g");
    let (l1, l2, l3, l4) = (free_addr(), free_addr(), free_addr(), free_addr());
    let admin = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let quiet = "health = { check = \"none\", passive = false }";
    let toml = format!(
        "workers = 2\n{}[admin]\nlisten = \"{admin}\"\n{}{}{}{}",
        log_table(&path, ""),
        listener(
            "dead",
            l1,
            &format!("retries = 1\n{quiet}"),
            &[(dead1, "d1"), (dead2, "d2")]
        ),
        listener("off", l2, quiet, &[(good.addr, "g")]),
        listener(
            "full",
            l3,
            &format!("max_connections = 1\n{quiet}"),
            &[(good.addr, "g")]
        ),
        listener(
            "proxied",
            l4,
            &format!("accept_proxy = true\n{quiet}"),
            &[(good.addr, "g")]
        ),
    );
    let rw = Ringway::start(&toml, &[l1, l2, l3, l4, admin]);

    // connect_failed, after one retry.
    let s = TcpStream::connect(l1).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = s.local_addr().unwrap().to_string();
    assert!(closed_by_peer(&s));
    let v = wait_record(&rw, &path, "connect_failed", |v| client_of(v) == me);
    assert_eq!(v["end"], "connect_failed");
    assert_eq!(v["retries"], 1);
    // Both failed backends are named, in the order they were tried.
    let failed = v["failed_backends"].as_array().expect("failed_backends");
    let mut ids: Vec<&str> = failed.iter().filter_map(|f| f.as_str()).collect();
    assert_eq!(ids.len(), 2, "{v}");
    ids.sort_unstable();
    assert_eq!(ids, ["d1", "d2"]);
    assert!(v["backend"].is_null() && v["connect_ms"].is_null());

    // no_backend: the only one disabled by hand.
    assert_eq!(
        http("POST", admin, "/listeners/off/backends/g/disable", None).status,
        200
    );
    let s = TcpStream::connect(l2).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = s.local_addr().unwrap().to_string();
    assert!(closed_by_peer(&s));
    let v = wait_record(&rw, &path, "no_backend", |v| client_of(v) == me);
    assert_eq!(v["end"], "no_backend");

    // rejected: max_connections.
    let (held, _) = connect_named(l3);
    let s = TcpStream::connect(l3).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = s.local_addr().unwrap().to_string();
    assert!(closed_by_peer(&s));
    let v = wait_record(&rw, &path, "rejected", |v| client_of(v) == me);
    assert_eq!(v["end"], "rejected");
    assert_eq!(v["detail"], "max_connections");
    drop(held);

    // proxy_header: something else first.
    let mut s = TcpStream::connect(l4).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = s.local_addr().unwrap().to_string();
    assert!(closed_by_peer(&s));
    let v = wait_record(&rw, &path, "proxy_header", |v| client_of(v) == me);
    assert_eq!(v["end"], "proxy_header");

    // With a header: the client it names is the one logged.
    let named: SocketAddr = "192.0.2.77:41000".parse().unwrap();
    let mut s = TcpStream::connect(l4).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let header = ringway::proxy_protocol::relayed(ringway::proxy_protocol::Version::V2, named, l4);
    s.write_all(&header).unwrap();
    assert_eq!(read_line(&s), "g");
    drop(s);
    let v = wait_record(&rw, &path, "proxied", |v| client_of(v) == named.to_string());
    assert_eq!(v["listener"], "proxied");
    assert_eq!(v["backend"], "g");
}

/// `on_down = "close"` resets (backend_down); a drain that outlasts `shutdown_timeout`
/// cuts (shutdown), and the writer has flushed it all when the process exits.
#[test]
fn backend_down_and_shutdown_are_logged_before_exit() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let (l1, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let toml = format!(
        "workers = 2\nshutdown_timeout = \"1s\"\n{}[admin]\nlisten = \"{admin}\"\n{}",
        log_table(&path, ""),
        listener(
            "t",
            l1,
            "health = { check = \"none\", on_down = \"close\" }",
            &[(a.addr, "a")]
        ),
    );
    let mut rw = Ringway::start(&toml, &[l1, admin]);
    let (down, _) = connect_named(l1);
    let me = down.local_addr().unwrap().to_string();
    assert_eq!(
        http("POST", admin, "/listeners/t/backends/a/disable", None).status,
        200
    );
    let v = wait_record(&rw, &path, "backend_down", |v| client_of(v) == me);
    assert_eq!(v["end"], "backend_down");
    assert_eq!(
        http("POST", admin, "/listeners/t/backends/a/enable", None).status,
        200
    );
    let (held, _) = connect_named(l1);
    let me = held.local_addr().unwrap().to_string();
    rw.signal(Signal::Term);
    let st = rw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert!(st.success());
    let v = records(&path)
        .into_iter()
        .find(|v| client_of(v) == me)
        .unwrap_or_else(|| {
            panic!(
                "the cut connection was not logged before exit:\n{}",
                rw.log()
            )
        });
    assert_eq!(v["end"], "shutdown");
}

/// UDP: a flow answered (udp_responses), one idle, one refused (udp_max_flows), one
/// with no backend, the ones a drain closes, and datagrams counted both ways.
#[test]
fn udp_flows_end_as_the_log_says() {
    let b = UdpBackend::spawn("127.0.0.1:0", "u");
    let (answered, idle, full) = (free_udp_addr(), free_udp_addr(), free_udp_addr());
    let (off, admin) = (free_udp_addr(), free_addr());
    // Nothing listens at this port: the kernel answers ICMP port unreachable.
    let (refusing, closed) = (free_udp_addr(), free_udp_addr());
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let udp_to = |name: &str, listen: SocketAddr, extra: &str, to: SocketAddr| {
        format!(
            "\n[[listener]]\nname = \"{name}\"\nprotocol = \"udp\"\nlisten = \"{listen}\"\n{extra}\n[[listener.backend]]\naddress = \"{to}\"\nid = \"u\"\n"
        )
    };
    let udp = |name: &str, listen: SocketAddr, extra: &str| udp_to(name, listen, extra, b.addr);
    let toml = format!(
        "workers = 2\nshutdown_timeout = \"2s\"\n{}[admin]\nlisten = \"{admin}\"\n{}{}{}{}{}",
        log_table(&path, ""),
        udp("answered", answered, "udp_responses = 1"),
        udp("idle", idle, "udp_idle_timeout = \"1s\""),
        udp("full", full, "udp_max_flows = 1"),
        udp("off", off, ""),
        udp_to(
            "refusing",
            refusing,
            "udp_idle_timeout = \"1s\"\nhealth = { check = \"none\", passive = false }",
            closed
        ),
    );
    let mut rw = start_udp(&toml, answered);
    let sock = |_: ()| UdpSocket::bind("127.0.0.1:0").unwrap();

    let s = sock(());
    udp_ask(&s, answered, b"q").unwrap();
    let me = s.local_addr().unwrap().to_string();
    let v = wait_record(&rw, &path, "udp_answered", |v| client_of(v) == me);
    assert_keys(&v);
    assert_eq!(v["end"], "udp_answered");
    assert_eq!(v["protocol"], "udp");
    assert_eq!(
        (v["datagrams_in"].as_u64(), v["datagrams_out"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (v["bytes_in"].as_u64(), v["bytes_out"].as_u64()),
        (Some(1), Some(3))
    );

    let s = sock(());
    udp_ask(&s, idle, b"q").unwrap();
    udp_ask(&s, idle, b"q2").unwrap();
    let me = s.local_addr().unwrap().to_string();
    let v = wait_record(&rw, &path, "udp_idle", |v| client_of(v) == me);
    assert_eq!(v["end"], "udp_idle");
    assert_eq!(v["datagrams_in"], 2);

    let first = sock(());
    udp_ask(&first, full, b"q").unwrap();
    let second = sock(());
    second.send_to(b"q", full).unwrap();
    let me = second.local_addr().unwrap().to_string();
    let v = wait_record(&rw, &path, "rejected udp", |v| client_of(v) == me);
    assert_eq!(v["end"], "rejected");
    assert_eq!(v["detail"], "max_flows");

    assert_eq!(
        http("POST", admin, "/listeners/off/backends/u/disable", None).status,
        200
    );
    let s = sock(());
    s.send_to(b"q", off).unwrap();
    let me = s.local_addr().unwrap().to_string();
    let v = wait_record(&rw, &path, "udp no_backend", |v| client_of(v) == me);
    assert_eq!(v["end"], "no_backend");

    // A backend that refuses (ICMP port unreachable) is named as the end.
    let s = sock(());
    s.send_to(b"q", refusing).unwrap();
    let me = s.local_addr().unwrap().to_string();
    let v = wait_record(&rw, &path, "udp_refused", |v| client_of(v) == me);
    assert_eq!(v["end"], "udp_refused", "{v}");

    // A drain closes the open flows (the "full" listener's first one is still open).
    let me = first.local_addr().unwrap().to_string();
    rw.signal(Signal::Term);
    rw.wait_exit(Duration::from_secs(10)).expect("exits");
    let v = records(&path)
        .into_iter()
        .find(|v| client_of(v) == me)
        .expect("the drained flow was logged before exit");
    assert_eq!(v["end"], "drained");
}

/// A UDP listener removed by a reload keeps its sockets for its live flows; a new
/// client reaching one of them is refused and logged as `listener_removed`.
#[test]
fn a_new_udp_client_of_a_removed_listener_is_logged() {
    let b = UdpBackend::spawn("127.0.0.1:0", "u");
    let (gone, keep) = (free_udp_addr(), free_udp_addr());
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let udp = |name: &str, listen: SocketAddr| {
        format!(
            "\n[[listener]]\nname = \"{name}\"\nprotocol = \"udp\"\nlisten = \"{listen}\"\nudp_idle_timeout = \"1m\"\n[[listener.backend]]\naddress = \"{}\"\nid = \"u\"\n",
            b.addr
        )
    };
    let head = format!("workers = 2\n{}", log_table(&path, ""));
    let rw = start_udp(
        &format!("{head}{}{}", udp("gone", gone), udp("keep", keep)),
        gone,
    );
    // Live flows keep the removed listener's sockets (one per worker, most likely).
    let live: Vec<UdpSocket> = (0..8)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            udp_ask(&s, gone, b"live").unwrap();
            s
        })
        .collect();
    std::fs::write(&rw.config, format!("{head}{}", udp("keep", keep))).unwrap();
    rw.signal(Signal::Hup);
    assert!(eventually(Duration::from_secs(10), || rw
        .log()
        .contains("reloaded")));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"new", gone).unwrap();
    let me = s.local_addr().unwrap().to_string();
    let v = wait_record(&rw, &path, "listener_removed", |v| client_of(v) == me);
    assert_eq!(v["end"], "listener_removed");
    assert_eq!(v["listener"], "gone");
    drop(live);
}

/// `text` lines, `sample = 0` (no successes, every failure), a reload that moves the
/// log, and logrotate's rename + SIGUSR1 losing no record.
#[test]
fn text_sampling_reload_and_reopen() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let dead = free_addr();
    let (l1, l2) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let listeners = format!(
        "{}{}",
        listener("ok", l1, "", &[(a.addr, "a")]),
        listener(
            "bad",
            l2,
            "health = { check = \"none\", passive = false }",
            &[(dead, "d")]
        ),
    );
    let toml = |log: &str| format!("workers = 2\n{log}{listeners}");
    let rw = Ringway::start(
        &toml(&log_table(&path, "format = \"text\"\nsample = 0.0")),
        &[l1, l2],
    );
    let fail = |n: usize| {
        let mut mine = Vec::new();
        for _ in 0..n {
            let s = TcpStream::connect(l2).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            mine.push(s.local_addr().unwrap().to_string());
            assert!(closed_by_peer(&s));
        }
        mine
    };
    let succeed = |n: usize| {
        let mut mine = Vec::new();
        for _ in 0..n {
            let (s, _) = connect_named(l1);
            mine.push(s.local_addr().unwrap().to_string());
        }
        mine
    };
    succeed(20);
    let failed = fail(3);
    let text = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || failed
            .iter()
            .all(|c| text().contains(c.as_str()))),
        "failures are always logged:\n{}",
        text()
    );
    // No line has a successful end. (Not "no line names a successful client":
    // connect(2) gives the same local port to connections to different addresses, so
    // a success on `ok` can share its client address with the start probe's failure
    // on `bad`, as CI once saw.)
    let successes = ["client_closed", "backend_closed", "idle_timeout"];
    assert!(
        text()
            .lines()
            .all(|l| !successes.iter().any(|e| l.contains(&format!("end={e}")))),
        "sample = 0 logged a success:\n{}",
        text()
    );
    let line = text().lines().next().unwrap().to_string();
    assert!(
        line.contains(" bad tcp ")
            && line.contains(" -> - ")
            && line.ends_with("end=connect_failed failed=d"),
        "{line}"
    );

    // A reload moves the log and logs everything (sample back to 1, JSON).
    let moved = dir.path().join("moved.log");
    std::fs::write(&rw.config, toml(&log_table(&moved, ""))).unwrap();
    rw.signal(Signal::Hup);
    assert!(eventually(Duration::from_secs(10), || rw
        .log()
        .contains("reloaded")));
    let ok = succeed(5);
    assert!(eventually(Duration::from_secs(5), || {
        let got: Vec<String> = records(&moved).iter().map(client_of).collect();
        ok.iter().all(|c| got.contains(c))
    }));

    // logrotate: rename, then SIGUSR1; records on both sides of it, none lost.
    let rotated = dir.path().join("moved.log.1");
    let before = succeed(10);
    std::fs::rename(&moved, &rotated).unwrap();
    rw.signal(Signal::Usr1);
    assert!(
        eventually(Duration::from_secs(5), || moved.exists()),
        "not reopened"
    );
    let after = succeed(10);
    assert!(
        eventually(Duration::from_secs(5), || {
            let got: Vec<String> = records(&rotated)
                .iter()
                .chain(records(&moved).iter())
                .map(client_of)
                .collect();
            before.iter().chain(&after).all(|c| got.contains(c))
        }),
        "records were lost across the rotation"
    );
    let in_new: Vec<String> = records(&moved).iter().map(client_of).collect();
    assert!(
        after.iter().all(|c| in_new.contains(c)),
        "after the signal, records go to the new file"
    );
}

/// `local_error`: the machine has no local port for the backend connection (a
/// namespace whose whole ephemeral range is one port, already in use).
#[test]
#[ignore = "needs root"]
fn no_local_port_is_a_local_error_not_the_backend_s() {
    in_named_netns("noport", |ns| {
        let set = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_local_port_range=40000 40000",
            ])
            .status()
            .unwrap();
        assert!(set.success());
        // Fixed ports: in this namespace port 0 means the one ephemeral port.
        let a = Backend::named_echo("127.0.0.1:50010", "a");
        let listen: SocketAddr = "127.0.0.1:50011".parse().unwrap();
        let metrics: SocketAddr = "127.0.0.1:50012".parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let toml = format!(
            "workers = 1\n{}[metrics]\nlisten = \"{metrics}\"\n{}",
            log_table(&path, ""),
            listener(
                "t",
                listen,
                "health = { check = \"none\" }",
                &[(a.addr, "a")]
            ),
        );
        // No readiness probe through the listener: it would leave the one port in
        // TIME_WAIT towards the backend.
        let rw = Ringway::spawn(&toml);
        assert!(
            eventually(Duration::from_secs(10), || rw
                .log()
                .contains("metrics: GET")),
            "{}",
            rw.log()
        );
        // Clients from fixed ports (the ephemeral range is ringway's one port).
        let client_to = |to: SocketAddr, port: u16| {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
                .unwrap();
            sock.connect(&to.into()).unwrap();
            let s: TcpStream = sock.into();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        };
        let client = |port: u16| client_to(listen, port);
        // The first connection takes the only port towards the backend...
        let held = client(50001);
        assert_eq!(read_line(&held), "a");
        // ... so the second cannot get one.
        let s = client(50002);
        let me = s.local_addr().unwrap().to_string();
        assert!(closed_by_peer(&s));
        let v = wait_record(&rw, &path, "local_error", |v| client_of(v) == me);
        assert_eq!(v["end"], "local_error");
        let mut m = client_to(metrics, 50003);
        m.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut m_text = String::new();
        m.read_to_string(&mut m_text).unwrap();
        let m = m_text;
        assert_eq!(
            sample(
                &m,
                "ringway_backend_up",
                &[("listener", "t"), ("pool", "t"), ("backend", "a")]
            ),
            Some(1.0),
            "a local error took the backend down"
        );
        assert_eq!(
            sample(
                &m,
                "ringway_listener_rejected_connections_total",
                &[("listener", "t"), ("reason", "local_error")]
            ),
            Some(1.0),
            "{m}"
        );
        drop(held);
    });
}

/// Every `end` value the code can write is documented, once, in docs/ACCESS_LOG.md.
#[test]
fn every_end_value_is_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ACCESS_LOG.md"))
        .unwrap();
    for end in ringway::accesslog::End::ALL {
        let row = format!("| `{}` |", end.as_str());
        assert_eq!(doc.matches(&row).count(), 1, "docs/ACCESS_LOG.md: {row}");
    }
}

/// `[metrics]`, and `[access_log]` to `log`.
fn metered(metrics: SocketAddr, log: &Path) -> String {
    format!("[metrics]\nlisten = \"{metrics}\"\n{}", log_table(log, ""))
}

fn lost(metrics: SocketAddr, why: &str) -> f64 {
    sample(
        &scrape(metrics),
        "ringway_access_log_dropped_total",
        &[("reason", why)],
    )
    .unwrap_or(0.0)
}

/// Issue 18, defect 7: under `LimitFSIZE` (here `prlimit --fsize`) a growing access log
/// used to kill the whole proxy with SIGXFSZ (exit 153). Now the write fails with
/// EFBIG, the lost records are counted, and ringway keeps serving.
#[test]
fn a_file_size_limit_costs_records_not_the_proxy() {
    let b = Backend::echo("127.0.0.1:0");
    let (listen, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = with_tables(
        &config(listen, &[(b.addr, "b")], ""),
        &metered(metrics, &log),
    );
    let mut rw = Ringway::spawn_via(&toml, &[], &["prlimit", "--fsize=8192", "--"]);
    assert!(
        eventually(Duration::from_secs(10), || TcpStream::connect(metrics)
            .is_ok()),
        "{}",
        rw.log()
    );
    // About 250 bytes a record: 200 connections are well past 8 KiB.
    for _ in 0..4 {
        connect_echo(listen, 50);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        eventually(Duration::from_secs(5), || lost(metrics, "write_failed")
            > 0.0),
        "{}",
        rw.log()
    );
    assert!(
        rw.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "ringway died: {}",
        rw.log()
    );
    connect_echo(listen, 1);
    assert!(std::fs::metadata(&log).unwrap().len() <= 8192);
    let said = rw.log();
    assert!(
        said.contains("writing the access log failed: File too large"),
        "{said}"
    );
    assert!(said.contains("writing resumes by itself"), "{said}");
}

/// Issue 18, defect 6: on a full disk (a 64 KiB tmpfs) every lost record is counted
/// (`reason="write_failed"`; it stayed 0), the log says writing resumes by itself
/// (it said a reload was needed), and it does once there is room again.
#[test]
#[ignore = "needs root"]
fn a_full_disk_loses_counted_records_and_writing_resumes_by_itself() {
    require_root();
    let b = Backend::echo("127.0.0.1:0");
    let (listen, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.path().to_path_buf());
    let log = dir.path().join("access.log");
    let toml = with_tables(
        &config(listen, &[(b.addr, "b")], ""),
        &metered(metrics, &log),
    );
    let rw = Ringway::start(&toml, &[listen, metrics]);
    let connect = |n: usize| connect_echo(listen, n);
    // 64 KiB at about 250 bytes a record.
    for _ in 0..8 {
        connect(60);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        eventually(Duration::from_secs(5), || lost(metrics, "write_failed")
            > 0.0),
        "{}",
        rw.log()
    );
    let said = rw.log();
    assert!(said.contains("No space left on device"), "{said}");
    assert!(said.contains("writing resumes by itself"), "{said}");
    assert!(!said.contains("until a reload or SIGUSR1"), "{said}");
    // Room again (the shipper took the file): new records are written, and the log
    // says how many were lost meanwhile.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    connect(5);
    assert!(
        eventually(Duration::from_secs(5), || records(&log).len() >= 5),
        "{}",
        rw.log()
    );
    assert!(
        eventually(Duration::from_secs(2), || rw
            .log()
            .contains("the access log is written again")),
        "{}",
        rw.log()
    );
}

/// Issue 18, defect 6: an access log the service user cannot write fails `check` and
/// the start, saying so (it used to be one ERROR line and no log).
#[test]
#[ignore = "needs root"]
fn an_access_log_the_user_cannot_write_fails_check_and_start() {
    require_root();
    let b = Backend::echo("127.0.0.1:0");
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    // Root's directory, mode 755: nobody cannot create a file in it.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let log = dir.path().join("access.log");
    let toml = format!(
        "user = \"nobody\"\n{}",
        with_tables(&config(listen, &[(b.addr, "b")], ""), &log_table(&log, ""))
    );
    let conf = dir.path().join("ringway.toml");
    std::fs::write(&conf, &toml).unwrap();
    let out = ringway(&["check", "-c", conf.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("user nobody cannot append to it") && err.contains("mode 755"),
        "{err}"
    );
    let mut rw = Ringway::spawn(&toml);
    let st = rw.wait_exit(Duration::from_secs(10)).expect("it started");
    assert_eq!(st.code(), Some(2), "{}", rw.log());
    assert!(
        rw.log()
            .contains("cannot open it for appending as user nobody: Permission denied"),
        "{}",
        rw.log()
    );
    // Writable by nobody: both pass.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = ringway(&["check", "-c", conf.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` connections through `listen`, each echoing one byte (each one is a record).
fn connect_echo(listen: SocketAddr, n: usize) {
    for _ in 0..n {
        let mut s = TcpStream::connect(listen).unwrap();
        s.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
    }
}
