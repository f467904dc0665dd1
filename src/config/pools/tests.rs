//! Pools and routes as `check` reads them: what loads, and every mistake named at its
//! place.

use std::path::Path;
use std::time::Duration;

use crate::config::{parse, Located, Protocol, RouteBy, Tuning};

fn err(text: &str) -> Located {
    match parse(Path::new("t.toml"), text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.located().expect("located error").clone(),
    }
}

/// Two TCP listeners sharing pool `api`; the second routes by name.
const SHARED: &str = r#"
[[pool]]
name = "api"
vnodes = 64
[[pool.backend]]
address = "127.0.0.1:9001"
id = "a1"
[[pool.backend]]
address = "127.0.0.1:9002"
[pool.health]
check = "tcp"
interval = "1s"

[[pool]]
name = "web"
[[pool.backend]]
address = "127.0.0.1:9101"

[[listener]]
name = "plain"
listen = "127.0.0.1:8080"
default_pool = "api"

[[listener]]
name = "tls"
listen = "127.0.0.1:8443"
route_by = "sni"
default_pool = "web"
[[listener.route]]
sni = ["API.example.", "*.api.example"]
pool = "api"
"#;

#[test]
fn pools_are_shared_and_routes_name_them() {
    let c = parse(Path::new("t.toml"), SHARED).unwrap();
    let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["api", "web"]);
    let api = c.pool("api").unwrap();
    assert_eq!(
        (api.owner.as_deref(), api.protocol, api.vnodes),
        (None, Protocol::Tcp, 64)
    );
    assert_eq!(api.backends[0].id, "a1");
    assert_eq!(api.health.interval, Duration::from_secs(1));
    let users: Vec<&str> = c.users_of("api").map(|l| l.name.as_str()).collect();
    assert_eq!(users, ["plain", "tls"]);
    let plain = &c.listeners[0].route;
    assert_eq!(plain.by, RouteBy::None);
    assert_eq!(plain.default_pool.as_deref(), Some("api"));
    let tls = &c.listeners[1].route;
    assert_eq!(tls.by, RouteBy::Sni);
    assert_eq!(tls.rules[0].names, ["api.example", "*.api.example"]);
    assert_eq!(tls.pools(), ["web", "api"]);
    // The hello may take as long as a first byte may (first_data_timeout).
    assert_eq!(tls.sni_timeout, Tuning::DEFAULT_FIRST_DATA_TIMEOUT);
    let s = c.summary();
    assert!(
        s.contains("plain tcp 127.0.0.1:8080 -> pool api: 2 backends"),
        "{s}"
    );
    assert!(
        s.contains(
            "tls tcp 127.0.0.1:8443 -> 1 route(s) by server name, else pool web: 1 backends"
        ),
        "{s}"
    );
}

#[test]
fn a_listener_with_routes_and_no_default_closes_the_rest() {
    let text = SHARED.replace("default_pool = \"web\"\n", "sni_timeout = \"2s\"\n");
    let c = parse(Path::new("t.toml"), &text).unwrap();
    let tls = &c.listeners[1].route;
    assert_eq!(tls.default_pool, None);
    assert_eq!(tls.sni_timeout, Duration::from_secs(2));
    assert!(c.summary().contains("else closed"), "{}", c.summary());
}

#[test]
fn a_listener_s_own_backends_are_its_default_pool() {
    let text = format!(
        "{SHARED}\n[[listener]]\nname = \"own\"\nlisten = \"127.0.0.1:8081\"\nroute_by = \"sni\"\n[[listener.route]]\nsni = [\"x.example\"]\npool = \"api\"\n[[listener.backend]]\naddress = \"127.0.0.1:9201\"\n"
    );
    let c = parse(Path::new("t.toml"), &text).unwrap();
    let own = c.pool("own").unwrap();
    assert_eq!(own.owner.as_deref(), Some("own"));
    assert_eq!(c.listeners[2].route.default_pool.as_deref(), Some("own"));
    assert_eq!(c.listeners[2].route.pools(), ["own", "api"]);
}

#[test]
fn a_udp_listener_waits_three_seconds_for_its_initials() {
    let text = "[[pool]]\nname = \"h3\"\n[[pool.backend]]\naddress = \"127.0.0.1:4433\"\n[[listener]]\nname = \"quic\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:443\"\nroute_by = \"sni\"\n[[listener.route]]\nsni = [\"a.example\"]\npool = \"h3\"\n";
    let c = parse(Path::new("t.toml"), text).unwrap();
    assert_eq!(c.pool("h3").unwrap().protocol, Protocol::Udp);
    assert_eq!(
        c.listeners[0].route.sni_timeout,
        Tuning::DEFAULT_UDP_SNI_TIMEOUT
    );
    // A UDP pool is checked as UDP listeners are: not at all by default.
    assert!(!c.pool("h3").unwrap().health.active());
}

/// Each mistake: the key and the words that name it.
#[test]
fn mistakes_are_named_at_their_place() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            SHARED.replace("default_pool = \"api\"", "default_pool = \"nope\""),
            "listener[0].default_pool",
            "no pool is called \"nope\" (pools: api, web)",
        ),
        (
            SHARED.replace("*.api.example\"]\npool = \"api\"", "*.api.example\"]\npool = \"apx\""),
            "listener[1].route[0].pool",
            "no pool is called \"apx\"",
        ),
        (
            SHARED.replace("name = \"web\"\n[[pool.backend]]", "name = \"api\"\n[[pool.backend]]"),
            "pool[1].name",
            "duplicate pool name \"api\" (also pool[0])",
        ),
        (
            SHARED.replace("route_by = \"sni\"\n", ""),
            "listener[1].route",
            "need `route_by = \"sni\"`",
        ),
        (
            SHARED.replace("sni = [\"API.example.\", \"*.api.example\"]", "sni = [\"a.example\", \"A.Example.\"]"),
            "listener[1].route[0].sni[1]",
            "\"a.example\" is also claimed by listener[1].route[0].sni[0]",
        ),
        (
            SHARED.replace("\"*.api.example\"", "\"api.*.example\""),
            "listener[1].route[0].sni[1]",
            "a wildcard is `*.` before a name",
        ),
        (
            SHARED.replace("sni = [\"API.example.\", \"*.api.example\"]", "sni = []"),
            "listener[1].route[0].sni",
            "empty",
        ),
        (
            SHARED.replace(
                "name = \"plain\"\nlisten = \"127.0.0.1:8080\"",
                "name = \"plain\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:8080\"",
            ),
            "pool[0].name",
            "a pool serves one protocol",
        ),
        (
            SHARED.replace(
                "default_pool = \"api\"",
                "default_pool = \"api\"\n[[listener.backend]]\naddress = \"127.0.0.1:1\"",
            ),
            "listener[0].default_pool",
            "has backends of its own",
        ),
        (
            SHARED.replace("default_pool = \"api\"", "default_pool = \"api\"\nvnodes = 10"),
            "listener[0].vnodes",
            "set it on the [[pool]] it routes to",
        ),
        (
            SHARED.replace("default_pool = \"api\"", "sni_timeout = \"1s\""),
            "listener[0].sni_timeout",
            "needs `route_by = \"sni\"`",
        ),
        (
            SHARED.replace("default_pool = \"api\"\n", ""),
            "listener[0].backend",
            "has no backends",
        ),
        (
            SHARED.replace("name = \"web\"\n[[pool.backend]]\naddress = \"127.0.0.1:9101\"\n", "name = \"web\"\n"),
            "pool[1].backend",
            "pool \"web\" has no backends",
        ),
        (
            format!("{SHARED}\n[[listener]]\nname = \"api\"\nlisten = \"127.0.0.1:9\"\n[[listener.backend]]\naddress = \"127.0.0.1:1\"\n"),
            "pool[0].name",
            "duplicate pool name \"api\" (also listener \"api\"'s own backends)",
        ),
        (
            format!("{SHARED}\n[[listener]]\nname = \"own\"\nlisten = \"127.0.0.1:9\"\n[[listener.backend]]\naddress = \"127.0.0.1:1\"\n").replace("default_pool = \"api\"", "default_pool = \"own\""),
            "listener[0].default_pool",
            "listener \"own\"'s own backends, not a [[pool]]",
        ),
        (
            SHARED.replace("id = \"a1\"", "id = \"a1\"\n[[pool.backend]]\naddress = \"127.0.0.1:9003\"\nid = \"a1\""),
            "pool[0].backend[1].id",
            "duplicate backend id \"a1\" (also pool[0].backend[0], line ",
        ),
        (
            SHARED.replace("address = \"127.0.0.1:9002\"", "address = \"127.0.0.1:8443\""),
            "pool[0].backend[1].address",
            "ringway's own address",
        ),
        (
            SHARED.replace("vnodes = 64", "vnodes = 64\nbalance = \"least-connections\"\nbalance_factor = 1.25"),
            "pool[0].balance_factor",
            "and this pool balances by least-connections",
        ),
        (
            SHARED.replace("vnodes = 64", "vnodes = 64\nbalance_factor = 1.0"),
            "pool[0].balance_factor",
            "expected a number over 1.0 and at most 100",
        ),
        (
            SHARED.replace("vnodes = 64", "vnodes = 64\nbalance = \"leastconn\""),
            "pool[0].balance",
            "least-connections",
        ),
        (
            SHARED.replace("default_pool = \"api\"", "default_pool = \"api\"\nbalance = \"round-robin\""),
            "listener[0].balance",
            "set it on the [[pool]] it routes to",
        ),
    ];
    for (text, key, words) in cases {
        let e = err(&text);
        assert_eq!(e.key, key, "{}", e.message);
        assert!(e.message.contains(words), "{key}: {}", e.message);
    }
}

#[test]
fn balance_modes_load_per_pool() {
    use crate::balance::{Balance, Mode};
    let text = SHARED
        .replace("vnodes = 64", "vnodes = 64\nbalance_factor = 1.5")
        .replace(
            "name = \"web\"",
            "name = \"web\"\nbalance = \"round-robin\"",
        );
    let c = parse(Path::new("t.toml"), &text).unwrap();
    assert_eq!(
        c.pool("api").unwrap().balance,
        Balance {
            mode: Mode::Ring,
            factor: Some(1.5)
        }
    );
    assert_eq!(c.pool("web").unwrap().balance.mode, Mode::RoundRobin);
    let summary = c.summary();
    assert!(
        summary.contains("pool api: 2 backends, ring bounded at 1.5x"),
        "{summary}"
    );
    assert!(
        summary.contains("pool web: 1 backends, round-robin"),
        "{summary}"
    );
    let plain = parse(Path::new("t.toml"), SHARED).unwrap();
    assert_eq!(plain.pool("api").unwrap().balance, Balance::default());
}

#[test]
fn an_unused_pool_loads_as_tcp() {
    let text = SHARED.replace("default_pool = \"web\"\n", "default_pool = \"api\"\n");
    let c = parse(Path::new("t.toml"), &text).unwrap();
    assert_eq!(c.users_of("web").count(), 0);
    assert_eq!(c.pool("web").unwrap().protocol, Protocol::Tcp);
}
