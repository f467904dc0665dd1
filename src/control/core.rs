//! The control plane's state and the operations on it: health results, admin calls,
//! metrics, status. One [`Control`] behind a mutex, locked briefly by the tasks of the
//! control runtime (never by a worker, never across an `.await`).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::probes::{self, Outcome};
use super::state::{Admin, BackendStatus, ListenerState, ListenerStatus};
use crate::config::Config;
use crate::dataplane::{Command, PassiveFailure, WorkerControl};
use crate::health::state::Transition;
use crate::health::{AllDown, OnDown};
use crate::metrics::{Exporter, Sample};

/// Everything the control plane owns.
#[derive(Debug)]
pub struct Control {
    /// The running config (the last one applied).
    pub config: Config,
    /// Listeners, in config order.
    pub listeners: Vec<ListenerState>,
    /// Command channels of the workers.
    pub workers: Vec<WorkerControl>,
    /// Where probes send results.
    pub probes: UnboundedSender<Outcome>,
    /// Where workers send passive failures (handed to new listeners).
    pub passive: UnboundedSender<PassiveFailure>,
    /// The Prometheus recorder.
    pub exporter: Exporter,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads rejected.
    pub reloads_failed: u64,
    /// Why the last rejected reload was rejected.
    pub last_reload_error: Option<String>,
    /// When ringway started.
    pub started: Instant,
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No listener of that name.
    #[error("no listener named {0:?}")]
    NoListener(String),
    /// No backend of that id in the listener.
    #[error("listener {listener:?} has no backend with id {id:?}")]
    NoBackend {
        /// Listener name.
        listener: String,
        /// Backend id asked for.
        id: String,
    },
}

/// `GET /status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Process information.
    pub process: ProcessStatus,
    /// Listeners.
    pub listeners: Vec<ListenerStatus>,
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
    /// Why the last rejected reload was rejected.
    pub last_reload_error: Option<String>,
}

impl Control {
    /// Starts a probe for every checked backend that has none.
    pub fn start_probes(&mut self) {
        for l in &mut self.listeners {
            if !l.config.health.active() {
                continue;
            }
            for (b, conf) in l.backends.iter_mut().zip(&l.config.backends) {
                if b.probe.is_none() {
                    b.probe = Some(probes::spawn(
                        Arc::clone(&l.shared),
                        Arc::clone(&b.stats),
                        conf.addr,
                        l.config.health.clone(),
                        self.probes.clone(),
                    ));
                }
            }
        }
    }

    /// Applies one check result (stale ones, about replaced backends, are ignored).
    pub fn on_outcome(&mut self, o: Outcome) {
        let Some(li) = self
            .listeners
            .iter()
            .position(|l| Arc::ptr_eq(&l.shared, &o.listener))
        else {
            return;
        };
        let active = o.took.is_some();
        let l = &mut self.listeners[li];
        let health = &l.config.health;
        // Passive failures only count where active checks can bring a backend back.
        if !(active || health.active() && health.passive) {
            return;
        }
        let Some(bi) = l.backend_of(&o.backend) else {
            return;
        };
        if let Some(took) = o.took {
            self.exporter
                .record_check(&l.config.name, &o.backend.id, took);
        }
        let Some(tr) = l.observe(bi, o.result.is_ok(), active) else {
            return;
        };
        let health = &l.config.health;
        let b = &l.config.backends[bi];
        let name = &l.config.name;
        match (tr, &o.result) {
            (Transition::Down, Err(why)) => {
                let what = if active {
                    "failed checks"
                } else {
                    "failed checks (the last a connect on the data path)"
                };
                tracing::warn!(listener = %name, "backend {} ({}) DOWN after {} {what}: {why}", b.id, b.addr_text, health.fall);
            }
            _ => {
                tracing::info!(listener = %name, "backend {} ({}) UP after {} successful checks", b.id, b.addr_text, health.rise)
            }
        }
        if !l.backends.iter().any(|b| b.health.is_up()) {
            match health.all_down {
                AllDown::Reject => {
                    tracing::error!(listener = %name, "every backend is down: new connections are refused")
                }
                AllDown::UseAll => {
                    tracing::error!(listener = %name, "every backend is down: using all of them (all_down = \"use-all\")")
                }
            }
        }
        self.publish(li);
    }

    /// Publishes listener `li`'s routing; with `on_down = "close"`, tells workers to
    /// close connections to backends that just went down.
    pub fn publish(&mut self, li: usize) {
        let l = &mut self.listeners[li];
        let down = l.publish();
        if l.config.health.on_down == OnDown::Close {
            for backend in down {
                for w in &self.workers {
                    let _ = w.send(Command::CloseBackend {
                        listener: Arc::clone(&l.shared),
                        backend: Arc::clone(&backend),
                    });
                }
            }
        }
    }

    /// Sets backend `id` of listener `listener` to `admin`; returns its new status.
    pub fn set_admin(
        &mut self,
        listener: &str,
        id: &str,
        admin: Admin,
    ) -> Result<BackendStatus, AdminError> {
        let li = self
            .listeners
            .iter()
            .position(|l| l.config.name == listener)
            .ok_or_else(|| AdminError::NoListener(listener.to_string()))?;
        let bi = self.listeners[li]
            .backend_index(id)
            .ok_or_else(|| AdminError::NoBackend {
                listener: listener.to_string(),
                id: id.to_string(),
            })?;
        let before = self.listeners[li].backends[bi].admin;
        if before != admin {
            self.listeners[li].backends[bi].admin = admin;
            tracing::info!(listener = %listener, "backend {id}: admin state {before:?} -> {admin:?} (admin API)");
            self.publish(li);
        }
        let l = &self.listeners[li];
        Ok(l.backend_status(bi, l.shares()[bi]))
    }

    /// The whole status.
    pub fn status(&self) -> Status {
        Status {
            process: ProcessStatus {
                version: env!("CARGO_PKG_VERSION"),
                pid: std::process::id(),
                uptime_seconds: self.started.elapsed().as_secs(),
                workers: self.workers.len(),
                config: self.config.path.display().to_string(),
                reloads_ok: self.reloads_ok,
                reloads_failed: self.reloads_failed,
                last_reload_error: self.last_reload_error.clone(),
            },
            listeners: self.listeners.iter().map(ListenerState::status).collect(),
        }
    }

    /// The Prometheus text for a scrape.
    pub fn metrics(&self) -> String {
        let sample = Sample {
            listeners: self.listeners.iter().map(ListenerState::sample).collect(),
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
        };
        self.exporter.render(&sample)
    }
}
