//! Lookups while ringway runs, not only when the config loads (as HAProxy's
//! `resolvers` or NGINX's `resolve` do): backend host names, and the DNS questions of
//! `backend_set`s.
//!
//! One round every `resolve_interval`, or sooner when a set's answer has a shorter TTL
//! (never more than once a second). The lookups run on tokio's blocking pool, off the
//! control task (a slow resolver delays nothing else); the answers come back as a
//! message and are applied there, as one change:
//! - a backend whose name now gives another address is replaced the way a reload
//!   replaces a backend whose address changed: new health state and probe, new
//!   counters, open connections to the old address carry on. Its ring identity is its
//!   id or name, so no key moves. A name that fails to resolve keeps its last address,
//!   with a warning.
//! - a set's answer goes through its history (`discovery::Sets`): addresses added or
//!   removed are backends added or removed, which moves only their own keys; failures
//!   keep the last good set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::actor::Msg;
use super::core::Control;
use crate::config::resolve::{backend_addr, is_host_name, AddrError};
use crate::discovery::{self, SetAnswer, Sets};

/// When the next round of lookups is due, whether one is running, and the sets'
/// history.
#[derive(Debug)]
pub struct Resolving {
    at: Instant,
    busy: bool,
    /// Every backend set's history.
    pub sets: Sets,
}

/// One round's answers.
#[derive(Debug)]
pub struct Round {
    /// Host names of backends.
    pub names: HashMap<String, Result<SocketAddr, AddrError>>,
    /// Backend sets.
    pub sets: Vec<SetAnswer>,
}

impl Resolving {
    /// The first round at `at`, with the sets' history so far.
    pub fn new(at: Instant, sets: Sets) -> Resolving {
        Resolving {
            at,
            busy: false,
            sets,
        }
    }

    /// When the next round is due (far away while one runs: its answer schedules the
    /// next).
    pub fn due(&self) -> Instant {
        if self.busy {
            self.at + std::time::Duration::from_secs(3600)
        } else {
            self.at
        }
    }
}

impl Control {
    /// Starts a round of lookups if one is due.
    pub fn resolve_if_due(&mut self, now: Instant) {
        if self.resolving.busy || now < self.resolving.at {
            return;
        }
        let names = self.host_names();
        let has_sets = self.config.pools.iter().any(|p| !p.backend_sets.is_empty());
        if names.is_empty() && !has_sets {
            self.resolving.at = now + self.config.resolve_interval;
            return;
        }
        self.resolving.busy = true;
        let me = self.me.clone();
        let config = has_sets.then(|| self.config.clone());
        tokio::task::spawn_blocking(move || {
            let names = names
                .into_iter()
                .map(|n| {
                    let r = backend_addr(&n);
                    (n, r)
                })
                .collect();
            let sets = config.as_ref().map(discovery::lookup).unwrap_or_default();
            me.send_blocking(Msg::Resolved(Box::new(Round { names, sets })));
        });
    }

    /// A round of lookups finished: applies it and schedules the next.
    pub fn on_resolved(&mut self, round: &Round, now: Instant) {
        self.resolving.busy = false;
        let interval = self.config.resolve_interval;
        self.resolving.at = now + discovery::next_round(&round.sets, interval);
        let mut next = self.config.clone();
        let moved = move_host_names(&mut next, &round.names);
        let changed = self
            .resolving
            .sets
            .settle(&mut next, &round.sets, Some(&self.config));
        if moved == 0 && !changed {
            return;
        }
        if let Err(e) = self.apply(next) {
            tracing::error!("applying re-resolved backends failed: {e}");
        }
    }

    /// Every backend address written as a host name, once each.
    fn host_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .config
            .pools
            .iter()
            .flat_map(|p| &p.backends)
            .filter(|b| is_host_name(&b.addr_text))
            .map(|b| b.addr_text.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Applies fresh lookups of host names to `next`: backends whose name moved get the
/// new address; failed lookups keep the old one. How many moved.
fn move_host_names(
    next: &mut crate::config::Config,
    results: &HashMap<String, Result<SocketAddr, AddrError>>,
) -> usize {
    let mut moved = 0;
    for p in &mut next.pools {
        for b in &mut p.backends {
            match results.get(&b.addr_text) {
                Some(Ok(addr)) if *addr != b.addr => {
                    tracing::info!(pool = %p.name, backend = %b.id, "{} now resolves to {addr} (was {}): replacing the backend", b.addr_text, b.addr);
                    b.addr = *addr;
                    moved += 1;
                }
                Some(Err(why)) => {
                    tracing::warn!(pool = %p.name, backend = %b.id, "{why}; keeping {}", b.addr);
                }
                _ => {}
            }
        }
    }
    moved
}
