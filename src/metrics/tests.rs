use super::*;

static EMPTY: Histogram = Histogram::EMPTY;

fn backend(id: &str, port: u16, workers: usize) -> BackendStats {
    let pool = crate::dataplane::PoolShared::detached("web");
    BackendStats::new(id, ([127, 0, 0, 1], port).into(), workers, pool)
}

fn sample<'a>(stats: &'a Sharded<ListenerCounters>, backends: &'a [BackendStats]) -> Sample<'a> {
    Sample {
        listeners: vec![ListenerSample {
            name: "web",
            udp: false,
            active: 2,
            stats,
        }],
        pools: vec![PoolSample {
            name: "web",
            owner: Some("web"),
            remapped: 0.25,
            sets: Vec::new(),
            backends: backends
                .iter()
                .map(|b| BackendSample {
                    stats: b,
                    up: true,
                    share: 0.5,
                    checks_ok: 3,
                    checks_failed: 1,
                    checks_unknown: 0,
                    to_up: 0,
                    to_down: 1,
                    check_durations: Some(&EMPTY),
                })
                .collect(),
        }],
        reloads_ok: 1,
        reloads_failed: 0,
        worker_panics: 0,
        upgrades: (0, 0, None),
        access_log_lost: [("queue_full", 0), ("write_failed", 0), ("not_open", 0)],
        carried: None,
        cluster: Some(ClusterSample {
            peers: vec!["10.0.0.1".into(), "10.0.0.2".into(), "10.0.0.3".into()],
            me: 1,
            counts: crate::dataplane::stats::ClusterCounts {
                forwarded: vec![(5, 500), (0, 0), (7, 700)],
                delivered: (3, 300),
                dropped: (1, 100),
                no_route: (0, 0),
                too_big: (2, 3000),
            },
            leaving: true,
        }),
    }
}

#[test]
fn names_follow_prometheus_rules() {
    for &(name, labels, kind, _) in names::ALL {
        assert!(name.starts_with("ringway_"), "{name}");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: counters and only counters end in _total"
        );
        for l in labels {
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
        }
    }
}

#[test]
fn shards_are_summed_and_labelled() {
    let stats: Sharded<ListenerCounters> = Sharded::new(2);
    stats.shard(0).connections.add(3);
    stats.shard(1).connections.add(4);
    let b = [backend("b1", 1, 2)];
    b[0].counters.shard(1).sent_bytes.add(10);
    let text = render(&sample(&stats, &b));
    assert!(
        text.contains("ringway_listener_connections_total{listener=\"web\"} 7"),
        "{text}"
    );
    assert!(
        text.contains(
            "ringway_backend_sent_bytes_total{listener=\"web\",pool=\"web\",backend=\"b1\"} 10"
        ),
        "{text}"
    );
    assert!(
        text.contains("ringway_ring_remapped_ratio{listener=\"web\",pool=\"web\"} 0.25"),
        "{text}"
    );
    assert!(text.contains("ringway_build_info{version=\""), "{text}");
}

/// Every sample sits under its own family's TYPE line, each family once.
#[test]
fn families_are_contiguous_and_typed_once() {
    let stats: Sharded<ListenerCounters> = Sharded::new(1);
    let b = [backend("b1", 1, 1), backend("b2", 2, 1)];
    let text = render(&sample(&stats, &b));
    let mut seen = std::collections::HashSet::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            current = rest.split(' ').next().unwrap().to_string();
            assert!(seen.insert(current.clone()), "{current} typed twice");
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| *f == current))
                .unwrap_or(name);
            assert_eq!(family, current, "{line} outside its family");
        }
    }
    for &(name, ..) in names::ALL {
        assert!(seen.contains(name), "{name} missing");
    }
}

#[test]
fn removed_backends_are_gone_at_the_next_scrape() {
    let stats: Sharded<ListenerCounters> = Sharded::new(1);
    let b = [backend("gone", 1, 1), backend("stays", 2, 1)];
    assert!(render(&sample(&stats, &b)).contains("backend=\"gone\""));
    let text = render(&sample(&stats, &b[1..]));
    assert!(!text.contains("backend=\"gone\""), "{text}");
    assert!(text.contains("backend=\"stays\""), "{text}");
}

#[test]
fn checked_backends_have_a_histogram_before_the_first_check() {
    let stats: Sharded<ListenerCounters> = Sharded::new(1);
    let b = [backend("b1", 1, 1)];
    let text = render(&sample(&stats, &b));
    assert!(
        text.contains(
            "ringway_health_check_duration_seconds_count{listener=\"web\",pool=\"web\",backend=\"b1\"} 0"
        ),
        "{text}"
    );
}

/// A `[[pool]]`'s backends are named by pool alone: they serve every listener that
/// routes to it.
#[test]
fn a_named_pools_series_carry_no_listener() {
    let stats: Sharded<ListenerCounters> = Sharded::new(1);
    let b = [backend("a1", 1, 1)];
    let mut s = sample(&stats, &b);
    s.pools[0].owner = None;
    s.pools[0].name = "api";
    s.pools[0].sets = vec![SetSample {
        set: "_api._tcp.test",
        errors: 2,
        refused: 0,
        backends: 1,
    }];
    let text = render(&s);
    assert!(
        text.contains("ringway_backend_up{pool=\"api\",backend=\"a1\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ringway_resolver_errors_total{pool=\"api\",set=\"_api._tcp.test\"} 2"),
        "{text}"
    );
    assert!(!text.contains("listener=\"web\",pool=\"api\""), "{text}");
}

#[test]
fn the_cluster_s_series_name_every_other_peer() {
    let stats: Sharded<ListenerCounters> = Sharded::new(1);
    let b = [backend("b1", 1, 1)];
    let text = render(&sample(&stats, &b));
    for line in [
        "ringway_cluster_forwarded_packets_total{peer=\"10.0.0.1\"} 5",
        "ringway_cluster_forwarded_packets_total{peer=\"10.0.0.3\"} 7",
        "ringway_cluster_forwarded_bytes_total{peer=\"10.0.0.3\"} 700",
        "ringway_cluster_delivered_packets_total 3",
        "ringway_cluster_lost_packets_total{reason=\"no_owner\"} 1",
        "ringway_cluster_lost_packets_total{reason=\"too_big\"} 2",
        "ringway_cluster_leaving 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(
        !text.contains("peer=\"10.0.0.2\""),
        "this node is no peer of its own"
    );
    let mut without = sample(&stats, &b);
    without.cluster = None;
    assert!(!render(&without).contains("ringway_cluster_"));
}
