//! `GET /status`: what the control plane knows, as JSON, rendered from a published
//! [`View`] (on the blocking pool, never on the control task). The status page (`GET /`
//! on the admin port) draws itself from it.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::backend::Admin;
use super::view::{ListenerView, PoolView, View};
use crate::config::Protocol;
use crate::dataplane::stats::ListenerCounters;

/// `GET /status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Process information.
    pub process: ProcessStatus,
    /// Listeners.
    pub listeners: Vec<ListenerStatus>,
    /// The `[[pool]]`s (a listener's own backends are under the listener).
    pub pools: Vec<PoolStatus>,
    /// `[cluster]`: this node's place in the fleet and second chance's counts (null
    /// without `[cluster]`).
    pub cluster: Option<super::cluster::ClusterStatus>,
}

/// `GET /status`: the process.
#[derive(Debug, Serialize)]
pub struct ProcessStatus {
    /// ringway's version.
    pub version: &'static str,
    /// Process id.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Worker threads.
    pub workers: usize,
    /// Config file.
    pub config: String,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads rejected.
    pub reloads_failed: u64,
    /// Why the last reload was rejected; cleared by a successful one.
    pub last_reload_error: Option<String>,
}

/// Sectors of the ring picture: one key per degree.
pub const RING_SECTORS: usize = 360;

/// `GET /status`: one listener.
#[derive(Debug, Serialize)]
pub struct ListenerStatus {
    /// Name.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// How it forwards: TCP, its `forward` (`auto`, `splice`, `copy`, `kernel`); UDP,
    /// `kernel` (established flows, in the kernel) or `ringway` (`forward = "auto"`,
    /// or the kernel path unavailable in this process).
    pub forward: &'static str,
    /// Listen address.
    pub listen: String,
    /// Connections (TCP) or flows (UDP) open now.
    pub active_connections: usize,
    /// Connections established (TCP) or flows created (UDP) since start.
    pub connections_total: u64,
    /// TCP: connections refused or reset by ringway, by reason; UDP: datagrams
    /// dropped, by reason (the metrics' `reason` labels).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Sources in the per-source table now (0 without per-source limits): at most
    /// `source_table_size`.
    pub sources_tracked: usize,
    /// `none` or `sni`.
    pub route_by: &'static str,
    /// Where connections no route takes go: its own backends (the listener's name), a
    /// `[[pool]]`, or nowhere (`null`: they are closed).
    pub default_pool: Option<String>,
    /// `[[listener.route]]`s: server names and the pool they go to.
    pub routes: Vec<RouteStatus>,
    /// Its own backends' pool, as the `pools` entries show a `[[pool]]` (the fields
    /// below repeat it at the listener's level for scripts written before pools).
    #[serde(flatten)]
    pub own: OwnPool,
}

/// A listener's own backends, at the listener's level of `/status`.
#[derive(Debug, Serialize, Default)]
pub struct OwnPool {
    /// How it chooses a backend (`balance`): `ring`, `least-connections` or
    /// `round-robin`.
    pub balance: &'static str,
    /// Bounded loads on the ring (`balance_factor`), when set.
    pub balance_factor: Option<f64>,
    /// Connections or flows open to its backends now, connecting ones included
    /// (what load-aware balancing reads).
    pub open: u64,
    /// Connections or flows `balance_factor` sent past the ring's pick since start
    /// (the sum of its backends' `overflowed_total`). ECMP peers agree on every
    /// other one.
    pub overflowed_total: u64,
    /// Key space moved at the last ring change.
    pub ring_remapped_ratio: f64,
    /// Who owns the ring, degree by degree: for each of 360 keys evenly spread over
    /// the hash space, the index (in `backends`) of the backend a new flow with that
    /// key goes to now (on an idle node; for `maglev`, by its table), or -1 when none
    /// is up. A backend going down hands its degrees
    /// to the next backend clockwise; no other degree changes.
    pub ring: Vec<i32>,
    /// Backends.
    pub backends: Vec<BackendStatus>,
    /// `backend_set`s: backends discovered in DNS.
    pub backend_sets: Vec<SetStatus>,
}

/// `GET /status`: one route.
#[derive(Debug, Serialize)]
pub struct RouteStatus {
    /// Server names (`api.example`) and one-label wildcards (`*.api.example`).
    pub sni: Vec<String>,
    /// The pool they go to.
    pub pool: String,
}

/// `GET /status`: one `[[pool]]`.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    /// Name.
    pub name: String,
    /// `tcp` or `udp`: the protocol of the listeners that use it.
    pub protocol: String,
    /// The listeners that route to it.
    pub listeners: Vec<String>,
    /// Its ring, backends and sets.
    #[serde(flatten)]
    pub pool: OwnPool,
}

/// `GET /status`: one `backend_set`.
#[derive(Debug, Serialize)]
pub struct SetStatus {
    /// What it asks (`_api._tcp.example` or `api.example:8443`).
    pub name: String,
    /// `srv` or `dns`.
    pub kind: &'static str,
    /// Backends it gives now.
    pub backends: usize,
    /// Failed and NXDOMAIN answers since start (`ringway_resolver_errors_total`).
    pub errors: u64,
    /// Addresses left out of answers since start: not allowed, or past
    /// `max_backends` (`ringway_backend_set_refused_total`).
    pub refused: u64,
}

/// `GET /status`: one backend.
#[derive(Debug, Serialize)]
pub struct BackendStatus {
    /// Ring identity.
    pub id: String,
    /// Address as configured.
    pub address: String,
    /// The IP and port connected to (a host name's address when the config loaded).
    pub resolved: String,
    /// Weight.
    pub weight: u32,
    /// The `backend_set` that discovered it; `null` when configured.
    pub set: Option<String>,
    /// A backup: it takes new connections only while no other backend of its pool
    /// does.
    pub backup: bool,
    /// `up`, `down` or `draining`.
    pub state: &'static str,
    /// Seconds since it entered that state.
    pub state_seconds: f64,
    /// Seconds it has been down since start (or since a reload added it).
    pub down_seconds_total: f64,
    /// Why it is in that state, when known (the last transition's reason).
    pub reason: Option<std::sync::Arc<str>>,
    /// Health checks' verdict: `up` or `down`.
    pub health: &'static str,
    /// Operator's setting.
    pub admin: Admin,
    /// Connections or flows open to it now.
    pub active_connections: u64,
    /// Connections or flows established to it since start.
    pub connections_total: u64,
    /// Connections or flows open to it now, connecting ones included (what
    /// load-aware balancing reads).
    pub open: u64,
    /// Connections or flows it took because `balance_factor` passed over the
    /// ring's pick, which held its cap.
    pub overflowed_total: u64,
    /// Bytes sent to it since start.
    pub sent_bytes: u64,
    /// Bytes received from it since start.
    pub received_bytes: u64,
    /// Failed connect attempts (TCP) or ICMP errors (UDP) since start.
    pub connect_errors: u64,
    /// Failures seen on the data path and fed to its health.
    pub passive_failures: u64,
    /// The last active check, if it is checked.
    pub last_check: Option<CheckStatus>,
    /// Fraction of the key space it owns now.
    pub ring_share: f64,
    /// `slow_start`: how far it has ramped up, 0 to 100 (`null` when it is not
    /// ramping: at its full share).
    pub slow_start_percent: Option<f64>,
    /// `max_connections` (`null`: no limit).
    pub max_connections: Option<u32>,
    /// `max_queue` (`null`: no bound).
    pub max_queue: Option<u32>,
    /// Connections waiting in its queue now.
    pub queued: usize,
    /// Connections that gave up waiting in its queue (`queue_timeout`) since start.
    pub queue_timeouts_total: u64,
}

/// The last active check of a backend.
#[derive(Debug, Serialize)]
pub struct CheckStatus {
    /// `success`, `failure` or `unknown` (could not run here).
    pub result: &'static str,
    /// Why it failed.
    pub error: Option<std::sync::Arc<str>>,
    /// How long it took.
    pub duration_ms: f64,
    /// How long ago it finished.
    pub seconds_ago: f64,
}

/// The whole status, from `view` at `now`.
pub fn status(view: &View, now: Instant) -> Status {
    let p = &view.process;
    Status {
        process: ProcessStatus {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_seconds: now.saturating_duration_since(p.started).as_secs(),
            workers: p.workers,
            config: p.config.clone(),
            reloads_ok: p.reloads_ok,
            reloads_failed: p.reloads_failed,
            last_reload_error: p.last_reload_error.clone(),
        },
        listeners: view
            .listeners
            .iter()
            .map(|l| listener(l, view, now))
            .collect(),
        pools: view
            .pools
            .iter()
            .filter(|p| p.owner.is_none())
            .map(|p| PoolStatus {
                name: p.name.clone(),
                protocol: p.protocol.to_string(),
                listeners: p.listeners.clone(),
                pool: pool(p, now),
            })
            .collect(),
        cluster: p.cluster.as_ref().map(super::cluster::ClusterView::status),
    }
}

/// Listener `l` of `view` as `GET /status` shows it.
pub fn listener(l: &ListenerView, view: &View, now: Instant) -> ListenerStatus {
    let stats = &l.shared.stats;
    let (connections_total, rejected) = match l.protocol {
        Protocol::Tcp => (
            stats.sum(|c| c.connections.get()),
            ListenerCounters::rejected(stats).into_iter().collect(),
        ),
        Protocol::Udp => (
            stats.sum(|c| c.udp_flows.get()),
            ListenerCounters::udp_dropped(stats).into_iter().collect(),
        ),
    };
    ListenerStatus {
        name: l.name.clone(),
        protocol: l.protocol.to_string(),
        forward: l.forward,
        listen: l.listen.to_string(),
        active_connections: l.shared.active.load(std::sync::atomic::Ordering::Relaxed),
        connections_total,
        rejected,
        sources_tracked: l.shared.sources.len(),
        route_by: l.route.by,
        default_pool: l.route.default_pool.clone(),
        routes: l
            .route
            .rules
            .iter()
            .map(|(names, pool)| RouteStatus {
                sni: names.clone(),
                pool: pool.clone(),
            })
            .collect(),
        own: l
            .own
            .as_deref()
            .and_then(|name| view.pool(name))
            .map(|p| pool(p, now))
            .unwrap_or_default(),
    }
}

/// Pool `p`'s ring, backends and sets.
pub fn pool(p: &PoolView, now: Instant) -> OwnPool {
    let snapshot = &p.routing.snapshot;
    let shares = snapshot.shares();
    let step = u64::MAX / RING_SECTORS as u64;
    let balance = p.routing.policy.balance();
    OwnPool {
        balance: balance.mode.name(),
        balance_factor: balance.factor,
        open: p.routing.shared.open.get(),
        overflowed_total: p
            .states
            .iter()
            .map(|b| b.stats.counters.sum(|x| x.overflowed.get()))
            .sum(),
        ring_remapped_ratio: p.remapped,
        ring: (0..RING_SECTORS as u64)
            .map(|i| {
                // Maglev's table, not the ring, decides a maglev pool's keys.
                let owner = match balance.mode {
                    crate::balance::Mode::Maglev => p
                        .routing
                        .policy
                        .choose(snapshot, i * step, &crate::balance::Idle::default(), |_| {
                            false
                        })
                        .map(|c| c.backend),
                    _ => snapshot.pick(i * step),
                };
                owner.map_or(-1, |b| i32::try_from(b).unwrap_or(-1))
            })
            .collect(),
        backends: (0..p.states.len())
            .map(|i| backend(p, i, &shares, now))
            .collect(),
        backend_sets: p
            .sets
            .iter()
            .map(|s| SetStatus {
                name: s.name.clone(),
                kind: s.kind,
                backends: s.backends,
                errors: s.errors,
                refused: s.refused,
            })
            .collect(),
    }
}

/// Backend `bi` of pool `l` as the admin API shows it; `shares`: each backend's share
/// of the key space in `l`'s routing.
pub fn backend(l: &PoolView, bi: usize, shares: &[f64], now: Instant) -> BackendStatus {
    let b = &l.states[bi];
    let c = &l.backends[bi];
    let counters = &b.stats.counters;
    BackendStatus {
        id: c.id.clone(),
        address: c.addr_text.clone(),
        resolved: c.addr.to_string(),
        weight: c.weight,
        set: c.set.clone(),
        backup: c.backup,
        state: b.state,
        state_seconds: now.saturating_duration_since(b.since).as_secs_f64(),
        down_seconds_total: (b.down_before
            + if b.state == "down" {
                now.saturating_duration_since(b.since)
            } else {
                std::time::Duration::ZERO
            })
        .as_secs_f64(),
        reason: b.reason.clone(),
        health: if b.health_up { "up" } else { "down" },
        admin: b.admin,
        active_connections: b.stats.active(),
        connections_total: counters.sum(|x| x.connections.get()),
        open: b.stats.open.get(),
        overflowed_total: counters.sum(|x| x.overflowed.get()),
        sent_bytes: counters.sum(|x| x.sent_bytes.get()),
        received_bytes: counters.sum(|x| x.received_bytes.get()),
        connect_errors: counters.sum(|x| x.connect_errors.get()),
        passive_failures: b.passive_failures,
        last_check: b.last_check.as_ref().map(|c| CheckStatus {
            result: c.result,
            error: c.error.clone(),
            duration_ms: c.took.as_secs_f64() * 1000.0,
            seconds_ago: now.saturating_duration_since(c.at).as_secs_f64(),
        }),
        ring_share: shares.get(bi).copied().unwrap_or(0.0),
        slow_start_percent: {
            let s = &l.routing.snapshot;
            (bi < s.backends().len() && s.ramp(bi) < crate::balance::snapshot::FULL)
                .then(|| f64::from(s.ramp(bi)) / 10.0)
        },
        max_connections: (c.limits.max_connections > 0).then_some(c.limits.max_connections),
        max_queue: (c.limits.max_queue > 0).then_some(c.limits.max_queue),
        queued: b.stats.queue.len(),
        queue_timeouts_total: counters.sum(|x| x.queue_timeouts.get()),
    }
}
