//! The addresses a config makes ringway listen on, by protocol: what a backend must
//! never be (ringway would connect to itself, or hand clients its admin API). `check`
//! refuses such a configured backend; answers from DNS leave such addresses out
//! (`discovery::filter`); a host name that comes to resolve to one keeps its old
//! address.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::{Config, Protocol};

/// The addresses ringway listens on for one protocol: exact ones, and the ports of
/// wildcard listeners (which take any of this machine's addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Own {
    exact: HashSet<SocketAddr>,
    any_v4: HashSet<u16>,
    any_v6: HashSet<u16>,
    local: HashSet<IpAddr>,
}

impl Own {
    /// What `config` listens on for `protocol` (the admin API and metrics count for
    /// TCP), with `local`: this machine's addresses (loopback always counts).
    pub fn of(config: &Config, protocol: Protocol, local: &[IpAddr]) -> Own {
        let mut own = Own {
            local: local.iter().map(|ip| ip.to_canonical()).collect(),
            ..Own::default()
        };
        for l in config.listeners.iter().filter(|l| l.protocol == protocol) {
            own.add(l.listen);
        }
        if protocol == Protocol::Tcp {
            config.metrics.into_iter().for_each(|a| own.add(a));
            let admin = config.admin.iter().filter_map(|a| a.listen.tcp());
            admin.for_each(|a| own.add(a));
        }
        own
    }

    /// Counts `a` as one of ringway's addresses.
    fn add(&mut self, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                self.any_v4.insert(a.port());
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                self.any_v6.insert(a.port());
            }
            ip => {
                self.exact
                    .insert(SocketAddr::new(ip.to_canonical(), a.port()));
            }
        }
    }

    /// Whether ringway listens on `addr`.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        if self.exact.contains(&SocketAddr::new(ip, addr.port())) {
            return true;
        }
        let wildcard = match ip {
            IpAddr::V4(_) => &self.any_v4,
            IpAddr::V6(_) => &self.any_v6,
        };
        wildcard.contains(&addr.port()) && (ip.is_loopback() || self.local.contains(&ip))
    }
}

/// What an address of ringway's own is: which listener (or port) listens there.
pub fn whose(
    config: &Config,
    protocol: Protocol,
    addr: SocketAddr,
    local: &[IpAddr],
) -> Option<String> {
    let one = |a: SocketAddr| {
        let mut own = Own::default();
        own.add(a);
        own.local = local.iter().map(|ip| ip.to_canonical()).collect();
        own.contains(addr)
    };
    if let Some(l) = config
        .listeners
        .iter()
        .find(|l| l.protocol == protocol && one(l.listen))
    {
        return Some(format!("listener {:?} ({})", l.name, l.listen));
    }
    if protocol == Protocol::Tcp {
        if let Some(m) = config.metrics.filter(|&m| one(m)) {
            return Some(format!("metrics.listen ({m})"));
        }
        if let Some(a) = config
            .admin
            .as_ref()
            .and_then(|a| a.listen.tcp())
            .filter(|&a| one(a))
        {
            return Some(format!("admin.listen ({a})"));
        }
    }
    None
}
