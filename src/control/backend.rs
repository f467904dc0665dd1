//! One backend of a pool as the control plane knows it: its health (the rise/fall
//! machine, fed by checks), its admin state (set through the admin API), and what
//! `/status` and `/metrics` show of both.
//!
//! | health | admin    | keeps its flows | takes new ones | reported as |
//! |--------|----------|-----------------|----------------|-------------|
//! | up     | enabled  | yes             | yes            | `up`        |
//! | up     | draining | yes             | no             | `draining`  |
//! | any    | disabled | no              | no             | `down`      |
//! | down   | any      | no              | no             | `down`      |

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::probes::ProbeTask;
use super::upgrade::carry;
use super::view::BackendView;
use crate::dataplane::stats::BackendStats;
use crate::dataplane::PoolShared;
use crate::health::state::HealthState;
use crate::health::HealthConfig;
use crate::metrics::Histogram;

/// What an operator set for a backend through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    pub(super) up: bool,
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
    pub(super) state: (&'static str, Instant),
    /// Time spent down before its current state (each down period, once it ended).
    pub(super) down_before: std::time::Duration,
    /// Its address is ringway's own (whose, for the log and `/status`): it is never
    /// used nor checked.
    pub looped: Option<String>,
    /// `slow_start`: since when it ramps up (it came back up, or was added), until
    /// its ramp is whole.
    pub(super) ramp_since: Option<Instant>,
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
    /// `backend` of `pool` (checked by `check`); `looped`: whose address of ringway's
    /// it is, if it is one.
    pub fn new(
        backend: &crate::balance::Backend,
        (workers, pool): (usize, &Arc<PoolShared>),
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
            stats: Arc::new(BackendStats::new(
                &backend.id,
                backend.addr,
                workers,
                Arc::clone(pool),
            )),
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
            down_before: std::time::Duration::ZERO,
            looped,
            ramp_since: None,
        }
    }

    /// What an upgrade carries of it (`pool`: its pool's name). Every field is named:
    /// one added to the state does not compile until it is carried or said not to be.
    pub fn carry(&self, pool: &str, now: Instant) -> carry::Backend {
        let BackendState {
            stats,
            health,
            admin,
            up,
            checks_ok,
            checks_failed,
            checks_unknown,
            readmit_at,
            to_up,
            to_down,
            // Not carried: the new process starts its own probes.
            probe: _,
            passive_failures,
            last_check,
            check_durations,
            why,
            state,
            down_before,
            // Not carried: the new process tells from its own config and addresses.
            looped: _,
            ramp_since,
        } = self;
        let age = |at: Instant| carry::ms(now.saturating_duration_since(at));
        carry::Backend {
            pool: pool.to_string(),
            id: stats.id.to_string(),
            addr: stats.addr,
            health: health.parts(),
            admin: *admin,
            published_up: *up,
            checks: [*checks_ok, *checks_failed, *checks_unknown],
            transitions: [*to_up, *to_down],
            passive_failures: *passive_failures,
            check_durations: (check_durations.counts().to_vec(), check_durations.sum()),
            last_check: last_check.as_ref().map(|c| carry::LastCheck {
                result: c.result.to_string(),
                error: c.error.as_deref().map(str::to_string),
                took_us: u64::try_from(c.took.as_micros()).unwrap_or(u64::MAX),
                age_ms: age(c.at),
            }),
            why: why.as_deref().map(str::to_string),
            state_age_ms: age(state.1),
            down_before_ms: carry::ms(*down_before),
            readmit_in_ms: readmit_at.map(|at| carry::ms(at.saturating_duration_since(now))),
            ramp_age_ms: ramp_since.map(age),
        }
    }

    /// Takes the state an older process carried for this backend (the same id and
    /// address in a pool of the same name). Its counters go on in `/metrics` by
    /// their own way ([`crate::metrics::carry`]); its probe is this process's.
    pub fn adopt(&mut self, c: &carry::Backend, now: Instant) {
        let ago = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        self.health = HealthState::from_parts(c.health);
        self.admin = c.admin;
        // A looped backend stays out whatever it was.
        self.up = c.published_up && self.looped.is_none();
        [self.checks_ok, self.checks_failed, self.checks_unknown] = c.checks;
        [self.to_up, self.to_down] = c.transitions;
        self.passive_failures = c.passive_failures;
        if let Some(h) = Histogram::from_parts(&c.check_durations.0, c.check_durations.1) {
            self.check_durations = h;
        }
        self.last_check = c.last_check.as_ref().and_then(|l| {
            let result = ["success", "failure", "unknown"]
                .into_iter()
                .find(|r| *r == l.result)?;
            Some(LastCheck {
                result,
                error: l.error.as_deref().map(Arc::from),
                took: Duration::from_micros(l.took_us),
                at: ago(l.age_ms),
            })
        });
        if self.looped.is_none() {
            self.why = c.why.as_deref().map(Arc::from);
        }
        self.state = (self.state_name(), ago(c.state_age_ms));
        self.down_before = Duration::from_millis(c.down_before_ms);
        self.readmit_at = c.readmit_in_ms.map(|ms| now + Duration::from_millis(ms));
        self.ramp_since = c.ramp_age_ms.map(ago);
    }

    /// Its share of new connections at `now`, in thousandths, ramping up over
    /// `slow_start` since it came back; 1000 once the ramp is whole (which ends it).
    pub(super) fn ramp(&mut self, now: Instant, slow_start: Option<std::time::Duration>) -> u16 {
        let (Some(since), Some(d)) = (self.ramp_since, slow_start) else {
            self.ramp_since = None;
            return crate::balance::snapshot::FULL;
        };
        let done = now.saturating_duration_since(since).as_secs_f64() / d.as_secs_f64();
        if done >= 1.0 {
            self.ramp_since = None;
            return crate::balance::snapshot::FULL;
        }
        (done * 1000.0) as u16
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
    pub fn view(&self) -> BackendView {
        BackendView {
            stats: Arc::clone(&self.stats),
            state: self.state_name(),
            since: self.state.1,
            down_before: self.down_before,
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

/// Why a backend whose address is ringway's own (`whose`) is not used.
pub fn looped_reason(whose: &str) -> String {
    format!("not used: its address is ringway's own ({whose}), so ringway would connect to itself")
}
