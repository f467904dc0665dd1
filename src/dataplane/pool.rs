//! What workers read of a pool: its shared identity ([`PoolShared`]: name, whether
//! data-path failures are health results, the channel they go by) and its current
//! routing ([`PoolRouting`]: backends, ring and states, replaced whole by the control
//! plane). A pool serves every listener that routes to it; each listener's
//! [`super::Routing`] holds the routings of its pools.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::load::{Least, Open};
use super::passive;
use super::stats::BackendStats;
use super::table::BackendTable;
use crate::balance::least::LeastTree;
use crate::balance::{Loads, Policy, Snapshot};

/// One pool's identity, shared by the control plane, its backends' counters and every
/// worker: it outlives routings and reloads that keep the pool.
#[derive(Debug)]
pub struct PoolShared {
    /// Its name (for a listener's own backends, the listener's).
    pub name: Arc<str>,
    /// Data-path failures count as failed checks (`health.passive`; a reload may
    /// change it).
    passive: AtomicBool,
    /// Where passive failures go.
    sender: PassiveSender,
    /// Set when a passive failure's message did not fit in the channel.
    pub lost: passive::Lost,
    /// Connections or flows open to its backends now, every worker together.
    pub open: Open,
    /// Round-robin turns taken.
    turns: AtomicU64,
    /// `balance = "least-connections"`: the min-tree of the routing published last,
    /// which counts update.
    least: ArcSwapOption<Least>,
}

impl PoolShared {
    /// A pool called `name` whose failures go to `sender` when `passive`.
    pub fn new(name: &str, passive: bool, sender: PassiveSender) -> PoolShared {
        PoolShared {
            name: name.into(),
            passive: AtomicBool::new(passive),
            sender,
            lost: passive::Lost::default(),
            open: Open::default(),
            turns: AtomicU64::new(0),
            least: ArcSwapOption::empty(),
        }
    }

    /// A pool whose failures go nowhere (tests, benches).
    pub fn detached(name: &str) -> Arc<PoolShared> {
        let (sender, _) = passive_channel();
        Arc::new(PoolShared::new(name, false, sender))
    }

    /// Sets whether data-path failures count (a reload changed `health.passive`).
    pub fn set_passive(&self, on: bool) {
        self.passive.store(on, Ordering::Relaxed);
    }

    /// Puts `least` in place as the tree counts update (`None` when the pool does
    /// not balance by least connections), and brings it up to date.
    pub fn set_least(&self, least: Option<Arc<Least>>) {
        self.least.store(least.clone());
        if let Some(l) = least {
            l.refresh_all();
        }
    }

    /// Backend `stats`'s open count changed: its leaf in the least-connections tree.
    #[inline]
    pub(super) fn least_changed(&self, stats: &Arc<BackendStats>) {
        if let Some(l) = &*self.least.load() {
            l.changed(stats);
        }
    }

    /// Reports a data-plane failure of `backend`, one of this pool's (a no-op when
    /// passive checks are off): counted into the backend, and the control plane told
    /// when nobody has yet (see [`super::passive`]). Never waits.
    pub fn report_failure(&self, backend: &Arc<BackendStats>, error: &io::Error) {
        if self.passive.load(Ordering::Relaxed) && backend.failures.record(error) {
            let sent = self.sender.try_send(PassiveFailure {
                backend: Arc::clone(backend),
            });
            if sent.is_err() {
                self.lost.mark();
            }
        }
    }
}

/// A pool as workers place new connections and flows on it: replaced whole by the
/// control plane at every change (health, admin, reload).
#[derive(Debug)]
pub struct PoolRouting {
    /// Its identity.
    pub shared: Arc<PoolShared>,
    /// Backends, ring and states.
    pub snapshot: Snapshot,
    /// Counters of each backend, in snapshot order (shared until a reload).
    pub backends: Arc<BackendTable>,
    /// Some backends are held out because their address is ringway's own: a
    /// connection that finds no other is refused as `loop`, not `no_backend`.
    pub loops: bool,
    /// How it chooses among its live backends (`balance`).
    pub policy: Policy,
    /// `balance = "least-connections"`: the min-tree of its live backends' loads.
    pub least: Option<Arc<Least>>,
}

impl PoolRouting {
    /// The backend for a new connection or flow with key `key`, by the pool's
    /// `balance`, passing over backends `skip` rules out (those a retry tried): its
    /// index and counters, and whether bounded loads passed the ring's pick over.
    #[inline]
    pub fn choose(
        &self,
        key: u64,
        skip: impl Fn(usize) -> bool,
    ) -> Option<(usize, &Arc<BackendStats>, bool)> {
        let c = self.policy.choose(&self.snapshot, key, self, skip)?;
        Some((c.backend, &self.backends[c.backend], c.overflowed))
    }
}

impl Loads for PoolRouting {
    #[inline]
    fn open(&self, b: usize) -> u64 {
        self.backends[b].open.get()
    }

    #[inline]
    fn total(&self) -> u64 {
        self.shared.open.get()
    }

    #[inline]
    fn turn(&self) -> u64 {
        self.shared.turns.fetch_add(1, Ordering::Relaxed)
    }

    #[inline]
    fn least(&self) -> Option<&LeastTree> {
        self.least.as_deref().map(Least::tree)
    }
}

/// "This backend has failures to take": the message a worker sends when a backend's
/// data-path failure count leaves zero (see [`super::passive`]); its pool is in its
/// counters.
#[derive(Debug)]
pub struct PassiveFailure {
    /// The backend.
    pub backend: Arc<BackendStats>,
}

/// The sending end of passive failures (workers).
pub type PassiveSender = tokio::sync::mpsc::Sender<PassiveFailure>;
/// The receiving end of passive failures (the control plane).
pub type PassiveReceiver = tokio::sync::mpsc::Receiver<PassiveFailure>;

/// A bounded channel for passive failures.
pub fn passive_channel() -> (PassiveSender, PassiveReceiver) {
    tokio::sync::mpsc::channel(passive::CHANNEL)
}
