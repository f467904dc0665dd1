//! Load-aware balancing (`balance`, `balance_factor`) from outside: real connections
//! held open on loopback, counted by the backends that greet them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::util::*;

/// Opens a connection from `ip` and reads which backend greeted it.
fn held_from(ip: Ipv4Addr, listen: SocketAddr) -> (TcpStream, String) {
    let s = connect_from(ip, listen);
    let name = read_line(&s);
    assert!(!name.is_empty(), "a client from {ip} got no greeting");
    (s, name)
}

fn per_backend<'a>(held: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
    let mut per = HashMap::new();
    for n in held {
        *per.entry(n.clone()).or_default() += 1;
    }
    per
}

/// The workload: a source-ip hashed listener with 3 backends and 300 open
/// connections, 180 of them from one busy source. The ring alone puts the busy
/// source's 180 (and more) on one backend; `balance_factor = 1.25` caps every backend
/// at ceil(1.25 x 300 / 3) = 125, every connection that lands away from `route`'s
/// answer is counted as overflowed, and none that `route` answers for moves.
#[test]
fn a_hot_source_stays_under_the_bound() {
    let (_backends, list) = named_backends(&["a", "b", "c"]);
    let (listen, admin) = (free_addr(), free_addr());
    let toml = with_tables(
        &config(
            listen,
            &list,
            "hash = \"source-ip\"\nbalance_factor = 1.25\nmax_connections = 1000\n",
        ),
        &ops_tables(free_addr(), admin, None),
    );
    let rw = Ringway::start(&toml, &[listen, admin]);
    let hot = Ipv4Addr::new(127, 0, 0, 2);
    let cold: Vec<Ipv4Addr> = (0..120).map(|i| Ipv4Addr::new(127, 0, 1, 1 + i)).collect();
    let sources: Vec<Ipv4Addr> = (0..300)
        .map(|i| match i % 5 {
            0..=2 => hot,
            _ => cold[i / 5 * 2 + i % 5 - 3],
        })
        .collect();
    // Where the ring sends each source (port 0: source-ip hashing ignores it).
    let clients: Vec<SocketAddr> = sources
        .iter()
        .map(|&ip| SocketAddr::new(ip.into(), 1))
        .collect();
    let ring: Vec<String> = rw
        .route("t", &[], &clients)
        .into_iter()
        .map(|r| r.1)
        .collect();
    let names = names(&list);
    let held: Vec<(TcpStream, String)> = sources.iter().map(|&ip| held_from(ip, listen)).collect();
    let per = per_backend(held.iter().map(|h| &h.1));
    let max = per.values().copied().max().unwrap();
    assert!(
        max <= 125,
        "a backend holds {max} of 300, over the bound: {per:?}"
    );
    let away = held
        .iter()
        .zip(&ring)
        .filter(|((_, got), want)| names[want.as_str()] != *got)
        .count();
    assert!(
        away > 0,
        "nothing overflowed: the busy source fit on one backend?"
    );
    let all_open = eventually(Duration::from_secs(5), || {
        status(admin)["listeners"][0]["open"] == 300
    });
    let s = status(admin);
    let l = &s["listeners"][0];
    assert!(all_open, "/status does not count the 300 open: {l}");
    assert_eq!(l["balance"], "ring");
    assert_eq!(l["balance_factor"], 1.25);
    assert_eq!(
        l["overflowed_total"], away as u64,
        "/status counts {} overflowed, {away} landed away from route's answer",
        l["overflowed_total"]
    );
    let out = ctl(admin, None, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "balance: ring, bounded at 1.25 x the average ({away} overflowed)"
        )),
        "{text}"
    );
    drop(held);
}

/// least-connections: 30 held connections even out at 10 a backend (the ring alone
/// does not); once one backend's clients all leave, the next 10 new connections all go
/// to it.
#[test]
fn least_connections_evens_out_and_fills_an_emptied_backend() {
    let (_backends, list) = named_backends(&["a", "b", "c"]);
    let (listen, admin) = (free_addr(), free_addr());
    let toml = with_tables(
        &config(listen, &list, "balance = \"least-connections\"\n"),
        &ops_tables(free_addr(), admin, None),
    );
    let rw = Ringway::start(&toml, &[listen, admin]);
    assert_eq!(
        status(admin)["listeners"][0]["balance"],
        "least-connections"
    );
    let mut held: Vec<(TcpStream, String)> = (0..30).map(|_| connect_named(listen)).collect();
    let per = per_backend(held.iter().map(|h| &h.1));
    for n in ["a", "b", "c"] {
        assert_eq!(per.get(n), Some(&10), "not even: {per:?}");
    }
    held.retain(|h| h.1 != "a");
    let emptied = eventually(Duration::from_secs(5), || {
        status(admin)["listeners"][0]["backends"][0]["open"] == 0
    });
    assert!(
        emptied,
        "a still counts open connections: {}",
        status(admin)
    );
    let fresh: Vec<(TcpStream, String)> = (0..10).map(|_| connect_named(listen)).collect();
    assert!(
        fresh.iter().all(|h| h.1 == "a"),
        "new connections did not go to the emptied backend: {:?}",
        fresh.iter().map(|h| &h.1).collect::<Vec<_>>()
    );
    drop(rw);
}

/// round-robin with weights 2, 1, 1: 40 connections in a row split 20, 10, 10.
#[test]
fn round_robin_takes_turns_by_weight() {
    let (_backends, list) = named_backends(&["a", "b", "c"]);
    let listen = free_addr();
    let toml = config(listen, &list, "balance = \"round-robin\"\n").replacen(
        "id = \"a\"\n",
        "id = \"a\"\nweight = 2\n",
        1,
    );
    let _rw = Ringway::start(&toml, &[listen]);
    let got = connect_many(listen, 40);
    let per = per_backend(got.iter().map(|g| &g.1));
    assert_eq!(
        (per.get("a"), per.get("b"), per.get("c")),
        (Some(&20), Some(&10), Some(&10)),
        "{per:?}"
    );
}

/// `slow_start = "4s"`: a backend that comes back (here: disabled, then enabled)
/// takes almost none of its keys at first, is shown ramping in `/status`, and once
/// the ramp is whole takes exactly the keys `route` gives it. Connections open on
/// the other backend stay where they are throughout.
#[test]
fn a_recovered_backend_ramps_up_over_slow_start() {
    let (_backends, list) = named_backends(&["a", "b"]);
    let (listen, admin) = (free_addr(), free_addr());
    let toml = with_tables(
        &config(
            listen,
            &list,
            "[listener.health]\ncheck = \"none\"\nslow_start = \"4s\"\n",
        ),
        &ops_tables(free_addr(), admin, None),
    );
    let rw = Ringway::start(&toml, &[listen, admin]);
    let names = names(&list);
    for action in ["disable", "enable"] {
        let r = http(
            "POST",
            admin,
            &format!("/listeners/t/backends/b/{action}"),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let early = connect_many(listen, 100);
    let ramp = status(admin)["listeners"][0]["backends"][1]["slow_start_percent"].as_f64();
    assert!(
        ramp.is_some_and(|p| p < 100.0),
        "/status does not show b ramping: {ramp:?}"
    );
    // Where the ring sends these clients with b at its full share.
    let clients: Vec<SocketAddr> = early.iter().map(|c| c.0).collect();
    let full: Vec<String> = rw
        .route("t", &[], &clients)
        .into_iter()
        .map(|r| names[&r.1].clone())
        .collect();
    let b_keys = full.iter().filter(|n| *n == "b").count();
    let b_took = early.iter().filter(|c| c.1 == "b").count();
    assert!(b_keys >= 20, "too few of b's keys to tell: {b_keys}");
    assert!(
        b_took * 3 <= b_keys,
        "b took {b_took} of its {b_keys} keys right after it came back"
    );
    // Every connection that did not go to b went to a: nothing refused.
    assert_eq!(early.iter().filter(|c| c.1 == "a").count(), 100 - b_took);
    let whole = eventually(Duration::from_secs(8), || {
        status(admin)["listeners"][0]["backends"][1]["slow_start_percent"].is_null()
    });
    assert!(whole, "b is still ramping after 8 s of a 4 s slow start");
    let later = connect_many(listen, 100);
    assert_routed(&rw, "t", &[], &later, &names);
}

/// UDP counts open flows: 60 flows held open whose keys the ring gives all to one
/// backend (chosen with `route`) spread evenly over 3 backends under
/// least-connections, within one (the start-up probe holds a flow too).
#[test]
fn least_connections_counts_udp_flows() {
    let backends: Vec<UdpBackend> = ["a", "b", "c"]
        .iter()
        .map(|n| UdpBackend::spawn("127.0.0.1:0", n))
        .collect();
    let list: Vec<(SocketAddr, &str)> = backends
        .iter()
        .zip(["a", "b", "c"])
        .map(|(b, n)| (b.addr, n))
        .collect();
    let listen = free_udp_addr();
    let rw = start_udp(
        &udp_config(listen, &list, "balance = \"least-connections\"\n"),
        listen,
    );
    let names = names(&list);
    // Sockets whose flows the ring alone would all send to a.
    let mut socks = Vec::new();
    while socks.len() < 60 {
        let batch: Vec<std::net::UdpSocket> = (0..100)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let clients: Vec<SocketAddr> = batch.iter().map(|s| s.local_addr().unwrap()).collect();
        let routed = rw.route("u", &[], &clients);
        socks.extend(
            batch
                .into_iter()
                .zip(routed)
                .filter(|(_, r)| names[&r.1] == "a")
                .map(|(s, _)| s),
        );
    }
    socks.truncate(60);
    let who: Vec<String> = socks.iter().map(|s| udp_who(s, listen)).collect();
    let per = per_backend(who.iter());
    for n in ["a", "b", "c"] {
        let got = per.get(n).copied().unwrap_or(0);
        assert!((19..=21).contains(&got), "not even: {per:?}");
    }
}
