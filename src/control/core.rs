//! The control plane's state and the operations on it: health results (active and
//! passive), re-admission after a hold-down, admin calls, publishing. Owned by one task
//! ([`super::actor`]); every method runs on it, in message order.
//!
//! Changes are published in batches: a health transition marks its listener
//! [`ListenerState::pending`], and [`Control::flush`] publishes each pending listener
//! at most once every [`PUBLISH_GAP`] (an admin call or a reload publishes at once).
//! With thousands of backends failing their first checks together, that is one new
//! routing per listener per gap, not one per backend. `/status` and `/metrics` render
//! from the [`View`] flush stores, never from this state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::actor::Handle;
use super::probes::{self, Outcome};
use super::reload::Reloads;
use super::resolver::Resolving;
use super::state::{Admin, LastCheck, ListenerState};
use super::status::{self, BackendStatus};
use super::view::{ProcessView, Published, View, VIEW_GAP};
use crate::config::Config;
use crate::dataplane::{Command, PassiveFailure, WorkerControl};
use crate::health::state::{HealthState, Transition};
use crate::health::{AllDown, OnDown};

/// The shortest time between two publishes of one listener's routing while health
/// results come in.
pub const PUBLISH_GAP: Duration = Duration::from_millis(10);

/// How often listeners whose passive failures did not fit in the channel are swept.
pub const SWEEP: Duration = Duration::from_millis(250);

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
    pub passive: crate::dataplane::PassiveSender,
    /// Where views for `/status` and `/metrics` go (and the Prometheus recorder).
    pub published: Arc<Published>,
    /// When the view was last published.
    view_at: Instant,
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
    /// Workers that stopped on their own (panicked).
    worker_failures: u64,
    /// The open files limit and the descriptors open before any traffic: what the
    /// split between the reserve and the workers is computed from, again after each
    /// reload (a reload that adds checked backends grows the reserve).
    pub fds: (u64, usize),
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

impl Control {
    /// The state for `config` with its listeners built.
    pub fn new(
        config: Config,
        listeners: Vec<ListenerState>,
        workers: Vec<WorkerControl>,
        (me, access_log): (Handle, crate::accesslog::Control),
        passive: crate::dataplane::PassiveSender,
        resolving: Resolving,
    ) -> Control {
        let now = Instant::now();
        let published = Arc::clone(me.published());
        let mut c = Control {
            config,
            listeners,
            workers,
            me,
            access_log,
            passive,
            published,
            view_at: now,
            reloads: Reloads::default(),
            resolving,
            started: now,
            unknown_logged: HashMap::new(),
            kernel: false,
            worker_failures: 0,
            fds: (0, 0),
        };
        c.publish_view(now);
        c
    }

    /// Starts a probe for every checked backend that has none.
    pub fn start_probes(&mut self) {
        for l in &mut self.listeners {
            if !l.config.health.active() {
                continue;
            }
            for (b, conf) in l.backends.iter_mut().zip(&l.config.backends) {
                if b.probe.is_none() && b.looped.is_none() {
                    let waiting = b.health.is_unconfirmed() && !b.health.is_up();
                    b.probe = Some(probes::spawn(
                        Arc::clone(&l.shared),
                        Arc::clone(&b.stats),
                        (conf.addr, waiting),
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
            error: o.result.as_ref().err().map(|e| Arc::from(e.to_string())),
            took: o.took,
            at: now,
        });
        l.view_stale = true;
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
                l.backends[bi].check_durations.record(o.took.as_secs_f64());
                let first = l.backends[bi].health.is_unconfirmed();
                let Some(tr) = l.observe(bi, result.is_ok()) else {
                    return;
                };
                let health = &l.config.health;
                let reason = match (tr, &result) {
                    (_, Err(e)) if first => format!("after its first check failed: {e}"),
                    (_, Ok(())) if first => "after its first check passed".to_string(),
                    (_, Err(e)) => format!("after {} failed checks: {e}", health.fall),
                    (_, Ok(())) => format!("after {} successful checks", health.rise),
                };
                self.transition(li, bi, tr, reason);
            }
        }
    }

    /// Takes the failures a backend saw on the data path (refused or timed-out
    /// connects, ICMP errors; see [`crate::dataplane::passive`]): each counts as a
    /// failed check. Where no active check can bring the backend back, it is
    /// re-admitted after a hold-down.
    pub fn on_passive(&mut self, p: PassiveFailure, now: Instant) {
        let Some((li, bi)) = self.locate(&p.listener, &p.backend) else {
            // A backend a reload replaced: its count goes with it.
            p.backend.failures.take();
            return;
        };
        self.take_failures(li, bi, now);
    }

    /// Applies what backend `bi` of listener `li` counted on the data path.
    fn take_failures(&mut self, li: usize, bi: usize, now: Instant) {
        let (n, error) = self.listeners[li].backends[bi].stats.failures.take();
        let l = &mut self.listeners[li];
        if n == 0 || !l.config.health.passive {
            return;
        }
        l.backends[bi].passive_failures += u64::from(n);
        l.view_stale = true;
        let at = now.duration_since(self.started);
        let Some(tr) = (0..n).find_map(|_| l.observe_passive(bi, at)) else {
            return;
        };
        if !l.config.health.active() {
            l.backends[bi].readmit_at = Some(now + l.config.health.readmit_after());
        }
        let fall = l.config.health.fall;
        let reason =
            format!("after {fall} failed checks (the last a connect on the data path): {error}");
        self.transition(li, bi, tr, reason);
    }

    /// Takes the failures of listeners whose messages did not fit in the channel.
    pub fn sweep_passive(&mut self, now: Instant) {
        for li in 0..self.listeners.len() {
            if !self.listeners[li].shared.passive_lost.take() {
                continue;
            }
            for bi in 0..self.listeners[li].backends.len() {
                if self.listeners[li].backends[bi].stats.failures.pending() > 0 {
                    self.take_failures(li, bi, now);
                }
            }
        }
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
                b.why = Some(Arc::from("re-admitted after a hold-down (no active check)"));
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

    /// Logs a health transition of backend `bi` of listener `li` (`reason`: why, for
    /// the log and `/status`) and marks the listener to be published.
    fn transition(&mut self, li: usize, bi: usize, tr: Transition, reason: String) {
        let l = &mut self.listeners[li];
        let b = &l.config.backends[bi];
        let name = &l.config.name;
        match tr {
            Transition::Down => {
                tracing::warn!(listener = %name, "backend {} ({}) DOWN {reason}", b.id, b.addr_text);
            }
            Transition::Up => {
                tracing::info!(listener = %name, "backend {} ({}) UP {reason}", b.id, b.addr_text);
            }
        }
        let state = match tr {
            Transition::Down => "down",
            Transition::Up => "up",
        };
        l.backends[bi].why = Some(Arc::from(format!("{state} {reason}").as_str()));
        if !l.backends.iter().any(|b| b.health.is_up()) {
            match l.config.health.all_down {
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

    /// Marks listener `li` to be published by the next [`Control::flush`].
    pub fn publish(&mut self, li: usize) {
        self.listeners[li].pending = true;
    }

    /// Publishes every pending listener whose last publish is [`PUBLISH_GAP`] old, and
    /// the view when it is stale (at most every [`VIEW_GAP`]); returns when to come
    /// back for what had to wait.
    pub fn flush(&mut self, now: Instant) -> Option<Instant> {
        let mut again: Option<Instant> = None;
        let mut later = |at: Instant| again = Some(again.map_or(at, |a| a.min(at)));
        for li in 0..self.listeners.len() {
            let l = &self.listeners[li];
            if !l.pending {
                continue;
            }
            let due = l.published_at + PUBLISH_GAP;
            if now >= due {
                self.publish_now(li);
            } else {
                later(due);
            }
        }
        if self.listeners.iter().any(|l| l.view_stale) {
            let due = self.view_at + VIEW_GAP;
            if now >= due {
                self.publish_view(now);
            } else {
                later(due);
            }
        }
        again
    }

    /// Publishes listener `li`'s routing now; with `on_down = "close"`, tells workers
    /// to close connections to backends that just went down.
    pub fn publish_now(&mut self, li: usize) {
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
            let what = match admin {
                Admin::Enabled => "enabled",
                Admin::Draining => "drained",
                Admin::Disabled => "disabled",
            };
            self.listeners[li].backends[bi].why =
                Some(Arc::from(format!("{what} through the admin API").as_str()));
            tracing::info!(listener = %listener, "backend {id}: admin state {before:?} -> {admin:?} (admin API)");
            self.publish_now(li);
            // The answer, and the next GET /status, show the new state.
            self.publish_view(Instant::now());
        }
        let view = self.listeners[li].view(&self.resolving.sets);
        Ok(status::backend(
            &view,
            bi,
            &view.routing.snapshot.shares(),
            Instant::now(),
        ))
    }

    /// Publishes the view `/status` and `/metrics` render from: listeners whose view
    /// is stale get a new one, the others keep theirs.
    pub fn publish_view(&mut self, now: Instant) {
        let previous = self.published.load();
        let listeners = self
            .listeners
            .iter_mut()
            .enumerate()
            .map(|(i, l)| {
                let kept = previous
                    .listeners
                    .get(i)
                    .filter(|v| !l.view_stale && Arc::ptr_eq(&v.shared, &l.shared));
                l.view_stale = false;
                match kept {
                    Some(v) => Arc::clone(v),
                    None => Arc::new(l.view(&self.resolving.sets)),
                }
            })
            .collect();
        self.published.store(View {
            process: ProcessView {
                started: self.started,
                workers: self.workers.len(),
                config: self.config.path.display().to_string(),
                reloads_ok: self.reloads.ok,
                reloads_failed: self.reloads.failed,
                last_reload_error: self.reloads.last_error.clone(),
                access_log: Some(self.access_log.clone()),
                worker_failures: self.worker_failures,
            },
            listeners,
        });
        self.view_at = now;
    }

    /// A worker stopped on its own: counted (`ringway_worker_panics_total`), shown at
    /// once (the process is draining now).
    pub fn worker_failed(&mut self) {
        self.worker_failures += 1;
        self.publish_view(Instant::now());
    }

    /// Publishes every pending listener and the view now (a reload's answer is read
    /// by someone who looks at `/status` next).
    pub fn publish_all_now(&mut self) {
        for li in 0..self.listeners.len() {
            if self.listeners[li].pending {
                self.publish_now(li);
            }
        }
        self.publish_view(Instant::now());
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
