//! How flows end: one (idle, answered, refused, moved; its access-log record, its
//! socket, its seat and descriptor back), or all of them when the worker drains.

use mio::Registry;

use super::flow::Flow;
use super::UdpPlane;
use crate::accesslog::End;
use crate::dataplane::budget::FLOW_FDS;
use crate::dataplane::timers::Millis;
use crate::dataplane::token::Key;

impl UdpPlane {
    /// Drain: without its listener socket a flow cannot reply, so flows end now.
    pub fn close_all(&mut self, registry: &Registry, now: Millis) {
        for key in self.flows.keys_where(|_| true) {
            self.close_flow(key, End::Drained, registry, now);
        }
        for key in self.listeners.keys_where(|_| true) {
            self.drop_hellos_of(key, now);
            if let Some(l) = self.listeners.remove(key) {
                l.deregister(registry);
            }
        }
    }

    /// Ends flow `fkey` (`end`: why, at `now`): its record goes to the access log, its
    /// socket closes, its listener slot and descriptor come back.
    pub(super) fn close_flow(&mut self, fkey: Key, end: End, registry: &Registry, now: Millis) {
        self.close_flow_for(fkey, (end, None), registry, now);
    }

    /// [`UdpPlane::close_flow`], with the access log's `detail`.
    pub(super) fn close_flow_for(
        &mut self,
        fkey: Key,
        (end, detail): (End, Option<&'static str>),
        registry: &Registry,
        now: Millis,
    ) {
        let Some((f, Some(gone))) = self.detach(fkey, now) else {
            return;
        };
        // A presumed flow whose first datagram never came was never a flow.
        if self.log.wants(end) && !f.presumed() {
            if let Some(l) = self.listeners.get(gone.listener) {
                self.log
                    .send(f.record(&l.shared().name, (end, detail), now));
            }
        }
        drop(f);
        if gone.last_of_removed {
            // The last flow of a removed listener: its replies queued in this pass
            // (the one that ended it, with udp_responses) leave before the socket goes.
            if let Some(mut l) = self.listeners.remove(gone.listener) {
                l.flush(self.worker);
                l.deregister(registry);
            }
        }
    }

    /// Takes flow `fkey` out of this plane (out of the kernel, the table and the
    /// index; its seat, source and descriptor given back) and returns it, with what
    /// its end means for its listener (`None`: the listener is gone already).
    pub(super) fn detach(&mut self, fkey: Key, now: Millis) -> Option<(Flow, Option<Gone>)> {
        self.unoffload(fkey, now);
        let f = self.flows.remove(fkey)?;
        self.index.remove(&f.id());
        if !f.presumed() {
            f.target().counters.shard(self.worker).active.add(-1);
        }
        self.budget.give(FLOW_FDS);
        let listener = f.listener();
        let Some(l) = self.listeners.get_mut(listener) else {
            return Some((f, None));
        };
        let shared = l.shared();
        if let Some(admitted) = f.admitted() {
            shared.release_source(admitted, f.client().ip(), now);
        }
        shared.release();
        let gone = Gone {
            listener,
            last_of_removed: l.flow_closed(),
        };
        Some((f, Some(gone)))
    }
}

/// A flow's listener as [`UdpPlane::detach`] left it (still in the plane).
pub(super) struct Gone {
    listener: Key,
    /// That was the last flow of a listener a reload removed: it can go now.
    last_of_removed: bool,
}

impl Gone {
    /// The listener's key.
    pub(super) fn listener(&self) -> Key {
        self.listener
    }
}
