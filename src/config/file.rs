//! The serde mirror of the TOML file: shapes and names only, no logic.
//!
//! `deny_unknown_fields` everywhere, so a typo is an error, not a silently ignored key.
//! Values that need checking beyond their type are kept [`Spanned`] so that
//! `validate` can point at the exact line and column. Integers are `i64` so that a
//! negative number reaches validation and gets a message that says what is expected.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub workers: Option<Spanned<i64>>,
    pub worker_cpu_affinity: Option<Spanned<bool>>,
    pub udp_kernel_xdp: Option<Spanned<Vec<Spanned<String>>>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub resolve_interval: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub metrics: Option<Spanned<FileMetrics>>,
    pub admin: Option<Spanned<FileAdmin>>,
    pub access_log: Option<Spanned<FileAccessLog>>,
    pub resolver: Option<Spanned<FileResolver>>,
    pub cluster: Option<Spanned<FileCluster>>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Spanned<FileListener>>,
    #[serde(default, rename = "pool")]
    pub pools: Vec<Spanned<FilePool>>,
}

/// One `[[pool]]`: backends that listeners share, by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub name: Spanned<String>,
    pub vnodes: Option<Spanned<i64>>,
    pub balance: Option<Spanned<FileBalance>>,
    pub balance_factor: Option<Spanned<f64>>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<Spanned<FileBackend>>,
    #[serde(default, rename = "backend_set")]
    pub backend_sets: Vec<Spanned<FileBackendSet>>,
    pub health: Option<Spanned<FileHealth>>,
}

/// One `[[listener.route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub sni: Spanned<Vec<Spanned<String>>>,
    pub pool: Spanned<String>,
}

/// `route_by = "none" | "sni"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileRouteBy {
    None,
    Sni,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    pub listen: Spanned<String>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: Spanned<String>,
    pub token: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub hosts: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[access_log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    pub path: Spanned<String>,
    pub format: Option<Spanned<FileLogFormat>>,
    pub sample: Option<Spanned<f64>>,
}

/// `format = "json" | "text"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileLogFormat {
    Json,
    Text,
}

/// `[resolver]`: the DNS servers `backend_set`s are looked up with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResolver {
    pub servers: Option<Spanned<Vec<Spanned<String>>>>,
    pub timeout: Option<Spanned<String>>,
    pub nxdomain_after: Option<Spanned<i64>>,
}

/// `[cluster]`: the nodes of a fleet, for second chance.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    pub peers: Spanned<Vec<Spanned<String>>>,
    pub port: Option<Spanned<i64>>,
    pub interfaces: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One `[[listener.backend_set]]` or `[[pool.backend_set]]`: `srv` or `dns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackendSet {
    pub srv: Option<Spanned<String>>,
    pub dns: Option<Spanned<String>>,
    pub weight: Option<Spanned<i64>>,
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_backends: Option<Spanned<i64>>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub name: Spanned<String>,
    pub protocol: Option<Spanned<FileProtocol>>,
    pub listen: Spanned<String>,
    pub hash: Option<Spanned<FileHash>>,
    pub vnodes: Option<Spanned<i64>>,
    pub balance: Option<Spanned<FileBalance>>,
    pub balance_factor: Option<Spanned<f64>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub queue_timeout: Option<Spanned<String>>,
    pub queue_overflow: Option<Spanned<FileQueueOverflow>>,
    pub forward: Option<Spanned<FileForward>>,
    pub send_proxy: Option<Spanned<FileSendProxy>>,
    pub accept_proxy: Option<Spanned<bool>>,
    pub accept_proxy_from: Option<Spanned<Vec<Spanned<String>>>>,
    pub udp_idle_timeout: Option<Spanned<String>>,
    pub udp_unanswered_timeout: Option<Spanned<String>>,
    pub udp_responses: Option<Spanned<i64>>,
    pub udp_max_flows: Option<Spanned<i64>>,
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub deny: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_connections_per_source: Option<Spanned<i64>>,
    pub connection_rate_per_source: Option<Spanned<String>>,
    pub udp_max_flows_per_source: Option<Spanned<i64>>,
    pub udp_flow_rate_per_source: Option<Spanned<String>>,
    pub source_prefix_v4: Option<Spanned<i64>>,
    pub source_prefix_v6: Option<Spanned<i64>>,
    pub source_table_size: Option<Spanned<i64>>,
    pub backend_connect: Option<Spanned<FileBackendConnect>>,
    pub first_data_timeout: Option<Spanned<String>>,
    pub route_by: Option<Spanned<FileRouteBy>>,
    pub default_pool: Option<Spanned<String>>,
    pub sni_timeout: Option<Spanned<String>>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<FileRoute>>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<Spanned<FileBackend>>,
    #[serde(default, rename = "backend_set")]
    pub backend_sets: Vec<Spanned<FileBackendSet>>,
    pub health: Option<Spanned<FileHealth>>,
}

/// `[listener.health]` or `[pool.health]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub check: Option<Spanned<FileCheck>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub port: Option<Spanned<i64>>,
    pub send: Option<Spanned<String>>,
    pub expect: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub expect_status: Option<Spanned<Vec<i64>>>,
    pub dns_name: Option<Spanned<String>>,
    pub dns_rcodes: Option<Spanned<Vec<String>>>,
    pub passive: Option<Spanned<bool>>,
    pub send_proxy: Option<Spanned<bool>>,
    pub on_down: Option<Spanned<FileOnDown>>,
    pub all_down: Option<Spanned<FileAllDown>>,
    pub slow_start: Option<Spanned<String>>,
}

/// `check = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileCheck {
    Tcp,
    SendExpect,
    Http,
    Udp,
    Dns,
    None,
}

/// `on_down = "keep" | "close"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOnDown {
    Keep,
    Close,
}

/// `all_down = "reject" | "use-all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileAllDown {
    Reject,
    UseAll,
}

/// `protocol = "tcp" | "udp"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileProtocol {
    Tcp,
    Udp,
}

/// `hash = "five-tuple" | "source-ip"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileHash {
    FiveTuple,
    SourceIp,
}

/// `balance = "ring" | "least-connections" | "round-robin" | "maglev"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileBalance {
    Ring,
    LeastConnections,
    RoundRobin,
    Maglev,
}

/// `send_proxy = "v1" | "v2"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSendProxy {
    V1,
    V2,
}

/// `backend_connect = "at-accept" | "on-data"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileBackendConnect {
    AtAccept,
    OnData,
}

/// `forward = "auto" | "splice" | "copy" | "kernel"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileForward {
    Auto,
    Splice,
    Copy,
    Kernel,
}

/// One `[[listener.backend]]` or `[[pool.backend]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub address: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
    pub id: Option<Spanned<String>>,
    pub backup: Option<Spanned<bool>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_queue: Option<Spanned<i64>>,
}

/// `queue_overflow = "close" | "next"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileQueueOverflow {
    Close,
    Next,
}
