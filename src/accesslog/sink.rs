//! The workers' end of the access log: a bounded queue per worker and the settings they
//! read (on or off, the sample rate). Handing a record over never blocks: when the
//! queue is full the record is dropped and counted.
//!
//! A queue takes memory only for what is in it (a channel that grows in small blocks,
//! bounded by a count of its own), not for its bound: with the log off, or keeping
//! up, it costs next to nothing.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use super::record::{End, Record};
use crate::shard::{Counter, Sharded};

/// Why access-log records were lost (the `reason` label of
/// `ringway_access_log_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// A worker's queue to the writer was full (the writer fell behind).
    QueueFull,
    /// Writing to the log failed (no space, file too large, I/O error).
    WriteFailed,
    /// The log could not be opened (until a reload or SIGUSR1 opens it).
    NotOpen,
}

impl Lost {
    /// Every reason, in the order they are reported.
    pub const ALL: [Lost; 3] = [Lost::QueueFull, Lost::WriteFailed, Lost::NotOpen];

    /// Its `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Lost::QueueFull => "queue_full",
            Lost::WriteFailed => "write_failed",
            Lost::NotOpen => "not_open",
        }
    }
}

/// What the workers, the writer and the control plane share.
#[derive(Debug)]
pub(super) struct Shared {
    /// An access log is configured.
    enabled: AtomicBool,
    /// The fraction of successful connections logged, scaled to `u32::MAX`.
    sample: AtomicU32,
    /// Records dropped because a worker's queue was full, per worker.
    dropped: Sharded<Counter>,
    /// Records in each worker's queue now.
    queued: Box<[AtomicUsize]>,
    /// Records the writer lost: writes failed, no file open.
    write_failed: AtomicU64,
    not_open: AtomicU64,
}

impl Shared {
    pub fn new(workers: usize) -> Shared {
        Shared {
            enabled: AtomicBool::new(false),
            sample: AtomicU32::new(u32::MAX),
            dropped: Sharded::new(workers),
            queued: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            write_failed: AtomicU64::new(0),
            not_open: AtomicU64::new(0),
        }
    }

    /// The writer took `n` records off worker `worker`'s queue.
    pub fn taken(&self, worker: usize, n: usize) {
        self.queued[worker].fetch_sub(n, Relaxed);
    }

    /// The writer lost `n` records for `why` (not [`Lost::QueueFull`]).
    pub fn lost(&self, why: Lost, n: u64) {
        match why {
            Lost::QueueFull => {}
            Lost::WriteFailed => {
                self.write_failed.fetch_add(n, Relaxed);
            }
            Lost::NotOpen => {
                self.not_open.fetch_add(n, Relaxed);
            }
        }
    }

    /// Records lost so far, by reason.
    pub fn lost_by_reason(&self) -> [(Lost, u64); 3] {
        [
            (Lost::QueueFull, self.dropped.sum(Counter::get)),
            (Lost::WriteFailed, self.write_failed.load(Relaxed)),
            (Lost::NotOpen, self.not_open.load(Relaxed)),
        ]
    }

    /// Turns logging on with `sample` (0.0..=1.0), or off.
    pub fn set(&self, on: Option<f64>) {
        if let Some(sample) = on {
            let scaled = (sample.clamp(0.0, 1.0) * f64::from(u32::MAX)).round() as u32;
            self.sample.store(scaled, Relaxed);
        }
        self.enabled.store(on.is_some(), Relaxed);
    }

    /// Records lost so far, every reason together.
    pub fn dropped(&self) -> u64 {
        self.lost_by_reason().iter().map(|(_, n)| n).sum()
    }
}

/// One worker's handle (its planes each hold a clone).
#[derive(Debug, Clone)]
pub struct Sink {
    tx: Sender<Record>,
    shared: Arc<Shared>,
    worker: usize,
    /// xorshift state for sampling (no shared random source on the hot path).
    rng: u64,
}

impl Sink {
    pub(super) fn new(tx: Sender<Record>, shared: Arc<Shared>, worker: usize) -> Sink {
        Sink {
            tx,
            shared,
            worker,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
        }
    }

    /// Whether a record of a connection or flow that ended so is wanted: the log is
    /// on, and a successful one passes the sample (failed ones always do).
    #[inline]
    pub fn wants(&mut self, end: End) -> bool {
        if !self.shared.enabled.load(Relaxed) {
            return false;
        }
        let sample = self.shared.sample.load(Relaxed);
        if !end.is_success() || sample == u32::MAX {
            return true;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) < u64::from(sample)
    }

    /// Hands a record to the writer; dropped and counted when its queue is full.
    pub fn send(&self, record: Record) {
        let queued = &self.shared.queued[self.worker];
        if queued.fetch_add(1, Relaxed) >= super::writer::QUEUE || self.tx.send(record).is_err() {
            queued.fetch_sub(1, Relaxed);
            self.shared.dropped.shard(self.worker).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(shared: &Arc<Shared>) -> Sink {
        let (tx, _rx) = std::sync::mpsc::channel();
        Sink::new(tx, Arc::clone(shared), 0)
    }

    #[test]
    fn off_wants_nothing_failures_always_successes_by_sample() {
        let shared = Arc::new(Shared::new(1));
        let mut s = sink(&shared);
        assert!(!s.wants(End::ConnectFailed));
        shared.set(Some(1.0));
        assert!(s.wants(End::ClientClosed) && s.wants(End::ConnectFailed));
        shared.set(Some(0.0));
        assert!(!s.wants(End::ClientClosed));
        assert!(s.wants(End::ClientReset), "failures are always logged");
        shared.set(Some(0.1));
        let kept = (0..100_000).filter(|_| s.wants(End::BackendClosed)).count();
        assert!((9_000..11_000).contains(&kept), "{kept} of 100,000 at 0.1");
        shared.set(None);
        assert!(!s.wants(End::ClientReset));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let shared = Arc::new(Shared::new(1));
        let (tx, rx) = std::sync::mpsc::channel();
        let s = Sink::new(tx, Arc::clone(&shared), 0);
        // Full but for one place.
        shared.queued[0].store(super::super::writer::QUEUE - 1, Relaxed);
        let r = || {
            Record::refused(
                &Arc::from("l"),
                super::super::record::Proto::Tcp,
                "127.0.0.1:1".parse().unwrap(),
                End::Rejected,
                None,
            )
        };
        s.send(r());
        s.send(r());
        s.send(r());
        assert_eq!(shared.dropped(), 2);
        assert_eq!(shared.lost_by_reason()[0], (Lost::QueueFull, 2));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "only one was queued");
        shared.taken(0, 1);
        s.send(r());
        assert_eq!(shared.dropped(), 2, "room again");
    }
}
