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
