//! A worker's flows across a binary upgrade: which flows it has, handing each to the
//! new process (its socket and counts; see [`Flow::export`]), and taking one over
//! from the old process.

use std::io;
use std::sync::Arc;

use mio::Registry;

use super::flow::{Flow, FlowId};
use super::{offload, UdpPlane, Work};
use crate::dataplane::budget::FLOW_FDS;
use crate::dataplane::handoff;
use crate::dataplane::load::Claim;
use crate::dataplane::timers::Millis;
use crate::dataplane::token::{self, Kind};

impl UdpPlane {
    /// Every open flow: its client, and the address it sends to (the listener's, or on
    /// a wildcard listener the one the client's datagrams named).
    pub fn flow_keys(&self) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
        self.flows
            .keys_where(|_| true)
            .into_iter()
            .filter_map(|k| {
                let f = self.flows.get(k)?;
                let listen = self.listeners.get(f.listener())?.shared().listen;
                let dst =
                    std::net::SocketAddr::new(f.local().unwrap_or(listen.ip()), listen.port());
                Some((f.client(), dst))
            })
            .collect()
    }

    /// Hands every flow to `exporter` (an upgrade: see [`Flow::export`]), ending
    /// its counts here; returns how many went. The listeners stay until
    /// [`UdpPlane::close_all`].
    pub fn export(
        &mut self,
        exporter: &handoff::Exporter,
        registry: &Registry,
        now: Millis,
    ) -> usize {
        let mut n = 0;
        for fkey in self.flows.keys_where(|_| true) {
            let Some((f, Some(gone))) = self.detach(fkey, now) else {
                continue;
            };
            if f.presumed() {
                // Never a flow: not handed over (the new process opens it if it comes).
                continue;
            }
            let Some(l) = self.listeners.get(gone.listener()) else {
                continue;
            };
            let out = f.export(registry, (&l.shared().name, self.worker, now));
            let _ = exporter.send(handoff::Handed::One(Box::new(out)));
            n += 1;
        }
        n
    }

    /// Takes a flow another process handed over, on this worker's socket of its
    /// listener; one whose listener or backend this process does not have is
    /// dropped (the client's next datagram opens a new flow).
    pub fn adopt(&mut self, a: handoff::Adopted, registry: &Registry, now: Millis) {
        let handoff::Adopted {
            exported,
            listener,
            target,
        } = a;
        let (handoff::State::Flow(f), Some(fd), Some(target)) =
            (exported.state, exported.fds.into_iter().next(), target)
        else {
            return;
        };
        let Some(lkey) = self
            .listeners
            .keys_where(|l| Arc::ptr_eq(l.shared(), &listener))
            .first()
            .copied()
        else {
            return;
        };
        let id: FlowId = (lkey, f.client, f.local);
        // The client's datagrams came here first (a new flow): that one stays.
        if self.index.contains_key(&id) {
            return;
        }
        let admitted = f
            .admitted
            .then(|| listener.readmit_source(f.client.ip(), now))
            .flatten();
        listener.acquire();
        let _ = self.budget.take(FLOW_FDS);
        let socket = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd));
        let claim = Claim::new(target);
        let inserted = self.flows.insert_with(|k| {
            let mut flow = Flow::adopt((lkey, f, socket), claim, admitted, now);
            registry.register(
                flow.socket(),
                token::token(Kind::Flow, k),
                mio::Interest::READABLE,
            )?;
            Ok::<_, io::Error>(flow)
        });
        let Ok(fkey) = inserted else {
            listener.release();
            self.budget.give(FLOW_FDS);
            return;
        };
        self.index.insert(id, fkey);
        let idle = self.idle_of(lkey);
        if let Some(l) = self.listeners.get_mut(lkey) {
            let flows = &self.flows;
            let offload = &self.offload;
            l.flow_opened(fkey, |k| offload::waiting(flows, offload, k));
        }
        if let Some(f) = self.flows.get_mut(fkey) {
            f.target().counters.shard(self.worker).active.add(1);
            if let Some(idle) = idle {
                let at = f.idle_deadline(idle);
                self.timers.arm(f.armed(), at, fkey);
            }
        }
        // Replies that came meanwhile wait on its socket.
        self.requeue.push(Work::Flow(fkey));
    }
}
