//! What `/status`, the status page and `/metrics` render from: a copy of the control
//! plane's state that the control task publishes, and the renderers that run on the
//! blocking pool.
//!
//! Rendering the status of thousands of backends takes tens of milliseconds; if it ran
//! on the control task (or on its thread), a scrape would hold up health results, admin
//! calls and publishing, and a flood of scrapes would stop them. So the control task
//! only copies what changed into a [`View`] (at most every [`VIEW_GAP`] while checks
//! come in; at once after an admin call or a reload) and stores it in an `ArcSwap`;
//! an HTTP handler loads the latest view and renders it on the blocking pool, at most
//! [`RENDERS`] at a time (so memory stays bounded however many scrapers come). Data-
//! plane counters are read live from the shared atomics as they are rendered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::backend::{Admin, LastCheck};
use crate::balance::Backend;
use crate::config::Protocol;
use crate::dataplane::stats::BackendStats;
use crate::dataplane::{ListenerShared, PoolRouting};

/// The shortest time between two views while only check results change them.
pub const VIEW_GAP: Duration = Duration::from_millis(50);

/// Renders running at once (the rest wait their turn).
pub const RENDERS: usize = 2;

/// Everything `/status` and `/metrics` show.
#[derive(Debug)]
pub struct View {
    /// The process.
    pub process: ProcessView,
    /// Listeners, in config order.
    pub listeners: Vec<Arc<ListenerView>>,
    /// Pools, in config order (each listener's own, then the `[[pool]]`s).
    pub pools: Vec<Arc<PoolView>>,
}

impl View {
    /// Pool `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolView> {
        self.pools.iter().find(|p| p.name == name).map(|p| &**p)
    }
}

/// The process part of a view.
#[derive(Debug, Clone)]
pub struct ProcessView {
    /// When ringway started.
    pub started: Instant,
    /// Worker threads.
    pub workers: usize,
    /// The config file.
    pub config: String,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads rejected.
    pub reloads_failed: u64,
    /// Why the last reload was rejected.
    pub last_reload_error: Option<String>,
    /// Access-log records lost, by reason (live counters).
    pub access_log: Option<crate::accesslog::Control>,
    /// Workers that stopped on their own (panicked).
    pub worker_failures: u64,
    /// Upgrades: succeeded (this process's own start included), failed here, and how
    /// long the last hand-off took.
    pub upgrades: (u64, u64, Option<std::time::Duration>),
    /// What the processes before this one counted (`/metrics` carries it on).
    pub carried: Option<Arc<crate::metrics::carry::Offsets>>,
    /// `[cluster]`, when configured.
    pub cluster: Option<super::cluster::ClusterView>,
}

/// One listener in a view.
#[derive(Debug)]
pub struct ListenerView {
    /// Name.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// How it forwards (`/status` `forward`).
    pub forward: &'static str,
    /// Listen address.
    pub listen: SocketAddr,
    /// Shared with the workers: live counters.
    pub shared: Arc<ListenerShared>,
    /// How it picks a pool.
    pub route: RouteView,
    /// Its own pool's name (the listener's), when it has backends of its own.
    pub own: Option<String>,
}

/// A listener's routing as `/status` shows it.
#[derive(Debug, Clone)]
pub struct RouteView {
    /// `none` or `sni`.
    pub by: &'static str,
    /// Where what no route takes goes.
    pub default_pool: Option<String>,
    /// Each route's names and pool.
    pub rules: Vec<(Vec<String>, String)>,
}

/// One pool in a view.
#[derive(Debug)]
pub struct PoolView {
    /// Name.
    pub name: String,
    /// The listener whose own backends it is, if it is.
    pub owner: Option<String>,
    /// The protocol of its listeners.
    pub protocol: Protocol,
    /// The routing published when the view was taken (ring, shares).
    pub routing: Arc<PoolRouting>,
    /// Key space moved at the last ring change.
    pub remapped: f64,
    /// Actively checked.
    pub checked: bool,
    /// The backends as configured or discovered, in order.
    pub backends: Arc<[Backend]>,
    /// Their control-plane state, in the same order.
    pub states: Vec<BackendView>,
    /// `backend_set`s.
    pub sets: Vec<SetView>,
    /// The listeners that route to it.
    pub listeners: Vec<String>,
}

/// One backend's control-plane state in a view.
#[derive(Debug, Clone)]
pub struct BackendView {
    /// Counters (live).
    pub stats: Arc<BackendStats>,
    /// `up`, `down` or `draining`.
    pub state: &'static str,
    /// Since when.
    pub since: Instant,
    /// Time down before that (ended down periods).
    pub down_before: std::time::Duration,
    /// Why, when known.
    pub reason: Option<Arc<str>>,
    /// Health checks' verdict.
    pub health_up: bool,
    /// Operator's setting.
    pub admin: Admin,
    /// Healthy and not disabled.
    pub up: bool,
    /// Failures seen on the data path.
    pub passive_failures: u64,
    /// Active checks passed.
    pub checks_ok: u64,
    /// Active checks failed.
    pub checks_failed: u64,
    /// Active checks that could not run here.
    pub checks_unknown: u64,
    /// Transitions to up.
    pub to_up: u64,
    /// Transitions to down.
    pub to_down: u64,
    /// The last active check.
    pub last_check: Option<LastCheck>,
    /// Durations of its active checks.
    pub check_durations: crate::metrics::Histogram,
}

/// One `backend_set` in a view.
#[derive(Debug, Clone)]
pub struct SetView {
    /// What it asks.
    pub name: String,
    /// `srv` or `dns`.
    pub kind: &'static str,
    /// Backends it gives now.
    pub backends: usize,
    /// Failed and NXDOMAIN answers since start.
    pub errors: u64,
    /// Addresses left out of answers (not allowed, or past `max_backends`).
    pub refused: u64,
}

/// Where views are published and how they are rendered; shared by the control task
/// (which stores) and the HTTP handlers (which load and render).
#[derive(Debug)]
pub struct Published {
    view: ArcSwap<View>,
    renders: Semaphore,
}

impl Published {
    /// Starts with `view`.
    pub fn new(view: View) -> Published {
        Published {
            view: ArcSwap::from_pointee(view),
            renders: Semaphore::new(RENDERS),
        }
    }

    /// Publishes a new view.
    pub fn store(&self, view: View) {
        self.view.store(Arc::new(view));
    }

    /// The latest view.
    pub fn load(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Renders the latest view with `render` on the blocking pool, waiting for a turn;
    /// `None` when the runtime is shutting down.
    pub async fn render<T: Send + 'static>(
        self: &Arc<Self>,
        render: impl FnOnce(&View) -> T + Send + 'static,
    ) -> Option<T> {
        let _turn = self.renders.acquire().await.ok()?;
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let view = me.load();
            let out = render(&view);
            drop(view);
            // What the render allocated is freed: give it back (see `sys::heap`).
            crate::sys::heap::trim();
            out
        })
        .await
        .ok()
    }
}

/// `GET /status` as JSON (compact: with thousands of backends, pretty printing doubles
/// its size; with a final newline).
pub fn status_json(view: &View) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = serde_json::to_vec(&super::status::status(view, Instant::now()))?;
    body.push(b'\n');
    Ok(body)
}

/// `GET /metrics`: the view's figures and the live counters, as Prometheus text.
pub fn metrics_text(view: &View) -> String {
    use crate::metrics::{BackendSample, ListenerSample, PoolSample, Sample, SetSample};
    let p = &view.process;
    let sample = Sample {
        listeners: view
            .listeners
            .iter()
            .map(|l| ListenerSample {
                name: &l.name,
                udp: l.protocol == Protocol::Udp,
                active: l.shared.active.load(std::sync::atomic::Ordering::Relaxed),
                stats: &l.shared.stats,
            })
            .collect(),
        pools: view
            .pools
            .iter()
            .map(|pool| {
                let shares = pool.routing.snapshot.shares();
                PoolSample {
                    name: &pool.name,
                    owner: pool.owner.as_deref(),
                    remapped: pool.remapped,
                    backends: pool
                        .states
                        .iter()
                        .enumerate()
                        .map(|(i, b)| BackendSample {
                            stats: &b.stats,
                            up: b.up,
                            share: shares.get(i).copied().unwrap_or(0.0),
                            checks_ok: b.checks_ok,
                            checks_failed: b.checks_failed,
                            checks_unknown: b.checks_unknown,
                            to_up: b.to_up,
                            to_down: b.to_down,
                            check_durations: pool.checked.then_some(&b.check_durations),
                        })
                        .collect(),
                    sets: pool
                        .sets
                        .iter()
                        .map(|s| SetSample {
                            set: &s.name,
                            errors: s.errors,
                            refused: s.refused,
                            backends: s.backends,
                        })
                        .collect(),
                }
            })
            .collect(),
        reloads_ok: p.reloads_ok,
        reloads_failed: p.reloads_failed,
        worker_panics: p.worker_failures,
        upgrades: p.upgrades,
        access_log_lost: p
            .access_log
            .as_ref()
            .map(|a| a.lost().map(|(why, n)| (why.reason(), n)))
            .unwrap_or(crate::accesslog::Lost::ALL.map(|why| (why.reason(), 0))),
        carried: p.carried.as_deref(),
        cluster: p.cluster.as_ref().map(super::cluster::ClusterView::sample),
    };
    crate::metrics::render(&sample)
}

impl View {
    /// Nothing yet (until the control task publishes its first view).
    pub fn empty() -> View {
        View {
            process: ProcessView {
                started: Instant::now(),
                workers: 0,
                config: String::new(),
                reloads_ok: 0,
                reloads_failed: 0,
                last_reload_error: None,
                access_log: None,
                worker_failures: 0,
                upgrades: (0, 0, None),
                carried: None,
                cluster: None,
            },
            listeners: Vec::new(),
            pools: Vec::new(),
        }
    }
}
