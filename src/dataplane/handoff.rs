//! What a worker hands to another process in an upgrade, and takes from one: its
//! established TCP sessions, as data ([`SessionState`]) and descriptors (both sockets,
//! and each direction's pipe with the bytes in it), and its UDP flows ([`FlowState`]
//! and the flow's connected upstream socket, so the backend sees the same source).
//!
//! The data is the session's whole state, field by field (`Session::export` names
//! every field of a session, so one added later does not compile until it is carried
//! or said not to be); times go as ages, each process having its own clock. The
//! control plane moves it between processes (`control::upgrade`) and finds, in the new
//! process, the listener and backend each session belongs to ([`Adopted`]).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::listener::{ListenerShared, Mode};
use super::stats::BackendStats;

/// Where a draining worker sends what it hands over.
pub type Exporter = std::sync::mpsc::Sender<Handed>;

/// What goes through an [`Exporter`].
#[derive(Debug)]
pub enum Handed {
    /// A session or a flow.
    One(Box<Exported>),
    /// The worker has handed over all its flows (they go at once, sessions as they
    /// are established).
    FlowsDone,
}

/// A session or a flow on its way out: its state and its descriptors, in the order
/// [`State::fds`] says.
#[derive(Debug)]
pub struct Exported {
    /// Its state.
    pub state: State,
    /// A session: client socket, backend socket, then each pipe's read and write
    /// ends. A flow: its upstream socket.
    pub fds: Vec<OwnedFd>,
}

/// A session's or a flow's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// An established TCP session.
    Session(SessionState),
    /// A UDP flow.
    Flow(FlowState),
}

impl State {
    /// How many descriptors go with it.
    pub fn fds(&self) -> usize {
        match self {
            State::Session(s) => s.fds(),
            State::Flow(_) => 1,
        }
    }

    /// Its listener's name.
    pub fn listener(&self) -> &str {
        match self {
            State::Session(s) => &s.listener,
            State::Flow(f) => &f.listener,
        }
    }

    /// Its client.
    pub fn client(&self) -> SocketAddr {
        match self {
            State::Session(s) => s.client,
            State::Flow(f) => f.client,
        }
    }

    /// Its backend: pool, id, address.
    pub fn backend(&self) -> Option<&(String, String, SocketAddr)> {
        match self {
            State::Session(s) => s.backend.as_ref(),
            State::Flow(f) => Some(&f.backend),
        }
    }

    /// Bytes of it held in memory (what makes a message long).
    pub fn held(&self) -> usize {
        match self {
            State::Session(s) => s.up.spill.len() + s.down.spill.len(),
            State::Flow(_) => 0,
        }
    }
}

/// A UDP flow's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    /// Its listener's name.
    pub listener: String,
    /// The client.
    pub client: SocketAddr,
    /// The local address the client reached (wildcard listeners only).
    pub local: Option<std::net::IpAddr>,
    /// The worker that had it: the listener socket its datagrams arrive on is that
    /// worker's.
    pub worker: usize,
    /// Its backend: pool, id, address.
    pub backend: (String, String, SocketAddr),
    /// Since when it is open (ms ago).
    pub age_ms: u64,
    /// Since when it is idle (ms ago).
    pub idle_ms: u64,
    /// Datagrams forwarded and replies sent back since its backend last changed.
    pub sent: u64,
    /// ...
    pub replies: u64,
    /// Over its life: datagrams in and out.
    pub datagrams: (u64, u64),
    /// ... and bytes.
    pub bytes: (u64, u64),
    /// It holds a place in its listener's per-source table.
    pub admitted: bool,
    /// The server name its QUIC Initial asked for.
    pub sni: Option<String>,
    /// Its backend answered ICMP port unreachable.
    pub refused: bool,
}

/// One session on its way in: what was exported, and the listener and backend of
/// this process it belongs to.
#[derive(Debug)]
pub struct Adopted {
    /// What the old process sent.
    pub exported: Exported,
    /// Its listener here.
    pub listener: Arc<ListenerShared>,
    /// Its backend here (`None`: the new config has no backend of that id and
    /// address; the session carries on, counted nowhere).
    pub target: Option<Arc<BackendStats>>,
}

/// An established session's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// Its listener's name.
    pub listener: String,
    /// The client (the one a PROXY header named, when one did).
    pub client: SocketAddr,
    /// Its backend: pool, id, address.
    pub backend: Option<(String, String, SocketAddr)>,
    /// Since when it is open (ms ago).
    pub age_ms: u64,
    /// Since when it is idle (ms ago).
    pub idle_ms: u64,
    /// Its idle timeout (ms).
    pub idle_timeout_ms: u32,
    /// Accept to backend connection (ms).
    pub connect_ms: u32,
    /// Connect attempts after the first.
    pub retries: u8,
    /// Whose EOF came first: `client` or `backend`.
    pub first_eof: Option<String>,
    /// It holds a place in its listener's per-source table.
    pub admitted: bool,
    /// The server name its ClientHello asked for.
    pub sni: Option<String>,
    /// Backends whose connect attempts failed before the one it reached.
    pub failed: Vec<String>,
    /// Client -> backend.
    pub up: HalfState,
    /// Backend -> client.
    pub down: HalfState,
}

impl SessionState {
    /// How many descriptors go with it: two sockets and two ends per pipe.
    pub fn fds(&self) -> usize {
        2 + 2 * (usize::from(self.up.pipe) + usize::from(self.down.pipe))
    }
}

/// One direction's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfState {
    /// It has a pipe (its descriptors follow the sockets').
    pub pipe: bool,
    /// Bytes in the pipe not yet written to the destination.
    pub pending: u32,
    /// Bytes held in memory behind those.
    pub spill: Vec<u8>,
    /// How it moves bytes: `auto`, `splice` or `copy`.
    pub mode: String,
    /// It splices now.
    pub splice: bool,
    /// The source's EOF came.
    pub eof: bool,
    /// The EOF was passed on.
    pub shut: bool,
    /// It moved bytes since the last look.
    pub active: bool,
    /// Bytes delivered.
    pub bytes: u64,
}

/// A mode's name in [`HalfState::mode`].
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Auto | Mode::Kernel => "auto",
        Mode::Splice => "splice",
        Mode::Copy => "copy",
    }
}

/// The mode [`mode_name`] named (an unknown name: the default).
pub fn mode_of(name: &str) -> Mode {
    match name {
        "splice" => Mode::Splice,
        "copy" => Mode::Copy,
        _ => Mode::Auto,
    }
}
