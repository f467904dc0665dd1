//! Who gets in: a listener's access lists (`allow`, `deny`) and per-source limits
//! (open connections or flows, and their rate, per source), checked for each new TCP
//! connection and each new UDP flow before anything is spent on it.
//!
//! * [`netset`]: networks as sorted ranges, an O(log n) lookup.
//! * [`sources`]: the bounded per-source table.
//!
//! The rules ([`Rules`]) come with the listener's published settings; the table of
//! sources belongs to the listener (it outlives reloads). The source is the client's
//! address, or on an `accept_proxy` listener the client its PROXY header names.

pub mod netset;
pub mod sources;

use std::net::IpAddr;

pub use netset::NetSet;
pub use sources::{Rate, Refusal, SourceLimits, SourceTable};

use super::timers::Millis;

/// A listener's admission rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// `allow`: when set, only these sources are served.
    allow: Option<NetSet>,
    /// `deny`: never served (wins over `allow`).
    deny: NetSet,
    /// Per-source limits, when any is set.
    per_source: Option<SourceLimits>,
}

/// Why a new connection or flow was refused (the `reason` label of the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `allow`/`deny`.
    Denied,
    /// `max_connections_per_source` / `udp_max_flows_per_source`, or the source table
    /// is full of busy sources.
    SourceLimit,
    /// `connection_rate_per_source` / `udp_flow_rate_per_source`.
    SourceRate,
}

impl Refused {
    /// The `reason` label and access-log `detail`.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Denied => "denied",
            Refused::SourceLimit => "source_limit",
            Refused::SourceRate => "source_rate",
        }
    }
}

/// An admitted connection's place in the source table, given back when it ends: the
/// prefix lengths its client's address was cut to then (a reload may change them), so
/// that with the client's address it names the source again. Two bytes: every session
/// carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    prefixes: (u8, u8),
}

impl Rules {
    /// Serve only `allow` (everyone when `None`) but never `deny`, with `per_source`
    /// limits.
    pub fn new(allow: Option<NetSet>, deny: NetSet, per_source: Option<SourceLimits>) -> Rules {
        Rules {
            allow,
            deny,
            per_source,
        }
    }

    /// Whether the lists let `ip` in.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && self.allow.as_ref().is_none_or(|a| a.contains(ip))
    }

    /// Whether sources are limited (open flows or new flows per source).
    pub fn limits_sources(&self) -> bool {
        self.per_source.is_some()
    }

    /// Whether anything is checked at all (nothing to do for most listeners).
    pub fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty() && self.per_source.is_none()
    }

    /// Admits a new connection or flow of client `ip` at `now`: the lists, then the
    /// per-source limits in `table`. `Ok(Some(_))` must be handed back to
    /// [`Rules::release`] when it ends.
    pub fn admit(
        &self,
        table: &SourceTable,
        ip: IpAddr,
        now: Millis,
    ) -> Result<Option<Admitted>, Refused> {
        if self.is_open() {
            return Ok(None);
        }
        if !self.permits(ip) {
            return Err(Refused::Denied);
        }
        let Some(limits) = &self.per_source else {
            return Ok(None);
        };
        match table.admit(limits.source_of(ip), limits, now) {
            Ok(()) => Ok(Some(Admitted {
                prefixes: limits.prefixes(),
            })),
            Err(Refusal::Rate) => Err(Refused::SourceRate),
            Err(Refusal::Limit | Refusal::Full) => Err(Refused::SourceLimit),
        }
    }

    /// An admitted connection or flow of client `ip` ended at `now` (under the rules in
    /// force now).
    pub fn release(&self, table: &SourceTable, admitted: Admitted, ip: IpAddr, now: Millis) {
        let rate = self.per_source.as_ref().and_then(SourceLimits::rate);
        table.release(&sources::source_in(ip, admitted.prefixes), rate, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> NetSet {
        let nets: Vec<ipnet::IpNet> = list.iter().map(|n| n.parse().unwrap()).collect();
        NetSet::new(&nets)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_over_allow_and_no_allow_means_everyone() {
        let rules = Rules::new(
            Some(nets(&["10.0.0.0/8", "2001:db8::/32"])),
            nets(&["10.6.6.0/24"]),
            None,
        );
        assert!(rules.permits(ip("10.1.1.1")) && rules.permits(ip("2001:db8::9")));
        assert!(!rules.permits(ip("10.6.6.6")), "deny wins");
        assert!(!rules.permits(ip("192.0.2.1")), "not allowed");
        let deny_only = Rules::new(None, nets(&["192.0.2.0/24"]), None);
        assert!(deny_only.permits(ip("198.51.100.1")) && !deny_only.permits(ip("192.0.2.9")));
        assert!(Rules::default().is_open() && !deny_only.is_open());
        let table = SourceTable::new(16, 1);
        assert_eq!(rules.admit(&table, ip("10.6.6.1"), 0), Err(Refused::Denied));
        assert_eq!(rules.admit(&table, ip("10.1.1.1"), 0), Ok(None));
        assert!(table.is_empty(), "no per-source limit: nothing tracked");
    }

    #[test]
    fn per_source_limits_name_their_reason() {
        let rate = Rate::new(2, std::time::Duration::from_secs(1));
        let limits = SourceLimits::new(Some(1), Some(rate), 32, 64);
        let rules = Rules::new(None, NetSet::default(), Some(limits));
        let table = SourceTable::new(16, 1);
        let first = ip("2001:db8:0:1::5");
        let a = rules.admit(&table, first, 0).unwrap().unwrap();
        assert_eq!(
            rules.admit(&table, ip("2001:db8:0:1::6"), 0),
            Err(Refused::SourceLimit),
            "same /64"
        );
        assert!(rules.admit(&table, ip("2001:db8:0:2::5"), 0).is_ok());
        rules.release(&table, a, first, 0);
        assert!(rules.admit(&table, ip("2001:db8:0:1::7"), 0).is_ok());
        rules.release(&table, a, first, 0);
        assert_eq!(
            rules.admit(&table, ip("2001:db8:0:1::7"), 0),
            Err(Refused::SourceRate)
        );
        assert_eq!(Refused::SourceRate.reason(), "source_rate");
    }
}
