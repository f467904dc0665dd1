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
use super::hello::{Fed, Pending};
use super::socket::{reached, upstream};
use super::UdpPlane;
use crate::accesslog::{End, Proto, Record};
use crate::balance::hash::{flow_hash, PROTO_UDP};
use crate::dataplane::admission::Admitted;
use crate::dataplane::budget::FLOW_FDS;
use crate::dataplane::listener::ListenerShared;
use crate::dataplane::stats::{Counter, ListenerCounters};
use crate::dataplane::timers::{millis, Millis};
use crate::dataplane::token::{self, Key, Kind};
use crate::sni::quic::QuicHello;
use crate::sni::{ServerName, Verdict};

/// Which counter a drop adds to.
type CounterOf = fn(&ListenerCounters) -> &Counter;

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
            return self.open_seated(id, admitted, Asked::NOTHING, registry, now);
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
            v => self.open_seated(id, admitted, Asked::from(v, &[]), registry, now),
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
                self.open_seated(id, p.admitted(), asked, registry, now)
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
            r.sni = asked.name.clone();
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
            let routing = shared.routing.load();
            routing
                .params
                .admission
                .release(&shared.sources, a, client.ip(), now);
        }
        shared.release();
    }

    /// Opens the flow of `id`, seated (holding `admitted`), in the pool its hello
    /// asked for (`asked`), and sends it the datagrams held while the hello was read;
    /// or drops it (no descriptor, no route, no backend: counted).
    fn open_seated(
        &mut self,
        id: FlowId,
        admitted: Option<Admitted>,
        asked: Asked,
        registry: &Registry,
        now: Millis,
    ) -> Option<Key> {
        let (lkey, client, local) = id;
        let l = self.listeners.get_mut(lkey)?;
        let shared = &Arc::clone(l.shared());
        let epoch = l.refresh();
        let routing = Arc::clone(l.routing());
        let params = &routing.params;
        let held = asked.held.len() as u64;
        if !self.budget.take(FLOW_FDS) {
            self.unseat((lkey, client), admitted, now);
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
        let placed = routing.route(asked.name.as_ref().map(ServerName::as_str));
        let opened = placed.and_then(|(slot, pool)| {
            let (b, target) = pool.pick(key)?;
            let addr = target.addr;
            let target = Arc::clone(target);
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
                let more =
                    |c: &ListenerCounters, f: fn(&ListenerCounters) -> &Counter| f(c).add(held);
                let stats = shared.stats.shard(self.worker);
                match failed {
                    Some((addr, Err(e))) if crate::sys::is_fd_limit(&e) => {
                        more(stats, |c| &c.udp_dropped_fd_limit);
                        self.dropped(
                            (shared, client),
                            (End::Rejected, Some("fd_limit")),
                            |c| &c.udp_dropped_fd_limit,
                            now,
                            || format!("no descriptor for a flow to {addr} ({e}): dropping"),
                        )
                    }
                    Some((addr, Err(e))) => {
                        more(stats, |c| &c.udp_dropped_send);
                        self.dropped(
                            (shared, client),
                            (End::LocalError, None),
                            |c| &c.udp_dropped_send,
                            now,
                            || format!("cannot open a flow to {addr} ({e}): dropping"),
                        )
                    }
                    _ if placed.is_none() => {
                        self.refuse_hello((shared, client), &asked, held + 1, now)
                    }
                    _ if placed.is_some_and(|(_, p)| p.loops) => {
                        more(stats, |c| &c.udp_dropped_loop);
                        self.dropped(
                            (shared, client),
                            (End::Rejected, Some("loop")),
                            |c| &c.udp_dropped_loop,
                            now,
                            || format!("no backend but ringway's own addresses (a loop) for a new udp flow from {client}: dropping"),
                        )
                    }
                    _ => {
                        more(stats, |c| &c.udp_dropped_no_backend);
                        self.dropped(
                            (shared, client),
                            (End::NoBackend, None),
                            |c| &c.udp_dropped_no_backend,
                            now,
                            || format!("no backend for a new udp flow from {client}: dropping"),
                        )
                    }
                }
                return None;
            }
        };
        self.index.insert(id, fkey);
        if let Some(l) = self.listeners.get_mut(lkey) {
            let flows = &self.flows;
            l.flow_opened(fkey, |k| flows.get(k).is_some_and(|f| !f.answered()));
        }
        shared.stats.shard(self.worker).udp_flows.inc();
        if let Some(f) = self.flows.get_mut(fkey) {
            f.asked_for(asked.name);
            let counters = f.target().counters.shard(self.worker);
            counters.connections.inc();
            counters.active.add(1);
            // The datagrams held while the hello was read go first, in order.
            for d in asked.held {
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

/// What a new flow's hello asked for (`route_by = "sni"`), and the datagrams held
/// while it was read.
#[derive(Debug)]
pub(super) struct Asked<'a> {
    /// The server name it asked for.
    name: Option<ServerName>,
    /// What it said instead, when it was not a QUIC hello ringway reads (or none came
    /// in time: [`Asked::TIMEOUT`]).
    not: Option<&'static str>,
    held: &'a [Box<[u8]>],
}

impl<'a> Asked<'a> {
    /// A listener that does not route by name.
    const NOTHING: Asked<'static> = Asked {
        name: None,
        not: None,
        held: &[],
    };

    /// No whole hello within `sni_timeout`, or the worker held all it can.
    pub(super) const TIMEOUT: Asked<'static> = Asked {
        name: None,
        not: Some(SNI_TIMEOUT),
        held: &[],
    };

    /// The reader's answer, and the datagrams held before it.
    fn from(v: Verdict, held: &'a [Box<[u8]>]) -> Asked<'a> {
        let (name, not) = match v {
            Verdict::Name(n) => (Some(n), None),
            Verdict::NoName => (None, None),
            Verdict::Not(why) => (None, Some(why)),
            Verdict::NeedMore => (None, Some(SNI_TIMEOUT)),
        };
        Asked { name, not, held }
    }

    /// Why a flow that asked for this has no pool: its counter, its access-log end,
    /// and a warning.
    fn refusal(&self) -> (CounterOf, (End, Option<&'static str>), String) {
        match (self.not, &self.name) {
            (Some(SNI_TIMEOUT), _) => (
                |c| &c.udp_dropped_sni_timeout,
                (End::Rejected, Some("sni_timeout")),
                "no whole QUIC ClientHello within sni_timeout".to_string(),
            ),
            (Some(why), _) => (
                |c| &c.udp_dropped_not_quic,
                (End::Rejected, Some("not_quic")),
                format!("{why} (no default pool)"),
            ),
            (None, Some(n)) => (
                |c| &c.udp_dropped_no_route,
                (End::Rejected, Some("no_route")),
                format!("no route for server name {}", n.as_str()),
            ),
            (None, None) => (
                |c| &c.udp_dropped_no_route,
                (End::Rejected, Some("no_route")),
                "no server name and no default pool".to_string(),
            ),
        }
    }
}

/// [`Asked::not`] for a hello that was not whole in time.
const SNI_TIMEOUT: &str = "sni_timeout";
