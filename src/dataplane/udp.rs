//! UDP: a flow table, batched receive from clients, batched replies.
//!
//! A flow is (listener, client address); the local address is the listener's (UDP
//! listeners bind a specific IP). Its first datagram picks a backend from the ring
//! (protocol byte 17) and gets the flow its own connected upstream socket, so the
//! backend's replies arrive on that socket and are sent back to the client from the
//! listener's socket: the client only ever sees the address it sent to.
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
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::Interest;
use socket2::{Domain, Protocol, Socket, Type};

use super::token;
use super::worker::Worker;
use crate::balance::hash::{flow_hash, PROTO_UDP};
use crate::balance::Snapshot;
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
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A UDP listener inside a worker.
#[derive(Debug)]
pub(super) struct UdpListener {
    pub socket: UdpSocket,
    /// Replies waiting for the next `sendmmsg`.
    replies: Batch,
    /// The snapshot flows were last checked against, and a counter bumped when it
    /// changes, so a flow re-checks its backend once per change, not per datagram.
    seen: Arc<Snapshot>,
    epoch: u64,
}

impl UdpListener {
    pub fn new(socket: UdpSocket, snapshot: Arc<Snapshot>) -> UdpListener {
        UdpListener {
            socket,
            replies: Batch::new(BATCH, SLOT),
            seen: snapshot,
            epoch: 0,
        }
    }
}

/// One client's flow.
#[derive(Debug)]
pub(super) struct Flow {
    pub listener: usize,
    pub client: SocketAddr,
    socket: UdpSocket,
    backend: usize,
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
                            self.client_datagram(li, client, data);
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
                        tracing::debug!(listener = %self.listeners[li].shared.params.name, suppressed, "udp receive: {e}");
                    }
                }
            }
        }
        self.recv_batch = Some(batch);
        more
    }

    fn client_datagram(&mut self, li: usize, client: SocketAddr, data: &[u8]) {
        let stats = &self.listeners[li].shared.stats;
        stats.udp_in.fetch_add(1, Ordering::Relaxed);
        let key = match self.flow_index.get(&(li, client)) {
            Some(&k) => {
                self.check_backend(k);
                k
            }
            None => match self.open_flow(li, client) {
                Some(k) => k,
                None => return,
            },
        };
        let Some(f) = self.flows.get_mut(key) else {
            return;
        };
        let mut result = f.socket.send(data);
        if matches!(&result, Err(e) if is(e, libc::ECONNREFUSED)) {
            // A previous datagram drew an ICMP port-unreachable; this one was not sent.
            self.listeners[li]
                .shared
                .stats
                .backend_icmp_errors
                .fetch_add(1, Ordering::Relaxed);
            result = f.socket.send(data);
        }
        match result {
            Ok(_) => {
                f.sent += 1;
                f.last_active = self.now;
            }
            Err(e) => {
                let shared = &self.listeners[li].shared;
                shared
                    .stats
                    .udp_dropped_send
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.warn_limit.allow(self.now) {
                    tracing::warn!(listener = %shared.params.name, client = %client, suppressed, "udp datagram to backend dropped: {e}");
                }
            }
        }
    }

    /// Creates the flow for a new client, or drops its datagram (max flows, no backend).
    fn open_flow(&mut self, li: usize, client: SocketAddr) -> Option<usize> {
        let shared = Arc::clone(&self.listeners[li].shared);
        let params = &shared.params;
        if !shared.try_acquire() {
            shared
                .stats
                .udp_dropped_max_flows
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.warn_limit.allow(self.now) {
                tracing::warn!(listener = %params.name, client = %client, suppressed, "udp_max_flows ({}) reached: dropping a new flow", params.max_connections);
            }
            return None;
        }
        let epoch = self.refresh_epoch(li);
        let snapshot = self.seen_snapshot(li);
        let key = flow_hash(params.hash, PROTO_UDP, client, params.listen);
        let socket = snapshot.pick(key).and_then(|b| {
            let addr = snapshot.backends()[b].addr;
            match upstream(addr) {
                Ok(s) => Some((b, s)),
                Err(e) => {
                    tracing::debug!(listener = %params.name, backend = %addr, "udp upstream socket: {e}");
                    None
                }
            }
        });
        let Some((backend, mut socket)) = socket else {
            shared.release();
            shared
                .stats
                .udp_dropped_no_backend
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.warn_limit.allow(self.now) {
                tracing::warn!(listener = %params.name, client = %client, suppressed, "no backend for a new udp flow: dropping");
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
        entry.insert(Flow {
            listener: li,
            client,
            socket,
            backend,
            epoch,
            last_active: self.now,
            sent: 0,
            replies: 0,
        });
        self.flow_index.insert((li, client), fkey);
        shared.stats.udp_flows.fetch_add(1, Ordering::Relaxed);
        Some(fkey)
    }

    /// The listener's snapshot epoch: bumped when the control plane has published a new
    /// snapshot since the last look. `ArcSwap::load` takes no shared lock or refcount.
    fn refresh_epoch(&mut self, li: usize) -> u64 {
        let slot = &mut self.listeners[li];
        let current = slot.shared.snapshot.load();
        let Some(udp) = slot.udp.as_mut() else {
            return 0;
        };
        if !Arc::ptr_eq(&current, &udp.seen) {
            udp.seen = Arc::clone(&current);
            udp.epoch += 1;
        }
        udp.epoch
    }

    /// The snapshot the listener's flows are checked against.
    fn seen_snapshot(&self, li: usize) -> Arc<Snapshot> {
        match self.listeners[li].udp.as_ref() {
            Some(u) => Arc::clone(&u.seen),
            None => self.listeners[li].shared.snapshot.load_full(),
        }
    }

    /// Flow affinity: a flow keeps its backend while it is up; once the snapshot says it
    /// is down, the flow moves to the backend the ring gives now.
    fn check_backend(&mut self, fkey: usize) {
        let li = self.flows[fkey].listener;
        let epoch = self.refresh_epoch(li);
        if self.flows[fkey].epoch == epoch {
            return;
        }
        let snapshot = self.seen_snapshot(li);
        let f = &mut self.flows[fkey];
        f.epoch = epoch;
        if snapshot.is_up(f.backend) {
            return;
        }
        let params = &self.listeners[li].shared.params;
        let key = flow_hash(params.hash, PROTO_UDP, f.client, params.listen);
        let Some(b) = snapshot.pick(key) else { return };
        if b == f.backend {
            return; // fail-open (all down, use-all) may give the same one back
        }
        if let Ok(mut socket) = upstream(snapshot.backends()[b].addr) {
            if self
                .poll
                .registry()
                .register(&mut socket, token::flow(fkey), Interest::READABLE)
                .is_ok()
            {
                // The old socket closes (and leaves epoll) when replaced.
                f.socket = socket;
                f.backend = b;
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
        let responses = self.listeners[li].shared.params.udp_responses as u64;
        let mut finished = false;
        let mut more = true;
        for _ in 0..REPLIES_PER_WAKEUP {
            let slot = &mut self.listeners[li];
            let shared = &slot.shared;
            let Some(udp) = slot.udp.as_mut() else {
                return false;
            };
            if udp.replies.is_full() {
                flush(udp, shared);
            }
            let buf = udp.replies.next_slot().expect("flushed above");
            match f.socket.recv(buf) {
                Ok(n) => {
                    udp.replies.commit(n, f.client);
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
                        shared
                            .stats
                            .backend_icmp_errors
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(suppressed) = self.warn_limit.allow(self.now) {
                        tracing::warn!(listener = %shared.params.name, client = %f.client, suppressed, "udp backend error: {e}");
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
            let shared = &slot.shared;
            if let Some(udp) = slot.udp.as_mut() {
                if !udp.replies.is_empty() {
                    flush(udp, shared);
                }
            }
        }
    }

    pub(super) fn close_flow(&mut self, fkey: usize) {
        if !self.flows.contains(fkey) {
            return;
        }
        let f = self.flows.remove(fkey);
        self.flow_index.remove(&(f.listener, f.client));
        self.listeners[f.listener].shared.release();
    }

    /// Closes flows idle for their listener's `udp_idle_timeout`.
    pub(super) fn expire_flows(&mut self) {
        let now = self.now;
        let expired: Vec<usize> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                now.duration_since(f.last_active)
                    >= self.listeners[f.listener].shared.params.idle_timeout
            })
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
fn flush(udp: &mut UdpListener, shared: &super::ListenerShared) {
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
                shared
                    .stats
                    .udp_dropped_send
                    .fetch_add(1, Ordering::Relaxed);
                from += 1;
            }
        }
    }
    shared
        .stats
        .udp_out
        .fetch_add(from as u64, Ordering::Relaxed);
    if from < total {
        shared
            .stats
            .udp_dropped_send
            .fetch_add((total - from) as u64, Ordering::Relaxed);
    }
    udp.replies.clear();
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
