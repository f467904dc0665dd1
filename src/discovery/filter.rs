//! What an answer may not make a backend of, and ringway's own addresses.
//!
//! A DNS answer is data from outside: an SRV record naming ringway's own admin port
//! would let any client of the data plane call the admin API through it, and one
//! naming a listener's own address starts a loop that eats a worker's descriptors.
//! So before an answer becomes backends, [`apply`] leaves out (and counts) any
//! address ringway itself listens on (its listeners of the same protocol, its admin
//! and metrics ports: [`Own`]), port 0, unspecified, multicast and broadcast
//! addresses, anything outside the set's `allow` networks, and whatever exceeds
//! `max_backends` (the first ones in address order are kept, so every node that gets
//! the same answer keeps the same ones). Pure but for [`local_addresses`].

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::Member;
pub use crate::config::Own;

/// Why an address was left out of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// ringway itself listens there (a loop, or a way into the admin API).
    Own,
    /// Port 0.
    PortZero,
    /// 0.0.0.0 or `::`.
    Unspecified,
    /// A multicast address.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// Outside the set's `allow` networks.
    NotAllowed,
    /// Past the set's `max_backends`.
    OverMax,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Own => "ringway's own address",
            Refusal::PortZero => "port 0",
            Refusal::Unspecified => "unspecified address",
            Refusal::Multicast => "multicast address",
            Refusal::Broadcast => "broadcast address",
            Refusal::NotAllowed => "outside `allow`",
            Refusal::OverMax => "past `max_backends`",
        })
    }
}

/// This machine's addresses (every interface's), for [`Own`]; empty when they cannot
/// be read (then only loopback counts as local).
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let a = a.address?;
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .collect()
}

/// How one set filters its answers.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// ringway's own addresses for the set's protocol.
    pub own: &'a Own,
    /// The set's `allow` networks, if any.
    pub allow: Option<&'a [ipnet::IpNet]>,
    /// The set's `max_backends`.
    pub max: usize,
}

/// What [`apply`] left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refused {
    /// Each address left out and why, in address order.
    pub addresses: Vec<(SocketAddr, Refusal)>,
}

impl Refused {
    /// How many.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// True when nothing was left out.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}

impl fmt::Display for Refused {
    /// `3 left out: 2 past max_backends, 1 ringway's own address (127.0.0.1:9101)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reasons: BTreeSet<Refusal> = self.addresses.iter().map(|(_, r)| *r).collect();
        write!(f, "{} left out:", self.len())?;
        for (i, r) in reasons.iter().enumerate() {
            let of: Vec<&SocketAddr> = self
                .addresses
                .iter()
                .filter(|(_, x)| x == r)
                .map(|(a, _)| a)
                .collect();
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{} {r}", of.len())?;
            // Name a few: enough to find the record, not a wall of text.
            let named: Vec<String> = of.iter().take(3).map(ToString::to_string).collect();
            let more = if of.len() > 3 { ", ..." } else { "" };
            write!(f, " ({}{more})", named.join(", "))?;
        }
        Ok(())
    }
}

/// The members of `answer` that may be backends, in address order (each address
/// once, at its largest weight), and what was left out.
pub fn apply(answer: &[Member], rules: Rules<'_>) -> (Vec<Member>, Refused) {
    let mut by_addr: std::collections::BTreeMap<SocketAddr, u32> = Default::default();
    for m in answer {
        let w = by_addr.entry(m.addr).or_insert(m.weight);
        *w = (*w).max(m.weight);
    }
    let mut kept = Vec::with_capacity(by_addr.len().min(rules.max));
    let mut refused = Refused::default();
    for (addr, weight) in by_addr {
        let why = refusal(addr, rules).or((kept.len() >= rules.max).then_some(Refusal::OverMax));
        match why {
            Some(r) => refused.addresses.push((addr, r)),
            None => kept.push(Member { addr, weight }),
        }
    }
    (kept, refused)
}

/// Why `addr` may not be a backend, if it may not.
fn refusal(addr: SocketAddr, rules: Rules<'_>) -> Option<Refusal> {
    let ip = addr.ip().to_canonical();
    if addr.port() == 0 {
        return Some(Refusal::PortZero);
    }
    if ip.is_unspecified() {
        return Some(Refusal::Unspecified);
    }
    if ip.is_multicast() {
        return Some(Refusal::Multicast);
    }
    if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Some(Refusal::Broadcast);
    }
    if rules.own.contains(addr) {
        return Some(Refusal::Own);
    }
    if let Some(allow) = rules.allow {
        if !allow.iter().any(|n| n.contains(&ip)) {
            return Some(Refusal::NotAllowed);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(addr: &str) -> Member {
        Member {
            addr: addr.parse().unwrap(),
            weight: 1,
        }
    }

    fn config(toml: &str) -> Config {
        crate::config::parse(std::path::Path::new("t.toml"), toml).unwrap()
    }

    const CONF: &str = "[admin]\nlisten = \"127.0.0.1:9101\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n\
        [[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:8080\"\n[[listener.backend]]\naddress = \"10.0.0.1:80\"\n\
        [[listener]]\nname = \"u\"\nprotocol = \"udp\"\nlisten = \"192.0.2.1:53\"\n[[listener.backend]]\naddress = \"10.0.0.1:53\"\n";

    use crate::config::{Config, Protocol};

    #[test]
    fn own_addresses_by_protocol_with_wildcards_and_local_ones() {
        let c = config(CONF);
        let local = ["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let tcp = Own::of(&c, Protocol::Tcp, &local);
        for own in [
            "127.0.0.1:9101",
            "127.0.0.1:9100",
            "127.0.0.1:8080",
            "127.9.9.9:8080",
            "192.0.2.1:8080",
        ] {
            assert!(tcp.contains(own.parse().unwrap()), "{own}");
        }
        for not in [
            "10.0.0.1:8080",
            "127.0.0.1:9102",
            "[::1]:8080",
            "192.0.2.1:53",
            "[::ffff:10.0.0.1]:8080",
        ] {
            assert!(!tcp.contains(not.parse().unwrap()), "{not}");
        }
        assert!(
            tcp.contains("[::ffff:127.0.0.1]:9101".parse().unwrap()),
            "v4-mapped is the same address"
        );
        let udp = Own::of(&c, Protocol::Udp, &local);
        assert!(udp.contains("192.0.2.1:53".parse().unwrap()));
        assert!(
            !udp.contains("127.0.0.1:9101".parse().unwrap()),
            "admin is TCP"
        );
    }

    #[test]
    fn every_kind_of_refusal_is_counted_and_named() {
        let c = config(CONF);
        let own = Own::of(&c, Protocol::Tcp, &[]);
        let allow: Vec<ipnet::IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ];
        let rules = Rules {
            own: &own,
            allow: Some(&allow),
            max: 2,
        };
        let answer = [
            m("10.0.0.3:80"),
            m("10.0.0.2:80"),
            m("10.0.0.4:80"),
            m("10.0.0.2:80"),
            m("127.0.0.1:9101"),
            m("10.0.0.5:0"),
            m("0.0.0.0:80"),
            m("224.0.0.1:80"),
            m("255.255.255.255:80"),
            m("192.168.1.1:80"),
            m("[::]:80"),
        ];
        let (kept, refused) = apply(&answer, rules);
        let kept: Vec<String> = kept.iter().map(|m| m.addr.to_string()).collect();
        assert_eq!(
            kept,
            ["10.0.0.2:80", "10.0.0.3:80"],
            "the first ones in address order"
        );
        let why = |a: &str| {
            refused
                .addresses
                .iter()
                .find(|(x, _)| x.to_string() == a)
                .map(|(_, r)| *r)
        };
        assert_eq!(why("10.0.0.4:80"), Some(Refusal::OverMax));
        assert_eq!(why("127.0.0.1:9101"), Some(Refusal::Own));
        assert_eq!(why("10.0.0.5:0"), Some(Refusal::PortZero));
        assert_eq!(why("0.0.0.0:80"), Some(Refusal::Unspecified));
        assert_eq!(why("[::]:80"), Some(Refusal::Unspecified));
        assert_eq!(why("224.0.0.1:80"), Some(Refusal::Multicast));
        assert_eq!(why("255.255.255.255:80"), Some(Refusal::Broadcast));
        assert_eq!(why("192.168.1.1:80"), Some(Refusal::NotAllowed));
        assert_eq!(refused.len(), 8);
        let said = refused.to_string();
        assert!(
            said.starts_with("8 left out: 1 ringway's own address (127.0.0.1:9101)"),
            "{said}"
        );
    }

    #[test]
    fn the_same_answer_in_any_order_keeps_the_same_backends() {
        let own = Own::default();
        let rules = Rules {
            own: &own,
            allow: None,
            max: 3,
        };
        let a: Vec<Member> = (0..10).map(|i| m(&format!("10.0.0.{i}:80"))).collect();
        let mut b = a.clone();
        b.reverse();
        assert_eq!(apply(&a, rules), apply(&b, rules));
    }

    #[test]
    fn local_addresses_include_loopback() {
        assert!(local_addresses().iter().any(|ip| ip.is_loopback()));
    }
}
