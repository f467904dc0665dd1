//! The control task's part of an upgrade: one at a time, built from the listeners it
//! keeps, run off the task, counted, and announced to the signal task on success.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::carry::State;
use super::new::receive_sessions;
use super::old::{hand_over, send_sessions};
use super::wire::Kind;
use super::UpgradeError;
use crate::config::Protocol;
use crate::control::actor::{Handle, Msg, Upgraded};
use crate::control::core::Control;
use crate::dataplane::handoff::{Adopted, Exported, Exporter, State as Item};
use crate::dataplane::Command;
use crate::metrics::carry::NOT_FROM_TEXT;

impl Control {
    /// Starts an upgrade (unless one is under way or done); `reply` gets its outcome.
    pub fn request_upgrade(&mut self, reply: oneshot::Sender<Upgraded>) {
        if self.upgrade.busy {
            let _ = reply.send(Err(UpgradeError::Busy));
            return;
        }
        let listeners = self.listeners.iter().map(|l| {
            let kind = match l.config.protocol {
                Protocol::Tcp => Kind::Tcp,
                Protocol::Udp => Kind::Udp,
            };
            (
                kind,
                l.config.name.as_str(),
                l.config.listen.to_string(),
                l.sockets(),
            )
        });
        let (mut offer, fds) = match self.upgrade.offer(listeners) {
            Ok(o) => o,
            Err(e) => {
                let _ = reply.send(Err(UpgradeError::Channel(e)));
                return;
            }
        };
        self.upgrade.busy = true;
        let mut state = self.carried_state();
        let command = self.upgrade.command();
        tracing::info!(
            "upgrade: starting {} and offering it {} listening sockets and the state of {} backends",
            command.0.display(),
            fds.len(),
            state.backends.len(),
        );
        // The counters as they are now (the view is fresh: published just above).
        let published = Arc::clone(&self.published);
        let me = self.me.clone();
        tokio::task::spawn_blocking(move || {
            let text = crate::control::view::metrics_text(&published.load());
            state.metrics = crate::metrics::carry::totals(&text, NOT_FROM_TEXT);
            let result = serde_json::to_vec(&state)
                .map_err(|e| UpgradeError::Message(e.to_string()))
                .and_then(|bytes| {
                    offer.state_bytes = bytes.len();
                    hand_over(command, &offer, &fds, &bytes)
                });
            let (result, channel) = match result {
                Ok((pid, took, channel)) => (Ok((pid, took)), Some(channel)),
                Err(e) => (Err(e), None),
            };
            me.send_blocking(Msg::UpgradeDone(Box::new((result, reply, channel))));
        });
    }

    /// What this process carries to the next one besides its sockets (the counters
    /// of `/metrics` are read off the control task); publishes the view first.
    fn carried_state(&mut self) -> State {
        let now = Instant::now();
        self.publish_all_now();
        State {
            backends: self
                .pools
                .iter()
                .flat_map(|p| p.backends.iter().map(|b| b.carry(&p.config.name, now)))
                .collect(),
            sets: State::sets_of(&self.config),
            metrics: Vec::new(),
        }
    }

    /// An upgrade finished: counted and logged; on success the signal task is told,
    /// which stops accepting and drains (and no other upgrade starts here).
    pub fn on_upgrade_done(
        &mut self,
        result: Upgraded,
        reply: oneshot::Sender<Upgraded>,
        channel: Option<OwnedFd>,
    ) {
        let mut handed: Option<oneshot::Receiver<()>> = None;
        match &result {
            Ok((pid, took)) => {
                self.upgrade.channel = channel;
                self.upgrade.succeeded += 1;
                self.upgrade.last = Some(*took);
                tracing::info!(
                    "upgrade: process {pid} took over in {} ms; this one stops accepting and drains its open connections",
                    took.as_millis()
                );
                if let Some(stop) = &self.upgrade.stop {
                    let (ack, acked) = oneshot::channel();
                    if stop.send((*pid, ack)).is_ok() {
                        handed = Some(acked);
                    }
                }
            }
            Err(e) => {
                self.upgrade.busy = false;
                self.upgrade.failed += 1;
                tracing::error!("upgrade failed, this process serves on: {e}");
            }
        }
        // Published before the answer: whoever asked reads `/metrics` next.
        self.publish_view(Instant::now());
        match handed {
            // Answered once this process accepts no more requests: whoever asked reads
            // `/status` next, and it must be the new process's.
            Some(acked) => {
                tokio::spawn(async move {
                    let _ = acked.await;
                    let _ = reply.send(result);
                });
            }
            None => {
                let _ = reply.send(result);
            }
        }
    }

    /// Closes the copies of the listening sockets kept for an upgrade (a drain: the
    /// workers close theirs next, and nothing may hold them open after).
    pub fn release_sockets(&mut self) {
        for l in &mut self.listeners {
            l.release_sockets();
        }
        self.upgrade.release();
    }

    /// This process took over from an old one in `took`: the hand-off's duration,
    /// and this upgrade counted with the ones before it.
    pub fn took_over(&mut self, took: Duration) {
        self.upgrade.succeeded += 1;
        self.upgrade.last = Some(took);
        self.publish_view(Instant::now());
    }
}

/// Where draining workers hand their sessions after an upgrade, and the thread that
/// sends them to the new process (it ends once every worker has stopped).
#[derive(Debug)]
pub struct Handing {
    /// A clone for each worker's drain.
    pub exporter: Exporter,
    /// What was sent, once done.
    pub sender: std::thread::JoinHandle<super::old::Sent>,
}

impl Control {
    /// After an upgrade, the drain hands the sessions to the new process: the channel
    /// to it and a thread that sends what the workers export. `None` without one.
    pub fn hand_sessions_over(&mut self) -> Option<Handing> {
        let channel = self.upgrade.channel.take()?;
        let (exporter, handed) = std::sync::mpsc::channel();
        let workers = self.workers.len();
        let sender = std::thread::Builder::new()
            .name("ringway-handoff".into())
            .spawn(move || send_sessions(channel, handed, workers));
        match sender {
            Ok(sender) => Some(Handing { exporter, sender }),
            Err(e) => {
                tracing::error!("cannot start handing sessions over ({e}): they drain here");
                None
            }
        }
    }

    /// Sessions the old process handed over: each to a worker here (in turn), with
    /// its listener and backend of this process, found by name, id and address. One
    /// whose listener the new config does not have is closed.
    pub fn adopt_sessions(&mut self, handed: Vec<Exported>, flows_done: bool) {
        let workers = self.workers.len().max(1);
        let mut per_worker: Vec<Vec<Adopted>> = (0..workers).map(|_| Vec::new()).collect();
        for exported in handed {
            let s = &exported.state;
            let Some(l) = self
                .listeners
                .iter()
                .find(|l| *l.config.name == *s.listener())
            else {
                tracing::warn!(listener = %s.listener(), client = %s.client(), "a handed-over session's or flow's listener is gone from the config: closing it");
                continue;
            };
            let target = s.backend().and_then(|(pool, id, addr)| {
                let p = self.pools.iter().find(|p| p.config.name == *pool)?;
                let b = &p.backends[p.backend_index(id)?];
                (b.stats.addr == *addr).then(|| Arc::clone(&b.stats))
            });
            // A flow goes to the worker that reads the listener socket its
            // datagrams arrive on; a session to any.
            let i = match s {
                Item::Flow(f) => f.worker % workers,
                Item::Session(_) => {
                    self.upgrade.next_worker += 1;
                    self.upgrade.next_worker % workers
                }
            };
            per_worker[i].push(Adopted {
                exported,
                listener: Arc::clone(&l.shared),
                target,
            });
        }
        for (w, batch) in self.workers.iter().zip(per_worker) {
            if !batch.is_empty() {
                let _ = w.send(Command::Adopt(batch));
            }
        }
        if flows_done && !std::mem::replace(&mut self.upgrade.udp_started, true) {
            for w in &self.workers {
                let _ = w.send(Command::StartUdp);
            }
        }
    }
}

/// The longest the new process holds its UDP listeners for the old one's flows
/// (they come within milliseconds; an old process that never sends them, or one
/// that hangs, does not keep UDP down).
const HOLD_UDP: Duration = Duration::from_secs(1);

/// In the new process: takes the sessions the old one hands over, on a thread of
/// its own, and gives them to the control task; logs how many came.
pub fn receive(channel: OwnedFd, control: Handle) {
    let later = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(HOLD_UDP).await;
        later.send(Msg::Adopt(Vec::new(), true)).await;
    });
    let spawned = std::thread::Builder::new()
        .name("ringway-handoff".into())
        .spawn(move || {
            let result = receive_sessions(channel, |batch, flows_done| {
                control.send_blocking(Msg::Adopt(batch, flows_done));
            });
            // Whatever happened, the UDP listeners are read from now on.
            control.send_blocking(Msg::Adopt(Vec::new(), true));
            match result {
                Ok((n, took)) => tracing::info!(
                    "upgrade: the old process handed over {n} established TCP session(s) and UDP flow(s) in {} ms",
                    took.as_millis()
                ),
                Err(e) => tracing::error!("upgrade: taking sessions over failed: {e}"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!("upgrade: cannot take sessions over ({e}): the old process drains them");
    }
}
