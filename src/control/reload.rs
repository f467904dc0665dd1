//! Live reload: SIGHUP (or `POST /reload`) re-reads the config file and applies it
//! without dropping a connection or a flow.
//!
//! Reading and validating the file (which resolves backend host names) runs on the
//! blocking pool, off the control task: a slow resolver delays that reload only, not
//! health checks, metrics or the admin API. Requests that arrive while a load is in
//! flight are answered by the next load, which reads the file again. Everything that
//! can fail (validating, binding new listeners) happens before anything changes; then
//! the new state is committed in one step:
//! - a pool with the same name and protocol keeps its backends' health, admin state
//!   and counters by id; its new backends are published as a new routing (open
//!   connections keep the backend they have);
//! - a listener with the same name, protocol and address keeps its sockets; its new
//!   settings and routes are published as a new routing;
//! - a new listener (or one whose protocol or address changed) gets new sockets on
//!   every worker;
//! - a removed listener stops accepting; its open connections and flows carry on.
//!
//! `workers`, `user`, `group`, `metrics.listen` and `admin.listen` need a restart: a
//! reload that changes them says so and keeps the running values.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::actor::{Msg, Reloaded};
use super::core::Control;
use super::listener::ListenerState;
use super::pool::{self, PoolState};
use crate::config::{Config, ConfigError, Protocol};
use crate::dataplane::{BoundSocket, Command, WorkerListener};
use crate::discovery::SetAnswer;

/// Why a reload was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is not a valid config.
    #[error("{}", chain(.0.as_ref()))]
    Config(Arc<ConfigError>),
    /// A new listener could not bind its address.
    #[error(transparent)]
    Bind(Arc<BindError>),
    /// The new access log cannot be opened (the running one stays).
    #[error("access_log.path {path}: cannot open it for appending: {why}")]
    AccessLog {
        /// The file.
        path: String,
        /// What the OS said.
        why: String,
    },
    /// A listener asks for kernel forwarding, which this process did not load at
    /// start.
    #[error("listener {0:?}: forward = \"kernel\" is unavailable in this process (see the log at start); restart to use it")]
    Kernel(String),
    /// The control plane is gone (shutting down).
    #[error("ringway is shutting down")]
    Stopped,
}

/// A listener's address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listener {listener:?}: cannot listen on {protocol} {addr}: {source}{}", bind_hint(source, *addr))]
pub struct BindError {
    /// The listener.
    pub listener: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its address.
    pub addr: SocketAddr,
    /// What the OS said.
    pub source: std::io::Error,
}

/// What to check when an address cannot be bound, for the errors people meet.
pub fn bind_hint(e: &std::io::Error, addr: SocketAddr) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            " (another process listens there: `ss -lntup 'sport = :{}'` shows which)",
            addr.port()
        ),
        Some(libc::EACCES) if addr.port() < 1024 => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE: see conf/ringway.service)"
                .to_string()
        }
        Some(libc::EADDRNOTAVAIL) => format!(
            " (no interface of this machine has {}: `ip -br addr` lists them)",
            addr.ip()
        ),
        _ => String::new(),
    }
}

/// An error with its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

/// Reload counts and the loads in flight.
#[derive(Debug, Default)]
pub struct Reloads {
    /// Applied.
    pub ok: u64,
    /// Rejected.
    pub failed: u64,
    /// Why the last one was rejected; cleared by a successful one.
    pub last_error: Option<String>,
    /// A load is running on the blocking pool.
    loading: bool,
    /// Who waits for the running load.
    current: Vec<oneshot::Sender<Reloaded>>,
    /// Asked while a load ran: another load follows.
    again: bool,
    /// Who waits for that one.
    next: Vec<oneshot::Sender<Reloaded>>,
}

impl Control {
    /// A reload was asked for (`reply`: where its outcome goes).
    pub fn request_reload(&mut self, reply: Option<oneshot::Sender<Reloaded>>) {
        let r = &mut self.reloads;
        if r.loading {
            r.again = true;
            r.next.extend(reply);
            return;
        }
        r.current.extend(reply);
        self.start_load();
    }

    fn start_load(&mut self) {
        self.reloads.loading = true;
        let path = self.config.path.clone();
        let me = self.me.clone();
        tokio::task::spawn_blocking(move || {
            let loaded = crate::config::load(&path).map(|mut c| {
                // Default limits fit the open files limit, as at start.
                if let Ok((soft, _)) = crate::sys::rlimit::nofile() {
                    super::fit_limits(&mut c, soft);
                }
                let answers = crate::discovery::lookup(&c);
                (c, answers)
            });
            me.send_blocking(Msg::Loaded(Box::new(loaded)));
        });
    }

    /// A load finished: applies it (or keeps the running config), answers whoever
    /// waited, and starts the next load if one was asked for meanwhile.
    pub fn on_loaded(&mut self, loaded: Result<(Config, Vec<SetAnswer>), ConfigError>) {
        let path = self.config.path.clone();
        let result = loaded
            .map(|(mut c, answers)| {
                // A set that does not answer now keeps the backends it has.
                self.resolving
                    .sets
                    .settle(&mut c, &answers, Some(&self.config));
                c
            })
            .map_err(|e| ReloadError::Config(Arc::new(e)))
            .and_then(|c| match super::kernel::demanded_by(&c) {
                Some(name) if !self.kernel => Err(ReloadError::Kernel(name.to_string())),
                _ => Ok(c),
            })
            .inspect(|c| {
                let names = super::kernel::udp_demanding(c);
                if !names.is_empty() && !self.udp_kernel() {
                    tracing::warn!(
                        listeners = %names.join(", "),
                        "forward = \"kernel\" is unavailable for UDP in this process (it was not loaded at start): these listeners forward in ringway; restart to use it"
                    );
                }
            })
            .and_then(|c| {
                // A log that cannot be written is refused before anything changes.
                match &c.access_log {
                    Some(a) if c.access_log != self.config.access_log => match &a.path {
                        crate::config::LogPath::File(p) => crate::accesslog::probe::open(p)
                            .map_err(|e| ReloadError::AccessLog {
                                path: p.display().to_string(),
                                why: e.to_string(),
                            })?,
                        crate::config::LogPath::Stderr => {}
                    },
                    _ => {}
                }
                Ok(c)
            })
            .and_then(|c| {
                let changed = crate::config::changes(&self.config, &c);
                self.apply(c)
                    .map(|summary| format!("{summary}; {changed}"))
                    .map_err(|e| ReloadError::Bind(Arc::new(e)))
            });
        match &result {
            Ok(summary) => {
                self.reloads.ok += 1;
                self.reloads.last_error = None;
                tracing::info!("reloaded {}: {summary}", path.display());
            }
            Err(e) => {
                self.reloads.failed += 1;
                self.reloads.last_error = Some(e.to_string());
                tracing::error!("reload failed, the running config stays: {e}");
            }
        }
        // Whoever waits for the answer reads /status or /metrics next: publish now.
        self.publish_all_now();
        let r = &mut self.reloads;
        for waiting in r.current.drain(..) {
            let _ = waiting.send(result.clone());
        }
        r.loading = false;
        if std::mem::take(&mut r.again) {
            r.current = std::mem::take(&mut r.next);
            self.start_load();
        }
    }

    /// Applies `new` (a reloaded config, or the running one with re-resolved backend
    /// addresses): binds what is new first, then commits.
    pub(super) fn apply(&mut self, new: Config) -> Result<String, BindError> {
        let workers = self.workers.len();
        // Plan: bind everything new first; an error here changes nothing.
        let mut plans = Vec::with_capacity(new.listeners.len());
        for l in &new.listeners {
            let kept = self.listeners.iter().position(|o| {
                o.config.name == l.name
                    && o.config.protocol == l.protocol
                    && o.config.listen == l.listen
            });
            plans.push(match kept {
                Some(i) => Plan::Keep(i),
                None => Plan::New(super::bind(
                    l,
                    workers,
                    super::affinity::applies(&self.config),
                    None,
                )?),
            });
        }
        let applied = self.keep_restart_only(new);
        let local = crate::discovery::filter::local_addresses();
        // Commit: pools first (listeners route to them), by name and protocol.
        let mut old_pools: Vec<Option<PoolState>> = self.pools.drain(..).map(Some).collect();
        let mut pools = Vec::with_capacity(applied.pools.len());
        let mut pools_changed = Vec::new();
        for p in &applied.pools {
            let looped = pool::looped(&applied, p, &local);
            let kept = old_pools.iter_mut().find_map(|o| {
                o.take_if(|o| o.config.name == p.name && o.config.protocol == p.protocol)
            });
            match kept {
                Some(mut state) => {
                    if state.config != *p
                        || state.backends.iter().map(|b| &b.looped).ne(looped.iter())
                    {
                        state.reconfigure(p.clone(), looped);
                        pools_changed.push(pools.len());
                    }
                    pools.push(state);
                }
                None => {
                    pools.push(PoolState::new(
                        p.clone(),
                        workers,
                        self.passive.clone(),
                        looped,
                    ));
                }
            }
        }
        // Dropped pools stop their probes.
        drop(old_pools);
        self.pools = pools;
        for pi in pools_changed {
            let _ = self.pools[pi].publish();
        }
        let mut old: Vec<Option<ListenerState>> = self.listeners.drain(..).map(Some).collect();
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        let mut next = Vec::with_capacity(applied.listeners.len());
        let mut to_recheck = Vec::new();
        for (l, plan) in applied.listeners.iter().zip(plans) {
            match plan {
                Plan::Keep(i) => {
                    let Some(mut state) = old[i].take() else {
                        continue;
                    };
                    if state.config != *l {
                        let (was, now) = (&state.config.admission, &l.admission);
                        if was.allow != now.allow || was.deny != now.deny {
                            to_recheck.push(Arc::clone(&state.shared));
                        }
                        if was.source_table_size != now.source_table_size {
                            state.shared.sources.set_capacity(now.source_table_size);
                        }
                        state.reconfigure(l.clone(), &self.pools);
                        changed += 1;
                    } else {
                        state.refresh_pools(&self.pools);
                    }
                    next.push(state);
                }
                Plan::New(sockets) => {
                    let mut state = ListenerState::new(l.clone(), workers, &self.pools);
                    state.keep_sockets(&sockets);
                    for (w, socket) in self.workers.iter().zip(sockets) {
                        let _ = w.send(Command::AddListener(WorkerListener {
                            socket,
                            shared: Arc::clone(&state.shared),
                        }));
                    }
                    tracing::info!(listener = %l.name, "listening on {} {}", l.protocol, l.listen);
                    next.push(state);
                    added += 1;
                }
            }
        }
        for state in old.into_iter().flatten() {
            for w in &self.workers {
                let _ = w.send(Command::RemoveListener(Arc::clone(&state.shared)));
            }
            tracing::info!(listener = %state.config.name, "listener removed: no longer accepting on {} {}; open connections carry on", state.config.protocol, state.config.listen);
            removed += 1;
        }
        self.listeners = next;
        // At once, every listener (its pools may have moved or changed): the rechecks
        // below read the new lists from the new routing.
        for l in &mut self.listeners {
            l.publish(&self.pools);
        }
        // After the new lists are published: workers check open connections by them.
        for shared in to_recheck {
            for w in &self.workers {
                let _ = w.send(Command::Recheck(Arc::clone(&shared)));
            }
        }
        if applied.access_log != self.config.access_log {
            self.access_log
                .configure(applied.access_log.as_ref().map(super::log_settings));
        }
        self.config = applied;
        if let Some(c) = &mut self.cluster {
            c.listeners_changed(&self.config);
        }
        self.resplit_fds();
        self.resolving.sets.retain(&self.config);
        self.start_probes();
        Ok(format!(
            "{added} listener(s) added, {changed} changed, {removed} removed"
        ))
    }

    /// Splits the descriptors again for the running config: a reload that adds checked
    /// backends (one probe socket each) or listeners grows the reserve, so the workers'
    /// shares shrink (and grow back when it removes them).
    fn resplit_fds(&mut self) {
        let (limit, open) = self.fds;
        if limit == 0 {
            return;
        }
        let plan = super::fds::plan(limit, open, &self.config);
        tracing::debug!(
            "file descriptors: {} kept for the control plane, {} per worker",
            plan.reserve,
            plan.per_worker
        );
        for w in &self.workers {
            let _ = w.send(Command::FdBudget(plan.per_worker));
        }
    }

    /// `new` with the running values of the settings that need a restart (warning
    /// about each one that changed).
    fn keep_restart_only(&self, mut new: Config) -> Config {
        let old = &self.config;
        let keep = |what: &str, changed: bool| {
            if changed {
                tracing::warn!("{what} changed: that takes a restart; keeping the running value");
            }
        };
        keep("workers", new.workers != old.workers);
        keep(
            "worker_cpu_affinity",
            new.worker_cpu_affinity != old.worker_cpu_affinity,
        );
        keep("udp_kernel_xdp", new.udp_kernel_xdp != old.udp_kernel_xdp);
        new.udp_kernel_xdp.clone_from(&old.udp_kernel_xdp);
        keep("user", new.user != old.user);
        keep("group", new.group != old.group);
        keep("metrics.listen", new.metrics != old.metrics);
        keep("[cluster]", new.cluster != old.cluster);
        new.cluster.clone_from(&old.cluster);
        let old_admin = old.admin.as_ref().map(|a| &a.listen);
        keep(
            "admin.listen",
            new.admin.as_ref().map(|a| &a.listen) != old_admin,
        );
        new.workers = old.workers;
        new.worker_cpu_affinity = old.worker_cpu_affinity;
        new.user.clone_from(&old.user);
        new.group.clone_from(&old.group);
        new.metrics = old.metrics;
        // The token and the host names can change live; the address cannot.
        new.admin = match (old.admin.clone(), new.admin) {
            (Some(mut running), Some(n)) => {
                running.token = n.token;
                running.hosts = n.hosts;
                Some(running)
            }
            (running, _) => running,
        };
        new
    }
}

enum Plan {
    /// Same listener: index in the running list.
    Keep(usize),
    /// New sockets, one per worker.
    New(Vec<BoundSocket>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_their_causes() {
        let e = ConfigError::Read {
            path: "/etc/ringway.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let shown = ReloadError::Config(Arc::new(e)).to_string();
        assert!(
            shown.starts_with("/etc/ringway.toml: cannot read the config file: "),
            "{shown}"
        );
    }
}
