//! New flows still being read: on a `route_by = "sni"` listener a flow's pool is the
//! one its QUIC Initials name, so its first datagrams are held here until they give a
//! whole ClientHello (one datagram mostly; two or three when the hello carries large
//! key shares or many ALPN names), then go to the backend in the order they came.
//!
//! Bounded per worker: [`MAX_PENDING`] flows and [`MAX_HELD_BYTES`] held; a flow
//! takes at most [`crate::sni::quic::MAX_DATAGRAMS`] datagrams before its reader
//! answers, and waits at most its listener's `sni_timeout`. When the table is full
//! the flow closest to its deadline makes room. Pure bookkeeping: no sockets, no
//! clock (the plane says when it is).

use std::collections::{BTreeMap, HashMap};

use super::flow::FlowId;
use crate::accesslog::End;
use crate::dataplane::admission::Admitted;
use crate::dataplane::stats::{Counter, ListenerCounters};
use crate::dataplane::timers::Millis;
use crate::dataplane::token::Key;
use crate::sni::quic::QuicHello;
use crate::sni::{ServerName, Verdict};

/// Flows being read at once, per worker.
pub(super) const MAX_PENDING: usize = 4096;

/// Bytes of datagrams held at once, per worker.
pub(super) const MAX_HELD_BYTES: usize = 8 << 20;

/// A flow whose hello is not whole yet.
#[derive(Debug)]
pub(super) struct Pending {
    reader: QuicHello,
    held: Vec<Box<[u8]>>,
    /// Its place in its listener's per-source table (taken with its first datagram).
    admitted: Option<Admitted>,
    /// When it times out, and its place in that order.
    due: (Millis, u64),
}

impl Pending {
    /// Its place in the per-source table.
    pub fn admitted(&self) -> Option<Admitted> {
        self.admitted
    }

    /// The datagrams held, in the order they came.
    pub fn held(&self) -> &[Box<[u8]>] {
        &self.held
    }
}

/// What a flow's next datagram did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fed {
    /// Not whole yet: the datagram is held.
    Held,
    /// Not whole yet, and the worker holds [`MAX_HELD_BYTES`]: the datagram is not
    /// held (the flow ends as a timeout would end it).
    Full,
    /// The reader's answer; the datagram is not held (it goes after the held ones).
    Answer(Verdict),
}

/// A worker's flows being read.
#[derive(Debug, Default)]
pub(super) struct Hellos {
    pending: HashMap<FlowId, Pending>,
    due: BTreeMap<(Millis, u64), FlowId>,
    seq: u64,
    bytes: usize,
}

impl Hellos {
    /// Whether flow `id` is being read.
    pub fn contains(&self, id: &FlowId) -> bool {
        self.pending.contains_key(id)
    }

    /// Flows being read.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether holding `more` bytes for a flow not yet here needs room first.
    pub fn full_for(&self, more: usize) -> bool {
        self.pending.len() >= MAX_PENDING || self.bytes + more > MAX_HELD_BYTES
    }

    /// Starts reading flow `id`: `reader` has read `datagram` and needs more; the
    /// flow holds `admitted` and times out at `deadline`.
    pub fn hold(
        &mut self,
        id: FlowId,
        (reader, datagram): (QuicHello, &[u8]),
        admitted: Option<Admitted>,
        deadline: Millis,
    ) {
        self.seq += 1;
        let due = (deadline, self.seq);
        self.due.insert(due, id);
        self.bytes += datagram.len();
        let pending = Pending {
            reader,
            held: vec![datagram.into()],
            admitted,
            due,
        };
        if let Some(old) = self.pending.insert(id, pending) {
            // Callers start only flows not here; keep the books right regardless.
            self.forget(&old);
        }
    }

    /// Flow `id`'s next datagram: `None` when it is not being read. Once answered (or
    /// [`Fed::Full`]) the flow stays until the caller [`Hellos::take`]s it.
    pub fn feed(&mut self, id: &FlowId, datagram: &[u8]) -> Option<Fed> {
        let p = self.pending.get_mut(id)?;
        Some(match p.reader.feed(datagram) {
            Verdict::NeedMore if self.bytes + datagram.len() > MAX_HELD_BYTES => Fed::Full,
            Verdict::NeedMore => {
                self.bytes += datagram.len();
                p.held.push(datagram.into());
                Fed::Held
            }
            v => Fed::Answer(v),
        })
    }

    /// Ends reading flow `id`, giving back what it held.
    pub fn take(&mut self, id: &FlowId) -> Option<Pending> {
        let p = self.pending.remove(id)?;
        self.forget(&p);
        Some(p)
    }

    /// The flow closest to its deadline (the one that makes room when full).
    pub fn oldest(&self) -> Option<FlowId> {
        self.due.values().next().copied()
    }

    /// A flow whose deadline is at or before `now`, taken out.
    pub fn pop_due(&mut self, now: Millis) -> Option<(FlowId, Pending)> {
        let (&(at, _), &id) = self.due.iter().next()?;
        if at > now {
            return None;
        }
        let p = self.take(&id)?;
        Some((id, p))
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.due.keys().next().map(|&(at, _)| at)
    }

    /// The flows of listener `lkey` being read.
    pub fn of_listener(&self, lkey: Key) -> Vec<FlowId> {
        self.pending
            .keys()
            .filter(|id| id.0 == lkey)
            .copied()
            .collect()
    }

    fn forget(&mut self, p: &Pending) {
        self.due.remove(&p.due);
        self.bytes -= p.held.iter().map(|d| d.len()).sum::<usize>();
    }
}

/// Which counter a drop adds to.
pub(super) type CounterOf = fn(&ListenerCounters) -> &Counter;

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
    pub(super) const NOTHING: Asked<'static> = Asked {
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

    /// The server name it asked for.
    pub fn name(&self) -> Option<&ServerName> {
        self.name.as_ref()
    }

    /// The datagrams held while its hello was read, in the order they came.
    pub fn held(&self) -> &'a [Box<[u8]>] {
        self.held
    }

    /// The reader's answer, and the datagrams held before it.
    pub fn from(v: Verdict, held: &'a [Box<[u8]>]) -> Asked<'a> {
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
    pub fn refusal(&self) -> (CounterOf, (End, Option<&'static str>), String) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sni::client_hello::build::{message, Parts};
    use crate::sni::quic::{build, Version};
    use std::net::SocketAddr;

    fn id(port: u16) -> FlowId {
        let client: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        (Key::unpack(0), client, None)
    }

    /// The Initials of a hello asking for `name` split over `n` datagrams.
    fn initials(name: &str, n: usize) -> Vec<Vec<u8>> {
        let hello = message(&Parts::sized(name, 1000 * n));
        let d = build::datagrams(Version::V1, &[7; 8], &hello, 1000, 1, |_| {});
        assert_eq!(d.len(), n);
        d
    }

    #[test]
    fn a_split_hello_is_held_in_order_and_answered_once_whole() {
        let mut h = Hellos::default();
        let dgrams = initials("api.example", 3);
        let mut reader = QuicHello::new();
        assert_eq!(reader.feed(&dgrams[0]), Verdict::NeedMore);
        h.hold(id(1), (reader, &dgrams[0]), None, 100);
        assert!(h.contains(&id(1)));
        assert_eq!(h.feed(&id(1), &dgrams[1]), Some(Fed::Held));
        let name = crate::sni::ServerName::new(b"api.example").unwrap();
        assert_eq!(
            h.feed(&id(1), &dgrams[2]),
            Some(Fed::Answer(Verdict::Name(name)))
        );
        let p = h.take(&id(1)).unwrap();
        // The answering datagram is the caller's to send; the ones before are held.
        assert_eq!(p.held().len(), 2);
        assert_eq!(&*p.held()[0], &dgrams[0][..]);
        assert_eq!(&*p.held()[1], &dgrams[1][..]);
        assert_eq!((h.len(), h.bytes(), h.next_deadline()), (0, 0, None));
        assert_eq!(h.feed(&id(1), &dgrams[2]), None);
    }

    #[test]
    fn deadlines_pop_in_order_and_only_when_due() {
        let mut h = Hellos::default();
        let d = initials("a.example", 2);
        for (port, at) in [(1, 300), (2, 100), (3, 200)] {
            let mut r = QuicHello::new();
            r.feed(&d[0]);
            h.hold(id(port), (r, &d[0]), None, at);
        }
        assert_eq!(h.next_deadline(), Some(100));
        assert_eq!(h.oldest(), Some(id(2)));
        assert!(h.pop_due(99).is_none());
        assert_eq!(h.pop_due(250).map(|(i, _)| i), Some(id(2)));
        assert_eq!(h.pop_due(250).map(|(i, _)| i), Some(id(3)));
        assert!(h.pop_due(250).is_none());
        assert_eq!(h.of_listener(Key::unpack(0)), vec![id(1)]);
        assert_eq!(h.bytes(), d[0].len());
    }

    #[test]
    fn the_table_is_bounded_in_flows_and_bytes() {
        let mut h = Hellos::default();
        assert!(!h.full_for(MAX_HELD_BYTES));
        assert!(h.full_for(MAX_HELD_BYTES + 1));
        let d = initials("a.example", 2);
        for port in 0..MAX_PENDING as u16 {
            let mut r = QuicHello::new();
            r.feed(&d[0]);
            h.hold(id(port), (r, &d[0]), None, 10);
        }
        assert!(h.full_for(1));
        assert!(h.take(&id(0)).is_some());
        assert!(!h.full_for(1));
        // Over the byte bound, a datagram is not held (the caller ends the flow).
        let big = vec![0u8; MAX_HELD_BYTES];
        assert_eq!(h.feed(&id(1), &big), Some(Fed::Full));
        assert_eq!(h.take(&id(1)).unwrap().held().len(), 1);
    }
}
