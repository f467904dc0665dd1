//! Routing by the server name a client asks for, with real TLS: Python `ssl` backends
//! holding certificates per name, and `openssl s_client`, `curl` and Python clients
//! that verify the backend's certificate through ringway (so the name reached the
//! backend it names, bytes untouched). Pools shared by listeners share their checks.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls_lab.py");

/// TLS backends on loopback, each answering with its name, and the CA that signed
/// their certificates.
struct Tls {
    dir: tempfile::TempDir,
    servers: Vec<Child>,
}

impl Tls {
    /// Certificates: `api` for api.example and *.api.example, `web` for web.example.
    fn new() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let made = Command::new("python3")
            .args([LAB, "certs"])
            .arg(dir.path())
            .args(["api=api.example,*.api.example", "web=web.example"])
            .status()
            .unwrap();
        assert!(
            made.success(),
            "making certificates (needs the openssl CLI)"
        );
        Tls {
            dir,
            servers: Vec::new(),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A backend named `name` serving certificate `cert`.
    fn serve(&mut self, name: &str, cert: &str) -> SocketAddr {
        let addr = free_addr();
        let mut child = Command::new("python3")
            .args([LAB, "serve", &addr.port().to_string(), name])
            .arg(self.dir.path().join(format!("{cert}.pem")))
            .arg(self.dir.path().join(format!("{cert}.key")))
            .arg("120")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready");
        self.servers.push(child);
        addr
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `forward` as CI's per-mode runs ask (`RINGWAY_TEST_FORWARD`).
fn forced_forward() -> String {
    std::env::var("RINGWAY_TEST_FORWARD")
        .map(|m| format!("forward = \"{m}\"\n"))
        .unwrap_or_default()
}

/// Listeners of `protocol` (`tcp` or `udp`): `main` routes api.example and
/// *.api.example to pool `api`, the rest to pool `web`; `strict` routes api.example
/// (and what `strict_routes` adds) and closes or drops the rest. `pools`: name and
/// backends (address, id).
fn sni_config(
    protocol: &str,
    (main, strict, metrics): (SocketAddr, SocketAddr, SocketAddr),
    pools: &[(&str, Vec<(SocketAddr, &str)>)],
    strict_routes: &str,
    log: &Path,
) -> String {
    // TCP listeners forward as CI's per-mode runs ask.
    let fwd = if protocol == "tcp" {
        forced_forward()
    } else {
        String::new()
    };
    let mut toml = format!(
        "workers = 2\nshutdown_timeout = \"2s\"\n[metrics]\nlisten = \"{metrics}\"\n[access_log]\npath = \"{}\"\n",
        log.display()
    );
    for (name, backends) in pools {
        toml.push_str(&format!("\n[[pool]]\nname = \"{name}\"\n"));
        for (addr, id) in backends {
            toml.push_str(&format!(
                "[[pool.backend]]\naddress = \"{addr}\"\nid = \"{id}\"\n"
            ));
        }
    }
    toml.push_str(&format!(
        r#"
[[listener]]
name = "main"
protocol = "{protocol}"
listen = "{main}"
route_by = "sni"
default_pool = "web"
{fwd}
[[listener.route]]
sni = ["api.example", "*.api.example"]
pool = "api"

[[listener]]
name = "strict"
protocol = "{protocol}"
listen = "{strict}"
route_by = "sni"
sni_timeout = "700ms"
{fwd}
[[listener.route]]
sni = ["api.example"]
pool = "api"
{strict_routes}"#
    ));
    toml
}

/// [`sni_config`] for TLS: `api` has two backends, `web` one.
fn tls_config(
    addrs: (SocketAddr, SocketAddr, SocketAddr),
    api: &[SocketAddr],
    web: SocketAddr,
    log: &Path,
) -> String {
    let pools = [
        ("api", vec![(api[0], "api-1"), (api[1], "api-2")]),
        ("web", vec![(web, "web-1")]),
    ];
    sni_config("tcp", addrs, &pools, "", log)
}

/// What `openssl s_client` gets back for an HTTP request through `addr` asking for
/// `sni` (`None`: no server name); with `ca`, the backend's certificate must verify.
fn s_client(addr: SocketAddr, sni: Option<&str>, ca: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-quiet"]);
    match sni {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    if let Some(ca) = ca {
        cmd.arg("-CAfile").arg(ca).arg("-verify_return_error");
        if let Some(n) = sni {
            cmd.args(["-verify_hostname", n]);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        // s_client keeps running while stdin is open: the backend closes first.
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = wait_output(child, Duration::from_secs(10));
    let body = String::from_utf8_lossy(&out.stdout)
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    (out.status.success(), body)
}

/// A child's output, killing it after `limit`.
fn wait_output(mut child: Child, limit: Duration) -> std::process::Output {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// `curl https://NAME:PORT/` through ringway at `addr`, verifying with `ca`.
fn curl(addr: SocketAddr, name: &str, ca: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("{name}:{}:127.0.0.1", addr.port()),
            &format!("https://{name}:{}/", addr.port()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Python's client: its ClientHello in `records` records, one byte a segment when
/// `bytewise`, `pad` bytes of ALPN names larger.
fn pieces(
    addr: SocketAddr,
    sni: &str,
    ca: &Path,
    records: u32,
    bytewise: bool,
    pad: u32,
) -> String {
    let mut cmd = Command::new("python3");
    cmd.args([LAB, "hello", &addr.to_string(), sni])
        .arg(ca)
        .args(["--records", &records.to_string(), "--pad", &pad.to_string()]);
    if bytewise {
        cmd.arg("--bytewise");
    }
    let out = wait_output(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn rejected(metrics: SocketAddr, listener: &str, reason: &str) -> f64 {
    sample(
        &scrape(metrics),
        "ringway_listener_rejected_connections_total",
        &[("listener", listener), ("reason", reason)],
    )
    .unwrap_or(-1.0)
}

#[test]
#[ignore = "needs the openssl CLI, curl and python3"]
fn real_clients_reach_the_pool_their_server_name_names() {
    let mut tls = Tls::new();
    let api = [tls.serve("api-1", "api"), tls.serve("api-2", "api")];
    let web = tls.serve("web-1", "web");
    let (listen, strict, metrics) = (free_addr(), free_addr(), free_addr());
    let log = tempfile::NamedTempFile::new().unwrap();
    let toml = tls_config((listen, strict, metrics), &api, web, log.path());
    let rw = Ringway::start(&toml, &[listen, strict, metrics]);
    let ca = tls.ca();
    let is_api = |b: &str| b == "api-1" || b == "api-2";
    // Exact and wildcard names, verified end to end by the backend's certificate.
    let (ok, body) = s_client(listen, Some("api.example"), Some(&ca));
    assert!(
        ok && is_api(&body),
        "s_client api.example: {body:?}\n{}",
        rw.log()
    );
    let body = curl(listen, "api.example", &ca);
    assert!(is_api(&body), "curl api.example: {body:?}");
    let body = curl(listen, "v1.api.example", &ca);
    assert!(is_api(&body), "curl v1.api.example: {body:?}");
    assert_eq!(curl(listen, "web.example", &ca), "web-1");
    // Case and a trailing dot do not matter.
    let (ok, body) = s_client(listen, Some("API.Example."), None);
    assert!(ok && is_api(&body), "API.Example.: {body:?}");
    // One label only: a.v1.api.example is not *.api.example's; no name; an unknown
    // name: the default pool.
    let (_, body) = s_client(listen, Some("a.v1.api.example"), None);
    assert_eq!(body, "web-1");
    let (_, body) = s_client(listen, None, None);
    assert_eq!(body, "web-1");
    let (_, body) = s_client(listen, Some("other.example"), None);
    assert_eq!(body, "web-1");
    // Without a default pool: an unknown name and no name are closed (no_route),
    // bytes that are not TLS too (not_tls), a name that comes too slowly too
    // (sni_timeout); the routed name still goes through.
    let (ok, body) = s_client(strict, Some("api.example"), Some(&ca));
    assert!(ok && is_api(&body), "strict api.example: {body:?}");
    let (ok, _) = s_client(strict, Some("other.example"), None);
    assert!(!ok, "an unknown name reached a backend");
    let (ok, _) = s_client(strict, None, None);
    assert!(!ok, "no name reached a backend");
    let mut plain = TcpStream::connect(strict).unwrap();
    std::io::Write::write_all(&mut plain, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        std::io::Read::read(&mut plain, &mut buf).unwrap_or(0),
        0,
        "plain text was answered"
    );
    let mut slow = TcpStream::connect(strict).unwrap();
    std::io::Write::write_all(&mut slow, &[22, 3, 1, 2, 0, 1, 0]).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    assert_eq!(std::io::Read::read(&mut slow, &mut buf).unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(
        eventually(Duration::from_secs(5), || {
            rejected(metrics, "strict", "no_route") == 2.0
                && rejected(metrics, "strict", "not_tls") == 1.0
                && rejected(metrics, "strict", "sni_timeout") == 1.0
        }),
        "{}",
        scrape(metrics)
    );
    assert_eq!(rejected(metrics, "main", "no_route"), 0.0);
    // The access log names the server name and the pool.
    let records = || log_records(log.path());
    assert!(
        eventually(Duration::from_secs(5), || records().iter().any(|r| r
            ["sni"]
            == "v1.api.example"
            && r["pool"] == "api"
            && r["listener"] == "main")),
        "{:?}",
        records()
    );
    assert!(records().iter().any(|r| r["sni"] == "other.example"
        && r["listener"] == "strict"
        && r["detail"] == "no_route"));
    // `ringway route` says the same.
    let route = |sni: &str| {
        let out = Command::new(bin())
            .args(["route", "--config"])
            .arg(&rw.config)
            .args(["--listener", "main", "--sni", sni])
            .stdin_text("127.0.0.1:40000\n");
        out.split_whitespace().nth(2).unwrap_or("").to_string()
    };
    assert_eq!(route("v1.api.example"), "api");
    assert_eq!(route("web.example"), "web");
}

/// ClientHellos that arrive in pieces: one byte per TCP segment, over two and three
/// TLS records, 2-3 KB large (the size of a post-quantum hello).
#[test]
#[ignore = "needs the openssl CLI and python3"]
fn a_hello_in_pieces_is_read_whole() {
    let mut tls = Tls::new();
    let api = [tls.serve("api-1", "api"), tls.serve("api-2", "api")];
    let web = tls.serve("web-1", "web");
    let (listen, strict, metrics) = (free_addr(), free_addr(), free_addr());
    let log = tempfile::NamedTempFile::new().unwrap();
    let rw = Ringway::start(
        &tls_config((listen, strict, metrics), &api, web, log.path()),
        &[listen, strict],
    );
    let ca = tls.ca();
    for (records, bytewise, pad) in [
        (1, true, 0),
        (2, false, 2000),
        (3, true, 2500),
        (3, false, 0),
    ] {
        let body = pieces(strict, "api.example", &ca, records, bytewise, pad);
        assert!(
            body == "api-1" || body == "api-2",
            "{records} record(s), bytewise {bytewise}, pad {pad}: {body:?}\n{}",
            rw.log()
        );
        let body = pieces(listen, "web.example", &ca, records, bytewise, pad);
        assert_eq!(
            body, "web-1",
            "{records} record(s), bytewise {bytewise}, pad {pad}"
        );
    }
}

/// Two listeners on one pool: one probe per backend per interval (not one per
/// listener), one admin call drains the backend for both.
#[test]
fn two_listeners_share_one_pool_and_its_checks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let connects = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connects);
    let counted = Backend::spawn("127.0.0.1:0", move |s| {
        seen.fetch_add(1, Ordering::Relaxed);
        echo(s);
    });
    let other = Backend::named_echo("127.0.0.1:0", "other");
    let (a, b, admin) = (free_addr(), free_addr(), free_addr());
    let toml = format!(
        "workers = 2\n[admin]\nlisten = \"{admin}\"\n\n[[pool]]\nname = \"shared\"\n[[pool.backend]]\naddress = \"{}\"\nid = \"x\"\n[[pool.backend]]\naddress = \"{}\"\nid = \"y\"\n[pool.health]\ncheck = \"tcp\"\ninterval = \"100ms\"\n\n[[listener]]\nname = \"a\"\nlisten = \"{a}\"\ndefault_pool = \"shared\"\n\n[[listener]]\nname = \"b\"\nlisten = \"{b}\"\ndefault_pool = \"shared\"\n",
        counted.addr, other.addr
    );
    let _rw = Ringway::start(&toml, &[a, b, admin]);
    let st = status(admin);
    assert_eq!(st["pools"][0]["name"], "shared");
    assert_eq!(st["pools"][0]["listeners"], serde_json::json!(["a", "b"]));
    assert_eq!(st["listeners"][0]["default_pool"], "shared");
    // Probes of x over a measured window: about one per 100 ms (plus 10% jitter), not
    // two (one per listener).
    let start = connects.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let probes = connects.load(Ordering::Relaxed) - start;
    let one_per_interval = t0.elapsed().as_secs_f64() / 0.1;
    assert!(
        (probes as f64) < one_per_interval * 1.5 && probes as f64 > one_per_interval * 0.5,
        "{probes} probes in {:?}: one probe per interval would be {one_per_interval:.0}",
        t0.elapsed()
    );
    // Drained once, for both listeners: new connections of both go to y.
    let r = http("POST", admin, "/pools/shared/backends/x/drain", None);
    assert_eq!(r.status, 200, "{}", r.body);
    for listen in [a, b] {
        for _ in 0..10 {
            assert_eq!(connect_named(listen).1, "other");
        }
    }
    // Through a listener, the backend is found in the pool it routes to.
    let r = http("POST", admin, "/listeners/b/backends/x/enable", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status(admin)["pools"][0]["backends"][0]["admin"], "enabled");
    let r = http("POST", admin, "/pools/nope/backends/x/enable", None);
    assert_eq!(r.status, 404, "{}", r.body);
    // `ringway ctl` does the same with --pool, and its table shows routes and pools.
    let out = ctl(admin, None, &["disable", "--pool", "shared", "y"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        status(admin)["pools"][0]["backends"][1]["admin"],
        "disabled"
    );
    let out = ctl(admin, None, &["enable", "--pool", "shared", "y"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(ctl(admin, None, &["status"]).stdout).unwrap();
    assert!(
        table.contains("listener a tcp") && table.contains("  routes: all to pool shared\n"),
        "{table}"
    );
    assert!(table.contains("pool shared tcp: used by a, b\n"), "{table}");
    let y = table
        .lines()
        .find(|l| l.trim_start().starts_with("y "))
        .unwrap_or("");
    assert!(y.contains("enabled") || y.contains("up"), "{table}");
}

trait StdinText {
    fn stdin_text(&mut self, text: &str) -> String;
}

impl StdinText for Command {
    /// Runs the command with `text` on stdin; its stdout.
    fn stdin_text(&mut self, text: &str) -> String {
        use std::io::Write;
        let mut child = self
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = wait_output(child, Duration::from_secs(10));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A QUIC backend (ngtcp2's `gtlsserver`, HTTP/3) at `addr` serving `/who` = `name`
/// with certificate `cert`.
struct Quic {
    child: Child,
    /// Its htdocs, removed when it stops.
    _docs: tempfile::TempDir,
}

impl Quic {
    fn serve(tls: &Tls, addr: SocketAddr, name: &str, cert: &str) -> Quic {
        let docs = tempfile::tempdir().unwrap();
        std::fs::write(docs.path().join("who"), format!("{name}\n")).unwrap();
        let child = Command::new("gtlsserver")
            .arg("-q")
            .arg("-d")
            .arg(docs.path())
            .args([addr.ip().to_string(), addr.port().to_string()])
            .arg(tls.dir.path().join(format!("{cert}.key")))
            .arg(tls.dir.path().join(format!("{cert}.pem")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gtlsserver (Debian's ngtcp2-server)");
        let q = Quic { child, _docs: docs };
        assert!(
            eventually(Duration::from_secs(5), || h3_get(addr, name, &[]).is_some()),
            "gtlsserver did not answer on {addr}"
        );
        q
    }
}

impl Drop for Quic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ngtcp2's `gtlsclient` to `addr` as `name`, with `args` (then `uri`, if any):
/// Debian 12's sends the server name of the host it connects to (its `--sni` is not
/// used), so it runs in a mount namespace of its own whose /etc/hosts says `name` is
/// `addr`'s IP (as root).
fn gtlsclient(addr: SocketAddr, name: &str, args: &[&str], uri: Option<&str>) -> Child {
    let hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(hosts.path(), format!("{} {name}\n", addr.ip())).unwrap();
    let (_, hosts) = hosts.keep().unwrap();
    let port = addr.port().to_string();
    let words: Vec<String> = args
        .iter()
        .chain([name, port.as_str()].iter())
        .chain(uri.iter())
        .map(|w| format!("'{w}'"))
        .collect();
    let script = format!(
        "mount --bind {h} /etc/hosts && rm -f {h} && exec gtlsclient {}",
        words.join(" "),
        h = hosts.display(),
    );
    Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare and gtlsclient (Debian's ngtcp2-client)")
}

/// `/who` over HTTP/3 from `addr` with ngtcp2's `gtlsclient`, asking for server name
/// `sni`; `None` when no answer came.
fn h3_get(addr: SocketAddr, sni: &str, extra: &[&str]) -> Option<String> {
    let dl = tempfile::tempdir().unwrap();
    let download = format!("--download={}", dl.path().display());
    let mut args = vec!["-q", "--exit-on-all-streams-close", "--timeout=3s"];
    args.extend(["--handshake-timeout=3s", &download]);
    args.extend(extra);
    let uri = format!("https://{sni}:{}/who", addr.port());
    wait_output(
        gtlsclient(addr, sni, &args, Some(&uri)),
        Duration::from_secs(8),
    );
    std::fs::read_to_string(dl.path().join("who"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The datagrams gtlsclient sends first, asking for `sni` with `extra` options,
/// caught by a socket that never answers.
fn first_initials(sni: &str, extra: &[&str]) -> Vec<Vec<u8>> {
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let addr = sink.local_addr().unwrap();
    let mut args = vec!["-q", "--handshake-timeout=1s"];
    args.extend(extra);
    let child = gtlsclient(addr, sni, &args, None);
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    // The first flight: datagrams that arrive together (a retransmission comes a
    // probe timeout later, after the read timeout).
    while let Ok((n, _)) = sink.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
        sink.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
    }
    wait_output(child, Duration::from_secs(3));
    got
}

/// The access log's JSON records so far.
fn log_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn udp_dropped(metrics: SocketAddr, listener: &str, reason: &str) -> f64 {
    sample(
        &scrape(metrics),
        "ringway_udp_dropped_datagrams_total",
        &[("listener", listener), ("reason", reason)],
    )
    .unwrap_or(-1.0)
}

/// QUIC by server name: ngtcp2's HTTP/3 client through ringway to ngtcp2 servers, the
/// pool picked from the name in its Initial (whole in one datagram, or over two when
/// the hello carries large key shares); a listener without a default pool drops
/// unknown names, datagrams that are not QUIC, and hellos never completed.
#[test]
#[ignore = "needs root, the openssl CLI, python3 and Debian's ngtcp2-client and ngtcp2-server"]
fn quic_clients_reach_the_pool_their_server_name_names() {
    let tls = Tls::new();
    let (a1, w1) = (free_udp_addr(), free_udp_addr());
    let _api = Quic::serve(&tls, a1, "api-1", "api");
    let _web = Quic::serve(&tls, w1, "web-1", "web");
    let (quic, strict, metrics) = (free_udp_addr(), free_udp_addr(), free_addr());
    // A backend that records what reaches it.
    let recorder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let rec = recorder.local_addr().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let pools = [
        ("api", vec![(a1, "api-1")]),
        ("web", vec![(w1, "web-1")]),
        ("rec", vec![(rec, "rec")]),
    ];
    let rec_route =
        "[[listener.route]]\nsni = [\"rec.example\", \"example.com\"]\npool = \"rec\"\n";
    let toml = sni_config(
        "udp",
        (quic, strict, metrics),
        &pools,
        rec_route,
        log.path(),
    );
    let rw = Ringway::start(&toml, &[metrics]);
    let get = |addr, sni: &str, extra: &[&str]| h3_get(addr, sni, extra);
    assert_eq!(
        get(quic, "api.example", &[]).as_deref(),
        Some("api-1"),
        "{}",
        rw.log()
    );
    assert_eq!(get(quic, "v1.api.example", &[]).as_deref(), Some("api-1"));
    assert_eq!(get(quic, "web.example", &[]).as_deref(), Some("web-1"));
    assert_eq!(get(quic, "other.example", &[]).as_deref(), Some("web-1"));
    // A hello over two Initials (an 8192-bit FFDHE key share): held, then routed.
    let split = ["--groups=-GROUP-ALL:+GROUP-FFDHE8192:+GROUP-SECP521R1"];
    assert_eq!(
        first_initials("api.example", &split).len(),
        2,
        "the hello should span two datagrams"
    );
    assert_eq!(get(quic, "api.example", &split).as_deref(), Some("api-1"));
    assert_eq!(get(strict, "api.example", &split).as_deref(), Some("api-1"));
    // Without a default pool: an unknown name, not QUIC, and half a hello (its first
    // Initial only, sent once) are dropped, each counted.
    assert_eq!(get(strict, "other.example", &[]), None);
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.send_to(b"not quic at all", strict).unwrap();
    let half = &first_initials("api.example", &split)[0];
    probe.send_to(half, strict).unwrap();
    // What was held reaches the backend untouched and in the order it was sent, in
    // either order.
    recorder
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let initials = first_initials("rec.example", &split);
    assert_eq!(initials.len(), 2);
    for order in [[0, 1], [1, 0]] {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in order {
            client.send_to(&initials[i], strict).unwrap();
        }
        let mut buf = [0u8; 2048];
        for i in order {
            let (n, _) = recorder.recv_from(&mut buf).expect("a held datagram");
            assert!(buf[..n] == initials[i][..], "datagram {i} of {order:?}");
        }
    }
    // QUIC v2 (RFC 9369; Debian 12's ngtcp2 speaks only its draft) and v1, as the
    // RFCs' client Initials for example.com.
    for file in ["rfc9001_a2.hex", "rfc9369_a2.hex"] {
        let text = std::fs::read_to_string(format!(
            "{}/src/sni/quic/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let t: String = text.split_whitespace().collect();
        let initial: Vec<u8> = (0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
            .collect();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(&initial, strict).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = recorder.recv_from(&mut buf).expect(file);
        assert!(buf[..n] == initial[..], "{file}");
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            udp_dropped(metrics, "strict", "no_route") >= 1.0
                && udp_dropped(metrics, "strict", "not_quic") == 1.0
                && udp_dropped(metrics, "strict", "sni_timeout") == 1.0
        }),
        "{}",
        scrape(metrics)
    );
    assert_eq!(udp_dropped(metrics, "main", "no_route"), 0.0);
    // The access log names the server name and pool of each flow.
    let records = || log_records(log.path());
    let mut rw = rw;
    rw.signal(ringway::sys::signal::Signal::Term);
    assert!(rw.wait_exit(Duration::from_secs(10)).is_some());
    let all = records();
    assert!(
        all.iter().any(|r| r["sni"] == "v1.api.example"
            && r["pool"] == "api"
            && r["listener"] == "main"
            && r["protocol"] == "udp"),
        "{all:?}"
    );
    assert!(all
        .iter()
        .any(|r| r["listener"] == "strict" && r["detail"] == "sni_timeout"));
    assert!(all.iter().any(|r| r["listener"] == "strict"
        && r["detail"] == "no_route"
        && r["sni"] == "other.example"));
}
