//! Health checking: what to check ([`HealthConfig`]), the pure rise/fall machine
//! ([`state`]), and the probes that do the I/O ([`probe`]).
//!
//! Probes run on the control plane's tokio runtime, never on a data-plane worker. The
//! control plane feeds their results, and the data plane's failed connects (passive
//! checks), into one [`state::HealthState`] per backend, and publishes a new snapshot on
//! every transition (see `control::health`).

pub mod probe;
pub mod state;

use std::time::Duration;

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// No active check: every backend is always up.
    None,
    /// A TCP connect succeeds.
    Tcp,
    /// Connect, send `send`, and the reply starts with `expect` (any reply when empty).
    SendExpect {
        /// Bytes to send.
        send: Vec<u8>,
        /// Expected reply prefix.
        expect: Vec<u8>,
    },
    /// `GET path` answers 2xx/3xx, or one of `expect_status` when given.
    Http {
        /// Request path.
        path: String,
        /// Healthy status codes (empty: 200..=399).
        expect_status: Vec<u16>,
    },
    /// A datagram `send` gets a reply starting with `expect` (any reply when empty).
    Udp {
        /// Bytes to send.
        send: Vec<u8>,
        /// Expected reply prefix.
        expect: Vec<u8>,
    },
    /// A DNS query for `qname` (type A) answers with one of `rcodes`.
    Dns {
        /// The name in wire format.
        qname: Vec<u8>,
        /// Healthy response codes (default: NOERROR).
        rcodes: Vec<u8>,
    },
}

/// What happens to open TCP connections of a backend that goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDown {
    /// They stay (default).
    Keep,
    /// They are closed (HAProxy's `on-marked-down shutdown-sessions`).
    Close,
}

/// What a listener does when every backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllDown {
    /// New connections and flows are refused (default).
    Reject,
    /// Every backend is used as if up (fail open; Envoy's panic mode).
    UseAll,
}

/// A listener's validated `[listener.health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The check.
    pub check: Check,
    /// Time between checks of one backend (a random jitter of up to 10% is added).
    pub interval: Duration,
    /// Limit on one check.
    pub timeout: Duration,
    /// Consecutive successes to come back up.
    pub rise: u32,
    /// Consecutive failures to go down.
    pub fall: u32,
    /// Check this port instead of the backend's traffic port.
    pub port: Option<u16>,
    /// The PROXY protocol header (LOCAL/UNKNOWN) that `send-expect` and `http` checks
    /// send first, for backends that require one.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// Failed connects (TCP) and ICMP errors (UDP) on the data path count as failed
    /// checks (on by default, with or without active checks).
    pub passive: bool,
    /// Open connections of a backend that goes down.
    pub on_down: OnDown,
    /// When every backend is down.
    pub all_down: AllDown,
    /// A backend that comes back up, or is added, takes a share of new connections
    /// that grows linearly from 0 to its full share over this long (`None`: at once).
    pub slow_start: Option<Duration>,
}

impl HealthConfig {
    /// True when backends are checked at all.
    pub fn active(&self) -> bool {
        self.check != Check::None
    }

    /// Failures on the data path take a backend out when `fall` of them come within
    /// this long of each other: `fall` x `interval` (6 s by default).
    pub fn passive_window(&self) -> std::time::Duration {
        self.interval * self.fall
    }

    /// On a listener without active checks, how long a backend taken out by
    /// data-path failures stays out before it is tried again: `fall` x `interval`.
    pub fn readmit_after(&self) -> std::time::Duration {
        self.interval * self.fall
    }
}
