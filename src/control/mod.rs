//! The control plane: turns a [`Config`] into running workers, checks backends'
//! health, serves metrics and the admin API, reloads on SIGHUP and stops everything on
//! SIGTERM/SIGINT.
//!
//! It binds every socket before any worker starts (so a bad address fails the start,
//! not a worker), drops privileges when `user` is set, splits the file descriptors
//! between itself and the workers (`fds.rs`), builds each listener's
//! [`Routing`](crate::dataplane::Routing) and publishes it through the listener's
//! `ArcSwap`. Everything else runs on one small tokio runtime on the main thread: one
//! task owns the state (`actor.rs`, `core.rs`) and everything else talks to it with
//! messages. Nothing here runs on a worker.

mod actor;
mod admin;
mod affinity;
mod announce;
mod backend;
mod cluster;
mod core;
mod fds;
mod guard;
mod http;
mod kernel;
mod listener;
mod notify;
mod params;
mod pool;
mod privileges;
mod probes;
mod reload;
mod resolver;
mod signals;
mod status;
pub mod upgrade;
mod view;

/// For the fuzz targets (`fuzz/`): the admin API's request decision and the HTTP
/// connection server every admin and metrics connection runs.
pub use admin::{
    route as admin_route, Call as AdminCall, Place as AdminPlace, Policy as AdminPolicy,
    Refusal as AdminRefusal,
};
pub use backend::Admin;
pub use http::{serve_io, Body as HttpBody};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::accesslog::{self, AccessLog};
use crate::config::{
    AccessLogConfig, AdminListen, Config, ListenerConfig, LogFormat, LogPath, Protocol,
};
use crate::dataplane::{self, BoundSocket, WorkerListener, WorkerParams};
use listener::ListenerState;
use pool::PoolState;
use upgrade::new::Inherited;
use upgrade::wire::Kind;

pub use listener::routes_of;
pub use params::admission_rules;
pub use pool::live_snapshot;
pub use privileges::PrivilegeError;
pub use reload::BindError;
pub use signals::SignalError;

/// Why ringway could not start, or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The control runtime could not be built.
    #[error("cannot start the control runtime: {0}")]
    Runtime(io::Error),
    /// A signal handler could not be installed.
    #[error(transparent)]
    Signals(#[from] SignalError),
    /// A listener could not bind its address.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// `metrics.listen` or `admin.listen` could not be bound.
    #[error("{key}: cannot listen on {addr}: {source}")]
    BindHttp {
        /// The config key.
        key: &'static str,
        /// The address.
        addr: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The metrics or admin server could not start.
    #[error("cannot serve {what}: {source}")]
    Serve {
        /// Which.
        what: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// `user`/`group` could not be switched to.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// The access log cannot be opened for appending (as the user ringway runs as).
    #[error("access_log.path {path}: cannot open it for appending{user}: {source}")]
    AccessLog {
        /// The file.
        path: String,
        /// ` as user NAME`, when ringway switched to one.
        user: String,
        /// What the OS said.
        source: io::Error,
    },
    /// A worker thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Worker(io::Error),
    /// A listener demands kernel forwarding and this process cannot load it.
    #[error("listener {listener:?}: forward = \"kernel\": {why}")]
    Kernel {
        /// The listener.
        listener: String,
        /// Why.
        why: Box<crate::dataplane::kernel::KernelError>,
    },
    /// `[cluster]` could not start.
    #[error(transparent)]
    Cluster(#[from] cluster::StartError),
    /// Every worker thread stopped on its own.
    #[error("every worker thread has stopped")]
    WorkersStopped,
    /// Worker threads panicked.
    #[error("{0} worker thread(s) panicked")]
    WorkersPanicked(usize),
    /// A worker stopped while ringway ran (the others were drained).
    #[error("worker {index} stopped ({why}); the other workers were drained")]
    WorkerFailed {
        /// Which.
        index: usize,
        /// What it said.
        why: String,
    },
}

/// Why the access log of `config` could not be written by the user ringway would run
/// as (`user`, else this process), from the file modes; `None` when it can (or logs to
/// stderr, or there is none). `ringway check` fails on it, as `run` would.
pub fn access_log_problem(config: &Config) -> Option<String> {
    let Some(AccessLogConfig {
        path: LogPath::File(path),
        ..
    }) = &config.access_log
    else {
        return None;
    };
    let (uid, gid, who) = match &config.user {
        Some(user) => match privileges::ids(user, config.group.as_deref()) {
            Ok((u, g)) => (u.as_raw(), g.as_raw(), format!("user {user}")),
            Err(e) => return Some(e.to_string()),
        },
        None => (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
            "this user".to_string(),
        ),
    };
    crate::accesslog::probe::denied_to(path, uid, gid).map(|why| {
        format!(
            "access_log.path {}: {who} cannot append to it: {why}",
            path.display()
        )
    })
}

/// Fits `config`'s default limits to the open files limit `run` will have (the hard
/// limit, which it raises the soft one to), as `run` does; then the warning `ringway
/// check` gives when its explicit limits still do not fit.
pub fn fd_warning(config: &mut Config) -> Option<String> {
    let (_, hard) = crate::sys::rlimit::nofile().ok()?;
    fit_limits(config, hard);
    fds::warning(config, hard)
}

/// Lowers the listeners' default limits to fit `limit` open files
/// ([`fds::fit_defaults`]), saying so at debug level.
pub fn fit_limits(config: &mut Config, limit: u64) {
    for line in fds::fit_defaults(config, limit) {
        tracing::debug!("{line}");
    }
}

/// Descriptors this process has open now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Runs the balancer described by `config` until SIGTERM/SIGINT and a graceful drain.
/// Runs ringway with `config` until it is stopped (or upgraded). `inherited`: the
/// sockets an old process handed over, when this one was started by an upgrade; it
/// is told once this process serves, or why it will not.
pub fn run(config: Config, mut inherited: Option<Inherited>) -> Result<(), RunError> {
    let result = run_with(config, &mut inherited);
    if let (Err(e), Some(i)) = (&result, inherited.take()) {
        i.failed(&crate::error_chain(e));
    }
    result
}

fn run_with(mut config: Config, inherited: &mut Option<Inherited>) -> Result<(), RunError> {
    // Backend sets are asked once before anything is bound: a listener starts with
    // the backends DNS gives it (a set that does not answer starts empty, or, after
    // an upgrade, with the members the old process had).
    let mut sets = crate::discovery::Sets::default();
    let answers = crate::discovery::lookup(&config);
    let carried_sets = inherited.as_ref().map(|i| i.state().with_sets(&config));
    sets.settle(&mut config, &answers, carried_sets.as_ref());
    let resolving = resolver::Resolving::new(
        std::time::Instant::now() + crate::discovery::next_round(&answers, config.resolve_interval),
        sets,
    );
    let limit = match crate::sys::rlimit::raise_nofile() {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!("cannot raise the open files limit: {e}");
            crate::sys::rlimit::nofile().map_or(1024, |(soft, _)| soft)
        }
    };
    tracing::debug!("open files limit: {limit}");
    fit_limits(&mut config, limit);
    if let Some(w) = fds::warning(&config, limit) {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    // Before the first bind: a signal that finds ringway listening must find it handled.
    let watch = {
        let _in_runtime = rt.enter();
        signals::Watch::install()?
    };
    // While privileged: the program, and each worker's handles on its maps. Before the
    // first bind: loading takes tens of milliseconds, and a bound listener's clients
    // should not wait for it.
    let sessions = u32::try_from(limit / 2).unwrap_or(u32::MAX);
    let kernel = kernel::load(&config, sessions)
        .map_err(|(listener, why)| RunError::Kernel { listener, why })?;
    let mut kernel_maps = Vec::with_capacity(config.workers);
    for _ in 0..config.workers {
        kernel_maps.push(
            kernel
                .as_ref()
                .map(|p| p.maps())
                .transpose()
                .map_err(|why| RunError::Kernel {
                    listener: kernel::demanded_by(&config).unwrap_or("-").to_string(),
                    why: Box::new(why),
                })?,
        );
    }
    // The UDP kernel path, also while privileged; a flow holds one descriptor.
    let udp_kernel = kernel::load_udp(&config, u32::try_from(limit).unwrap_or(u32::MAX));
    let (udp_kernel, mut udp_flows) = match udp_kernel {
        Some((p, handles)) => (Some(p), handles.into_iter().map(Some).collect()),
        None => (None, Vec::new()),
    };
    udp_flows.resize_with(config.workers, || None);
    let cluster = cluster::Cluster::start(&config)?;
    let (passive_tx, passive_rx) = dataplane::passive_channel();
    let local = crate::discovery::filter::local_addresses();
    let mut pools: Vec<PoolState> = config
        .pools
        .iter()
        .map(|p| {
            let looped = pool::looped(&config, p, &local);
            PoolState::new(p.clone(), config.workers, passive_tx.clone(), looped)
        })
        .collect();
    // Started by an upgrade: each backend as the old process had it, and its counters.
    let mut carried = None;
    if let Some(i) = inherited.as_ref() {
        let by = i.state().backends();
        let adopted: usize = pools.iter_mut().map(|p| p.adopt(&by)).sum();
        let metrics = crate::metrics::carry::Offsets::new(i.state().metrics.clone());
        tracing::info!(
            "upgrade: carried over the state of {adopted} backend(s), {} backend set(s) and {} counter series",
            i.state().sets.len(),
            i.state().metrics.len()
        );
        carried = Some(Arc::new(metrics));
    }
    let mut listeners: Vec<ListenerState> = config
        .listeners
        .iter()
        .map(|l| ListenerState::new(l.clone(), config.workers, &pools))
        .collect();
    let mut per_worker: Vec<Vec<WorkerListener>> =
        (0..config.workers).map(|_| Vec::new()).collect();
    let pinned = affinity::applies(&config);
    affinity::report(&config);
    let mut kit = upgrade::old::Kit::new(inherited.as_ref().map_or(0, |i| i.upgrades()));
    kit.carried = carried;
    for (l, state) in config.listeners.iter().zip(&mut listeners) {
        let sockets = bind(l, config.workers, pinned, inherited.as_mut())?;
        state.keep_sockets(&sockets);
        // One socket per worker; inherited ones beyond that go round (none is left
        // unserved: its accept queue would wait for nobody).
        for (i, socket) in sockets.into_iter().enumerate() {
            per_worker[i % config.workers].push(WorkerListener {
                socket,
                shared: Arc::clone(&state.shared),
            });
        }
    }
    let metrics_socket = config
        .metrics
        .map(|a| {
            let fd = inherited
                .as_mut()
                .and_then(|i| i.take(Kind::Metrics, "", &a.to_string()).pop());
            match fd {
                Some(fd) => Ok(http::Bound::Tcp(fd.into())),
                None => bind_http(a, "metrics.listen").map(http::Bound::Tcp),
            }
        })
        .transpose()?;
    let admin_socket = config
        .admin
        .as_ref()
        .map(|a| {
            let fd = inherited
                .as_mut()
                .and_then(|i| i.take(Kind::Admin, "", &a.listen.to_string()).pop());
            match (fd, &a.listen) {
                (Some(fd), AdminListen::Tcp(_)) => Ok(http::Bound::Tcp(fd.into())),
                (Some(fd), AdminListen::Unix { path, .. }) => {
                    Ok(http::Bound::Unix(fd.into(), path.clone()))
                }
                (None, listen) => bind_admin(listen, &config),
            }
        })
        .transpose()?;
    if let (Some(a), Some(s)) = (config.metrics, &metrics_socket) {
        kit.keep_http(Kind::Metrics, a.to_string(), s.as_fd());
    }
    if let (Some(a), Some(s)) = (config.admin.as_ref(), &admin_socket) {
        kit.keep_http(Kind::Admin, a.listen.to_string(), s.as_fd());
    }
    if let Some(a) = config.admin.as_ref() {
        if a.listen.tcp().is_some_and(|l| !l.ip().is_loopback()) && a.token.is_none() {
            tracing::warn!(
                "admin API on {} without a token: anyone who reaches it can drain and disable backends",
                a.listen
            );
        }
    }
    if let Some(user) = &config.user {
        privileges::drop_to(user, config.group.as_deref())?;
    }
    // After the switch: the log file is the service user's, as its reopens will be;
    // one that cannot be written stops the start here (not one ERROR line later).
    if let Some(AccessLogConfig {
        path: LogPath::File(path),
        ..
    }) = &config.access_log
    {
        crate::accesslog::probe::open(path).map_err(|source| RunError::AccessLog {
            path: path.display().to_string(),
            user: config
                .user
                .as_ref()
                .map(|u| format!(" as user {u}"))
                .unwrap_or_default(),
            source,
        })?;
    }
    let (access_log, sinks) =
        AccessLog::start(config.workers, config.access_log.as_ref().map(log_settings))
            .map_err(RunError::Worker)?;
    let open_before = open_fds();
    let fd_plan = fds::plan(limit, open_before, &config);
    tracing::debug!(
        "file descriptors: {} kept for the control plane, {} per worker",
        fd_plan.reserve,
        fd_plan.per_worker
    );
    // Started by an upgrade: everything that can fail has been done; the old process
    // may stop accepting now, and this one's workers start right after (clients that
    // come between wait in the accept queues these sockets share). Until this answer
    // nothing here accepted anything: a process killed before it leaves nobody behind.
    // The old process's UDP flows come before this one reads a datagram (one read
    // first would open a second flow, from another port, for the same client).
    let sends_flows = inherited.as_ref().is_some_and(Inherited::sends_flows);
    let took_over = inherited.take().map(take_over);
    let hold_udp = sends_flows && matches!(took_over, Some(Some(_)));
    let mut workers = Vec::with_capacity(config.workers);
    // Time zero well in the past: a session handed over by an upgrade started before
    // this process did, and its start must still be a time on this clock.
    let now = std::time::Instant::now();
    let epoch = [30 * 86_400, 86_400, 3_600, 60]
        .into_iter()
        .find_map(|s| now.checked_sub(std::time::Duration::from_secs(s)))
        .unwrap_or(now);
    let per_worker = per_worker.into_iter().zip(kernel_maps).zip(udp_flows);
    for ((index, ((listeners, kernel), udp_kernel)), access_log) in
        per_worker.enumerate().zip(sinks)
    {
        workers.push(
            dataplane::spawn(WorkerParams {
                index,
                workers: config.workers,
                fd_budget: fd_plan.per_worker,
                listeners,
                access_log,
                cpu: pinned.then_some(index),
                epoch,
                kernel,
                udp_kernel,
                hold_udp,
            })
            .map_err(RunError::Worker)?,
        );
    }
    tracing::info!("{}", config.summary());
    for l in &config.listeners {
        let forward = listener::forward_in_use(l, udp_kernel.is_some());
        tracing::info!(listener = %l.name, forward, "listening on {} {}", l.protocol, l.listen);
    }
    let policy = policy_of(&config);
    let published = Arc::new(view::Published::new(view::View::empty()));
    let (handle, mailbox) = actor::channel(policy, published);
    let logs = access_log.control();
    let mut control = core::Control::new(
        config,
        (pools, listeners),
        workers.iter().map(|w| w.control()).collect(),
        (handle.clone(), logs.clone()),
        passive_tx,
        resolving,
    );
    control.kernel = kernel.is_some();
    control.set_udp_kernel(udp_kernel.is_some());
    control.udp_program = udp_kernel.map(kernel::UdpProgram::new);
    control.cluster = cluster;
    // The first view (published while the state was built) has no cluster yet.
    control.publish_all_now();
    control.fds = (limit, open_before);
    let (upgraded_tx, upgraded) = tokio::sync::mpsc::unbounded_channel();
    kit.stop = Some(upgraded_tx);
    control.upgrade = kit;
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let result = rt.block_on(async move {
        control.start_probes();
        if let Some(c) = control.cluster.as_mut() {
            c.start_tasks();
        }
        tokio::spawn(actor::run(control, mailbox, passive_rx));
        serve_http(
            (metrics_socket, admin_socket),
            fd_plan.http_slots,
            (handle.clone(), closing),
        )?;
        notify::notify("READY=1\nSTATUS=serving");
        if let Some((took, channel)) = took_over.flatten() {
            handle.upgraded_in(took).await;
            upgrade::task::receive(channel, handle.clone());
        }
        signals::run(watch, workers, handle, logs, (upgraded, closing_tx)).await
    });
    // The workers have stopped: what they logged is queued; write it out.
    access_log.stop();
    result
}

/// Tells the old process this one takes over (after the pause that
/// `RINGWAY_TEST_UPGRADE_PAUSE_MS` asks for, in debug builds: the window in which the
/// fault tests kill the new process); how long the hand-off took.
fn take_over(inherited: Inherited) -> Option<(std::time::Duration, std::os::fd::OwnedFd)> {
    if cfg!(debug_assertions) {
        if let Some(ms) = std::env::var("RINGWAY_TEST_UPGRADE_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    match inherited.ready() {
        Ok((took, channel)) => {
            tracing::info!(
                "upgrade: took over from the old process in {} ms",
                took.as_millis()
            );
            Some((took, channel))
        }
        Err(e) => {
            tracing::warn!("upgrade: could not tell the old process it may stop: {e}");
            None
        }
    }
}

/// Serves `/metrics` and the admin API on a thread and runtime of their own: health
/// checks, the control task and their bursts (thousands of first checks at start)
/// never hold up an operator or a scraper. Requests that change something reach the
/// control task through `handle`; the rest render its published view.
fn serve_http(
    (metrics, admin): (Option<http::Bound>, Option<http::Bound>),
    slots: usize,
    (handle, closing): (actor::Handle, tokio::sync::watch::Receiver<bool>),
) -> Result<(), RunError> {
    if metrics.is_none() && admin.is_none() {
        return Ok(());
    }
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("ringway-http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(RunError::Runtime(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let started = (|| {
                    let error = |what| move |source| RunError::Serve { what, source };
                    if let Some(socket) = metrics {
                        let h = handle.clone();
                        let what = "metrics: GET /metrics";
                        let serving = (slots, closing.clone());
                        http::spawn(socket, serving, what, move |r| admin::metrics(h.clone(), r))
                            .map_err(error("/metrics"))?;
                    }
                    if let Some(socket) = admin {
                        let what = "admin API (status page at /, JSON at /status)";
                        let serving = (slots, closing.clone());
                        http::spawn(socket, serving, what, move |r| {
                            admin::admin(handle.clone(), r)
                        })
                        .map_err(error("the admin API"))?;
                    }
                    Ok(())
                })();
                // Only the servers hold `closing` now: once they stopped, it is closed.
                drop(closing);
                let failed = started.is_err();
                let _ = ready_tx.send(started);
                if !failed {
                    std::future::pending::<()>().await;
                }
            });
        })
        .map_err(RunError::Worker)?;
    ready.recv().unwrap_or_else(|_| {
        Err(RunError::Worker(io::Error::other(
            "the HTTP thread stopped",
        )))
    })
}

/// Who may call the admin API under `config`.
fn policy_of(config: &Config) -> admin::Policy {
    config
        .admin
        .as_ref()
        .map(|a| admin::Policy {
            token: a.token.clone(),
            hosts: a.hosts.clone(),
            listen: a.listen.tcp(),
        })
        .unwrap_or_default()
}

/// `[access_log]` as the writer takes it.
fn log_settings(c: &AccessLogConfig) -> accesslog::Settings {
    accesslog::Settings {
        target: match &c.path {
            LogPath::Stderr => accesslog::Target::Stderr,
            LogPath::File(p) => accesslog::Target::File(p.clone()),
        },
        format: match c.format {
            LogFormat::Json => accesslog::Format::Json,
            LogFormat::Text => accesslog::Format::Text,
        },
        sample: c.sample,
    }
}

/// One socket per worker for listener `l`.
/// Binds one socket per worker for listener `l`; with `by_cpu`, a TCP listener's group
/// hands each connection to the worker on the CPU that received it.
/// One socket per worker for listener `l` (and every socket an old process handed
/// over for it, when this one was started by an upgrade: those come first, and only
/// the missing ones are bound).
fn bind(
    l: &ListenerConfig,
    workers: usize,
    by_cpu: bool,
    inherited: Option<&mut Inherited>,
) -> Result<Vec<BoundSocket>, BindError> {
    let kind = match l.protocol {
        Protocol::Tcp => Kind::Tcp,
        Protocol::Udp => Kind::Udp,
    };
    let handed: Vec<BoundSocket> = inherited
        .map(|i| i.take(kind, &l.name, &l.listen.to_string()))
        .unwrap_or_default()
        .into_iter()
        .map(|fd| match l.protocol {
            Protocol::Tcp => BoundSocket::Tcp(fd.into()),
            Protocol::Udp => BoundSocket::Udp(fd.into()),
        })
        .collect();
    if !handed.is_empty() {
        tracing::debug!(listener = %l.name, sockets = handed.len(), "listening on the sockets the old process handed over");
    }
    let missing = workers.saturating_sub(handed.len());
    let inherited_any = !handed.is_empty();
    let bound = (0..missing)
        .map(|_| {
            match l.protocol {
                Protocol::Tcp => dataplane::bind_tcp(l.listen).map(BoundSocket::Tcp),
                Protocol::Udp => dataplane::bind_udp(l.listen).map(BoundSocket::Udp),
            }
            .map_err(|source| BindError {
                listener: l.name.clone(),
                protocol: l.protocol,
                addr: l.listen,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sockets: Vec<BoundSocket> = handed.into_iter().chain(bound).collect();
    // UDP keeps the kernel's hash: a flow lives in one worker's table, so every
    // datagram of a client must reach the same worker, whichever CPU received it.
    // Inherited sockets keep the program the old process attached to their group.
    if by_cpu && l.protocol == Protocol::Tcp && !inherited_any {
        let fds: Vec<_> = sockets.iter().map(BoundSocket::as_fd).collect();
        if let Err(e) = dataplane::steer_by_cpu(&fds) {
            tracing::warn!(listener = %l.name, "cannot steer by CPU ({e}): spreading by hash");
        }
    }
    Ok(sockets)
}

fn bind_http(addr: SocketAddr, key: &'static str) -> Result<std::net::TcpListener, RunError> {
    http::bind(addr).map_err(|source| RunError::BindHttp {
        key,
        addr: addr.to_string(),
        source,
    })
}

/// The admin API's socket: TCP, or a unix socket owned by `user`/`group` when set
/// (so that the service user's group can reach it once privileges are dropped).
fn bind_admin(listen: &AdminListen, config: &Config) -> Result<http::Bound, RunError> {
    match listen {
        AdminListen::Tcp(a) => bind_http(*a, "admin.listen").map(http::Bound::Tcp),
        AdminListen::Unix { path, mode } => {
            let owner = config
                .user
                .as_deref()
                .map(|u| privileges::ids(u, config.group.as_deref()))
                .transpose()?;
            http::bind_unix(path, *mode, owner).map_err(|source| RunError::BindHttp {
                key: "admin.listen",
                addr: listen.to_string(),
                source,
            })
        }
    }
}
