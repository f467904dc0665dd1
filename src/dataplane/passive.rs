//! Failures seen on the data path (a refused or timed-out connect, an ICMP error), on
//! their way to the control plane as passive health results, coalesced per backend and
//! bounded.
//!
//! A worker counts a failure into the backend's [`Failures`] (two relaxed atomics) and
//! sends a message only when the count was zero: however many connects fail at once,
//! the control plane gets one message per backend, takes the whole count with it, and
//! the channel never holds more than one message per backend. The channel is bounded
//! ([`CHANNEL`]) and a worker never waits on it: when it is full, the listener is
//! marked ([`Lost`]) and the control plane sweeps that listener's backends for counts
//! on its next tick, so a failure is never lost, only taken a little later.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

/// Messages the channel ([`super::pool::passive_channel`]) holds at most.
pub const CHANNEL: usize = 1024;

/// One backend's failures not yet taken by the control plane.
#[derive(Debug, Default)]
pub struct Failures {
    count: AtomicU32,
    /// The errno of the last one.
    errno: AtomicI32,
}

impl Failures {
    /// Counts a failure; true when the count was zero (the caller tells the control
    /// plane: nobody has yet).
    pub fn record(&self, error: &io::Error) -> bool {
        self.errno.store(errno_of(error), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::AcqRel) == 0
    }

    /// Takes every failure counted so far: how many, and the last one as an error.
    pub fn take(&self) -> (u32, io::Error) {
        let n = self.count.swap(0, Ordering::AcqRel);
        let e = io::Error::from_raw_os_error(self.errno.load(Ordering::Relaxed));
        (n, e)
    }

    /// Failures waiting.
    pub fn pending(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The errno that stands for `e` (a timeout ringway measured itself is ETIMEDOUT).
fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(match e.kind() {
        io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        io::ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
        io::ErrorKind::ConnectionReset => libc::ECONNRESET,
        _ => libc::EIO,
    })
}

/// Set when a listener's message did not fit in the channel: its backends are swept.
#[derive(Debug, Default)]
pub struct Lost(AtomicBool);

impl Lost {
    /// Marks it.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Clears it; true when it was set.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_failure_asks_for_a_message_and_take_gets_them_all() {
        let f = Failures::default();
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(f.record(&refused));
        for _ in 0..99 {
            assert!(!f.record(&refused));
        }
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        assert!(!f.record(&timeout));
        let (n, last) = f.take();
        assert_eq!(n, 101);
        assert_eq!(last.raw_os_error(), Some(libc::ETIMEDOUT));
        assert_eq!(f.pending(), 0);
        assert!(f.record(&refused), "after a take, the next one asks again");
    }
}
