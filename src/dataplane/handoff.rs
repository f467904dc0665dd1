//! What a worker hands to another process in an upgrade, and takes from one: its
//! established TCP sessions, as data ([`SessionState`]) and descriptors (both sockets,
//! and each direction's pipe with the bytes in it).
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

/// Where a draining worker sends the sessions it hands over.
pub type Exporter = std::sync::mpsc::Sender<Exported>;

/// One session on its way out: its state and its descriptors, in the order
/// [`SessionState::fds`] says.
#[derive(Debug)]
pub struct Exported {
    /// Its state.
    pub state: SessionState,
    /// Client socket, backend socket, then each pipe's read and write ends.
    pub fds: Vec<OwnedFd>,
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
