//! What one access-log record costs: on the worker (filling a `Record` and handing it
//! to the writer's bounded queue) and on the writer thread (formatting it as a JSON or
//! text line). The worker's figure is what the data path pays; the writer's runs on a
//! thread of its own. peerbench gives the end-to-end figure (docs/BENCHMARKS.md).
//!
//!     cargo bench --bench access_log

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use ringway::accesslog::{AccessLog, End, Format, Proto, Reached, Record, Settings, Target};

/// Records handed over per measured batch: below the queue's capacity, so none is
/// dropped; the writer drains the queue between batches, outside the timing.
const BATCH: u64 = 10_000;

fn record(listener: &Arc<str>, backend: &Reached, port: u16) -> Record {
    Record {
        time: SystemTime::now(),
        listener: Arc::clone(listener),
        proto: Proto::Tcp,
        client: SocketAddr::from(([192, 0, 2, 10], port)),
        backend: Some(backend.clone()),
        pool: Some(Arc::clone(listener)),
        sni: None,
        bytes_in: 517,
        bytes_out: 18_342,
        duration: Duration::from_millis(12),
        connect: Some(Duration::from_micros(250)),
        retries: 0,
        end: End::ClientClosed,
        detail: None,
        datagrams: None,
        failed: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let listener: Arc<str> = Arc::from("web");
    let backend = Reached {
        id: Arc::from("app-2"),
        addr: SocketAddr::from(([10, 0, 0, 2], 8080)),
    };

    // The worker's side: build the record, ask the sampler, hand it over.
    let settings = Settings {
        target: Target::File("/dev/null".into()),
        format: Format::Json,
        sample: 1.0,
    };
    let (log, mut sinks) = AccessLog::start(1, Some(settings)).unwrap();
    let mut sink = sinks.pop().unwrap();
    let control = log.control();
    c.bench_function("access_log/worker: record + wants + send", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let start = Instant::now();
                for i in 0..n {
                    let r = record(&listener, &backend, i as u16);
                    if sink.wants(r.end) {
                        sink.send(r);
                    }
                }
                spent += start.elapsed();
                left -= n;
                // Let the writer drain the queue (it wakes every 100 ms).
                std::thread::sleep(ringway::accesslog::TICK * 2);
            }
            spent
        })
    });
    assert_eq!(control.dropped(), 0, "the bench overflowed the queue");
    log.stop();

    // The writer's side: one line per record.
    let r = record(&listener, &backend, 54_321);
    let mut out = Vec::with_capacity(64 << 10);
    for (name, format) in [("json", Format::Json), ("text", Format::Text)] {
        c.bench_function(&format!("access_log/writer: format {name} line"), |b| {
            b.iter(|| {
                out.clear();
                ringway::accesslog::format::line(format, std::hint::black_box(&r), &mut out);
                out.len()
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
