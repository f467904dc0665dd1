//! What a backend sent while its session was being handed to the kernel, in the moment
//! its socket was in the sockhash without a peer entry.
//!
//! The join gates the backend socket (`SO_RCVLOWAT`) so the program does not see its
//! bytes then, but a FIN (or memory pressure) wakes the program past the gate: a
//! backend that answers and closes at once (a refusal with its reason, NGINX's
//! `return`) has its answer passed to its own socket's queue. Those bytes came first,
//! and nothing has followed them to the client yet (the program had no peer for them),
//! so ringway reads them and writes them to the client itself, then checks that the
//! program moved nothing of the backend's meanwhile (that would be out of order).

use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;

/// The most ringway passes on this way: a gate's worth is all a backend can have sent.
const MOST: usize = 256 * 1024;

/// Passes what the backend's socket holds to the client's; returns how many bytes.
/// `moved_from_backend` reads the program's count of bytes it redirected from the
/// backend (it must stay 0). An error means the bytes could not be passed on in
/// order, whole: the session must end.
pub(super) fn pass_on(
    client: BorrowedFd<'_>,
    backend: BorrowedFd<'_>,
    moved_from_backend: impl Fn() -> u64,
) -> io::Result<u64> {
    let (from, to) = (
        socket2::SockRef::from(&backend),
        socket2::SockRef::from(&client),
    );
    let mut buf = vec![0u8; 16 * 1024];
    let mut wrote = 0usize;
    loop {
        let n = match (&*from).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        wrote += n;
        if wrote > MOST {
            return Err(io::Error::other(
                "more than a gate's worth arrived while joining",
            ));
        }
        // Both sockets are non-blocking: a client whose send buffer cannot take a
        // gate's worth ends the session rather than stall the worker.
        (&*to).write_all(&buf[..n])?;
    }
    if moved_from_backend() > 0 {
        return Err(io::Error::other(
            "the backend's later bytes went ahead of what it sent while joining",
        ));
    }
    Ok(wrote as u64)
}
