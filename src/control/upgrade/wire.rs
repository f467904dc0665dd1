//! The hand-off's messages, JSON in `SOCK_SEQPACKET` messages, descriptors riding along
//! (`SCM_RIGHTS`).
//!
//! 1. old -> new: an [`Offer`] (no descriptors): what is offered and how many
//!    descriptors follow, in the order of [`Offer::sockets`].
//! 2. old -> new: the descriptors, at most [`fdpass::MAX_FDS`] a message, each message's
//!    bytes being `fds`.
//! 3. old -> new (version 2 on): the carried state ([`super::carry::State`]), JSON
//!    in messages of at most [`CHUNK`] bytes, [`Offer::state_bytes`] in all.
//! 4. new -> old: an [`Answer`].
//! 5. old -> new (version 2 on): established sessions and UDP flows, a [`Batch`] and
//!    its descriptors at a time, each answered ([`Taken`]), until the old process
//!    closes the channel.
//!
//! Versioned: [`VERSION`] is this binary's. A new process reads offers of its own
//! version and older ones (fields added later have defaults); a version newer than it
//! knows is refused with an answer that says so, a failed upgrade like any other.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::UpgradeError;
use crate::dataplane::handoff::State;
use crate::sys::fdpass;

/// The hand-off version this binary speaks.
///
/// 1. listening sockets.
/// 2. and the carried state: health and admin state, backend sets, counters.
pub const VERSION: u32 = 2;

/// Largest message of the carried state.
pub const CHUNK: usize = 32 << 10;

/// Largest message.
const MAX_MESSAGE: usize = 1 << 20;

/// What the old process offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    /// The hand-off version it speaks.
    pub version: u32,
    /// Its process id.
    pub pid: u32,
    /// Its sockets, in the order their descriptors follow.
    pub sockets: Vec<Offered>,
    /// Upgrades that succeeded before this one (the counter carries on).
    #[serde(default)]
    pub upgrades: u64,
    /// How many bytes of carried state follow the descriptors (version 2 on).
    #[serde(default)]
    pub state_bytes: usize,
}

/// One offered endpoint: `count` descriptors (one per worker for a listener).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offered {
    /// What it is.
    pub kind: Kind,
    /// The listener's name (empty for `/metrics` and the admin API).
    pub name: String,
    /// Where it listens: `IP:port`, or a unix socket's path.
    pub addr: String,
    /// How many descriptors.
    pub count: usize,
}

/// What an offered socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A TCP listener's socket.
    Tcp,
    /// A UDP listener's socket.
    Udp,
    /// `[metrics] listen`.
    Metrics,
    /// `[admin] listen`.
    Admin,
}

/// The new process's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// It serves: the old process may stop.
    Ready {
        /// Its process id.
        pid: u32,
    },
    /// It will not serve: why.
    Failed {
        /// Its own words.
        why: String,
    },
}

/// old -> new, after the answer: established sessions and UDP flows (their
/// descriptors follow, as many as [`State::fds`] says for each, in order), until the
/// old process closes the channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// The sessions and flows.
    pub items: Vec<State>,
    /// Every flow has been sent (the new process may read its UDP listeners now).
    #[serde(default)]
    pub flows_done: bool,
}

/// new -> old: a batch is taken (its descriptors are the new process's now).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Taken {
    /// How many sessions and flows.
    pub items: usize,
}

/// Sends `value` as one message.
pub fn send(sock: BorrowedFd<'_>, value: &impl Serialize) -> Result<(), UpgradeError> {
    let bytes = serde_json::to_vec(value).map_err(|e| UpgradeError::Message(e.to_string()))?;
    fdpass::send(sock, &bytes, &[])?;
    Ok(())
}

/// Sends `fds` in as many messages as it takes.
pub fn send_fds(sock: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> Result<(), UpgradeError> {
    for chunk in fds.chunks(fdpass::MAX_FDS) {
        fdpass::send(sock, b"fds", chunk)?;
    }
    Ok(())
}

/// Sends `bytes` in messages of at most [`CHUNK`] bytes.
pub fn send_bytes(sock: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), UpgradeError> {
    for chunk in bytes.chunks(CHUNK) {
        fdpass::send(sock, chunk, &[])?;
    }
    Ok(())
}

/// Receives `len` bytes sent by [`send_bytes`].
pub fn recv_bytes(sock: impl AsFd, len: usize) -> Result<Vec<u8>, UpgradeError> {
    let mut out = Vec::with_capacity(len);
    let mut buf = vec![0u8; CHUNK];
    while out.len() < len {
        let (n, fds) = fdpass::recv(sock.as_fd(), &mut buf)?;
        if n == 0 {
            return Err(UpgradeError::Message(format!(
                "the old process closed after {} of {len} bytes of state",
                out.len()
            )));
        }
        if !fds.is_empty() {
            return Err(UpgradeError::Message(
                "descriptors where none belong".into(),
            ));
        }
        out.extend_from_slice(&buf[..n]);
    }
    if out.len() > len {
        return Err(UpgradeError::Message(format!(
            "{} bytes of state where {len} were offered",
            out.len()
        )));
    }
    Ok(out)
}

/// Receives one message: `None` when the peer closed.
pub fn recv<T: for<'a> Deserialize<'a>>(sock: impl AsFd) -> Result<Option<T>, UpgradeError> {
    recv_into(sock, &mut vec![0u8; MAX_MESSAGE])
}

/// Receives one short message (an answer, its reason included): `None` when the
/// peer closed. Its buffer is on the stack (the old process's wait polls every
/// 100 ms; a megabyte each time was for nothing).
pub fn recv_small<T: for<'a> Deserialize<'a>>(sock: impl AsFd) -> Result<Option<T>, UpgradeError> {
    recv_into(sock, &mut [0u8; 16 << 10])
}

/// Receives one message into `buf` (longer ones are an error): `None` when the peer
/// closed.
pub fn recv_into<T: for<'a> Deserialize<'a>>(
    sock: impl AsFd,
    buf: &mut [u8],
) -> Result<Option<T>, UpgradeError> {
    let (n, fds) = fdpass::recv(sock, buf)?;
    if n == 0 {
        return Ok(None);
    }
    if !fds.is_empty() {
        return Err(UpgradeError::Message(
            "descriptors where none belong".into(),
        ));
    }
    serde_json::from_slice(&buf[..n])
        .map(Some)
        .map_err(|e| UpgradeError::Message(e.to_string()))
}

/// Receives `count` descriptors.
pub fn recv_fds(sock: impl AsFd, count: usize) -> Result<Vec<OwnedFd>, UpgradeError> {
    let mut fds = Vec::with_capacity(count);
    let mut buf = [0u8; 8];
    while fds.len() < count {
        let (n, got) = fdpass::recv(sock.as_fd(), &mut buf)?;
        if n == 0 {
            return Err(UpgradeError::Message(format!(
                "the old process closed after {} of {count} descriptors",
                fds.len()
            )));
        }
        fds.extend(got);
    }
    if fds.len() > count {
        return Err(UpgradeError::Message(format!(
            "{} descriptors where {count} were offered",
            fds.len()
        )));
    }
    Ok(fds)
}

/// An offer's version, read before the rest (a newer offer may not parse as ours).
pub fn version_of(offer: &serde_json::Value) -> Option<u64> {
    offer.get("version").and_then(serde_json::Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer from a version-1 process (listening sockets only) reads as one with
    /// nothing else carried.
    #[test]
    fn a_version_1_offer_reads_with_nothing_carried() {
        let v1 = r#"{"version":1,"pid":7,"sockets":[{"kind":"tcp","name":"t","addr":"127.0.0.1:80","count":2}]}"#;
        let value: serde_json::Value = serde_json::from_str(v1).unwrap();
        assert_eq!(version_of(&value), Some(1));
        let offer: Offer = serde_json::from_value(value).unwrap();
        assert_eq!((offer.upgrades, offer.state_bytes), (0, 0));
        assert_eq!(offer.sockets[0].count, 2);
        let state: crate::control::upgrade::carry::State = serde_json::from_str("{}").unwrap();
        assert!(state.backends.is_empty() && state.sets.is_empty() && state.metrics.is_empty());
        let batch: Batch = serde_json::from_str(r#"{"items":[]}"#).unwrap();
        assert!(!batch.flows_done);
    }

    /// What this version sends reads back the same, sessions and flows included.
    #[test]
    fn a_batch_round_trips() {
        use crate::dataplane::handoff::{FlowState, HalfState, SessionState, State};
        let half = HalfState {
            pipe: true,
            pending: 5,
            spill: vec![1, 2],
            mode: "splice".into(),
            splice: true,
            eof: false,
            shut: false,
            active: true,
            bytes: 99,
        };
        let session = SessionState {
            listener: "t".into(),
            client: "127.0.0.1:5000".parse().unwrap(),
            backend: Some(("t".into(), "b".into(), "127.0.0.1:80".parse().unwrap())),
            age_ms: 10,
            idle_ms: 1,
            idle_timeout_ms: 1000,
            connect_ms: 2,
            retries: 1,
            first_eof: Some("client".into()),
            admitted: true,
            sni: Some("a.example".into()),
            failed: vec!["c".into()],
            up: half.clone(),
            down: HalfState {
                pipe: false,
                ..half
            },
        };
        let flow = FlowState {
            listener: "u".into(),
            client: "127.0.0.1:6000".parse().unwrap(),
            local: None,
            worker: 1,
            backend: ("u".into(), "x".into(), "127.0.0.1:53".parse().unwrap()),
            age_ms: 3,
            idle_ms: 2,
            sent: 4,
            replies: 4,
            datagrams: (4, 4),
            bytes: (100, 200),
            admitted: false,
            sni: None,
            refused: false,
        };
        let batch = Batch {
            items: vec![State::Session(session), State::Flow(flow)],
            flows_done: true,
        };
        let back: Batch = serde_json::from_slice(&serde_json::to_vec(&batch).unwrap()).unwrap();
        assert_eq!(back.items, batch.items);
        assert!(back.flows_done);
        assert_eq!(back.items.iter().map(State::fds).sum::<usize>(), 2 + 2 + 1);
    }
}
