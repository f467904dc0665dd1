//! The new process's side: what the old process handed over, taken as the config asks
//! for it, and the answer that lets the old process go.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::time::Instant;

use super::carry::State;
use super::wire::{self, Answer, Batch, Kind, Offer, Offered, Taken, VERSION};
use super::{UpgradeError, ENV};
use crate::dataplane::handoff::{Exported, State as Item};
use crate::sys::fdpass;

/// What an old process handed this one.
#[derive(Debug)]
pub struct Inherited {
    channel: OwnedFd,
    offered: Vec<(Offered, Vec<OwnedFd>)>,
    upgrades: u64,
    /// The old process's hand-off version.
    version: u32,
    state: State,
    since: Instant,
}

impl Inherited {
    /// The hand-off, when this process was started by an upgrade ([`ENV`] is set):
    /// reads the offer and its descriptors. An offer of a newer version than this
    /// binary's is answered with a refusal and is an error here.
    pub fn from_env() -> Result<Option<Inherited>, UpgradeError> {
        let Some(value) = std::env::var_os(ENV) else {
            return Ok(None);
        };
        // Not for the processes this one starts (a later upgrade sets its own).
        std::env::remove_var(ENV);
        let raw: RawFd = value
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| UpgradeError::Message(format!("{ENV}={value:?}")))?;
        let since = Instant::now();
        let channel = fdpass::adopt(raw)?;
        let offer: serde_json::Value = wire::recv(channel.as_fd())?
            .ok_or_else(|| UpgradeError::Message("the old process closed first".into()))?;
        match wire::version_of(&offer) {
            Some(v) if v >= 1 && v <= u64::from(VERSION) => {}
            v => {
                let why = format!(
                    "hand-off version {} is not one this binary reads (1 to {VERSION})",
                    v.map_or("(none)".to_string(), |v| v.to_string())
                );
                let _ = wire::send(channel.as_fd(), &Answer::Failed { why: why.clone() });
                return Err(UpgradeError::Refused(why));
            }
        }
        let offer: Offer =
            serde_json::from_value(offer).map_err(|e| UpgradeError::Message(e.to_string()))?;
        let total = offer.sockets.iter().map(|s| s.count).sum();
        let mut fds = wire::recv_fds(channel.as_fd(), total)?.into_iter();
        let state = match offer.state_bytes {
            0 => State::default(),
            n => {
                let bytes = wire::recv_bytes(channel.as_fd(), n)?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| UpgradeError::Message(format!("carried state: {e}")))?
            }
        };
        let offered = offer
            .sockets
            .into_iter()
            .map(|o| {
                let mine: Vec<OwnedFd> = fds.by_ref().take(o.count).collect();
                (o, mine)
            })
            .collect();
        Ok(Some(Inherited {
            channel,
            offered,
            upgrades: offer.upgrades,
            version: offer.version,
            state,
            since,
        }))
    }

    /// The descriptors offered for `kind` `name` on `addr` (none when it was not
    /// offered: the caller binds).
    pub fn take(&mut self, kind: Kind, name: &str, addr: &str) -> Vec<OwnedFd> {
        self.offered
            .iter_mut()
            .find(|(o, _)| o.kind == kind && o.name == name && o.addr == addr)
            .map(|(_, fds)| std::mem::take(fds))
            .unwrap_or_default()
    }

    /// What the old process carried over besides its sockets.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The old process hands its sessions and flows over after the answer (hand-off
    /// version 2 on; an older one drains them itself).
    pub fn sends_flows(&self) -> bool {
        self.version >= 2
    }

    /// Upgrades before this one.
    pub fn upgrades(&self) -> u64 {
        self.upgrades
    }

    /// Tells the old process this one serves; the time since the offer came, and
    /// the channel its sessions come through next ([`receive_sessions`]).
    pub fn ready(self) -> Result<(std::time::Duration, OwnedFd), UpgradeError> {
        wire::send(
            self.channel.as_fd(),
            &Answer::Ready {
                pid: std::process::id(),
            },
        )?;
        Ok((self.since.elapsed(), self.channel))
    }

    /// Tells the old process why this one will not serve.
    pub fn failed(self, why: &str) {
        let _ = wire::send(
            self.channel.as_fd(),
            &Answer::Failed {
                why: why.to_string(),
            },
        );
    }
}

/// Takes the sessions and flows the old process hands over after the answer, a
/// batch at a time (each answered once its descriptors are here), giving each batch
/// to `take` with whether every flow has come, until the old process closes the
/// channel (it has stopped). How many, and how long from the answer to the last.
pub fn receive_sessions(
    channel: OwnedFd,
    mut take: impl FnMut(Vec<Exported>, bool),
) -> Result<(usize, std::time::Duration), UpgradeError> {
    let started = Instant::now();
    let mut taken = 0;
    let mut buf = vec![0u8; 1 << 20];
    while let Some(batch) = wire::recv_into::<Batch>(channel.as_fd(), &mut buf)? {
        let total = batch.items.iter().map(Item::fds).sum();
        let mut fds = wire::recv_fds(channel.as_fd(), total)?.into_iter();
        let items: Vec<Exported> = batch
            .items
            .into_iter()
            .map(|state| {
                let fds = fds.by_ref().take(state.fds()).collect();
                Exported { state, fds }
            })
            .collect();
        wire::send(channel.as_fd(), &Taken { items: items.len() })?;
        taken += items.len();
        take(items, batch.flows_done);
    }
    Ok((taken, started.elapsed()))
}
