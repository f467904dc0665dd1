//! The control plane: turns a [`Config`] into running workers, checks backends'
//! health, serves metrics and the admin API, reloads on SIGHUP and stops everything on
//! SIGTERM/SIGINT.
//!
//! It binds every socket before any worker starts (so a bad address fails the start,
//! not a worker), drops privileges when `user` is set, builds each listener's
//! [`Routing`](crate::dataplane::Routing) and publishes it through the listener's
//! `ArcSwap`. Everything else runs on one small tokio runtime on the main thread, around
//! one `core::Control` behind a mutex. Nothing here runs on a worker.

mod admin;
mod core;
mod fds;
mod http;
mod notify;
mod privileges;
mod probes;
mod reload;
mod resolver;
mod signals;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;

use crate::config::{Config, ListenerConfig, Protocol};
use crate::dataplane::{self, BoundSocket, WorkerListener, WorkerParams};
use crate::metrics::{Exporter, STALE_AFTER};
use state::ListenerState;

pub use state::{live_snapshot, params};

/// The warning `ringway check` gives when `config`'s limits do not fit the open files
/// limit `run` will have (the hard limit, which it raises the soft one to).
pub fn fd_warning(config: &Config) -> Option<String> {
    let (_, hard) = crate::sys::rlimit::nofile().ok()?;
    fds::warning(config, hard)
}

/// Descriptors this process has open now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Runs the balancer described by `config` until SIGTERM/SIGINT and a graceful drain.
pub fn run(config: Config) -> anyhow::Result<()> {
    let limit = match crate::sys::rlimit::raise_nofile() {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!("cannot raise the open files limit: {e}");
            crate::sys::rlimit::nofile().map_or(1024, |(soft, _)| soft)
        }
    };
    tracing::debug!("open files limit: {limit}");
    if let Some(w) = fds::warning(&config, limit) {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    // Before the first bind: a signal that finds ringway listening must find it handled.
    let watch = {
        let _in_runtime = rt.enter();
        signals::Watch::install()?
    };
    let (passive_tx, mut passive_rx) = tokio::sync::mpsc::unbounded_channel();
    let (probe_tx, mut probe_rx) = tokio::sync::mpsc::unbounded_channel();
    let listeners: Vec<ListenerState> = config
        .listeners
        .iter()
        .map(|l| ListenerState::new(l.clone(), config.workers, passive_tx.clone()))
        .collect();
    let mut per_worker: Vec<Vec<WorkerListener>> =
        (0..config.workers).map(|_| Vec::new()).collect();
    for (l, state) in config.listeners.iter().zip(&listeners) {
        for (worker, socket) in per_worker.iter_mut().zip(bind(l, config.workers)?) {
            worker.push(WorkerListener {
                socket,
                shared: Arc::clone(&state.shared),
            });
        }
    }
    let metrics_socket = config
        .metrics
        .map(|a| bind_http(a, "metrics.listen"))
        .transpose()?;
    let admin_socket = config
        .admin
        .as_ref()
        .map(|a| bind_http(a.listen, "admin.listen"))
        .transpose()?;
    if let Some(a) = config.admin.as_ref() {
        if !a.listen.ip().is_loopback() && a.token.is_none() {
            tracing::warn!(
                "admin API on {} without a token: anyone who reaches it can drain and disable backends",
                a.listen
            );
        }
    }
    if let Some(user) = &config.user {
        privileges::drop_to(user, config.group.as_deref())?;
    }
    let fd_plan = fds::plan(limit, open_fds(), &config);
    tracing::debug!(
        "file descriptors: {} kept for the control plane, {} per worker",
        fd_plan.reserve,
        fd_plan.per_worker
    );
    let mut workers = Vec::with_capacity(config.workers);
    for (index, listeners) in per_worker.into_iter().enumerate() {
        workers.push(
            dataplane::spawn(WorkerParams {
                index,
                workers: config.workers,
                fd_budget: fd_plan.per_worker,
                listeners,
            })
            .context("cannot start a worker thread")?,
        );
    }
    tracing::info!("{}", config.summary());
    for l in &config.listeners {
        tracing::info!(listener = %l.name, "listening on {} {}", l.protocol, l.listen);
    }
    let control = Arc::new(Mutex::new(core::Control {
        config,
        listeners,
        workers: workers.iter().map(|w| w.control()).collect(),
        probes: probe_tx,
        passive: passive_tx,
        exporter: Exporter::new(STALE_AFTER),
        reloads_ok: 0,
        reloads_failed: 0,
        last_reload_error: None,
        started: Instant::now(),
    }));
    rt.block_on(async move {
        admin::lock(&control).start_probes();
        tokio::spawn(resolver::run(Arc::clone(&control)));
        let c = Arc::clone(&control);
        tokio::spawn(async move {
            loop {
                let outcome = tokio::select! {
                    Some(o) = probe_rx.recv() => o,
                    Some(p) = passive_rx.recv() => probes::Outcome {
                        listener: p.listener,
                        backend: p.backend,
                        result: Err(p.error),
                        took: None,
                    },
                    else => return,
                };
                admin::lock(&c).on_outcome(outcome);
            }
        });
        if let Some(socket) = metrics_socket {
            let c = Arc::clone(&control);
            http::spawn(
                socket,
                fd_plan.http_slots,
                "metrics: GET /metrics",
                move |r| admin::metrics(Arc::clone(&c), r),
            )?;
        }
        if let Some(socket) = admin_socket {
            let c = Arc::clone(&control);
            http::spawn(
                socket,
                fd_plan.http_slots,
                "admin API: GET /status",
                move |r| admin::admin(Arc::clone(&c), r),
            )?;
        }
        notify::notify("READY=1\nSTATUS=serving");
        signals::run(watch, workers, control).await
    })
}

/// One socket per worker for listener `l`.
fn bind(l: &ListenerConfig, workers: usize) -> anyhow::Result<Vec<BoundSocket>> {
    (0..workers)
        .map(|_| {
            match l.protocol {
                Protocol::Tcp => dataplane::bind_tcp(l.listen).map(BoundSocket::Tcp),
                Protocol::Udp => dataplane::bind_udp(l.listen).map(BoundSocket::Udp),
            }
            .with_context(|| {
                format!(
                    "listener {:?}: cannot listen on {} {}",
                    l.name, l.protocol, l.listen
                )
            })
        })
        .collect()
}

fn bind_http(addr: SocketAddr, key: &str) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).with_context(|| format!("{key}: cannot listen on {addr}"))
}
