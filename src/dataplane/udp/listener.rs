//! One worker's socket of one UDP listener: client datagrams come in on it, replies
//! leave from it (batched with `sendmmsg`), and the routing its flows were last checked
//! against.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use crate::dataplane::listener::{ListenerShared, Routing};
use crate::dataplane::stats::ListenerCounters;
use crate::sys::mmsg::Batch;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub(super) const BATCH: usize = 32;

/// Bytes per batch slot: the largest UDP payload (65,507 over IPv4) fits.
pub(super) const SLOT: usize = 65_535;

/// A UDP listener inside a worker.
#[derive(Debug)]
pub(super) struct UdpListener {
    socket: UdpSocket,
    shared: Arc<ListenerShared>,
    /// Replies waiting for the next `sendmmsg`.
    replies: Batch,
    /// The routing flows were last checked against, and a counter bumped when it
    /// changes, so a flow re-checks its backend once per change, not per datagram.
    seen: Arc<Routing>,
    epoch: u64,
    /// Removed by a reload: takes no new flows; kept while its flows live (their
    /// replies leave from its socket).
    retired: bool,
    /// Flows of this listener still open.
    open: usize,
    /// Its flows not answered yet, oldest first (the first to go when it is full).
    unanswered: super::unanswered::Unanswered,
    /// Not read yet (an upgrade: until the old process's flows are here).
    held: Option<Token>,
}

impl UdpListener {
    /// Registers `socket` under `token`; `held`: not yet (see [`UdpListener::start`]).
    pub fn new(
        socket: std::net::UdpSocket,
        shared: Arc<ListenerShared>,
        (registry, token): (&Registry, Token),
        held: bool,
    ) -> io::Result<UdpListener> {
        let mut socket = UdpSocket::from_std(socket);
        if !held {
            registry.register(&mut socket, token, Interest::READABLE)?;
        }
        let seen = shared.routing.load_full();
        Ok(UdpListener {
            socket,
            shared,
            replies: Batch::with_pktinfo(BATCH, SLOT),
            seen,
            epoch: 0,
            retired: false,
            open: 0,
            unanswered: Default::default(),
            held: held.then_some(token),
        })
    }

    /// Starts reading a held socket; true if it was held.
    pub fn start(&mut self, registry: &Registry) -> io::Result<bool> {
        let Some(token) = self.held.take() else {
            return Ok(false);
        };
        registry.register(&mut self.socket, token, Interest::READABLE)?;
        Ok(true)
    }

    /// The listener's shared state.
    pub fn shared(&self) -> &Arc<ListenerShared> {
        &self.shared
    }

    /// Reads a batch of client datagrams.
    pub fn recv(&self, batch: &mut Batch) -> io::Result<usize> {
        batch.recv_from(self.socket.as_fd())
    }

    /// The routing epoch: bumped when the control plane has published a new routing
    /// since the last look. `ArcSwap::load` takes no shared lock or refcount.
    pub fn refresh(&mut self) -> u64 {
        let current = self.shared.routing.load();
        if !Arc::ptr_eq(&current, &self.seen) {
            self.seen = Arc::clone(&current);
            self.epoch += 1;
        }
        self.epoch
    }

    /// The routing its flows are checked against.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.seen
    }

    /// The batch of replies to send, with room for at least one more (it is sent
    /// first if it is full; `worker`: whose counters say so).
    pub fn reply_room(&mut self, worker: usize) -> &mut Batch {
        if self.replies.is_full() {
            self.flush(worker);
        }
        &mut self.replies
    }

    /// Sends the queued replies; what the kernel will not take now is dropped (UDP)
    /// and counted in worker `worker`'s counters.
    pub fn flush(&mut self, worker: usize) {
        send(
            &mut self.replies,
            &self.socket,
            self.shared.stats.shard(worker),
        );
    }

    /// Replies are waiting.
    pub fn has_replies(&self) -> bool {
        !self.replies.is_empty()
    }

    /// Removed by a reload.
    pub fn retired(&self) -> bool {
        self.retired
    }

    /// Marks it removed; true when no flow keeps it (the caller drops it).
    pub fn retire(&mut self) -> bool {
        self.retired = true;
        self.open == 0
    }

    /// One more flow uses it (`waiting(k)`: whether flow `k` is open and unanswered).
    pub fn flow_opened(
        &mut self,
        key: crate::dataplane::token::Key,
        waiting: impl Fn(crate::dataplane::token::Key) -> bool,
    ) {
        self.open += 1;
        self.unanswered.opened(key, self.open, waiting);
    }

    /// The oldest of its flows still waiting for an answer, taken off the list.
    pub fn oldest_unanswered(
        &mut self,
        waiting: impl Fn(crate::dataplane::token::Key) -> bool,
    ) -> Option<crate::dataplane::token::Key> {
        self.unanswered.oldest(waiting)
    }

    /// One flow ended; true when it was the last of a retired listener (the caller
    /// drops it).
    pub fn flow_closed(&mut self) -> bool {
        self.open -= 1;
        self.retired && self.open == 0
    }

    /// Takes the socket out of the poll (it closes when dropped).
    pub fn deregister(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }
}

/// Sends the queued `replies` from `socket`; what the kernel will not take now is
/// dropped (UDP) and counted in `stats`.
fn send(replies: &mut Batch, socket: &UdpSocket, stats: &ListenerCounters) {
    let total = replies.len();
    let mut from = 0;
    while from < total {
        match replies.send_to(socket.as_fd(), from) {
            Ok(0) => break,
            Ok(n) => from += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // This datagram failed (e.g. the client's network is unreachable): skip it.
            Err(_) => {
                stats.udp_dropped_send.inc();
                from += 1;
            }
        }
    }
    stats.udp_out.add(from as u64);
    if from < total {
        stats.udp_dropped_send.add((total - from) as u64);
    }
    replies.clear();
}
