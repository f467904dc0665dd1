//! Helpers for the integration tests: a ringway process, backends on loopback, and
//! bounded waits. Everything binds 127.0.0.1/::1 only.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub mod webdriver;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringway")
}

/// A port that was free a moment ago on `ip`, for TCP and UDP alike, taken below the
/// kernel's ephemeral range (32768-60999): a port from `bind(0)` can be handed to
/// another test's `connect()` or UDP socket before ringway binds it (CI saw ringway
/// fail to start that way), while ports here are only ever given out by this counter.
pub fn free_port(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000;
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + n) % SPAN).unwrap();
        let tcp = TcpListener::bind((ip, port)).is_ok();
        if tcp && std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port free on every one of `ips` (TCP and UDP): for backends that share a port
/// on several addresses.
pub fn free_port_on(ips: &[&str]) -> u16 {
    for _ in 0..100 {
        let port = free_port(ips[0]);
        let free = ips[1..].iter().all(|ip| {
            TcpListener::bind((*ip, port)).is_ok() && std::net::UdpSocket::bind((*ip, port)).is_ok()
        });
        if free {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}")
}

/// A free `127.0.0.1:PORT`.
pub fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A running `ringway run` process, killed on drop.
pub struct Ringway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The socket [`start_udp`] asked from, kept open: its flow stays in ringway (until
    /// its idle timeout), so its port must not come back as a "new" client's.
    pub udp_probe: Option<std::net::UdpSocket>,
}

impl Ringway {
    /// Writes `toml` to a temp file and starts ringway on it; waits until every address
    /// in `wait_for` accepts connections.
    pub fn start(toml: &str, wait_for: &[SocketAddr]) -> Ringway {
        let mut rw = Ringway::spawn(toml);
        for addr in wait_for {
            let up = eventually(Duration::from_secs(10), || TcpStream::connect(addr).is_ok());
            assert!(up, "ringway did not listen on {addr}; log:\n{}", rw.log());
        }
        assert!(
            rw.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "ringway exited: {}",
            rw.log()
        );
        rw
    }

    /// Writes `toml` to a temp file and starts `ringway run` on it, without waiting.
    pub fn spawn(toml: &str) -> Ringway {
        Ringway::spawn_env(toml, &[])
    }

    /// Like [`Ringway::spawn`], with extra environment variables.
    pub fn spawn_env(toml: &str, env: &[(&str, &str)]) -> Ringway {
        Ringway::spawn_via(toml, env, &[])
    }

    /// Like [`Ringway::spawn_env`], started as `WRAPPER... ringway run ...` (the
    /// wrapper must end by exec'ing its arguments, so the pid stays ringway's).
    pub fn spawn_via(toml: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Ringway {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ringway.toml");
        std::fs::write(&config, udp_forward_mode(toml)).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Ringway {
            child: Some(child),
            dir,
            config,
            udp_probe: None,
        }
    }

    /// What ringway wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: ringway::sys::signal::Signal) {
        ringway::sys::signal::send(self.pid() as u32, sig).unwrap();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        while Instant::now() < end {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Runs `ringway route` on this process's config.
    pub fn route(
        &self,
        listener: &str,
        down: &[&str],
        clients: &[SocketAddr],
    ) -> Vec<(String, String)> {
        route(&self.config, listener, down, clients)
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `ringway route -c CONFIG --listener L [--down ID]...` with `clients` on stdin.
pub fn route(
    config: &Path,
    listener: &str,
    down: &[&str],
    clients: &[SocketAddr],
) -> Vec<(String, String)> {
    route_to(config, listener, down, None, clients)
}

/// Like [`route`], with `--dst` for a listener on a wildcard address.
pub fn route_to(
    config: &Path,
    listener: &str,
    down: &[&str],
    dst: Option<SocketAddr>,
    clients: &[SocketAddr],
) -> Vec<(String, String)> {
    let mut args = vec!["--listener".to_string(), listener.to_string()];
    for d in down {
        args.extend(["--down".to_string(), d.to_string()]);
    }
    if let Some(dst) = dst {
        args.extend(["--dst".to_string(), dst.to_string()]);
    }
    route_with(config, &args, clients)
}

/// Runs `ringway route -c CONFIG ARGS...` with `clients` on stdin; returns its two
/// columns.
pub fn route_with(config: &Path, args: &[String], clients: &[SocketAddr]) -> Vec<(String, String)> {
    let mut cmd = Command::new(bin());
    cmd.args(["route", "-c"]).arg(config).args(args);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = clients.iter().map(|c| format!("{c}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "route failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect()
}

/// Runs the binary with `args`, returning its output.
pub fn ringway(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// A backend server on loopback running `handler` on a thread per connection.
pub struct Backend {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    pub fn spawn(bind: &str, handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Backend {
        Backend::try_spawn(bind, handler).unwrap()
    }

    /// As [`Backend::spawn`], but a bind that fails is returned, for a test that must
    /// find a port free on two addresses.
    pub fn try_spawn(
        bind: &str,
        handler: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let (acc, st) = (Arc::clone(&accepted), Arc::clone(&stop));
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        acc.fetch_add(1, Ordering::Relaxed);
                        let h = Arc::clone(&handler);
                        thread::spawn(move || h(s));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Backend {
            addr,
            accepted,
            stop,
        })
    }

    /// Says `name\n`, then echoes everything; passes the client's EOF back on.
    pub fn named_echo(bind: &str, name: &str) -> Backend {
        Backend::try_named_echo(bind, name).unwrap()
    }

    /// As [`Backend::named_echo`], returning a failed bind.
    pub fn try_named_echo(bind: &str, name: &str) -> std::io::Result<Backend> {
        let greeting = format!("{name}\n");
        Backend::try_spawn(bind, move |mut s| {
            if s.write_all(greeting.as_bytes()).is_err() {
                return;
            }
            echo(s);
        })
    }

    /// Echoes everything; passes the client's EOF back on.
    pub fn echo(bind: &str) -> Backend {
        Backend::spawn(bind, echo)
    }
}

impl Backend {
    /// Stops accepting and closes the listening socket (connections already accepted
    /// stay with their handler threads). New connects are refused within a few ms.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let addr = self.addr;
        assert!(
            eventually(Duration::from_secs(2), || TcpStream::connect(addr).is_err()),
            "backend {addr} still accepts"
        );
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `s` back to itself until EOF, then shuts down writing.
pub fn echo(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Connects to `to` from a chosen local IPv4 address (any of 127.0.0.0/8 is local), with
/// a 10 s read timeout.
pub fn connect_from(ip: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(ip.into(), 0).into()).unwrap();
    sock.connect(&to.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Whether the peer closed `s` (EOF or reset) within its read timeout. A read that
/// times out, or data, is not a close: a test built on this cannot pass by waiting.
pub fn closed_by_peer(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match (&*s).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Waits until datagrams to `addr` draw ICMP port-unreachable (its socket is closed).
pub fn wait_udp_closed(addr: SocketAddr) {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.connect(addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let refused = eventually(Duration::from_secs(3), || {
        let _ = probe.send(b"x");
        let mut b = [0u8; 8];
        matches!(probe.recv(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    assert!(refused, "{addr} still open");
}

/// Connects and reads the greeting line of a named backend.
pub fn connect_named(addr: SocketAddr) -> (TcpStream, String) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = read_line(&s);
    (s, name)
}

/// Reads one line (without the newline), byte by byte so nothing else is consumed.
pub fn read_line(s: &TcpStream) -> String {
    let mut r = BufReader::with_capacity(1, s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// A TOML config with one TCP listener on `listen` and `backends` (address, id). With
/// `RINGWAY_TEST_FORWARD` set (`auto`, `splice`, `copy`, `kernel`), a listener whose
/// `extra` does not choose its `forward` mode gets that one: CI runs the suite in each.
pub fn config(listen: SocketAddr, backends: &[(SocketAddr, &str)], extra: &str) -> String {
    let forced = std::env::var("RINGWAY_TEST_FORWARD")
        .ok()
        .filter(|_| !extra.contains("forward ="))
        .map(|mode| format!("forward = \"{mode}\"\n"))
        .unwrap_or_default();
    let extra = format!("{forced}{extra}");
    let mut s = format!("workers = 2\nshutdown_timeout = \"5s\"\n\n[[listener]]\nname = \"t\"\nlisten = \"{}\"\nconnect_timeout = \"1s\"\n{extra}\n", fmt_addr(listen));
    for (addr, id) in backends {
        s.push_str(&format!(
            "\n[[listener.backend]]\naddress = \"{}\"\nid = \"{id}\"\n",
            fmt_addr(*addr)
        ));
    }
    s
}

/// `toml` with `forward = "kernel"` on every UDP listener that does not choose its
/// `forward`, when `RINGWAY_TEST_FORWARD=kernel` (UDP has no splice or copy mode):
/// CI's kernel-mode run covers every UDP test.
pub fn udp_forward_mode(toml: &str) -> String {
    if std::env::var("RINGWAY_TEST_FORWARD").as_deref() != Ok("kernel") {
        return toml.to_string();
    }
    let lines: Vec<&str> = toml.lines().collect();
    let mut out = String::with_capacity(toml.len() + 64);
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == "protocol = \"udp\"" {
            let table = lines[i + 1..]
                .iter()
                .take_while(|l| !l.trim_start().starts_with('['));
            if !table.clone().any(|l| l.trim_start().starts_with("forward")) {
                out.push_str("forward = \"kernel\"\n");
            }
        }
    }
    out
}

fn fmt_addr(a: SocketAddr) -> String {
    a.to_string()
}

/// A UDP backend on loopback: answers each datagram with `name|` followed by the
/// datagram (so the reply shows who answered and that the bytes survived). Records the
/// source address of every datagram it got.
/// A datagram a [`UdpBackend`] got: its source and first bytes.
pub type Seen = (SocketAddr, Vec<u8>);

pub struct UdpBackend {
    pub addr: SocketAddr,
    /// Every datagram's source and its first 16 bytes (to tell probes from clients).
    pub sources: Arc<std::sync::Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl UdpBackend {
    pub fn spawn(bind: &str, name: &str) -> UdpBackend {
        Self::spawn_with(bind, name, 1)
    }

    /// Like `spawn`, answering every datagram `replies` times (0: never).
    pub fn spawn_with(bind: &str, name: &str, replies: usize) -> UdpBackend {
        let sock = std::net::UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let sources = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (src, st) = (Arc::clone(&sources), Arc::clone(&stop));
        let prefix = format!("{name}|").into_bytes();
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut out = Vec::with_capacity(65536 + prefix.len());
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                src.lock().unwrap().push((from, buf[..n.min(16)].to_vec()));
                out.clear();
                if n + prefix.len() <= 65507 {
                    out.extend_from_slice(&prefix);
                }
                out.extend_from_slice(&buf[..n]);
                for _ in 0..replies {
                    let _ = sock.send_to(&out, from);
                }
            }
        });
        UdpBackend {
            addr,
            sources,
            stop,
        }
    }

    /// Stops answering and closes the socket (within 50 ms).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn count(&self) -> usize {
        self.sources.lock().unwrap().len()
    }

    pub fn last_source(&self) -> Option<SocketAddr> {
        self.sources.lock().unwrap().last().map(|(from, _)| *from)
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A UDP config with one listener on `listen` and `backends` (address, id).
pub fn udp_config(listen: SocketAddr, backends: &[(SocketAddr, &str)], extra: &str) -> String {
    let mut s = format!("workers = 2\nshutdown_timeout = \"2s\"\n\n[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nlisten = \"{listen}\"\n{extra}\n");
    for (addr, id) in backends {
        s.push_str(&format!(
            "\n[[listener.backend]]\naddress = \"{addr}\"\nid = \"{id}\"\n"
        ));
    }
    s
}

/// A free UDP `127.0.0.1:PORT`.
pub fn free_udp_addr() -> SocketAddr {
    free_addr()
}

/// Starts ringway on a UDP config; waits until a probe datagram gets an answer.
pub fn start_udp(toml: &str, listen: SocketAddr) -> Ringway {
    let mut rw = Ringway::spawn(toml);
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let up = eventually(Duration::from_secs(10), || {
        let _ = probe.send_to(b"probe", listen);
        let mut b = [0u8; 64];
        probe.recv_from(&mut b).is_ok()
    });
    assert!(
        up,
        "ringway did not answer on udp {listen}; log:\n{}",
        rw.log()
    );
    rw.udp_probe = Some(probe);
    rw
}

/// Sends `data` from `sock` to `to` and waits for one reply, retrying (UDP may drop).
pub fn udp_ask(sock: &std::net::UdpSocket, to: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..4 {
        sock.send_to(data, to).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(
                from, to,
                "the reply must come from the address the client sent to"
            );
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Health settings that make tests fast: checks every 200 ms, 150 ms timeout.
pub const FAST_HEALTH: &str = "interval = \"200ms\"\ntimeout = \"150ms\"\nrise = 2\nfall = 3";

/// Connects `n` times and returns (client address, greeting) for each; every connect
/// must be served (a greeting arrives).
pub fn connect_many(listen: SocketAddr, n: usize) -> Vec<(SocketAddr, String)> {
    (0..n)
        .map(|_| {
            let (s, name) = connect_named(listen);
            assert!(!name.is_empty(), "a client got no greeting");
            (s.local_addr().unwrap(), name)
        })
        .collect()
}

/// Asserts that each (client, backend name) pair is where `route` says, with `down`.
pub fn assert_routed(
    rw: &Ringway,
    listener: &str,
    down: &[&str],
    seen: &[(SocketAddr, String)],
    names: &HashMap<String, String>,
) {
    let clients: Vec<SocketAddr> = seen.iter().map(|c| c.0).collect();
    let routed = rw.route(listener, down, &clients);
    for ((client, name), (_, addr)) in seen.iter().zip(&routed) {
        assert_eq!(
            &names[addr], name,
            "{client} went to {name}, route --down {down:?} says {addr}"
        );
    }
}

/// Counts lines of the log containing `needle`.
pub fn log_count(rw: &Ringway, needle: &str) -> usize {
    rw.log().lines().filter(|l| l.contains(needle)).count()
}

/// An HTTP response as a real client (ureq) saw it.
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Sends `method path` to `addr` with ureq, with `Authorization: Bearer token` when
/// given. Non-2xx answers are returned, not errors.
pub fn http(method: &str, addr: SocketAddr, path: &str, token: Option<&str>) -> HttpReply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match method {
        "GET" => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        "POST" => {
            let mut r = agent.post(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send_empty()
        }
        "DELETE" => {
            let mut r = agent.delete(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        other => panic!("unsupported method {other}"),
    };
    let mut res = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = res.body_mut().read_to_string().unwrap();
    HttpReply {
        status,
        content_type,
        body,
    }
}

/// `GET path` from a server that is not ringway's and may not be ready yet (it may
/// accept and then reset while it starts): the body, or why not.
pub fn try_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut res = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .map_err(|e| e.to_string())?;
    res.body_mut().read_to_string().map_err(|e| e.to_string())
}

/// `GET /status` from an admin API without a token, parsed.
pub fn status(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&http("GET", admin, "/status", None).body).unwrap()
}

/// Scrapes `/metrics`.
pub fn scrape(addr: SocketAddr) -> String {
    let r = http("GET", addr, "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The value of the sample `name{labels}` (labels in any order, all of them given) in
/// Prometheus text `text`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let mut have: Vec<String> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split(',').map(str::to_string).collect()
        };
        have.sort();
        (have == want).then(|| value.parse().ok()).flatten()
    })
}

/// A config file's `[metrics]` and `[admin]` tables (written before any listener).
pub fn ops_tables(metrics: SocketAddr, admin: SocketAddr, token: Option<&str>) -> String {
    let token = token
        .map(|t| format!("token = \"{t}\"\n"))
        .unwrap_or_default();
    format!("[metrics]\nlisten = \"{metrics}\"\n\n[admin]\nlisten = \"{admin}\"\n{token}\n")
}

/// Inserts top-level `tables` into a config made by `config()`/`udp_config()` (top-level
/// tables must come before the first `[[listener]]`).
pub fn with_tables(config: &str, tables: &str) -> String {
    let at = config.find("[[listener]]").unwrap();
    format!("{}{tables}\n{}", &config[..at], &config[at..])
}

/// Runs `ringway ctl --admin ADDR [--token T] ARGS...`.
pub fn ctl(admin: SocketAddr, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(["ctl", "--admin", &admin.to_string()]);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.args(args)
        .env_remove("RINGWAY_ADMIN_TOKEN")
        .output()
        .unwrap()
}

/// Whether the tests run as root (real uid 0): namespaces, mounts, other users.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Named echo backends on loopback, and the `(address, id)` list `config` takes.
pub fn named_backends(names: &[&'static str]) -> (Vec<Backend>, Vec<(SocketAddr, &'static str)>) {
    let backends: Vec<Backend> = names
        .iter()
        .map(|n| Backend::named_echo("127.0.0.1:0", n))
        .collect();
    let list = backends
        .iter()
        .zip(names)
        .map(|(b, n)| (b.addr, *n))
        .collect();
    (backends, list)
}

/// Fails the test unless it runs as root (for tests marked `#[ignore = "needs root"]`
/// that were asked to run anyway).
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (network namespaces, other users, mounts): run the suite as CI does, as root"
    );
}

/// Runs `f` on a thread inside a fresh network namespace (its own loopback, up), so a
/// test may bind wildcard addresses without listening on the machine's interfaces.
/// Processes spawned from that thread (ringway, `route`) live in it too. The namespace
/// is deleted afterwards. Needs root and iproute2 (the test fails without them).
pub fn in_netns<T: Send + 'static>(tag: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_named_netns(tag, move |_| f())
}

/// Like [`in_netns`], telling `f` the namespace's name (for `ip netns exec`).
pub fn in_named_netns<T: Send + 'static>(
    tag: &str,
    f: impl FnOnce(&str) -> T + Send + 'static,
) -> T {
    let ip = |args: &[&str]| Command::new("ip").args(args).output();
    require_root();
    assert!(
        ip(&["-V"]).is_ok(),
        "needs iproute2 (apt-get install iproute2)"
    );
    let name = format!("rw-{tag}-{}", std::process::id());
    let _ = ip(&["netns", "del", &name]);
    let made = ip(&["netns", "add", &name]).unwrap();
    assert!(
        made.status.success(),
        "ip netns add: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let up = ip(&["-n", &name, "link", "set", "lo", "up"]).unwrap();
    assert!(up.status.success());
    let path = format!("/var/run/netns/{name}");
    let inside = name.clone();
    let result = thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f(&inside)
    })
    .join();
    let _ = ip(&["netns", "del", &name]);
    match result {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Backend address -> name, as `route` prints addresses and backends greet with names.
pub fn names(bs: &[(SocketAddr, &str)]) -> HashMap<String, String> {
    bs.iter()
        .map(|(a, n)| (a.to_string(), n.to_string()))
        .collect()
}

/// Which [`UdpBackend`] answers `sock`'s datagrams to `to` (its name, from the reply).
pub fn udp_who(sock: &std::net::UdpSocket, to: SocketAddr) -> String {
    let r = udp_ask(sock, to, b"hi").expect("no reply");
    String::from_utf8_lossy(&r)
        .split('|')
        .next()
        .unwrap()
        .to_string()
}
