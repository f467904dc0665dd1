//! The PROXY protocol. `send_proxy`: backends learn who connected from a header (v1
//! text, v2 binary) ahead of the client's bytes; health checks send LOCAL/UNKNOWN
//! headers. `accept_proxy`: the header from a balancer in front picks the backend.
//! The backends here parse headers by hand, straight from the spec, and NGINX reads and
//! writes them too, so the tests check ringway's encoding rather than share it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::*;

/// What a PROXY-speaking backend read first.
#[derive(Debug, Clone, PartialEq)]
enum Header {
    /// A relayed connection.
    Proxy { src: SocketAddr, dst: SocketAddr },
    /// v2 LOCAL or v1 UNKNOWN: the proxy's own connection (a health check).
    Local,
}

const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn read_header(s: &mut TcpStream) -> Result<Header, String> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).map_err(|e| e.to_string())?;
    if first[0] == b'P' {
        // v1: one line of at most 107 bytes ending in CRLF.
        let mut line = vec![b'P'];
        while !line.ends_with(b"\r\n") {
            if line.len() >= 107 {
                return Err("v1 line too long".into());
            }
            s.read_exact(&mut first).map_err(|e| e.to_string())?;
            line.push(first[0]);
        }
        let text = String::from_utf8(line).map_err(|e| e.to_string())?;
        let f: Vec<&str> = text.trim_end().split(' ').collect();
        return match f.as_slice() {
            ["PROXY", "UNKNOWN", ..] => Ok(Header::Local),
            ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
                let ip = |t: &str| -> Result<IpAddr, String> {
                    let ip: IpAddr = t.parse().map_err(|_| format!("bad address {t:?}"))?;
                    if ip.is_ipv4() != (*proto == "TCP4") {
                        return Err(format!("{t} is not {proto}"));
                    }
                    Ok(ip)
                };
                let port = |t: &str| t.parse::<u16>().map_err(|_| format!("bad port {t:?}"));
                Ok(Header::Proxy {
                    src: SocketAddr::new(ip(src)?, port(sport)?),
                    dst: SocketAddr::new(ip(dst)?, port(dport)?),
                })
            }
            _ => Err(format!("bad v1 header {text:?}")),
        };
    }
    // v2: 12-byte signature, version/command, family/transport, length, addresses.
    let mut fixed = [0u8; 16];
    fixed[0] = first[0];
    s.read_exact(&mut fixed[1..]).map_err(|e| e.to_string())?;
    if &fixed[..12] != V2_SIG {
        return Err(format!(
            "no PROXY header: {:?}",
            String::from_utf8_lossy(&fixed)
        ));
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest).map_err(|e| e.to_string())?;
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match (fixed[12], fixed[13]) {
        (0x20, 0x00) => Ok(Header::Local),
        (0x21, 0x11) if len >= 12 => {
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(Header::Proxy {
                src: SocketAddr::new(ip(&rest[0..4]), port(&rest[8..10])),
                dst: SocketAddr::new(ip(&rest[4..8]), port(&rest[10..12])),
            })
        }
        (0x21, 0x21) if len >= 36 => {
            let ip = |b: &[u8]| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap()));
            Ok(Header::Proxy {
                src: SocketAddr::new(ip(&rest[0..16]), port(&rest[32..34])),
                dst: SocketAddr::new(ip(&rest[16..32]), port(&rest[34..36])),
            })
        }
        (vc, fp) => Err(format!(
            "bad v2 header: version/command {vc:#04x}, family/protocol {fp:#04x}, length {len}"
        )),
    }
}

/// A backend that requires a PROXY header (like NGINX `listen ... proxy_protocol`):
/// relayed connections get `proxy SRC DST\n` then an echo; `PING\r\n` on a LOCAL one
/// gets `PONG\r\n`; anything else gets `bad ...\n` and a close. Records every header.
struct ProxyBackend {
    backend: Backend,
    seen: Arc<Mutex<Vec<Result<Header, String>>>>,
}

impl ProxyBackend {
    fn spawn(bind: &str) -> ProxyBackend {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let backend = Backend::spawn(bind, move |mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let h = read_header(&mut s);
            log.lock().unwrap().push(h.clone());
            match h {
                Ok(Header::Proxy { src, dst }) => {
                    if s.write_all(format!("proxy {src} {dst}\n").as_bytes())
                        .is_ok()
                    {
                        echo(s);
                    }
                }
                Ok(Header::Local) => {
                    let mut ping = [0u8; 6];
                    if s.read_exact(&mut ping).is_ok() && &ping == b"PING\r\n" {
                        let _ = s.write_all(b"PONG\r\n");
                    }
                }
                Err(e) => {
                    let _ = s.write_all(format!("bad {e}\n").as_bytes());
                }
            }
        });
        ProxyBackend { backend, seen }
    }

    fn locals(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|h| matches!(h, Ok(Header::Local)))
            .count()
    }

    fn errors(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter_map(|h| h.clone().err()).collect()
    }
}

/// Sends `n` bytes of a pattern and reads them back.
fn round_trip(s: &mut TcpStream, n: usize) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    let mut back = vec![0u8; n];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "bytes after the header came back changed");
}

#[test]
fn each_version_tells_the_backend_who_connected_then_bytes_flow_intact() {
    for (version, family, forward) in [
        ("v1", "127.0.0.1", "auto"),
        ("v2", "127.0.0.1", "splice"),
        ("v1", "[::1]", "copy"),
        ("v2", "[::1]", "auto"),
    ] {
        let b = ProxyBackend::spawn(&format!("{family}:0"));
        let port = free_addr().port();
        let listen: SocketAddr = format!("{family}:{port}").parse().unwrap();
        let extra = format!("send_proxy = \"{version}\"\nforward = \"{forward}\"");
        let _rw = Ringway::start(&config(listen, &[(b.backend.addr, "b")], &extra), &[listen]);
        for _ in 0..3 {
            let mut s = TcpStream::connect(listen).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let client = s.local_addr().unwrap();
            assert_eq!(
                read_line(&s),
                format!("proxy {client} {listen}"),
                "{version} over {family}, forward {forward}"
            );
            round_trip(&mut s, 1 << 20);
        }
        assert!(b.errors().is_empty(), "{:?}", b.errors());
    }
}

/// Health checks of a backend that insists on the header send a LOCAL one (so it stays
/// up); told not to (`health.send_proxy = false`), the checks fail and it goes down.
#[test]
fn health_checks_speak_proxy_to_backends_that_require_it() {
    let b = ProxyBackend::spawn("127.0.0.1:0");
    let listen = free_addr();
    let health = "send_proxy = \"v2\"\n\n[listener.health]\ncheck = \"send-expect\"\nsend = \"PING\\r\\n\"\nexpect = \"PONG\"\ninterval = \"100ms\"\nrise = 1\nfall = 1";
    let cfg = config(listen, &[(b.backend.addr, "b")], health);
    let rw = Ringway::start(&cfg, &[listen]);
    assert!(
        eventually(Duration::from_secs(5), || b.locals() >= 3),
        "no LOCAL headers from the checks: {:?}",
        b.errors()
    );
    assert!(b.errors().is_empty(), "{:?}", b.errors());
    let (s, line) = connect_named(listen);
    assert!(line.starts_with("proxy 127.0.0.1:"), "{line}");
    drop(s);

    // Without the header the backend answers "bad": after one failed check, no backend
    // is up and new connections are refused.
    let off = cfg.replace("fall = 1", "fall = 1\nsend_proxy = false");
    std::fs::write(&rw.config, off).unwrap();
    rw.signal(ringway::sys::signal::Signal::Hup);
    let gone = eventually(Duration::from_secs(5), || {
        let s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        closed_by_peer(&s)
    });
    assert!(gone, "the backend stayed up: {}", rw.log());
    assert!(
        !b.errors().is_empty(),
        "checks without a header were not seen"
    );
}

/// On a wildcard listener the header names the address each client reached (in a
/// network namespace of the test's own, so nothing listens on the machine's interfaces).
#[test]
#[ignore = "needs root"]
fn a_wildcard_listener_names_the_address_each_client_reached() {
    in_netns("proxywild", || {
        let b = ProxyBackend::spawn("127.0.0.1:0");
        let port = free_addr().port();
        let listen: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
        let to1: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let _rw = Ringway::start(
            &config(listen, &[(b.backend.addr, "b")], "send_proxy = \"v1\""),
            &[to1],
        );
        for dst in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
            let to: SocketAddr = format!("{dst}:{port}").parse().unwrap();
            let (s, line) = connect_named(to);
            assert_eq!(line, format!("proxy {} {to}", s.local_addr().unwrap()));
        }
    });
}

/// NGINX's stream module with the given `server { ... }` blocks, listening on
/// `listens`. Killed on drop.
struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    const MODULE: &'static str = "/usr/lib/nginx/modules/ngx_stream_module.so";

    /// Starts NGINX (the test fails where it or its stream module is not installed:
    /// such tests are `#[ignore]`d by default and CI installs both).
    fn start(servers: &str, listens: &[SocketAddr]) -> Nginx {
        let installed = std::process::Command::new("nginx")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            installed && std::path::Path::new(Self::MODULE).exists(),
            "needs nginx and libnginx-mod-stream (apt-get install nginx libnginx-mod-stream)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = format!(
            "load_module {};\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 64; }}\nstream {{\n{servers}}}\n",
            Self::MODULE
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .args(["-e", &format!("{d}/error.log")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for a in listens {
            assert!(
                eventually(Duration::from_secs(5), || TcpStream::connect(a).is_ok()),
                "nginx did not listen on {a}: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
        }
        Nginx { child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real receiver agrees: NGINX parses ringway's v1 and v2 headers, IPv4 and IPv6,
/// into the client's address and port and the address and port it reached.
#[test]
#[ignore = "needs nginx (apt-get install nginx libnginx-mod-stream)"]
fn nginx_reads_the_headers_ringway_sends() {
    let targets = [
        free_addr(),
        format!("[::1]:{}", free_addr().port()).parse().unwrap(),
    ];
    // Requires the header and answers with what it parsed.
    let servers: String = targets
        .iter()
        .map(|a| {
            format!(
                "server {{ listen {a} proxy_protocol; return \"$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port\\n\"; }}\n"
            )
        })
        .collect();
    let _nginx = Nginx::start(&servers, &targets);
    for version in ["v1", "v2"] {
        for target in targets {
            let port = free_addr().port();
            let listen = SocketAddr::new(target.ip(), port);
            let extra = format!("send_proxy = \"{version}\"\n[listener.health]\ncheck = \"none\"");
            let _rw = Ringway::start(&config(listen, &[(target, "nginx")], &extra), &[listen]);
            let s = TcpStream::connect(listen).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let me = s.local_addr().unwrap();
            assert_eq!(
                read_line(&s),
                format!(
                    "{} {} {} {}",
                    me.ip(),
                    me.port(),
                    listen.ip(),
                    listen.port()
                ),
                "{version} to {target}"
            );
        }
    }
}

/// A reload switches the header on for the connections that follow.
#[test]
fn a_reload_turns_the_header_on_for_new_connections() {
    let b = ProxyBackend::spawn("127.0.0.1:0");
    let listen = free_addr();
    let cfg = config(listen, &[(b.backend.addr, "b")], "");
    let rw = Ringway::start(&cfg, &[listen]);
    let ask = || {
        let mut s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"sixteen bytes...").unwrap();
        (read_line(&s), s)
    };
    let (before, _) = ask();
    assert!(before.starts_with("bad no PROXY header"), "{before}");
    std::fs::write(
        &rw.config,
        cfg.replace("connect_timeout", "send_proxy = \"v2\"\nconnect_timeout"),
    )
    .unwrap();
    rw.signal(ringway::sys::signal::Signal::Hup);
    assert!(
        eventually(Duration::from_secs(5), || ask()
            .0
            .starts_with("proxy 127.0.0.1:")),
        "{}",
        rw.log()
    );
}

/// `accept_proxy`: behind a load balancer that sends PROXY headers, the header's client
/// and destination pick the backend (as `route --dst` computes from the same addresses),
/// the bytes after the header (same segment) arrive intact, and a LOCAL header (the
/// balancer's own health check) is served by the real endpoints.
#[test]
fn accept_proxy_hashes_the_client_the_header_names() {
    let (_backends, list) = named_backends(&["a", "b", "c"]);
    let listen = free_addr();
    let rw = Ringway::start(&config(listen, &list, "accept_proxy = true"), &[listen]);
    let dst: SocketAddr = "198.51.100.1:443".parse().unwrap();
    let clients: Vec<SocketAddr> = (0..24)
        .map(|i| format!("192.0.2.{}:{}", 10 + i, 40000 + i).parse().unwrap())
        .collect();
    let routed = route_to(&rw.config, "t", &[], Some(dst), &clients);
    let name_of = |addr: &str| list.iter().find(|(a, _)| a.to_string() == addr).unwrap().1;
    let mut seen = std::collections::HashSet::new();
    for (i, (client, (_, addr))) in clients.iter().zip(&routed).enumerate() {
        let version = if i % 2 == 0 {
            ringway::proxy_protocol::Version::V1
        } else {
            ringway::proxy_protocol::Version::V2
        };
        let mut first = ringway::proxy_protocol::relayed(version, *client, dst);
        first.extend_from_slice(b"ping");
        let mut s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&first).unwrap();
        let name = read_line(&s);
        assert_eq!(name, name_of(addr), "{client} ({version:?})");
        seen.insert(name);
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
    }
    assert!(
        seen.len() > 1,
        "every client hashed alike: the header was ignored"
    );
    for version in [
        ringway::proxy_protocol::Version::V1,
        ringway::proxy_protocol::Version::V2,
    ] {
        let mut s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&ringway::proxy_protocol::local(version))
            .unwrap();
        let me = s.local_addr().unwrap();
        let want = &route(&rw.config, "t", &[], &[me])[0].1;
        assert_eq!(read_line(&s), name_of(want), "LOCAL {version:?}");
    }
}

/// A header split over two writes is waited for; the next proxy learns the original
/// client (`accept_proxy` and `send_proxy` together: a chain of proxies).
#[test]
fn accept_proxy_waits_for_a_split_header_and_passes_it_on() {
    let b = ProxyBackend::spawn("127.0.0.1:0");
    let listen = free_addr();
    let extra = "accept_proxy = true\nsend_proxy = \"v1\"";
    let _rw = Ringway::start(&config(listen, &[(b.backend.addr, "b")], extra), &[listen]);
    let (client, dst): (SocketAddr, SocketAddr) = (
        "[2001:db8::7]:51000".parse().unwrap(),
        "[2001:db8::1]:25".parse().unwrap(),
    );
    let header =
        ringway::proxy_protocol::relayed(ringway::proxy_protocol::Version::V2, client, dst);
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&header[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&header[10..]).unwrap();
    assert_eq!(read_line(&s), format!("proxy {client} {dst}"));
    round_trip(&mut s, 1 << 16);
}

/// Without a valid header within connect_timeout the connection is closed, counted as
/// `proxy_header`, and reaches no backend.
#[test]
fn accept_proxy_closes_connections_without_a_header() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let cfg = config(
        listen,
        &[(b.addr, "b")],
        "accept_proxy = true\n[listener.health]\ncheck = \"none\"",
    )
    .replace("connect_timeout = \"1s\"", "connect_timeout = \"2s\"");
    let rw = Ringway::start(
        &with_tables(&cfg, &ops_tables(metrics, admin, None)),
        &[listen, metrics],
    );
    let closed = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    };
    // Another protocol: refused at once.
    let mut http = TcpStream::connect(listen).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed(http));
    // Half a header, then EOF: refused at once, not at the deadline.
    let started = std::time::Instant::now();
    let mut half = TcpStream::connect(listen).unwrap();
    half.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed(half));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // Silence: refused after connect_timeout.
    let started = std::time::Instant::now();
    assert!(closed(TcpStream::connect(listen).unwrap()));
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    let rejected = |text: &str| {
        sample(
            text,
            "ringway_listener_rejected_connections_total",
            &[("listener", "t"), ("reason", "proxy_header")],
        )
    };
    assert!(
        eventually(Duration::from_secs(5), || rejected(&scrape(metrics))
            == Some(3.0)),
        "{:?}",
        rejected(&scrape(metrics))
    );
    // A probe that connects and closes is not an error.
    drop(TcpStream::connect(listen).unwrap());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rejected(&scrape(metrics)), Some(3.0));
    assert_eq!(b.accepted.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(rw.log().contains("accept_proxy"), "{}", rw.log());
}

/// A real sender: NGINX in front (`proxy_protocol on`, v1) sends headers to ringway
/// (`accept_proxy`), which passes the client on (`send_proxy`) to the backend.
#[test]
#[ignore = "needs nginx (apt-get install nginx libnginx-mod-stream)"]
fn accept_proxy_reads_what_nginx_sends() {
    let b = ProxyBackend::spawn("127.0.0.1:0");
    let (front, listen) = (free_addr(), free_addr());
    let servers = format!(
        "server {{ listen {front}; proxy_pass {listen}; proxy_protocol on; proxy_timeout 10s; }}\n"
    );
    let extra = "accept_proxy = true\nsend_proxy = \"v2\"";
    let _rw = Ringway::start(&config(listen, &[(b.backend.addr, "b")], extra), &[listen]);
    let _nginx = Nginx::start(&servers, &[front]);
    for _ in 0..3 {
        let mut s = TcpStream::connect(front).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let me = s.local_addr().unwrap();
        assert_eq!(read_line(&s), format!("proxy {me} {front}"));
        round_trip(&mut s, 1 << 16);
    }
}

/// `accept_proxy_from`: only the listed balancers must send a header; other peers are
/// direct clients, hashed by their own address, and cannot pass one off.
#[test]
fn accept_proxy_from_reads_headers_of_trusted_peers_only() {
    let (_backends, list) = named_backends(&["a", "b", "c"]);
    let listen = free_addr();
    let extra = "accept_proxy = true\naccept_proxy_from = [\"127.0.0.2\"]";
    let rw = Ringway::start(&config(listen, &list, extra), &[listen]);
    let name_of = |addr: &str| list.iter().find(|(a, _)| a.to_string() == addr).unwrap().1;
    let from = |ip: &str| connect_from(ip.parse().unwrap(), listen);
    let dst: SocketAddr = "198.51.100.1:443".parse().unwrap();
    // The trusted balancer: its headers pick the backend.
    for i in 0..8u16 {
        let client: SocketAddr = format!("192.0.2.{}:{}", 20 + i, 50000 + i).parse().unwrap();
        let mut s = from("127.0.0.2");
        s.write_all(&ringway::proxy_protocol::relayed(
            ringway::proxy_protocol::Version::V2,
            client,
            dst,
        ))
        .unwrap();
        let want = &route_to(&rw.config, "t", &[], Some(dst), &[client])[0].1;
        assert_eq!(read_line(&s), name_of(want), "{client} via the balancer");
    }
    // The balancer without a header: refused.
    let mut s = from("127.0.0.2");
    s.write_all(b"hello, no header here\r\n").unwrap();
    assert!(
        closed_by_peer(&s),
        "served without a header, or left waiting"
    );
    // A direct client: served by its own address, no header read.
    for _ in 0..4 {
        let s = from("127.0.0.1");
        let me = s.local_addr().unwrap();
        let want = &route(&rw.config, "t", &[], &[me])[0].1;
        assert_eq!(read_line(&s), name_of(want), "direct {me}");
    }
    // A direct client that sends a header gets it passed on as data, not believed: the
    // named echo backend greets, then echoes the header back.
    let mut s = from("127.0.0.1");
    let me = s.local_addr().unwrap();
    let fake = ringway::proxy_protocol::relayed(
        ringway::proxy_protocol::Version::V1,
        "192.0.2.99:1".parse().unwrap(),
        dst,
    );
    s.write_all(&fake).unwrap();
    let want = &route(&rw.config, "t", &[], &[me])[0].1;
    assert_eq!(read_line(&s), name_of(want));
    let mut echoed = vec![0u8; fake.len()];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, fake);
}

/// PROXY v2 headers HAProxy refuses are refused at once and counted (issue 9, defect
/// 5): a TLV running past the header, a wrong CRC32c, AF_UNIX addresses on a TCP
/// listener, a length above what ringway reads. A good header with a CRC32c TLV that
/// arrives a few bytes at a time is still served.
#[test]
fn accept_proxy_refuses_malformed_v2_headers_at_once() {
    let b = Backend::named_echo("127.0.0.1:0", "b");
    let (listen, metrics) = (free_addr(), free_addr());
    // A long connect_timeout: a refusal "at once" cannot be the header timer.
    let cfg = config(
        listen,
        &[(b.addr, "b")],
        "accept_proxy = true\n[listener.health]\ncheck = \"none\"",
    )
    .replace("connect_timeout = \"1s\"", "connect_timeout = \"30s\"");
    let rw = Ringway::start(
        &with_tables(&cfg, &format!("[metrics]\nlisten = \"{metrics}\"\n")),
        &[listen, metrics],
    );
    let v2 = |extra: &[u8]| {
        let mut h = ringway::proxy_protocol::relayed(
            ringway::proxy_protocol::Version::V2,
            "192.0.2.7:40000".parse().unwrap(),
            "198.51.100.1:443".parse().unwrap(),
        );
        let len = u16::from_be_bytes([h[14], h[15]]) + extra.len() as u16;
        h[14..16].copy_from_slice(&len.to_be_bytes());
        h.extend_from_slice(extra);
        h
    };
    let with_crc = |spoil: bool| {
        let mut h = v2(&[0x03, 0, 4, 0, 0, 0, 0]);
        let sum = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&h) ^ spoil as u32;
        let at = h.len() - 4;
        h[at..].copy_from_slice(&sum.to_be_bytes());
        h
    };
    let mut unix = ringway::proxy_protocol::local(ringway::proxy_protocol::Version::V2);
    unix[12] = 0x21;
    unix[13] = 0x31;
    unix[14..16].copy_from_slice(&216u16.to_be_bytes());
    unix.resize(16 + 216, b'/');
    let mut huge = ringway::proxy_protocol::local(ringway::proxy_protocol::Version::V2);
    huge[12] = 0x21;
    huge[13] = 0x11;
    huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
    let bad = [
        ("TLV past the end", v2(&[0x04, 0, 5, b'a', b'b'])),
        ("wrong CRC32c", with_crc(true)),
        ("AF_UNIX", unix),
        ("length above the limit", huge),
    ];
    for (what, header) in &bad {
        let mut s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(header).unwrap();
        let mut buf = [0u8; 16];
        let r = s.read(&mut buf);
        assert!(
            matches!(&r, Ok(0))
                || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{what}: {r:?} (a timeout means it waited for connect_timeout)"
        );
    }
    let rejected = || {
        sample(
            &scrape(metrics),
            "ringway_listener_rejected_connections_total",
            &[("listener", "t"), ("reason", "proxy_header")],
        )
    };
    assert!(
        eventually(Duration::from_secs(5), || rejected() == Some(4.0)),
        "{:?}",
        rejected()
    );
    assert_eq!(b.accepted.load(std::sync::atomic::Ordering::Relaxed), 0);
    // A good one, in pieces: served.
    let good = with_crc(false);
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for piece in good.chunks(5) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_line(&s), "b");
    // A good one with 2.5 KiB of TLVs (HAProxy's send-proxy-v2-ssl-cn sends a client
    // certificate's subject and more, past the 1 KiB ringway used to read): served,
    // and what follows the header reaches the backend unchanged.
    let mut big = Vec::new();
    for _ in 0..10 {
        // PP2_TYPE_NOOP (0x04) TLVs of 250 bytes.
        big.extend_from_slice(&[0x04, 0, 250]);
        big.extend_from_slice(&[b'x'; 250]);
    }
    let header = v2(&big);
    assert!(header.len() > 2_500, "{}", header.len());
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&header).unwrap();
    s.write_all(b"after\n").unwrap();
    assert_eq!(read_line(&s), "b");
    let mut echoed = [0u8; 6];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"after\n");
    drop(rw);
}
