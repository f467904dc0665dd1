//! The forwarding state machine against scripted sockets and pipes: every step is
//! decided by the script, nothing by timing.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;

use super::*;

/// A pipe in memory.
struct FakePipe {
    data: RefCell<VecDeque<u8>>,
    cap: usize,
}

impl Pipe for FakePipe {
    fn capacity(&self) -> usize {
        self.cap
    }
    fn push(&self, buf: &[u8]) -> io::Result<usize> {
        let mut d = self.data.borrow_mut();
        let n = buf.len().min(self.cap - d.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        d.extend(&buf[..n]);
        Ok(n)
    }
}

/// What the next read of a [`FakeSock`] returns.
#[derive(Debug, Clone)]
enum Op {
    Data(Vec<u8>),
    WouldBlock,
    Eof,
    Reset,
}

/// A socket whose reads follow a script and whose writes take `room` bytes, then
/// say WouldBlock. It remembers when a read or a write last said WouldBlock: the
/// kernel's edge-triggered events depend on it (see the edge proptest).
#[derive(Default)]
struct FakeSock {
    reads: RefCell<VecDeque<Op>>,
    written: RefCell<Vec<u8>>,
    room: Cell<usize>,
    write_error: Cell<Option<io::ErrorKind>>,
    shut: Cell<u32>,
    writes: Cell<u32>,
    /// A write took less than it was given (or nothing) since the last writable
    /// event.
    blocked: Cell<bool>,
}

impl FakeSock {
    fn reading(ops: &[Op]) -> FakeSock {
        FakeSock {
            reads: RefCell::new(ops.iter().cloned().collect()),
            ..FakeSock::default()
        }
    }

    fn writing(room: usize) -> FakeSock {
        let s = FakeSock::default();
        s.room.set(room);
        s
    }

    /// Takes up to `max` bytes of the next scripted read.
    fn next_read(&self, max: usize) -> io::Result<Vec<u8>> {
        let mut reads = self.reads.borrow_mut();
        match reads.pop_front() {
            None | Some(Op::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Some(Op::Eof) => {
                reads.push_front(Op::Eof);
                Ok(Vec::new())
            }
            Some(Op::Reset) => Err(io::ErrorKind::ConnectionReset.into()),
            Some(Op::Data(mut d)) => {
                if d.len() > max {
                    let rest = d.split_off(max);
                    reads.push_front(Op::Data(rest));
                }
                Ok(d)
            }
        }
    }

    fn take_room(&self, want: usize) -> io::Result<usize> {
        if let Some(kind) = self.write_error.get() {
            return Err(kind.into());
        }
        let n = want.min(self.room.get());
        // A write that did not take everything leaves the socket waiting for room:
        // the kernel sends a writable event when room appears (SOCK_NOSPACE).
        if n < want {
            self.blocked.set(true);
        }
        if n == 0 && want > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.room.set(self.room.get() - n);
        self.writes.set(self.writes.get() + 1);
        Ok(n)
    }
}

impl Endpoint for FakeSock {
    type Pipe = FakePipe;

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let d = self.next_read(buf.len())?;
        buf[..d.len()].copy_from_slice(&d);
        Ok(d.len())
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let n = self.take_room(buf.len())?;
        self.written.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn splice_in(&self, pipe: &FakePipe, max: usize) -> io::Result<usize> {
        let room = pipe.cap - pipe.data.borrow().len();
        let d = self.next_read(max.min(room))?;
        pipe.data.borrow_mut().extend(&d);
        Ok(d.len())
    }

    fn splice_out(&self, pipe: &FakePipe, max: usize) -> io::Result<usize> {
        let avail = pipe.data.borrow().len().min(max);
        let n = self.take_room(avail)?;
        let moved: Vec<u8> = pipe.data.borrow_mut().drain(..n).collect();
        self.written.borrow_mut().extend_from_slice(&moved);
        Ok(n)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shut.set(self.shut.get() + 1);
        Ok(())
    }
}

/// A pool of fake pipes of `cap` bytes; `left` more can be taken.
struct FakePipes {
    cap: usize,
    left: usize,
    given: usize,
    closed: usize,
}

impl FakePipes {
    fn new(cap: usize, left: usize) -> FakePipes {
        FakePipes {
            cap,
            left,
            given: 0,
            closed: 0,
        }
    }
}

impl Pipes<FakePipe> for FakePipes {
    fn take(&mut self) -> Option<FakePipe> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(FakePipe {
            data: RefCell::new(VecDeque::new()),
            cap: self.cap,
        })
    }
    fn give(&mut self, pipe: FakePipe, empty: bool) {
        assert_eq!(empty, pipe.data.borrow().is_empty(), "told the truth");
        if empty {
            self.given += 1;
            self.left += 1;
        } else {
            self.closed += 1;
        }
    }
}

fn ready() -> Ready {
    Ready {
        read: true,
        write: true,
        hup: false,
    }
}

/// One pump call with a scratch buffer of `COPY_BUF`.
fn pump(
    h: &mut Half<FakePipe>,
    src: (&FakeSock, &mut Ready),
    dst: (&FakeSock, &mut Ready),
    pipes: &mut FakePipes,
    budget: u32,
) -> Result<Progress, Failure> {
    let mut buf = vec![0u8; COPY_BUF];
    h.pump(src, dst, (&mut buf, pipes), budget, false)
}

#[test]
fn a_small_message_is_copied_and_a_short_read_clears_readable() {
    let src = FakeSock::reading(&[Op::Data(b"hello".to_vec())]);
    let dst = FakeSock::writing(1 << 20);
    let (mut sr, mut dr) = (ready(), ready());
    let mut pipes = FakePipes::new(1 << 18, 4);
    let mut h = Half::new(Mode::Auto);
    let p = pump(&mut h, (&src, &mut sr), (&dst, &mut dr), &mut pipes, 16).unwrap();
    assert_eq!(
        p,
        Progress {
            moved: true,
            more: false
        }
    );
    assert_eq!(&*dst.written.borrow(), b"hello");
    assert!(!sr.read, "a short read drained the socket");
    assert!(
        !h.splicing() && !h.has_pipe(),
        "small messages take no pipe"
    );
    assert_eq!(h.bytes(), 5);
}

#[test]
fn a_short_write_parks_the_rest_and_order_is_kept() {
    let src = FakeSock::reading(&[Op::Data(vec![1; 1000]), Op::Data(vec![2; 10])]);
    let dst = FakeSock::writing(300);
    let (mut sr, mut dr) = (ready(), ready());
    sr.hup = true; // keep reading after a short read
    let mut pipes = FakePipes::new(1 << 18, 4);
    let mut h = Half::new(Mode::Auto);
    pump(&mut h, (&src, &mut sr), (&dst, &mut dr), &mut pipes, 16).unwrap();
    assert!(h.holding() && h.has_pipe());
    assert!(!dr.write);
    assert_eq!(dst.written.borrow().len(), 300);
    // Back-pressure: nothing more is read while bytes wait.
    assert_eq!(src.reads.borrow().len(), 1);
    dst.room.set(1 << 20);
    dr.write = true;
    pump(&mut h, (&src, &mut sr), (&dst, &mut dr), &mut pipes, 16).unwrap();
    let mut want = vec![1u8; 1000];
    want.extend_from_slice(&[2; 10]);
    assert_eq!(*dst.written.borrow(), want);
    assert!(!h.holding());
}

#[test]
fn eof_is_passed_on_once_after_the_bytes() {
    let src = FakeSock::reading(&[Op::Data(b"last".to_vec()), Op::Eof]);
    let dst = FakeSock::writing(1 << 20);
    let (mut sr, mut dr) = (ready(), ready());
    sr.hup = true;
    let mut pipes = FakePipes::new(1 << 18, 4);
    let mut h = Half::new(Mode::Auto);
    pump(&mut h, (&src, &mut sr), (&dst, &mut dr), &mut pipes, 16).unwrap();
    assert!(h.done());
    assert_eq!(dst.shut.get(), 1);
    assert_eq!(&*dst.written.borrow(), b"last");
    pump(&mut h, (&src, &mut sr), (&dst, &mut dr), &mut pipes, 16).unwrap();
    assert_eq!(dst.shut.get(), 1, "once");
}

#[test]
fn eof_after_the_other_direction_ended_needs_no_shutdown() {
    let src = FakeSock::reading(&[Op::Eof]);
    let dst = FakeSock::writing(10);
    let (mut sr, mut dr) = (ready(), ready());
    let mut pipes = FakePipes::new(1 << 18, 4);
    let mut h = Half::new(Mode::Auto);
    let mut buf = vec![0u8; COPY_BUF];
    h.pump(
        (&src, &mut sr),
        (&dst, &mut dr),
        (&mut buf, &mut pipes),
        16,
        true,
    )
    .unwrap();
    assert!(h.done());
    assert_eq!(dst.shut.get(), 0, "the close that follows sends the FIN");
}

#[test]
fn a_reset_source_and_a_failing_destination_say_which_end() {
    let src = FakeSock::reading(&[Op::Reset]);
    let dst = FakeSock::writing(10);
    let mut pipes = FakePipes::new(1 << 18, 4);
    let mut h = Half::new(Mode::Auto);
    let f = pump(
        &mut h,
        (&src, &mut ready()),
        (&dst, &mut ready()),
        &mut pipes,
        16,
    )
    .unwrap_err();
    assert_eq!(f.end, End::Source);
    assert_eq!(f.error.kind(), io::ErrorKind::ConnectionReset);

    let src = FakeSock::reading(&[Op::Data(b"x".to_vec())]);
    dst.write_error.set(Some(io::ErrorKind::BrokenPipe));
    let mut h = Half::new(Mode::Auto);
    let f = pump(
        &mut h,
        (&src, &mut ready()),
        (&dst, &mut ready()),
        &mut pipes,
        16,
    )
    .unwrap_err();
    assert_eq!(f.end, End::Destination);
}

#[test]
fn a_full_read_switches_to_splice_and_bulk_moves_through_the_pipe() {
    let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let src = FakeSock::reading(&[Op::Data(data.clone()), Op::Eof]);
    let dst = FakeSock::writing(usize::MAX);
    let (mut sr, mut dr) = (ready(), ready());
    let mut pipes = FakePipes::new(1 << 16, 4);
    let mut h = Half::new(Mode::Auto);
    let writes_before = dst.writes.get();
    pump(&mut h, (&src, &mut sr), (&dst, &mut dr), &mut pipes, 64).unwrap();
    assert!(h.splicing() && h.has_pipe());
    assert_eq!(*dst.written.borrow(), data);
    assert!(h.done());
    // One copy write, then pipe-sized splices: far fewer calls than 16 KiB copies.
    assert!(dst.writes.get() - writes_before <= 1 + 200_000 / (1 << 16) + 1);
    // Idle at the next two sweeps: the pipe goes back and copy mode returns.
    h.sweep(&mut pipes);
    assert!(h.has_pipe(), "it moved bytes since the last sweep");
    h.sweep(&mut pipes);
    assert!(!h.has_pipe() && !h.splicing());
    assert_eq!(pipes.given, 1);
}

#[test]
fn the_read_budget_bounds_one_call() {
    let ops: Vec<Op> = (0..10).map(|_| Op::Data(vec![7; COPY_BUF])).collect();
    let src = FakeSock::reading(&ops);
    let dst = FakeSock::writing(usize::MAX);
    let (mut sr, mut dr) = (ready(), ready());
    let mut pipes = FakePipes::new(1 << 18, 0); // no pipes: copy all the way
    let mut h = Half::new(Mode::Copy);
    let p = pump(&mut h, (&src, &mut sr), (&dst, &mut dr), &mut pipes, 3).unwrap();
    assert!(p.more, "stopped by its budget with data left");
    assert_eq!(dst.written.borrow().len(), 3 * COPY_BUF);
}

/// The pipe-limit risk: when the kernel only grants small pipes (or none can be had),
/// the direction degrades to copying, and every byte still arrives in order.
#[test]
fn small_or_missing_pipes_degrade_to_copy_without_losing_a_byte() {
    for (cap, left) in [(8 * 1024, 4), (0, 0)] {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let src = FakeSock::reading(&[Op::Data(data.clone()), Op::Eof]);
        let dst = FakeSock::writing(5000);
        let (mut sr, mut dr) = (ready(), ready());
        sr.hup = true;
        let mut pipes = FakePipes::new(cap, left);
        let mut h = Half::new(Mode::Splice);
        for _ in 0..1000 {
            pump(&mut h, (&src, &mut sr), (&dst, &mut dr), &mut pipes, 16).unwrap();
            if h.done() {
                break;
            }
            dst.room.set(5000);
            dr.write = true;
        }
        assert!(h.done(), "cap {cap}");
        assert!(!h.splicing(), "small pipes are not spliced through");
        assert_eq!(*dst.written.borrow(), data, "cap {cap}");
    }
}

#[test]
fn release_closes_a_pipe_that_still_holds_bytes() {
    let src = FakeSock::reading(&[Op::Data(vec![1; 100])]);
    let dst = FakeSock::writing(10);
    let mut pipes = FakePipes::new(1 << 18, 4);
    let mut h = Half::new(Mode::Auto);
    pump(
        &mut h,
        (&src, &mut ready()),
        (&dst, &mut ready()),
        &mut pipes,
        16,
    )
    .unwrap();
    assert!(h.holding());
    h.release(&mut pipes);
    assert_eq!((pipes.given, pipes.closed), (0, 1));
}

proptest::proptest! {
    /// Any chunking of the source, any schedule of destination room, any pipe size or
    /// none: the destination gets exactly the source's bytes, then one EOF.
    #[test]
    fn bytes_arrive_intact_in_order_whatever_the_script(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40_000), 0..8),
        rooms in proptest::collection::vec(0usize..70_000, 1..20),
        cap in proptest::prop_oneof![proptest::strategy::Just(0usize), 1usize..100_000],
        mode in proptest::prop_oneof![proptest::strategy::Just(Mode::Auto), proptest::strategy::Just(Mode::Splice), proptest::strategy::Just(Mode::Copy)],
        blocks in proptest::collection::vec(proptest::bool::ANY, 0..8),
    ) {
        let mut ops = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            ops.push(Op::Data(c.clone()));
            if blocks.get(i).copied().unwrap_or(false) {
                ops.push(Op::WouldBlock);
            }
        }
        ops.push(Op::Eof);
        let want: Vec<u8> = chunks.concat();
        let src = FakeSock::reading(&ops);
        let dst = FakeSock::writing(0);
        let mut pipes = FakePipes::new(cap, if cap == 0 { 0 } else { 2 });
        let mut h = Half::new(mode);
        let (mut sr, mut dr) = (ready(), ready());
        // Every step has room for a byte at least: as many steps as bytes always do.
        for step in 0..2000 + want.len() {
            dst.room.set(rooms[step % rooms.len()].max(1));
            dr.write = true;
            sr.read = true;
            pump(&mut h, (&src, &mut sr), (&dst, &mut dr), &mut pipes, 4).unwrap();
            if h.done() {
                break;
            }
        }
        proptest::prop_assert!(h.done());
        proptest::prop_assert_eq!(&*dst.written.borrow(), &want);
        proptest::prop_assert_eq!(dst.shut.get(), 1);
        proptest::prop_assert_eq!(h.bytes(), want.len() as u64);
    }
}

proptest::proptest! {
    /// The same promise with readiness as the kernel gives it to an edge-triggered
    /// epoll, not re-armed for free: a readable event only when bytes (or the EOF)
    /// arrive, a writable event only when room appears after a write said WouldBlock;
    /// a pump that stops at its budget is run again (the worker's requeue), and one
    /// that stops for any other reason waits for the next event. A half that stops
    /// reading or writing while it still could, and expects an event that will not
    /// come (a lost wake-up), never finishes here.
    #[test]
    fn bytes_arrive_with_edge_triggered_readiness(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40_000), 0..8),
        arrive in proptest::collection::vec(proptest::bool::ANY, 1..16),
        rooms in proptest::collection::vec(0usize..70_000, 1..20),
        cap in proptest::prop_oneof![proptest::strategy::Just(0usize), 1usize..100_000],
        mode in proptest::prop_oneof![proptest::strategy::Just(Mode::Auto), proptest::strategy::Just(Mode::Splice), proptest::strategy::Just(Mode::Copy)],
    ) {
        let want: Vec<u8> = chunks.concat();
        let mut pending: VecDeque<Op> = chunks.iter().cloned().map(Op::Data).collect();
        pending.push_back(Op::Eof);
        // Nothing has arrived yet, nothing is writable yet.
        let src = FakeSock::reading(&[]);
        let dst = FakeSock::writing(0);
        let mut pipes = FakePipes::new(cap, if cap == 0 { 0 } else { 2 });
        let mut h = Half::new(mode);
        let (mut sr, mut dr) = (Ready::default(), Ready { write: true, ..Ready::default() });
        let mut buf = vec![0u8; COPY_BUF];
        let mut pumps = 0;
        for step in 0..4000usize {
            let mut event = false;
            // The peer sends (some steps): a readable event, every time.
            if arrive[step % arrive.len()] || step >= 2000 {
                if let Some(op) = pending.pop_front() {
                    let eof = matches!(op, Op::Eof);
                    src.reads.borrow_mut().push_back(op);
                    sr.mark(true, eof, false);
                    event = true;
                }
            }
            // The destination acknowledges: room; writable only if a write had
            // found none.
            let room = rooms[step % rooms.len()];
            if room > 0 {
                dst.room.set(dst.room.get() + room);
                if dst.blocked.replace(false) {
                    dr.mark(false, false, true);
                    event = true;
                }
            }
            if !event {
                continue;
            }
            // The worker runs the half until it has nothing more to do now.
            loop {
                pumps += 1;
                let p = h.pump((&src, &mut sr), (&dst, &mut dr), (&mut buf, &mut pipes), 4, false).unwrap();
                if !p.more {
                    break;
                }
            }
            if h.done() {
                break;
            }
        }
        proptest::prop_assert!(h.done(), "stuck: {} of {} bytes after {pumps} pumps, waiting for an event that never came", dst.written.borrow().len(), want.len());
        proptest::prop_assert_eq!(&*dst.written.borrow(), &want);
        proptest::prop_assert_eq!(dst.shut.get(), 1);
    }
}
