//! Passing descriptors between processes over a unix `SOCK_SEQPACKET` pair
//! (`SCM_RIGHTS`): how an upgrade hands its listening sockets to the new process.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

/// Most descriptors one message carries (the kernel's limit, `SCM_MAX_FD`, is 253).
pub const MAX_FDS: usize = 200;

/// A connected pair of message sockets, both close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Lets `fd` survive `exec` (clears close-on-exec): the end a child is started with.
pub fn inheritable(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )?;
    Ok(())
}

/// Takes ownership of descriptor `raw`, inherited from the parent process (its number
/// came in the environment), and makes it close-on-exec again. An error when no such
/// descriptor is open.
///
/// Call it once per inherited number, before anything else could have opened or
/// closed that number.
pub fn adopt(raw: RawFd) -> io::Result<OwnedFd> {
    // Whether it is open at all: F_GETFD fails with EBADF when it is not.
    nix::fcntl::fcntl(raw, nix::fcntl::FcntlArg::F_GETFD)?;
    // SAFETY: `raw` is open (checked above); the parent opened it for this process and
    // nothing in this process knows its number but the caller, who gives it up here:
    // the OwnedFd is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(fd)
}

/// Sends `bytes` as one message on `sock`, with `fds` (at most [`MAX_FDS`]).
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message (at most {MAX_FDS})",
                fds.len()
            ),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", bytes.len()),
        ));
    }
    Ok(())
}

/// Receives one message from `sock` into `buf`: its length (0: the peer closed) and
/// the descriptors it carried, close-on-exec. A message cut short (longer than `buf`,
/// or with more descriptors than [`MAX_FDS`]) is an error, and its descriptors are
/// closed.
pub fn recv(sock: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = c {
            for raw in received {
                // SAFETY: the kernel installed `raw` in this process for this message
                // just now; nothing else refers to it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a message or its descriptors were cut short",
        ));
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_cross_with_their_message() {
        let (a, b) = pair().unwrap();
        let (p, q) = pair().unwrap();
        send(a.as_fd(), b"hello", &[p.as_fd(), q.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv(&b, &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"hello"[..], 2));
        // The received p still talks to q.
        send(fds[0].as_fd(), b"x", &[]).unwrap();
        let (n, none) = recv(&q, &mut buf).unwrap();
        assert_eq!((n, none.len()), (1, 0));
        drop(a);
        assert_eq!(recv(&b, &mut buf).unwrap().0, 0, "closed peer");
    }

    #[test]
    fn a_message_too_long_for_the_buffer_is_an_error() {
        let (a, b) = pair().unwrap();
        send(a.as_fd(), &[7u8; 64], &[]).unwrap();
        let mut small = [0u8; 8];
        assert!(recv(&b, &mut small).is_err());
    }
}
