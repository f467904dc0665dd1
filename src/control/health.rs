//! Runs the health checks and publishes their verdicts.
//!
//! One tokio task per checked backend probes it every `interval` (plus up to 10% jitter,
//! so checks do not align) and sends the result here; workers send failed connects
//! (passive checks) over the same kind of channel. This task owns one
//! [`HealthState`] per backend, logs every transition once with its reason, and on each
//! transition stores a new [`Snapshot`] for the listener: workers pick it up for their
//! next new connection or flow. With `on_down = "close"` it also tells every worker to
//! close the backend's open connections.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::balance::hash::xxh3;
use crate::balance::Snapshot;
use crate::dataplane::{Command, ListenerShared, PassiveFailure, WorkerControl};
use crate::health::state::{HealthState, Thresholds, Transition};
use crate::health::{probe, AllDown, HealthConfig, OnDown};

/// One listener as the health task sees it.
#[derive(Debug)]
pub struct Checked {
    /// Shared state, where snapshots are published.
    pub shared: Arc<ListenerShared>,
    /// The listener's health settings.
    pub config: HealthConfig,
    /// The all-up snapshot that up/down states are applied to.
    pub base: Arc<Snapshot>,
}

/// A check result.
#[derive(Debug)]
struct Outcome {
    listener: usize,
    backend: usize,
    result: Result<(), String>,
    passive: bool,
}

/// Starts the probes of every listener with an active check, and the task that turns
/// results into snapshots. Must be called inside a tokio runtime.
pub fn spawn(
    listeners: Vec<Checked>,
    mut passive: mpsc::UnboundedReceiver<PassiveFailure>,
    workers: Vec<WorkerControl>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    for (li, l) in listeners.iter().enumerate() {
        if !l.config.active() {
            continue;
        }
        for (bi, b) in l.base.backends().iter().enumerate() {
            let mut addr = b.addr;
            if let Some(port) = l.config.port {
                addr.set_port(port);
            }
            let cfg = l.config.clone();
            let tx = tx.clone();
            let seed = xxh3(format!("{li}/{}", b.id).as_bytes());
            tokio::spawn(async move {
                // Spread the first checks over one interval, then keep a jittered pace.
                let first = cfg.interval.mul_f64((seed % 1000) as f64 / 1000.0);
                tokio::time::sleep(first).await;
                for tick in 0u64.. {
                    let id = (seed ^ tick) as u16;
                    let result = probe::run(&cfg.check, addr, cfg.timeout, id).await;
                    if tx
                        .send(Outcome {
                            listener: li,
                            backend: bi,
                            result,
                            passive: false,
                        })
                        .is_err()
                    {
                        return;
                    }
                    let jitter = (xxh3(&(seed ^ tick.wrapping_mul(0x9E37)).to_le_bytes()) % 100)
                        as f64
                        / 1000.0;
                    tokio::time::sleep(cfg.interval.mul_f64(1.0 + jitter)).await;
                }
            });
        }
    }
    let mut states: Vec<Vec<HealthState>> = listeners
        .iter()
        .map(|l| vec![HealthState::default(); l.base.backends().len()])
        .collect();
    tokio::spawn(async move {
        loop {
            let outcome = tokio::select! {
                Some(o) = rx.recv() => o,
                Some(p) = passive.recv() => Outcome { listener: p.listener, backend: p.backend, result: Err(p.error), passive: true },
                else => return,
            };
            let Some(l) = listeners.get(outcome.listener) else {
                continue;
            };
            // Passive failures only count where active checks can bring a backend back.
            if outcome.passive && !(l.config.active() && l.config.passive) {
                continue;
            }
            let Some(state) = states[outcome.listener].get_mut(outcome.backend) else {
                continue;
            };
            let t = Thresholds {
                rise: l.config.rise,
                fall: l.config.fall,
            };
            let Some(tr) = state.observe(outcome.result.is_ok(), t) else {
                continue;
            };
            let b = &l.base.backends()[outcome.backend];
            match (tr, &outcome.result) {
                (Transition::Down, Err(why)) => {
                    let what = if outcome.passive {
                        "failed checks (the last a connect on the data path)"
                    } else {
                        "failed checks"
                    };
                    tracing::warn!(listener = %l.shared.params.name, "backend {} ({}) DOWN after {} {what}: {why}", b.id, b.addr_text, l.config.fall);
                }
                _ => {
                    tracing::info!(listener = %l.shared.params.name, "backend {} ({}) UP after {} successful checks", b.id, b.addr_text, l.config.rise)
                }
            }
            let up: Vec<bool> = states[outcome.listener]
                .iter()
                .map(HealthState::is_up)
                .collect();
            if !up.iter().any(|&u| u) {
                match l.config.all_down {
                    AllDown::Reject => {
                        tracing::error!(listener = %l.shared.params.name, "every backend is down: new connections are refused")
                    }
                    AllDown::UseAll => {
                        tracing::error!(listener = %l.shared.params.name, "every backend is down: using all of them (all_down = \"use-all\")")
                    }
                }
            }
            let snapshot = l.base.with_health(up, l.config.all_down == AllDown::UseAll);
            l.shared.snapshot.store(Arc::new(snapshot));
            if tr == Transition::Down && l.config.on_down == OnDown::Close {
                for w in &workers {
                    let _ = w.send(Command::CloseBackend {
                        listener: outcome.listener,
                        backend: outcome.backend,
                    });
                }
            }
        }
    });
}
