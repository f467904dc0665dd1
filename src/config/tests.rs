use super::*;

const GOOD: &str = r#"
workers = 2

[[listener]]
name = "web"
protocol = "tcp"
listen = "127.0.0.1:8080"
hash = "source-ip"
vnodes = 100
connect_timeout = "250ms"
idle_timeout = "1m"
retries = 1
max_connections = 5
forward = "splice"

[[listener.backend]]
address = "127.0.0.1:9001"
weight = 2
id = "app-1"

[[listener.backend]]
address = "[::1]:9002"
"#;

fn err(text: &str) -> Located {
    match parse(Path::new("t.toml"), text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.located().expect("located error").clone(),
    }
}

fn with(replace: &str, by: &str) -> String {
    assert!(GOOD.contains(replace), "{replace}");
    GOOD.replacen(replace, by, 1)
}

#[test]
fn good_config_is_typed() {
    let c = parse(Path::new("t.toml"), GOOD).unwrap();
    assert_eq!(c.workers, 2);
    let l = &c.listeners[0];
    assert_eq!(l.name, "web");
    assert_eq!(l.hash, HashMode::SourceIp);
    let own = &c.pools[0];
    assert_eq!(
        (own.name.as_str(), own.owner.as_deref()),
        ("web", Some("web"))
    );
    assert_eq!(own.vnodes, 100);
    assert_eq!(l.connect_timeout, Duration::from_millis(250));
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!((l.retries, l.max_connections), (1, 5));
    assert_eq!(l.forward, ForwardMode::Splice);
    assert_eq!(own.backends[0].id, "app-1");
    assert_eq!(own.backends[0].weight, 2);
    assert_eq!(
        own.backends[1].id, "[::1]:9002",
        "id defaults to the address as written"
    );
    assert_eq!(own.backends[1].weight, 1);
    assert_eq!(l.route.default_pool.as_deref(), Some("web"));
    assert!(c.summary().contains("web tcp 127.0.0.1:8080 -> 2 backends"));
}

#[test]
fn defaults_apply() {
    let c = parse(
        Path::new("t.toml"),
        "[[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:1\"\n[[listener.backend]]\naddress = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let l = &c.listeners[0];
    assert!(c.workers >= 1);
    assert_eq!(c.shutdown_timeout, Tuning::DEFAULT_SHUTDOWN_TIMEOUT);
    assert_eq!(l.protocol, Protocol::Tcp);
    assert_eq!(l.hash, HashMode::FiveTuple);
    assert_eq!(c.pools[0].vnodes, crate::balance::ring::DEFAULT_VNODES);
    assert_eq!(l.retries, Tuning::DEFAULT_RETRIES);
}

#[test]
fn unknown_key_is_named_with_its_place() {
    let e = err(&with("retries = 1", "retries = 1\nretrys = 2"));
    assert_eq!(e.key, "listener[0].retrys");
    assert_eq!((e.line, e.column), (13, 1));
    assert!(
        e.message
            .contains("unknown key `retrys`: did you mean `retries`?"),
        "{}",
        e.message
    );
}

#[test]
fn weight_zero_is_rejected() {
    let e = err(&with("weight = 2", "weight = 0"));
    assert_eq!(e.key, "listener[0].backend[0].weight");
    assert_eq!((e.line, e.column), (18, 10));
    assert!(e.message.contains("from 1 to 1000"), "{}", e.message);
}

#[test]
fn duplicate_ids_are_rejected() {
    let e = err(&with(
        "address = \"[::1]:9002\"",
        "address = \"[::1]:9002\"\nid = \"app-1\"",
    ));
    assert_eq!(e.key, "listener[0].backend[1].id");
    assert!(
        e.message.contains("duplicate backend id \"app-1\""),
        "{}",
        e.message
    );
}

#[test]
fn listener_without_backends_is_rejected() {
    let e = err("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(e.key, "listener[0].backend");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("no backends"), "{}", e.message);
}

#[test]
fn two_listeners_on_one_address_are_rejected() {
    let second = GOOD
        .replace("name = \"web\"", "name = \"two\"")
        .replace("workers = 2", "");
    let e = err(&format!("{GOOD}\n{second}"));
    assert_eq!(e.key, "listener[1].listen");
    assert!(
        e.message.contains("cannot share an address"),
        "{}",
        e.message
    );
    let wild = second.replace("127.0.0.1:8080", "0.0.0.0:8080");
    assert_eq!(err(&format!("{GOOD}\n{wild}")).key, "listener[1].listen");
}

#[test]
fn duplicate_listener_names_are_rejected() {
    let second = GOOD
        .replace("127.0.0.1:8080", "127.0.0.1:8081")
        .replace("workers = 2", "");
    let e = err(&format!("{GOOD}\n{second}"));
    assert_eq!(e.key, "listener[1].name");
}

#[test]
fn bad_values_say_what_is_expected() {
    let cases = [
        (
            with("\"127.0.0.1:8080\"", "\"localhost:8080\""),
            "listener[0].listen",
            "not a socket address",
        ),
        (
            with("\"250ms\"", "\"soon\""),
            "listener[0].connect_timeout",
            "not a duration",
        ),
        (
            with("\"1m\"", "\"0s\""),
            "listener[0].idle_timeout",
            "greater than zero",
        ),
        (
            with("retries = 1", "retries = -1"),
            "listener[0].retries",
            "from 0 to 100",
        ),
        (
            with("vnodes = 100", "vnodes = 0"),
            "listener[0].vnodes",
            "from 1 to 65536",
        ),
        (
            with("workers = 2", "workers = 0"),
            "workers",
            "from 1 to 1024",
        ),
        (
            with("\"source-ip\"", "\"round-robin\""),
            "listener[0].hash",
            "unknown variant",
        ),
        (
            with("\"tcp\"", "\"sctp\""),
            "listener[0].protocol",
            "unknown variant",
        ),
        (
            with("\"127.0.0.1:9001\"", "\"0.0.0.0:9001\""),
            "listener[0].backend[0].address",
            "concrete IP",
        ),
        (
            with(
                "listen = \"127.0.0.1:8080\"",
                "listen = \"127.0.0.1:80800\"",
            ),
            "listener[0].listen",
            "port 80800 is out of range (ports are 1 to 65535)",
        ),
        (
            with("max_connections = 5", "max_connections = \"5\""),
            "listener[0].max_connections",
            "expected a whole number, got the string \"5\"",
        ),
        (
            with("name = \"web\"\n", ""),
            "listener[0].name",
            "missing field `name`",
        ),
    ];
    for (text, key, msg) in cases {
        let e = err(&text);
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(msg), "{key}: {}", e.message);
        assert!(e.line >= 1 && e.column >= 1);
    }
}

#[test]
fn syntax_error_has_a_place() {
    let e = err("workers = = 2\n");
    assert_eq!(e.line, 1);
    assert_eq!(e.key, "workers");
}

#[test]
fn missing_file_is_a_read_error() {
    let e = load(Path::new("/nonexistent/ringway.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/ringway.toml"));
}

const UDP: &str = "[[listener]]\nname = \"dns\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:5353\"\nudp_idle_timeout = \"5s\"\nudp_responses = 1\nudp_max_flows = 100\n\n[[listener.backend]]\naddress = \"127.0.0.1:53\"\n";

#[test]
fn udp_listener_is_typed() {
    let c = parse(Path::new("t.toml"), UDP).unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.protocol, Protocol::Udp);
    assert_eq!(l.udp_idle_timeout, Duration::from_secs(5));
    assert_eq!((l.udp_responses, l.udp_max_flows), (1, 100));
}

#[test]
fn udp_defaults_apply() {
    let c = parse(
        Path::new("t.toml"),
        &UDP.replace(
            "udp_idle_timeout = \"5s\"\nudp_responses = 1\nudp_max_flows = 100\n",
            "",
        ),
    )
    .unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.udp_idle_timeout, Tuning::DEFAULT_UDP_IDLE_TIMEOUT);
    assert_eq!(
        (l.udp_responses, l.udp_max_flows),
        (0, Tuning::DEFAULT_UDP_MAX_FLOWS)
    );
}

#[test]
fn keys_of_the_other_protocol_are_rejected() {
    let e = err(&UDP.replace("udp_responses = 1", "retries = 1"));
    assert_eq!(e.key, "listener[0].retries");
    assert!(
        e.message.contains("applies to tcp listeners only"),
        "{}",
        e.message
    );
    let e = err(&with("retries = 1", "udp_responses = 1"));
    assert_eq!(e.key, "listener[0].udp_responses");
    assert!(
        e.message.contains("applies to udp listeners only"),
        "{}",
        e.message
    );
}

#[test]
fn udp_on_a_wildcard_address_is_accepted() {
    let c = parse(
        Path::new("t.toml"),
        &UDP.replace("127.0.0.1:5353", "0.0.0.0:5353"),
    )
    .unwrap();
    assert!(c.listeners[0].listen.ip().is_unspecified());
}

#[test]
fn tcp_and_udp_may_share_an_address() {
    let both = format!(
        "{UDP}\n{}",
        UDP.replace("\"dns\"", "\"dns-tcp\"")
            .replace("protocol = \"udp\"", "protocol = \"tcp\"")
            .replace(
                "udp_idle_timeout = \"5s\"\nudp_responses = 1\nudp_max_flows = 100\n",
                ""
            )
    );
    let c = parse(Path::new("t.toml"), &both).unwrap();
    assert_eq!(c.listeners.len(), 2);
}

#[test]
fn health_table_is_typed_with_defaults() {
    use crate::health::{AllDown, Check, OnDown};
    let c = parse(Path::new("t.toml"), GOOD).unwrap();
    let h = &c.pools[0].health;
    assert_eq!(h.check, Check::Tcp, "TCP listeners check tcp by default");
    assert_eq!(
        (h.interval, h.timeout, h.rise, h.fall),
        (Duration::from_secs(2), Duration::from_secs(1), 2, 3)
    );
    assert!(h.passive);
    assert_eq!((h.on_down, h.all_down), (OnDown::Keep, AllDown::Reject));
    assert_eq!(h.slow_start, None);
    let u = parse(Path::new("t.toml"), UDP).unwrap();
    assert_eq!(
        u.pools[0].health.check,
        Check::None,
        "UDP listeners check nothing by default"
    );
    let t = format!("{GOOD}\n[listener.health]\ncheck = \"send-expect\"\nsend = 'PING\\r\\n'\nexpect = \"+PONG\"\ninterval = \"5s\"\ntimeout = \"2s\"\nrise = 1\nfall = 5\nport = 9100\non_down = \"close\"\nall_down = \"use-all\"\npassive = false\nslow_start = \"30s\"\n");
    let h = parse(Path::new("t.toml"), &t).unwrap().pools[0]
        .health
        .clone();
    assert_eq!(
        h.check,
        Check::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec()
        }
    );
    assert_eq!(
        (h.rise, h.fall, h.port, h.passive),
        (1, 5, Some(9100), false)
    );
    assert_eq!((h.on_down, h.all_down), (OnDown::Close, AllDown::UseAll));
    assert_eq!(h.slow_start, Some(Duration::from_secs(30)));
    let long = t.replace("slow_start = \"30s\"", "slow_start = \"2h\"");
    let e = parse(Path::new("t.toml"), &long).unwrap_err();
    let e = e.located().unwrap();
    assert_eq!(e.key, "listener[0].health.slow_start", "{}", e.message);
    assert!(e.message.contains("at most 1h"), "{}", e.message);
}

#[test]
fn checks_that_make_no_sense_are_errors() {
    let cases = [
        (format!("{UDP}\n[listener.health]\ncheck = \"http\"\n"), "listener[0].health.check", "cannot run on a udp listener"),
        (format!("{GOOD}\n[listener.health]\ncheck = \"dns\"\ndns_name = \"a.b.\"\n"), "listener[0].health.check", "cannot run on a tcp listener"),
        (format!("{GOOD}\n[listener.health]\ncheck = \"send-expect\"\nexpect = \"x\"\n"), "listener[0].health.expect", "needs `send`"),
        (format!("{GOOD}\n[listener.health]\ncheck = \"tcp\"\npath = \"/\"\n"), "listener[0].health.path", "not used by check = \"tcp\""),
        (format!("{UDP}\n[listener.health]\ncheck = \"dns\"\n"), "listener[0].health.dns_name", "needs `dns_name`"),
        (format!("{UDP}\n[listener.health]\ncheck = \"dns\"\ndns_name = \"a.b.\"\ndns_rcodes = [\"OK\"]\n"), "listener[0].health.dns_rcodes", "unknown rcode"),
        (format!("{GOOD}\n[listener.health]\nfall = 0\n"), "listener[0].health.fall", "from 1 to 100"),
        (format!("{GOOD}\n[listener.health]\ncheck = \"http\"\nexpect_status = [99]\n"), "listener[0].health.expect_status", "not an HTTP status"),
        (format!("{GOOD}\n[listener.health]\ncheck = \"send-expect\"\nsend = '\\q'\n"), "listener[0].health.send", "unknown escape"),
        (format!("{GOOD}\n[listener.health]\nchek = \"tcp\"\n"), "listener[0].health.chek", "unknown key `chek`: did you mean `check`?"),
    ];
    for (text, key, msg) in cases {
        let e = err(&text);
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(msg), "{key}: {}", e.message);
    }
}

#[test]
fn send_proxy_is_a_version_for_tcp_listeners_and_reaches_health_checks() {
    let c = parse(
        Path::new("t.toml"),
        &with("forward = \"splice\"", "send_proxy = \"v2\""),
    )
    .unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.send_proxy, Some(ProxyVersion::V2));
    assert!(
        c.summary().contains("-> 2 backends (PROXY v2)"),
        "{}",
        c.summary()
    );
    assert_eq!(
        c.pools[0].health.send_proxy,
        Some(ProxyVersion::V2),
        "checks of the traffic port speak PROXY too"
    );
    let plain = parse(Path::new("t.toml"), GOOD).unwrap();
    assert_eq!(plain.listeners[0].send_proxy, None);
    assert_eq!(plain.pools[0].health.send_proxy, None);

    let e = err(&with("forward = \"splice\"", "send_proxy = \"v3\""));
    assert_eq!(e.key, "listener[0].send_proxy");
    assert_eq!((e.line, e.column), (14, 14));
    let e = err(&UDP.replace(
        "udp_max_flows = 100",
        "udp_max_flows = 100\nsend_proxy = \"v1\"",
    ));
    assert_eq!(e.key, "listener[0].send_proxy");
    assert!(e.message.contains("tcp listeners only"), "{}", e.message);
}

#[test]
fn resolve_interval_is_a_duration_with_a_default() {
    let c = parse(Path::new("t.toml"), GOOD).unwrap();
    assert_eq!(c.resolve_interval, Tuning::DEFAULT_RESOLVE_INTERVAL);
    let c = parse(
        Path::new("t.toml"),
        &with("workers = 2", "workers = 2\nresolve_interval = \"5s\""),
    )
    .unwrap();
    assert_eq!(c.resolve_interval, Duration::from_secs(5));
    let e = err(&with(
        "workers = 2",
        "workers = 2\nresolve_interval = \"0s\"",
    ));
    assert_eq!(e.key, "resolve_interval");
}

#[test]
fn accept_proxy_is_a_tcp_switch() {
    let c = parse(
        Path::new("t.toml"),
        &with("forward = \"splice\"", "accept_proxy = true"),
    )
    .unwrap();
    assert!(c.listeners[0].accept_proxy);
    assert!(c.summary().contains("(accepts PROXY)"), "{}", c.summary());
    assert!(!parse(Path::new("t.toml"), GOOD).unwrap().listeners[0].accept_proxy);
    let e = err(&UDP.replace(
        "udp_max_flows = 100",
        "udp_max_flows = 100\naccept_proxy = true",
    ));
    assert_eq!(e.key, "listener[0].accept_proxy");
    let e = err(&with("forward = \"splice\"", "accept_proxy = \"yes\""));
    assert_eq!(e.key, "listener[0].accept_proxy");
}

#[test]
fn accept_proxy_from_lists_networks_and_needs_accept_proxy() {
    let c = parse(
        Path::new("t.toml"),
        &with(
            "forward = \"splice\"",
            "accept_proxy = true\naccept_proxy_from = [\"10.1.2.3/8\", \"192.0.2.7\", \"2001:db8::/32\"]",
        ),
    )
    .unwrap();
    let nets: Vec<String> = c.listeners[0]
        .accept_proxy_from
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    let cases = [
        (
            "accept_proxy_from = [\"10.0.0.0/8\"]",
            "needs `accept_proxy = true`",
        ),
        ("accept_proxy = true\naccept_proxy_from = []", "empty"),
        (
            "accept_proxy = true\naccept_proxy_from = [\"10.0.0.0/8\", \"lb.internal\"]",
            "not an address or network",
        ),
    ];
    for (text, why) in cases {
        let e = err(&with("forward = \"splice\"", text));
        assert_eq!(e.key, "listener[0].accept_proxy_from", "{text}");
        assert!(e.message.contains(why), "{text}: {}", e.message);
    }
}

#[test]
fn health_send_proxy_follows_the_listener_unless_told() {
    let base = with("forward = \"splice\"", "send_proxy = \"v1\"");
    let health = |h: &str| format!("{base}\n[listener.health]\ncheck = \"tcp\"\n{h}\n");
    let sp = |text: &str| {
        parse(Path::new("t.toml"), text).unwrap().pools[0]
            .health
            .send_proxy
    };
    assert_eq!(sp(&health("")), Some(ProxyVersion::V1));
    // Another port is another service: no header unless asked for.
    assert_eq!(sp(&health("port = 9999")), None);
    assert_eq!(
        sp(&health("port = 9999\nsend_proxy = true")),
        Some(ProxyVersion::V1)
    );
    assert_eq!(sp(&health("send_proxy = false")), None);
    let e = err(&format!(
        "{GOOD}\n[listener.health]\ncheck = \"tcp\"\nsend_proxy = true\n"
    ));
    assert_eq!(e.key, "listener[0].health.send_proxy");
    assert!(
        e.message.contains("listener's `send_proxy`"),
        "{}",
        e.message
    );
}

const SETS: &str = "[resolver]\nservers = [\"10.0.0.2\", \"[2001:db8::2]:5353\"]\ntimeout = \"300ms\"\nnxdomain_after = 5\n\n[[listener]]\nname = \"api\"\nlisten = \"127.0.0.1:443\"\n[[listener.backend_set]]\nsrv = \"_api._tcp.service.consul\"\n[[listener.backend_set]]\ndns = \"api.internal:8443\"\nweight = 3\n";

#[test]
fn backend_sets_and_the_resolver_are_typed() {
    let c = parse(Path::new("t.toml"), SETS).unwrap();
    assert_eq!(
        c.resolver,
        ResolverConfig {
            servers: vec![
                "10.0.0.2:53".parse().unwrap(),
                "[2001:db8::2]:5353".parse().unwrap()
            ],
            timeout: Duration::from_millis(300),
            nxdomain_after: 5,
        }
    );
    let l = &c.pools[0];
    assert!(
        l.backends.is_empty(),
        "sets are asked after validation, not during it"
    );
    assert_eq!(
        l.backend_sets,
        vec![
            BackendSet {
                name: "_api._tcp.service.consul".into(),
                query: SetQuery::Srv("_api._tcp.service.consul".into()),
                weight: 1,
                allow: None,
                max_backends: BackendSet::DEFAULT_MAX_BACKENDS,
            },
            BackendSet {
                name: "api.internal:8443".into(),
                query: SetQuery::Host {
                    host: "api.internal".into(),
                    port: 8443
                },
                weight: 3,
                allow: None,
                max_backends: BackendSet::DEFAULT_MAX_BACKENDS,
            },
        ]
    );
    let plain = parse(Path::new("t.toml"), GOOD).unwrap();
    assert_eq!(plain.resolver, ResolverConfig::default());
}

#[test]
fn bad_backend_sets_name_their_key() {
    for (replace, by, key, says) in [
        (
            "srv = \"_api._tcp.service.consul\"\n",
            "",
            "listener[0].backend_set[0]",
            "exactly one of",
        ),
        (
            "srv = \"_api._tcp.service.consul\"\n",
            "srv = \"a\"\ndns = \"b:1\"\n",
            "listener[0].backend_set[0]",
            "exactly one of",
        ),
        (
            "srv = \"_api._tcp.service.consul\"",
            "srv = \"a b\"",
            "listener[0].backend_set[0].srv",
            "not a DNS name",
        ),
        (
            "srv = \"_api._tcp.service.consul\"",
            "srv = \"_a._tcp.x\"\nweight = 2",
            "listener[0].backend_set[0].weight",
            "SRV record",
        ),
        (
            "dns = \"api.internal:8443\"",
            "dns = \"api.internal\"",
            "listener[0].backend_set[1].dns",
            "host.name:port",
        ),
        (
            "dns = \"api.internal:8443\"",
            "dns = \"api.internal:0\"",
            "listener[0].backend_set[1].dns",
            "host.name:port",
        ),
        (
            "weight = 3",
            "weight = 0",
            "listener[0].backend_set[1].weight",
            "",
        ),
        (
            "dns = \"api.internal:8443\"",
            "dns = \"api.internal:8443\"\nport = 1",
            "listener[0].backend_set[1].port",
            "unknown key",
        ),
        (
            "dns = \"api.internal:8443\"\nweight = 3",
            "srv = \"_api._tcp.service.consul\"",
            "listener[0].backend_set[1]",
            "asked twice",
        ),
        (
            "\"10.0.0.2\"",
            "\"ns1.internal\"",
            "resolver.servers[0]",
            "not a DNS server address",
        ),
        (
            "nxdomain_after = 5",
            "nxdomain_after = 0",
            "resolver.nxdomain_after",
            "",
        ),
        (
            "timeout = \"300ms\"",
            "timeout = \"soon\"",
            "resolver.timeout",
            "",
        ),
    ] {
        assert!(SETS.contains(replace), "{replace}");
        let e = err(&SETS.replacen(replace, by, 1));
        assert_eq!(e.key, key, "{by}: {}", e.message);
        assert!(e.message.contains(says), "{by}: {}", e.message);
        assert!(e.line > 0);
    }
}

#[test]
fn backend_limits_and_the_queue_keys() {
    let text = with(
        "id = \"app-1\"\n",
        "id = \"app-1\"\nmax_connections = 100\nmax_queue = 50\n",
    )
    .replace(
        "forward = \"splice\"\n",
        "forward = \"splice\"\nqueue_timeout = \"2s\"\nqueue_overflow = \"next\"\n",
    );
    let c = parse(Path::new("t.toml"), &text).unwrap();
    let b = &c.pools[0].backends;
    assert_eq!(
        (b[0].limits.max_connections, b[0].limits.max_queue),
        (100, 50)
    );
    assert_eq!(b[1].limits, crate::balance::Limits::default());
    let l = &c.listeners[0];
    assert_eq!(l.queue.timeout, Duration::from_secs(2));
    assert_eq!(l.queue.overflow, QueueOverflow::Next);
    let d = parse(Path::new("t.toml"), GOOD).unwrap();
    assert_eq!(d.listeners[0].queue.timeout, Tuning::DEFAULT_QUEUE_TIMEOUT);
    assert_eq!(d.listeners[0].queue.overflow, QueueOverflow::Close);
}

#[test]
fn bad_limits_and_queue_keys_name_their_key() {
    for (text, key, says) in [
        (
            with("id = \"app-1\"\n", "id = \"app-1\"\nmax_queue = 5\n"),
            "listener[0].backend[0].max_queue",
            "needs `max_connections`",
        ),
        (
            with("id = \"app-1\"\n", "id = \"app-1\"\nmax_connections = 0\n"),
            "listener[0].backend[0].max_connections",
            "from 1 to",
        ),
        (
            with("retries = 1\n", "retries = 1\nqueue_timeout = \"2h\"\n"),
            "listener[0].queue_timeout",
            "from 1ms to 1h",
        ),
        (
            with("protocol = \"tcp\"", "protocol = \"udp\"\nqueue_timeout = \"1s\"")
                .replace("connect_timeout = \"250ms\"\nidle_timeout = \"1m\"\nretries = 1\nmax_connections = 5\nforward = \"splice\"\n", ""),
            "listener[0].queue_timeout",
            "applies to tcp listeners only",
        ),
    ] {
        let e = err(&text);
        assert_eq!(e.key, key, "{e:?}");
        assert!(e.message.contains(says), "{e:?}");
    }
}

#[test]
fn a_cluster_is_typed() {
    let text = format!(
        "[cluster]\npeers = [\"10.0.0.11\", \" 10.0.0.12\", \"10.0.0.13\"]\ninterfaces = [\"eth0\"]\n{}",
        GOOD.replacen("workers = 2\n", "", 1)
    );
    let c = parse(Path::new("t.toml"), &text).unwrap();
    assert_eq!(
        c.cluster,
        Some(ClusterConfig {
            peers: vec![
                "10.0.0.11".parse().unwrap(),
                "10.0.0.12".parse().unwrap(),
                "10.0.0.13".parse().unwrap()
            ],
            interfaces: vec!["eth0".into()],
            port: ClusterConfig::DEFAULT_PORT,
        })
    );
    assert!(
        c.summary().contains("cluster of 3 nodes"),
        "{}",
        c.summary()
    );
    assert_eq!(parse(Path::new("t.toml"), GOOD).unwrap().cluster, None);
}

#[test]
fn a_bad_cluster_names_its_key() {
    for (table, line, column, key, says) in [
        (
            "peers = [\"10.0.0.1\"]",
            2,
            9,
            "cluster.peers",
            "2 to 16 nodes",
        ),
        ("peers = []", 2, 9, "cluster.peers", "0 peer(s)"),
        (
            "peers = [\"10.0.0.1\", \"db-1\"]",
            2,
            22,
            "cluster.peers[1]",
            "not an IP address",
        ),
        (
            "peers = [\"10.0.0.1\", \"fd00::1\"]",
            2,
            22,
            "cluster.peers[1]",
            "IPv6",
        ),
        (
            "peers = [\"10.0.0.1\", \"10.0.0.1\"]",
            2,
            22,
            "cluster.peers[1]",
            "listed twice",
        ),
        (
            "peers = [\"10.0.0.1\", \"127.0.0.1\"]",
            2,
            22,
            "cluster.peers[1]",
            "cannot be a node's",
        ),
        (
            "peers = [\"10.0.0.1\", \"0.0.0.0\"]",
            2,
            22,
            "cluster.peers[1]",
            "cannot be a node's",
        ),
        (
            "peers = [\"10.0.0.1\", \"10.0.0.2\"]\ninterfaces = [\"a/b\"]",
            3,
            15,
            "cluster.interfaces[0]",
            "not a network interface",
        ),
        (
            "peer = [\"10.0.0.1\"]",
            2,
            1,
            "cluster.peer",
            "did you mean `peers`",
        ),
        (
            "peers = [\"10.0.0.1\", \"10.0.0.2\"]\nport = 0",
            3,
            8,
            "cluster.port",
            "1 to 65535",
        ),
    ] {
        let e = err(&format!(
            "[cluster]\n{table}\n{}",
            GOOD.replacen("workers = 2\n", "", 1)
        ));
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (line, column, key),
            "{table}: {e:?}"
        );
        assert!(e.message.contains(says), "{table}: {}", e.message);
    }
    let many: Vec<String> = (1..=17).map(|i| format!("\"10.0.0.{i}\"")).collect();
    let e = err(&format!(
        "[cluster]\npeers = [{}]\n{}",
        many.join(", "),
        GOOD.replacen("workers = 2\n", "", 1)
    ));
    assert!(e.message.contains("17 peer(s)"), "{}", e.message);
}

#[test]
fn udp_kernel_xdp_names_interfaces() {
    let c = parse(
        Path::new("t.toml"),
        &with(
            "workers = 2",
            "workers = 2\nudp_kernel_xdp = [\"eth0\", \"veth1\"]",
        ),
    )
    .unwrap();
    assert_eq!(c.udp_kernel_xdp, ["eth0", "veth1"]);
    assert!(parse(Path::new("t.toml"), GOOD)
        .unwrap()
        .udp_kernel_xdp
        .is_empty());
    for (list, says) in [
        (r#"["eth0", "a/b"]"#, "\"a/b\" is not an interface name"),
        (r#"["", "eth0"]"#, "\"\" is not an interface name"),
        (r#"["sixteen-bytes-xx"]"#, "is not an interface name"),
        (r#"["eth0", "eth0"]"#, "\"eth0\" is named twice"),
    ] {
        let e = err(&with(
            "workers = 2",
            &format!("workers = 2\nudp_kernel_xdp = {list}"),
        ));
        assert_eq!((e.key.as_str(), e.line), ("udp_kernel_xdp", 3), "{list}");
        assert!(e.message.contains(says), "{list}: {}", e.message);
    }
}
