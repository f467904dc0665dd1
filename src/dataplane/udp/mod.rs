//! The UDP plane of a worker: a flow table, batched receive from clients, batched
//! replies.
//!
//! A flow is (listener, client address, local address). The local address is the
//! listener's, or, for a listener on a wildcard address, the datagram's destination as
//! `IP_PKTINFO`/`IPV6_PKTINFO` reports it. Its first datagram picks a backend from the
//! ring (protocol byte 17) and gets the flow its own connected upstream socket, so the
//! backend's replies arrive on that socket and are sent back to the client from the
//! listener's socket, from the address the client sent to: the client only ever sees
//! that address.
//!
//! Client datagrams come in with `recvmmsg` (up to 32 per call); replies go out with
//! `sendmmsg`, gathered from every flow that had replies in one loop iteration.
//! Buffers are allocated once per worker; nothing is allocated per datagram.
//!
//! A flow ends after `udp_idle_timeout` without datagrams either way (one timer entry
//! per flow, see [`super::timers`]), or, with `udp_responses = N`, as soon as every
//! datagram it forwarded got N replies (NGINX's `proxy_responses`: 1 for DNS). A flow
//! keeps its backend while that backend is up; when the published routing says it is
//! down, the flow's next datagram re-picks. An ICMP error from a backend (its port is
//! closed) is counted and reported as a passive health failure, so a dead backend is
//! taken out even without active checks.

mod close;
mod flow;
mod handoff;
mod hello;
pub mod kernel;
mod listener;
mod offload;
mod open;
mod replies;
mod socket;
mod unanswered;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use mio::Registry;

pub use socket::bind_udp;

use super::admission::Refused;
use super::budget::FdBudget;
use super::listener::ListenerShared;
use super::load::Claim;
use super::ratelimit::RateLimit;
use super::stats::{Counter, ListenerCounters};
use super::timers::{millis, Millis, Timers};
use super::token::{self, Key, Kind, Slots};
use crate::accesslog::{End, Proto, Record, Sink};
use crate::balance::hash::{flow_hash, PROTO_UDP};
use crate::sys::mmsg::Batch;
use flow::{Flow, FlowId};
use hello::{Asked, Hellos};
use listener::{UdpListener, BATCH, SLOT};
use socket::{reached, upstream};

/// Batches read from one listener per wake-up before other work gets a turn.
const BATCHES_PER_WAKEUP: usize = 8;

/// Work left over by a budget, done before the next wait.
#[derive(Debug, Clone, Copy)]
enum Work {
    Listener(Key),
    Flow(Key),
}

/// A worker's UDP listeners and flows.
#[derive(Debug)]
pub(super) struct UdpPlane {
    worker: usize,
    listeners: Slots<UdpListener>,
    flows: Slots<Flow>,
    index: HashMap<FlowId, Key>,
    /// New flows of `route_by = "sni"` listeners whose hello is not whole yet.
    hellos: Hellos,
    /// Receive batch (allocated with the first listener).
    batch: Option<Batch>,
    /// Scratch: the flow of each datagram of a batch, then the slots of one flow.
    routed: Vec<(Key, usize)>,
    slots: Vec<usize>,
    timers: Timers,
    requeue: Vec<Work>,
    budget: FdBudget,
    warn: RateLimit,
    log: Sink,
    /// The kernel path, when this process has it.
    offload: Option<offload::Offload>,
}

fn is(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

impl UdpPlane {
    /// An empty plane for worker `worker`, drawing descriptors from `budget` and
    /// handing access-log records to `log`.
    pub fn new(worker: usize, budget: FdBudget, log: Sink) -> UdpPlane {
        UdpPlane {
            worker,
            listeners: Slots::default(),
            flows: Slots::default(),
            index: HashMap::new(),
            hellos: Hellos::default(),
            batch: None,
            routed: Vec::new(),
            slots: Vec::new(),
            timers: Timers::default(),
            requeue: Vec::new(),
            budget,
            warn: RateLimit::default(),
            log,
            offload: None,
        }
    }

    /// Starts serving a listening socket (datagrams queued before registration raise
    /// no edge: it is read at once).
    pub fn add_listener(
        &mut self,
        socket: std::net::UdpSocket,
        shared: Arc<ListenerShared>,
        registry: &Registry,
        held: bool,
    ) -> io::Result<()> {
        let key = self.listeners.insert_with(|k| {
            let token = token::token(Kind::UdpListener, k);
            UdpListener::new(socket, shared, (registry, token), held)
        })?;
        self.batch
            .get_or_insert_with(|| Batch::with_pktinfo(BATCH, SLOT));
        if !held {
            self.requeue.push(Work::Listener(key));
        }
        Ok(())
    }

    /// Starts reading the listeners added held (an upgrade: the old process's flows
    /// are here now, so a client's datagram finds its flow).
    pub fn start_held(&mut self, registry: &Registry) {
        for (key, l) in self.listeners.iter_mut() {
            match l.start(registry) {
                Ok(true) => self.requeue.push(Work::Listener(key)),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(worker = self.worker, listener = %l.shared().name, "cannot start reading: {e}")
                }
            }
        }
    }

    /// Takes no new flows on `shared`'s socket; it stays until its flows end (their
    /// replies leave from it).
    pub fn remove_listener(
        &mut self,
        shared: &Arc<ListenerShared>,
        registry: &Registry,
        now: Millis,
    ) {
        let keys = self
            .listeners
            .keys_where(|l| !l.retired() && Arc::ptr_eq(l.shared(), shared));
        for key in keys {
            if self.listeners.get_mut(key).is_some_and(UdpListener::retire) {
                self.drop_hellos_of(key, now);
                if let Some(l) = self.listeners.remove(key) {
                    l.deregister(registry);
                }
            }
        }
    }

    /// An event for a token of this plane.
    pub fn on_event(&mut self, kind: Kind, key: Key, registry: &Registry, now: Millis) {
        let more = match kind {
            Kind::UdpListener => self.readable(key, registry, now),
            Kind::Flow => self.flow_readable(key, registry, now),
            _ => false,
        };
        if more {
            self.requeue.push(match kind {
                Kind::Flow => Work::Flow(key),
                _ => Work::Listener(key),
            });
        }
    }

    /// Runs the work a budget left over.
    pub fn run_requeued(&mut self, registry: &Registry, now: Millis) {
        for work in std::mem::take(&mut self.requeue) {
            let more = match work {
                Work::Listener(key) => self.readable(key, registry, now),
                Work::Flow(key) => self.flow_readable(key, registry, now),
            };
            if more {
                self.requeue.push(work);
            }
        }
    }

    /// Work is waiting: the worker must not sleep.
    pub fn busy(&self) -> bool {
        !self.requeue.is_empty()
    }

    /// Sends every listener's pending replies.
    pub fn flush_replies(&mut self) {
        let worker = self.worker;
        for (_, l) in self.listeners.iter_mut() {
            if l.has_replies() {
                l.flush(worker);
            }
        }
    }

    /// Closes flows whose idle deadline passed; re-arms the others.
    pub fn fire_timers(&mut self, registry: &Registry, now: Millis) {
        self.sweep(now);
        while let Some((at, key)) = self.timers.pop_due(now) {
            let Some(f) = self.flows.get_mut(key) else {
                continue;
            };
            if !Timers::fired(f.armed(), at) {
                continue;
            }
            let lkey = f.listener();
            // Its datagrams through the kernel count as activity.
            self.sync_flow(key, now);
            let Some(idle) = self.idle_of(lkey) else {
                continue;
            };
            let Some(f) = self.flows.get_mut(key) else {
                continue;
            };
            // Idle by every count: a datagram the kernel forwards while this decides
            // keeps it (the kernel is paused on it, see `settle`).
            let due = f.idle_deadline(idle);
            if due <= now && self.settle(key, now, |f| f.idle_deadline(idle) <= now) {
                if let Some(f) = self.flows.get(key) {
                    let end = f.idle_end();
                    self.close_flow(key, end, registry, now);
                }
            } else if let Some(f) = self.flows.get_mut(key) {
                let due = f.idle_deadline(idle);
                self.timers.arm(f.armed(), due, key);
            }
        }
        while let Some((id, p)) = self.hellos.pop_due(now) {
            self.hello_dropped(id, p, 0, Asked::TIMEOUT, now);
        }
        let flows = &mut self.flows;
        self.timers.compact(flows.len(), |at, key| {
            flows.get_mut(key).is_some_and(|f| f.armed().is(at))
        });
    }

    /// When a flow next idles out.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.timers.next(),
            self.hellos.next_deadline(),
            self.next_sweep(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The idle timeouts flows of listener `lkey` have now: answered, and not.
    fn idle_of(&mut self, lkey: Key) -> Option<(Millis, Millis)> {
        let l = self.listeners.get_mut(lkey)?;
        l.refresh();
        let p = &l.routing().params;
        Some((millis(p.idle_timeout), millis(p.unanswered_timeout)))
    }

    /// Reads client datagrams from listener `lkey`; true if it stopped at its budget.
    fn readable(&mut self, lkey: Key, registry: &Registry, now: Millis) -> bool {
        let Some(mut batch) = self.batch.take() else {
            return false;
        };
        let mut more = true;
        for _ in 0..BATCHES_PER_WAKEUP {
            let Some(l) = self.listeners.get(lkey) else {
                more = false;
                break;
            };
            match l.recv(&mut batch) {
                Ok(n) => {
                    self.forward_batch(lkey, &mut batch, registry, now);
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
                    if let Some(suppressed) = self.warn.allow(now) {
                        tracing::debug!(listener = %l.shared().name, suppressed, "udp receive: {e}");
                    }
                }
            }
        }
        self.batch = Some(batch);
        more
    }

    /// Forwards the client datagrams in `batch` (read from listener `lkey`): finds or
    /// opens each one's flow, then sends each flow's datagrams, in order, with one
    /// `sendmmsg` (a resolver or game client often has several in one batch).
    fn forward_batch(&mut self, lkey: Key, batch: &mut Batch, registry: &Registry, now: Millis) {
        let mut routed = std::mem::take(&mut self.routed);
        routed.clear();
        for i in 0..batch.len() {
            let (datagram, from) = batch.get(i);
            if let Some(client) = from {
                let id = (lkey, client, batch.local(i));
                if let Some(fkey) = self.flow_for(id, datagram, registry, now) {
                    routed.push((fkey, i));
                }
            }
        }
        // Stable: each flow's datagrams keep their order.
        routed.sort_by_key(|&(fkey, _)| fkey);
        let mut slots = std::mem::take(&mut self.slots);
        for group in routed.chunk_by(|a, b| a.0 == b.0) {
            slots.clear();
            slots.extend(group.iter().map(|&(_, i)| i));
            self.send_to_flow(group[0].0, batch, &slots, now);
        }
        self.routed = routed;
        self.slots = slots;
    }

    /// Sends datagrams `slots` of `batch` through flow `fkey`; what the kernel refuses
    /// is dropped and counted.
    fn send_to_flow(&mut self, fkey: Key, batch: &mut Batch, slots: &[usize], now: Millis) {
        self.begin(fkey, now);
        // Into the kernel's hands before its datagrams go, so their replies find it
        // there (counted as sent; what does not go is taken back below).
        let planned = slots.len() as u64;
        let was_installed = self.flows.get(fkey).is_some_and(|f| f.kernel_installed());
        if !was_installed {
            self.offload(fkey, planned, now);
        }
        let Some(f) = self.flows.get_mut(fkey) else {
            return;
        };
        let Some(l) = self.listeners.get(f.listener()) else {
            return;
        };
        let shared = l.shared();
        let stats = shared.stats.shard(self.worker);
        let (mut at, mut retried, mut sent) = (0, false, 0);
        while at < slots.len() {
            match f.send_slots(batch, &slots[at..], now) {
                Ok((n, bytes)) => {
                    sent += n as u64;
                    f.target().counters.shard(self.worker).sent_bytes.add(bytes);
                    // sendmmsg takes at least one or fails: 0 would mean none can go.
                    at += n.max(1);
                    if n == 0 {
                        stats.udp_dropped_send.inc();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is(&e, libc::ECONNREFUSED) && !retried => {
                    // A previous datagram drew an ICMP port-unreachable; this one was
                    // not sent: count it against the backend and try once more.
                    retried = true;
                    f.refuse();
                    stats.backend_icmp_errors.inc();
                    f.target().counters.shard(self.worker).connect_errors.inc();
                    f.target().report_failure(&e);
                }
                Err(e) => {
                    stats.udp_dropped_send.inc();
                    at += 1;
                    if let Some(suppressed) = self.warn.allow(now) {
                        tracing::warn!(listener = %shared.name, client = %f.client(), suppressed, "udp datagram to backend dropped: {e}");
                    }
                }
            }
        }
        if retried {
            // Refused by its backend: it stays here until its next datagram moves it.
            self.unoffload(fkey, now);
        } else if was_installed {
            self.own_traffic(fkey, sent, 0);
        } else if sent < planned {
            self.not_sent(fkey, planned - sent);
        }
    }

    /// The flow of `datagram` from `client` to local address `local` (only wildcard
    /// listeners ask for `IP_PKTINFO`, so it is `None` on the others): found, or
    /// opened; `None` when the datagram is dropped (counted there) or held while the
    /// flow's hello is read.
    fn flow_for(
        &mut self,
        id: FlowId,
        datagram: &[u8],
        registry: &Registry,
        now: Millis,
    ) -> Option<Key> {
        // A listener removed by a reload keeps its socket for its old flows; when a
        // listener on the same address replaced it (renamed), the kernel still hashes
        // some new clients to the old socket: their flows belong to the new listener.
        let (lkey, client, local) = id;
        let lkey = match self.listeners.get(lkey) {
            Some(l)
                if l.retired() && !self.index.contains_key(&id) && !self.hellos.contains(&id) =>
            {
                self.successor(lkey).unwrap_or(lkey)
            }
            Some(_) => lkey,
            None => return None,
        };
        let id = (lkey, client, local);
        if let Some(l) = self.listeners.get(lkey) {
            l.shared().stats.shard(self.worker).udp_in.inc();
        }
        let fkey = match self.index.get(&id).copied() {
            Some(k) if self.check_backend(k, registry, now) => k,
            Some(k) => {
                // A reload's lists refuse this source now: its flow ends here.
                if let Some(l) = self.listeners.get(lkey) {
                    l.shared().stats.shard(self.worker).udp_dropped_denied.inc();
                }
                let end = (End::Rejected, Some(Refused::Denied.reason()));
                self.close_flow_for(k, end, registry, now);
                return None;
            }
            None => self.open_flow(id, datagram, registry, now)?,
        };
        Some(fkey)
    }

    /// The live UDP listener on the same address as retired listener `lkey`, if any.
    fn successor(&self, lkey: Key) -> Option<Key> {
        let listen = self.listeners.get(lkey)?.shared().listen;
        self.listeners
            .iter()
            .find(|(_, l)| !l.retired() && l.shared().listen == listen)
            .map(|(k, _)| k)
    }

    /// Counts and logs (at most once a second; the message is only built when it is
    /// logged) a datagram dropped for a new flow.
    fn dropped(
        &mut self,
        (shared, client): (&ListenerShared, std::net::SocketAddr),
        (end, detail): (End, Option<&'static str>),
        counter: impl Fn(&ListenerCounters) -> &Counter,
        now: Millis,
        why: impl FnOnce() -> String,
    ) {
        counter(shared.stats.shard(self.worker)).inc();
        if self.log.wants(end) {
            self.log.send(Record::refused(
                &shared.name,
                Proto::Udp,
                client,
                end,
                detail,
            ));
        }
        if let Some(suppressed) = self.warn.allow(now) {
            tracing::warn!(listener = %shared.name, suppressed, "{}", why());
        }
    }

    /// Drops a datagram for a new flow whose source is refused: counted, logged, and
    /// warned about (at most once a second) when it is a per-source limit; a refusal
    /// by the lists is policy working, not news.
    fn refuse_source(
        &mut self,
        (shared, client): (&ListenerShared, std::net::SocketAddr),
        refused: Refused,
        now: Millis,
    ) {
        let counter = dropped_counter(refused);
        let end = (End::Rejected, Some(refused.reason()));
        if refused == Refused::Denied {
            counter(shared.stats.shard(self.worker)).inc();
            if self.log.wants(End::Rejected) {
                let record = Record::refused(&shared.name, Proto::Udp, client, end.0, end.1);
                self.log.send(record);
            }
            return;
        }
        let limit = match refused {
            Refused::SourceRate => "udp_flow_rate_per_source",
            _ => "udp_max_flows_per_source (or a source table full of busy sources)",
        };
        self.dropped((shared, client), end, counter, now, || {
            format!("{client}: {limit} reached: dropping a new flow")
        });
    }

    /// Closes the oldest flow of listener `lkey` its backend never answered, to make
    /// room; false when there is none.
    fn evict_unanswered(&mut self, lkey: Key, registry: &Registry, now: Millis) -> bool {
        let flows = &self.flows;
        let offload = &self.offload;
        let waiting = |k: Key| offload::waiting(flows, offload, k);
        let Some(victim) = self
            .listeners
            .get_mut(lkey)
            .and_then(|l| l.oldest_unanswered(waiting))
        else {
            return false;
        };
        self.close_flow_for(victim, (End::UdpUnanswered, Some("evicted")), registry, now);
        true
    }

    /// Re-checks flow `fkey` once per published routing: false when the lists refuse
    /// its source now; else moves it when its backend is down or gone (see
    /// [`Flow::placement`]).
    fn check_backend(&mut self, fkey: Key, registry: &Registry, now: Millis) -> bool {
        let Some(lkey) = self.flows.get(fkey).map(Flow::listener) else {
            return true;
        };
        let Some(l) = self.listeners.get_mut(lkey) else {
            return true;
        };
        let epoch = l.refresh();
        let Some(f) = self.flows.get_mut(fkey) else {
            return true;
        };
        // Once per published routing, not per datagram.
        if f.checked(epoch) {
            return true;
        }
        let routing = Arc::clone(l.routing());
        if !routing.params.admission.permits(f.client().ip()) {
            return false;
        }
        let listen = l.shared().listen;
        let key = flow_hash(
            routing.params.hash,
            PROTO_UDP,
            f.client(),
            reached(listen, f.local()),
        );
        let Some((slot, b)) = f.placement(&routing, key) else {
            return true;
        };
        let target = Arc::clone(&routing.pools[slot].backends[b]);
        let Ok(socket) = upstream(target.addr) else {
            return true;
        };
        // Its kernel entries name the old socket and backend.
        self.unoffload(fkey, now);
        let Some(f) = self.flows.get_mut(fkey) else {
            return true;
        };
        let token = token::token(Kind::Flow, fkey);
        let claim = Claim::new(Arc::clone(&target));
        let presumed = f.presumed();
        if let Ok(old) = f.move_to(socket, (b, claim), registry, token) {
            if !presumed {
                old.counters.shard(self.worker).active.add(-1);
                let counters = target.counters.shard(self.worker);
                counters.connections.inc();
                counters.active.add(1);
            }
        }
        true
    }
}

/// The counter of datagrams dropped for `refused`.
fn dropped_counter(refused: Refused) -> fn(&ListenerCounters) -> &Counter {
    match refused {
        Refused::Denied => |c| &c.udp_dropped_denied,
        Refused::SourceLimit => |c| &c.udp_dropped_source_limit,
        Refused::SourceRate => |c| &c.udp_dropped_source_rate,
    }
}
