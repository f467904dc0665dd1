//! Backend host names, resolved again every `resolve_interval` while ringway runs (as
//! HAProxy's `resolvers` or NGINX's `resolve` do), not only when the config loads.
//!
//! The lookups run on tokio's blocking pool without the control lock (a slow resolver
//! delays nothing else); the results are then applied under the lock. A backend whose
//! name now gives another address is replaced the way a reload replaces a backend whose
//! address changed: new health state and probe, new counters, open connections to the
//! old address carry on. Its ring identity is its id or name, so no key moves. A name
//! that fails to resolve keeps its last address, with a warning.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::admin::{lock, Shared};
use super::core::Control;
use crate::config::resolve::{backend_addr, is_host_name, AddrError};

/// Resolves the backends' host names every `resolve_interval`, forever.
pub async fn run(control: Shared) {
    loop {
        let interval = lock(&control).config.resolve_interval;
        tokio::time::sleep(interval).await;
        let names = lock(&control).host_names();
        if names.is_empty() {
            continue;
        }
        let lookups = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .map(|n| {
                    let r = backend_addr(&n);
                    (n, r)
                })
                .collect::<HashMap<_, _>>()
        });
        if let Ok(results) = lookups.await {
            lock(&control).apply_resolved(&results);
        }
    }
}

impl Control {
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
    pub fn apply_resolved(&mut self, results: &HashMap<String, Result<SocketAddr, AddrError>>) {
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
            tracing::error!("applying re-resolved backend addresses failed: {e:#}");
        }
    }
}
