//! One direction of a session: bytes from a source socket to a destination socket.
//!
//! Two ways to move them, chosen per direction:
//!
//! * **copy**: `read` into the worker's scratch buffer, `write` to the destination. Two
//!   syscalls per message and no pipe: cheapest for small request/response traffic.
//! * **splice**: socket -> pipe -> socket with `splice(2)`, zero copy: the bulk path.
//!
//! A direction starts in copy mode and switches to splice as soon as one `read` fills the
//! whole scratch buffer (more data is waiting: a bulk transfer). It goes back to copy
//! mode, and gives its pipe back to the pool, when the worker's sweep finds it idle.
//! Bytes a `write` did not take are parked in the direction's pipe (a copy into the
//! pipe, then spliced out like any other); no per-connection heap buffer exists on the
//! normal path.
//!
//! Back-pressure: the source is read only when nothing is waiting for the destination,
//! so at most one pipe's worth of data is held per direction.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;

use mio::net::TcpStream;

use super::pipes::PipePool;
use crate::sys::splice::{splice_in, splice_out};
use crate::sys::Pipe;

/// Size of the scratch buffer used in copy mode; a read that fills it switches the
/// direction to splice.
pub const COPY_BUF: usize = 16 * 1024;

/// Readiness of one socket as last reported by epoll (edge-triggered): set by events,
/// cleared when a call says `WouldBlock` or a read/write comes back short.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ready {
    /// Data (or EOF, or an error) may be readable.
    pub read: bool,
    /// There may be room to write.
    pub write: bool,
    /// The peer has closed its sending side (or the socket has an error): EOF is
    /// waiting behind any data, so a short read no longer means "drained".
    pub hup: bool,
}

/// How a listener moves bytes (`forward` in the config).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy small messages, splice bulk data (the default).
    #[default]
    Auto,
    /// Always splice (what HAProxy's `option splice-request/response` does).
    Splice,
    /// Never splice: read/write through the scratch buffer.
    Copy,
}

/// Which end of a direction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Reading from the source.
    Source,
    /// Writing to the destination.
    Destination,
    /// Neither: the worker could not get a pipe.
    Local,
}

/// A direction failed.
#[derive(Debug)]
pub struct Failure {
    /// Where.
    pub end: End,
    /// What the OS said.
    pub error: io::Error,
}

/// What a pump call achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes were read or written.
    pub moved: bool,
    /// The call stopped because its budget ran out, not because it had to wait.
    pub more: bool,
}

/// State of one direction.
#[derive(Debug, Default)]
pub struct Half {
    pipe: Option<Pipe>,
    /// Bytes in `pipe` not yet written to the destination.
    pending: usize,
    /// Bytes that did not even fit the pipe (only if the kernel gave a tiny pipe).
    spill: Vec<u8>,
    mode: Mode,
    splice: bool,
    eof: bool,
    shut: bool,
    active: bool,
    /// Bytes delivered to the destination.
    pub bytes: u64,
}

/// Scratch space shared by all sessions of a worker.
#[derive(Debug)]
pub struct Scratch {
    /// Pipes.
    pub pool: PipePool,
    /// Copy-mode buffer.
    pub buf: Box<[u8]>,
}

impl Scratch {
    /// A new scratch area.
    pub fn new() -> Scratch {
        Scratch {
            pool: PipePool::default(),
            buf: vec![0u8; COPY_BUF].into_boxed_slice(),
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

impl Half {
    /// A new direction moving bytes the `mode` way.
    pub fn new(mode: Mode) -> Half {
        Half {
            mode,
            splice: mode == Mode::Splice,
            ..Half::default()
        }
    }

    /// True once the source's EOF has been passed on to the destination.
    pub fn done(&self) -> bool {
        self.shut
    }

    /// True while bytes are waiting for the destination.
    pub fn holding(&self) -> bool {
        self.pending > 0 || !self.spill.is_empty()
    }

    /// Whether the direction is in splice mode (for tests and diagnostics).
    pub fn splicing(&self) -> bool {
        self.splice
    }

    /// Called by the worker's periodic sweep: a direction that moved nothing since the
    /// last sweep and holds no bytes returns its pipe and goes back to copy mode.
    pub fn sweep(&mut self, pool: &mut PipePool) {
        if !self.active && !self.holding() {
            if let Some(p) = self.pipe.take() {
                pool.give(p);
            }
            self.splice = self.mode == Mode::Splice;
        }
        self.active = false;
    }

    /// Gives the pipe back at session end: to the pool when empty, closed otherwise.
    pub fn release(&mut self, pool: &mut PipePool) {
        if let Some(p) = self.pipe.take() {
            if self.pending == 0 {
                pool.give(p);
            }
        }
    }

    /// Moves as much as possible from `src` to `dst` without blocking, spending at most
    /// `budget` reads of the source. `peer_done`: the other direction has finished, so
    /// the session closes as soon as this one does and the EOF needs no `shutdown(2)`
    /// (the `close(2)` that follows sends the FIN).
    #[allow(clippy::too_many_arguments)]
    pub fn pump(
        &mut self,
        src: &TcpStream,
        src_ready: &mut Ready,
        dst: &TcpStream,
        dst_ready: &mut Ready,
        scratch: &mut Scratch,
        mut budget: u32,
        peer_done: bool,
    ) -> Result<Progress, Failure> {
        let mut progress = Progress::default();
        loop {
            if self.pending > 0 {
                if !dst_ready.write {
                    break;
                }
                let pipe = self.pipe.as_ref().expect("pending bytes live in a pipe");
                match splice_out(pipe, dst.as_fd(), self.pending) {
                    Ok(n) => {
                        self.pending -= n;
                        self.bytes += n as u64;
                        progress.moved = true;
                        if self.pending > 0 {
                            // Short write: the socket's send buffer is full.
                            dst_ready.write = false;
                            break;
                        }
                    }
                    Err(e) if would_block(&e) => {
                        dst_ready.write = false;
                        break;
                    }
                    Err(e) if interrupted(&e) => {}
                    Err(error) => {
                        return Err(Failure {
                            end: End::Destination,
                            error,
                        })
                    }
                }
                continue;
            }
            if !self.spill.is_empty() {
                let pipe = self.pipe.as_ref().expect("spill only exists beside a pipe");
                let n = pipe.write(&self.spill).unwrap_or(0);
                self.spill.drain(..n);
                self.pending += n;
                if n == 0 {
                    break;
                }
                continue;
            }
            if self.eof {
                if !self.shut {
                    self.shut = true;
                    if peer_done {
                        break;
                    }
                    match dst.shutdown(Shutdown::Write) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                        Err(error) => {
                            return Err(Failure {
                                end: End::Destination,
                                error,
                            })
                        }
                    }
                }
                break;
            }
            if !src_ready.read {
                break;
            }
            if budget == 0 {
                progress.more = true;
                break;
            }
            budget -= 1;
            if self.splice {
                self.splice_in(src, src_ready, scratch, &mut progress)?;
            } else {
                self.copy(src, src_ready, dst, dst_ready, scratch, &mut progress)?;
            }
        }
        self.active |= progress.moved;
        Ok(progress)
    }

    fn splice_in(
        &mut self,
        src: &TcpStream,
        src_ready: &mut Ready,
        scratch: &mut Scratch,
        progress: &mut Progress,
    ) -> Result<(), Failure> {
        let pipe = self.pipe(scratch)?;
        match splice_in(src.as_fd(), pipe, pipe.capacity()) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.pending = n;
                progress.moved = true;
            }
            Err(e) if would_block(&e) => src_ready.read = false,
            Err(e) if interrupted(&e) => {}
            Err(error) => {
                return Err(Failure {
                    end: End::Source,
                    error,
                })
            }
        }
        Ok(())
    }

    fn copy(
        &mut self,
        src: &TcpStream,
        src_ready: &mut Ready,
        dst: &TcpStream,
        dst_ready: &mut Ready,
        scratch: &mut Scratch,
        progress: &mut Progress,
    ) -> Result<(), Failure> {
        let n = match (&*src).read(&mut scratch.buf) {
            Ok(0) => {
                self.eof = true;
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if would_block(&e) => {
                src_ready.read = false;
                return Ok(());
            }
            Err(e) if interrupted(&e) => return Ok(()),
            Err(error) => {
                return Err(Failure {
                    end: End::Source,
                    error,
                })
            }
        };
        progress.moved = true;
        if n < scratch.buf.len() {
            // A short read from a stream socket drained it; epoll will report new data.
            // Not so when the peer's FIN is already queued: no new edge would report it.
            if !src_ready.hup {
                src_ready.read = false;
            }
        } else if self.mode == Mode::Auto {
            // More is waiting: this is bulk data, move the rest with splice.
            self.splice = true;
        }
        let mut written = 0;
        if dst_ready.write {
            match (&*dst).write(&scratch.buf[..n]) {
                Ok(m) => {
                    written = m;
                    if m < n {
                        dst_ready.write = false;
                    }
                }
                Err(e) if would_block(&e) || interrupted(&e) => dst_ready.write = false,
                Err(error) => {
                    return Err(Failure {
                        end: End::Destination,
                        error,
                    })
                }
            }
        }
        self.bytes += written as u64;
        if written < n {
            self.park(n - written, written, scratch)?;
        }
        Ok(())
    }

    /// Parks `scratch.buf[from..from + len]` in the pipe (and the spill, if the pipe is
    /// smaller than the scratch buffer).
    fn park(&mut self, len: usize, from: usize, scratch: &mut Scratch) -> Result<(), Failure> {
        ensure_pipe(&mut self.pipe, &mut scratch.pool)?;
        let rest = &scratch.buf[from..from + len];
        let pipe = self.pipe.as_ref().expect("just set");
        let taken = match pipe.write(rest) {
            Ok(n) => n,
            Err(e) if would_block(&e) => 0,
            Err(error) => {
                return Err(Failure {
                    end: End::Local,
                    error,
                })
            }
        };
        self.pending += taken;
        self.spill.extend_from_slice(&rest[taken..]);
        Ok(())
    }

    fn pipe(&mut self, scratch: &mut Scratch) -> Result<&Pipe, Failure> {
        ensure_pipe(&mut self.pipe, &mut scratch.pool)?;
        Ok(self.pipe.as_ref().expect("just set"))
    }
}

fn ensure_pipe(slot: &mut Option<Pipe>, pool: &mut PipePool) -> Result<(), Failure> {
    if slot.is_none() {
        *slot = Some(pool.take().map_err(|error| Failure {
            end: End::Local,
            error,
        })?);
    }
    Ok(())
}
