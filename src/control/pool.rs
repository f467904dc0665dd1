//! A pool as the control plane keeps it: its backends' states, the ring of all of
//! them, and how a change becomes the [`PoolRouting`] workers load.
//!
//! Every change is published as a new routing, derived from the last one: only the
//! ring points of backends whose state changed are touched (see
//! [`crate::balance::Snapshot::with_states`]), and the backends' counters are shared
//! with it until a reload changes them. The health state, the admin state and the
//! counters of a backend follow its id (and address) across reloads. A pool serves
//! every listener that routes to it: one check per backend, whatever the listeners.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::backend::{looped_reason, BackendState};
use super::view::{PoolView, SetView};
use crate::balance::{Mode, Policy, Snapshot};
use crate::config::PoolConfig;
use crate::dataplane::load::{Claim, Least};
use crate::dataplane::stats::BackendStats;
use crate::dataplane::{BackendTable, PassiveSender, PoolRouting, PoolShared};
use crate::health::state::{HealthState, Thresholds, Transition};
use crate::health::AllDown;

/// How often a pool whose backends ramp up (`slow_start`) is published again: the
/// ramp moves in steps of this long.
pub const RAMP_STEP: std::time::Duration = std::time::Duration::from_millis(500);

/// One pool.
#[derive(Debug)]
pub struct PoolState {
    /// Its config.
    pub config: PoolConfig,
    /// Its identity, shared with its backends' counters and the workers.
    pub shared: Arc<PoolShared>,
    /// All backends up: what states are applied to after the backends changed.
    base: Snapshot,
    /// How its backends are chosen (built per backend set).
    policy: Policy,
    /// The backends changed since the last publish: the next one starts from `base`,
    /// not from the routing published last.
    rebased: bool,
    /// One per backend, in `base` order.
    pub backends: Vec<BackendState>,
    /// Index of each backend by id.
    by_id: HashMap<String, usize>,
    /// Index of each backend by its counters' address.
    by_stats: HashMap<usize, usize>,
    /// The backends' counters in order (shared by every routing until a reload).
    table: Arc<BackendTable>,
    /// What workers load now.
    routing: Arc<PoolRouting>,
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

impl PoolState {
    /// A new pool: its backends up (or, discovered ones on a checked pool, waiting for
    /// their first check) and enabled. `looped`: for each backend, whose address of
    /// ringway's it is, if it is one. Its failures go to `passive`.
    pub fn new(
        config: PoolConfig,
        workers: usize,
        passive: PassiveSender,
        looped: Vec<Option<String>>,
    ) -> PoolState {
        let shared = Arc::new(PoolShared::new(
            &config.name,
            config.health.passive,
            passive,
        ));
        let base = Snapshot::new(config.backends.clone(), config.vnodes);
        let policy = Policy::new(config.balance, &config.backends);
        let backends: Vec<BackendState> = config
            .backends
            .iter()
            .zip(looped)
            .map(|(b, looped)| BackendState::new(b, (workers, &shared), &config.health, looped))
            .collect();
        apply_limits(&backends, &config.backends);
        let table = table(&backends);
        let snapshot = live_snapshot(
            &config,
            &base,
            up_flags(&backends),
            accepting_flags(&backends),
        );
        let policy = policy.for_snapshot(&snapshot);
        let least = least_of(&config, &snapshot, &table);
        shared.set_least(least.clone());
        let routing = Arc::new(PoolRouting {
            shared: Arc::clone(&shared),
            snapshot,
            backends: Arc::clone(&table),
            loops: backends.iter().any(|b| b.looped.is_some()),
            policy: policy.clone(),
            least,
        });
        let mut p = PoolState {
            config,
            shared,
            base,
            policy,
            rebased: false,
            backends,
            by_id: HashMap::new(),
            by_stats: HashMap::new(),
            table,
            routing,
            remapped: 0.0,
            pending: false,
            published_at: Instant::now(),
            view_stale: true,
            workers,
        };
        p.index();
        p
    }

    /// Some backend ramps up (`slow_start`): it is published again every
    /// [`RAMP_STEP`] until none does.
    pub fn ramping(&self) -> bool {
        self.routing.snapshot.ramping()
    }

    /// What workers load now.
    pub fn routing(&self) -> &Arc<PoolRouting> {
        &self.routing
    }

    /// What `/status` and `/metrics` show of it; `sets` says what its backend sets
    /// did, `users` which listeners route to it.
    pub fn view(&self, sets: &crate::discovery::Sets, users: Vec<String>) -> PoolView {
        PoolView {
            name: self.config.name.clone(),
            owner: self.config.owner.clone(),
            protocol: self.config.protocol,
            routing: Arc::clone(&self.routing),
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
            listeners: users,
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

    /// Takes a reloaded config for the same pool (same name and protocol). Backends
    /// keep health, admin state and counters by id and address; a backend whose
    /// address changed is a new backend. Changed health settings stop the probes (the
    /// caller starts new ones). Linear in the backends; the ring is rebased, not
    /// rebuilt (points of backends that stay are not hashed again).
    pub fn reconfigure(&mut self, config: PoolConfig, looped: Vec<Option<String>>) {
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
                None => {
                    let mut added =
                        BackendState::new(b, (self.workers, &self.shared), &config.health, looped);
                    // An added backend ramps up like one that came back.
                    if config.health.slow_start.is_some() && added.is_up() {
                        added.ramp_since = Some(Instant::now());
                    }
                    added
                }
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
            self.shared.set_passive(config.health.passive);
        }
        if config.backends != self.config.backends || config.vnodes != self.config.vnodes {
            self.base = match self.base.with_addresses(config.backends.clone()) {
                // Only addresses changed (a host name moved, say): the ring stays.
                Some(s) if config.vnodes == self.config.vnodes => s,
                _ => self.base.rebased(config.backends.clone(), config.vnodes),
            };
            self.rebased = true;
        }
        if config.backends != self.config.backends || config.balance != self.config.balance {
            self.policy = Policy::new(config.balance, &config.backends);
            self.rebased = true;
        }
        apply_limits(&backends, &config.backends);
        self.backends = backends;
        self.table = table(&self.backends);
        self.config = config;
        self.index();
    }

    /// Takes what an older process carried for its backends (an upgrade): health and
    /// admin state by id and address; publishes when any was carried, so the first
    /// routing workers load is the one the old process served with.
    pub fn adopt(&mut self, carried: &crate::control::upgrade::carry::Backends<'_>) -> usize {
        let now = Instant::now();
        let mut adopted = 0;
        for b in &mut self.backends {
            if let Some(c) = carried.get(&(self.config.name.as_str(), &*b.stats.id, b.stats.addr)) {
                b.adopt(c, now);
                adopted += 1;
            }
        }
        if adopted > 0 {
            self.rebased = true;
            self.publish();
            // Nothing moved for the workers: the old process served this routing.
            self.remapped = 0.0;
        }
        adopted
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

    /// Makes the current states the routing workers load, derived from the last one
    /// (or from the base after the backends changed). Counts transitions and the key
    /// space moved; returns the backends that went down. The listeners that use the
    /// pool publish it next.
    pub fn publish(&mut self) -> Vec<Arc<BackendStats>> {
        let (up, accepting) = (up_flags(&self.backends), accepting_flags(&self.backends));
        let (snapshot, moved) = if std::mem::take(&mut self.rebased) {
            let next = live_snapshot(&self.config, &self.base, up, accepting);
            let moved = self.routing.snapshot.remapped(&next);
            (next, moved)
        } else {
            let fail_open = self.config.health.all_down == AllDown::UseAll;
            let accepting = backups_held(&self.config.backends, accepting);
            let next = self.routing.snapshot.with_states(up, accepting, fail_open);
            let moved = next.moved();
            (next, moved)
        };
        if moved > 0.0 {
            self.remapped = moved;
        }
        let mut went_down = Vec::new();
        let now = Instant::now();
        let slow_start = self.config.health.slow_start;
        for b in &mut self.backends {
            let name = b.state_name();
            if name != b.state.0 {
                if b.state.0 == "down" {
                    b.down_before += now.saturating_duration_since(b.state.1);
                }
                b.state = (name, now);
            }
            let up = b.is_up();
            if up != b.up {
                b.up = up;
                if up {
                    b.to_up += 1;
                    if slow_start.is_some() {
                        b.ramp_since = Some(now);
                    }
                } else {
                    b.to_down += 1;
                    went_down.push(Arc::clone(&b.stats));
                }
            }
        }
        let ramps: Vec<u16> = self
            .backends
            .iter_mut()
            .map(|b| b.ramp(now, slow_start))
            .collect();
        let snapshot = snapshot.with_ramp(Some(ramps));
        let least = least_of(&self.config, &snapshot, &self.table);
        // Maglev: the table of this live set (the last one when the set is the same).
        self.policy = self.policy.for_snapshot(&snapshot);
        self.routing = Arc::new(PoolRouting {
            shared: Arc::clone(&self.shared),
            snapshot,
            backends: Arc::clone(&self.table),
            loops: self.backends.iter().any(|b| b.looped.is_some()),
            policy: self.policy.clone(),
            least: least.clone(),
        });
        // Counts go to the new tree from now on (workers that still read the last
        // routing see its tree, one publish old, until their next connection).
        self.shared.set_least(least);
        self.pending = false;
        self.published_at = now;
        self.view_stale = true;
        went_down
    }
}

/// For each backend of pool `p` of `config`, whose address of ringway's it is, if it
/// is one (`local`: this machine's addresses, for wildcard listeners).
pub fn looped(
    config: &crate::config::Config,
    p: &PoolConfig,
    local: &[std::net::IpAddr],
) -> Vec<Option<String>> {
    p.backends
        .iter()
        .map(|b| crate::config::whose(config, p.protocol, b.addr, local))
        .collect()
}

/// What new connections and flows of pool `config` use, given which backends are up
/// (keep their flows) and accepting (take new ones): `base` filtered, or all of it
/// when none accepts and `all_down = "use-all"`. The one definition the data plane's
/// routing and `ringway route` share.
pub fn live_snapshot(
    config: &PoolConfig,
    base: &Snapshot,
    up: Vec<bool>,
    accepting: Vec<bool>,
) -> Snapshot {
    let accepting = backups_held(&config.backends, accepting);
    base.with_states(up, accepting, config.health.all_down == AllDown::UseAll)
}

/// Backups (`backup = true`) take new connections only while no other backend does:
/// `accepting` with the backups' flags cleared while any non-backup accepts. Their
/// points stay in the ring, skipped like a down backend's, so while they wait every
/// key goes where a ring without them sends it, and when they serve they share the
/// key space as a ring of their own would.
pub fn backups_held(backends: &[crate::balance::Backend], mut accepting: Vec<bool>) -> Vec<bool> {
    let primary = backends
        .iter()
        .zip(&accepting)
        .any(|(b, &a)| a && !b.backup);
    if primary {
        for (a, b) in accepting.iter_mut().zip(backends) {
            *a &= !b.backup;
        }
    }
    accepting
}

/// A least-connections pool's min-tree over the live backends of `snapshot`; `None`
/// for other modes.
fn least_of(
    config: &PoolConfig,
    snapshot: &Snapshot,
    table: &Arc<BackendTable>,
) -> Option<Arc<Least>> {
    (config.balance.mode == Mode::LeastConnections)
        .then(|| Arc::new(Least::new(snapshot, Arc::clone(table))))
}

/// Puts each backend's `max_connections` and `max_queue` (`config`, in the same
/// order) where workers read them; a raised limit serves its waiters at once.
fn apply_limits(backends: &[BackendState], config: &[crate::balance::Backend]) {
    for (b, c) in backends.iter().zip(config) {
        b.stats
            .limit
            .set(c.limits.max_connections, c.limits.max_queue);
        Claim::hand_out(&b.stats);
    }
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

#[cfg(test)]
mod tests {
    use super::backups_held;
    use crate::balance::Backend;

    fn backends(backup: &[bool]) -> Vec<Backend> {
        backup
            .iter()
            .enumerate()
            .map(|(i, &backup)| Backend {
                id: format!("b{i}"),
                addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                addr_text: format!("127.0.0.1:{}", 9000 + i),
                weight: 1,
                set: None,
                backup,
                limits: Default::default(),
            })
            .collect()
    }

    #[test]
    fn backups_wait_while_any_other_backend_accepts() {
        let b = backends(&[false, false, true]);
        assert_eq!(
            backups_held(&b, vec![true, false, true]),
            [true, false, false]
        );
        assert_eq!(
            backups_held(&b, vec![false, false, true]),
            [false, false, true]
        );
        assert_eq!(
            backups_held(&b, vec![false, false, false]),
            [false, false, false]
        );
        // Without backups nothing changes.
        let b = backends(&[false, false]);
        assert_eq!(backups_held(&b, vec![true, false]), [true, false]);
    }
}
