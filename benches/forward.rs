//! One direction of a session over real loopback sockets: copy (read/write through a
//! 16 KiB buffer) against splice (socket -> pipe -> socket), for messages of 1 KiB to
//! 1 MiB. The forwarding state machine (`dataplane::forward::Half`) is driven in a
//! loop without epoll, so the figure is the syscall and copy cost per byte, not the
//! event loop's. A writer thread feeds the source; a reader thread drains the
//! destination.
//!
//!     cargo bench --bench forward

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringway::dataplane::forward::{Half, Mode, Pipes, Ready, COPY_BUF};
use ringway::sys::Pipe;

/// Bytes moved per measured iteration.
const TOTAL: usize = 16 << 20;

/// Pipes of 256 KiB, as the data plane asks for, reused.
#[derive(Default)]
struct Pool(Vec<Pipe>);

impl Pipes<Pipe> for Pool {
    fn take(&mut self) -> Option<Pipe> {
        self.0.pop().or_else(|| Pipe::new(256 * 1024).ok())
    }
    fn give(&mut self, pipe: Pipe, empty: bool) {
        if empty {
            self.0.push(pipe);
        }
    }
}

/// A connected loopback pair: (our end, as mio sees it; the peer's end).
fn pair() -> (mio::net::TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    (mio::net::TcpStream::from_std(ours), peer)
}

/// Moves `TOTAL` bytes written in `chunk`-byte writes through one direction.
fn transfer(mode: Mode, chunk: usize) -> Duration {
    let (src, mut writer) = pair();
    let (dst, mut reader) = pair();
    let feed = std::thread::spawn(move || {
        let buf = vec![7u8; chunk];
        let mut left = TOTAL;
        while left > 0 {
            let n = chunk.min(left);
            writer.write_all(&buf[..n]).unwrap();
            left -= n;
        }
    });
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < TOTAL {
            got += reader.read(&mut buf).unwrap();
        }
    });
    let mut half: Half<Pipe> = Half::new(mode);
    let (mut src_ready, mut dst_ready) = (Ready::default(), Ready::default());
    let mut buf = vec![0u8; COPY_BUF];
    let mut pool = Pool::default();
    let started = Instant::now();
    while half.bytes() < TOTAL as u64 {
        // No epoll here: say both sockets may be ready and let the calls find out.
        src_ready.mark(true, false, true);
        dst_ready.mark(true, false, true);
        half.pump(
            (&src, &mut src_ready),
            (&dst, &mut dst_ready),
            (&mut buf, &mut pool),
            16,
            false,
        )
        .unwrap();
    }
    let took = started.elapsed();
    feed.join().unwrap();
    drain.join().unwrap();
    took
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    for chunk in [1024, 16 * 1024, 256 * 1024, 1024 * 1024] {
        for (name, mode) in [
            ("copy", Mode::Copy),
            ("splice", Mode::Splice),
            ("auto", Mode::Auto),
        ] {
            g.bench_with_input(BenchmarkId::new(name, chunk), &chunk, |b, &chunk| {
                b.iter_custom(|iters| (0..iters).map(|_| transfer(mode, chunk)).sum())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
