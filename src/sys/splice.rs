//! `splice(2)` between a socket and a pipe: the zero-copy forwarding path.
//!
//! Both calls are non-blocking (`SPLICE_F_NONBLOCK`, and the sockets and pipes are
//! `O_NONBLOCK` themselves). `Ok(0)` from [`splice_in`] means the socket reached EOF.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

use super::Pipe;

const FLAGS: libc::c_uint = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;

/// Moves up to `len` bytes from socket `from` into `pipe`. `Ok(0)` is EOF.
pub fn splice_in(from: BorrowedFd<'_>, pipe: &Pipe, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed from live owners for the duration of the
    // call; the offsets are null (sequential I/O on a socket and a pipe); the kernel
    // keeps no pointer after the call returns.
    let n = syscall!(splice(
        from.as_raw_fd(),
        ptr::null_mut(),
        pipe.writer().as_raw_fd(),
        ptr::null_mut(),
        len,
        FLAGS
    ))?;
    Ok(n as usize)
}

/// Moves up to `len` bytes from `pipe` into socket `to`.
pub fn splice_out(pipe: &Pipe, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: as in `splice_in`: borrowed, live descriptors, null offsets, no pointer
    // retained by the kernel.
    let n = syscall!(splice(
        pipe.reader().as_raw_fd(),
        ptr::null_mut(),
        to.as_raw_fd(),
        ptr::null_mut(),
        len,
        FLAGS
    ))?;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::fd::AsFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn socket_to_pipe_to_socket() {
        let (mut a, b) = pair();
        let (c, mut d) = pair();
        b.set_nonblocking(true).unwrap();
        c.set_nonblocking(true).unwrap();
        let p = Pipe::new(65536).unwrap();
        // Nothing sent yet: WouldBlock.
        assert_eq!(
            splice_in(b.as_fd(), &p, 1024).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.write_all(b"zero copy").unwrap();
        let mut n = 0;
        while n == 0 {
            n = match splice_in(b.as_fd(), &p, 1024) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => panic!("{e}"),
            };
        }
        assert_eq!(n, 9);
        assert_eq!(splice_out(&p, c.as_fd(), n).unwrap(), 9);
        let mut buf = [0u8; 9];
        d.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"zero copy");
        // EOF passes through as Ok(0).
        a.shutdown(Shutdown::Write).unwrap();
        b.set_nonblocking(false).unwrap();
        assert_eq!(splice_in(b.as_fd(), &p, 1024).unwrap(), 0);
    }

    #[test]
    fn partial_move_when_pipe_is_small() {
        let (mut a, b) = pair();
        let p = Pipe::new(4096).unwrap();
        let data = vec![1u8; 64 * 1024];
        a.write_all(&data).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let n = splice_in(b.as_fd(), &p, data.len()).unwrap();
        assert!(n > 0 && n < data.len(), "moved {n}");
        // The pipe is full now: the next splice would block.
        assert_eq!(
            splice_in(b.as_fd(), &p, data.len()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
