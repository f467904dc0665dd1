//! Backends discovered in DNS (`[[listener.backend_set]]`), against a real DNS server
//! (unbound, installed by `.ci/run`) whose zone the tests change while traffic runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ringway::sys::signal::Signal;

use crate::util::*;

/// An unbound serving the static zone `svc.test.` on 127.0.0.53:PORT, changed by
/// rewriting its records and `unbound-control reload`.
struct Dns {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Dns {
    fn start(records: &[&str]) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port("127.0.0.53");
        let addr: SocketAddr = format!("127.0.0.53:{port}").parse().unwrap();
        write_conf(dir.path(), addr, records);
        let child = Command::new("unbound")
            .args(["-d", "-c"])
            .arg(dir.path().join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("unbound.log")).unwrap())
            .spawn()
            .expect("unbound (apt-get install unbound)");
        let dns = Dns { child, dir, addr };
        assert!(
            eventually(Duration::from_secs(10), || dns.control(&["status"])),
            "unbound did not start: {}",
            std::fs::read_to_string(dns.dir.path().join("unbound.log")).unwrap_or_default()
        );
        dns
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("unbound.conf")
    }

    fn control(&self, args: &[&str]) -> bool {
        Command::new("unbound-control")
            .arg("-c")
            .arg(self.conf())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Replaces the zone's records.
    fn set(&self, records: &[&str]) {
        write_conf(self.dir.path(), self.addr, records);
        assert!(self.control(&["reload"]), "unbound-control reload failed");
    }

    fn signal(&self, sig: Signal) {
        ringway::sys::signal::send(self.child.id(), sig).unwrap();
    }
}

/// unbound's config: the static zone `svc.test.` with `records`, a control socket.
fn write_conf(dir: &Path, addr: SocketAddr, records: &[&str]) {
    let d = dir.display();
    let data: String = records
        .iter()
        .map(|r| format!("  local-data: \"{r}\"\n"))
        .collect();
    let conf = format!(
        "server:\n  interface: {ip}@{port}\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  local-zone: \"svc.test.\" static\n{data}remote-control:\n  control-enable: yes\n  control-interface: \"{d}/control.sock\"\n  control-use-cert: no\n",
        ip = addr.ip(),
        port = addr.port(),
    );
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` named echo backends (`b1`..) on 127.0.0.21.. at one port (a `dns` set gives
/// one port), and that port. Retried: another test may take the port on one address
/// between finding it free and binding it.
fn backends_at_one_port(n: u8) -> (u16, Vec<Backend>) {
    let ips: Vec<String> = (1..=n).map(|i| format!("127.0.0.{}", 20 + i)).collect();
    (0..50)
        .find_map(|_| {
            let port = free_port_on(&ips.iter().map(String::as_str).collect::<Vec<_>>());
            let backends: std::io::Result<Vec<Backend>> = ips
                .iter()
                .enumerate()
                .map(|(i, ip)| {
                    Backend::try_named_echo(&format!("{ip}:{port}"), &format!("b{}", i + 1))
                })
                .collect();
            backends.ok().map(|b| (port, b))
        })
        .expect("no port free on every backend address in 50 tries")
}

fn a_records(ips: &[u8]) -> Vec<String> {
    ips.iter()
        .map(|i| format!("api.svc.test. 1 IN A 127.0.0.{}", 20 + i))
        .collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Synthetic client keys for `route`.
fn keys(n: u16) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| {
            format!("10.{}.{}.{}:{}", i % 7, i / 256, i % 256, 1024 + i)
                .parse()
                .unwrap()
        })
        .collect()
}

fn route_ids(config: &Path, clients: &[SocketAddr]) -> HashMap<SocketAddr, String> {
    let args = [
        "--listener".to_string(),
        "t".to_string(),
        "--ids".to_string(),
    ];
    route_with(config, &args, clients)
        .into_iter()
        .map(|(c, id)| (c.parse().unwrap(), id))
        .collect()
}

/// The same listener with the same backends written out as `[[listener.backend]]`s
/// (id `IP:PORT`): the ring model a discovered set must equal.
fn static_model(dir: &Path, listen: SocketAddr, ids: &[String]) -> PathBuf {
    let mut toml = format!("[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\n");
    for id in ids {
        toml.push_str(&format!(
            "[[listener.backend]]\naddress = \"{id}\"\nid = \"{id}\"\n"
        ));
    }
    let path = dir.join(format!("model-{}.toml", ids.len()));
    std::fs::write(&path, toml).unwrap();
    path
}

fn assert_same(got: &HashMap<SocketAddr, String>, model: &HashMap<SocketAddr, String>) {
    let differ = got
        .iter()
        .filter(|(k, v)| model.get(*k) != Some(*v))
        .count();
    assert_eq!(
        differ,
        0,
        "{differ} of {} keys differ from the model",
        got.len()
    );
}

fn set_ids(admin: SocketAddr) -> Vec<String> {
    let st = status(admin);
    let mut ids: Vec<String> = st["listeners"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Waits until the listener's backends are `want`, every one of them up: a
/// discovered backend takes traffic once its first check passes.
fn wait_for_ids(rw: &Ringway, admin: SocketAddr, want: &[String]) {
    let mut want = want.to_vec();
    want.sort();
    let all_up = || {
        status(admin)["listeners"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["state"] == "up")
    };
    assert!(
        eventually(Duration::from_secs(10), || set_ids(admin) == want
            && all_up()),
        "backends {:?}, want {want:?}, all up: {}; log:\n{}",
        set_ids(admin),
        all_up(),
        rw.log()
    );
}

/// Every connection lands where `route` (which asks DNS the same way) says.
fn assert_traffic_follows_route(rw: &Ringway, listen: SocketAddr, n: usize) {
    let seen = connect_many(listen, n);
    let names: HashMap<String, String> = (1..=4)
        .map(|i| (format!("127.0.0.{}", 20 + i), format!("b{i}")))
        .collect();
    let routed = route_ids(&rw.config, &seen.iter().map(|s| s.0).collect::<Vec<_>>());
    for (client, name) in &seen {
        let id = &routed[client];
        let ip = id.rsplit_once(':').unwrap().0;
        assert_eq!(&names[ip], name, "{client} reached {name}, route says {id}");
    }
}

#[test]
#[ignore = "needs unbound (apt-get install unbound)"]
fn a_dns_set_follows_the_zone_and_moves_only_the_keys_it_must() {
    let (port, _backends) = backends_at_one_port(4);
    let dns = Dns::start(&refs(&a_records(&[1, 2, 3])));
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let toml = format!(
        "workers = 2\nresolve_interval = \"1s\"\n{}[resolver]\nservers = [\"{}\"]\ntimeout = \"500ms\"\n\n[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\n[[listener.backend_set]]\ndns = \"api.svc.test:{port}\"\n",
        ops_tables(metrics, admin, None),
        dns.addr
    );
    let rw = Ringway::start(&toml, &[listen]);
    let id = |i: u8| format!("127.0.0.{}:{port}", 20 + i);
    let three: Vec<String> = (1..=3).map(id).collect();
    wait_for_ids(&rw, admin, &three);
    let st = status(admin);
    assert_eq!(
        st["listeners"][0]["backends"][0]["set"],
        format!("api.svc.test:{port}")
    );
    assert_eq!(st["listeners"][0]["backend_sets"][0]["kind"], "dns");
    let table = String::from_utf8(ctl(admin, None, &["status"]).stdout).unwrap();
    assert!(
        table.contains(&format!("set api.svc.test:{port}")),
        "{table}"
    );
    assert_traffic_follows_route(&rw, listen, 200);

    // The discovered ring is the ring of the same ids written in a config.
    let k = keys(3000);
    let before = route_ids(&rw.config, &k);
    assert_same(
        &before,
        &route_ids(&static_model(rw.dir.path(), listen, &three), &k),
    );

    // An address added: only the keys the new backend owns move, all to it, about
    // its share of the ring.
    dns.set(&refs(&a_records(&[1, 2, 3, 4])));
    let four: Vec<String> = (1..=4).map(id).collect();
    wait_for_ids(&rw, admin, &four);
    let after = route_ids(&rw.config, &k);
    assert_same(
        &after,
        &route_ids(&static_model(rw.dir.path(), listen, &four), &k),
    );
    let moved: Vec<_> = k.iter().filter(|c| before[c] != after[c]).collect();
    assert!(
        moved.iter().all(|c| after[c] == id(4)),
        "a key moved between old backends"
    );
    let owned = k.iter().filter(|c| after[c] == id(4)).count();
    assert_eq!(
        moved.len(),
        owned,
        "every key the new backend owns came to it"
    );
    let ratio = moved.len() as f64 / k.len() as f64;
    assert!(
        (0.15..0.35).contains(&ratio),
        "moved {ratio:.3}, about 1/4 expected"
    );
    assert_traffic_follows_route(&rw, listen, 200);

    // An address removed: only its keys move.
    dns.set(&refs(&a_records(&[1, 3, 4])));
    wait_for_ids(&rw, admin, &[id(1), id(3), id(4)]);
    let last = route_ids(&rw.config, &k);
    for c in &k {
        if after[c] != id(2) {
            assert_eq!(after[c], last[c], "{c} moved though its backend stayed");
        }
    }
    assert_traffic_follows_route(&rw, listen, 200);
    assert_eq!(
        sample(
            &scrape(metrics),
            "ringway_backend_set_backends",
            &[
                ("listener", "t"),
                ("pool", "t"),
                ("set", &format!("api.svc.test:{port}"))
            ]
        ),
        Some(3.0)
    );
}

#[test]
#[ignore = "needs unbound (apt-get install unbound)"]
fn an_srv_set_takes_targets_ports_and_weights_from_its_records() {
    let (p1, p2) = (free_port("127.0.0.21"), free_port("127.0.0.22"));
    let _b1 = Backend::named_echo(&format!("127.0.0.21:{p1}"), "b1");
    let _b2 = Backend::named_echo(&format!("127.0.0.22:{p2}"), "b2");
    let _b3 = Backend::named_echo(&format!("127.0.0.23:{p1}"), "b3");
    let srv = |w1: u16, w2: u16, extra: &str| {
        let mut r = vec![
            format!("_api._tcp.svc.test. 1 IN SRV 0 {w1} {p1} one.svc.test."),
            format!("_api._tcp.svc.test. 1 IN SRV 0 {w2} {p2} two.svc.test."),
            // A standby group: never used while priority 0 has targets.
            format!("_api._tcp.svc.test. 1 IN SRV 10 1 {p1} three.svc.test."),
            "one.svc.test. 1 IN A 127.0.0.21".to_string(),
            "two.svc.test. 1 IN A 127.0.0.22".to_string(),
            "three.svc.test. 1 IN A 127.0.0.23".to_string(),
        ];
        if !extra.is_empty() {
            r.push(extra.to_string());
        }
        r
    };
    let dns = Dns::start(&refs(&srv(30, 10, "")));
    let (listen, admin) = (free_addr(), free_addr());
    let toml = format!(
        "workers = 2\nresolve_interval = \"1s\"\n[admin]\nlisten = \"{admin}\"\n[resolver]\nservers = [\"{}\"]\n\n[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\n[[listener.backend_set]]\nsrv = \"_api._tcp.svc.test\"\n",
        dns.addr
    );
    let rw = Ringway::start(&toml, &[listen]);
    let (one, two) = (format!("127.0.0.21:{p1}"), format!("127.0.0.22:{p2}"));
    wait_for_ids(&rw, admin, &[one.clone(), two.clone()]);
    let weights = |admin| -> HashMap<String, u64> {
        status(admin)["listeners"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["id"].as_str().unwrap().to_string(),
                    b["weight"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(weights(admin)[&one], 30);
    assert_eq!(weights(admin)[&two], 10);
    // The weights show in the spread: 3 to 1.
    let k = keys(4000);
    let routed = route_ids(&rw.config, &k);
    let share = routed.values().filter(|id| **id == one).count() as f64 / k.len() as f64;
    assert!(
        (0.65..0.85).contains(&share),
        "weight 30 of 40 owns {share:.3}"
    );
    let seen = connect_many(listen, 100);
    let routed = route_ids(&rw.config, &seen.iter().map(|s| s.0).collect::<Vec<_>>());
    for (c, name) in &seen {
        let want = if routed[c] == one { "b1" } else { "b2" };
        assert_eq!(name, want, "{c}");
    }
    // A weight changed in DNS is a weight changed in the ring.
    dns.set(&refs(&srv(10, 10, "")));
    assert!(
        eventually(Duration::from_secs(10), || weights(admin)[&one] == 10),
        "{}",
        rw.log()
    );

    // Drained by its id like any backend, and still drained after the next rounds.
    let out = ctl(admin, None, &["drain", "t", &one]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = |id: &str| -> String {
        status(admin)["listeners"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .map(|b| b["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(state(&one), "draining");
    assert!(connect_many(listen, 30)
        .iter()
        .all(|(_, name)| name == "b2"));
    // Health-checked like any backend: b2's server stops, b2 goes down.
    _b2.stop();
    assert!(
        eventually(Duration::from_secs(15), || state(&two) == "down"),
        "{}",
        rw.log()
    );
}

#[test]
#[ignore = "needs unbound (apt-get install unbound)"]
fn dns_trouble_keeps_the_last_good_set_and_nxdomain_empties_it_after_n_answers() {
    let (port, _backends) = backends_at_one_port(2);
    let dns = Dns::start(&refs(&a_records(&[1, 2])));
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let set = format!("api.svc.test:{port}");
    let toml = format!(
        "workers = 2\nresolve_interval = \"1s\"\n{}[resolver]\nservers = [\"{}\"]\ntimeout = \"200ms\"\nnxdomain_after = 3\n\n[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\n[[listener.backend_set]]\ndns = \"{set}\"\n",
        ops_tables(metrics, admin, None),
        dns.addr
    );
    let rw = Ringway::start(&toml, &[listen]);
    let two: Vec<String> = (1..=2)
        .map(|i| format!("127.0.0.{}:{port}", 20 + i))
        .collect();
    wait_for_ids(&rw, admin, &two);
    let errors = || {
        sample(
            &scrape(metrics),
            "ringway_resolver_errors_total",
            &[("listener", "t"), ("pool", "t"), ("set", &set)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(errors(), 0.0);

    // The DNS server hangs: lookups time out, the set stays, traffic goes on, and a
    // reload (whose own lookup fails too) keeps it as well.
    dns.signal(Signal::Stop);
    assert!(
        eventually(Duration::from_secs(10), || errors() >= 2.0),
        "{}",
        rw.log()
    );
    assert_eq!(set_ids(admin), two);
    assert_eq!(connect_many(listen, 20).len(), 20);
    rw.signal(Signal::Hup);
    assert!(
        eventually(Duration::from_secs(10), || log_count(&rw, "reloaded") == 1),
        "{}",
        rw.log()
    );
    assert_eq!(set_ids(admin), two);
    assert_eq!(
        log_count(&rw, "backend set lookup failed"),
        1,
        "logged once: {}",
        rw.log()
    );
    dns.signal(Signal::Cont);
    assert!(
        eventually(Duration::from_secs(10), || log_count(
            &rw,
            "backend set answers again"
        ) >= 1),
        "{}",
        rw.log()
    );

    // The name is removed: kept for two NXDOMAINs, emptied at the third.
    dns.set(&["other.svc.test. 1 IN A 127.0.0.99"]);
    assert!(
        eventually(Duration::from_secs(15), || set_ids(admin).is_empty()),
        "{}",
        rw.log()
    );
    let log = rw.log();
    assert_eq!(
        log_count(&rw, "does not exist (NXDOMAIN); keeping its 2 backend(s)"),
        1,
        "{log}"
    );
    assert_eq!(
        log_count(
            &rw,
            "in 3 answers in a row (NXDOMAIN): its backends are removed"
        ),
        1,
        "{log}"
    );
    assert_eq!(
        status(admin)["listeners"][0]["backend_sets"][0]["backends"],
        0
    );
    // With no backend, a client is closed, not hung.
    let (_, greeting) = connect_named(listen);
    assert_eq!(greeting, "");
    // And back.
    dns.set(&refs(&a_records(&[2])));
    wait_for_ids(&rw, admin, &two[1..]);
    assert_eq!(
        connect_many(listen, 10)
            .iter()
            .filter(|s| s.1 == "b2")
            .count(),
        10
    );
}

/// Issue 18, defect 3: an answer is data from outside. Addresses ringway itself
/// listens on (here the admin API: through it any data-plane client could call the
/// admin API), port 0, multicast addresses, addresses outside the set's `allow`, and
/// addresses past `max_backends` are left out, counted and logged.
#[test]
#[ignore = "needs unbound (apt-get install unbound)"]
fn answers_lose_what_may_not_be_a_backend() {
    let (port, _backends) = backends_at_one_port(3);
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let srv = |prio_target: &[(u16, &str)]| -> Vec<String> {
        prio_target
            .iter()
            .map(|(p, t)| format!("_api._tcp.svc.test. 1 IN SRV 0 1 {p} {t}.svc.test."))
            .collect()
    };
    let mut records = srv(&[
        (port, "one"),
        (port, "two"),
        (port, "three"),
        (admin.port(), "admin"),
        (0, "zero"),
        (port, "mc"),
        (port, "far"),
    ]);
    for (name, ip) in [
        ("one", "127.0.0.21"),
        ("two", "127.0.0.22"),
        ("three", "127.0.0.23"),
        ("admin", "127.0.0.1"),
        ("zero", "127.0.0.25"),
        ("mc", "224.0.0.7"),
        ("far", "127.0.9.9"),
    ] {
        records.push(format!("{name}.svc.test. 1 IN A {ip}"));
    }
    let dns = Dns::start(&refs(&records));
    let set = "_api._tcp.svc.test";
    let toml = format!(
        "workers = 2\nresolve_interval = \"1s\"\n{}[resolver]\nservers = [\"{}\"]\n\n[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\n[[listener.backend_set]]\nsrv = \"{set}\"\nallow = [\"127.0.0.0/24\"]\nmax_backends = 2\n",
        ops_tables(metrics, admin, None),
        dns.addr
    );
    let rw = Ringway::start(&toml, &[listen, admin]);
    // Of the three good ones, the first two in address order.
    let (one, two) = (format!("127.0.0.21:{port}"), format!("127.0.0.22:{port}"));
    wait_for_ids(&rw, admin, &[one, two]);
    assert!(
        connect_many(listen, 50)
            .iter()
            .all(|(_, n)| n == "b1" || n == "b2"),
        "served by something else"
    );
    let refused = || {
        sample(
            &scrape(metrics),
            "ringway_backend_set_refused_total",
            &[("listener", "t"), ("pool", "t"), ("set", set)],
        )
        .unwrap_or(0.0)
    };
    // Five left out per answer: admin, port 0, multicast, outside allow, past max.
    assert!(refused() >= 5.0, "{}", refused());
    assert_eq!(
        status(admin)["listeners"][0]["backend_sets"][0]["refused"]
            .as_u64()
            .map(|n| n >= 5),
        Some(true)
    );
    let log = rw.log();
    for why in [
        "ringway's own address",
        "port 0",
        "multicast address",
        "outside `allow`",
        "past `max_backends`",
    ] {
        assert!(log.contains(why), "the log does not say {why}:\n{log}");
    }
    // Logged when what is left out changes, not for every answer (rounds every second).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(log_count(&rw, "5 left out"), 1, "{}", rw.log());
}

/// Issue 18, defect 1: a discovered backend takes traffic after its first passing
/// check, not at its first DNS answer (a scaled-up service is not ready yet): one that
/// never answers never gets a connection, and `/status` says what it waits for.
#[test]
#[ignore = "needs unbound (apt-get install unbound)"]
fn a_discovered_backend_waits_for_its_first_passing_check() {
    let (port, _backends) = backends_at_one_port(2);
    // 127.0.0.23 is in the answer, but nothing listens there.
    let dns = Dns::start(&refs(&a_records(&[1, 2, 3])));
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let toml = format!(
        "workers = 2\nresolve_interval = \"1s\"\n{}[resolver]\nservers = [\"{}\"]\n\n[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\n[[listener.backend_set]]\ndns = \"api.svc.test:{port}\"\n[listener.health]\n{FAST_HEALTH}\n",
        ops_tables(metrics, admin, None),
        dns.addr
    );
    let _rw = Ringway::start(&toml, &[listen, admin]);
    let dead = format!("127.0.0.23:{port}");
    let state = |id: &str| {
        let s = status(admin);
        let b = s["listeners"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned();
        b.map(|b| {
            (
                b["state"].as_str().unwrap_or("").to_string(),
                b["reason"].as_str().unwrap_or("").to_string(),
            )
        })
    };
    let live = [format!("127.0.0.21:{port}"), format!("127.0.0.22:{port}")];
    assert!(eventually(Duration::from_secs(10), || live
        .iter()
        .all(|id| state(id).is_some_and(|(s, _)| s == "up"))));
    let (s, why) = state(&dead).expect("in the set");
    assert_eq!(s, "down");
    assert!(why.contains("waiting for its first passing check"), "{why}");
    // Traffic from the start never went there: no connect was ever tried.
    assert_eq!(connect_many(listen, 300).len(), 300);
    assert_eq!(
        sample(
            &scrape(metrics),
            "ringway_backend_connect_errors_total",
            &[("listener", "t"), ("pool", "t"), ("backend", &dead)]
        ),
        Some(0.0)
    );
}

/// An upgrade while DNS does not answer: the new process starts with the set the old
/// one had (not empty, as a fresh start would be) and its backends up (not waiting
/// for a first check, as newly discovered ones do).
#[test]
#[ignore = "needs unbound (apt-get install unbound)"]
fn an_upgrade_while_dns_is_down_keeps_the_set() {
    let (port, _backends) = backends_at_one_port(2);
    let dns = Dns::start(&refs(&a_records(&[1, 2])));
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let toml = format!(
        "workers = 2\nresolve_interval = \"1s\"\n{}[resolver]\nservers = [\"{}\"]\ntimeout = \"200ms\"\n\n[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\n[[listener.backend_set]]\ndns = \"api.svc.test:{port}\"\n",
        ops_tables(metrics, admin, None),
        dns.addr
    );
    let rw = Ringway::start(&toml, &[listen]);
    let _serving = crate::upgrade::Serving(admin);
    let two: Vec<String> = (1..=2)
        .map(|i| format!("127.0.0.{}:{port}", 20 + i))
        .collect();
    wait_for_ids(&rw, admin, &two);
    dns.signal(Signal::Stop);
    let new = crate::upgrade::upgrade(admin, &rw);
    let first = crate::upgrade::status_of(admin, new);
    let backends = first["listeners"][0]["backends"].as_array().unwrap();
    let mut ids: Vec<&str> = backends.iter().map(|b| b["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, two, "{first}");
    assert!(backends.iter().all(|b| b["state"] == "up"), "{first}");
    assert_eq!(connect_many(listen, 20).len(), 20);
    dns.signal(Signal::Cont);
}
