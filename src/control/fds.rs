//! How `RLIMIT_NOFILE` is split: a reserve the control plane keeps for itself (health
//! checks, `/metrics`, the admin API, reloads, the resolver) and an equal share for
//! each worker's traffic. Workers never take from the reserve (see
//! `dataplane::budget`), so the control plane keeps working when traffic has used up
//! everything else.
//!
//! The sizing rule the warning states: a TCP connection uses 2 descriptors while idle
//! and up to 4 while it splices (a pipe's two ends); a UDP flow uses 1. So
//! `sum(max_connections) x 4 + sum(udp_max_flows) + reserve` should fit the limit.

use crate::config::{Config, Protocol};

/// Descriptors a TCP connection can use: client, backend, and a pipe while splicing.
pub const FDS_PER_CONNECTION: u64 = 4;

/// Descriptors a UDP flow uses: its upstream socket.
pub const FDS_PER_FLOW: u64 = 1;

/// The reserve before HTTP connections and probes: stdio, the runtime's epoll and
/// event descriptors, config reads, the resolver, listener sockets bound by reloads.
const BASE_RESERVE: usize = 64;

/// Most connections each HTTP server (`/metrics`, admin API) keeps open.
const MAX_HTTP_SLOTS: usize = 128;

/// The split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Descriptors kept for the control plane.
    pub reserve: usize,
    /// Connections each HTTP server keeps open (the oldest idle one is closed for a
    /// new one beyond that).
    pub http_slots: usize,
    /// Descriptors each worker may open for traffic.
    pub per_worker: usize,
}

/// Splits `limit` descriptors, `open` of which are in use now (listener sockets,
/// stdio, the runtime), between the control plane and `config.workers` workers.
pub fn plan(limit: u64, open: usize, config: &Config) -> Plan {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // A reserve of at most a quarter of the limit, however small the limit is.
    let cap = (limit / 4).max(16);
    let probes = checked_backends(config);
    let http_slots = MAX_HTTP_SLOTS.min((cap / 8).max(4));
    let reserve = (BASE_RESERVE + 2 * http_slots + probes).min(cap);
    let per_worker = limit.saturating_sub(reserve + open) / config.workers.max(1);
    Plan {
        reserve,
        http_slots,
        per_worker,
    }
}

/// Backends probed by active checks (each probe holds one socket at a time).
fn checked_backends(config: &Config) -> usize {
    config
        .pools
        .iter()
        .filter(|p| p.health.active())
        .map(|p| p.backends.len())
        .sum()
}

/// Lowers the default `max_connections` and `udp_max_flows` of the listeners that do
/// not set them, so that with the reserve they fit `limit` open files: what is left
/// after the listeners that set theirs is shared so each defaulted listener may hold
/// as many connections (4 descriptors each) or flows (1) as the others. An explicit
/// setting is never changed (it is what [`warning`] is for). Says what it lowered.
pub fn fit_defaults(config: &mut Config, limit: u64) -> Vec<String> {
    let reserve = plan(limit, 0, config).reserve as u64;
    let fds = |l: &crate::config::ListenerConfig| match l.protocol {
        Protocol::Tcp => FDS_PER_CONNECTION,
        Protocol::Udp => FDS_PER_FLOW,
    };
    let explicit: u64 = config
        .listeners
        .iter()
        .filter(|l| l.limit_explicit)
        .map(|l| limit_of(l) as u64 * fds(l))
        .sum();
    let units: u64 = config
        .listeners
        .iter()
        .filter(|l| !l.limit_explicit)
        .map(fds)
        .sum();
    if units == 0 {
        return Vec::new();
    }
    let each = (limit.saturating_sub(reserve + explicit) / units).max(1);
    let each = usize::try_from(each).unwrap_or(usize::MAX);
    let mut said = Vec::new();
    for l in config.listeners.iter_mut().filter(|l| !l.limit_explicit) {
        let (key, value) = match l.protocol {
            Protocol::Tcp => ("max_connections", &mut l.max_connections),
            Protocol::Udp => ("udp_max_flows", &mut l.udp_max_flows),
        };
        if each < *value {
            said.push(format!(
                "listener {:?}: {key} {each} (the default {} lowered to fit the open files limit {limit}, {reserve} of it kept for the control plane)",
                l.name, *value
            ));
            *value = each;
        }
    }
    said
}

/// A listener's limit: connections (TCP) or flows (UDP).
fn limit_of(l: &crate::config::ListenerConfig) -> usize {
    match l.protocol {
        Protocol::Tcp => l.max_connections,
        Protocol::Udp => l.udp_max_flows,
    }
}

/// Descriptors the config can use at its limits, reserve included.
pub fn needed(config: &Config, reserve: usize) -> u64 {
    let traffic: u64 = config
        .listeners
        .iter()
        .map(|l| match l.protocol {
            Protocol::Tcp => l.max_connections as u64 * FDS_PER_CONNECTION,
            Protocol::Udp => l.udp_max_flows as u64 * FDS_PER_FLOW,
        })
        .sum();
    traffic + reserve as u64
}

/// The warning `check` and `run` give when the limits of `config` do not fit `limit`
/// open files.
pub fn warning(config: &Config, limit: u64) -> Option<String> {
    let reserve = plan(limit, 0, config).reserve;
    let need = needed(config, reserve);
    if need <= limit {
        return None;
    }
    Some(format!(
        "at its limits this config needs {need} file descriptors (max_connections x {FDS_PER_CONNECTION} per TCP listener: client, backend and a splice pipe; udp_max_flows x {FDS_PER_FLOW} per UDP listener; {reserve} kept for health checks, metrics and the admin API), but the open files limit is {limit}: raise it to at least {need} (LimitNOFILE= in the systemd unit, ulimit -n) or lower max_connections/udp_max_flows; past the limit new connections are refused and counted as reason=\"fd_limit\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: usize, checked: bool) -> Config {
        let text = format!(
            "workers = 2\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_connections = {max_connections}\n{}\n[[listener.backend]]\naddress = \"127.0.0.1:2\"\n[[listener.backend]]\naddress = \"127.0.0.1:3\"\n",
            if checked { "" } else { "health = { check = \"none\" }" }
        );
        crate::config::parse(std::path::Path::new("t.toml"), &text).unwrap()
    }

    #[test]
    fn the_reserve_covers_http_and_probes_and_the_rest_is_shared() {
        let p = plan(20_000, 100, &config(1000, true));
        assert_eq!(p.http_slots, 128);
        assert_eq!(p.reserve, 64 + 256 + 2);
        assert_eq!(p.per_worker, (20_000 - p.reserve - 100) / 2);
        let unchecked = plan(20_000, 100, &config(1000, false));
        assert_eq!(unchecked.reserve, 64 + 256);
    }

    #[test]
    fn defaults_fit_the_limit_and_explicit_settings_stay() {
        let text = "workers = 2\n[[listener]]\nname = \"d\"\nlisten = \"127.0.0.1:1\"\n[[listener.backend]]\naddress = \"127.0.0.1:2\"\n[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:3\"\n[[listener.backend]]\naddress = \"127.0.0.1:4\"\n[[listener]]\nname = \"x\"\nlisten = \"127.0.0.1:5\"\nmax_connections = 1000\n[[listener.backend]]\naddress = \"127.0.0.1:6\"\n";
        let mut c = crate::config::parse(std::path::Path::new("t.toml"), text).unwrap();
        assert!(
            warning(&c, 20_000).is_some(),
            "the defaults do not fit 20,000"
        );
        let said = fit_defaults(&mut c, 20_000);
        let reserve = plan(20_000, 0, &c).reserve as u64;
        // 20,000 - reserve - x's 4,000, shared by d (4 a connection) and u (1 a flow).
        let each = ((20_000 - reserve - 4_000) / 5) as usize;
        assert_eq!(c.listeners[0].max_connections, each);
        assert_eq!(c.listeners[1].udp_max_flows, each);
        assert_eq!(c.listeners[2].max_connections, 1000);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("max_connections") && said[0].contains("\"d\""));
        assert_eq!(warning(&c, 20_000), None);
        // A limit that fits them leaves them be; an explicit setting that does not
        // fit still warns.
        let mut roomy = crate::config::parse(std::path::Path::new("t.toml"), text).unwrap();
        assert!(fit_defaults(&mut roomy, 1 << 20).is_empty());
        assert_eq!(roomy.listeners[0].max_connections, 10_000);
        let mut big = config(10_000, true);
        assert!(fit_defaults(&mut big, 20_000).is_empty());
        assert!(warning(&big, 20_000).is_some());
    }

    #[test]
    fn a_small_limit_keeps_a_quarter() {
        let p = plan(256, 20, &config(1000, true));
        assert_eq!(p.reserve, 64);
        assert_eq!(p.http_slots, 8);
        assert_eq!(p.per_worker, (256 - 64 - 20) / 2);
    }

    #[test]
    fn the_warning_names_the_rule_and_what_to_set() {
        assert!(warning(&config(1000, true), 20_000).is_none());
        let w = warning(&config(10_000, true), 20_000).unwrap();
        assert!(w.contains("needs 40322 file descriptors"), "{w}");
        assert!(w.contains("raise it to at least 40322"), "{w}");
    }
}
