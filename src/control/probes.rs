//! One tokio task per checked backend: probe, report, sleep, repeat.
//!
//! A backend is probed every `interval` plus up to 10% jitter; its first probe comes
//! after a delay spread over one interval by a hash of its identity, so that checks of
//! many backends do not line up. A backend waiting for its first passing check before
//! it takes traffic (discovered in DNS) is probed sooner: within [`FIRST_SOON`] (or
//! the interval, if shorter). Results go to the control task with the backend's
//! identity (its counters, which name its pool): a result about a backend a reload has
//! since replaced matches nothing and is ignored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use super::actor::{Handle, Msg};
use crate::balance::hash::xxh3;
use crate::dataplane::stats::BackendStats;
use crate::health::probe::{self, ProbeError};
use crate::health::HealthConfig;

/// An active check result.
#[derive(Debug)]
pub struct Outcome {
    /// The backend.
    pub backend: Arc<BackendStats>,
    /// Healthy, or why not.
    pub result: Result<(), ProbeError>,
    /// How long the check took.
    pub took: Duration,
}

/// The first probe of a backend that waits for it comes within this long.
pub const FIRST_SOON: Duration = Duration::from_millis(500);

/// A running probe; dropping it stops the probe.
#[derive(Debug)]
pub struct ProbeTask(AbortHandle);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts probing `addr` (the backend's address, or its health `port`) with `cfg`;
/// `waiting`: the backend takes no traffic before its first passing check (probed
/// sooner). Must be called inside a tokio runtime.
pub fn spawn(
    backend: Arc<BackendStats>,
    (mut addr, waiting): (SocketAddr, bool),
    cfg: HealthConfig,
    control: Handle,
) -> ProbeTask {
    if let Some(port) = cfg.port {
        addr.set_port(port);
    }
    let seed = xxh3(format!("{}/{}", backend.pool.name, backend.id).as_bytes());
    let task = tokio::spawn(async move {
        let spread = if waiting {
            cfg.interval.min(FIRST_SOON)
        } else {
            cfg.interval
        };
        let first = spread.mul_f64((seed % 1000) as f64 / 1000.0);
        tokio::time::sleep(first).await;
        for tick in 0u64.. {
            let id = (seed ^ tick) as u16;
            let started = Instant::now();
            // Boxed: the check's own state (buffers, a connecting socket, its timer)
            // lives only while it runs; the task that waits between checks stays
            // small (thousands of backends, one task each).
            let result = Box::pin(probe::run(
                &cfg.check,
                addr,
                cfg.timeout,
                id,
                cfg.send_proxy,
            ))
            .await;
            let outcome = Outcome {
                backend: Arc::clone(&backend),
                result,
                took: started.elapsed(),
            };
            if !control.send(Msg::Checked(outcome)).await {
                return;
            }
            let jitter =
                (xxh3(&(seed ^ tick.wrapping_mul(0x9E37)).to_le_bytes()) % 100) as f64 / 1000.0;
            tokio::time::sleep(cfg.interval.mul_f64(1.0 + jitter)).await;
        }
    });
    ProbeTask(task.abort_handle())
}
