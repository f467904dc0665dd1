//! A backend's queue (`max_connections`): connections that found it full wait here,
//! first in, first out, whatever worker accepted them, and a slot freed on any worker
//! goes to the oldest waiter at once.
//!
//! The queue only orders waiters and hands out what it is given: a *grant* (for the
//! data plane, a [`super::load::Claim`]: a slot already counted on the backend). Who
//! frees a slot calls [`Queue::hand_out`] with a way to take one; the queue gives it
//! to its oldest waiter by putting it in that waiter's worker's [`Inbox`] and waking
//! the worker. A waiter that gives up (its `queue_timeout`, its client gone) takes
//! itself out; a grant that finds its waiter gone is dropped by the worker, which
//! frees its slot again for the next.
//!
//! Costs: a backend without waiters costs one atomic load per freed slot; the lock is
//! only taken while it has waiters (a backend at its limit), never on the fast path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::token::Key;

/// A backend's `max_connections` and `max_queue` (0: none), which a reload may change.
#[derive(Debug, Default)]
pub struct Limit {
    max: AtomicU32,
    max_queue: AtomicU32,
}

impl Limit {
    /// Sets both (0: no limit).
    pub fn set(&self, max_connections: u32, max_queue: u32) {
        self.max.store(max_connections, Ordering::Relaxed);
        self.max_queue.store(max_queue, Ordering::Relaxed);
    }

    /// `max_connections`, 0 when there is none.
    #[inline]
    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    /// `max_queue`, 0 when there is none.
    pub fn max_queue(&self) -> u32 {
        self.max_queue.load(Ordering::Relaxed)
    }
}

/// A slot handed to a waiter: which session (its key on its worker, and its ticket
/// number, so a key used again by a later session is not mistaken for it) and the
/// grant.
#[derive(Debug)]
pub struct Granted<G> {
    key: Key,
    ticket: u64,
    grant: G,
}

impl<G> Granted<G> {
    /// The waiting session's key on its worker, its ticket number, and what it was
    /// given.
    pub fn into_parts(self) -> (Key, u64, G) {
        (self.key, self.ticket, self.grant)
    }
}

/// A worker's door for slots freed on other workers (and on itself): grants wait here
/// until the worker's next pass, which the waker starts at once.
#[derive(Debug)]
pub struct Inbox<G> {
    granted: Mutex<Vec<Granted<G>>>,
    waker: Arc<mio::Waker>,
    /// Tickets numbered so far.
    tickets: std::sync::atomic::AtomicU64,
}

impl<G> Inbox<G> {
    /// The inbox of the worker `waker` wakes.
    pub fn new(waker: Arc<mio::Waker>) -> Inbox<G> {
        Inbox {
            granted: Mutex::new(Vec::new()),
            waker,
            tickets: Default::default(),
        }
    }

    /// A ticket number not given before by this inbox.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    fn deliver(&self, g: Granted<G>) {
        lock(&self.granted).push(g);
        // A failed wake (the worker is gone) leaves the grant to be dropped with it.
        let _ = self.waker.wake();
    }

    /// Everything granted since the last call.
    pub fn take(&self) -> Vec<Granted<G>> {
        std::mem::take(&mut *lock(&self.granted))
    }
}

/// One waiting session: where its grant goes and how it is known.
#[derive(Debug)]
struct Waiter<G> {
    inbox: Arc<Inbox<G>>,
    key: Key,
    ticket: u64,
}

/// A backend's waiters, oldest first.
#[derive(Debug)]
pub struct Queue<G> {
    /// How many wait (read without the lock on every freed slot).
    len: AtomicUsize,
    waiters: Mutex<VecDeque<Waiter<G>>>,
}

impl<G> Default for Queue<G> {
    fn default() -> Queue<G> {
        Queue {
            len: AtomicUsize::new(0),
            waiters: Mutex::new(VecDeque::new()),
        }
    }
}

/// The queue already holds `max_queue` waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

impl<G> Queue<G> {
    /// How many wait now.
    ///
    /// Sequentially consistent, with the slot count's decrement: a slot freed while
    /// a waiter joins is seen by one of the two (the freer sees the waiter, or the
    /// joiner's own [`Queue::hand_out`] sees the slot), never by neither.
    #[inline]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// Nobody waits.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Session `key` (ticket `ticket`) of the worker behind `inbox` waits last, unless
    /// `max_queue` (0: none) already wait. The caller then calls
    /// [`Queue::hand_out`]: a slot may have been freed since it found none.
    pub fn push(
        &self,
        inbox: &Arc<Inbox<G>>,
        key: Key,
        ticket: u64,
        max_queue: u32,
    ) -> Result<(), QueueFull> {
        let mut w = lock(&self.waiters);
        if max_queue > 0 && w.len() >= max_queue as usize {
            return Err(QueueFull);
        }
        w.push_back(Waiter {
            inbox: Arc::clone(inbox),
            key,
            ticket,
        });
        self.len.store(w.len(), Ordering::SeqCst);
        Ok(())
    }

    /// Takes ticket `ticket` of the worker behind `inbox` out (it gave up); false when
    /// it is not there (its grant is on its way).
    pub fn remove(&self, inbox: &Arc<Inbox<G>>, ticket: u64) -> bool {
        let mut w = lock(&self.waiters);
        let Some(i) = w
            .iter()
            .position(|x| x.ticket == ticket && Arc::ptr_eq(&x.inbox, inbox))
        else {
            return false;
        };
        w.remove(i);
        self.len.store(w.len(), Ordering::SeqCst);
        true
    }

    /// Gives the oldest waiters a grant each while `take` finds one (a free slot),
    /// and wakes their workers. Grants are delivered after the lock is let go: a
    /// grant dropped on the way may free a slot, which calls this again.
    pub fn hand_out(&self, mut take: impl FnMut() -> Option<G>) {
        let mut given = Vec::new();
        {
            let mut w = lock(&self.waiters);
            while !w.is_empty() {
                let Some(grant) = take() else { break };
                let Some(x) = w.pop_front() else { break };
                given.push((
                    x.inbox,
                    Granted {
                        key: x.key,
                        ticket: x.ticket,
                        grant,
                    },
                ));
            }
            self.len.store(w.len(), Ordering::SeqCst);
        }
        for (inbox, g) in given {
            inbox.deliver(g);
        }
    }
}

/// Locks `m`, whatever a panicking holder left (the data is a list: still whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox() -> (mio::Poll, Arc<Inbox<u32>>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        (poll, Arc::new(Inbox::new(waker)))
    }

    fn key(i: u64) -> Key {
        Key::unpack(i)
    }

    #[test]
    fn slots_go_to_the_oldest_waiters_first() {
        let (_p, a) = inbox();
        let (_q, b) = inbox();
        let q: Queue<u32> = Queue::default();
        q.push(&a, key(1), 10, 0).unwrap();
        q.push(&b, key(2), 11, 0).unwrap();
        q.push(&a, key(3), 12, 0).unwrap();
        assert_eq!(q.len(), 3);
        let mut free = 2;
        q.hand_out(|| {
            (free > 0).then(|| {
                free -= 1;
                7
            })
        });
        assert_eq!(q.len(), 1);
        let got_a: Vec<u64> = a.take().iter().map(|g| g.ticket).collect();
        let got_b: Vec<u64> = b.take().iter().map(|g| g.ticket).collect();
        assert_eq!((got_a, got_b), (vec![10], vec![11]));
        q.hand_out(|| Some(8));
        assert_eq!(a.take().iter().map(|g| g.ticket).collect::<Vec<_>>(), [12]);
        assert!(q.is_empty());
    }

    #[test]
    fn no_slot_is_taken_for_an_empty_queue() {
        let q: Queue<u32> = Queue::default();
        let mut asked = 0;
        q.hand_out(|| {
            asked += 1;
            Some(1)
        });
        assert_eq!(
            asked, 0,
            "a slot taken with nobody to give it to would leak"
        );
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_and_max_queue_bounds() {
        let (_p, a) = inbox();
        let q: Queue<u32> = Queue::default();
        q.push(&a, key(1), 1, 2).unwrap();
        q.push(&a, key(2), 2, 2).unwrap();
        assert_eq!(q.push(&a, key(3), 3, 2), Err(QueueFull));
        assert!(q.remove(&a, 1));
        assert!(!q.remove(&a, 1), "already gone");
        q.push(&a, key(3), 3, 2).unwrap();
        q.hand_out(|| Some(0));
        assert_eq!(
            a.take().iter().map(|g| g.ticket).collect::<Vec<_>>(),
            [2, 3]
        );
    }
}
