//! UDP: a flow table, batched receive from clients, batched replies.
//!
//! A flow is (listener, client address, local address). The local address is the
//! listener's, or, for a listener on a wildcard address, the datagram's destination as
//! `IP_PKTINFO`/`IPV6_PKTINFO` reports it. Its first datagram picks a backend from the
//! ring (protocol byte 17) and gets the flow its own connected upstream socket, so the
//! backend's replies arrive on that socket and are sent back to the client from the
//! listener's socket, from the address the client sent to (set per reply with the same
//! control message on a wildcard listener): the client only ever sees that address.
//!
//! Client datagrams come in with `recvmmsg` (up to [`BATCH`] per call); replies go out
//! with `sendmmsg`, gathered from every flow that had replies in one loop iteration.
//! Buffers are allocated once per worker; nothing is allocated per datagram.
//!
//! A flow ends after `udp_idle_timeout` without datagrams either way, or, with
//! `udp_responses = N`, as soon as every datagram it forwarded got N replies (NGINX's
//! `proxy_responses`: 1 for DNS). A flow keeps its backend while that backend is up;
//! when the published snapshot says it is down, the flow's next datagram re-picks.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::Interest;
use socket2::{Domain, Protocol, Socket, Type};

use super::stats::{BackendStats, ListenerCounters};
use super::token;
use super::worker::Worker;
use super::Routing;
use crate::balance::hash::{flow_hash, PROTO_UDP};
use crate::sys::mmsg::Batch;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 32;

/// Bytes per batch slot: the largest UDP payload (65,507 over IPv4) fits.
pub const SLOT: usize = 65_535;

/// Batches read from one listener per wake-up before other work gets a turn.
const BATCHES_PER_WAKEUP: usize = 8;

/// Replies read from one flow per wake-up before other work gets a turn.
const REPLIES_PER_WAKEUP: usize = 64;

/// Receive buffer asked for listener sockets (`SO_RCVBUFFORCE`, else `SO_RCVBUF`, which
/// the kernel caps at `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 << 20;

/// Binds a non-blocking UDP socket with `SO_REUSEPORT`, one per worker: the kernel
/// hashes each client's datagrams to one of them, so a flow lives on one worker.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = super::accept::reuseport_socket(addr, Type::DGRAM, Protocol::UDP)?;
    // Bursts of small datagrams overflow the default buffer (about 200 KiB, a few hundred
    // datagrams) before a worker gets to run: ask for more, past rmem_max when allowed.
    if crate::sys::sockopt::set_recv_buffer_force(socket.as_fd(), RECV_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    }
    if addr.ip().is_unspecified() {
        // Which local address did the client reach? Replies must leave from it.
        crate::sys::sockopt::set_recv_pktinfo(socket.as_fd(), addr.is_ipv6())?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A flow's identity: listener slot, client address, and the local address the client
/// reached when the listener binds a wildcard address (`None` otherwise).
pub(super) type FlowKey = (usize, SocketAddr, Option<IpAddr>);

/// A UDP listener inside a worker.
#[derive(Debug)]
pub(super) struct UdpListener {
    pub socket: UdpSocket,
    /// Replies waiting for the next `sendmmsg`.
    replies: Batch,
    /// The routing flows were last checked against, and a counter bumped when it
    /// changes, so a flow re-checks its backend once per change, not per datagram.
    seen: Arc<Routing>,
    epoch: u64,
}

impl UdpListener {
    pub fn new(socket: UdpSocket, routing: Arc<Routing>) -> UdpListener {
        UdpListener {
            socket,
            replies: Batch::with_pktinfo(BATCH, SLOT),
            seen: routing,
            epoch: 0,
        }
    }
}

/// One client's flow.
#[derive(Debug)]
pub(super) struct Flow {
    pub listener: usize,
    pub client: SocketAddr,
    /// The local address the client reached (wildcard listeners only).
    local: Option<IpAddr>,
    socket: UdpSocket,
    /// Index of its backend in the routing of `epoch`.
    backend: usize,
    /// That backend's counters (and identity across routings).
    target: Arc<BackendStats>,
    epoch: u64,
    pub last_active: Instant,
    /// Datagrams forwarded to the backend.
    sent: u64,
    /// Replies sent back to the client.
    replies: u64,
}

fn is(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

impl Worker {
    /// Reads client datagrams from UDP listener `li`; true if it stopped at its budget.
    pub(super) fn udp_readable(&mut self, li: usize) -> bool {
        let Some(mut batch) = self.recv_batch.take() else {
            return false;
        };
        let mut more = true;
        for _ in 0..BATCHES_PER_WAKEUP {
            let Some(udp) = self.listeners[li].udp.as_ref() else {
                more = false;
                break;
            };
            match batch.recv_from(udp.socket.as_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let (data, from) = batch.get(i);
                        if let Some(client) = from {
                            self.client_datagram(li, (client, batch.local(i)), data);
                        }
                    }
                    if n < batch.capacity() {
                        more = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors for replies we sent show up here; they are not fatal.
                    if let Some(suppressed) = self.warn_limit.allow(self.now) {
                        tracing::debug!(listener = %self.listeners[li].shared.name, suppressed, "udp receive: {e}");
                    }
                }
            }
        }
        self.recv_batch = Some(batch);
        more
    }

    /// A datagram from `client` to local address `local` (only wildcard listeners ask
    /// for `IP_PKTINFO`, so it is `None` on the others).
    fn client_datagram(
        &mut self,
        li: usize,
        (client, local): (SocketAddr, Option<IpAddr>),
        data: &[u8],
    ) {
        // A listener removed by a reload keeps its socket for its old flows; when a
        // listener on the same address replaced it (renamed), the kernel still hashes
        // some new clients to the old socket: their flows belong to the new listener.
        let li =
            if self.listeners[li].retired && !self.flow_index.contains_key(&(li, client, local)) {
                self.successor(li).unwrap_or(li)
            } else {
                li
            };
        let stats = self.listeners[li].shared.stats.shard(self.index);
        stats.udp_in.inc();
        let key = match self.flow_index.get(&(li, client, local)) {
            Some(&k) => {
                self.check_backend(k);
                k
            }
            None => match self.open_flow(li, client, local) {
                Some(k) => k,
                None => return,
            },
        };
        let Some(f) = self.flows.get_mut(key) else {
            return;
        };
        let mut result = f.socket.send(data);
        let stats = self.listeners[li].shared.stats.shard(self.index);
        let counters = f.target.counters.shard(self.index);
        if matches!(&result, Err(e) if is(e, libc::ECONNREFUSED)) {
            // A previous datagram drew an ICMP port-unreachable; this one was not sent.
            stats.backend_icmp_errors.inc();
            counters.connect_errors.inc();
            result = f.socket.send(data);
        }
        match result {
            Ok(n) => {
                f.sent += 1;
                f.last_active = self.now;
                counters.sent_bytes.add(n as u64);
            }
            Err(e) => {
                stats.udp_dropped_send.inc();
                if let Some(suppressed) = self.warn_limit.allow(self.now) {
                    let name = &self.listeners[li].shared.name;
                    tracing::warn!(listener = %name, client = %client, suppressed, "udp datagram to backend dropped: {e}");
                }
            }
        }
    }

    /// The live UDP listener on the same address as retired slot `li`, if any.
    fn successor(&self, li: usize) -> Option<usize> {
        let listen = self.listeners[li].shared.listen;
        self.listeners
            .iter()
            .position(|l| !l.retired && l.udp.is_some() && l.shared.listen == listen)
    }

    /// Creates the flow for a new client, or drops its datagram (max flows, no backend).
    fn open_flow(&mut self, li: usize, client: SocketAddr, local: Option<IpAddr>) -> Option<usize> {
        let shared = Arc::clone(&self.listeners[li].shared);
        let stats = shared.stats.shard(self.index);
        if self.listeners[li].retired {
            stats.udp_dropped_removed.inc();
            return None;
        }
        let epoch = self.refresh_epoch(li);
        let routing = self.seen_routing(li);
        let params = &routing.params;
        if !shared.try_acquire(params.max_connections) {
            stats.udp_dropped_max_flows.inc();
            if let Some(suppressed) = self.warn_limit.allow(self.now) {
                tracing::warn!(listener = %shared.name, client = %client, suppressed, "udp_max_flows ({}) reached: dropping a new flow", params.max_connections);
            }
            return None;
        }
        let key = flow_hash(
            params.hash,
            PROTO_UDP,
            client,
            reached(shared.listen, local),
        );
        let socket = routing.snapshot.pick(key).and_then(|b| {
            let addr = routing.snapshot.backends()[b].addr;
            match upstream(addr) {
                Ok(s) => Some((b, s)),
                Err(e) => {
                    tracing::debug!(listener = %shared.name, backend = %addr, "udp upstream socket: {e}");
                    None
                }
            }
        });
        let Some((backend, mut socket)) = socket else {
            shared.release();
            stats.udp_dropped_no_backend.inc();
            if let Some(suppressed) = self.warn_limit.allow(self.now) {
                tracing::warn!(listener = %shared.name, client = %client, suppressed, "no backend for a new udp flow: dropping");
            }
            return None;
        };
        let entry = self.flows.vacant_entry();
        let fkey = entry.key();
        if self
            .poll
            .registry()
            .register(&mut socket, token::flow(fkey), Interest::READABLE)
            .is_err()
        {
            shared.release();
            return None;
        }
        let target = Arc::clone(&routing.backends[backend]);
        let counters = target.counters.shard(self.index);
        counters.connections.inc();
        counters.active.add(1);
        entry.insert(Flow {
            listener: li,
            client,
            local,
            socket,
            backend,
            target,
            epoch,
            last_active: self.now,
            sent: 0,
            replies: 0,
        });
        self.flow_index.insert((li, client, local), fkey);
        self.listeners[li].open += 1;
        stats.udp_flows.inc();
        Some(fkey)
    }

    /// The listener's routing epoch: bumped when the control plane has published a new
    /// routing since the last look. `ArcSwap::load` takes no shared lock or refcount.
    fn refresh_epoch(&mut self, li: usize) -> u64 {
        let slot = &mut self.listeners[li];
        let current = slot.shared.routing.load();
        let Some(udp) = slot.udp.as_mut() else {
            return 0;
        };
        if !Arc::ptr_eq(&current, &udp.seen) {
            udp.seen = Arc::clone(&current);
            udp.epoch += 1;
        }
        udp.epoch
    }

    /// The routing the listener's flows are checked against.
    fn seen_routing(&self, li: usize) -> Arc<Routing> {
        match self.listeners[li].udp.as_ref() {
            Some(u) => Arc::clone(&u.seen),
            None => self.listeners[li].shared.routing.load_full(),
        }
    }

    /// Flow affinity: a flow keeps its backend while it is up (draining included) and
    /// still configured; once the routing says it is down or gone, the flow moves to the
    /// backend the ring gives now. Backends are matched by identity, not position, so a
    /// reload that reorders, adds or removes others moves nothing.
    fn check_backend(&mut self, fkey: usize) {
        let li = self.flows[fkey].listener;
        let epoch = self.refresh_epoch(li);
        if self.flows[fkey].epoch == epoch {
            return;
        }
        let routing = self.seen_routing(li);
        let listen = self.listeners[li].shared.listen;
        let index = self.index;
        let f = &mut self.flows[fkey];
        f.epoch = epoch;
        let now_at = routing
            .backends
            .iter()
            .position(|b| Arc::ptr_eq(b, &f.target));
        if let Some(i) = now_at {
            f.backend = i;
            if routing.snapshot.is_up(i) {
                return;
            }
        }
        let key = flow_hash(
            routing.params.hash,
            PROTO_UDP,
            f.client,
            reached(listen, f.local),
        );
        let Some(b) = routing.snapshot.pick(key) else {
            return;
        };
        if Some(b) == now_at {
            return; // fail-open (all down, use-all) may give the same one back
        }
        if let Ok(mut socket) = upstream(routing.snapshot.backends()[b].addr) {
            if self
                .poll
                .registry()
                .register(&mut socket, token::flow(fkey), Interest::READABLE)
                .is_ok()
            {
                // The old socket closes (and leaves epoll) when replaced.
                f.socket = socket;
                f.backend = b;
                f.target.counters.shard(index).active.add(-1);
                f.target = Arc::clone(&routing.backends[b]);
                let counters = f.target.counters.shard(index);
                counters.connections.inc();
                counters.active.add(1);
                f.sent = 0;
                f.replies = 0;
            }
        }
    }

    /// Reads a flow's replies into its listener's reply batch; true if it stopped at
    /// its budget.
    pub(super) fn flow_readable(&mut self, fkey: usize) -> bool {
        let Some(f) = self.flows.get_mut(fkey) else {
            return false;
        };
        let li = f.listener;
        let index = self.index;
        let responses = match self.listeners[li].udp.as_ref() {
            Some(u) => u.seen.params.udp_responses as u64,
            None => return false,
        };
        let mut finished = false;
        let mut more = true;
        for _ in 0..REPLIES_PER_WAKEUP {
            let slot = &mut self.listeners[li];
            let shared = &slot.shared;
            let Some(udp) = slot.udp.as_mut() else {
                return false;
            };
            let stats = shared.stats.shard(index);
            if udp.replies.is_full() {
                flush(udp, stats);
            }
            let buf = udp.replies.next_slot().expect("flushed above");
            match f.socket.recv(buf) {
                Ok(n) => {
                    udp.replies.commit_from(n, f.client, f.local);
                    f.target.counters.shard(index).received_bytes.add(n as u64);
                    f.replies += 1;
                    f.last_active = self.now;
                    if responses > 0 && f.replies >= f.sent.saturating_mul(responses) {
                        finished = true;
                        more = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if is(&e, libc::ECONNREFUSED) {
                        stats.backend_icmp_errors.inc();
                        f.target.counters.shard(index).connect_errors.inc();
                    }
                    if let Some(suppressed) = self.warn_limit.allow(self.now) {
                        tracing::warn!(listener = %shared.name, client = %f.client, suppressed, "udp backend error: {e}");
                    }
                }
            }
        }
        if finished {
            self.close_flow(fkey);
        }
        more
    }

    /// Sends every listener's pending replies.
    pub(super) fn flush_replies(&mut self) {
        for slot in &mut self.listeners {
            let stats = slot.shared.stats.shard(self.index);
            if let Some(udp) = slot.udp.as_mut() {
                if !udp.replies.is_empty() {
                    flush(udp, stats);
                }
            }
        }
    }

    pub(super) fn close_flow(&mut self, fkey: usize) {
        if !self.flows.contains(fkey) {
            return;
        }
        let f = self.flows.remove(fkey);
        self.flow_index.remove(&(f.listener, f.client, f.local));
        f.target.counters.shard(self.index).active.add(-1);
        self.listeners[f.listener].shared.release();
        self.slot_closed(f.listener);
    }

    /// Closes flows idle for their listener's `udp_idle_timeout` (`idle`, by slot).
    pub(super) fn expire_flows(&mut self, idle: &[std::time::Duration]) {
        let now = self.now;
        let expired: Vec<usize> = self
            .flows
            .iter()
            .filter(|(_, f)| now.duration_since(f.last_active) >= idle[f.listener])
            .map(|(k, _)| k)
            .collect();
        for k in expired {
            self.close_flow(k);
        }
    }

    /// Closes every flow (drain: without its listener socket a flow cannot reply).
    pub(super) fn close_all_flows(&mut self) {
        let keys: Vec<usize> = self.flows.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close_flow(k);
        }
    }
}

/// Sends a listener's batched replies; what the kernel will not take now is dropped
/// (UDP) and counted.
fn flush(udp: &mut UdpListener, stats: &ListenerCounters) {
    let total = udp.replies.len();
    let mut from = 0;
    while from < total {
        match udp.replies.send_to(udp.socket.as_fd(), from) {
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
    udp.replies.clear();
}

/// The address a client reached: the listener's, with the IP it sent to when the
/// listener binds a wildcard address.
fn reached(listen: SocketAddr, local: Option<IpAddr>) -> SocketAddr {
    match local {
        Some(ip) => SocketAddr::new(ip, listen.port()),
        None => listen,
    }
}

/// A non-blocking UDP socket connected to `backend`: `socket` + `connect` (which also
/// picks the local port), two syscalls per new flow.
fn upstream(backend: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(backend),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    s.connect(&backend.into())?;
    Ok(UdpSocket::from_std(s.into()))
}
