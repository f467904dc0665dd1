//! Choosing a backend: the hash contract, the ring, and the immutable snapshot that
//! workers read.
//!
//! Nothing in here does I/O or reads a clock. [`Routes`] pick a listener's pool by the
//! server name a client asks for; per pool, the control plane builds a [`Snapshot`]
//! (backends, the ring of all of them, which backends are up, and which ring points
//! are live: [`live`]) and publishes it with the pool's [`Policy`] (`balance`:
//! the ring, bounded loads, least connections, round robin); data-plane workers ask
//! [`Policy::choose`] for a backend, with the loads they count.

pub mod hash;
pub mod least;
pub mod live;
pub mod maglev;
mod owners;
pub mod policy;
pub mod ring;
mod rotation;
pub mod routes;
mod seen;
pub mod snapshot;
#[cfg(test)]
mod test_keys;

use std::net::SocketAddr;

pub use hash::HashMode;
pub use policy::{Balance, Choice, Idle, Loads, Mode, Policy};
pub use routes::Routes;
pub use snapshot::{Snapshot, Walk};

/// A backend as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Ring identity: the configured `id`, or the address as written.
    pub id: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The address exactly as written in the config (what `route` prints).
    pub addr_text: String,
    /// Weight, 1..=1000.
    pub weight: u32,
    /// The `backend_set` it was discovered by (its name), `None` when configured.
    pub set: Option<String>,
    /// A backup: it takes new connections only while no other backend of its pool
    /// does (`backup = true`).
    pub backup: bool,
    /// Its `max_connections` and `max_queue`.
    pub limits: Limits,
}

/// A backend's connection limit and the bound on its queue (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Connections and flows open to it at once (`max_connections`).
    pub max_connections: u32,
    /// Connections waiting for it at once (`max_queue`).
    pub max_queue: u32,
}
