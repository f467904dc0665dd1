//! The control task's part of an upgrade: one at a time, built from the listeners it
//! keeps, run off the task, counted, and announced to the signal task on success.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::carry::State;
use super::old::hand_over;
use super::wire::Kind;
use super::UpgradeError;
use crate::config::Protocol;
use crate::control::actor::{Msg, Upgraded};
use crate::control::core::Control;
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
            me.send_blocking(Msg::UpgradeDone(Box::new((result, reply))));
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
    pub fn on_upgrade_done(&mut self, result: Upgraded, reply: oneshot::Sender<Upgraded>) {
        match &result {
            Ok((pid, took)) => {
                self.upgrade.succeeded += 1;
                self.upgrade.last = Some(*took);
                tracing::info!(
                    "upgrade: process {pid} took over in {} ms; this one stops accepting and drains its open connections",
                    took.as_millis()
                );
                if let Some(stop) = &self.upgrade.stop {
                    let _ = stop.send(*pid);
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
        let _ = reply.send(result);
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
