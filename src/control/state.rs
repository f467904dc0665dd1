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
//! Every change is published as a new [`Routing`], derived from the last one: only the
//! ring points of backends whose state changed are touched (see
//! [`crate::balance::Snapshot::with_states`]), and the settings and the backends'
//! counters are shared with it until a reload changes them. The health state, the
//! admin state and the counters of a backend follow its id (and address) across
//! reloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::probes::ProbeTask;
use super::view::{BackendView, ListenerView, SetView};
use crate::balance::Snapshot;
use crate::config::{AdmissionConfig, BackendConnect, ForwardMode, ListenerConfig, Protocol};
use crate::dataplane::admission::{NetSet, Rate, Rules, SourceLimits};
use crate::dataplane::stats::BackendStats;
use crate::dataplane::{BackendTable, ListenerParams, ListenerShared, Mode, Routing};
use crate::health::state::{HealthState, Thresholds, Transition};
use crate::health::{AllDown, HealthConfig};

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
    /// Durations of its active checks (`ringway_health_check_duration_seconds`).
    pub check_durations: crate::metrics::Histogram,
    /// Why it is in its state (the last transition's reason), when known.
    pub why: Option<Arc<str>>,
    /// Its state name as last published, and since when.
    state: (&'static str, Instant),
    /// Its address is ringway's own (whose, for the log and `/status`): it is never
    /// used nor checked.
    pub looped: Option<String>,
}

/// One active check's outcome, for `/status`.
#[derive(Debug, Clone)]
pub struct LastCheck {
    /// `success`, `failure` or `unknown` (could not run here).
    pub result: &'static str,
    /// Why not, when not.
    pub error: Option<Arc<str>>,
    /// How long it took.
    pub took: std::time::Duration,
    /// When it finished.
    pub at: Instant,
}

impl BackendState {
    fn new(
        backend: &crate::balance::Backend,
        workers: usize,
        check: &HealthConfig,
        looped: Option<String>,
    ) -> BackendState {
        // With an active check the first check decides: a configured backend starts
        // up, a discovered one down (it is not ready before it answers).
        let discovered = backend.set.is_some();
        let health = if check.active() {
            HealthState::unconfirmed(!discovered)
        } else {
            HealthState::new(true)
        };
        let why = match &looped {
            Some(whose) => Some(Arc::from(looped_reason(whose).as_str())),
            None => (!health.is_up())
                .then(|| Arc::from("discovered: waiting for its first passing check")),
        };
        BackendState {
            stats: Arc::new(BackendStats::new(&backend.id, backend.addr, workers)),
            health,
            admin: Admin::Enabled,
            up: health.is_up() && looped.is_none(),
            checks_ok: 0,
            checks_failed: 0,
            checks_unknown: 0,
            readmit_at: None,
            to_up: 0,
            to_down: 0,
            probe: None,
            passive_failures: 0,
            last_check: None,
            check_durations: Default::default(),
            why,
            state: (
                if health.is_up() && looped.is_none() {
                    "up"
                } else {
                    "down"
                },
                Instant::now(),
            ),
            looped,
        }
    }

    /// Healthy, not disabled, not ringway's own address: keeps its flows.
    pub fn is_up(&self) -> bool {
        self.health.is_up() && self.admin != Admin::Disabled && self.looped.is_none()
    }

    /// Up and enabled: takes new flows.
    pub fn is_accepting(&self) -> bool {
        self.is_up() && self.admin == Admin::Enabled
    }

    /// `up`, `down` or `draining`.
    pub fn state_name(&self) -> &'static str {
        match (self.is_up(), self.admin) {
            (false, _) => "down",
            (true, Admin::Draining) => "draining",
            (true, _) => "up",
        }
    }

    /// What `/status` and `/metrics` show of it.
    fn view(&self) -> BackendView {
        BackendView {
            stats: Arc::clone(&self.stats),
            state: self.state_name(),
            since: self.state.1,
            reason: self.why.clone(),
            health_up: self.health.is_up(),
            admin: self.admin,
            up: self.is_up(),
            passive_failures: self.passive_failures,
            checks_ok: self.checks_ok,
            checks_failed: self.checks_failed,
            checks_unknown: self.checks_unknown,
            to_up: self.to_up,
            to_down: self.to_down,
            last_check: self.last_check.clone(),
            check_durations: self.check_durations,
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
    /// All backends up: what states are applied to after the backends changed.
    base: Snapshot,
    /// The backends changed since the last publish: the next one starts from `base`,
    /// not from the routing published last.
    rebased: bool,
    /// One per backend, in `base` order.
    pub backends: Vec<BackendState>,
    /// Index of each backend by id.
    by_id: HashMap<String, usize>,
    /// Index of each backend by its counters' address.
    by_stats: HashMap<usize, usize>,
    /// The settings workers use (shared by every routing until a reload).
    params: Arc<ListenerParams>,
    /// The backends' counters in order (likewise).
    table: Arc<BackendTable>,
    /// Key space moved at the last ring change.
    pub remapped: f64,
    /// A change waits to be published.
    pub pending: bool,
    /// When it was last published.
    pub published_at: Instant,
    /// Its view is out of date.
    pub view_stale: bool,
    workers: usize,
}

impl ListenerState {
    /// A new listener: its backends up (or, discovered ones on a checked listener,
    /// waiting for their first check) and enabled.
    /// `looped`: for each backend, whose address of ringway's it is, if it is one.
    pub fn new(
        config: ListenerConfig,
        workers: usize,
        passive: crate::dataplane::PassiveSender,
        looped: Vec<Option<String>>,
    ) -> ListenerState {
        let base = Snapshot::new(config.backends.clone(), config.vnodes);
        let backends: Vec<BackendState> = config
            .backends
            .iter()
            .zip(looped)
            .map(|(b, looped)| BackendState::new(b, workers, &config.health, looped))
            .collect();
        let params = Arc::new(params(&config, &backends));
        let table = table(&backends);
        let snapshot = live_snapshot(
            &config,
            &base,
            up_flags(&backends),
            accepting_flags(&backends),
        );
        let routing = Routing {
            params: Arc::clone(&params),
            snapshot,
            backends: Arc::clone(&table),
        };
        let shared = Arc::new(ListenerShared::new(
            &config.name,
            config.listen,
            routing,
            workers,
            passive,
        ));
        let mut l = ListenerState {
            config,
            shared,
            base,
            rebased: false,
            backends,
            by_id: HashMap::new(),
            by_stats: HashMap::new(),
            params,
            table,
            remapped: 0.0,
            pending: false,
            published_at: Instant::now(),
            view_stale: true,
            workers,
        };
        l.index();
        l
    }

    /// What `/status` and `/metrics` show of it; `sets` says what its backend sets
    /// did.
    pub fn view(&self, sets: &crate::discovery::Sets) -> ListenerView {
        ListenerView {
            name: self.config.name.clone(),
            protocol: self.config.protocol,
            listen: self.config.listen,
            shared: Arc::clone(&self.shared),
            routing: self.shared.routing.load_full(),
            remapped: self.remapped,
            checked: self.config.health.active(),
            backends: Arc::clone(self.base.backends_shared()),
            states: self.backends.iter().map(BackendState::view).collect(),
            sets: self
                .config
                .backend_sets
                .iter()
                .map(|s| SetView {
                    name: s.name.clone(),
                    kind: match s.query {
                        crate::config::SetQuery::Srv(_) => "srv",
                        crate::config::SetQuery::Host { .. } => "dns",
                    },
                    backends: self.config.set_members(&s.name).count(),
                    errors: sets.errors_of(&self.config.name, &s.name),
                    refused: sets.refused_of(&self.config.name, &s.name),
                })
                .collect(),
        }
    }

    fn index(&mut self) {
        self.by_id = self
            .config
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.clone(), i))
            .collect();
        self.by_stats = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (Arc::as_ptr(&b.stats) as usize, i))
            .collect();
    }

    /// Takes a reloaded config for the same listener (same name, protocol and address).
    /// Backends keep health, admin state and counters by id and address; a backend
    /// whose address changed is a new backend. Changed health settings stop the probes
    /// (the caller starts new ones). Linear in the backends; the ring is rebased, not
    /// rebuilt (points of backends that stay are not hashed again).
    pub fn reconfigure(&mut self, config: ListenerConfig, looped: Vec<Option<String>>) {
        let mut old: Vec<Option<BackendState>> = self.backends.drain(..).map(Some).collect();
        let mut backends = Vec::with_capacity(config.backends.len());
        for (b, looped) in config.backends.iter().zip(looped) {
            let kept = self
                .by_id
                .get(&b.id)
                .copied()
                .filter(|&i| self.config.backends[i].addr == b.addr);
            let state = match kept.and_then(|i| old[i].take()) {
                Some(mut state) => {
                    if looped != state.looped {
                        state.why = looped
                            .as_deref()
                            .map(|w| Arc::from(looped_reason(w).as_str()));
                    }
                    state.looped = looped;
                    state
                }
                None => BackendState::new(b, self.workers, &config.health, looped),
            };
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
        if config.backends != self.config.backends || config.vnodes != self.config.vnodes {
            self.base = match self.base.with_addresses(config.backends.clone()) {
                // Only addresses changed (a host name moved, say): the ring stays.
                Some(s) if config.vnodes == self.config.vnodes => s,
                _ => self.base.rebased(config.backends.clone(), config.vnodes),
            };
            self.rebased = true;
        }
        self.backends = backends;
        self.params = Arc::new(params(&config, &self.backends));
        self.table = table(&self.backends);
        self.config = config;
        self.index();
    }

    /// Index of backend `id`.
    pub fn backend_index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Index of the backend with these counters (identity, not id: a stale report about
    /// a backend that a reload replaced finds nothing).
    pub fn backend_of(&self, stats: &Arc<BackendStats>) -> Option<usize> {
        self.by_stats.get(&(Arc::as_ptr(stats) as usize)).copied()
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

    /// Publishes the current states as a new routing for the workers, derived from
    /// the last one (or from the base after the backends changed). Counts transitions
    /// and the key space moved; returns the backends that went down.
    pub fn publish(&mut self) -> Vec<Arc<BackendStats>> {
        let (up, accepting) = (up_flags(&self.backends), accepting_flags(&self.backends));
        let previous = self.shared.routing.load_full();
        let (snapshot, moved) = if std::mem::take(&mut self.rebased) {
            let next = live_snapshot(&self.config, &self.base, up, accepting);
            let moved = previous.snapshot.remapped(&next);
            (next, moved)
        } else {
            let fail_open = self.config.health.all_down == AllDown::UseAll;
            let next = previous.snapshot.with_states(up, accepting, fail_open);
            let moved = next.moved();
            (next, moved)
        };
        drop(previous);
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
        self.shared.routing.store(Arc::new(Routing {
            params: Arc::clone(&self.params),
            snapshot,
            backends: Arc::clone(&self.table),
        }));
        self.pending = false;
        self.published_at = now;
        self.view_stale = true;
        went_down
    }
}

/// For each backend of listener `l` of `config`, whose address of ringway's it is, if
/// it is one (`local`: this machine's addresses, for wildcard listeners).
pub fn looped(
    config: &crate::config::Config,
    l: &ListenerConfig,
    local: &[std::net::IpAddr],
) -> Vec<Option<String>> {
    l.backends
        .iter()
        .map(|b| crate::config::whose(config, l.protocol, b.addr, local))
        .collect()
}

/// Why a backend whose address is ringway's own (`whose`) is not used.
fn looped_reason(whose: &str) -> String {
    format!("not used: its address is ringway's own ({whose}), so ringway would connect to itself")
}

/// The worker-facing settings of a listener config with these backends.
pub fn params(l: &ListenerConfig, backends: &[BackendState]) -> ListenerParams {
    ListenerParams {
        loops: backends.iter().any(|b| b.looped.is_some()),
        ..config_params(l)
    }
}

/// The worker-facing settings of a listener config (no backend ringway's own).
pub fn config_params(l: &ListenerConfig) -> ListenerParams {
    ListenerParams {
        hash: l.hash,
        connect_timeout: l.connect_timeout,
        idle_timeout: match l.protocol {
            Protocol::Tcp => l.idle_timeout,
            Protocol::Udp => l.udp_idle_timeout,
        },
        unanswered_timeout: l.udp_unanswered_timeout,
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
        passive: l.health.passive,
        loops: false,
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

fn up_flags(backends: &[BackendState]) -> Vec<bool> {
    backends.iter().map(BackendState::is_up).collect()
}

fn accepting_flags(backends: &[BackendState]) -> Vec<bool> {
    backends.iter().map(BackendState::is_accepting).collect()
}

fn table(backends: &[BackendState]) -> Arc<BackendTable> {
    Arc::new(BackendTable::new(
        backends.iter().map(|b| Arc::clone(&b.stats)).collect(),
    ))
}
