//! The control task's part of an upgrade: one at a time, built from the listeners it
//! keeps, run off the task, counted, and announced to the signal task on success.

use std::time::Duration;

use tokio::sync::oneshot;

use super::old::hand_over;
use super::wire::Kind;
use super::UpgradeError;
use crate::config::Protocol;
use crate::control::actor::{Msg, Upgraded};
use crate::control::core::Control;

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
        let (offer, fds) = match self.upgrade.offer(listeners) {
            Ok(o) => o,
            Err(e) => {
                let _ = reply.send(Err(UpgradeError::Channel(e)));
                return;
            }
        };
        self.upgrade.busy = true;
        let command = self.upgrade.command();
        tracing::info!(
            "upgrade: starting {} and offering it {} listening sockets",
            command.0.display(),
            fds.len()
        );
        let me = self.me.clone();
        tokio::task::spawn_blocking(move || {
            let result = hand_over(command, &offer, &fds);
            me.send_blocking(Msg::UpgradeDone(Box::new((result, reply))));
        });
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
        self.mark_view_stale();
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
        self.mark_view_stale();
    }
}
