//! What the control plane knows about each listener and backend, and how it turns that
//! into the [`Routing`] workers load.
//!
//! A backend's effective state combines two inputs: its health (the rise/fall machine,
//! fed by checks) and its admin state (set through the admin API):
//!
//! | health | admin    | keeps its flows | takes new ones | reported as |
//! |--------|----------|-----------------|----------------|-------------|
//! | up     | enabled  | yes             | yes            | `up`        |
//! | up     | draining | yes             | no             | `draining`  |
//! | any    | disabled | no              | no             | `down`      |
//! | down   | any      | no              | no             | `down`      |
//!
//! Every change is published as a whole new [`Routing`]; the health state, the admin
//! state and the counters of a backend follow its id (and address) across reloads.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::probes::ProbeTask;
use crate::balance::Snapshot;
use crate::config::{AdmissionConfig, BackendConnect, ForwardMode, ListenerConfig, Protocol};
use crate::dataplane::admission::{NetSet, Rate, Rules, SourceLimits};
use crate::dataplane::stats::BackendStats;
use crate::dataplane::{ListenerParams, ListenerShared, Mode, PassiveFailure, Routing};
use crate::health::state::{HealthState, Thresholds, Transition};
use crate::health::AllDown;
use crate::metrics::{BackendSample, ListenerSample};

/// What an operator set for a backend through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    /// Normal.
    Enabled,
    /// No new connections or flows; existing ones stay.
    Draining,
    /// Marked down by hand.
    Disabled,
}

/// One backend of one listener.
#[derive(Debug)]
pub struct BackendState {
    /// Identity and counters (shared with the data plane).
    pub stats: Arc<BackendStats>,
    /// Health checks' verdict.
    pub health: HealthState,
    /// Operator's setting.
    pub admin: Admin,
    /// Up as last published (healthy and not disabled).
    up: bool,
    /// Passed active checks.
    pub checks_ok: u64,
    /// Failed active checks.
    pub checks_failed: u64,
    /// Active checks that could not run (this machine out of descriptors or ports):
    /// neither success nor failure.
    pub checks_unknown: u64,
    /// Taken out by data-path failures on a listener without active checks: when it
    /// is re-admitted.
    pub readmit_at: Option<std::time::Instant>,
    /// Published transitions to up.
    pub to_up: u64,
    /// Published transitions to down.
    pub to_down: u64,
    /// The running probe, if checked.
    pub probe: Option<ProbeTask>,
    /// Failures seen on the data path (refused or timed-out connects, ICMP errors).
    pub passive_failures: u64,
    /// The last active check: when, how long, what it said.
    pub last_check: Option<LastCheck>,
    /// Why it is in its state (the last transition's reason), when known.
    pub why: Option<String>,
    /// Its state name as last published, and since when.
    state: (&'static str, Instant),
}

/// One active check's outcome, for `/status`.
#[derive(Debug, Clone)]
pub struct LastCheck {
    /// `success`, `failure` or `unknown` (could not run here).
    pub result: &'static str,
    /// Why not, when not.
    pub error: Option<String>,
    /// How long it took.
    pub took: std::time::Duration,
    /// When it finished.
    pub at: Instant,
}

impl BackendState {
    fn new(backend: &crate::balance::Backend, workers: usize) -> BackendState {
        BackendState {
            stats: Arc::new(BackendStats::new(&backend.id, backend.addr, workers)),
            health: HealthState::default(),
            admin: Admin::Enabled,
            up: true,
            checks_ok: 0,
            checks_failed: 0,
            checks_unknown: 0,
            readmit_at: None,
            to_up: 0,
            to_down: 0,
            probe: None,
            passive_failures: 0,
            last_check: None,
            why: None,
            state: ("up", Instant::now()),
        }
    }

    /// Healthy and not disabled: keeps its flows.
    pub fn is_up(&self) -> bool {
        self.health.is_up() && self.admin != Admin::Disabled
    }

    /// Up and enabled: takes new flows.
    pub fn is_accepting(&self) -> bool {
        self.health.is_up() && self.admin == Admin::Enabled
    }

    /// Since when it is in its published state.
    pub fn state_since(&self) -> Instant {
        self.state.1
    }

    /// `up`, `down` or `draining`.
    pub fn state_name(&self) -> &'static str {
        match (self.is_up(), self.admin) {
            (false, _) => "down",
            (true, Admin::Draining) => "draining",
            (true, _) => "up",
        }
    }
}

/// One listener.
#[derive(Debug)]
pub struct ListenerState {
    /// Its config.
    pub config: ListenerConfig,
    /// What workers share.
    pub shared: Arc<ListenerShared>,
    /// All backends up: the ring states are applied to.
    base: Snapshot,
    /// One per backend, in `base` order.
    pub backends: Vec<BackendState>,
    /// Key space moved at the last ring change.
    pub remapped: f64,
    workers: usize,
}

impl ListenerState {
    /// A new listener with every backend up and enabled.
    pub fn new(
        config: ListenerConfig,
        workers: usize,
        passive: tokio::sync::mpsc::UnboundedSender<PassiveFailure>,
    ) -> ListenerState {
        let base = Snapshot::new(config.backends.clone(), config.vnodes);
        let backends: Vec<BackendState> = config
            .backends
            .iter()
            .map(|b| BackendState::new(b, workers))
            .collect();
        let routing = routing(&config, &base, &backends);
        let shared = Arc::new(ListenerShared::new(
            &config.name,
            config.listen,
            routing,
            workers,
            passive,
        ));
        ListenerState {
            config,
            shared,
            base,
            backends,
            remapped: 0.0,
            workers,
        }
    }

    /// Takes a reloaded config for the same listener (same name, protocol and address).
    /// Backends keep health, admin state and counters by id and address; a backend
    /// whose address changed is a new backend. Changed health settings stop the probes
    /// (the caller starts new ones).
    pub fn reconfigure(&mut self, config: ListenerConfig) {
        let mut old: Vec<Option<BackendState>> = self.backends.drain(..).map(Some).collect();
        let mut backends = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            let kept = self
                .config
                .backends
                .iter()
                .position(|o| o.id == b.id && o.addr == b.addr);
            let state = kept
                .and_then(|i| old[i].take())
                .unwrap_or_else(|| BackendState::new(b, self.workers));
            backends.push(state);
        }
        // Dropped states stop their probes.
        drop(old);
        if config.health != self.config.health {
            for b in &mut backends {
                b.probe = None;
                // Without checks only a hold-down brings a down backend back: start over.
                if !config.health.active() {
                    b.health = HealthState::default();
                    b.readmit_at = None;
                }
            }
        }
        if config.vnodes != self.config.vnodes {
            self.base = Snapshot::new(config.backends.clone(), config.vnodes);
        } else if config.backends != self.config.backends {
            // Only addresses changed (a host name moved, say): the ring stays.
            self.base = self
                .base
                .with_addresses(config.backends.clone())
                .unwrap_or_else(|| Snapshot::new(config.backends.clone(), config.vnodes));
        }
        self.backends = backends;
        self.config = config;
    }

    /// Index of backend `id`.
    pub fn backend_index(&self, id: &str) -> Option<usize> {
        self.base.index_of(id)
    }

    /// Index of the backend with these counters (identity, not id: a stale report about
    /// a backend that a reload replaced finds nothing).
    pub fn backend_of(&self, stats: &Arc<BackendStats>) -> Option<usize> {
        self.backends
            .iter()
            .position(|b| Arc::ptr_eq(&b.stats, stats))
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            rise: self.config.health.rise,
            fall: self.config.health.fall,
        }
    }

    /// Feeds one active check result of backend `bi` to its health machine.
    pub fn observe(&mut self, bi: usize, ok: bool) -> Option<Transition> {
        let t = self.thresholds();
        let b = &mut self.backends[bi];
        if ok {
            b.checks_ok += 1;
        } else {
            b.checks_failed += 1;
        }
        b.health.observe(ok, t)
    }

    /// Feeds a failure seen on the data path at `at` (since the control plane started)
    /// to backend `bi`'s health machine.
    pub fn observe_passive(&mut self, bi: usize, at: std::time::Duration) -> Option<Transition> {
        let t = self.thresholds();
        let window = self.config.health.passive_window();
        self.backends[bi].health.observe_passive(at, window, t)
    }

    /// Publishes the current states as a new routing for the workers. Counts
    /// transitions and the key space moved; returns the backends that went down.
    pub fn publish(&mut self) -> Vec<Arc<BackendStats>> {
        let next = routing(&self.config, &self.base, &self.backends);
        let previous = self.shared.routing.load();
        let moved = previous.snapshot.remapped(&next.snapshot);
        if moved > 0.0 {
            self.remapped = moved;
        }
        let mut went_down = Vec::new();
        let now = Instant::now();
        for b in &mut self.backends {
            let name = b.state_name();
            if name != b.state.0 {
                b.state = (name, now);
            }
            let up = b.is_up();
            if up != b.up {
                b.up = up;
                if up {
                    b.to_up += 1;
                } else {
                    b.to_down += 1;
                    went_down.push(Arc::clone(&b.stats));
                }
            }
        }
        self.shared.routing.store(Arc::new(next));
        went_down
    }

    /// Fraction of the key space each backend owns now.
    pub fn shares(&self) -> Vec<f64> {
        self.shared.routing.load().snapshot.shares()
    }

    /// What a metrics scrape reports.
    pub fn sample(&self) -> ListenerSample<'_> {
        let shares = self.shares();
        ListenerSample {
            name: &self.config.name,
            udp: self.config.protocol == Protocol::Udp,
            active: self
                .shared
                .active
                .load(std::sync::atomic::Ordering::Relaxed),
            stats: &self.shared.stats,
            remapped: self.remapped,
            backends: self
                .backends
                .iter()
                .zip(shares)
                .map(|(b, share)| BackendSample {
                    stats: &b.stats,
                    up: b.is_up(),
                    share,
                    checks_ok: b.checks_ok,
                    checks_failed: b.checks_failed,
                    checks_unknown: b.checks_unknown,
                    to_up: b.to_up,
                    to_down: b.to_down,
                    checked: self.config.health.active(),
                })
                .collect(),
        }
    }
}

/// The worker-facing settings of a listener config.
pub fn params(l: &ListenerConfig) -> ListenerParams {
    ListenerParams {
        hash: l.hash,
        connect_timeout: l.connect_timeout,
        idle_timeout: match l.protocol {
            Protocol::Tcp => l.idle_timeout,
            Protocol::Udp => l.udp_idle_timeout,
        },
        retries: l.retries,
        max_connections: match l.protocol {
            Protocol::Tcp => l.max_connections,
            Protocol::Udp => l.udp_max_flows,
        },
        udp_responses: l.udp_responses,
        forward: match (l.protocol, l.forward) {
            (Protocol::Udp, _) | (Protocol::Tcp, ForwardMode::Auto) => Mode::Auto,
            (Protocol::Tcp, ForwardMode::Splice) => Mode::Splice,
            (Protocol::Tcp, ForwardMode::Copy) => Mode::Copy,
            (Protocol::Tcp, ForwardMode::Kernel) => Mode::Kernel,
        },
        send_proxy: l.send_proxy,
        accept_proxy: l.accept_proxy,
        accept_proxy_from: l.accept_proxy_from.clone(),
        admission: admission_rules(&l.admission),
        source_table_size: l.admission.source_table_size,
        first_data: (l.protocol == Protocol::Tcp && l.backend_connect == BackendConnect::OnData)
            .then_some(l.first_data_timeout),
    }
}

/// The data plane's admission rules for a listener's admission config (the one
/// definition the data plane and `ringway route` share).
pub fn admission_rules(a: &AdmissionConfig) -> Rules {
    let limits = (a.max_per_source.is_some() || a.rate_per_source.is_some()).then(|| {
        SourceLimits::new(
            a.max_per_source,
            a.rate_per_source.map(|r| Rate::new(r.count, r.per)),
            a.source_prefix_v4,
            a.source_prefix_v6,
        )
    });
    Rules::new(
        a.allow.as_deref().map(NetSet::new),
        NetSet::new(&a.deny),
        limits,
    )
}

/// What new connections and flows of listener `config` use, given which backends are
/// up (keep their flows) and accepting (take new ones): `base` filtered, or all of it
/// when none accepts and `all_down = "use-all"`. The one definition the data plane's
/// routing and `ringway route` share.
pub fn live_snapshot(
    config: &ListenerConfig,
    base: &Snapshot,
    up: Vec<bool>,
    accepting: Vec<bool>,
) -> Snapshot {
    base.with_states(up, accepting, config.health.all_down == AllDown::UseAll)
}

fn routing(config: &ListenerConfig, base: &Snapshot, backends: &[BackendState]) -> Routing {
    let up = backends.iter().map(BackendState::is_up).collect();
    let accepting = backends.iter().map(BackendState::is_accepting).collect();
    Routing {
        params: params(config),
        snapshot: live_snapshot(config, base, up, accepting),
        backends: backends.iter().map(|b| Arc::clone(&b.stats)).collect(),
        passive: config.health.passive,
    }
}
