//! What one access-log line says: one TCP connection or UDP flow, when it ended.
//! Workers fill a [`Record`] from what they already hold (no formatting, no
//! allocation: names and ids are shared `Arc<str>`s) and hand it over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// A TCP connection.
    Tcp,
    /// A UDP flow.
    Udp,
}

impl Proto {
    /// As logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Why a connection or flow ended (the `end` field). Every value is documented in
/// `docs/ACCESS_LOG.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// TCP: the client sent its EOF first, then both directions finished.
    ClientClosed,
    /// TCP: the backend sent its EOF first, then both directions finished.
    BackendClosed,
    /// TCP: the client's socket failed (reset, or an error writing to it).
    ClientReset,
    /// TCP: the backend's socket failed (reset, or an error writing to it).
    BackendReset,
    /// TCP: no bytes either way for `idle_timeout`.
    IdleTimeout,
    /// TCP: every connect attempt failed (refused, unreachable, timed out).
    ConnectFailed,
    /// No backend was up for the client's key.
    NoBackend,
    /// Refused at the door: `detail` says why (`max_connections`, `fd_limit`,
    /// `max_flows`, `denied`, `source_limit`, `source_rate`).
    Rejected,
    /// TCP, `backend_connect = "on-data"`: the client sent nothing within
    /// `first_data_timeout`.
    FirstDataTimeout,
    /// TCP: its backend was at its `max_connections`, and no slot came within the
    /// listener's `queue_timeout` (nor, with `queue_overflow = "next"`, another backend
    /// with room).
    QueueTimeout,
    /// TCP, `accept_proxy`: no valid PROXY header in time; `detail` says what was wrong.
    ProxyHeader,
    /// TCP: this machine could not open the backend socket (no local port, memory).
    LocalError,
    /// TCP: the backend went down and the listener closes such connections
    /// (`on_down = "close"`).
    BackendDown,
    /// TCP: still open when the drain's `shutdown_timeout` passed.
    Shutdown,
    /// UDP: no datagram either way for `udp_idle_timeout`.
    UdpIdle,
    /// UDP: its backend refused it (ICMP port unreachable: nothing listens there), and
    /// it ended by its idle timeouts.
    UdpRefused,
    /// UDP: its backend never answered, and it was idle for `udp_unanswered_timeout`
    /// (or, `detail` = `evicted`, it made room in a full flow table).
    UdpUnanswered,
    /// UDP: every datagram got its `udp_responses` replies.
    UdpAnswered,
    /// UDP: closed when ringway started to drain (a flow cannot reply without its
    /// listener socket).
    Drained,
    /// UDP: a new flow on a listener a reload has removed.
    ListenerRemoved,
}

impl End {
    /// Every value, for documentation tests.
    pub const ALL: [End; 20] = [
        End::ClientClosed,
        End::BackendClosed,
        End::ClientReset,
        End::BackendReset,
        End::IdleTimeout,
        End::ConnectFailed,
        End::NoBackend,
        End::Rejected,
        End::FirstDataTimeout,
        End::QueueTimeout,
        End::ProxyHeader,
        End::LocalError,
        End::BackendDown,
        End::Shutdown,
        End::UdpIdle,
        End::UdpRefused,
        End::UdpUnanswered,
        End::UdpAnswered,
        End::Drained,
        End::ListenerRemoved,
    ];

    /// As logged.
    pub fn as_str(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::BackendClosed => "backend_closed",
            End::ClientReset => "client_reset",
            End::BackendReset => "backend_reset",
            End::IdleTimeout => "idle_timeout",
            End::ConnectFailed => "connect_failed",
            End::NoBackend => "no_backend",
            End::Rejected => "rejected",
            End::FirstDataTimeout => "first_data_timeout",
            End::QueueTimeout => "queue_timeout",
            End::ProxyHeader => "proxy_header",
            End::LocalError => "local_error",
            End::BackendDown => "backend_down",
            End::Shutdown => "shutdown",
            End::UdpIdle => "udp_idle",
            End::UdpRefused => "udp_refused",
            End::UdpUnanswered => "udp_unanswered",
            End::UdpAnswered => "udp_answered",
            End::Drained => "drained",
            End::ListenerRemoved => "listener_removed",
        }
    }

    /// An ending that went as it should (those `sample` may leave out); every other
    /// one is always logged.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            End::ClientClosed
                | End::BackendClosed
                | End::IdleTimeout
                | End::UdpIdle
                | End::UdpAnswered
        )
    }
}

/// The backend a connection or flow reached.
#[derive(Debug, Clone)]
pub struct Reached {
    /// Its id.
    pub id: Arc<str>,
    /// The address connected to.
    pub addr: SocketAddr,
}

/// One connection or flow.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it ended.
    pub time: SystemTime,
    /// Its listener's name.
    pub listener: Arc<str>,
    /// TCP or UDP.
    pub proto: Proto,
    /// The client (the one a PROXY header named, when one did).
    pub client: SocketAddr,
    /// The backend, when one was reached.
    pub backend: Option<Reached>,
    /// The pool it was routed to, once routed.
    pub pool: Option<Arc<str>>,
    /// The server name its TLS ClientHello or QUIC Initial asked for (`route_by =
    /// "sni"` listeners).
    pub sni: Option<crate::sni::ServerName>,
    /// Bytes from the client to the backend.
    pub bytes_in: u64,
    /// Bytes from the backend to the client.
    pub bytes_out: u64,
    /// From accept (or the first datagram) to the end.
    pub duration: Duration,
    /// TCP: from accept until the backend connection was established.
    pub connect: Option<Duration>,
    /// TCP: connect attempts after the first.
    pub retries: u32,
    /// TCP: the backends whose connect attempts failed, in the order they were tried.
    pub failed: Vec<Arc<str>>,
    /// Why it ended.
    pub end: End,
    /// More about why, for some ends (`rejected`: which limit).
    pub detail: Option<&'static str>,
    /// UDP: datagrams from the client and to it.
    pub datagrams: Option<(u64, u64)>,
}

impl Record {
    /// A record of a connection or flow refused before it reached a backend.
    pub fn refused(
        listener: &Arc<str>,
        proto: Proto,
        client: SocketAddr,
        end: End,
        detail: Option<&'static str>,
    ) -> Record {
        Record {
            time: SystemTime::now(),
            listener: Arc::clone(listener),
            proto,
            client,
            backend: None,
            pool: None,
            sni: None,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            connect: None,
            retries: 0,
            end,
            detail,
            datagrams: (proto == Proto::Udp).then_some((1, 0)),
            failed: Vec::new(),
        }
    }
}
