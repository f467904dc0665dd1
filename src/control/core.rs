//! The control plane's state and the operations on it: health results (active and
//! passive), re-admission after a hold-down, admin calls, metrics, status. Owned by
//! one task ([`super::actor`]); every method runs on it, in message order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::actor::Handle;
use super::probes::{self, Outcome};
use super::reload::Reloads;
use super::resolver::Resolving;
use super::state::{Admin, LastCheck, ListenerState};
use super::status::{self, BackendStatus, ListenerStatus};
use crate::config::Config;
use crate::dataplane::{Command, PassiveFailure, WorkerControl};
use crate::health::state::{HealthState, Transition};
use crate::health::{AllDown, OnDown};
use crate::metrics::{Exporter, Sample, SetSample};

/// Everything the control plane owns.
#[derive(Debug)]
pub struct Control {
    /// The running config (the last one applied).
    pub config: Config,
    /// Listeners, in config order.
    pub listeners: Vec<ListenerState>,
    /// Command channels of the workers.
    pub workers: Vec<WorkerControl>,
    /// This task's own address: probes and background jobs report through it.
    pub me: Handle,
    /// The access log's writer (reloads reconfigure it).
    pub access_log: crate::accesslog::Control,
    /// Where workers send passive failures (handed to new listeners).
    pub passive: tokio::sync::mpsc::UnboundedSender<PassiveFailure>,
    /// The Prometheus recorder.
    pub exporter: Exporter,
    /// Reloads: counts, the last error, loads in flight.
    pub reloads: Reloads,
    /// Host-name re-resolution schedule.
    pub resolving: Resolving,
    /// When ringway started.
    pub started: Instant,
    /// When a check that could not run was last logged, per listener.
    unknown_logged: HashMap<String, Instant>,
    /// The kernel-forwarding program is loaded (`forward = "kernel"` can be used).
    pub kernel: bool,
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
    /// Why the last reload was rejected; cleared by a successful one.
    pub last_reload_error: Option<String>,
}

impl Control {
    /// The state for `config` with its listeners built.
    pub fn new(
        config: Config,
        listeners: Vec<ListenerState>,
        workers: Vec<WorkerControl>,
        (me, access_log): (Handle, crate::accesslog::Control),
        passive: tokio::sync::mpsc::UnboundedSender<PassiveFailure>,
        resolving: Resolving,
    ) -> Control {
        let now = Instant::now();
        Control {
            config,
            listeners,
            workers,
            me,
            access_log,
            passive,
            exporter: Exporter::new(crate::metrics::STALE_AFTER),
            reloads: Reloads::default(),
            resolving,
            started: now,
            unknown_logged: HashMap::new(),
            kernel: false,
        }
    }

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
                        self.me.clone(),
                    ));
                }
            }
        }
    }

    /// The listener and backend a report is about (by identity: a report about a
    /// backend a reload has replaced since finds nothing and is ignored).
    fn locate(
        &self,
        listener: &Arc<crate::dataplane::ListenerShared>,
        backend: &Arc<crate::dataplane::stats::BackendStats>,
    ) -> Option<(usize, usize)> {
        let li = self
            .listeners
            .iter()
            .position(|l| Arc::ptr_eq(&l.shared, listener))?;
        let bi = self.listeners[li].backend_of(backend)?;
        Some((li, bi))
    }

    /// Applies one active check result.
    pub fn on_checked(&mut self, o: Outcome, now: Instant) {
        let Some((li, bi)) = self.locate(&o.listener, &o.backend) else {
            return;
        };
        let l = &mut self.listeners[li];
        l.backends[bi].last_check = Some(LastCheck {
            result: match &o.result {
                Ok(()) => "success",
                Err(e) if e.is_local() => "unknown",
                Err(_) => "failure",
            },
            error: o.result.as_ref().err().map(ToString::to_string),
            took: o.took,
            at: now,
        });
        match o.result {
            Err(e) if e.is_local() => {
                // No evidence about the backend: counted, logged once per interval.
                l.backends[bi].checks_unknown += 1;
                let name = &l.config.name;
                let every = l.config.health.interval;
                let last = self.unknown_logged.get(name);
                if last.is_none_or(|t| now.duration_since(*t) >= every) {
                    self.unknown_logged.insert(name.clone(), now);
                    tracing::warn!(listener = %name, "health check of backend {} could not run: {e}; counted as unknown, not as a failure", o.backend.id);
                }
            }
            result => {
                self.exporter
                    .record_check(&l.config.name, &o.backend.id, o.took);
                let why = result.as_ref().err().map(ToString::to_string);
                if let Some(tr) = l.observe(bi, result.is_ok()) {
                    self.transition(li, bi, tr, why.as_deref(), "failed checks");
                }
            }
        }
    }

    /// Applies a failure seen on the data path (a refused or timed-out connect, an
    /// ICMP error): it counts as a failed check. Where no active check can bring the
    /// backend back, it is re-admitted after a hold-down.
    pub fn on_passive(&mut self, p: PassiveFailure, now: Instant) {
        let Some((li, bi)) = self.locate(&p.listener, &p.backend) else {
            return;
        };
        let l = &mut self.listeners[li];
        if !l.config.health.passive {
            return;
        }
        l.backends[bi].passive_failures += 1;
        let Some(tr) = l.observe_passive(bi, now.duration_since(self.started)) else {
            return;
        };
        if !l.config.health.active() {
            l.backends[bi].readmit_at = Some(now + l.config.health.readmit_after());
        }
        self.transition(
            li,
            bi,
            tr,
            Some(&p.error),
            "failed checks (the last a connect on the data path)",
        );
    }

    /// Re-admits backends whose hold-down is over.
    pub fn readmit(&mut self, now: Instant) {
        for li in 0..self.listeners.len() {
            let l = &mut self.listeners[li];
            let due: Vec<usize> = (0..l.backends.len())
                .filter(|&bi| l.backends[bi].readmit_at.is_some_and(|t| t <= now))
                .collect();
            if due.is_empty() {
                continue;
            }
            for bi in due {
                let b = &mut l.backends[bi];
                b.readmit_at = None;
                b.health = HealthState::new(true);
                b.why = Some("re-admitted after a hold-down (no active check)".into());
                let conf = &l.config.backends[bi];
                tracing::info!(listener = %l.config.name, "backend {} ({}) UP: re-admitted after {:?} out (no active check; failures on the data path take it out again)", conf.id, conf.addr_text, l.config.health.readmit_after());
            }
            self.publish(li);
        }
    }

    /// When the next hold-down ends.
    pub fn next_readmit(&self) -> Option<Instant> {
        self.listeners
            .iter()
            .flat_map(|l| l.backends.iter().filter_map(|b| b.readmit_at))
            .min()
    }

    /// Logs a health transition of backend `bi` of listener `li` and publishes it.
    fn transition(&mut self, li: usize, bi: usize, tr: Transition, why: Option<&str>, what: &str) {
        let l = &mut self.listeners[li];
        let fall_rise = match tr {
            Transition::Down => l.config.health.fall,
            Transition::Up => l.config.health.rise,
        };
        l.backends[bi].why = Some(match (tr, why) {
            (Transition::Down, Some(why)) => format!("down after {fall_rise} {what}: {why}"),
            (Transition::Down, None) => format!("down after {fall_rise} {what}"),
            (Transition::Up, _) => format!("up after {fall_rise} successful checks"),
        });
        let l = &self.listeners[li];
        let health = &l.config.health;
        let b = &l.config.backends[bi];
        let name = &l.config.name;
        match tr {
            Transition::Down => {
                tracing::warn!(listener = %name, "backend {} ({}) DOWN after {} {what}: {}", b.id, b.addr_text, health.fall, why.unwrap_or("?"));
            }
            Transition::Up => {
                tracing::info!(listener = %name, "backend {} ({}) UP after {} successful checks", b.id, b.addr_text, health.rise);
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
            self.listeners[li].backends[bi].why = Some(format!(
                "{} through the admin API",
                match admin {
                    Admin::Enabled => "enabled",
                    Admin::Draining => "drained",
                    Admin::Disabled => "disabled",
                }
            ));
            tracing::info!(listener = %listener, "backend {id}: admin state {before:?} -> {admin:?} (admin API)");
            self.publish(li);
        }
        let l = &self.listeners[li];
        Ok(status::backend(l, bi, l.shares()[bi], Instant::now()))
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
                reloads_ok: self.reloads.ok,
                reloads_failed: self.reloads.failed,
                last_reload_error: self.reloads.last_error.clone(),
            },
            listeners: self
                .listeners
                .iter()
                .map(|l| status::listener(l, &self.resolving.sets, Instant::now()))
                .collect(),
        }
    }

    /// The Prometheus text for a scrape.
    pub fn metrics(&self) -> String {
        let sample = Sample {
            listeners: self.listeners.iter().map(ListenerState::sample).collect(),
            reloads_ok: self.reloads.ok,
            reloads_failed: self.reloads.failed,
            access_log_dropped: self.access_log.dropped(),
            sets: self
                .listeners
                .iter()
                .flat_map(|l| {
                    l.config.backend_sets.iter().map(|s| SetSample {
                        listener: &l.config.name,
                        set: &s.name,
                        errors: self.resolving.sets.errors_of(&l.config.name, &s.name),
                        backends: l.config.set_members(&s.name).count(),
                    })
                })
                .collect(),
        };
        self.exporter.render(&sample)
    }

    /// TCP connections and UDP flows open now, all listeners together.
    pub fn open(&self) -> (usize, usize) {
        let mut open = (0, 0);
        for l in &self.listeners {
            let n = l.shared.active.load(std::sync::atomic::Ordering::Relaxed);
            match l.config.protocol {
                crate::config::Protocol::Tcp => open.0 += n,
                crate::config::Protocol::Udp => open.1 += n,
            }
        }
        open
    }
}

#[cfg(test)]
mod tests;
