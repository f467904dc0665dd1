//! Where connections go: the hash contract's vectors, spread, `route` agreeing with
//! real connections, retries on refusal, source-ip hashing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringway::balance::hash::{flow_hash, vnode_hash, xxh3, HashMode};
use ringway::balance::{Backend as RingBackend, Snapshot};

use crate::util::*;

const VECTORS: &str = include_str!("fixtures/ring_vectors.tsv");

fn hex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every row of tests/fixtures/ring_vectors.tsv, produced by an independent Python
/// implementation (scripts/ring_vectors.py), holds for this implementation.
#[test]
fn hash_contract_vectors_hold() {
    let mut rings: HashMap<String, (u32, Vec<(String, u32)>)> = HashMap::new();
    let mut checked = 0;
    for line in VECTORS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "hash" => assert_eq!(format!("{:016x}", xxh3(&hex(f[1]))), f[2], "{line}"),
            "vnode" => assert_eq!(
                format!("{:016x}", vnode_hash(f[1], f[2].parse().unwrap())),
                f[3],
                "{line}"
            ),
            "ring" => {
                let members = f[3]
                    .split(';')
                    .map(|m| {
                        let (id, w) = m.rsplit_once('=').unwrap();
                        (id.to_string(), w.parse().unwrap())
                    })
                    .collect();
                rings.insert(f[1].to_string(), (f[2].parse().unwrap(), members));
            }
            "lookup" => {
                let (vnodes, members) = &rings[f[1]];
                let backends: Vec<RingBackend> = members
                    .iter()
                    .map(|(id, w)| RingBackend {
                        id: id.clone(),
                        addr: "127.0.0.1:1".parse().unwrap(),
                        addr_text: id.clone(),
                        weight: *w,
                        set: None,
                        backup: false,
                        limits: Default::default(),
                    })
                    .collect();
                let full = Snapshot::new(backends, *vnodes);
                let up = full
                    .backends()
                    .iter()
                    .map(|b| f[2] == "-" || !f[2].split(',').any(|d| d == b.id))
                    .collect();
                let s = full.with_up(up);
                let mode = if f[3] == "source-ip" {
                    HashMode::SourceIp
                } else {
                    HashMode::FiveTuple
                };
                let key = flow_hash(
                    mode,
                    f[4].parse().unwrap(),
                    f[5].parse().unwrap(),
                    f[6].parse().unwrap(),
                );
                assert_eq!(format!("{key:016x}"), f[7], "key of {line}");
                let got = s.pick(key).map_or("-", |i| s.backends()[i].id.as_str());
                assert_eq!(got, f[8], "{line}");
            }
            other => panic!("unknown vector kind {other}"),
        }
        checked += 1;
    }
    assert!(checked > 150, "only {checked} vectors");
}

/// The `route` command reproduces the vectors of the "three" ring (TCP, five-tuple).
#[test]
fn route_command_reproduces_the_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("r.toml");
    let mut toml = String::from("[[listener]]\nname = \"v\"\nlisten = \"127.0.0.1:8080\"\n");
    for p in 9001..=9003 {
        toml.push_str(&format!(
            "[[listener.backend]]\naddress = \"127.0.0.1:{p}\"\n"
        ));
    }
    std::fs::write(&cfg, toml).unwrap();
    let rows: Vec<Vec<&str>> = VECTORS
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| {
            f[0] == "lookup"
                && f[1] == "three"
                && f[3] == "five-tuple"
                && f[4] == "6"
                && f[6] == "127.0.0.1:8080"
        })
        .collect();
    assert!(rows.len() > 10);
    for down in ["-", "127.0.0.1:9002"] {
        let subset: Vec<&Vec<&str>> = rows.iter().filter(|f| f[2] == down).collect();
        let clients: Vec<SocketAddr> = subset.iter().map(|f| f[5].parse().unwrap()).collect();
        let downs: Vec<&str> = if down == "-" { vec![] } else { vec![down] };
        let out = route(&cfg, "v", &downs, &clients);
        for (f, (client, backend)) in subset.iter().zip(&out) {
            assert_eq!(client, f[5]);
            assert_eq!(backend, f[8], "route for {}", f[5]);
        }
    }
}

fn three_backends() -> (Vec<Backend3>, Vec<(SocketAddr, &'static str)>) {
    let names = ["alpha", "beta", "gamma"];
    let bs: Vec<Backend3> = names
        .iter()
        .map(|n| (Backend::named_echo("127.0.0.1:0", n), *n))
        .collect();
    let list = bs.iter().map(|(b, n)| (b.addr, *n)).collect();
    (bs, list)
}

type Backend3 = (Backend, &'static str);

#[test]
fn a_thousand_concurrent_connections_spread_and_route_agrees() {
    let (bs, list) = three_backends();
    let listen = free_addr();
    let rw = Ringway::start(&config(listen, &list, ""), &[listen]);
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let (s, name) = connect_named(listen);
        conns.push((s.local_addr().unwrap(), name, s));
    }
    // All 1,000 are open at once; each still works.
    for (i, (_, _, s)) in conns.iter_mut().enumerate() {
        let msg = format!("{i:04}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, msg.as_bytes());
    }
    let mut per: HashMap<&str, usize> = HashMap::new();
    for (_, name, _) in &conns {
        *per.entry(name.as_str()).or_default() += 1;
    }
    for (_, n) in &bs {
        let got = per.get(n).copied().unwrap_or(0);
        assert!(got > 200, "backend {n} got {got} of 1000: {per:?}");
    }
    let by_addr: HashMap<String, &str> = bs.iter().map(|(b, n)| (b.addr.to_string(), *n)).collect();
    let clients: Vec<SocketAddr> = conns.iter().map(|c| c.0).collect();
    let routed = rw.route("t", &[], &clients);
    assert_eq!(routed.len(), 1000);
    for ((client, name, _), (rc, rb)) in conns.iter().zip(&routed) {
        assert_eq!(&client.to_string(), rc);
        assert_eq!(by_addr[rb], name.as_str(), "route disagrees for {client}");
    }
    // `--ids` names the same backends by id.
    let args = ["--listener", "t", "--ids"].map(String::from);
    let by_id = route_with(&rw.config, &args, &clients);
    for ((client, name, _), (rc, id)) in conns.iter().zip(&by_id) {
        assert_eq!(&client.to_string(), rc);
        assert_eq!(id, name, "route --ids disagrees for {client}");
    }
}

#[test]
fn a_refused_connect_is_retried_on_the_next_backend_clockwise() {
    let (bs, mut list) = three_backends();
    let dead = free_addr(); // nothing listens here: connect is refused
    list.push((dead, "dead"));
    let listen = free_addr();
    let rw = Ringway::start(&config(listen, &list, "retries = 2"), &[listen]);
    let mut seen = Vec::new();
    for _ in 0..200 {
        let (s, name) = connect_named(listen);
        assert!(!name.is_empty(), "every client is served");
        seen.push((s.local_addr().unwrap(), name));
    }
    let clients: Vec<SocketAddr> = seen.iter().map(|c| c.0).collect();
    let all_up = rw.route("t", &[], &clients);
    let without_dead = rw.route("t", &["dead"], &clients);
    let by_addr: HashMap<String, &str> = bs.iter().map(|(b, n)| (b.addr.to_string(), *n)).collect();
    let mut retried = 0;
    for (i, (_, name)) in seen.iter().enumerate() {
        if all_up[i].1 == dead.to_string() {
            retried += 1;
        }
        assert_eq!(
            by_addr[&without_dead[i].1],
            name.as_str(),
            "retry went elsewhere than the next backend"
        );
    }
    assert!(
        retried > 10,
        "the dead backend owned only {retried} of 200 clients"
    );
}

#[test]
fn when_every_backend_refuses_the_client_sees_a_closed_connection() {
    let listen = free_addr();
    let list = [(free_addr(), "d1"), (free_addr(), "d2")];
    let _rw = Ringway::start(&config(listen, &list, "retries = 5"), &[listen]);
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 8];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("got {n} bytes from nowhere"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn source_ip_hash_sends_one_client_ip_to_one_backend() {
    let (bs, list) = three_backends();
    let listen = free_addr();
    let _rw = Ringway::start(&config(listen, &list, "hash = \"source-ip\""), &[listen]);
    let mut distinct = std::collections::HashSet::new();
    for last in 2..12u8 {
        let src = std::net::Ipv4Addr::new(127, 0, 0, last);
        let mut names = std::collections::HashSet::new();
        for _ in 0..10 {
            names.insert(read_line(&connect_from(src, listen)));
        }
        assert_eq!(
            names.len(),
            1,
            "client 127.0.0.{last} was spread over {names:?}"
        );
        distinct.extend(names);
    }
    assert!(
        distinct.len() >= 2,
        "10 client IPs all went to {distinct:?}"
    );
    drop(bs);
}

#[test]
fn a_connect_that_hangs_times_out_and_goes_to_the_next_backend() {
    // A backend whose accept queue is full: the kernel drops further SYNs, so a connect
    // to it neither succeeds nor fails until connect_timeout (loopback only).
    let stuck = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stuck
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    stuck.listen(0).unwrap();
    let stuck_addr = stuck.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&stuck_addr.into());
        fillers.push(s);
    }
    // Full once a new connect neither succeeds nor fails.
    assert!(eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect_timeout(&stuck_addr, Duration::from_millis(100)).is_err()
    }));
    let good = Backend::named_echo("127.0.0.1:0", "good");
    let listen = free_addr();
    let toml = config(listen, &[(stuck_addr, "stuck"), (good.addr, "good")], "")
        .replace("connect_timeout = \"1s\"", "connect_timeout = \"300ms\"")
        // Passive checks would take the stuck backend out after its first timeouts;
        // this test is about every connect to it waiting for connect_timeout.
        + "\n[listener.health]\ncheck = \"none\"\npassive = false\n";
    let rw = Ringway::start(&toml, &[listen]);
    let mut seen = Vec::new();
    for _ in 0..30 {
        let t = std::time::Instant::now();
        let (s, name) = connect_named(listen);
        assert_eq!(
            name, "good",
            "every client is served by the backend that answers"
        );
        seen.push((s.local_addr().unwrap(), t.elapsed()));
    }
    let clients: Vec<SocketAddr> = seen.iter().map(|c| c.0).collect();
    let routed = rw.route("t", &[], &clients);
    let mut timed_out = 0;
    for ((_, took), (_, backend)) in seen.iter().zip(&routed) {
        if backend == &stuck_addr.to_string() {
            timed_out += 1;
            assert!(
                *took >= Duration::from_millis(280),
                "a hung connect was given up after {took:?}"
            );
        }
    }
    assert!(
        timed_out > 3,
        "only {timed_out} of 30 clients hashed to the stuck backend"
    );
    drop(fillers);
}

/// `backup = true`: a backup gets no new connection while another backend takes them
/// (and `route` agrees), gets every new one once none does (here: both disabled by
/// hand, as a failed check would), and none again once one is back; its open
/// connections stay.
#[test]
fn a_backup_serves_only_while_no_other_backend_does() {
    let (_backends, list) = named_backends(&["a", "b", "z"]);
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let toml = with_tables(
        &config(listen, &list, "").replace("id = \"z\"\n", "id = \"z\"\nbackup = true\n"),
        &ops_tables(metrics, admin, None),
    );
    let rw = Ringway::start(&toml, &[listen, admin]);
    let clients: Vec<SocketAddr> = (0..64)
        .map(|i| format!("10.0.0.{i}:{}", 40000 + i).parse().unwrap())
        .collect();
    let routed = route(&rw.config, "t", &[], &clients);
    let z = list[2].0.to_string();
    assert!(
        routed.iter().all(|(_, b)| *b != z && !b.is_empty()),
        "route sends a client to the backup: {routed:?}"
    );
    let firsts = connect_many(listen, 60);
    assert!(
        firsts.iter().all(|(_, n)| n != "z"),
        "the backup took a connection while a and b serve"
    );
    assert!(
        status(admin)["listeners"][0]["backends"][2]["backup"] == true,
        "/status does not say z is a backup"
    );
    for id in ["a", "b"] {
        let r = http(
            "POST",
            admin,
            &format!("/listeners/t/backends/{id}/disable"),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let held = connect_named(listen);
    assert_eq!(held.1, "z", "with a and b out, the backup serves");
    assert!(connect_many(listen, 30).iter().all(|(_, n)| n == "z"));
    let r = http("POST", admin, "/listeners/t/backends/a/enable", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        connect_many(listen, 30).iter().all(|(_, n)| n == "a"),
        "a is back: new connections leave the backup"
    );
    // The backup's open connection stays.
    let (mut s, _) = held;
    s.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
}

const MAGLEV: &str = include_str!("fixtures/maglev_vectors.tsv");

/// Every row of tests/fixtures/maglev_vectors.tsv, produced from docs/hashing.md by an
/// independent Python implementation (scripts/maglev_vectors.py), holds: table sizes,
/// permutations, lookups and every entry's owner.
#[test]
fn maglev_contract_vectors_hold() {
    use ringway::balance::maglev::{permutation, table_size, Maglev};
    let mut tables: HashMap<String, (Vec<RingBackend>, Maglev)> = HashMap::new();
    let mut checked = 0;
    for line in MAGLEV
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "size" => assert_eq!(
                table_size(f[1].parse().unwrap()).to_string(),
                f[2],
                "{line}"
            ),
            "perm" => {
                let (o, s) = permutation(f[1], f[2].parse().unwrap());
                assert_eq!(
                    (o.to_string(), s.to_string()),
                    (f[3].into(), f[4].into()),
                    "{line}"
                );
            }
            "table" => {
                let backends: Vec<RingBackend> = f[3]
                    .split(';')
                    .map(|m| {
                        let (id, w) = m.rsplit_once('=').unwrap();
                        RingBackend {
                            id: id.to_string(),
                            addr: "127.0.0.1:1".parse().unwrap(),
                            addr_text: "127.0.0.1:1".into(),
                            weight: w.parse().unwrap(),
                            set: None,
                            backup: false,
                            limits: Default::default(),
                        }
                    })
                    .collect();
                let live: Vec<bool> = backends
                    .iter()
                    .map(|b| f[4] == "*" || f[4].split(',').any(|l| l == b.id))
                    .collect();
                let t = Maglev::build(&backends, &live, f[2].parse().unwrap());
                tables.insert(f[1].to_string(), (backends, t));
            }
            "lookup" => {
                let (backends, t) = &tables[f[1]];
                let key = u64::from_str_radix(f[2], 16).unwrap();
                let got = t.lookup(key).map_or("-", |b| backends[b].id.as_str());
                assert_eq!(got, f[3], "{line}");
            }
            "count" => {
                let (backends, t) = &tables[f[1]];
                let mut count = vec![0usize; backends.len()];
                for k in 0..t.len() as u64 {
                    count[t.lookup(k).unwrap()] += 1;
                }
                let got: Vec<String> = backends
                    .iter()
                    .zip(&count)
                    .map(|(b, c)| format!("{}={c}", b.id))
                    .collect();
                assert_eq!(got.join(";"), f[2], "{line}");
            }
            other => panic!("unknown row {other}"),
        }
        checked += 1;
    }
    assert!(checked > 170, "only {checked} rows");
}

/// `balance = "maglev"`: connections land where `route` says, with a backend down too.
#[test]
fn maglev_connections_land_where_route_says() {
    let (_backends, list) = named_backends(&["a", "b", "c"]);
    let (listen, admin) = (free_addr(), free_addr());
    let toml = with_tables(
        &config(listen, &list, "balance = \"maglev\"\n"),
        &ops_tables(free_addr(), admin, None),
    );
    let rw = Ringway::start(&toml, &[listen, admin]);
    let names = names(&list);
    let seen = connect_many(listen, 90);
    assert!(
        ["a", "b", "c"]
            .iter()
            .all(|n| seen.iter().any(|s| s.1 == *n)),
        "{seen:?}"
    );
    assert_routed(&rw, "t", &[], &seen, &names);
    // And it is not the ring: the same clients on the same backends by the ring
    // differ for about two thirds of them.
    let ring_conf = rw.config.with_extension("ring.toml");
    let text = std::fs::read_to_string(&rw.config).unwrap();
    std::fs::write(&ring_conf, text.replace("balance = \"maglev\"\n", "")).unwrap();
    let clients: Vec<SocketAddr> = seen.iter().map(|s| s.0).collect();
    let by_ring = route(&ring_conf, "t", &[], &clients);
    let differ = seen
        .iter()
        .zip(&by_ring)
        .filter(|(s, r)| names[&r.1] != s.1)
        .count();
    assert!(differ > 20, "only {differ} of 90 differ from the ring");
    let r = http("POST", admin, "/listeners/t/backends/b/disable", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = connect_many(listen, 60);
    assert!(seen.iter().all(|s| s.1 != "b"));
    assert_routed(&rw, "t", &["b"], &seen, &names);
}
