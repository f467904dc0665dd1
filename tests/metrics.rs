//! `/metrics`: scraped with a real HTTP client; names, labels, and counters that move
//! with traffic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use ringway::metrics::names;

use crate::util::*;

/// One TCP listener `t` (backends a, b, health checked) and one UDP listener `u`
/// (backend x), with metrics and admin on loopback.
fn two_listeners(
    listen: SocketAddr,
    tcp: &[(SocketAddr, &str)],
    udp_listen: SocketAddr,
    udp: SocketAddr,
    metrics: SocketAddr,
    admin: SocketAddr,
) -> String {
    let mut s = format!(
        "workers = 2\nshutdown_timeout = \"2s\"\n\n{}",
        ops_tables(metrics, admin, None)
    );
    s.push_str(&format!(
        "[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\n[listener.health]\n{FAST_HEALTH}\n"
    ));
    for (addr, id) in tcp {
        s.push_str(&format!(
            "[[listener.backend]]\naddress = \"{addr}\"\nid = \"{id}\"\n"
        ));
    }
    s.push_str(&format!("\n[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nlisten = \"{udp_listen}\"\n[[listener.backend]]\naddress = \"{udp}\"\nid = \"x\"\n"));
    s
}

#[test]
fn metrics_have_the_documented_names_and_move_with_traffic() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let x = UdpBackend::spawn("127.0.0.1:0", "x");
    let (listen, udp_listen, metrics, admin) =
        (free_addr(), free_udp_addr(), free_addr(), free_addr());
    let toml = two_listeners(
        listen,
        &[(a.addr, "a"), (b.addr, "b")],
        udp_listen,
        x.addr,
        metrics,
        admin,
    );
    let rw = Ringway::start(&toml, &[listen, metrics]);

    // Content type and every documented name, once a health check has finished.
    let r = http("GET", metrics, "/metrics", None);
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    // start() made one connection to see ringway listen; wait until it is counted and
    // closed, and until a health check has finished.
    let t = [("listener", "t")];
    assert!(
        eventually(Duration::from_secs(5), || {
            let m = scrape(metrics);
            sample(&m, "ringway_listener_connections_total", &t) == Some(1.0)
                && sample(&m, "ringway_listener_active_connections", &t) == Some(0.0)
                && m.contains("ringway_health_check_duration_seconds_bucket")
        }),
        "{}",
        scrape(metrics)
    );
    let before = scrape(metrics);
    // Traffic: 20 TCP connections of 1,000 bytes each way, 5 held open; 10 UDP datagrams.
    let mut held = Vec::new();
    for i in 0..20 {
        let (mut s, _) = connect_named(listen);
        s.write_all(&[7u8; 1000]).unwrap();
        let mut back = [0u8; 1000];
        s.read_exact(&mut back).unwrap();
        if i < 5 {
            held.push(s);
        }
    }
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..10u8 {
        assert!(udp_ask(&client, udp_listen, &[i; 10]).is_some());
    }
    // Counters are summed from the workers' shards at scrape time.
    let text = scrape(metrics);
    for &(name, labels, kind, _) in names::ALL {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}")),
            "no TYPE line for {name}:\n{text}"
        );
        let series = text
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'));
        let series = series.unwrap_or_else(|| panic!("no sample of {name}:\n{text}"));
        for l in labels {
            assert!(
                series.contains(&format!("{l}=\"")),
                "{name} lacks label {l}: {series}"
            );
        }
    }
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or(0.0) - sample(&before, name, labels).unwrap_or(0.0)
    };
    assert_eq!(delta("ringway_listener_connections_total", &t), 20.0);
    assert_eq!(
        sample(&text, "ringway_listener_active_connections", &t),
        Some(5.0)
    );
    let per = |name: &str, id: &str| delta(name, &[("listener", "t"), ("backend", id)]);
    let now = |name: &str, id: &str| {
        sample(&text, name, &[("listener", "t"), ("backend", id)]).unwrap_or(0.0)
    };
    assert_eq!(
        per("ringway_backend_connections_total", "a")
            + per("ringway_backend_connections_total", "b"),
        20.0
    );
    assert_eq!(
        per("ringway_backend_active_connections", "a")
            + per("ringway_backend_active_connections", "b"),
        5.0
    );
    // Sent: 1,000 per connection. Received: the same plus the greeting "a\n" or "b\n".
    assert_eq!(
        per("ringway_backend_sent_bytes_total", "a") + per("ringway_backend_sent_bytes_total", "b"),
        20_000.0
    );
    assert_eq!(
        per("ringway_backend_received_bytes_total", "a")
            + per("ringway_backend_received_bytes_total", "b"),
        20_040.0
    );
    assert_eq!(now("ringway_backend_up", "a"), 1.0);
    let shares = now("ringway_backend_ring_share", "a") + now("ringway_backend_ring_share", "b");
    assert!((shares - 1.0).abs() < 1e-9, "shares sum to {shares}");
    assert!(now("ringway_backend_ring_share", "a") > 0.3);
    assert!(
        sample(
            &text,
            "ringway_health_checks_total",
            &[("listener", "t"), ("backend", "a"), ("result", "success")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(
            &text,
            "ringway_backend_transitions_total",
            &[("listener", "t"), ("backend", "a"), ("to", "down")]
        ),
        Some(0.0)
    );
    let u = [("listener", "u")];
    // The readiness probe of start() and our 10 (udp_ask may resend; at least 10).
    assert!(
        sample(
            &text,
            "ringway_udp_datagrams_total",
            &[("listener", "u"), ("direction", "in")]
        )
        .unwrap()
            >= 10.0
    );
    assert!(
        sample(
            &text,
            "ringway_udp_datagrams_total",
            &[("listener", "u"), ("direction", "out")]
        )
        .unwrap()
            >= 10.0
    );
    assert!(sample(&text, "ringway_udp_flows_total", &u).unwrap() >= 1.0);
    assert!(sample(&text, "ringway_udp_flows_active", &u).unwrap() >= 1.0);
    assert_eq!(
        sample(
            &text,
            "ringway_udp_dropped_datagrams_total",
            &[("listener", "u"), ("reason", "no_backend")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "ringway_config_reloads_total",
            &[("result", "success")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "ringway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    // A backend going down: up 0, a transition, its share to the other, remapped ratio.
    drop(held);
    b.stop();
    assert!(
        eventually(Duration::from_secs(5), || {
            sample(
                &scrape(metrics),
                "ringway_backend_up",
                &[("listener", "t"), ("backend", "b")],
            ) == Some(0.0)
        }),
        "b never went down in /metrics; log:\n{}",
        rw.log()
    );
    let text = scrape(metrics);
    let b_down = [("listener", "t"), ("backend", "b"), ("to", "down")];
    assert_eq!(
        sample(&text, "ringway_backend_transitions_total", &b_down),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "ringway_backend_ring_share",
            &[("listener", "t"), ("backend", "a")]
        ),
        Some(1.0)
    );
    let moved = sample(&text, "ringway_ring_remapped_ratio", &t).unwrap();
    let b_share = sample(
        &before,
        "ringway_backend_ring_share",
        &[("listener", "t"), ("backend", "b")],
    )
    .unwrap();
    assert!(
        (moved - b_share).abs() < 1e-9,
        "moved {moved}, b owned {b_share}"
    );
    assert!(
        sample(
            &text,
            "ringway_health_checks_total",
            &[("listener", "t"), ("backend", "b"), ("result", "failure")]
        )
        .unwrap()
            >= 3.0
    );
    // Other paths are 404, other methods 405.
    assert_eq!(http("GET", metrics, "/", None).status, 404);
    assert_eq!(http("POST", metrics, "/metrics", None).status, 405);
    let _ = TcpStream::connect(listen);
}

#[test]
fn readme_lists_every_metric() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for &(name, labels, _, _) in names::ALL {
        let row = readme
            .lines()
            .find(|l| l.contains(&format!("`{name}")))
            .unwrap_or_else(|| panic!("README does not list {name}"));
        for l in labels {
            assert!(
                row.contains(l),
                "README's row for {name} lacks label {l}: {row}"
            );
        }
    }
}
