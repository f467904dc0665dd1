//! Configuration: a TOML file in, a validated [`Config`] out.
//!
//! Two stages, as ripgrep's low/high arguments: `file.rs` is the serde mirror
//! (`deny_unknown_fields`, no logic), `validate.rs` turns it into typed values and
//! checks everything that can be checked without binding a socket. Every error is a
//! [`ConfigError`] naming the file, line, column and key.
//!
//! Only `config/` and `control/` see a whole [`Config`]; the data plane gets its own
//! small parameter structs built from it.

mod admission;
mod changes;
mod cluster;
mod error;
mod file;
mod health;
mod keypath;
mod limits;
mod own;
mod pools;
pub mod resolve;
mod routes;
mod sets;
mod validate;
mod wording;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use changes::changes;
pub use cluster::ClusterConfig;
pub use error::{ConfigError, Located};
pub use own::{whose, Own};
pub use sets::{BackendSet, Member, Replaced, ResolverConfig, SetError, SetQuery};

use crate::balance::{Backend, HashMode};
use crate::health::HealthConfig;
pub use crate::proxy_protocol::Version as ProxyVersion;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Data-plane worker threads.
    pub workers: usize,
    /// Pin worker `i` to CPU `i` and hand each new connection or flow to the worker on
    /// the CPU that received it, when the CPUs ringway may use are exactly 0..workers:
    /// `None` (the default) where that holds, `Some(true)` says so when it does not,
    /// `Some(false)` never.
    pub worker_cpu_affinity: Option<bool>,
    /// `udp_kernel_xdp`: interfaces where the UDP kernel path runs at XDP (native
    /// mode) instead of tc ingress.
    pub udp_kernel_xdp: Vec<String>,
    /// How long a graceful shutdown waits for open connections.
    pub shutdown_timeout: Duration,
    /// How often backend host names are resolved again while running.
    pub resolve_interval: Duration,
    /// Unprivileged user to switch to once every socket is bound.
    pub user: Option<String>,
    /// Group to switch to (default: the user's primary group).
    pub group: Option<String>,
    /// Where `GET /metrics` is served (off when `None`).
    pub metrics: Option<SocketAddr>,
    /// The admin API (off when `None`).
    pub admin: Option<AdminConfig>,
    /// The access log (off when `None`).
    pub access_log: Option<AccessLogConfig>,
    /// `[resolver]`: how `backend_set`s are looked up.
    pub resolver: ResolverConfig,
    /// `[cluster]`: the fleet's nodes, for second chance (off when `None`).
    pub cluster: Option<ClusterConfig>,
    /// The listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// The pools: each listener's own (in listener order), then the `[[pool]]`s (in
    /// file order).
    pub pools: Vec<PoolConfig>,
}

/// `[admin]`: the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where to serve it.
    pub listen: AdminListen,
    /// Bearer token every request must carry, when set.
    pub token: Option<String>,
    /// Host names requests may carry in `Host` besides the listen address (`hosts`).
    pub hosts: Vec<String>,
}

/// Where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket (`listen = "unix:PATH"`), created with file mode `mode`.
    Unix {
        /// The socket's path.
        path: std::path::PathBuf,
        /// Its permission bits (`mode = "0600"` by default).
        mode: u32,
    },
}

impl AdminListen {
    /// The default `mode` of a unix socket: the owner only.
    pub const DEFAULT_MODE: u32 = 0o600;

    /// The TCP address, when it is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            AdminListen::Tcp(a) => Some(*a),
            AdminListen::Unix { .. } => None,
        }
    }
}

impl std::fmt::Display for AdminListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminListen::Tcp(a) => write!(f, "{a}"),
            AdminListen::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `[access_log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    /// Where records go: a file, or standard error (`"-"`).
    pub path: LogPath,
    /// JSON lines or text lines.
    pub format: LogFormat,
    /// The fraction of successful connections and flows logged (failed ones always
    /// are), 0.0..=1.0.
    pub sample: f64,
}

/// `[access_log] path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPath {
    /// `"-"`.
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

/// `[access_log] format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default).
    #[default]
    Json,
    /// One human line per record.
    Text,
}

/// Transport protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One validated `[[listener]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name.
    pub name: String,
    /// Transport.
    pub protocol: Protocol,
    /// Address to bind.
    pub listen: SocketAddr,
    /// What is hashed onto the ring of the pool a connection or flow is routed to.
    pub hash: HashMode,
    /// Limit on one backend connect attempt.
    pub connect_timeout: Duration,
    /// Connections with no traffic for this long are closed.
    pub idle_timeout: Duration,
    /// Other backends tried when a connect fails.
    pub retries: u32,
    /// Connections open at once through this listener (all workers together).
    pub max_connections: usize,
    /// How bytes move: copy small messages and splice bulk (`auto`), or one way only.
    pub forward: ForwardMode,
    /// TCP: the PROXY protocol header sent to backends ahead of the client's bytes.
    pub send_proxy: Option<ProxyVersion>,
    /// TCP: every connection starts with a PROXY protocol header (v1 or v2) from a load
    /// balancer in front; its addresses are the client's for hashing and logs.
    pub accept_proxy: bool,
    /// With `accept_proxy`: the only peers whose header is read (empty: every peer must
    /// send one); other peers are direct clients.
    pub accept_proxy_from: Vec<ipnet::IpNet>,
    /// UDP: a flow with no datagram either way for this long is closed.
    pub udp_idle_timeout: Duration,
    /// UDP: a flow its backend never answered is closed after this long without a
    /// datagram (and is the first to go when the flow table is full).
    pub udp_unanswered_timeout: Duration,
    /// UDP: replies expected per client datagram; the flow closes once every datagram
    /// sent got this many (0: no limit, flows end by idle timeout).
    pub udp_responses: u32,
    /// UDP: flows open at once (all workers together); new flows beyond are dropped.
    pub udp_max_flows: usize,
    /// `max_connections` (TCP) or `udp_max_flows` (UDP) is written in the file; else
    /// it is the default, which the control plane lowers to fit the open files limit.
    pub limit_explicit: bool,
    /// Who is served: access lists and per-source limits.
    pub admission: AdmissionConfig,
    /// TCP: when the backend connection opens.
    pub backend_connect: BackendConnect,
    /// TCP, with `backend_connect = "on-data"`: how long a client may stay silent.
    pub first_data_timeout: Duration,
    /// TCP: how connections wait for a backend at its `max_connections`.
    pub queue: QueueConfig,
    /// Which pool each new connection or flow goes to.
    pub route: RouteConfig,
}

/// `queue_timeout` and `queue_overflow`: how a TCP listener's connections wait for
/// a backend at its `max_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Longest wait in a backend's queue.
    pub timeout: Duration,
    /// What happens past it.
    pub overflow: QueueOverflow,
}

/// `queue_overflow`: what becomes of a connection whose wait in a full backend's
/// queue ran out, or whose backend's queue was full (`max_queue`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueOverflow {
    /// It is closed and counted (`reason="queue_timeout"` / `"queue_full"`).
    #[default]
    Close,
    /// It goes to the next backend (in the pool's order) that has room, if any.
    Next,
}

/// How a listener picks a pool (`route_by`, `[[listener.route]]`, `default_pool`).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// What routes look at.
    pub by: RouteBy,
    /// `[[listener.route]]`, in file order.
    pub rules: Vec<RouteRule>,
    /// The pool of connections no route takes: the listener's own backends (a pool
    /// named after the listener), `default_pool`, or none (they are closed).
    pub default_pool: Option<String>,
    /// `route_by = "sni"`: how long the client may take to send its hello.
    pub sni_timeout: Duration,
}

/// `route_by`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RouteBy {
    /// Every connection goes to the default pool.
    #[default]
    None,
    /// By the server name in the TLS ClientHello (TCP) or the QUIC Initial (UDP).
    Sni,
}

/// One `[[listener.route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// Names (`api.example`) and one-label wildcards (`*.api.example`), lowercase,
    /// without a trailing dot.
    pub names: Vec<String>,
    /// The pool they go to.
    pub pool: String,
}

impl RouteConfig {
    /// Every pool the listener may send to: the default first, then the routes' in
    /// order, each once.
    pub fn pools(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in self
            .default_pool
            .iter()
            .chain(self.rules.iter().map(|r| &r.pool))
        {
            if !out.contains(&p.as_str()) {
                out.push(p);
            }
        }
        out
    }
}

/// A pool: backends, their ring and their health, shared by every listener that
/// routes to it. A listener's own `[[listener.backend]]`s are a pool named after it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Unique among pools.
    pub name: String,
    /// The listener whose own backends these are; `None` for a `[[pool]]`.
    pub owner: Option<String>,
    /// The protocol of the listeners that use it (TCP for one nobody uses).
    pub protocol: Protocol,
    /// Ring points per unit of weight.
    pub vnodes: u32,
    /// How a backend is chosen (`balance`, `balance_factor`).
    pub balance: crate::balance::Balance,
    /// Health checking.
    pub health: HealthConfig,
    /// Backends: the configured ones in file order, then those each `backend_set`
    /// gave, in set order (see [`PoolConfig::replace_set`]).
    pub backends: Vec<Backend>,
    /// `backend_set`s: backends discovered in DNS.
    pub backend_sets: Vec<BackendSet>,
}

/// A listener's access lists and per-source limits (TCP: connections, UDP: flows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// `allow`: only these sources are served, when set.
    pub allow: Option<Vec<ipnet::IpNet>>,
    /// `deny`: never served (wins over `allow`).
    pub deny: Vec<ipnet::IpNet>,
    /// `max_connections_per_source` / `udp_max_flows_per_source`.
    pub max_per_source: Option<u32>,
    /// `connection_rate_per_source` / `udp_flow_rate_per_source`.
    pub rate_per_source: Option<RateConfig>,
    /// `source_prefix_v4`: IPv4 sources are counted per this prefix.
    pub source_prefix_v4: u8,
    /// `source_prefix_v6`: IPv6 sources are counted per this prefix.
    pub source_prefix_v6: u8,
    /// `source_table_size`: sources tracked at most (least recently used go first).
    pub source_table_size: usize,
}

impl AdmissionConfig {
    /// What `check` and the start log say of it: nothing when it admits everyone.
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(allow) = &self.allow {
            parts.push(format!("allow {} network(s)", allow.len()));
        }
        if !self.deny.is_empty() {
            parts.push(format!("deny {}", self.deny.len()));
        }
        if let Some(max) = self.max_per_source {
            parts.push(format!("{max} open per source"));
        }
        if let Some(r) = &self.rate_per_source {
            let unit = match r.per.as_secs() {
                3600 => "h",
                60 => "m",
                _ => "s",
            };
            parts.push(format!("{}/{unit} per source", r.count));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

/// A rate: `count` per `per`, with a burst of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// New connections or flows per `per`.
    pub count: u32,
    /// A second, a minute or an hour.
    pub per: Duration,
}

/// `backend_connect`: when a TCP listener opens the backend connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendConnect {
    /// As soon as the client is accepted (server-speaks-first protocols need it).
    #[default]
    AtAccept,
    /// When the client's first byte arrives.
    OnData,
}

/// `forward`: how a TCP listener moves bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardMode {
    /// Copy small messages, splice bulk data (the default).
    #[default]
    Auto,
    /// Always splice.
    Splice,
    /// Never splice.
    Copy,
    /// The kernel forwards established sessions (sockmap); ringway refuses to start
    /// where it cannot.
    Kernel,
}

/// Defaults of the optional keys, in one place.
#[derive(Debug)]
pub struct Tuning;

impl Tuning {
    /// `shutdown_timeout` default.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    /// `resolve_interval` default.
    pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
    /// `queue_timeout` default.
    pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
    /// `connect_timeout` default.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    /// `idle_timeout` default.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    /// `retries` default.
    pub const DEFAULT_RETRIES: u32 = 2;
    /// `max_connections` default.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// `udp_idle_timeout` default.
    pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    /// `udp_unanswered_timeout` default (or `udp_idle_timeout`, when shorter).
    pub const DEFAULT_UDP_UNANSWERED_TIMEOUT: Duration = Duration::from_secs(5);
    /// `udp_max_flows` default.
    pub const DEFAULT_UDP_MAX_FLOWS: usize = 10_000;
    /// `source_table_size` default.
    pub const DEFAULT_SOURCE_TABLE_SIZE: usize = 65_536;
    /// `first_data_timeout` default.
    pub const DEFAULT_FIRST_DATA_TIMEOUT: Duration = Duration::from_secs(10);
    /// `sni_timeout` default on UDP listeners (on TCP: `first_data_timeout`). QUIC
    /// clients send their Initials back to back; a lost one comes again within a
    /// second or so.
    pub const DEFAULT_UDP_SNI_TIMEOUT: Duration = Duration::from_secs(3);
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(path, &bytes, resolve::Resolver::System)
}

/// Validates the config file contents `bytes`, attributing errors to `path`, with
/// backend host names resolved by `resolver`.
pub fn from_bytes(
    path: &Path,
    bytes: &[u8],
    resolver: resolve::Resolver,
) -> Result<Config, ConfigError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_via(path, text, resolver),
        Err(e) => {
            // The bytes before the first bad one are the same in the lossy text, so
            // its offsets locate the error (and the key it sits in).
            let text = String::from_utf8_lossy(bytes);
            let src = validate::Source {
                path,
                text: &text,
                resolver,
            };
            let at = e.valid_up_to();
            Err(src.error(
                at..at + 1,
                keypath::key_at(&text, at),
                format!(
                    "the file is not UTF-8: byte 0x{:02X} cannot start or continue a character here",
                    bytes[at]
                ),
            ))
        }
    }
}

/// Validates config `text`, attributing errors to `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_via(path, text, resolve::Resolver::System)
}

fn parse_via(path: &Path, text: &str, resolver: resolve::Resolver) -> Result<Config, ConfigError> {
    let src = validate::Source {
        path,
        text,
        resolver,
    };
    let de = toml::Deserializer::parse(text).map_err(|e| src.syntax_error(&e))?;
    let file: file::FileConfig =
        serde_path_to_error::deserialize(de).map_err(|e| src.deserialize_error(&e))?;
    validate::validate(&src, file)
}

impl Config {
    /// One line describing what this config runs, for `ringway check` and the start log.
    pub fn summary(&self) -> String {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|l| {
                let mut proxy = l
                    .send_proxy
                    .map(|v| format!(" (PROXY {})", v.as_str()))
                    .unwrap_or_default();
                if l.accept_proxy {
                    proxy.push_str(" (accepts PROXY)");
                }
                proxy.push_str(&l.admission.summary());
                if l.protocol == Protocol::Tcp && l.backend_connect == BackendConnect::OnData {
                    proxy.push_str(" (backend on first byte)");
                }
                let to = match (l.route.by, l.route.default_pool.as_deref()) {
                    (RouteBy::None, Some(p)) => self.pool_summary(p),
                    (RouteBy::Sni, default) => format!(
                        "{} route(s) by server name, else {}",
                        l.route.rules.len(),
                        default.map_or("closed".to_string(), |p| self.pool_summary(p))
                    ),
                    (RouteBy::None, None) => "nothing".to_string(),
                };
                format!("{} {} {} -> {to}{proxy}", l.name, l.protocol, l.listen)
            })
            .collect();
        let mut ops = String::new();
        if let Some(m) = self.metrics {
            ops.push_str(&format!("; metrics on {m}"));
        }
        if let Some(a) = &self.admin {
            let auth = if a.token.is_some() {
                "with token"
            } else {
                "no token"
            };
            ops.push_str(&format!("; admin API on {} ({auth})", a.listen));
        }
        if let Some(c) = &self.cluster {
            ops.push_str(&format!(
                "; cluster of {} nodes (second chance between them)",
                c.peers.len()
            ));
        }
        if let Some(log) = &self.access_log {
            let to = match &log.path {
                LogPath::Stderr => "stderr".to_string(),
                LogPath::File(p) => p.display().to_string(),
            };
            let format = match log.format {
                LogFormat::Json => "json",
                LogFormat::Text => "text",
            };
            let sample = if log.sample < 1.0 {
                format!(
                    ", {}% of successful ones",
                    (log.sample * 1e4).round() / 100.0
                )
            } else {
                String::new()
            };
            ops.push_str(&format!("; access log to {to} ({format}{sample})"));
        }
        if let Some(u) = &self.user {
            ops.push_str(&format!("; runs as user {u}"));
        }
        format!(
            "{}: ok: {} workers, {} listener(s): {}{ops}",
            self.path.display(),
            self.workers,
            self.listeners.len(),
            listeners.join("; ")
        )
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The listeners that route to pool `name`.
    pub fn users_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ListenerConfig> {
        self.listeners
            .iter()
            .filter(move |l| l.route.pools().contains(&name))
    }

    /// `N backends` of pool `name` (`pool NAME: N backends` for a `[[pool]]`), with
    /// how many came from DNS.
    fn pool_summary(&self, name: &str) -> String {
        let Some(p) = self.pool(name) else {
            return format!("pool {name}");
        };
        let mut out = match p.owner {
            Some(_) => format!("{} backends", p.backends.len()),
            None => format!("pool {}: {} backends", p.name, p.backends.len()),
        };
        if !p.backend_sets.is_empty() {
            let found = p.backends.iter().filter(|b| b.set.is_some()).count();
            out.push_str(&format!(
                " ({found} from {} DNS backend set(s))",
                p.backend_sets.len()
            ));
        }
        // The balance, when it is not the plain ring.
        match p.balance.factor {
            Some(f) => out.push_str(&format!(", {} bounded at {f}x", p.balance.mode.name())),
            None if p.balance.mode != crate::balance::Mode::Ring => {
                out.push_str(&format!(", {}", p.balance.mode.name()))
            }
            None => {}
        }
        out
    }
}

#[cfg(test)]
mod tests;
