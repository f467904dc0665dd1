//! One direction of a session: bytes from a source to a destination. Pure: the
//! sockets and pipes are behind the [`Endpoint`], [`Pipe`] and [`Pipes`] traits, so
//! the state machine is tested step by step against scripted fakes (EAGAIN, short
//! writes, EOF, resets, small or missing pipes), as smoltcp tests its TCP socket.
//!
//! Two ways to move bytes, chosen per direction:
//!
//! * **copy**: `read` into the worker's scratch buffer, `write` to the destination. Two
//!   syscalls per message and no pipe: cheapest for small request/response traffic.
//! * **splice**: socket -> pipe -> socket with `splice(2)`, zero copy: the bulk path.
//!
//! A direction starts in copy mode and switches to splice as soon as one `read` fills
//! the whole scratch buffer (more data is waiting: a bulk transfer). It goes back to
//! copy mode, and gives its pipe back, when [`Half::sweep`] finds it idle. Bytes a
//! `write` did not take are parked in the direction's pipe (a copy into the pipe,
//! then spliced out like any other), or, when no pipe can be had (the fd budget is
//! spent, or the kernel only grants small pipes), kept in memory: a local shortage
//! slows a transfer down, it never fails one.
//!
//! Back-pressure: the source is read only when nothing is waiting for the destination,
//! so at most one pipe's (or one scratch buffer's) worth of data is held per direction.

use std::io;

use crate::dataplane::handoff::{mode_name, mode_of, HalfState};
pub use crate::dataplane::listener::Mode;

/// Size of the scratch buffer used in copy mode; a read that fills it switches the
/// direction to splice.
pub const COPY_BUF: usize = 16 * 1024;

/// Pipes smaller than this are not worth splicing through (the kernel grants two
/// pages once the user is over `pipe-user-pages-soft`): the direction copies instead.
pub const MIN_SPLICE_PIPE: usize = 64 * 1024;

/// A kernel pipe, as a direction uses it.
pub trait Pipe {
    /// Bytes it can hold.
    fn capacity(&self) -> usize;
    /// Copies bytes in (those a `write` did not take); returns how many it took.
    fn push(&self, buf: &[u8]) -> io::Result<usize>;
}

/// A connected stream socket, as a direction uses it.
pub trait Endpoint {
    /// The pipes it splices through.
    type Pipe: Pipe;
    /// `read(2)`: `Ok(0)` is EOF.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// `write(2)`.
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Moves up to `max` bytes from this socket into `pipe`; `Ok(0)` is EOF.
    fn splice_in(&self, pipe: &Self::Pipe, max: usize) -> io::Result<usize>;
    /// Moves up to `max` bytes from `pipe` into this socket.
    fn splice_out(&self, pipe: &Self::Pipe, max: usize) -> io::Result<usize>;
    /// `shutdown(SHUT_WR)`: passes an EOF on.
    fn shutdown_write(&self) -> io::Result<()>;
}

/// Where a direction gets pipes and gives them back.
pub trait Pipes<P> {
    /// An empty pipe, or `None` when none can be had now (the direction copies).
    fn take(&mut self) -> Option<P>;
    /// Gives a pipe back; `empty` says whether it still holds bytes (then it is closed).
    fn give(&mut self, pipe: P, empty: bool);
}

/// Readiness of one socket as last reported by epoll (edge-triggered): set by events,
/// cleared when a call says `WouldBlock` or a read/write comes back short.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ready {
    /// Data (or EOF, or an error) may be readable.
    read: bool,
    /// There may be room to write.
    write: bool,
    /// The peer has closed its sending side (or the socket has an error): EOF is
    /// waiting behind any data, so a short read no longer means "drained".
    hup: bool,
}

impl Ready {
    /// Takes in what an event said.
    pub fn mark(&mut self, readable: bool, closed: bool, writable: bool) {
        self.read |= readable || closed;
        self.hup |= closed;
        self.write |= writable;
    }

    /// Something may be readable.
    pub fn readable(&self) -> bool {
        self.read
    }

    /// The peer closed its side (or the socket failed).
    pub fn closed(&self) -> bool {
        self.hup
    }

    /// Says whether something may be readable now.
    pub fn set_readable(&mut self, readable: bool) {
        self.read = readable;
    }

    /// There is room to write (a connect just completed).
    pub fn set_writable(&mut self) {
        self.write = true;
    }

    /// May be readable and writable (a socket taken from another process: the calls
    /// find out).
    pub fn all() -> Ready {
        Ready {
            read: true,
            write: true,
            hup: false,
        }
    }
}

/// Which end of a direction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Reading from the source.
    Source,
    /// Writing to the destination.
    Destination,
}

/// A direction failed.
#[derive(Debug)]
pub struct Failure {
    end: End,
    error: io::Error,
}

impl Failure {
    /// Where.
    pub fn end(&self) -> End {
        self.end
    }

    /// What the OS said.
    pub fn error(&self) -> &io::Error {
        &self.error
    }
}

/// What a pump call achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes were read or written.
    moved: bool,
    /// The call stopped because its budget ran out, not because it had to wait.
    more: bool,
}

impl Progress {
    /// Bytes were read or written.
    pub fn moved(&self) -> bool {
        self.moved
    }

    /// It stopped at its budget with more to do.
    pub fn more(&self) -> bool {
        self.more
    }
}

/// State of one direction.
#[derive(Debug)]
pub struct Half<P> {
    pipe: Option<P>,
    /// Bytes in `pipe` not yet written to the destination.
    pending: u32,
    /// Bytes held in memory, behind those in the pipe (no pipe, or a small one).
    spill: Spill,
    mode: Mode,
    splice: bool,
    eof: bool,
    shut: bool,
    active: bool,
    /// Bytes delivered to the destination.
    bytes: u64,
}

/// Bytes held in memory for a destination that would not take them (rare: only when
/// no pipe can be had). Boxed, so that every direction without any (nearly all) pays
/// 8 bytes for it rather than a `Vec`'s 24.
#[derive(Debug, Default)]
// The extra allocation clippy warns of is the point: a thin pointer in the session.
#[allow(clippy::box_collection)]
struct Spill(Option<Box<Vec<u8>>>);

impl Spill {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Drops the first `n` bytes (those written); frees the buffer once empty.
    fn consume(&mut self, n: usize) {
        if let Some(v) = self.0.as_mut() {
            v.drain(..n.min(v.len()));
            if v.is_empty() {
                self.0 = None;
            }
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.0.get_or_insert_default().extend_from_slice(bytes);
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

fn fail<T>(end: End, error: io::Error) -> Result<T, Failure> {
    Err(Failure { end, error })
}

impl<P: Pipe> Half<P> {
    /// A new direction moving bytes the `mode` way.
    pub fn new(mode: Mode) -> Half<P> {
        // A session the kernel does not take forwards the default way.
        let mode = if mode == Mode::Kernel {
            Mode::Auto
        } else {
            mode
        };
        Half {
            pipe: None,
            pending: 0,
            spill: Spill::default(),
            mode,
            splice: mode == Mode::Splice,
            eof: false,
            shut: false,
            active: false,
            bytes: 0,
        }
    }

    /// Its state for another process, and its pipe (whose bytes are `pending`). Every
    /// field is named: one added does not compile until it is carried.
    pub fn export(self) -> (HalfState, Option<P>) {
        let Half {
            pipe,
            pending,
            spill,
            mode,
            splice,
            eof,
            shut,
            active,
            bytes,
        } = self;
        let state = HalfState {
            pipe: pipe.is_some(),
            pending,
            spill: spill.bytes().to_vec(),
            mode: mode_name(mode).to_string(),
            splice,
            eof,
            shut,
            active,
            bytes,
        };
        (state, pipe)
    }

    /// The direction [`Half::export`] gave, with its pipe (`None` when it had none,
    /// or it could not be taken: then its pending bytes are lost, which `pending`
    /// says).
    pub fn adopt(s: HalfState, pipe: Option<P>) -> Half<P> {
        let mut spill = Spill::default();
        spill.extend(&s.spill);
        let pending = if pipe.is_some() { s.pending } else { 0 };
        Half {
            pipe,
            pending,
            spill,
            mode: mode_of(&s.mode),
            splice: s.splice,
            eof: s.eof,
            shut: s.shut,
            active: s.active,
            bytes: s.bytes,
        }
    }

    /// True once the source's EOF has been passed on to the destination.
    pub fn done(&self) -> bool {
        self.shut
    }

    /// Nothing held, no EOF seen: the direction could be handed to someone else.
    pub fn at_rest(&self) -> bool {
        !self.holding() && !self.eof && !self.shut
    }

    /// True while bytes are waiting for the destination.
    pub fn holding(&self) -> bool {
        self.pending > 0 || !self.spill.is_empty()
    }

    /// Whether the direction is in splice mode.
    #[cfg(test)]
    pub fn splicing(&self) -> bool {
        self.splice
    }

    /// Whether it holds a pipe.
    pub fn has_pipe(&self) -> bool {
        self.pipe.is_some()
    }

    /// Bytes delivered to the destination so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds bytes delivered by someone else (the kernel, `forward = "kernel"`).
    pub fn count(&mut self, bytes: u64) {
        self.bytes += bytes;
    }

    /// A periodic look: a direction that moved nothing since the last look and holds
    /// no bytes gives its pipe back and returns to copy mode.
    pub fn sweep(&mut self, pipes: &mut impl Pipes<P>) {
        if !self.active && !self.holding() {
            if let Some(p) = self.pipe.take() {
                pipes.give(p, true);
            }
            self.splice = self.mode == Mode::Splice;
        }
        self.active = false;
    }

    /// Gives the pipe back at session end.
    pub fn release(&mut self, pipes: &mut impl Pipes<P>) {
        if let Some(p) = self.pipe.take() {
            pipes.give(p, self.pending == 0);
        }
    }

    /// Moves as much as possible from `src` to `dst` without blocking, spending at most
    /// `budget` reads of the source. `peer_done`: the other direction has finished, so
    /// the session closes as soon as this one does and the EOF needs no `shutdown(2)`
    /// (the `close(2)` that follows sends the FIN).
    pub fn pump<E: Endpoint<Pipe = P>>(
        &mut self,
        (src, src_ready): (&E, &mut Ready),
        (dst, dst_ready): (&E, &mut Ready),
        (buf, pipes): (&mut [u8], &mut impl Pipes<P>),
        mut budget: u32,
        peer_done: bool,
    ) -> Result<Progress, Failure> {
        let mut progress = Progress::default();
        loop {
            if self.holding() {
                if !dst_ready.write || !self.flush(dst, dst_ready, &mut progress)? {
                    break;
                }
                continue;
            }
            if self.eof {
                if !self.shut {
                    self.shut = true;
                    if !peer_done {
                        match dst.shutdown_write() {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                            Err(error) => return fail(End::Destination, error),
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
            if self.splice && self.splice_pipe(pipes) {
                self.splice_in(src, src_ready, &mut progress)?;
            } else {
                self.copy(
                    (src, src_ready),
                    (dst, dst_ready),
                    buf,
                    pipes,
                    &mut progress,
                )?;
            }
        }
        self.active |= progress.moved;
        Ok(progress)
    }

    /// Writes held bytes (pipe first, then memory); true when all went out.
    fn flush<E: Endpoint<Pipe = P>>(
        &mut self,
        dst: &E,
        dst_ready: &mut Ready,
        progress: &mut Progress,
    ) -> Result<bool, Failure> {
        if self.pending > 0 {
            let pipe = self.pipe.as_ref().expect("pending bytes live in a pipe");
            match dst.splice_out(pipe, self.pending as usize) {
                Ok(n) => {
                    self.pending -= n as u32;
                    self.bytes += n as u64;
                    progress.moved |= n > 0;
                }
                Err(e) if would_block(&e) => {
                    dst_ready.write = false;
                    return Ok(false);
                }
                Err(e) if interrupted(&e) => return Ok(true),
                Err(error) => return fail(End::Destination, error),
            }
            if self.pending > 0 {
                // Short write: the socket's send buffer is full.
                dst_ready.write = false;
                return Ok(false);
            }
        }
        if self.spill.is_empty() {
            return Ok(true);
        }
        if let Some(pipe) = self.pipe.as_ref() {
            // The pipe is empty again: the held bytes go through it.
            let n = pipe.push(self.spill.bytes()).unwrap_or(0);
            if n > 0 {
                self.spill.consume(n);
                self.pending += n as u32;
                return Ok(true);
            }
        }
        match dst.write(self.spill.bytes()) {
            Ok(n) => {
                self.spill.consume(n);
                self.bytes += n as u64;
                progress.moved |= n > 0;
                if !self.spill.is_empty() {
                    dst_ready.write = false;
                    return Ok(false);
                }
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                dst_ready.write = false;
                Ok(false)
            }
            Err(e) if interrupted(&e) => Ok(true),
            Err(error) => fail(End::Destination, error),
        }
    }

    /// Makes sure a pipe worth splicing through is here; false (copy mode from now on)
    /// when none can be had or the one granted is too small.
    fn splice_pipe(&mut self, pipes: &mut impl Pipes<P>) -> bool {
        if self.pipe.is_none() {
            self.pipe = pipes.take();
        }
        let ok = self
            .pipe
            .as_ref()
            .is_some_and(|p| p.capacity() >= MIN_SPLICE_PIPE);
        if !ok {
            self.splice = false;
        }
        ok
    }

    fn splice_in<E: Endpoint<Pipe = P>>(
        &mut self,
        src: &E,
        src_ready: &mut Ready,
        progress: &mut Progress,
    ) -> Result<(), Failure> {
        let pipe = self.pipe.as_ref().expect("checked by splice_pipe");
        match src.splice_in(pipe, pipe.capacity()) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.pending = n as u32;
                progress.moved = true;
            }
            Err(e) if would_block(&e) => src_ready.read = false,
            Err(e) if interrupted(&e) => {}
            Err(error) => return fail(End::Source, error),
        }
        Ok(())
    }

    fn copy<E: Endpoint<Pipe = P>>(
        &mut self,
        (src, src_ready): (&E, &mut Ready),
        (dst, dst_ready): (&E, &mut Ready),
        buf: &mut [u8],
        pipes: &mut impl Pipes<P>,
        progress: &mut Progress,
    ) -> Result<(), Failure> {
        let n = match src.read(buf) {
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
            Err(error) => return fail(End::Source, error),
        };
        progress.moved = true;
        if n < buf.len() {
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
            match dst.write(&buf[..n]) {
                Ok(m) => {
                    written = m;
                    if m < n {
                        dst_ready.write = false;
                    }
                }
                Err(e) if would_block(&e) || interrupted(&e) => dst_ready.write = false,
                Err(error) => return fail(End::Destination, error),
            }
        }
        self.bytes += written as u64;
        if written < n {
            self.park(&buf[written..n], pipes);
        }
        Ok(())
    }

    /// Holds bytes the destination did not take: in the pipe as far as it goes, in
    /// memory for the rest.
    fn park(&mut self, rest: &[u8], pipes: &mut impl Pipes<P>) {
        if self.pipe.is_none() {
            self.pipe = pipes.take();
        }
        let taken = match &self.pipe {
            Some(pipe) => pipe.push(rest).unwrap_or(0),
            None => 0,
        };
        self.pending += taken as u32;
        self.spill.extend(&rest[taken..]);
    }
}

#[cfg(test)]
mod tests;
