//! One client's UDP flow: its own connected upstream socket to its backend, what it
//! sent and got back, and when it was last active.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::os::fd::{AsFd, OwnedFd};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use crate::accesslog::{End, Proto, Reached, Record};
use crate::dataplane::admission::Admitted;
use crate::dataplane::handoff::{Exported, FlowState, State};
use crate::dataplane::listener::Routing;
use crate::dataplane::load::Claim;
use crate::dataplane::stats::BackendStats;
use crate::dataplane::timers::{Armed, Millis};
use crate::dataplane::token::Key;
use crate::sni::ServerName;
use crate::sys::mmsg::Batch;

use super::kernel::{Counts, Installed};

/// A flow's identity: listener, client address, and the local address the client
/// reached when the listener binds a wildcard address (`None` otherwise).
pub(super) type FlowId = (Key, SocketAddr, Option<IpAddr>);

/// What one [`Flow::recv_into`] got.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replies {
    bytes: u64,
    drained: bool,
    finished: bool,
}

impl Replies {
    /// Their bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The socket had no more.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Every datagram has the replies `udp_responses` expects.
    pub fn finished(&self) -> bool {
        self.finished
    }
}

/// One client's flow.
#[derive(Debug)]
pub(super) struct Flow {
    listener: Key,
    client: SocketAddr,
    /// The local address the client reached (wildcard listeners only).
    local: Option<IpAddr>,
    socket: UdpSocket,
    /// The slot of its pool in the listener's routing of `epoch`.
    slot: usize,
    /// Index of its backend in that pool's routing.
    backend: usize,
    /// That backend's counters (and identity across routings).
    target: Claim,
    epoch: u64,
    started: Millis,
    last_active: Millis,
    /// Datagrams forwarded to the backend (since the last backend change).
    sent: u64,
    /// Replies sent back to the client (since the last backend change).
    replies: u64,
    /// Over the flow's life: datagrams and bytes in (from the client) and out.
    datagrams: (u64, u64),
    bytes: (u64, u64),
    /// Its place in the listener's per-source table, given back when it ends.
    admitted: Option<Admitted>,
    /// The server name its QUIC Initial asked for (`route_by = "sni"`).
    sni: Option<ServerName>,
    /// Its backend answered ICMP port unreachable (since the flow last moved).
    refused: bool,
    armed: Armed,
    /// In the kernel's hands (`forward = "kernel"`): its entries and counts there.
    kernel: Option<Installed>,
    /// Opened ahead of its first datagram (see [`Flow::presume`]): not counted, timed
    /// or logged as a flow until that datagram comes.
    presumed: bool,
    /// Opened so, and its first datagram came: its client reuses its port.
    successor: bool,
}

/// How long a presumed flow waits for its first datagram (at most the listener's
/// `udp_unanswered_timeout`).
pub(super) const PRESUMED_MS: Millis = 1000;

impl Flow {
    /// A flow through `socket` (registered by the caller) to backend `backend` of the
    /// pool in `slot` of the routing of `epoch`, holding `admitted` in the per-source
    /// table.
    pub fn new(
        (listener, client, local): FlowId,
        socket: UdpSocket,
        (slot, backend, target): (usize, usize, Claim),
        (epoch, admitted): (u64, Option<Admitted>),
        now: Millis,
    ) -> Flow {
        Flow {
            listener,
            client,
            local,
            socket,
            slot,
            backend,
            target,
            epoch,
            started: now,
            last_active: now,
            sent: 0,
            replies: 0,
            datagrams: (0, 0),
            bytes: (0, 0),
            admitted,
            sni: None,
            refused: false,
            armed: Armed::default(),
            kernel: None,
            presumed: false,
            successor: false,
        }
    }

    /// Hands the flow over (an upgrade): its upstream socket leaves the poll and goes
    /// with its state; the caller ends its counts here. Every field is named: one
    /// added does not compile until it is carried or said not to be.
    pub fn export(
        self,
        registry: &Registry,
        (listener, worker, now): (&str, usize, Millis),
    ) -> Exported {
        let Flow {
            // The new process's own key for the listener of this name.
            listener: _,
            client,
            local,
            mut socket,
            // Positions in this process's routing: the new one finds its backend by
            // identity at the first datagram.
            slot: _,
            backend: _,
            target,
            epoch: _,
            started,
            last_active,
            sent,
            replies,
            datagrams,
            bytes,
            admitted,
            sni,
            refused,
            // Its timer here fires for nobody (the key is gone).
            armed: _,
            // Out of the kernel's map before (UdpPlane::export): the new process puts
            // it in its own.
            kernel: _,
            // Not handed over (see `UdpPlane::export`).
            presumed: _,
            successor: _,
        } = self;
        let _ = registry.deregister(&mut socket);
        let state = FlowState {
            listener: listener.to_string(),
            client,
            local,
            worker,
            backend: (
                target.pool.name.to_string(),
                target.id.to_string(),
                target.addr,
            ),
            age_ms: now.saturating_sub(started),
            idle_ms: now.saturating_sub(last_active),
            sent,
            replies,
            datagrams,
            bytes,
            admitted: admitted.is_some(),
            sni: sni.map(|s| s.as_str().to_string()),
            refused,
        };
        Exported {
            state: State::Flow(state),
            fds: vec![OwnedFd::from(std::net::UdpSocket::from(socket))],
        }
    }

    /// The flow another process exported (`f`, with its socket), on listener `key`
    /// here, to `target`; `admitted` in the per-source table. The caller registers
    /// its socket. Its backend is checked against the routing at its next datagram.
    pub fn adopt(
        (key, f, socket): (Key, FlowState, UdpSocket),
        target: Claim,
        admitted: Option<Admitted>,
        now: Millis,
    ) -> Flow {
        Flow {
            listener: key,
            client: f.client,
            local: f.local,
            socket,
            slot: 0,
            backend: 0,
            target,
            // No routing's epoch: checked at the first datagram.
            epoch: u64::MAX,
            started: now.saturating_sub(f.age_ms),
            last_active: now.saturating_sub(f.idle_ms),
            sent: f.sent,
            replies: f.replies,
            datagrams: f.datagrams,
            bytes: f.bytes,
            admitted,
            sni: f.sni.as_deref().and_then(|n| ServerName::new(n.as_bytes())),
            refused: f.refused,
            armed: Armed::default(),
            kernel: None,
            presumed: false,
            successor: false,
        }
    }

    /// Its upstream socket, to register an adopted flow.
    pub fn socket(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    /// Its identity.
    pub fn id(&self) -> FlowId {
        (self.listener, self.client, self.local)
    }

    /// Its listener.
    pub fn listener(&self) -> Key {
        self.listener
    }

    /// The client.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The local address the client reached (wildcard listeners).
    pub fn local(&self) -> Option<IpAddr> {
        self.local
    }

    /// What it holds in its listener's per-source table.
    pub fn admitted(&self) -> Option<Admitted> {
        self.admitted
    }

    /// Its backend's counters.
    pub fn target(&self) -> &Arc<BackendStats> {
        &self.target
    }

    /// Its timer slot.
    pub fn armed(&mut self) -> &mut Armed {
        &mut self.armed
    }

    /// Its backend refused it (ICMP port unreachable).
    pub fn refuse(&mut self) {
        self.refused = true;
    }

    /// How it ends when it idles out: refused by its backend, never answered, or idle.
    pub fn idle_end(&self) -> End {
        if self.refused {
            End::UdpRefused
        } else if self.answered() {
            End::UdpIdle
        } else {
            End::UdpUnanswered
        }
    }

    /// Whether its backend has answered it at all.
    pub fn answered(&self) -> bool {
        self.datagrams.1 > 0
    }

    /// When it idles out: `idle` after its last datagram, `unanswered` when its
    /// backend never answered.
    pub fn idle_deadline(&self, (idle, unanswered): (Millis, Millis)) -> Millis {
        self.last_active
            + if self.presumed {
                unanswered.min(PRESUMED_MS)
            } else if self.answered() {
                idle
            } else {
                unanswered
            }
    }

    /// Marks it opened ahead of its first datagram: the successor of a flow of the
    /// same client that ended at its last reply (`udp_responses`), put in the kernel
    /// before that reply leaves, so the client's next datagrams find it there.
    pub fn presume(&mut self) {
        self.presumed = true;
        self.successor = true;
    }

    /// Whether its client showed that it reuses its port: this flow carried two
    /// datagrams or more, or it is the successor of one that ended.
    pub fn port_reused(&self) -> bool {
        self.successor || self.datagrams.0 >= 2
    }

    /// Whether it is still waiting for its first datagram (see [`Flow::presume`]).
    pub fn presumed(&self) -> bool {
        self.presumed
    }

    /// Its first datagram came at `now`: a presumed flow begins (true: count it now).
    pub fn begin(&mut self, now: Millis) -> bool {
        if !self.presumed {
            return false;
        }
        self.presumed = false;
        self.started = now;
        self.last_active = self.last_active.max(now);
        true
    }

    /// Its place in the kernel's map, when it is there.
    pub fn kernel(&mut self) -> &mut Option<Installed> {
        &mut self.kernel
    }

    /// Its place in the kernel's map, when it is there (to read).
    pub fn installed(&self) -> Option<&Installed> {
        self.kernel.as_ref()
    }

    /// Whether it is in the kernel's hands.
    pub fn kernel_installed(&self) -> bool {
        self.kernel.is_some()
    }

    /// What it sends and gets, for the kernel path: (sent, replies) so far.
    pub fn exchanged(&self) -> (u64, u64) {
        (self.sent, self.replies)
    }

    /// Whether, with `responses` replies expected per datagram (`udp_responses`, 0: no
    /// limit), every datagram it sent has them: it has ended.
    pub fn answered_all(&self, responses: u64) -> bool {
        responses > 0 && self.replies >= self.sent.saturating_mul(responses)
    }

    /// Its upstream socket's local address.
    pub fn upstream(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Takes in what the kernel forwarded for it (`c`); `last`: when its last datagram
    /// there passed, on this clock.
    pub fn absorb(&mut self, c: &Counts, last: Option<Millis>) {
        let ((sent, sent_bytes), (replies, reply_bytes)) = (c.sent(), c.replies());
        self.sent += sent;
        self.datagrams.0 += sent;
        self.bytes.0 += sent_bytes;
        self.replies += replies;
        self.datagrams.1 += replies;
        self.bytes.1 += reply_bytes;
        if let Some(at) = last {
            self.last_active = self.last_active.max(at);
        }
    }

    /// Whether its backend refused it since it last moved.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Records the server name its hello asked for.
    pub fn asked_for(&mut self, sni: Option<ServerName>) {
        self.sni = sni;
    }

    /// Sends one client datagram (held while its hello was read) to the backend.
    pub fn send_datagram(&mut self, datagram: &[u8], now: Millis) -> io::Result<usize> {
        let n = self.socket.send(datagram)?;
        self.sent += 1;
        self.datagrams.0 += 1;
        self.bytes.0 += n as u64;
        self.last_active = now;
        Ok(n)
    }

    /// Sends the client datagrams in `slots` of `batch` to the backend with one
    /// `sendmmsg`; returns how many went and their bytes.
    pub fn send_slots(
        &mut self,
        batch: &mut Batch,
        slots: &[usize],
        now: Millis,
    ) -> io::Result<(usize, u64)> {
        let n = batch.send_slots(self.socket.as_fd(), slots)?;
        let bytes: u64 = slots[..n]
            .iter()
            .map(|&i| batch.get(i).0.len() as u64)
            .sum();
        self.sent += n as u64;
        self.datagrams.0 += n as u64;
        self.bytes.0 += bytes;
        self.last_active = now;
        Ok((n, bytes))
    }

    /// Receives the replies waiting (one `recvmmsg`, as many as `replies` has room for
    /// and, with `responses` replies expected per datagram (`udp_responses`, 0: no
    /// limit), no more than are still expected), queued for the client.
    pub fn recv_into(
        &mut self,
        replies: &mut Batch,
        responses: u64,
        now: Millis,
    ) -> io::Result<Replies> {
        let expected = if responses > 0 {
            let left = self
                .sent
                .saturating_mul(responses)
                .saturating_sub(self.replies);
            usize::try_from(left).unwrap_or(usize::MAX).max(1)
        } else {
            usize::MAX
        };
        let first = replies.len();
        let asked = expected.min(replies.capacity() - first);
        let got = replies.recv_append(self.socket.as_fd(), asked, self.client, self.local)?;
        let bytes: u64 = (first..first + got)
            .map(|i| replies.get(i).0.len() as u64)
            .sum();
        self.replies += got as u64;
        self.datagrams.1 += got as u64;
        self.bytes.1 += bytes;
        self.last_active = now;
        Ok(Replies {
            bytes,
            drained: got < asked,
            finished: self.answered_all(responses),
        })
    }

    /// Its access-log record, ending now (`now`) so (`end`, and its `detail`);
    /// `listener`: its listener's name.
    pub fn record(
        &self,
        listener: &Arc<str>,
        (end, detail): (End, Option<&'static str>),
        now: Millis,
    ) -> Record {
        Record {
            time: std::time::SystemTime::now(),
            listener: Arc::clone(listener),
            proto: Proto::Udp,
            client: self.client,
            backend: Some(Reached {
                id: Arc::clone(&self.target.id),
                addr: self.target.addr,
            }),
            pool: Some(Arc::clone(&self.target.pool.name)),
            sni: self.sni.clone(),
            bytes_in: self.bytes.0,
            bytes_out: self.bytes.1,
            duration: std::time::Duration::from_millis(now.saturating_sub(self.started)),
            connect: None,
            retries: 0,
            end,
            detail,
            datagrams: Some(self.datagrams),
            failed: Vec::new(),
        }
    }

    /// Whether it was checked against the routing of `epoch` already; marks it so.
    pub fn checked(&mut self, epoch: u64) -> bool {
        std::mem::replace(&mut self.epoch, epoch) == epoch
    }

    /// Flow affinity: a flow keeps its backend while it is up (draining included) and
    /// still in its pool; once `routing` says it is down or gone, the flow belongs to
    /// the backend its pool's ring gives `key` now. Backends and pools are matched by
    /// identity, not position, so a reload that reorders, adds or removes others moves
    /// nothing. `Some((slot, index))` when the flow must move there; a pool a reload
    /// took away leaves the flow where it is (it ends by its timeouts).
    pub fn placement(&mut self, routing: &Routing, key: u64) -> Option<(usize, usize)> {
        let (slot, pool) = routing.find(self.slot, &self.target.pool)?;
        self.slot = slot;
        // The index it had is right unless a reload changed the backends.
        let now_at = match pool.backends.len() > self.backend {
            true if Arc::ptr_eq(&pool.backends[self.backend], &self.target) => Some(self.backend),
            _ => pool.backends.position(&self.target),
        };
        if let Some(i) = now_at {
            self.backend = i;
            if pool.snapshot.is_up(i) {
                return None;
            }
        }
        // Fail-open (all down, use-all) may give the same one back.
        pool.choose(key, |_| false)
            .map(|(b, _, _)| b)
            .filter(|&b| Some(b) != now_at)
            .map(|b| (slot, b))
    }

    /// Moves the flow to backend `backend` of `routing` through a new upstream socket
    /// (registered here under `token`); the old socket closes. Returns the old
    /// backend's counters.
    pub fn move_to(
        &mut self,
        mut socket: UdpSocket,
        (backend, target): (usize, Claim),
        registry: &Registry,
        token: Token,
    ) -> io::Result<Claim> {
        registry.register(&mut socket, token, Interest::READABLE)?;
        self.socket = socket;
        self.backend = backend;
        self.sent = 0;
        self.replies = 0;
        self.refused = false;
        Ok(std::mem::replace(&mut self.target, target))
    }
}
