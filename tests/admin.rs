//! The admin API and `ringway ctl`: every call, the bad ones too, and what drain,
//! disable and enable do to real connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::util::*;

const TOKEN: &str = "s3cret-token";

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn backend<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["listeners"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap()
}

#[test]
fn every_admin_call_and_every_bad_one() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let toml = with_tables(
        &config(listen, &[(a.addr, "a"), (b.addr, "b")], ""),
        &ops_tables(metrics, admin, Some(TOKEN)),
    );
    let _rw = Ringway::start(&toml, &[listen, admin]);
    let t = Some(TOKEN);

    // Without the token, or with a wrong one: 401, whatever the path.
    for (path, token) in [
        ("/status", None),
        ("/status", Some("wrong")),
        ("/nope", None),
    ] {
        let r = http("GET", admin, path, token);
        assert_eq!(r.status, 401, "{path} {token:?}: {}", r.body);
        assert!(json(&r.body)["error"].is_string());
    }
    assert_eq!(
        http("POST", admin, "/listeners/t/backends/a/drain", None).status,
        401
    );

    // Status: listeners, backends with every documented field, process info. The
    // readiness probe's connection closes asynchronously: wait until it is counted
    // out.
    assert!(
        eventually(std::time::Duration::from_secs(5), || {
            let s = json(&http("GET", admin, "/status", t).body);
            backend(&s, "a")["active_connections"] == 0
                && backend(&s, "b")["active_connections"] == 0
        }),
        "the readiness probe's connection is still counted"
    );
    let r = http("GET", admin, "/status", t);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.content_type.starts_with("application/json"));
    let s = json(&r.body);
    assert_eq!(s["listeners"][0]["name"], "t");
    let ba = backend(&s, "a");
    assert_eq!(ba["address"], a.addr.to_string());
    assert_eq!(ba["resolved"], a.addr.to_string());
    assert_eq!(ba["weight"], 1);
    assert_eq!(ba["state"], "up");
    assert_eq!(ba["active_connections"], 0);
    assert!(ba["ring_share"].as_f64().unwrap() > 0.2);
    assert_eq!(s["process"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["process"]["pid"].as_u64().unwrap() > 0);

    // Each action answers with the backend's new state.
    for (action, state) in [("drain", "draining"), ("disable", "down"), ("enable", "up")] {
        let r = http(
            "POST",
            admin,
            &format!("/listeners/t/backends/a/{action}"),
            t,
        );
        assert_eq!(r.status, 200, "{action}: {}", r.body);
        assert_eq!(json(&r.body)["state"], state, "{action}");
    }

    // Unknown names: 404 with a JSON error naming what was not found.
    for (path, needle) in [
        ("/listeners/nope/backends/a/drain", "nope"),
        ("/listeners/t/backends/zz/drain", "zz"),
        ("/listeners/t/backends/a/explode", "explode"),
        ("/no/such/path", "not found"),
    ] {
        let r = http("POST", admin, path, t);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert!(
            json(&r.body)["error"].as_str().unwrap().contains(needle),
            "{path}: {}",
            r.body
        );
    }
    // Wrong methods: 405 with Allow.
    assert_eq!(
        http("GET", admin, "/listeners/t/backends/a/drain", t).status,
        405
    );
    assert_eq!(http("DELETE", admin, "/status", t).status, 405);
    // Malformed: a path that does not decode, an empty segment.
    let r = http("POST", admin, "/listeners/t/backends/%FF/drain", t);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        http("POST", admin, "/listeners//backends/a/drain", t).status,
        400
    );
    // Not HTTP at all: 400 from the HTTP layer, and the server lives on.
    let mut raw = TcpStream::connect(admin).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"\x16\x03\x01 this is not http\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(http("GET", admin, "/status", t).status, 200);

    // ringway ctl: the same calls without curl; errors exit non-zero with the message.
    let out = ctl(admin, t, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("listener t tcp") && text.contains(&a.addr.to_string()),
        "{text}"
    );
    let out = ctl(admin, t, &["status", "--json"]);
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["listeners"][0]["name"],
        "t"
    );
    // A change answers in one line for people, the API's JSON with --json.
    let out = ctl(admin, t, &["drain", "t", "b"]);
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("drained backend b on listener t: now draining")
            && line.trim_end().ends_with(" 0 open")
            && line.lines().count() == 1,
        "{line}"
    );
    let out = ctl(admin, t, &["enable", "t", "b", "--json"]);
    assert_eq!(json(&String::from_utf8_lossy(&out.stdout))["state"], "up");
    // The table says why a backend is not up.
    let out = ctl(admin, t, &["disable", "t", "b"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&ctl(admin, t, &["status"]).stdout).into_owned();
    let st: serde_json::Value = json(&String::from_utf8_lossy(
        &ctl(admin, t, &["status", "--json"]).stdout,
    ));
    let reason = st["listeners"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "b")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("b "))
        .unwrap_or("");
    assert!(
        table.contains(" WHY") && !reason.is_empty() && row.trim_end().ends_with(&reason),
        "{table}"
    );
    let out = ctl(admin, t, &["enable", "t", "b"]);
    assert!(out.status.success());
    let out = ctl(admin, t, &["disable", "t", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.contains("nope"), "{err}");
    let out = ctl(admin, Some("wrong"), &["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // The admin address and token can come from the config file.
    let out = std::process::Command::new(bin())
        .args(["ctl", "--config"])
        .arg(&_rw.config)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn drain_keeps_open_connections_and_sends_no_new_ones_there() {
    let (_backends, list) = named_backends(&["a", "b", "c"]);
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let toml = with_tables(
        &config(listen, &list, ""),
        &ops_tables(metrics, admin, None),
    );
    let rw = Ringway::start(&toml, &[listen, admin]);
    let names = names(&list);

    // Hold 60 connections; some are on b.
    let mut held: Vec<(TcpStream, String)> = (0..60).map(|_| connect_named(listen)).collect();
    let on_b = held.iter().filter(|(_, n)| n == "b").count();
    assert!(on_b > 0, "no held connection on b");
    let out = ctl(admin, None, &["drain", "t", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // New connections: none to b, each where `route --down b` says.
    let fresh = connect_many(listen, 300);
    assert!(
        fresh.iter().all(|(_, n)| n != "b"),
        "a drained backend got a new connection"
    );
    assert_routed(&rw, "t", &["b"], &fresh, &names);
    // Held ones, b's included, still work both ways.
    for (s, name) in held.iter_mut() {
        s.write_all(name.as_bytes()).unwrap();
        let mut back = vec![0u8; name.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, name.as_bytes());
    }
    let s = status(admin);
    assert_eq!(backend(&s, "b")["state"], "draining");
    assert_eq!(backend(&s, "b")["ring_share"], 0.0);
    assert_eq!(backend(&s, "b")["active_connections"], on_b as u64);
    let m = scrape(metrics);
    let per = |n: &str| sample(&m, n, &[("listener", "t"), ("pool", "t"), ("backend", "b")]);
    assert_eq!(
        per("ringway_backend_up"),
        Some(1.0),
        "draining is up, with no share"
    );
    assert_eq!(per("ringway_backend_ring_share"), Some(0.0));
    assert_eq!(per("ringway_backend_active_connections"), Some(on_b as f64));

    // Enable: b takes its own keys back, exactly as the full ring says.
    assert!(ctl(admin, None, &["enable", "t", "b"]).status.success());
    let back = connect_many(listen, 300);
    assert!(back.iter().any(|(_, n)| n == "b"));
    assert_routed(&rw, "t", &[], &back, &names);

    // Disable: marked down by hand, shown as down.
    assert!(ctl(admin, None, &["disable", "t", "b"]).status.success());
    let off = connect_many(listen, 200);
    assert!(off.iter().all(|(_, n)| n != "b"));
    assert_routed(&rw, "t", &["b"], &off, &names);
    let m = scrape(metrics);
    assert_eq!(
        sample(
            &m,
            "ringway_backend_up",
            &[("listener", "t"), ("pool", "t"), ("backend", "b")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            "ringway_backend_transitions_total",
            &[
                ("listener", "t"),
                ("pool", "t"),
                ("backend", "b"),
                ("to", "down")
            ]
        ),
        Some(1.0)
    );
    drop(held);
}

#[test]
fn a_drained_udp_backend_keeps_its_flows_and_gets_no_new_ones() {
    let x = UdpBackend::spawn("127.0.0.1:0", "x");
    let y = UdpBackend::spawn("127.0.0.1:0", "y");
    let (listen, admin) = (free_udp_addr(), free_addr());
    let toml = with_tables(
        &udp_config(
            listen,
            &[(x.addr, "x"), (y.addr, "y")],
            "udp_idle_timeout = \"60s\"",
        ),
        &format!("[admin]\nlisten = \"{admin}\"\n"),
    );
    let rw = start_udp(&toml, listen);
    let who = |s: &std::net::UdpSocket| udp_who(s, listen);
    let flows: Vec<(std::net::UdpSocket, String)> = (0..40)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let n = who(&s);
            (s, n)
        })
        .collect();
    assert!(flows.iter().any(|(_, n)| n == "y"));
    assert!(ctl(admin, None, &["drain", "u", "y"]).status.success());
    for (s, before) in &flows {
        assert_eq!(&who(s), before, "a flow left its drained backend");
    }
    let fresh: Vec<(SocketAddr, String)> = (0..60)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let n = who(&s);
            (s.local_addr().unwrap(), n)
        })
        .collect();
    assert!(
        fresh.iter().all(|(_, n)| n == "x"),
        "a new flow went to the drained backend"
    );
    assert_routed(
        &rw,
        "u",
        &["y"],
        &fresh,
        &names(&[(x.addr, "x"), (y.addr, "y")]),
    );
}
