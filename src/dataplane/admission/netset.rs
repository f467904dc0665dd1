//! A set of IP networks with an O(log n) membership test: the networks become sorted,
//! merged, disjoint address ranges (one list per family), searched by bisection. A
//! blocklist of thousands of networks costs a dozen comparisons per new connection.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.7`, what a dual-stack socket reports
//! for an IPv4 client) are looked up as the IPv4 address they carry.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks, as disjoint inclusive address ranges sorted by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl NetSet {
    /// The set of `nets` (overlapping and adjacent networks merge).
    pub fn new(nets: &[IpNet]) -> NetSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        NetSet {
            v4: merged(v4),
            v6: merged(v6),
        }
    }

    /// No network at all.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }
}

/// Sorts ranges and merges the ones that overlap or touch.
fn merged<T: Copy + Ord + Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.successor() => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out.shrink_to_fit();
    out
}

/// Whether `x` falls in one of the sorted disjoint `ranges`.
fn within<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|r| r.0 <= x);
    after > 0 && x <= ranges[after - 1].1
}

/// The next address, saturating at the top.
trait Successor {
    fn successor(self) -> Self;
}

impl Successor for u32 {
    fn successor(self) -> u32 {
        self.saturating_add(1)
    }
}

impl Successor for u128 {
    fn successor(self) -> u128 {
        self.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(nets: &[&str]) -> NetSet {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        NetSet::new(&nets)
    }

    fn has(s: &NetSet, ip: &str) -> bool {
        s.contains(ip.parse().unwrap())
    }

    #[test]
    fn networks_and_edges() {
        let s = set(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
        assert!(has(&s, "10.0.0.0") && has(&s, "10.255.255.255") && has(&s, "10.1.2.3"));
        assert!(!has(&s, "9.255.255.255") && !has(&s, "11.0.0.0"));
        assert!(has(&s, "192.0.2.7") && !has(&s, "192.0.2.6") && !has(&s, "192.0.2.8"));
        assert!(has(&s, "2001:db8::1") && has(&s, "2001:db8:ffff:ffff::1"));
        assert!(!has(&s, "2001:db9::") && !has(&s, "::1"));
        // A dual-stack socket's view of an IPv4 client is the IPv4 client.
        assert!(has(&s, "::ffff:10.9.8.7") && !has(&s, "::ffff:11.0.0.1"));
        assert!(!set(&[]).contains("1.2.3.4".parse().unwrap()));
        assert!(set(&[]).is_empty() && !s.is_empty());
    }

    #[test]
    fn overlapping_adjacent_and_extreme_networks_merge() {
        let s = set(&["10.0.0.0/9", "10.128.0.0/9", "10.0.0.0/16", "0.0.0.0/0"]);
        assert_eq!(s.v4, vec![(0, u32::MAX)]);
        let s = set(&["10.0.0.0/9", "10.128.0.0/9", "10.64.0.0/16"]);
        assert_eq!(s.v4.len(), 1);
        assert!(has(&s, "10.255.255.255") && !has(&s, "11.0.0.0"));
        let s = set(&["::/0"]);
        assert!(has(&s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") && has(&s, "::"));
        assert!(
            !has(&s, "1.2.3.4"),
            "IPv6 networks do not hold IPv4 clients"
        );
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32)
                .prop_map(|(a, p)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), p).unwrap().trunc())),
            (any::<u128>(), 0u8..=128)
                .prop_map(|(a, p)| IpNet::V6(ipnet::Ipv6Net::new(a.into(), p).unwrap().trunc())),
        ]
    }

    fn arb_ip(nets: &[IpNet]) -> impl Strategy<Value = IpAddr> {
        // Addresses near the networks' edges, and anywhere.
        let mut edges: Vec<IpAddr> = Vec::new();
        for n in nets {
            edges.extend([n.network(), n.broadcast()]);
            match n {
                IpNet::V4(v) => {
                    let lo = u32::from(v.network()).wrapping_sub(1);
                    let hi = u32::from(v.broadcast()).wrapping_add(1);
                    edges.extend([
                        IpAddr::from(lo.to_be_bytes()),
                        IpAddr::from(hi.to_be_bytes()),
                    ]);
                }
                IpNet::V6(v) => {
                    let lo = u128::from(v.network()).wrapping_sub(1);
                    let hi = u128::from(v.broadcast()).wrapping_add(1);
                    edges.extend([
                        IpAddr::from(lo.to_be_bytes()),
                        IpAddr::from(hi.to_be_bytes()),
                    ]);
                }
            }
        }
        edges.push(IpAddr::from([0u8; 4]));
        prop_oneof![
            proptest::sample::select(edges),
            any::<u32>().prop_map(|a| IpAddr::from(a.to_be_bytes())),
            any::<u128>().prop_map(|a| IpAddr::from(a.to_be_bytes())),
        ]
    }

    proptest! {
        /// The bisection agrees with asking every network.
        #[test]
        fn agrees_with_a_linear_scan(
            (nets, ips) in proptest::collection::vec(arb_net(), 0..12)
                .prop_flat_map(|nets| {
                    let ips = proptest::collection::vec(arb_ip(&nets), 1..40);
                    (Just(nets), ips)
                })
        ) {
            let s = NetSet::new(&nets);
            for ip in ips {
                let naive = nets.iter().any(|n| n.contains(&ip.to_canonical()));
                prop_assert_eq!(s.contains(ip), naive, "{} in {:?}", ip, nets);
            }
        }
    }
}
