//! The plane's side of `forward = "kernel"` (see [`super::kernel`]): which flows go to
//! the kernel and when they come back, and folding what the kernel forwarded into the
//! flows' counts, the metrics and the idle timeout.
//!
//! A flow goes to the kernel as ringway forwards a datagram of it (its first, or one
//! the kernel passed up), just before it sends it: the replies find it there. It comes
//! back, its counts taken in, whenever ringway must decide something about it: its
//! backend refused it (ICMP), the listener's routing changed (a backend went down, a
//! drain, a reload: its next datagram is checked here, as in userspace mode, and it
//! goes back to the kernel after), it ends, or it is handed to another process. Its
//! replies that complete it (`udp_responses`) come up to its socket: the program does
//! not forward them.

use super::flow::Flow;
use super::kernel::{Counts, Flows, Path};
use super::socket::reached;
use super::UdpPlane;
use crate::dataplane::listener::Mode;
use crate::dataplane::timers::Millis;
use crate::dataplane::token::{Key, Slots};

/// How often the plane looks for routing changes of listeners with flows in the kernel
/// and folds the kernel's counts into the metrics.
pub(super) const SWEEP_MS: Millis = 100;

/// The kernel path of one worker's plane.
#[derive(Debug)]
pub(super) struct Offload {
    flows: Flows,
    /// Flows in the kernel now.
    installed: usize,
    next_sweep: Millis,
    /// The epoch of each listener's routing at the last sweep.
    epochs: Vec<(Key, u64)>,
}

impl Offload {
    pub fn new(flows: Flows) -> Offload {
        Offload {
            flows,
            installed: 0,
            next_sweep: 0,
            epochs: Vec::new(),
        }
    }
}

/// Whether flow `k` of `flows` was never answered, here or in the kernel.
pub(super) fn waiting(flows: &Slots<Flow>, offload: &Option<Offload>, k: Key) -> bool {
    flows.get(k).is_some_and(|f| {
        !f.answered()
            && !f
                .installed()
                .zip(offload.as_ref())
                .is_some_and(|(i, o)| o.flows.answered(i))
    })
}

impl UdpPlane {
    /// Gives this worker's flows the kernel path (`forward = "kernel"` listeners).
    pub fn set_kernel(&mut self, flows: Flows) {
        self.offload = Some(Offload::new(flows));
    }

    /// Puts flow `fkey` in the kernel's hands if its listener asks for it and it is
    /// not there yet (ringway is about to forward `sending` datagrams of it).
    pub(super) fn offload(&mut self, fkey: Key, sending: u64, now: Millis) {
        let Some(o) = self.offload.as_mut() else {
            return;
        };
        let Some(f) = self.flows.get_mut(fkey) else {
            return;
        };
        if f.kernel().is_some() || f.refused() {
            return;
        }
        let Some(l) = self.listeners.get(f.listener()) else {
            return;
        };
        let params = &l.routing().params;
        if params.forward != Mode::Kernel || l.retired() {
            return;
        }
        let Ok(upstream) = f.upstream() else {
            return;
        };
        let path = Path::new(
            f.client(),
            reached(l.shared().listen, f.local()),
            upstream,
            f.target().addr,
        );
        let (sent, replies) = f.exchanged();
        let sent = sent + sending;
        let expect = u64::from(params.udp_responses);
        if let Some(installed) = o.flows.install(path, (sent, replies, expect)) {
            *f.kernel() = Some(installed);
            o.installed += 1;
            if o.installed == 1 {
                o.next_sweep = now + SWEEP_MS;
            }
        }
    }

    /// Takes flow `fkey` back from the kernel, with what it forwarded.
    pub(super) fn unoffload(&mut self, fkey: Key, now: Millis) {
        let Some(o) = self.offload.as_mut() else {
            return;
        };
        let Some(f) = self.flows.get_mut(fkey) else {
            return;
        };
        let Some(installed) = f.kernel().take() else {
            return;
        };
        o.installed -= 1;
        let counts = o.flows.remove(installed);
        self.absorb(fkey, &counts, now);
    }

    /// Whether flow `fkey`, finished by what ringway counts (every datagram has its
    /// `responses` replies), is finished for the kernel too: it may have sent a
    /// datagram of it meanwhile, from another CPU (see [`UdpPlane::settle`]).
    pub(super) fn finished_everywhere(&mut self, fkey: Key, responses: u64, now: Millis) -> bool {
        self.settle(fkey, now, |f| f.answered_all(responses))
    }

    /// Whether flow `fkey`, which looked `ended` by what ringway counts, still is once
    /// the kernel's counts are in. The kernel is paused on it first: from then on its
    /// datagrams come up here, and the counts read are exactly what it forwarded.
    /// Ended: its entries go, and it can end (a datagram that comes now opens the next
    /// flow, as in userspace mode). Not ended: it goes on in the kernel. A flow not in
    /// the kernel is as the caller found it.
    pub(super) fn settle(&mut self, fkey: Key, now: Millis, ended: impl Fn(&Flow) -> bool) -> bool {
        let (Some(o), Some(f)) = (self.offload.as_mut(), self.flows.get_mut(fkey)) else {
            return true;
        };
        let Some(installed) = f.kernel().as_mut() else {
            return true;
        };
        let counts = o.flows.pause(installed);
        self.absorb(fkey, &counts, now);
        let Some(f) = self.flows.get_mut(fkey) else {
            return true;
        };
        let done = ended(f);
        match (done, self.offload.as_ref(), f.kernel().as_ref()) {
            (true, ..) => self.unoffload(fkey, now),
            (false, Some(o), Some(installed)) => o.flows.resume(installed),
            (false, ..) => {}
        }
        done
    }

    /// Folds what the kernel forwarded for flow `fkey` since the last look into it and
    /// the metrics (it stays in the kernel).
    pub(super) fn sync_flow(&mut self, fkey: Key, now: Millis) {
        let Some(o) = self.offload.as_mut() else {
            return;
        };
        let Some(f) = self.flows.get_mut(fkey) else {
            return;
        };
        let Some(installed) = f.kernel().as_mut() else {
            return;
        };
        let counts = o.flows.take(installed);
        self.absorb(fkey, &counts, now);
    }

    /// Tells the kernel ringway forwarded `sent` datagrams and `replies` replies of
    /// flow `fkey` itself.
    pub(super) fn own_traffic(&mut self, fkey: Key, sent: u64, replies: u64) {
        let Some(o) = self.offload.as_ref() else {
            return;
        };
        if let Some(installed) = self.flows.get_mut(fkey).and_then(|f| f.kernel().as_ref()) {
            o.flows.add_own(installed, sent, replies);
        }
    }

    /// Of the datagrams [`UdpPlane::offload`] was told flow `fkey` was sending, `n` did
    /// not go.
    pub(super) fn not_sent(&mut self, fkey: Key, n: u64) {
        let Some(o) = self.offload.as_ref() else {
            return;
        };
        if let Some(installed) = self.flows.get_mut(fkey).and_then(|f| f.kernel().as_ref()) {
            o.flows.not_sent(installed, n);
        }
    }

    fn absorb(&mut self, fkey: Key, c: &Counts, now: Millis) {
        if *c == Counts::default() {
            return;
        }
        let last = (c.last_ns() > 0).then(|| {
            let age = crate::sys::shared::monotonic_ns().saturating_sub(c.last_ns()) / 1_000_000;
            now.saturating_sub(age)
        });
        if c.sent().0 > 0 {
            // A presumed flow's first datagram came through the kernel: it began at
            // the latest the kernel saw, not when this looks (up to a sweep later).
            self.begin(fkey, last.unwrap_or(now));
        }
        let Some(f) = self.flows.get_mut(fkey) else {
            return;
        };
        f.absorb(c, last);
        let backend = f.target().counters.shard(self.worker);
        backend.sent_bytes.add(c.sent().1);
        backend.received_bytes.add(c.replies().1);
        if let Some(l) = self.listeners.get(f.listener()) {
            let stats = l.shared().stats.shard(self.worker);
            stats.udp_in.add(c.sent().0);
            stats.udp_out.add(c.replies().0);
            stats.udp_kernel_in.add(c.sent().0);
            stats.udp_kernel_out.add(c.replies().0);
        }
    }

    /// Every [`SWEEP_MS`] while flows are in the kernel: a listener whose routing
    /// changed gets its flows back (each is checked at its next datagram, as in
    /// userspace mode); the others' counts are folded in.
    pub(super) fn sweep(&mut self, now: Millis) {
        let Some(o) = self.offload.as_mut() else {
            return;
        };
        if o.installed == 0 || now < o.next_sweep {
            return;
        }
        o.next_sweep = now + SWEEP_MS;
        let mut changed = Vec::new();
        let mut epochs = std::mem::take(&mut o.epochs);
        epochs.retain(|(k, _)| self.listeners.get(*k).is_some());
        for (lkey, l) in self.listeners.iter_mut() {
            let epoch = l.refresh();
            match epochs.iter_mut().find(|(k, _)| *k == lkey) {
                Some((_, seen)) if *seen != epoch => {
                    *seen = epoch;
                    changed.push(lkey);
                }
                Some(_) => {}
                None => epochs.push((lkey, epoch)),
            }
        }
        if let Some(o) = self.offload.as_mut() {
            o.epochs = epochs;
        }
        let keys = self.flows.keys_where(|f| f.kernel_installed());
        for fkey in keys {
            let back = self
                .flows
                .get(fkey)
                .is_some_and(|f| changed.contains(&f.listener()));
            if back {
                self.unoffload(fkey, now);
            } else {
                self.sync_flow(fkey, now);
            }
        }
    }

    /// A reload changed `shared`'s lists: its flows in the kernel come back now (the
    /// sweep would within [`SWEEP_MS`]), so the next datagram of a refused source is
    /// refused.
    pub fn recheck(
        &mut self,
        shared: &std::sync::Arc<crate::dataplane::ListenerShared>,
        now: Millis,
    ) {
        if self.offload.as_ref().is_none_or(|o| o.installed == 0) {
            return;
        }
        let lkeys = self
            .listeners
            .keys_where(|l| std::sync::Arc::ptr_eq(l.shared(), shared));
        let keys = self
            .flows
            .keys_where(|f| f.kernel_installed() && lkeys.contains(&f.listener()));
        for fkey in keys {
            self.unoffload(fkey, now);
        }
    }

    /// When the next sweep is due, while flows are in the kernel.
    pub(super) fn next_sweep(&self) -> Option<Millis> {
        self.offload
            .as_ref()
            .filter(|o| o.installed > 0)
            .map(|o| o.next_sweep)
    }
}
