//! Game-style UDP load through ringway: 10,000 flows sending small datagrams.
//!
//!     cargo bench --bench udp_game            # FLOWS=10000 ROUNDS=5 by default
//!     FORWARD=kernel cargo bench --bench udp_game   # established flows in the kernel
//!
//! Starts a UDP echo backend (a thread here) and ringway (the release binary), then:
//! 1. opens FLOWS client sockets and sends one 64-byte datagram from each (creating
//!    FLOWS flows), and reports ringway's RSS per flow (RSS after minus RSS before);
//! 2. sends ROUNDS rounds, each one wave of one datagram per flow through ringway and
//!    then one directly to the backend (interleaved, so both see the same noise), 200
//!    flows in flight at a time, and reports round trips/s of each, and ringway/direct
//!    overall and per round (median, min, max);
//! 3. pings 2,000 flows one at a time, through ringway and directly, and reports the
//!    p50/p99 round-trip time of both and the added latency.
//!
//! Loopback only; every loop is bounded in count and by timeouts.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams in flight at once (one per flow of a wave).
const WAVE: usize = 200;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One datagram from every socket to `to`, [`WAVE`] in flight at a time; returns
/// (replies received, replies lost).
fn waves(socks: &[UdpSocket], to: SocketAddr, payload: &[u8], buf: &mut [u8]) -> (usize, usize) {
    let (mut ok, mut lost) = (0, 0);
    for wave in socks.chunks(WAVE) {
        for s in wave {
            s.send_to(payload, to).unwrap();
        }
        for s in wave {
            if s.recv_from(buf).is_ok() {
                ok += 1;
            } else {
                lost += 1;
            }
        }
    }
    (ok, lost)
}

/// Busy CPU time of the whole machine so far (every core, all but idle and iowait),
/// in microseconds.
fn busy_us() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = s.lines().next() else {
        return 0;
    };
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // USER_HZ is 100 on Linux.
    busy * 10_000
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes benches; nothing to list.
    }
    let flows = env("FLOWS", 10_000);
    let rounds = env("ROUNDS", 5);
    let _ = ringway::sys::rlimit::raise_nofile();

    // The backend: echo every datagram.
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ =
        ringway::sys::sockopt::set_recv_buffer_force(std::os::fd::AsFd::as_fd(&backend), 8 << 20);
    backend
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !st.load(Ordering::Relaxed) {
            if let Ok((n, from)) = backend.recv_from(&mut buf) {
                let _ = backend.send_to(&buf[..n], from);
            }
        }
    });

    let listen: SocketAddr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("ringway-udp-game-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("ringway.toml");
    std::fs::write(
        &cfg,
        format!(
            "workers = 2\nworker_cpu_affinity = false\n[[listener]]\nname = \"game\"\nprotocol = \"udp\"\nlisten = \"{listen}\"\nudp_idle_timeout = \"120s\"\nudp_max_flows = {}\n{}[[listener.backend]]\naddress = \"{backend_addr}\"\n",
            flows + 100,
            std::env::var("FORWARD")
                .map(|f| format!("forward = \"{f}\"\n"))
                .unwrap_or_default(),
        ),
    )
    .unwrap();
    let bin =
        std::env::var("RINGWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ringway").to_string());
    let mut child = Command::new(bin)
        .args(["run", "-c"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(pid);

    let socks: Vec<UdpSocket> = (0..flows)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
        .collect();
    let payload = [7u8; 64];
    let mut buf = [0u8; 2048];
    // 1. Create the flows (in waves, so loopback buffers do not overflow).
    let (_, mut lost) = waves(&socks, listen, &payload, &mut buf);
    std::thread::sleep(Duration::from_millis(300));
    let rss_flows = rss_kib(pid);
    let per_flow = (rss_flows.saturating_sub(rss_before)) as f64 * 1024.0 / flows as f64;
    println!("udp_game: {flows} flows created ({lost} lost); ringway RSS {rss_before} KiB -> {rss_flows} KiB: {per_flow:.0} B per flow (user space; each flow also holds one kernel socket)");

    // 2. Throughput: ROUNDS rounds, each one wave over every flow through ringway and
    // then one directly to the backend (the physical limit), so both see the same
    // noise of a shared machine; CPU is the whole machine's (softirq work lands on
    // whoever sends).
    let targets = [("ringway", listen), ("direct", backend_addr)];
    // Per target: round trips, lost, seconds, machine CPU (µs).
    let mut totals = [(0usize, 0usize, 0f64, 0f64); 2];
    let mut ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut rate = [0f64; 2];
        for (i, (_, to)) in targets.iter().enumerate() {
            let (cpu0, start) = (busy_us(), Instant::now());
            let (ok, missed) = waves(&socks, *to, &payload, &mut buf);
            let secs = start.elapsed().as_secs_f64();
            let t = &mut totals[i];
            t.0 += ok;
            t.1 += missed;
            t.2 += secs;
            t.3 += busy_us().saturating_sub(cpu0) as f64;
            rate[i] = ok as f64 / secs;
        }
        ratios.push(rate[0] / rate[1]);
    }
    for ((name, _), (done, missed, secs, cpu)) in targets.iter().zip(totals) {
        println!(
            "udp_game: {name}: {done} round trips in {secs:.2} s = {:.0} round trips/s ({missed} lost); machine CPU {:.1} us per round trip",
            done as f64 / secs,
            cpu / done.max(1) as f64
        );
    }
    lost += totals[0].1;
    ratios.sort_by(f64::total_cmp);
    let rate = |t: (usize, usize, f64, f64)| t.0 as f64 / t.2;
    println!(
        "udp_game: ringway/direct {:.2}x overall; per round (interleaved) median {:.2}x, min {:.2}x, max {:.2}x over {rounds} rounds ({lost} lost through ringway in total)",
        rate(totals[0]) / rate(totals[1]),
        ratios.get(ratios.len() / 2).copied().unwrap_or(0.0),
        ratios.first().copied().unwrap_or(0.0),
        ratios.last().copied().unwrap_or(0.0),
    );

    // 3. Latency, one flow at a time: through ringway, then directly.
    let sample = 2000.min(flows);
    let mut via = Vec::with_capacity(sample);
    let mut direct = Vec::with_capacity(sample);
    for (i, s) in socks.iter().take(sample).enumerate() {
        for (to, out) in [(listen, &mut via), (backend_addr, &mut direct)] {
            let t = Instant::now();
            s.send_to(&payload, to).unwrap();
            if s.recv_from(&mut buf).is_ok() {
                out.push(t.elapsed());
            }
            let _ = i;
        }
    }
    let (v50, v99) = (percentile(&mut via, 0.5), percentile(&mut via, 0.99));
    let (d50, d99) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
    println!(
        "udp_game: round trip via ringway p50 {:.1} us p99 {:.1} us; direct p50 {:.1} us p99 {:.1} us; added p50 {:.1} us p99 {:.1} us",
        v50.as_secs_f64() * 1e6,
        v99.as_secs_f64() * 1e6,
        d50.as_secs_f64() * 1e6,
        d99.as_secs_f64() * 1e6,
        (v50.as_secs_f64() - d50.as_secs_f64()) * 1e6,
        (v99.as_secs_f64() - d99.as_secs_f64()) * 1e6,
    );
    let _ = child.kill();
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    let _ = std::fs::remove_dir_all(&dir);
}
