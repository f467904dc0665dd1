//! Kernel pipes, the buffers `splice(2)` moves bytes through.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec pipe.
#[derive(Debug)]
pub struct Pipe {
    read: File,
    write: File,
    capacity: usize,
}

impl Pipe {
    /// Creates a pipe and asks the kernel for `size` bytes of capacity.
    ///
    /// The kernel may grant less (a user over `pipe-user-pages-soft` gets two pages);
    /// [`Pipe::capacity`] says what was granted.
    pub fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid, writable array of two ints, as pipe2 requires.
        syscall!(pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC))?;
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        use std::os::fd::AsRawFd;
        // SAFETY: `write` is an open pipe descriptor; F_SETPIPE_SZ takes an int argument.
        // Failure (EPERM over the per-user limit) leaves the default size, which is fine.
        let _ = syscall!(fcntl(
            write.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            size as libc::c_int
        ));
        // SAFETY: `write` is an open pipe descriptor; F_GETPIPE_SZ takes no argument.
        let capacity = syscall!(fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ))? as usize;
        Ok(Pipe {
            read: File::from(read),
            write: File::from(write),
            capacity,
        })
    }

    /// Its two ends (read, write): to hand the pipe, with the bytes in it, to another
    /// process.
    pub fn into_fds(self) -> (OwnedFd, OwnedFd) {
        (OwnedFd::from(self.read), OwnedFd::from(self.write))
    }

    /// The pipe whose ends [`Pipe::into_fds`] gave (in this process or another).
    pub fn from_fds(read: OwnedFd, write: OwnedFd) -> io::Result<Pipe> {
        use std::os::fd::AsRawFd;
        // SAFETY: `write` is an open descriptor; F_GETPIPE_SZ takes no argument (and
        // fails with EBADF on anything but a pipe).
        let capacity = syscall!(fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ))? as usize;
        Ok(Pipe {
            read: File::from(read),
            write: File::from(write),
            capacity,
        })
    }

    /// Bytes the pipe can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The read end.
    pub fn reader(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The write end.
    pub fn writer(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// Copies bytes into the pipe (not zero-copy: for the few bytes a plain `write` to a
    /// socket did not take). Returns how many were taken.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &self.write, buf)
    }

    /// Reads bytes out of the pipe (tests and diagnostics).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &self.read, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_round_trip_and_capacity() {
        let p = Pipe::new(256 * 1024).unwrap();
        assert!(p.capacity() >= 4096);
        assert_eq!(p.write(b"hello").unwrap(), 5);
        let mut buf = [0u8; 16];
        assert_eq!(p.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        // Empty and non-blocking: WouldBlock, not a hang.
        assert_eq!(
            p.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn full_pipe_would_block() {
        let p = Pipe::new(4096).unwrap();
        let chunk = vec![7u8; 4096];
        let mut total = 0;
        loop {
            match p.write(&chunk) {
                Ok(n) => total += n,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        assert_eq!(total, p.capacity());
    }
}
