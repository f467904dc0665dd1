//! The control plane's one owner of state: a task that holds [`Control`] and applies
//! typed messages in the order they arrive (check results, passive failures, admin
//! calls, reload requests and loaded configs, resolver answers). Everything else
//! (HTTP handlers, probes, signals, background lookups) holds a [`Handle`], sends a
//! message and, when it needs one, awaits the answer. No lock exists, and "a reload
//! while a check is in flight" is a question of message order, not of timing.
//!
//! The task takes every message waiting (up to [`BATCH`]) before it publishes what
//! they changed ([`Control::flush`]). Its mailbox is bounded ([`MAILBOX`]): probes and
//! HTTP handlers wait for room instead of piling up messages. `/status` and
//! `/metrics` never reach the task: they render the view it publishes
//! ([`super::view`]) on the blocking pool.
//!
//! Slow work never runs on the task: reading and resolving a config and resolving
//! backend host names run on tokio's blocking pool and come back as messages.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::admin::Place;
use super::admin::Policy;
use super::backend::Admin;
use super::core::{AdminError, Control, SWEEP};
use super::probes::Outcome;
use super::reload::ReloadError;
use super::resolver::Round;
use super::status::BackendStatus;
use super::view::Published;
use crate::config::{Config, ConfigError};
use crate::discovery::SetAnswer;

/// Messages the mailbox holds; senders wait for room beyond it.
pub const MAILBOX: usize = 4096;

/// Messages taken in one go before what they changed is published.
pub const BATCH: usize = 1024;

/// The answer to a reload request.
pub type Reloaded = Result<String, ReloadError>;

/// The answer to an upgrade request: the new process's id and how long the hand-off
/// took.
pub type Upgraded = Result<(u32, Duration), super::upgrade::UpgradeError>;

/// What a drain needs: TCP connections and UDP flows open, the shutdown timeout,
/// and after an upgrade where the workers hand their sessions (and the thread that
/// sends them on, to wait for).
pub type Drain = (
    (usize, usize),
    Duration,
    Option<super::upgrade::task::Handing>,
);

/// What the control task is asked to do.
#[derive(Debug)]
pub enum Msg {
    /// An active check finished.
    Checked(Outcome),
    /// Drain, enable or disable a backend.
    SetAdmin {
        /// Whose backend.
        place: Place,
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
    /// TCP connections and UDP flows open now and the shutdown timeout, for a drain;
    /// after an upgrade, where the workers hand their sessions.
    Draining(oneshot::Sender<Drain>),
    /// A worker stopped on its own (it panicked).
    WorkerFailed,
    /// Start the binary again and hand it the sockets (SIGUSR2, `POST /upgrade`).
    Upgrade(oneshot::Sender<Upgraded>),
    /// An upgrade finished, with whoever waits for it.
    UpgradeDone(Box<(Upgraded, oneshot::Sender<Upgraded>, Option<OwnedFd>)>),
    /// Sessions and flows the old process handed over (this one took over from it),
    /// and whether every flow has come.
    Adopt(Vec<crate::dataplane::handoff::Exported>, bool),
    /// This process took over from an old one, in this long.
    TookOver(Duration),
    /// `POST /leave` (true) or `/stay` (false).
    Leave(bool, oneshot::Sender<super::cluster::Left>),
}

/// A way to reach the control task.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg>,
    policy: watch::Receiver<Policy>,
    published: Arc<Published>,
}

impl Handle {
    /// Sends a message, waiting for room in the mailbox; false when the task is gone.
    pub async fn send(&self, msg: Msg) -> bool {
        self.tx.send(msg).await.is_ok()
    }

    /// Sends a message from a thread outside the runtime (the blocking pool),
    /// waiting for room; false when the task is gone.
    pub fn send_blocking(&self, msg: Msg) -> bool {
        self.tx.blocking_send(msg).is_ok()
    }

    /// Sends a request built around a reply channel and waits for the answer.
    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        if !self.send(msg(reply)).await {
            return None;
        }
        answer.await.ok()
    }

    /// Where the control task publishes views (`/status`, `/metrics` render them).
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// Sets a backend's admin state.
    pub async fn set_admin(
        &self,
        place: Place,
        id: &str,
        admin: Admin,
    ) -> Option<Result<BackendStatus, AdminError>> {
        self.ask(|reply| Msg::SetAdmin {
            place,
            id: id.to_string(),
            admin,
            reply,
        })
        .await
    }

    /// Marks this node as leaving its fleet (or staying): whether that changed
    /// anything, and the cluster's status after.
    pub async fn leave(&self, leave: bool) -> Option<super::cluster::Left> {
        self.ask(|reply| Msg::Leave(leave, reply)).await
    }

    /// Reloads the config and waits for the outcome.
    pub async fn reload(&self) -> Reloaded {
        self.ask(|reply| Msg::Reload(Some(reply)))
            .await
            .unwrap_or(Err(ReloadError::Stopped))
    }

    /// Starts the binary again, hands it the sockets, and waits for the outcome.
    pub async fn upgrade(&self) -> Upgraded {
        self.ask(Msg::Upgrade)
            .await
            .unwrap_or(Err(super::upgrade::UpgradeError::Stopped))
    }

    /// This process took over from an old one in `took`.
    pub async fn upgraded_in(&self, took: Duration) {
        let _ = self.tx.send(Msg::TookOver(took)).await;
    }

    /// Open TCP connections and UDP flows, and the shutdown timeout.
    pub async fn draining(&self) -> Option<Drain> {
        self.ask(Msg::Draining).await
    }

    /// Who may call the admin API now (its token and names change with reloads).
    pub fn policy(&self) -> Policy {
        self.policy.borrow().clone()
    }
}

/// The ends the control task reads from, made before the state (which needs a
/// [`Handle`]).
#[derive(Debug)]
pub struct Mailbox {
    rx: mpsc::Receiver<Msg>,
    policy: watch::Sender<Policy>,
}

/// A handle and the mailbox it sends to; `policy`: who may call the admin API at
/// start, `published`: where views go.
pub fn channel(policy: Policy, published: Arc<Published>) -> (Handle, Mailbox) {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (policy_tx, policy_rx) = watch::channel(policy);
    (
        Handle {
            tx,
            policy: policy_rx,
            published,
        },
        Mailbox {
            rx,
            policy: policy_tx,
        },
    )
}

/// Serves messages, passive failures and deadlines (hold-downs, re-resolution,
/// publishing, sweeps) until the runtime stops.
pub async fn run(
    mut control: Control,
    mut mailbox: Mailbox,
    mut passive: crate::dataplane::PassiveReceiver,
) {
    let mut flush_at: Option<Instant> = None;
    let mut sweep_at = Instant::now() + SWEEP;
    loop {
        let wake = [
            control.next_readmit(),
            Some(control.resolving.due()),
            flush_at,
            Some(sweep_at),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            msg = mailbox.rx.recv() => match msg {
                Some(msg) => {
                    handle(&mut control, msg, &mailbox.policy);
                    for _ in 1..BATCH {
                        match mailbox.rx.try_recv() {
                            Ok(msg) => handle(&mut control, msg, &mailbox.policy),
                            Err(_) => break,
                        }
                    }
                }
                None => return,
            },
            Some(p) = passive.recv() => {
                let now = Instant::now();
                control.on_passive(p, now);
                for _ in 1..BATCH {
                    match passive.try_recv() {
                        Ok(p) => control.on_passive(p, now),
                        Err(_) => break,
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                control.readmit(now);
                control.resolve_if_due(now);
                if now >= sweep_at {
                    control.sweep_passive(now);
                    if let Some(p) = control.udp_program.as_mut() {
                        p.look(now);
                    }
                    sweep_at = now + SWEEP;
                }
            }
        }
        flush_at = control.flush(Instant::now());
    }
}

fn handle(control: &mut Control, msg: Msg, policy: &watch::Sender<Policy>) {
    match msg {
        Msg::Checked(o) => control.on_checked(o, Instant::now()),
        Msg::SetAdmin {
            place,
            id,
            admin,
            reply,
        } => {
            let answer = match place {
                Place::Listener(l) => control.set_admin(&l, &id, admin),
                Place::Pool(p) => control.set_pool_admin(&p, &id, admin),
            };
            let _ = reply.send(answer);
        }
        Msg::Reload(reply) => control.request_reload(reply),
        Msg::Loaded(result) => {
            control.on_loaded(*result);
            let now = super::policy_of(&control.config);
            policy.send_if_modified(|p| {
                let changed = *p != now;
                *p = now;
                changed
            });
        }
        Msg::Resolved(round) => control.on_resolved(&round, Instant::now()),
        Msg::WorkerFailed => control.worker_failed(),
        Msg::Draining(reply) => {
            // The copies kept for an upgrade would keep the listening sockets open
            // (accepting handshakes nobody takes) once the workers close theirs.
            control.release_sockets();
            let handing = control.hand_sessions_over();
            let _ = reply.send((control.open(), control.config.shutdown_timeout, handing));
        }
        Msg::Upgrade(reply) => control.request_upgrade(reply),
        Msg::UpgradeDone(done) => {
            let (result, reply, channel) = *done;
            control.on_upgrade_done(result, reply, channel);
        }
        Msg::TookOver(took) => control.took_over(took),
        Msg::Adopt(handed, flows_done) => control.adopt_sessions(handed, flows_done),
        Msg::Leave(leave, reply) => {
            let _ = reply.send(control.set_leaving(leave, std::time::SystemTime::now()));
        }
    }
}
