//! The control plane's state and the operations on it: health results (active and
//! passive), re-admission after a hold-down, admin calls, publishing. Owned by one task
//! ([`super::actor`]); every method runs on it, in message order.
//!
//! Health and admin state belong to pools (a listener's own backends are a pool named
//! after it); listeners route to pools. Changes are published in batches: a health
//! transition marks its pool [`PoolState::pending`], and [`Control::flush`] publishes
//! each pending pool at most once every [`PUBLISH_GAP`] (an admin call or a reload
//! publishes at once), then the routing of every listener that uses it. With thousands
//! of backends failing their first checks together, that is one new routing per pool
//! per gap, not one per backend. `/status` and `/metrics` render from the [`View`]
//! flush stores, never from this state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::actor::Handle;
use super::backend::{Admin, LastCheck};
use super::listener::ListenerState;
use super::pool::PoolState;
use super::probes::{self, Outcome};
use super::reload::Reloads;
use super::resolver::Resolving;
use super::status::{self, BackendStatus};
use super::view::{ProcessView, Published, View, VIEW_GAP};
use crate::config::Config;
use crate::dataplane::{Command, PassiveFailure, WorkerControl};
use crate::health::state::{HealthState, Transition};
use crate::health::{AllDown, OnDown};

/// The shortest time between two publishes of one pool's routing while health results
/// come in.
pub const PUBLISH_GAP: Duration = Duration::from_millis(10);

/// How often pools whose passive failures did not fit in the channel are swept.
pub const SWEEP: Duration = Duration::from_millis(250);

/// Everything the control plane owns.
#[derive(Debug)]
pub struct Control {
    /// The running config (the last one applied).
    pub config: Config,
    /// Pools, in config order.
    pub pools: Vec<PoolState>,
    /// Listeners, in config order.
    pub listeners: Vec<ListenerState>,
    /// Command channels of the workers.
    pub workers: Vec<WorkerControl>,
    /// This task's own address: probes and background jobs report through it.
    pub me: Handle,
    /// The access log's writer (reloads reconfigure it).
    pub access_log: crate::accesslog::Control,
    /// Where workers send passive failures (handed to new pools).
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
    /// When a check that could not run was last logged, per pool.
    unknown_logged: HashMap<String, Instant>,
    /// The kernel-forwarding program is loaded (`forward = "kernel"` can be used).
    pub kernel: bool,
    /// The UDP kernel path is loaded (`forward = "kernel"` UDP listeners use it).
    udp_kernel: bool,
    /// Its program, while loaded.
    pub udp_program: Option<super::kernel::UdpProgram>,
    /// `[cluster]`: second chance and this node's place in the fleet.
    pub cluster: Option<super::cluster::Cluster>,
    /// Workers that stopped on their own (panicked).
    worker_failures: u64,
    /// The open files limit and the descriptors open before any traffic: what the
    /// split between the reserve and the workers is computed from, again after each
    /// reload (a reload that adds checked backends grows the reserve).
    pub fds: (u64, usize),
    /// How to start the next binary, and what upgrades did.
    pub upgrade: super::upgrade::old::Kit,
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No listener of that name.
    #[error("no listener named {0:?}")]
    NoListener(String),
    /// No pool of that name.
    #[error("no pool named {0:?}")]
    NoPool(String),
    /// No backend of that id where it was looked for.
    #[error("{place} has no backend with id {id:?}")]
    NoBackend {
        /// `listener "x"` or `pool "y"`.
        place: String,
        /// Backend id asked for.
        id: String,
    },
    /// The listener routes to several pools with a backend of that id.
    #[error("listener {listener:?} routes to several pools with a backend {id:?} ({pools}): name the pool (/pools/NAME/backends/{id}/...)")]
    Ambiguous {
        /// Listener name.
        listener: String,
        /// Backend id asked for.
        id: String,
        /// The pools.
        pools: String,
    },
}

impl Control {
    /// The state for `config` with its listeners built.
    pub fn new(
        config: Config,
        (pools, listeners): (Vec<PoolState>, Vec<ListenerState>),
        workers: Vec<WorkerControl>,
        (me, access_log): (Handle, crate::accesslog::Control),
        passive: crate::dataplane::PassiveSender,
        resolving: Resolving,
    ) -> Control {
        let now = Instant::now();
        let published = Arc::clone(me.published());
        let mut c = Control {
            config,
            pools,
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
            udp_kernel: false,
            udp_program: None,
            cluster: None,
            worker_failures: 0,
            fds: (0, 0),
            upgrade: super::upgrade::old::Kit::new(0),
        };
        c.publish_view(now);
        c
    }

    /// Starts a probe for every checked backend that has none.
    pub fn start_probes(&mut self) {
        for p in &mut self.pools {
            if !p.config.health.active() {
                continue;
            }
            for (b, conf) in p.backends.iter_mut().zip(&p.config.backends) {
                if b.probe.is_none() && b.looped.is_none() {
                    let waiting = b.health.is_unconfirmed() && !b.health.is_up();
                    b.probe = Some(probes::spawn(
                        Arc::clone(&b.stats),
                        (conf.addr, waiting),
                        p.config.health.clone(),
                        self.me.clone(),
                    ));
                }
            }
        }
    }

    /// The pool and backend a report is about (by identity: a report about a backend a
    /// reload has replaced since finds nothing and is ignored).
    fn locate(
        &self,
        backend: &Arc<crate::dataplane::stats::BackendStats>,
    ) -> Option<(usize, usize)> {
        let pi = self
            .pools
            .iter()
            .position(|p| Arc::ptr_eq(&p.shared, &backend.pool))?;
        let bi = self.pools[pi].backend_of(backend)?;
        Some((pi, bi))
    }

    /// Applies one active check result.
    pub fn on_checked(&mut self, o: Outcome, now: Instant) {
        let Some((pi, bi)) = self.locate(&o.backend) else {
            return;
        };
        let p = &mut self.pools[pi];
        p.backends[bi].last_check = Some(LastCheck {
            result: match &o.result {
                Ok(()) => "success",
                Err(e) if e.is_local() => "unknown",
                Err(_) => "failure",
            },
            error: o.result.as_ref().err().map(|e| Arc::from(e.to_string())),
            took: o.took,
            at: now,
        });
        p.view_stale = true;
        match o.result {
            Err(e) if e.is_local() => {
                // No evidence about the backend: counted, logged once per interval.
                p.backends[bi].checks_unknown += 1;
                let name = &p.config.name;
                let every = p.config.health.interval;
                let last = self.unknown_logged.get(name);
                if last.is_none_or(|t| now.duration_since(*t) >= every) {
                    self.unknown_logged.insert(name.clone(), now);
                    tracing::warn!(pool = %name, "health check of backend {} could not run: {e}; counted as unknown, not as a failure", o.backend.id);
                }
            }
            result => {
                p.backends[bi].check_durations.record(o.took.as_secs_f64());
                let first = p.backends[bi].health.is_unconfirmed();
                let Some(tr) = p.observe(bi, result.is_ok()) else {
                    return;
                };
                let health = &p.config.health;
                let reason = match (tr, &result) {
                    (_, Err(e)) if first => format!("after its first check failed: {e}"),
                    (_, Ok(())) if first => "after its first check passed".to_string(),
                    (_, Err(e)) => format!("after {} failed checks: {e}", health.fall),
                    (_, Ok(())) => format!("after {} successful checks", health.rise),
                };
                self.transition(pi, bi, tr, reason);
            }
        }
    }

    /// Takes the failures a backend saw on the data path (refused or timed-out
    /// connects, ICMP errors; see [`crate::dataplane::passive`]): each counts as a
    /// failed check. Where no active check can bring the backend back, it is
    /// re-admitted after a hold-down.
    pub fn on_passive(&mut self, p: PassiveFailure, now: Instant) {
        let Some((pi, bi)) = self.locate(&p.backend) else {
            // A backend a reload replaced: its count goes with it.
            p.backend.failures.take();
            return;
        };
        self.take_failures(pi, bi, now);
    }

    /// Applies what backend `bi` of pool `pi` counted on the data path.
    fn take_failures(&mut self, pi: usize, bi: usize, now: Instant) {
        let (n, error) = self.pools[pi].backends[bi].stats.failures.take();
        let p = &mut self.pools[pi];
        if n == 0 || !p.config.health.passive {
            return;
        }
        p.backends[bi].passive_failures += u64::from(n);
        p.view_stale = true;
        let at = now.duration_since(self.started);
        let Some(tr) = (0..n).find_map(|_| p.observe_passive(bi, at)) else {
            return;
        };
        if !p.config.health.active() {
            p.backends[bi].readmit_at = Some(now + p.config.health.readmit_after());
        }
        let fall = p.config.health.fall;
        let reason =
            format!("after {fall} failed checks (the last a connect on the data path): {error}");
        self.transition(pi, bi, tr, reason);
    }

    /// Takes the failures of pools whose messages did not fit in the channel.
    pub fn sweep_passive(&mut self, now: Instant) {
        for pi in 0..self.pools.len() {
            if !self.pools[pi].shared.lost.take() {
                continue;
            }
            for bi in 0..self.pools[pi].backends.len() {
                if self.pools[pi].backends[bi].stats.failures.pending() > 0 {
                    self.take_failures(pi, bi, now);
                }
            }
        }
    }

    /// Re-admits backends whose hold-down is over.
    pub fn readmit(&mut self, now: Instant) {
        for pi in 0..self.pools.len() {
            let p = &mut self.pools[pi];
            let due: Vec<usize> = (0..p.backends.len())
                .filter(|&bi| p.backends[bi].readmit_at.is_some_and(|t| t <= now))
                .collect();
            if due.is_empty() {
                continue;
            }
            for bi in due {
                let b = &mut p.backends[bi];
                b.readmit_at = None;
                b.health = HealthState::new(true);
                b.why = Some(Arc::from("re-admitted after a hold-down (no active check)"));
                let conf = &p.config.backends[bi];
                tracing::info!(pool = %p.config.name, "backend {} ({}) UP: re-admitted after {:?} out (no active check; failures on the data path take it out again)", conf.id, conf.addr_text, p.config.health.readmit_after());
            }
            self.publish(pi);
        }
    }

    /// When the next hold-down ends.
    pub fn next_readmit(&self) -> Option<Instant> {
        self.pools
            .iter()
            .flat_map(|p| p.backends.iter().filter_map(|b| b.readmit_at))
            .min()
    }

    /// Logs a health transition of backend `bi` of pool `pi` (`reason`: why, for the
    /// log and `/status`) and marks the pool to be published.
    fn transition(&mut self, pi: usize, bi: usize, tr: Transition, reason: String) {
        let p = &mut self.pools[pi];
        let b = &p.config.backends[bi];
        let name = &p.config.name;
        match tr {
            Transition::Down => {
                tracing::warn!(pool = %name, "backend {} ({}) DOWN {reason}", b.id, b.addr_text);
            }
            Transition::Up => {
                tracing::info!(pool = %name, "backend {} ({}) UP {reason}", b.id, b.addr_text);
            }
        }
        let state = match tr {
            Transition::Down => "down",
            Transition::Up => "up",
        };
        p.backends[bi].why = Some(Arc::from(format!("{state} {reason}").as_str()));
        if !p.backends.iter().any(|b| b.health.is_up()) {
            match p.config.health.all_down {
                AllDown::Reject => {
                    tracing::error!(pool = %name, "every backend is down: new connections are refused")
                }
                AllDown::UseAll => {
                    tracing::error!(pool = %name, "every backend is down: using all of them (all_down = \"use-all\")")
                }
            }
        }
        self.publish(pi);
    }

    /// Marks pool `pi` to be published by the next [`Control::flush`].
    pub fn publish(&mut self, pi: usize) {
        self.pools[pi].pending = true;
    }

    /// Publishes every pending pool whose last publish is [`PUBLISH_GAP`] old, and the
    /// view when it is stale (at most every [`VIEW_GAP`]); returns when to come back
    /// for what had to wait.
    pub fn flush(&mut self, now: Instant) -> Option<Instant> {
        let mut again: Option<Instant> = None;
        let mut later = |at: Instant| again = Some(again.map_or(at, |a| a.min(at)));
        for p in &mut self.pools {
            // A backend ramping up (`slow_start`): the next step of its ramp.
            if !p.pending && p.ramping() {
                let due = p.published_at + super::pool::RAMP_STEP;
                if now >= due {
                    p.pending = true;
                } else {
                    later(due);
                }
            }
        }
        for pi in 0..self.pools.len() {
            let p = &self.pools[pi];
            if !p.pending {
                continue;
            }
            let due = p.published_at + PUBLISH_GAP;
            if now >= due {
                self.publish_now(pi);
            } else {
                later(due);
            }
        }
        let stale =
            self.pools.iter().any(|p| p.view_stale) || self.listeners.iter().any(|l| l.view_stale);
        if stale {
            let due = self.view_at + VIEW_GAP;
            if now >= due {
                self.publish_view(now);
            } else {
                later(due);
            }
        }
        again
    }

    /// Publishes pool `pi`'s routing now, and the routing of every listener that uses
    /// it; with `on_down = "close"`, tells workers to close connections to backends
    /// that just went down.
    pub fn publish_now(&mut self, pi: usize) {
        let down = self.pools[pi].publish();
        if self.pools[pi].config.health.on_down == OnDown::Close {
            for backend in down {
                for w in &self.workers {
                    let _ = w.send(Command::CloseBackend {
                        backend: Arc::clone(&backend),
                    });
                }
            }
        }
        for l in self.listeners.iter_mut().filter(|l| l.uses(pi)) {
            l.publish(&self.pools);
        }
    }

    /// Sets backend `id` of the pool listener `listener` routes it to (the one pool it
    /// routes to with such a backend) to `admin`; returns its new status.
    pub fn set_admin(
        &mut self,
        listener: &str,
        id: &str,
        admin: Admin,
    ) -> Result<BackendStatus, AdminError> {
        let l = self
            .listeners
            .iter()
            .find(|l| l.config.name == listener)
            .ok_or_else(|| AdminError::NoListener(listener.to_string()))?;
        let with: Vec<usize> = (0..self.pools.len())
            .filter(|&pi| l.uses(pi) && self.pools[pi].backend_index(id).is_some())
            .collect();
        match with.as_slice() {
            [] => Err(AdminError::NoBackend {
                place: format!("listener {listener:?}"),
                id: id.to_string(),
            }),
            [pi] => self.set_admin_in(*pi, id, admin),
            many => Err(AdminError::Ambiguous {
                listener: listener.to_string(),
                id: id.to_string(),
                pools: many
                    .iter()
                    .map(|&pi| self.pools[pi].config.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Sets backend `id` of pool `pool` to `admin`; returns its new status.
    pub fn set_pool_admin(
        &mut self,
        pool: &str,
        id: &str,
        admin: Admin,
    ) -> Result<BackendStatus, AdminError> {
        let pi = self
            .pools
            .iter()
            .position(|p| p.config.name == pool)
            .ok_or_else(|| AdminError::NoPool(pool.to_string()))?;
        self.set_admin_in(pi, id, admin)
    }

    fn set_admin_in(
        &mut self,
        pi: usize,
        id: &str,
        admin: Admin,
    ) -> Result<BackendStatus, AdminError> {
        let name = self.pools[pi].config.name.clone();
        let bi = self.pools[pi]
            .backend_index(id)
            .ok_or_else(|| AdminError::NoBackend {
                place: format!("pool {name:?}"),
                id: id.to_string(),
            })?;
        let b = &mut self.pools[pi].backends[bi];
        let before = b.admin;
        if before != admin {
            b.admin = admin;
            let what = match admin {
                Admin::Enabled => "enabled",
                Admin::Draining => "drained",
                Admin::Disabled => "disabled",
            };
            b.why = Some(Arc::from(format!("{what} through the admin API").as_str()));
            tracing::info!(pool = %name, "backend {id}: admin state {before:?} -> {admin:?} (admin API)");
            self.publish_now(pi);
            // The answer, and the next GET /status, show the new state.
            self.publish_view(Instant::now());
        }
        let view = self.pool_view(pi);
        Ok(status::backend(
            &view,
            bi,
            &view.routing.snapshot.shares(),
            Instant::now(),
        ))
    }

    /// Pool `pi`'s view now.
    fn pool_view(&self, pi: usize) -> super::view::PoolView {
        let users = self
            .listeners
            .iter()
            .filter(|l| l.uses(pi))
            .map(|l| l.config.name.clone())
            .collect();
        self.pools[pi].view(&self.resolving.sets, users)
    }

    /// Publishes the view `/status` and `/metrics` render from: pools and listeners
    /// whose view is stale get a new one, the others keep theirs.
    pub fn publish_view(&mut self, now: Instant) {
        let previous = self.published.load();
        let mut pools = Vec::with_capacity(self.pools.len());
        for pi in 0..self.pools.len() {
            let kept = previous.pools.get(pi).filter(|v| {
                !self.pools[pi].view_stale && Arc::ptr_eq(&v.routing.shared, &self.pools[pi].shared)
            });
            pools.push(match kept {
                Some(v) => Arc::clone(v),
                None => Arc::new(self.pool_view(pi)),
            });
            self.pools[pi].view_stale = false;
        }
        let udp_kernel = self.udp_kernel;
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
                    None => Arc::new(l.view(udp_kernel)),
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
                upgrades: (
                    self.upgrade.succeeded,
                    self.upgrade.failed,
                    self.upgrade.last,
                ),
                carried: self.upgrade.carried.clone(),
                cluster: self.cluster.as_ref().map(super::cluster::Cluster::view),
            },
            listeners,
            pools,
        });
        self.view_at = now;
    }

    /// A worker stopped on its own: counted (`ringway_worker_panics_total`), shown at
    /// once (the process is draining now).
    pub fn worker_failed(&mut self) {
        self.worker_failures += 1;
        self.publish_view(Instant::now());
    }

    /// Whether this process has the UDP kernel path.
    pub fn udp_kernel(&self) -> bool {
        self.udp_kernel
    }

    /// Says whether this process has the UDP kernel path (its listeners' views show it).
    pub fn set_udp_kernel(&mut self, loaded: bool) {
        self.udp_kernel = loaded;
        for l in &mut self.listeners {
            l.view_stale = true;
        }
    }

    /// Publishes every pending pool and the view now (a reload's answer is read by
    /// someone who looks at `/status` next).
    pub fn publish_all_now(&mut self) {
        for pi in 0..self.pools.len() {
            if self.pools[pi].pending {
                self.publish_now(pi);
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
