//! Backend host names, resolved again every `resolve_interval` while ringway runs (as
//! HAProxy's `resolvers` or NGINX's `resolve` do), not only when the config loads.
//!
//! The lookups run on tokio's blocking pool, off the control task (a slow resolver
//! delays nothing else); the answers come back as a message and are applied there. A
//! backend whose name now gives another address is replaced the way a reload replaces
//! a backend whose address changed: new health state and probe, new counters, open
//! connections to the old address carry on. Its ring identity is its id or name, so
//! no key moves. A name that fails to resolve keeps its last address, with a warning.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::actor::Msg;
use super::core::Control;
use crate::config::resolve::{backend_addr, is_host_name, AddrError};

/// When the next round of lookups is due, and whether one is running.
#[derive(Debug)]
pub struct Resolving {
    at: Instant,
    busy: bool,
}

impl Resolving {
    /// The first round at `at`.
    pub fn new(at: Instant) -> Resolving {
        Resolving { at, busy: false }
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
        if names.is_empty() {
            self.resolving.at = now + self.config.resolve_interval;
            return;
        }
        self.resolving.busy = true;
        let me = self.me.clone();
        tokio::task::spawn_blocking(move || {
            let results = names
                .into_iter()
                .map(|n| {
                    let r = backend_addr(&n);
                    (n, r)
                })
                .collect();
            me.send(Msg::Resolved(results));
        });
    }

    /// A round of lookups finished: applies it and schedules the next.
    pub fn on_resolved(
        &mut self,
        results: &HashMap<String, Result<SocketAddr, AddrError>>,
        now: Instant,
    ) {
        self.resolving.busy = false;
        self.resolving.at = now + self.config.resolve_interval;
        self.apply_resolved(results);
    }

    /// Every backend address written as a host name, once each.
    fn host_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .config
            .listeners
            .iter()
            .flat_map(|l| &l.backends)
            .filter(|b| is_host_name(&b.addr_text))
            .map(|b| b.addr_text.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Applies fresh lookups of host names: backends whose name moved get the new
    /// address; failed lookups keep the old one.
    fn apply_resolved(&mut self, results: &HashMap<String, Result<SocketAddr, AddrError>>) {
        let mut next = self.config.clone();
        let mut moved = 0;
        for l in &mut next.listeners {
            for b in &mut l.backends {
                match results.get(&b.addr_text) {
                    Some(Ok(addr)) if *addr != b.addr => {
                        tracing::info!(listener = %l.name, backend = %b.id, "{} now resolves to {addr} (was {}): replacing the backend", b.addr_text, b.addr);
                        b.addr = *addr;
                        moved += 1;
                    }
                    Some(Err(why)) => {
                        tracing::warn!(listener = %l.name, backend = %b.id, "{why}; keeping {}", b.addr);
                    }
                    _ => {}
                }
            }
        }
        if moved == 0 {
            return;
        }
        if let Err(e) = self.apply(next) {
            tracing::error!("applying re-resolved backend addresses failed: {e}");
        }
    }
}
