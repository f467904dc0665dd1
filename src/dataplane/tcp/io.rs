//! The real I/O behind [`forward`](super::forward)'s traits: mio's `TcpStream` and the
//! kernel pipes of [`crate::sys`].

use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;

use mio::net::TcpStream;

use super::forward::{Endpoint, Pipe};
use crate::sys;
use crate::sys::splice::{splice_in, splice_out};

impl Pipe for sys::Pipe {
    fn capacity(&self) -> usize {
        sys::Pipe::capacity(self)
    }

    fn push(&self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }
}

impl Endpoint for TcpStream {
    type Pipe = sys::Pipe;

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut stream: &TcpStream = self;
        io::Read::read(&mut stream, buf)
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut stream: &TcpStream = self;
        io::Write::write(&mut stream, buf)
    }

    fn splice_in(&self, pipe: &sys::Pipe, max: usize) -> io::Result<usize> {
        splice_in(self.as_fd(), pipe, max)
    }

    fn splice_out(&self, pipe: &sys::Pipe, max: usize) -> io::Result<usize> {
        splice_out(pipe, self.as_fd(), max)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}
