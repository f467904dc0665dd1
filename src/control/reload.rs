//! Live reload: SIGHUP (or `POST /reload`) re-reads the config file and applies it
//! without dropping a connection or a flow.
//!
//! Everything that can fail (reading, validating, binding new listeners) happens
//! before anything changes; then the new state is committed in one step:
//! - a listener with the same name, protocol and address keeps its sockets; its new
//!   settings and backends are published as a new routing (open connections keep the
//!   backend they have; backends keep health, admin state and counters by id);
//! - a new listener (or one whose protocol or address changed) gets new sockets on
//!   every worker;
//! - a removed listener stops accepting; its open connections and flows carry on.
//!
//! `workers`, `user`, `group`, `metrics.listen` and `admin.listen` need a restart: a
//! reload that changes them says so and keeps the running values.

use anyhow::Context as _;

use super::core::Control;
use super::state::ListenerState;
use crate::config::Config;
use crate::dataplane::{BoundSocket, Command, WorkerListener};

impl Control {
    /// Re-reads the config file and applies it; on any error keeps the running config.
    /// Returns the error, if any, as logged.
    pub fn reload(&mut self) -> Result<String, String> {
        let path = self.config.path.clone();
        let result = crate::config::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|c| self.apply(c));
        match result {
            Ok(summary) => {
                self.reloads_ok += 1;
                self.last_reload_error = None;
                tracing::info!("reloaded {}: {summary}", path.display());
                Ok(summary)
            }
            Err(e) => {
                self.reloads_failed += 1;
                let why = format!("{e:#}");
                tracing::error!("reload failed, the running config stays: {why}");
                self.last_reload_error = Some(why.clone());
                Err(why)
            }
        }
    }

    /// Applies `new` (a reloaded config, or the running one with re-resolved backend
    /// addresses): binds what is new first, then commits.
    pub(super) fn apply(&mut self, new: Config) -> anyhow::Result<String> {
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
                None => Plan::New(super::bind(l, workers)?),
            });
        }
        let applied = self.keep_restart_only(new);
        // Commit.
        let mut old: Vec<Option<ListenerState>> = self.listeners.drain(..).map(Some).collect();
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        let mut next = Vec::with_capacity(applied.listeners.len());
        let mut to_publish = Vec::new();
        for (l, plan) in applied.listeners.iter().zip(plans) {
            match plan {
                Plan::Keep(i) => {
                    let mut state = old[i].take().context("listener planned twice")?;
                    if state.config != *l {
                        state.reconfigure(l.clone());
                        to_publish.push(next.len());
                        changed += 1;
                    }
                    next.push(state);
                }
                Plan::New(sockets) => {
                    let state = ListenerState::new(l.clone(), workers, self.passive.clone());
                    for (w, socket) in self.workers.iter().zip(sockets) {
                        let _ = w.send(Command::AddListener(WorkerListener {
                            socket,
                            shared: std::sync::Arc::clone(&state.shared),
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
                let _ = w.send(Command::RemoveListener(std::sync::Arc::clone(
                    &state.shared,
                )));
            }
            tracing::info!(listener = %state.config.name, "listener removed: no longer accepting on {} {}; open connections carry on", state.config.protocol, state.config.listen);
            removed += 1;
        }
        self.listeners = next;
        for li in to_publish {
            self.publish(li);
        }
        self.start_probes();
        self.config = applied;
        Ok(format!(
            "{added} listener(s) added, {changed} changed, {removed} removed"
        ))
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
        keep("user", new.user != old.user);
        keep("group", new.group != old.group);
        keep("metrics.listen", new.metrics != old.metrics);
        let old_admin = old.admin.as_ref().map(|a| a.listen);
        keep(
            "admin.listen",
            new.admin.as_ref().map(|a| a.listen) != old_admin,
        );
        new.workers = old.workers;
        new.user.clone_from(&old.user);
        new.group.clone_from(&old.group);
        new.metrics = old.metrics;
        // The token can change live; the address cannot.
        new.admin = match (old.admin.clone(), new.admin) {
            (Some(mut running), Some(n)) => {
                running.token = n.token;
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
