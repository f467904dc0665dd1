//! Opening a flow: a place for it (the lists, per-source limits, `max_connections`),
//! a descriptor, a pool (on `route_by = "sni"` listeners, the one the flow's QUIC
//! Initials name, read while its first datagrams are held: see [`super::hello`]), a
//! backend from that pool's ring and a connected upstream socket; or a counted,
//! logged drop saying which of these failed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mio::{Interest, Registry};

use super::flow::{Flow, FlowId};
use super::hello::{Asked, CounterOf, Fed, Pending};
use super::socket::{reached, upstream};
use super::UdpPlane;
use crate::accesslog::{End, Proto, Record};
use crate::balance::hash::{flow_hash, PROTO_UDP};
use crate::dataplane::admission::Admitted;
use crate::dataplane::budget::FLOW_FDS;
use crate::dataplane::listener::ListenerShared;
use crate::dataplane::load::Claim;
use crate::dataplane::timers::{millis, Millis};
use crate::dataplane::token::{self, Key, Kind};
use crate::sni::quic::QuicHello;
use crate::sni::{ServerName, Verdict};

impl UdpPlane {
    /// Creates the flow for a new client's `datagram`, or drops it (removed listener,
    /// max flows, no descriptor, no backend); on a `route_by = "sni"` listener the
    /// flow opens once its hello is read, its datagrams held until then.
    pub(super) fn open_flow(
        &mut self,
        id: FlowId,
        datagram: &[u8],
        registry: &Registry,
        now: Millis,
    ) -> Option<Key> {
        if self.hellos.contains(&id) {
            return self.next_hello(id, datagram, registry, now);
        }
        let (admitted, by_name) = self.seat(id, registry, now)?;
        if !by_name {
            return self.open_seated(id, admitted, Asked::NOTHING, registry, now, false);
        }
        let mut reader = QuicHello::new();
        match reader.feed(datagram) {
            Verdict::NeedMore => {
                while self.hellos.full_for(datagram.len()) {
                    let Some(p) = self
                        .hellos
                        .oldest()
                        .and_then(|o| self.hellos.take(&o).map(|p| (o, p)))
                    else {
                        break;
                    };
                    self.hello_dropped(p.0, p.1, 0, Asked::TIMEOUT, now);
                }
                let timeout = self.listeners.get(id.0)?.routing().params.sni_timeout;
                self.hellos
                    .hold(id, (reader, datagram), admitted, now + millis(timeout));
                None
            }
            v => self.open_seated(id, admitted, Asked::from(v, &[]), registry, now, false),
        }
    }

    /// A further datagram of flow `id`, whose hello is being read.
    fn next_hello(
        &mut self,
        id: FlowId,
        datagram: &[u8],
        registry: &Registry,
        now: Millis,
    ) -> Option<Key> {
        match self.hellos.feed(&id, datagram)? {
            Fed::Held => None,
            Fed::Full => {
                let p = self.hellos.take(&id)?;
                self.hello_dropped(id, p, 1, Asked::TIMEOUT, now);
                None
            }
            Fed::Answer(v) => {
                let p = self.hellos.take(&id)?;
                let asked = Asked::from(v, p.held());
                self.open_seated(id, p.admitted(), asked, registry, now, false)
            }
        }
    }

    /// Ends reading flow `id`'s hello without a flow: its held datagrams and `more`
    /// not held are dropped, counted as `why` says.
    pub(super) fn hello_dropped(
        &mut self,
        id: FlowId,
        p: Pending,
        more: u64,
        why: Asked,
        now: Millis,
    ) {
        let (lkey, client, _) = id;
        self.unseat((lkey, client), p.admitted(), now);
        let Some(l) = self.listeners.get(lkey) else {
            return;
        };
        let shared = Arc::clone(l.shared());
        let n = p.held().len() as u64 + more;
        self.refuse_hello((&shared, client), &why, n, now);
    }

    /// Counts, logs (with the name asked for) and warns about (at most once a second)
    /// the `n` datagrams of a new flow whose hello got it no pool.
    fn refuse_hello(
        &mut self,
        (shared, client): (&ListenerShared, SocketAddr),
        asked: &Asked,
        n: u64,
        now: Millis,
    ) {
        let (counter, end, warn) = asked.refusal();
        counter(shared.stats.shard(self.worker)).add(n);
        if self.log.wants(end.0) {
            let mut r = Record::refused(&shared.name, Proto::Udp, client, end.0, end.1);
            r.datagrams = Some((n, 0));
            r.sni = asked.name().cloned();
            self.log.send(r);
        }
        if let Some(suppressed) = self.warn.allow(now) {
            tracing::warn!(listener = %shared.name, suppressed, "{client}: {warn}: dropping a new flow");
        }
    }

    /// Drops the flows of listener `lkey` whose hello is being read: the listener is
    /// going (removed by a reload, or a drain), at `now`.
    pub(super) fn drop_hellos_of(&mut self, lkey: Key, now: Millis) {
        for id in self.hellos.of_listener(lkey) {
            let Some(p) = self.hellos.take(&id) else {
                continue;
            };
            self.unseat((lkey, id.1), p.admitted(), now);
            if let Some(l) = self.listeners.get(lkey) {
                let stats = l.shared().stats.shard(self.worker);
                stats.udp_dropped_removed.add(p.held().len() as u64);
            }
        }
    }

    /// Takes a place for a new flow of `id`: the listener is live, the lists and the
    /// per-source limits admit the client, and `max_connections` has room (the oldest
    /// unanswered flow makes some when full). Its place in the per-source table, and
    /// whether the listener routes by server name; `None`: dropped (counted).
    fn seat(
        &mut self,
        id: FlowId,
        registry: &Registry,
        now: Millis,
    ) -> Option<(Option<Admitted>, bool)> {
        let (lkey, client, _) = id;
        let l = self.listeners.get_mut(lkey)?;
        let shared = &Arc::clone(l.shared());
        if l.retired() {
            shared.stats.shard(self.worker).udp_dropped_removed.inc();
            if self.log.wants(End::ListenerRemoved) {
                self.log.send(Record::refused(
                    &shared.name,
                    Proto::Udp,
                    client,
                    End::ListenerRemoved,
                    None,
                ));
            }
            return None;
        }
        l.refresh();
        let routing = Arc::clone(l.routing());
        let params = &routing.params;
        let admitted = match params.admission.admit(&shared.sources, client.ip(), now) {
            Ok(admitted) => admitted,
            Err(refused) => {
                self.refuse_source((shared, client), refused, now);
                return None;
            }
        };
        // Full: the oldest flow its backend never answered makes room, if there is one.
        let room = shared.try_acquire(params.max_connections)
            || (self.evict_unanswered(lkey, registry, now)
                && shared.try_acquire(params.max_connections));
        if !room {
            if let Some(a) = admitted {
                params
                    .admission
                    .release(&shared.sources, a, client.ip(), now);
            }
            let max = params.max_connections;
            self.dropped(
                (shared, client),
                (End::Rejected, Some("max_flows")),
                |c| &c.udp_dropped_max_flows,
                now,
                || format!("udp_max_flows ({max}) reached: dropping a new flow from {client}"),
            );
            return None;
        }
        Some((admitted, routing.routes.by_server_name()))
    }

    /// Gives back the place [`UdpPlane::seat`] took for a flow of `client` on
    /// listener `lkey` that does not open.
    fn unseat(
        &mut self,
        (lkey, client): (Key, SocketAddr),
        admitted: Option<Admitted>,
        now: Millis,
    ) {
        let Some(l) = self.listeners.get(lkey) else {
            return;
        };
        let shared = l.shared();
        if let Some(a) = admitted {
            shared.release_source(a, client.ip(), now);
        }
        shared.release();
    }

    /// Opens the successor of flow `id`, which just ended at its last reply, ahead of
    /// its first datagram (see [`Flow::presume`]), and puts it in the kernel: only on
    /// a `forward = "kernel"` listener that does not route by name or limit sources,
    /// for a client that reuses its port (the caller checks [`Flow::port_reused`]: a
    /// stub resolver's port carries one query, and would leave a presumed flow behind
    /// each), and only
    /// where a new flow would open without a word (admitted, room, a descriptor, a
    /// backend). Nothing is counted or logged unless its first datagram comes (within
    /// `flow::PRESUMED_MS`).
    pub(super) fn presume(&mut self, id: FlowId, registry: &Registry, now: Millis) {
        let (lkey, client, _) = id;
        let Some(l) = self.listeners.get_mut(lkey) else {
            return;
        };
        l.refresh();
        let routing = Arc::clone(l.routing());
        let params = &routing.params;
        // Under per-source limits a presumed flow would hold a seat, and spend a
        // token of the rate, that its client may want for another port: none then.
        if l.retired()
            || params.forward != crate::dataplane::listener::Mode::Kernel
            || routing.routes.by_server_name()
            || params.admission.limits_sources()
            || self.offload.is_none()
        {
            return;
        }
        let shared = Arc::clone(l.shared());
        let Ok(admitted) = params.admission.admit(&shared.sources, client.ip(), now) else {
            return;
        };
        if !shared.try_acquire(params.max_connections) {
            if let Some(a) = admitted {
                params
                    .admission
                    .release(&shared.sources, a, client.ip(), now);
            }
            return;
        }
        if let Some(fkey) = self.open_seated(id, admitted, Asked::NOTHING, registry, now, true) {
            self.offload(fkey, 0, now);
        }
    }

    /// Opens the flow of `id`, seated (holding `admitted`), in the pool its hello
    /// asked for (`asked`), and sends it the datagrams held while the hello was read;
    /// or drops it (no descriptor, no route, no backend: counted). `presumed`: opened
    /// ahead of its first datagram ([`UdpPlane::presume`]): not counted, and a
    /// failure is silent.
    fn open_seated(
        &mut self,
        id: FlowId,
        admitted: Option<Admitted>,
        asked: Asked,
        registry: &Registry,
        now: Millis,
        presumed: bool,
    ) -> Option<Key> {
        let (lkey, client, local) = id;
        let l = self.listeners.get_mut(lkey)?;
        let shared = &Arc::clone(l.shared());
        let epoch = l.refresh();
        let routing = Arc::clone(l.routing());
        let params = &routing.params;
        let held = asked.held().len() as u64;
        if !self.budget.take(FLOW_FDS) {
            self.unseat((lkey, client), admitted, now);
            if presumed {
                return None;
            }
            let (used, limit) = (self.budget.used(), self.budget.limit());
            let rejected = (End::Rejected, Some("fd_limit"));
            shared
                .stats
                .shard(self.worker)
                .udp_dropped_fd_limit
                .add(held);
            self.dropped((shared, client), rejected, |c| &c.udp_dropped_fd_limit, now, || {
                format!("{used} of this worker's {limit} file descriptors in use: dropping a new flow from {client}")
            });
            return None;
        }
        let key = flow_hash(
            params.hash,
            PROTO_UDP,
            client,
            reached(shared.listen, local),
        );
        let placed = routing.route(asked.name().map(ServerName::as_str));
        // Backends at their `max_connections` take no new flow (a flow cannot wait).
        let mut full = false;
        let opened = placed.and_then(|(slot, pool)| {
            let chosen = pool.choose(key, |b| Claim::full(&pool.backends[b]));
            let Some((b, target, overflowed)) = chosen else {
                full = pool.choose(key, |_| false).is_some();
                return None;
            };
            let Some(target) = Claim::try_new(target) else {
                full = true;
                return None;
            };
            if overflowed {
                target.counters.shard(self.worker).overflowed.inc();
            }
            let addr = target.addr;
            let inserted = self.flows.insert_with(|k| {
                let mut socket = upstream(addr)?;
                registry.register(&mut socket, token::token(Kind::Flow, k), Interest::READABLE)?;
                let placed = (epoch, admitted);
                Ok::<_, io::Error>(Flow::new(id, socket, (slot, b, target), placed, now))
            });
            Some((addr, inserted))
        });
        let fkey = match opened {
            Some((_, Ok(k))) => k,
            failed => {
                self.unseat((lkey, client), admitted, now);
                self.budget.give(FLOW_FDS);
                if presumed {
                    return None;
                }
                let failure = match failed {
                    Some((addr, Err(e))) if crate::sys::is_fd_limit(&e) => {
                        OpenFailure::FdLimit(addr, e)
                    }
                    Some((addr, Err(e))) => OpenFailure::Socket(addr, e),
                    _ if placed.is_none() => {
                        self.refuse_hello((shared, client), &asked, held + 1, now);
                        return None;
                    }
                    _ if full => OpenFailure::Full,
                    _ if placed.is_some_and(|(_, p)| p.loops) => OpenFailure::Loop,
                    _ => OpenFailure::NoBackend,
                };
                let (counter, end) = failure.counted();
                // The datagrams held for it go with it.
                counter(shared.stats.shard(self.worker)).add(held);
                self.dropped((shared, client), end, counter, now, || {
                    failure.describe(client)
                });
                return None;
            }
        };
        self.index.insert(id, fkey);
        if let Some(l) = self.listeners.get_mut(lkey) {
            let flows = &self.flows;
            let offload = &self.offload;
            l.flow_opened(fkey, |k| super::offload::waiting(flows, offload, k));
        }
        if presumed {
            if let Some(f) = self.flows.get_mut(fkey) {
                f.presume();
            }
        } else {
            self.count_opened(fkey);
        }
        if let Some(f) = self.flows.get_mut(fkey) {
            f.asked_for(asked.name().cloned());
            // The datagrams held while the hello was read go first, in order.
            for d in asked.held() {
                match f.send_datagram(d, now) {
                    Ok(n) => f
                        .target()
                        .counters
                        .shard(self.worker)
                        .sent_bytes
                        .add(n as u64),
                    Err(_) => shared.stats.shard(self.worker).udp_dropped_send.inc(),
                }
            }
            // The routing just loaded says the idle timeouts: no second look.
            let at = f.idle_deadline((
                millis(params.idle_timeout),
                millis(params.unanswered_timeout),
            ));
            self.timers.arm(f.armed(), at, fkey);
        }
        Some(fkey)
    }
}

impl UdpPlane {
    /// Counts flow `fkey` as opened: its listener's flows, its backend's connections
    /// and active flows (a presumed flow at its first datagram).
    pub(super) fn count_opened(&mut self, fkey: Key) {
        let Some(f) = self.flows.get(fkey) else {
            return;
        };
        if let Some(l) = self.listeners.get(f.listener()) {
            l.shared().stats.shard(self.worker).udp_flows.inc();
        }
        let counters = f.target().counters.shard(self.worker);
        counters.connections.inc();
        counters.active.add(1);
    }

    /// Flow `fkey` has its first datagram at `now`: a presumed flow begins.
    pub(super) fn begin(&mut self, fkey: Key, now: Millis) {
        if self.flows.get_mut(fkey).is_some_and(|f| f.begin(now)) {
            self.count_opened(fkey);
        }
    }
}

/// Why a seated flow did not open.
#[derive(Debug)]
enum OpenFailure {
    /// No descriptor for its socket to this backend.
    FdLimit(SocketAddr, io::Error),
    /// Its socket to this backend could not be made.
    Socket(SocketAddr, io::Error),
    /// The only backends left are ringway's own addresses.
    Loop,
    /// No backend is up.
    NoBackend,
    /// Every backend up is at its `max_connections`.
    Full,
}

impl OpenFailure {
    /// Its counter and its access-log end.
    fn counted(&self) -> (CounterOf, (End, Option<&'static str>)) {
        match self {
            OpenFailure::FdLimit(..) => (
                |c| &c.udp_dropped_fd_limit,
                (End::Rejected, Some("fd_limit")),
            ),
            OpenFailure::Socket(..) => (|c| &c.udp_dropped_send, (End::LocalError, None)),
            OpenFailure::Loop => (|c| &c.udp_dropped_loop, (End::Rejected, Some("loop"))),
            OpenFailure::NoBackend => (|c| &c.udp_dropped_no_backend, (End::NoBackend, None)),
            OpenFailure::Full => (
                |c| &c.udp_dropped_backend_full,
                (End::Rejected, Some("backend_full")),
            ),
        }
    }

    /// Its warning, for a flow from `client`.
    fn describe(&self, client: SocketAddr) -> String {
        match self {
            OpenFailure::FdLimit(addr, e) => {
                format!("no descriptor for a flow to {addr} ({e}): dropping")
            }
            OpenFailure::Socket(addr, e) => {
                format!("cannot open a flow to {addr} ({e}): dropping")
            }
            OpenFailure::Loop => format!(
                "no backend but ringway's own addresses (a loop) for a new udp flow from {client}: dropping"
            ),
            OpenFailure::NoBackend => {
                format!("no backend for a new udp flow from {client}: dropping")
            }
            OpenFailure::Full => format!(
                "every backend is at its max_connections: dropping a new udp flow from {client}"
            ),
        }
    }
}
