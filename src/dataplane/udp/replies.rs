//! A flow's replies: read from its upstream socket into its listener's reply batch,
//! counted, and judged against `udp_responses` (with what the kernel forwarded of it:
//! see [`super::offload`]), which may end the flow and presume its successor.

use std::io;

use mio::Registry;

use super::{is, UdpPlane};
use crate::accesslog::End;
use crate::dataplane::timers::Millis;
use crate::dataplane::token::Key;

/// `recvmmsg` calls on one flow per wake-up before other work gets a turn (each takes
/// as many replies as wait, up to the reply batch's room).
const REPLY_BATCHES_PER_WAKEUP: usize = 4;

impl UdpPlane {
    /// Reads a flow's replies into its listener's reply batch; true if it stopped at
    /// its budget.
    pub(super) fn flow_readable(&mut self, fkey: Key, registry: &Registry, now: Millis) -> bool {
        let worker = self.worker;
        // What the kernel forwarded counts towards udp_responses.
        self.sync_flow(fkey, now);
        let Some(f) = self.flows.get_mut(fkey) else {
            return false;
        };
        let before = f.exchanged().1;
        let Some(l) = self.listeners.get_mut(f.listener()) else {
            return false;
        };
        let responses = u64::from(l.routing().params.udp_responses);
        let (mut finished, mut more) = (false, true);
        for _ in 0..REPLY_BATCHES_PER_WAKEUP {
            let got = f.recv_into(l.reply_room(worker), responses, now);
            let counters = f.target().counters.shard(worker);
            match got {
                Ok(r) => {
                    counters.received_bytes.add(r.bytes());
                    if r.finished() || r.drained() {
                        (finished, more) = (r.finished(), false);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let shared = l.shared();
                    if is(&e, libc::ECONNREFUSED) {
                        shared.stats.shard(worker).backend_icmp_errors.inc();
                        counters.connect_errors.inc();
                        f.target().report_failure(&e);
                        f.refuse();
                    }
                    if let Some(suppressed) = self.warn.allow(now) {
                        tracing::warn!(listener = %shared.name, client = %f.client(), suppressed, "udp backend error: {e}");
                    }
                }
            }
        }
        let (got, refused) = (f.exchanged().1 - before, f.refused());
        let (id, reused) = (f.id(), f.port_reused());
        if !refused && got > 0 {
            // Before anything is judged, the program compares with every reply read
            // here. Until now it missed them: a reply it forwarded meanwhile, judged one
            // short, may have been the flow's last. Its counts since say so.
            self.own_traffic(fkey, 0, got);
            if !finished && responses > 0 {
                self.sync_flow(fkey, now);
                finished = self
                    .flows
                    .get(fkey)
                    .is_some_and(|f| f.answered_all(responses));
            }
        }
        if finished && self.finished_everywhere(fkey, responses, now) {
            self.close_flow(fkey, End::UdpAnswered, registry, now);
            // Its successor waits in the kernel before this reply leaves (the reply
            // batch goes out after this), for a client that reuses its port.
            if reused {
                self.presume(id, registry, now);
            }
        } else if refused {
            self.unoffload(fkey, now);
        } else if finished {
            // The kernel sent more of it meanwhile: replies left on its socket (not
            // asked for, as it looked finished) are read next.
            more = true;
        }
        more
    }
}
