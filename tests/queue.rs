//! Per-backend `max_connections` with a queue, from outside: clients of a full backend
//! wait (accepted, no backend connection), are served first come first served as
//! slots free up, and past `queue_timeout` (or with the queue full) are closed and
//! counted, or go to the next backend with room (`queue_overflow = "next"`).

use std::collections::VecDeque;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// `config` with `extra` on the listener and `limits` on backend `id`.
fn limited(
    listen: SocketAddr,
    list: &[(SocketAddr, &str)],
    extra: &str,
    id: &str,
    limits: &str,
) -> String {
    let at = format!("id = \"{id}\"\n");
    config(listen, list, extra).replacen(&at, &format!("{at}{limits}"), 1)
}

/// The greeting of the backend that took `s`, if one comes within `within`.
fn greeted(s: &TcpStream, within: Duration) -> Option<String> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match (&*s).read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into()),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
}

/// Backend `i` of listener 0 in `/status`.
fn backend(admin: SocketAddr, i: usize) -> Value {
    status(admin)["listeners"][0]["backends"][i].clone()
}

fn queued(admin: SocketAddr, i: usize, n: u64) -> bool {
    eventually(Duration::from_secs(5), || backend(admin, i)["queued"] == n)
}

/// The access-log records in `path`.
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `max_connections = 2`: the third, fourth and fifth clients wait without a backend
/// connection; each slot freed goes to the oldest waiter at once, whichever worker
/// accepted it, while the younger ones go on waiting. The queue's length and the
/// time spent in it are in the metrics.
#[test]
fn a_full_backend_s_clients_wait_and_are_served_in_order() {
    let (backends, list) = named_backends(&["a"]);
    let (listen, admin, metrics) = (free_addr(), free_addr(), free_addr());
    let toml = with_tables(
        &limited(
            listen,
            &list,
            // No probes: every connection the backend accepts is a client's.
            "queue_timeout = \"30s\"\n[listener.health]\ncheck = \"none\"\n",
            "a",
            "max_connections = 2\n",
        ),
        &ops_tables(metrics, admin, None),
    );
    let _rw = Ringway::start(&toml, &[listen, admin, metrics]);
    // Waiting for the listener to answer connected once (through to the backend).
    let settled = eventually(Duration::from_secs(5), || {
        backend(admin, 0)["open"] == 0 && backends[0].accepted.load(Ordering::Relaxed) > 0
    });
    assert!(settled, "{}", backend(admin, 0));
    let before = backends[0].accepted.load(Ordering::Relaxed);
    let mut open: VecDeque<TcpStream> = (0..2).map(|_| connect_named(listen).0).collect();
    assert_eq!(backend(admin, 0)["max_connections"], 2);
    let mut waiting = VecDeque::new();
    for i in 1..=3 {
        waiting.push_back(TcpStream::connect(listen).unwrap());
        assert!(queued(admin, 0, i), "{i} not queued: {}", backend(admin, 0));
    }
    let text = scrape(metrics);
    let labels = [("listener", "t"), ("pool", "t"), ("backend", "a")];
    assert_eq!(
        sample(&text, "ringway_backend_queue_length", &labels),
        Some(3.0)
    );
    assert_eq!(
        backends[0].accepted.load(Ordering::Relaxed) - before,
        2,
        "a waiting client reached the backend"
    );
    for left in (0..3).rev() {
        drop(open.pop_front());
        let first = waiting.pop_front().unwrap();
        assert_eq!(
            greeted(&first, Duration::from_secs(5)).as_deref(),
            Some("a"),
            "the oldest waiter was not served when a slot freed"
        );
        assert!(
            queued(admin, 0, left),
            "{left} should still wait: {}",
            backend(admin, 0)
        );
        for younger in &waiting {
            assert_eq!(
                greeted(younger, Duration::from_millis(200)),
                None,
                "a younger waiter was served before the oldest"
            );
        }
        open.push_back(first);
    }
    let text = scrape(metrics);
    assert_eq!(
        sample(&text, "ringway_backend_queue_seconds_count", &labels),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ringway_backend_queue_length", &labels),
        Some(0.0)
    );
}

/// `max_queue = 1` and `queue_timeout = "400ms"`: a client that finds the queue full
/// is closed at once (`queue_full`); the one waiting is closed at its timeout
/// (`queue_timeout`), counted in the metrics, `/status` and the access log.
#[test]
fn a_wait_that_runs_out_is_closed_and_counted() {
    let (_backends, list) = named_backends(&["a"]);
    let (listen, admin, metrics) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let tables = format!(
        "{}\n[access_log]\npath = \"{}\"\n",
        ops_tables(metrics, admin, None),
        log.display()
    );
    let toml = with_tables(
        &limited(
            listen,
            &list,
            "queue_timeout = \"400ms\"\n",
            "a",
            "max_connections = 1\nmax_queue = 1\n",
        ),
        &tables,
    );
    let _rw = Ringway::start(&toml, &[listen, admin, metrics]);
    let (_holder, _) = connect_named(listen);
    let waiter = TcpStream::connect(listen).unwrap();
    assert!(queued(admin, 0, 1), "not queued: {}", backend(admin, 0));
    let turned_away = TcpStream::connect(listen).unwrap();
    turned_away
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        closed_by_peer(&turned_away),
        "a client past max_queue was not closed"
    );
    waiter
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        closed_by_peer(&waiter),
        "the waiter was not closed at queue_timeout"
    );
    let rejected = |reason: &str| {
        sample(
            &scrape(metrics),
            "ringway_listener_rejected_connections_total",
            &[("listener", "t"), ("reason", reason)],
        )
    };
    assert!(eventually(Duration::from_secs(5), || rejected(
        "queue_timeout"
    ) == Some(1.0)));
    assert_eq!(rejected("queue_full"), Some(1.0));
    let b = backend(admin, 0);
    assert_eq!(
        (b["queued"].clone(), b["queue_timeouts_total"].clone()),
        (0.into(), 1.into())
    );
    let logged = eventually(Duration::from_secs(5), || {
        let r = records(&log);
        r.iter()
            .any(|v| v["end"] == "queue_timeout" && v["pool"] == "t")
            && r.iter()
                .any(|v| v["end"] == "rejected" && v["detail"] == "queue_full")
    });
    assert!(logged, "access log: {:?}", records(&log));
}

/// `queue_overflow = "next"`: a client whose backend's queue is full goes at once to
/// the next backend with room, and one whose wait runs out goes there too.
#[test]
fn overflow_next_gives_waiters_to_a_backend_with_room() {
    let (_backends, list) = named_backends(&["a", "b"]);
    let (listen, admin) = (free_addr(), free_addr());
    let toml = with_tables(
        &limited(
            listen,
            &list,
            "hash = \"source-ip\"\nqueue_timeout = \"400ms\"\nqueue_overflow = \"next\"\n",
            "a",
            "max_connections = 1\nmax_queue = 1\n",
        ),
        &ops_tables(free_addr(), admin, None),
    );
    let rw = Ringway::start(&toml, &[listen, admin]);
    // Three sources the ring gives to a.
    let names = names(&list);
    let candidates: Vec<SocketAddr> = (2..60)
        .map(|i| SocketAddr::new(Ipv4Addr::new(127, 0, 3, i).into(), 1))
        .collect();
    let to_a: Vec<Ipv4Addr> = rw
        .route("t", &[], &candidates)
        .into_iter()
        .zip(&candidates)
        .filter(|((_, to), _)| names[to.as_str()] == "a")
        .map(|(_, c)| match c.ip() {
            std::net::IpAddr::V4(ip) => ip,
            _ => unreachable!(),
        })
        .take(3)
        .collect();
    assert_eq!(to_a.len(), 3, "too few sources go to a");
    let holder = connect_from(to_a[0], listen);
    assert_eq!(read_line(&holder), "a");
    let waiter = connect_from(to_a[1], listen);
    assert!(queued(admin, 0, 1), "not queued: {}", backend(admin, 0));
    let past_full_queue = connect_from(to_a[2], listen);
    assert_eq!(
        greeted(&past_full_queue, Duration::from_secs(5)).as_deref(),
        Some("b"),
        "past a full queue, the client did not go to the next backend"
    );
    assert_eq!(backend(admin, 0)["queued"], 1, "the waiter left early");
    assert_eq!(
        greeted(&waiter, Duration::from_secs(5)).as_deref(),
        Some("b"),
        "a waiter whose time ran out did not go to the next backend"
    );
    assert_eq!(backend(admin, 0)["queue_timeouts_total"], 1);
}
