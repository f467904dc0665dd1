//! A session the kernel forwards: passing each EOF on once its direction has been
//! delivered, its idle time and its byte counts.

use std::io;
use std::os::fd::BorrowedFd;

use crate::sys::sockopt::{tcp_progress, unacked_bytes};

/// Index of the client socket (source of the upstream direction) in a pair's arrays.
const CLIENT: usize = 0;
/// Index of the backend socket.
const BACKEND: usize = 1;

/// Bytes a socket has had queued for sending since it opened (in sequence space:
/// acknowledged plus still in its send queue), never more than the truth: `TCP_INFO`
/// is read before `SIOCOUTQ`, so an acknowledgement landing between the two calls
/// makes it smaller, not larger.
fn queued(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let acked = tcp_progress(fd)?.acked;
    Ok(acked + unacked_bytes(fd)?)
}

/// [`queued`], exactly: read until the send queue did not move around the `TCP_INFO`
/// read (nothing is written to the socket meanwhile).
pub(super) fn queued_stable(fd: BorrowedFd<'_>) -> io::Result<u64> {
    for _ in 0..64 {
        let before = unacked_bytes(fd)?;
        let acked = tcp_progress(fd)?.acked;
        if unacked_bytes(fd)? == before {
            return Ok(acked + before);
        }
    }
    Err(io::Error::other("send queue never settled"))
}

/// A session forwarded by the kernel. Index 0 is the client socket (and the
/// client -> backend direction), 1 the backend.
#[derive(Debug)]
pub struct Pair {
    cookies: [u64; 2],
    /// What each socket had queued for sending when it joined.
    base: [u64; 2],
    /// The source of each direction has sent its EOF.
    eof: [bool; 2],
    /// ... and it has been passed on.
    shut: [bool; 2],
    /// Bytes of each direction already added to the metrics.
    counted: [u64; 2],
    /// Bytes of each direction ringway wrote itself after joining (what the backend
    /// sent while joining, `held.rs`): counted as moved.
    wrote: [u64; 2],
    /// Looks in a row that found an EOF waiting for its direction's bytes (0: none
    /// waits): the next look comes later each time.
    draining: u8,
}

/// The longest wait between two looks at an EOF that waits for its bytes.
pub const LOOK_MAX: u64 = 64;

impl Pair {
    pub(super) fn new(cookies: [u64; 2], base: [u64; 2]) -> Pair {
        Pair {
            cookies,
            base,
            eof: [false; 2],
            shut: [false; 2],
            counted: [0; 2],
            wrote: [0; 2],
            draining: 0,
        }
    }

    /// ringway wrote `n` bytes of the backend's to the client after the join: they are
    /// in the client's send queue but not the program's count.
    pub(super) fn wrote_to_client(&mut self, n: u64) {
        self.base[CLIENT] += n;
        self.wrote[BACKEND] += n;
    }

    /// The client's and the backend's socket cookies.
    pub fn cookies(&self) -> [u64; 2] {
        self.cookies
    }

    /// Whether the side (0 client, 1 backend) has sent its EOF.
    pub fn eof(&self, side: usize) -> bool {
        self.eof[side]
    }

    /// Takes in that the client (`closed[0]`) or the backend (`closed[1]`) has sent
    /// its EOF, and passes each EOF on whose direction has been delivered; true once
    /// both are. `moved` reads the program's byte counts of each direction for the
    /// pair's cookies (map lookups: only made while an EOF waits).
    pub fn advance(
        &mut self,
        moved: impl FnOnce([u64; 2]) -> [u64; 2],
        fds: [BorrowedFd<'_>; 2],
        closed: [bool; 2],
    ) -> io::Result<bool> {
        let mut draining = false;
        let mut moved = Some(moved);
        let mut counts = [0; 2];
        for src in [CLIENT, BACKEND] {
            self.eof[src] |= closed[src];
            if !self.eof[src] || self.shut[src] {
                continue;
            }
            if let Some(read) = moved.take() {
                counts = read(self.cookies);
            }
            let dst = 1 - src;
            if queued(fds[dst])?.saturating_sub(self.base[dst]) >= counts[src] {
                socket2::SockRef::from(&fds[dst]).shutdown(std::net::Shutdown::Write)?;
                self.shut[src] = true;
            } else {
                draining = true;
            }
        }
        self.draining = if draining {
            self.draining.saturating_add(1)
        } else {
            0
        };
        Ok(self.shut == [true; 2])
    }

    /// Every byte the program moved each way (`moved`, as [`Pair::advance`] reads
    /// it) is in its destination's send queue: none is held in the kernel between
    /// the two sockets.
    pub fn delivered(&self, moved: [u64; 2], fds: [BorrowedFd<'_>; 2]) -> io::Result<bool> {
        for src in [CLIENT, BACKEND] {
            let dst = 1 - src;
            if queued(fds[dst])?.saturating_sub(self.base[dst]) < moved[src] {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The last look found an EOF waiting for its direction's bytes.
    pub fn draining(&self) -> bool {
        self.draining > 0
    }

    /// Milliseconds until the next look at a waiting EOF: 1 after the first look, then
    /// doubling up to [`LOOK_MAX`] (a peer that stopped reading would otherwise have its
    /// session polled every millisecond until its idle timeout).
    pub fn next_look(&self) -> u64 {
        (1u64 << self.draining.saturating_sub(1).min(6)).min(LOOK_MAX)
    }

    /// Milliseconds since either socket last received data.
    pub fn quiet(fds: [BorrowedFd<'_>; 2]) -> io::Result<u64> {
        let a = tcp_progress(fds[CLIENT])?.since_data_received;
        let b = tcp_progress(fds[BACKEND])?.since_data_received;
        Ok(u64::from(a.min(b)))
    }

    /// Bytes moved each way (client -> backend, backend -> client) since the last
    /// call, given the program's counts now.
    pub fn take_moved(&mut self, moved: [u64; 2]) -> [u64; 2] {
        let mut fresh = [0; 2];
        for side in [CLIENT, BACKEND] {
            let now = (moved[side] + self.wrote[side]).max(self.counted[side]);
            fresh[side] = now - self.counted[side];
            self.counted[side] = now;
        }
        fresh
    }
}
