//! The control plane's one owner of state: a task that holds [`Control`] and applies
//! typed messages in the order they arrive (check results, passive failures, admin
//! calls, reload requests and loaded configs, resolver answers, status and metrics
//! requests). Everything else (HTTP handlers, probes, signals, background lookups)
//! holds a [`Handle`], sends a message and, when it needs one, awaits the answer. No
//! lock exists, and "a reload while a check is in flight" is a question of message
//! order, not of timing.
//!
//! Slow work never runs on the task: reading and resolving a config and resolving
//! backend host names run on tokio's blocking pool and come back as messages.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::core::{AdminError, Control, Status};
use super::probes::Outcome;
use super::reload::ReloadError;
use super::resolver::Round;
use super::state::Admin;
use super::status::BackendStatus;
use crate::config::{Config, ConfigError};
use crate::dataplane::PassiveFailure;
use crate::discovery::SetAnswer;

/// The answer to a reload request.
pub type Reloaded = Result<String, ReloadError>;

/// What the control task is asked to do.
#[derive(Debug)]
pub enum Msg {
    /// An active check finished.
    Checked(Outcome),
    /// `GET /status`.
    Status(oneshot::Sender<Status>),
    /// `GET /metrics`.
    Metrics(oneshot::Sender<String>),
    /// Drain, enable or disable a backend.
    SetAdmin {
        /// Listener name.
        listener: String,
        /// Backend id.
        id: String,
        /// The new admin state.
        admin: Admin,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<BackendStatus, AdminError>>,
    },
    /// Re-read the config file (SIGHUP, `POST /reload`); the answer, if wanted.
    Reload(Option<oneshot::Sender<Reloaded>>),
    /// A config read and resolved off the task, with its backend sets' answers.
    Loaded(Box<Result<(Config, Vec<SetAnswer>), ConfigError>>),
    /// A round of lookups (host names, backend sets) done off the task.
    Resolved(Box<Round>),
    /// TCP connections and UDP flows open now and the shutdown timeout, for a drain.
    Draining(oneshot::Sender<((usize, usize), Duration)>),
}

/// A way to reach the control task.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    token: watch::Receiver<Option<String>>,
}

impl Handle {
    /// Sends a message; false when the task is gone.
    pub fn send(&self, msg: Msg) -> bool {
        self.tx.send(msg).is_ok()
    }

    /// Sends a request built around a reply channel and waits for the answer.
    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        if !self.send(msg(reply)) {
            return None;
        }
        answer.await.ok()
    }

    /// The status.
    pub async fn status(&self) -> Option<Status> {
        self.ask(Msg::Status).await
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> Option<String> {
        self.ask(Msg::Metrics).await
    }

    /// Sets a backend's admin state.
    pub async fn set_admin(
        &self,
        listener: &str,
        id: &str,
        admin: Admin,
    ) -> Option<Result<BackendStatus, AdminError>> {
        self.ask(|reply| Msg::SetAdmin {
            listener: listener.to_string(),
            id: id.to_string(),
            admin,
            reply,
        })
        .await
    }

    /// Reloads the config and waits for the outcome.
    pub async fn reload(&self) -> Reloaded {
        self.ask(|reply| Msg::Reload(Some(reply)))
            .await
            .unwrap_or(Err(ReloadError::Stopped))
    }

    /// Open TCP connections and UDP flows, and the shutdown timeout.
    pub async fn draining(&self) -> Option<((usize, usize), Duration)> {
        self.ask(Msg::Draining).await
    }

    /// The admin API's bearer token now (it changes with reloads).
    pub fn token(&self) -> Option<String> {
        self.token.borrow().clone()
    }
}

/// The ends the control task reads from, made before the state (which needs a
/// [`Handle`]).
#[derive(Debug)]
pub struct Mailbox {
    rx: mpsc::UnboundedReceiver<Msg>,
    token: watch::Sender<Option<String>>,
}

/// A handle and the mailbox it sends to; `token` is the admin token to start with.
pub fn channel(token: Option<String>) -> (Handle, Mailbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (token_tx, token_rx) = watch::channel(token);
    (
        Handle {
            tx,
            token: token_rx,
        },
        Mailbox {
            rx,
            token: token_tx,
        },
    )
}

/// Serves messages, passive failures and deadlines (hold-downs, re-resolution) until
/// the runtime stops.
pub async fn run(
    mut control: Control,
    mut mailbox: Mailbox,
    mut passive: mpsc::UnboundedReceiver<PassiveFailure>,
) {
    loop {
        let wake = [control.next_readmit(), Some(control.resolving.due())]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            msg = mailbox.rx.recv() => match msg {
                Some(msg) => handle(&mut control, msg, &mailbox.token),
                None => return,
            },
            Some(p) = passive.recv() => control.on_passive(p, Instant::now()),
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                control.readmit(now);
                control.resolve_if_due(now);
            }
        }
    }
}

fn handle(control: &mut Control, msg: Msg, token: &watch::Sender<Option<String>>) {
    match msg {
        Msg::Checked(o) => control.on_checked(o, Instant::now()),
        Msg::Status(reply) => {
            let _ = reply.send(control.status());
        }
        Msg::Metrics(reply) => {
            let _ = reply.send(control.metrics());
        }
        Msg::SetAdmin {
            listener,
            id,
            admin,
            reply,
        } => {
            let _ = reply.send(control.set_admin(&listener, &id, admin));
        }
        Msg::Reload(reply) => control.request_reload(reply),
        Msg::Loaded(result) => {
            control.on_loaded(*result);
            let now = control.config.admin.as_ref().and_then(|a| a.token.clone());
            token.send_if_modified(|t| {
                let changed = *t != now;
                *t = now;
                changed
            });
        }
        Msg::Resolved(round) => control.on_resolved(&round, Instant::now()),
        Msg::Draining(reply) => {
            let _ = reply.send((control.open(), control.config.shutdown_timeout));
        }
    }
}
