//! The control plane: turns a [`Config`] into running workers, checks backends' health,
//! and stops everything on a signal.
//!
//! It binds every socket before any worker starts (so a bad address fails the start,
//! not a worker), builds each listener's [`Snapshot`], publishes it through the
//! listener's `ArcSwap`, runs the health checks, and waits for signals, all on one small
//! tokio runtime on the main thread. Nothing here runs on a worker.

mod health;
mod shutdown;

use std::sync::Arc;

use anyhow::Context as _;

use crate::balance::Snapshot;
use crate::config::{Config, ListenerConfig, Protocol};
use crate::dataplane::{
    self, BoundSocket, ListenerParams, ListenerShared, PassiveSink, WorkerListener, WorkerParams,
};

/// Runs the balancer described by `config` until SIGTERM/SIGINT and a graceful drain.
pub fn run(config: Config) -> anyhow::Result<()> {
    match crate::sys::rlimit::raise_nofile() {
        Ok((soft, _)) => tracing::debug!("open files limit: {soft}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    let (passive_tx, passive_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut checked = Vec::with_capacity(config.listeners.len());
    let mut shared = Vec::with_capacity(config.listeners.len());
    for (i, l) in config.listeners.iter().enumerate() {
        let base = Arc::new(Snapshot::new(l.backends.clone(), l.vnodes));
        let passive = (l.health.active() && l.health.passive).then(|| PassiveSink {
            listener: i,
            tx: passive_tx.clone(),
        });
        let sh = Arc::new(ListenerShared::new(
            params(l),
            Snapshot::clone_all_up(&base),
            passive,
        ));
        checked.push(health::Checked {
            shared: Arc::clone(&sh),
            config: l.health.clone(),
            base,
        });
        shared.push(sh);
    }
    drop(passive_tx);
    let mut per_worker: Vec<Vec<WorkerListener>> =
        (0..config.workers).map(|_| Vec::new()).collect();
    for (l, sh) in config.listeners.iter().zip(&shared) {
        for listeners in per_worker.iter_mut() {
            let socket = match l.protocol {
                Protocol::Tcp => dataplane::bind_tcp(l.listen).map(BoundSocket::Tcp),
                Protocol::Udp => dataplane::bind_udp(l.listen).map(BoundSocket::Udp),
            }
            .with_context(|| {
                format!(
                    "listener {:?}: cannot listen on {} {}",
                    l.name, l.protocol, l.listen
                )
            })?;
            listeners.push(WorkerListener {
                socket,
                shared: Arc::clone(sh),
            });
        }
    }
    let mut workers = Vec::with_capacity(config.workers);
    for (index, listeners) in per_worker.into_iter().enumerate() {
        workers.push(
            dataplane::spawn(WorkerParams { index, listeners })
                .context("cannot start a worker thread")?,
        );
    }
    tracing::info!("{}", config.summary());
    for l in &config.listeners {
        tracing::info!(listener = %l.name, "listening on {} {}", l.protocol, l.listen);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    let controls = workers.iter().map(|w| w.control()).collect();
    rt.block_on(async move {
        health::spawn(checked, passive_rx, controls);
        shutdown::wait_and_drain(workers, config.shutdown_timeout, &shared).await
    })
}

fn params(l: &ListenerConfig) -> ListenerParams {
    ListenerParams {
        name: l.name.clone(),
        listen: l.listen,
        hash: l.hash,
        connect_timeout: l.connect_timeout,
        idle_timeout: match l.protocol {
            Protocol::Tcp => l.idle_timeout,
            Protocol::Udp => l.udp_idle_timeout,
        },
        retries: l.retries,
        max_connections: match l.protocol {
            Protocol::Tcp => l.max_connections,
            Protocol::Udp => l.udp_max_flows,
        },
        udp_responses: l.udp_responses,
        forward: l.forward,
    }
}
