//! The state an upgrade carries besides the sockets, so the new process starts where
//! the old one was, not from scratch: every backend's health and admin state (up or
//! down, the rise/fall streak, drained and disabled backends, why, since when), the
//! backends DNS gave each `backend_set`, and every counter (`/metrics` continues).
//!
//! Each owner writes and reads its own part ([`BackendState::carry`] and
//! [`BackendState::adopt`], which name every field of a backend's state, so a field
//! added there does not compile until it is carried or said not to be). Times go
//! over as ages (each process has its own clock). Matching is by pool name, backend
//! id and address: a backend the new config changed or added starts fresh, as a
//! reload would start it.
//!
//! [`BackendState::carry`]: crate::control::backend::BackendState::carry
//! [`BackendState::adopt`]: crate::control::backend::BackendState::adopt

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Member};
use crate::control::backend::Admin;

/// Everything carried (empty from a process of hand-off version 1).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Every backend of every pool.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Every backend set's members.
    #[serde(default)]
    pub sets: Vec<Set>,
    /// Every counter and histogram series of `/metrics` (see
    /// [`crate::metrics::carry`]).
    #[serde(default)]
    pub metrics: Vec<(String, f64)>,
}

/// One backend's health and admin state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// Its pool.
    pub pool: String,
    /// Its id.
    pub id: String,
    /// Its address.
    pub addr: SocketAddr,
    /// The health machine: up, the streak against that, no verdict yet.
    pub health: (bool, u32, bool),
    /// What an operator set.
    pub admin: Admin,
    /// Up as last published (so the new process counts no transition).
    pub published_up: bool,
    /// Active checks passed, failed, unknown.
    pub checks: [u64; 3],
    /// Transitions to up and to down.
    pub transitions: [u64; 2],
    /// Failures seen on the data path.
    pub passive_failures: u64,
    /// Check durations: per bucket (not cumulative), and their sum.
    pub check_durations: (Vec<u64>, f64),
    /// The last active check.
    pub last_check: Option<LastCheck>,
    /// Why it is in its state.
    pub why: Option<String>,
    /// How long it has been in its state (ms).
    pub state_age_ms: u64,
    /// Time spent down before its current state (ms).
    pub down_before_ms: u64,
    /// A hold-down (no active checks): re-admitted in this long (ms).
    pub readmit_in_ms: Option<u64>,
    /// `slow_start`: ramping up for this long (ms).
    pub ramp_age_ms: Option<u64>,
}

/// One active check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCheck {
    /// `success`, `failure` or `unknown`.
    pub result: String,
    /// Why not.
    pub error: Option<String>,
    /// How long it took (µs).
    pub took_us: u64,
    /// How long ago it finished (ms).
    pub age_ms: u64,
}

/// One backend set's members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Set {
    /// Its pool.
    pub pool: String,
    /// Its name (what it asks, as written).
    pub set: String,
    /// Its addresses and weights.
    pub members: Vec<(SocketAddr, u32)>,
}

impl State {
    /// The members of every set of `config`.
    pub fn sets_of(config: &Config) -> Vec<Set> {
        config
            .pools
            .iter()
            .flat_map(|p| {
                p.backend_sets.iter().map(move |s| Set {
                    pool: p.name.clone(),
                    set: s.name.clone(),
                    members: p.set_members(&s.name).map(|b| (b.addr, b.weight)).collect(),
                })
            })
            .collect()
    }

    /// `config` with the carried members in each of its sets that was carried: what
    /// the first lookups keep where DNS does not answer (instead of starting empty).
    pub fn with_sets(&self, config: &Config) -> Config {
        let mut running = config.clone();
        for s in &self.sets {
            let Some(p) = running.pools.iter_mut().find(|p| p.name == s.pool) else {
                continue;
            };
            let Some(i) = p.backend_sets.iter().position(|x| x.name == s.set) else {
                continue;
            };
            let members: Vec<Member> = s
                .members
                .iter()
                .map(|&(addr, weight)| Member { addr, weight })
                .collect();
            if let Err(e) = p.replace_set(i, &members) {
                tracing::warn!(pool = %s.pool, set = %s.set, "carried set not applied: {e}");
            }
        }
        running
    }

    /// The carried backends by pool, id and address.
    pub fn backends(&self) -> Backends<'_> {
        self.backends
            .iter()
            .map(|b| ((b.pool.as_str(), b.id.as_str(), b.addr), b))
            .collect()
    }
}

/// Carried backends by pool, id and address.
pub type Backends<'a> = std::collections::HashMap<(&'a str, &'a str, SocketAddr), &'a Backend>;

/// Milliseconds of `d`, saturating.
pub fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
