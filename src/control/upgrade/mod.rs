//! Upgrading the binary in place: the running process starts the binary at the path
//! it was started from, with the same arguments, and hands it, over a unix socket
//! pair (`SCM_RIGHTS`), its state ([`carry`]: health and admin state, backend sets,
//! counters) and its listening sockets (TCP and UDP listeners, `/metrics`, the admin
//! API). The new process loads and checks its config, builds everything on the
//! sockets it was given (binding only what is new), and only then says it is ready;
//! the old process then stops accepting (what already waits in the accept queues is
//! still taken), hands over every established TCP session and UDP flow
//! (`crate::dataplane::handoff`, in acknowledged batches, those still connecting once
//! established) and exits. Until that answer the old process keeps every socket and
//! keeps serving: a new binary that fails to start, refuses its config, dies or does
//! not answer within [`DEADLINE`] changes nothing, and the caller is told why (the
//! new process's own error when it could say it). A success is told once this
//! process no longer accepts on `/metrics` and the admin API, so that the caller's
//! next request reaches the new process. After it, what is on its way goes
//! down with a new process that dies (no rollback yet).
//!
//! The listening sockets are shared, not moved: both processes hold them while the
//! new one starts, so the kernel's accept queues never close and no client is
//! refused. The new process reads no UDP datagram before the old one's flows are in.
//!
//! * [`carry`]: the state that goes before the sockets.
//! * [`wire`]: the versioned messages.
//! * [`old`]: the running process's side (SIGUSR2, `POST /upgrade`, `ringway ctl upgrade`).
//! * [`new`]: the new process's side.

pub mod carry;
pub mod new;
pub mod old;
pub(super) mod task;
pub mod wire;

use std::time::Duration;

/// The environment variable that gives the new process its end of the socket pair.
pub const ENV: &str = "RINGWAY_UPGRADE_FD";

/// How long the new process has to say it is ready.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Why an upgrade failed; the old process serves on.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Another upgrade is under way.
    #[error("an upgrade is already under way")]
    Busy,
    /// The new binary could not be started.
    #[error("cannot start {exe}: {source}")]
    Spawn {
        /// Its path.
        exe: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The new process said no (its config, its sockets): its own words.
    #[error("the new process refused: {0}")]
    Refused(String),
    /// The new process exited before it took over.
    #[error("the new process exited before taking over ({0})")]
    Exited(std::process::ExitStatus),
    /// It did not answer in time (it was killed).
    #[error("the new process did not take over within {}s (killed)", DEADLINE.as_secs())]
    Timeout,
    /// The hand-off channel failed.
    #[error("hand-off: {0}")]
    Channel(#[from] std::io::Error),
    /// A message could not be read.
    #[error("hand-off: bad message: {0}")]
    Message(String),
    /// The control task is gone (the process is stopping).
    #[error("ringway is stopping")]
    Stopped,
}
