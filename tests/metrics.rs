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
    // A backend set asking a DNS server that is not there: it fails (and stays empty),
    // so its series show up without a DNS server.
    let nobody = free_udp_addr();
    let mut s = format!(
        "workers = 2\nshutdown_timeout = \"2s\"\n\n{}[resolver]\nservers = [\"{nobody}\"]\ntimeout = \"100ms\"\n\n",
        ops_tables(metrics, admin, None)
    );
    s.push_str(&format!(
        "[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\n[listener.health]\n{FAST_HEALTH}\n[[listener.backend_set]]\ndns = \"api.invalid:80\"\n"
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
                && sample(
                    &m,
                    "ringway_health_checks_total",
                    &[
                        ("listener", "t"),
                        ("pool", "t"),
                        ("backend", "a"),
                        ("result", "success"),
                    ],
                )
                .is_some_and(|v| v >= 1.0)
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
    // Counters are summed from the workers' shards at scrape time. (With the kernel
    // forwarding UDP flows, CI's kernel run, its counts reach the shards every 100 ms.)
    let udp_counted = |t: &str| {
        ["in", "out"].iter().all(|d| {
            sample(
                t,
                "ringway_udp_datagrams_total",
                &[("listener", "u"), ("direction", d)],
            )
            .is_some_and(|v| v >= 10.0)
        })
    };
    eventually(Duration::from_secs(2), || udp_counted(&scrape(metrics)));
    let text = scrape(metrics);
    // ([cluster]'s series exist only with a [cluster]: tests/cluster.rs checks them.)
    for &(name, labels, kind, _) in names::ALL
        .iter()
        .filter(|m| !m.0.starts_with("ringway_cluster_"))
    {
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
    let per =
        |name: &str, id: &str| delta(name, &[("listener", "t"), ("pool", "t"), ("backend", id)]);
    let now = |name: &str, id: &str| {
        sample(
            &text,
            name,
            &[("listener", "t"), ("pool", "t"), ("backend", id)],
        )
        .unwrap_or(0.0)
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
            &[
                ("listener", "t"),
                ("pool", "t"),
                ("backend", "a"),
                ("result", "success")
            ]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(
            &text,
            "ringway_backend_transitions_total",
            &[
                ("listener", "t"),
                ("pool", "t"),
                ("backend", "a"),
                ("to", "down")
            ]
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
    // It passed a check first: from then on `fall` (3) failures take it down (before
    // it, the first check alone decides).
    assert!(eventually(Duration::from_secs(5), || {
        sample(
            &scrape(metrics),
            "ringway_health_checks_total",
            &[
                ("listener", "t"),
                ("pool", "t"),
                ("backend", "b"),
                ("result", "success"),
            ],
        )
        .is_some_and(|n| n >= 1.0)
    }));
    drop(held);
    b.stop();
    assert!(
        eventually(Duration::from_secs(5), || {
            sample(
                &scrape(metrics),
                "ringway_backend_up",
                &[("listener", "t"), ("pool", "t"), ("backend", "b")],
            ) == Some(0.0)
        }),
        "b never went down in /metrics; log:\n{}",
        rw.log()
    );
    let text = scrape(metrics);
    let b_down = [
        ("listener", "t"),
        ("pool", "t"),
        ("backend", "b"),
        ("to", "down"),
    ];
    assert_eq!(
        sample(&text, "ringway_backend_transitions_total", &b_down),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "ringway_backend_ring_share",
            &[("listener", "t"), ("pool", "t"), ("backend", "a")]
        ),
        Some(1.0)
    );
    let moved = sample(
        &text,
        "ringway_ring_remapped_ratio",
        &[("listener", "t"), ("pool", "t")],
    )
    .unwrap();
    let b_share = sample(
        &before,
        "ringway_backend_ring_share",
        &[("listener", "t"), ("pool", "t"), ("backend", "b")],
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
            &[
                ("listener", "t"),
                ("pool", "t"),
                ("backend", "b"),
                ("result", "failure")
            ]
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

#[test]
fn the_grafana_dashboard_uses_every_metric_and_only_real_ones() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/grafana-dashboard.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => collect(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dash["panels"], &mut exprs);
    collect(&dash["templating"], &mut exprs);
    let known: Vec<&str> = names::ALL.iter().map(|m| m.0).collect();
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("ringway_") {
                let base = word.strip_suffix("_bucket").unwrap_or(word);
                assert!(
                    known.contains(&base),
                    "the dashboard uses unknown metric {word} in {e}"
                );
            }
        }
    }
    for name in known {
        assert!(
            exprs.iter().any(|e| e.contains(name)),
            "the dashboard never shows {name}"
        );
    }
}

/// Prometheus' own tools read the exposition: `promtool check metrics` lints it, and a
/// real Prometheus server scrapes it and answers a query. Both come from Debian's
/// `prometheus` package, which `.ci/run` installs.
#[test]
#[ignore = "needs prometheus (apt-get install prometheus)"]
fn prometheus_itself_accepts_the_exposition() {
    let has = |bin: &str| {
        std::process::Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        has("promtool") && has("prometheus"),
        "needs promtool and prometheus (apt-get install prometheus)"
    );
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let (listen, metrics) = (free_addr(), free_addr());
    let toml = with_tables(
        &config(
            listen,
            &[(a.addr, "a")],
            &format!("[listener.health]\n{FAST_HEALTH}"),
        ),
        &format!("[metrics]\nlisten = \"{metrics}\"\n"),
    );
    let _rw = Ringway::start(&toml, &[listen, metrics]);
    let _ = connect_named(listen);
    assert!(eventually(Duration::from_secs(5), || scrape(metrics)
        .contains("_bucket")));

    let lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(scrape(metrics));
    assert!(
        lint.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let web = free_addr();
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(&conf, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ringway\n    static_configs:\n      - targets: ['{metrics}']\n")).unwrap();
    let mut prom = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let query =
        "/api/v1/query?query=ringway_backend_up%7Blistener%3D%22t%22%2Cbackend%3D%22a%22%7D";
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(30), || {
        // Prometheus may accept and reset while its web server starts: try again.
        last = try_get(web, query).unwrap_or_else(|e| e);
        last.contains("\"value\"") && last.contains("\"1\"]")
    });
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(ok, "Prometheus did not ingest ringway_backend_up: {last}");
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: String) -> std::process::Output;
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: String) -> std::process::Output {
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}
