//! Stage two: the serde mirror ([`super::file`]) becomes a typed, validated
//! [`Config`]. Every check names the key and the place; nothing is bound or opened here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::admission;
use super::error::{ConfigError, Located};
use super::file::{
    FileAccessLog, FileBackend, FileConfig, FileForward, FileHash, FileListener, FileLogFormat,
    FileProtocol, FileSendProxy,
};
use super::pools::Parts;
use super::resolve;
use super::routes::PoolRef;
use super::{
    keypath, AccessLogConfig, AdminConfig, AdminListen, Config, ForwardMode, ListenerConfig,
    LogFormat, LogPath, PoolConfig, Protocol, ProxyVersion, Tuning,
};
use crate::balance::{Backend, HashMode};

/// Where the text came from, to locate errors.
pub(super) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    /// How backend host names are resolved.
    pub resolver: resolve::Resolver,
}

impl Source<'_> {
    /// The line (from 1) of byte `offset` of the file.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid(Box::new(Located::new(
            self.path.to_path_buf(),
            self.text,
            span,
            key.into(),
            message.into(),
        )))
    }

    /// A TOML syntax error: the span is known; the key is the one being written there.
    pub fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let key = keypath::key_at(self.text, span.start);
        self.located(span, key, &super::wording::reworded(e.message()))
    }

    /// An error found while deserializing valid TOML: the deserializer says which key.
    pub fn deserialize_error(
        &self,
        e: &serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
        let inner = e.inner();
        // `toml::Spanned` wraps values in a private field that names no key.
        let mut key = e
            .path()
            .to_string()
            .split('.')
            .filter(|s| !s.starts_with("$__serde_spanned"))
            .collect::<Vec<_>>()
            .join(".");
        let message = inner.message().trim().to_string();
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            if !key.is_empty() && key != "." {
                key.push('.');
            } else {
                key.clear();
            }
            key.push_str(missing);
        }
        let message = super::wording::reworded(&message);
        self.located(inner.span().unwrap_or(0..0), key, &message)
    }

    fn located(&self, span: Range<usize>, key: String, message: &str) -> ConfigError {
        let key = if key.is_empty() || key == "." {
            "(document)".to_string()
        } else {
            key
        };
        self.error(span, key, message.trim())
    }
}

pub(super) fn validate(src: &Source<'_>, file: FileConfig) -> Result<Config, ConfigError> {
    let workers = match &file.workers {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(w) => int_of(src, w, "workers", 1, 1024)? as usize,
    };
    let shutdown_timeout = match &file.shutdown_timeout {
        None => Tuning::DEFAULT_SHUTDOWN_TIMEOUT,
        Some(d) => duration_of(src, d, "shutdown_timeout")?,
    };
    let resolve_interval = match &file.resolve_interval {
        None => Tuning::DEFAULT_RESOLVE_INTERVAL,
        Some(d) => duration_of(src, d, "resolve_interval")?,
    };
    if file.listeners.is_empty() {
        return Err(src.error(0..0, "listener", "at least one [[listener]] is required"));
    }
    let mut listeners = Vec::with_capacity(file.listeners.len());
    let mut pools = Vec::new();
    let mut refs = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, l) in file.listeners.iter().enumerate() {
        let key = format!("listener[{i}]");
        let (listener, own, named) = listener(src, l, &key)?;
        pools.extend(own);
        refs.extend(named);
        if let Some(first) = names.insert(listener.name.clone(), i) {
            return Err(src.error(
                l.get_ref().name.span(),
                format!("{key}.name"),
                format!(
                    "duplicate listener name {:?} (also listener[{first}])",
                    listener.name
                ),
            ));
        }
        for (j, other) in listeners.iter().enumerate() {
            if conflicts(&listener, other) {
                return Err(src.error(
                    l.get_ref().listen.span(),
                    format!("{key}.listen"),
                    format!(
                        "{} {} is also used by listener[{j}] ({:?}, {}): two listeners cannot share an address",
                        listener.protocol, listener.listen, other.name, other.listen
                    ),
                ));
            }
        }
        listeners.push(listener);
    }
    let metrics = match &file.metrics {
        None => None,
        Some(m) => Some(listen_addr(src, &m.get_ref().listen, "metrics.listen")?),
    };
    let admin = match &file.admin {
        None => None,
        Some(a) => {
            let a = a.get_ref();
            let listen = admin_listen(src, a)?;
            if let Some(addr) = listen.tcp().filter(|&l| metrics == Some(l)) {
                return Err(src.error(
                    a.listen.span(),
                    "admin.listen",
                    format!("{addr} is also metrics.listen: give each its own address"),
                ));
            }
            let hosts = match &a.hosts {
                None => Vec::new(),
                Some(list) => list
                    .get_ref()
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let name = h
                            .get_ref()
                            .trim()
                            .trim_end_matches('.')
                            .to_ascii_lowercase();
                        if super::resolve::valid_host(&name) {
                            Ok(name)
                        } else {
                            Err(src.error(
                                h.span(),
                                format!("admin.hosts[{i}]"),
                                format!(
                                    "{:?} is not a host name (`ringway.internal`)",
                                    h.get_ref()
                                ),
                            ))
                        }
                    })
                    .collect::<Result<_, _>>()?,
            };
            let token = match &a.token {
                None => None,
                Some(t) => {
                    let v = t.get_ref();
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(src.error(
                            t.span(),
                            "admin.token",
                            "the token must be non-empty printable ASCII without spaces",
                        ));
                    }
                    Some(v.clone())
                }
            };
            Some(AdminConfig {
                listen,
                token,
                hosts,
            })
        }
    };
    let name_of = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) if s.get_ref().trim().is_empty() || s.get_ref().contains(['\0', '/']) => {
                Err(src.error(
                    s.span(),
                    key,
                    format!("{:?} is not a valid {key} name", s.get_ref()),
                ))
            }
            Some(s) => Ok(Some(s.get_ref().trim().to_string())),
        }
    };
    let access_log = match &file.access_log {
        None => None,
        Some(a) => Some(access_log(src, a.get_ref())?),
    };
    let user = name_of(&file.user, "user")?;
    let group = name_of(&file.group, "group")?;
    if let (None, Some(g)) = (&user, &file.group) {
        return Err(src.error(
            g.span(),
            "group",
            "`group` needs `user` too: ringway switches group and user together",
        ));
    }
    let worker_cpu_affinity = file.worker_cpu_affinity.as_ref().map(|a| *a.get_ref());
    let udp_kernel_xdp = interfaces(src, file.udp_kernel_xdp.as_ref(), "udp_kernel_xdp")?;
    let resolver = super::sets::resolver(src, file.resolver.as_ref())?;
    let cluster = file
        .cluster
        .as_ref()
        .map(|c| super::cluster::cluster(src, c))
        .transpose()?;
    let config = Config {
        path: src.path.to_path_buf(),
        resolver,
        cluster,
        workers,
        worker_cpu_affinity,
        udp_kernel_xdp,
        shutdown_timeout,
        resolve_interval,
        user,
        group,
        metrics,
        admin,
        access_log,
        listeners,
        pools: Vec::new(),
    };
    let config = Config {
        pools: named_pools(src, &file, pools, &refs, &config.listeners)?,
        ..config
    };
    no_loops(src, &file, &config)?;
    Ok(config)
}

/// Refuses a backend at an address ringway itself listens on (a listener of the same
/// protocol, or for TCP the admin API or metrics): every connection to it would come
/// back as a new connection, each eating descriptors, or hand clients the admin API.
/// Without this machine's other addresses at hand, a wildcard listener counts only
/// for loopback backends here; the control plane checks again with them.
fn no_loops(src: &Source<'_>, file: &FileConfig, config: &Config) -> Result<(), ConfigError> {
    for p in &config.pools {
        for (j, b) in p.backends.iter().enumerate() {
            let Some(whose) = super::whose(config, p.protocol, b.addr, &[]) else {
                continue;
            };
            let (span, key) = match &p.owner {
                Some(owner) => {
                    let i = config
                        .listeners
                        .iter()
                        .position(|l| &l.name == owner)
                        .unwrap_or(0);
                    let b = file.listeners[i].get_ref().backends[j].get_ref();
                    (
                        b.address.span(),
                        format!("listener[{i}].backend[{j}].address"),
                    )
                }
                None => {
                    let i = file
                        .pools
                        .iter()
                        .position(|f| f.get_ref().name.get_ref().trim() == p.name)
                        .unwrap_or(0);
                    let b = file.pools[i].get_ref().backends[j].get_ref();
                    (b.address.span(), format!("pool[{i}].backend[{j}].address"))
                }
            };
            return Err(src.error(
                span,
                key,
                format!("{} is ringway's own address ({whose}): ringway would connect to itself, a loop", b.addr),
            ));
        }
    }
    Ok(())
}

/// `[access_log]`.
fn access_log(src: &Source<'_>, a: &FileAccessLog) -> Result<AccessLogConfig, ConfigError> {
    let text = a.path.get_ref().trim();
    let path = match text {
        "" => {
            return Err(src.error(
                a.path.span(),
                "access_log.path",
                "expected a file path, or \"-\" for standard error",
            ))
        }
        "-" => LogPath::Stderr,
        p => LogPath::File(p.into()),
    };
    let format = match a.format.as_ref().map(|f| *f.get_ref()) {
        None | Some(FileLogFormat::Json) => LogFormat::Json,
        Some(FileLogFormat::Text) => LogFormat::Text,
    };
    let sample = match &a.sample {
        None => 1.0,
        Some(s) if (0.0..=1.0).contains(s.get_ref()) => *s.get_ref(),
        Some(s) => {
            return Err(src.error(
                s.span(),
                "access_log.sample",
                format!(
                "expected the fraction of successful connections to log, from 0.0 to 1.0, got {}",
                s.get_ref()
            ),
            ))
        }
    };
    Ok(AccessLogConfig {
        path,
        format,
        sample,
    })
}

/// Same protocol and port, and the same IP or a wildcard on either side.
/// Whether two listeners would take the same connections: same protocol and port, and
/// the same address or a wildcard of the same family. IPv6 listeners are bound
/// IPv6-only, so `0.0.0.0:P` and `[::]:P` side by side serve IPv4 and IPv6 (the
/// dual-stack wildcard NGINX and HAProxy users write).
fn conflicts(a: &ListenerConfig, b: &ListenerConfig) -> bool {
    a.protocol == b.protocol
        && a.listen.port() == b.listen.port()
        && a.listen.is_ipv4() == b.listen.is_ipv4()
        && (a.listen.ip() == b.listen.ip()
            || a.listen.ip().is_unspecified()
            || b.listen.ip().is_unspecified())
}

/// A listener, its own pool (when it has backends of its own), and the pools it names.
fn listener(
    src: &Source<'_>,
    sl: &Spanned<FileListener>,
    key: &str,
) -> Result<(ListenerConfig, Option<PoolConfig>, Vec<PoolRef>), ConfigError> {
    let l = sl.get_ref();
    let name = l.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(src.error(l.name.span(), format!("{key}.name"), "must not be empty"));
    }
    printable(src, &l.name, &format!("{key}.name"))?;
    let protocol = match l.protocol.as_ref().map(|p| *p.get_ref()) {
        None | Some(FileProtocol::Tcp) => Protocol::Tcp,
        Some(FileProtocol::Udp) => Protocol::Udp,
    };
    let mut tcp_keys = tcp_only_keys(l);
    tcp_keys.extend(admission::tcp_only_keys(l));
    tcp_keys.extend(super::limits::tcp_only_keys(l));
    let mut udp_keys = udp_only_keys(l);
    udp_keys.extend(admission::udp_only_keys(l));
    only_for(src, protocol, Protocol::Tcp, key, &tcp_keys)?;
    only_for(src, protocol, Protocol::Udp, key, &udp_keys)?;
    if let (Protocol::Udp, Some(f)) = (protocol, &l.forward) {
        if matches!(f.get_ref(), FileForward::Splice | FileForward::Copy) {
            return Err(src.error(
                f.span(),
                format!("{key}.forward"),
                "a UDP listener forwards datagrams: `forward` takes \"auto\" (in ringway) or \"kernel\" (established flows in the kernel); \"splice\" and \"copy\" are for TCP listeners".to_string(),
            ));
        }
    }
    let listen = listen_addr(src, &l.listen, &format!("{key}.listen"))?;
    let hash = match l.hash.as_ref().map(|h| *h.get_ref()) {
        None | Some(FileHash::FiveTuple) => HashMode::FiveTuple,
        Some(FileHash::SourceIp) => HashMode::SourceIp,
    };
    let connect_timeout = opt_duration(
        src,
        &l.connect_timeout,
        &format!("{key}.connect_timeout"),
        Tuning::DEFAULT_CONNECT_TIMEOUT,
    )?;
    let idle_timeout = opt_duration(
        src,
        &l.idle_timeout,
        &format!("{key}.idle_timeout"),
        Tuning::DEFAULT_IDLE_TIMEOUT,
    )?;
    let retries = match &l.retries {
        None => Tuning::DEFAULT_RETRIES,
        Some(r) => int_of(src, r, &format!("{key}.retries"), 0, 100)? as u32,
    };
    let max_connections = match &l.max_connections {
        None => Tuning::DEFAULT_MAX_CONNECTIONS,
        Some(m) => int_of(src, m, &format!("{key}.max_connections"), 1, 10_000_000)? as usize,
    };
    let forward = match l.forward.as_ref().map(|f| *f.get_ref()) {
        None | Some(FileForward::Auto) => ForwardMode::Auto,
        Some(FileForward::Splice) => ForwardMode::Splice,
        Some(FileForward::Copy) => ForwardMode::Copy,
        Some(FileForward::Kernel) => ForwardMode::Kernel,
    };
    let send_proxy = l.send_proxy.as_ref().map(|v| match v.get_ref() {
        FileSendProxy::V1 => ProxyVersion::V1,
        FileSendProxy::V2 => ProxyVersion::V2,
    });
    let accept_proxy = l.accept_proxy.as_ref().is_some_and(|a| *a.get_ref());
    let accept_proxy_from = trusted_sources(src, l, accept_proxy, key)?;
    let udp_idle_timeout = opt_duration(
        src,
        &l.udp_idle_timeout,
        &format!("{key}.udp_idle_timeout"),
        Tuning::DEFAULT_UDP_IDLE_TIMEOUT,
    )?;
    let udp_unanswered_timeout = match &l.udp_unanswered_timeout {
        None => Tuning::DEFAULT_UDP_UNANSWERED_TIMEOUT.min(udp_idle_timeout),
        Some(t) => {
            let k = format!("{key}.udp_unanswered_timeout");
            let d = duration_of(src, t, &k)?;
            if d > udp_idle_timeout {
                return Err(src.error(
                    t.span(),
                    k,
                    format!("{} is longer than udp_idle_timeout ({}): a flow never answered cannot wait longer than one that is", humantime::format_duration(d), humantime::format_duration(udp_idle_timeout)),
                ));
            }
            d
        }
    };
    let udp_responses = match &l.udp_responses {
        None => 0,
        Some(r) => int_of(src, r, &format!("{key}.udp_responses"), 0, 1_000_000)? as u32,
    };
    let udp_max_flows = match &l.udp_max_flows {
        None => Tuning::DEFAULT_UDP_MAX_FLOWS,
        Some(m) => int_of(src, m, &format!("{key}.udp_max_flows"), 1, 10_000_000)? as usize,
    };
    let admission = admission::admission(src, l, protocol, key)?;
    let (backend_connect, first_data_timeout) = admission::backend_connect(src, l, key)?;
    let queue = super::limits::queue(src, l, key)?;
    let parts = super::pools::Parts {
        vnodes: l.vnodes.as_ref(),
        balance: l.balance.as_ref(),
        balance_factor: l.balance_factor.as_ref(),
        backends: &l.backends,
        backend_sets: &l.backend_sets,
        health: l.health.as_ref(),
        span: sl.span(),
        key: key.to_string(),
    };
    let own = parts.has_backends();
    if !own {
        let stray = [
            ("vnodes", l.vnodes.as_ref().map(Spanned::span)),
            ("balance", l.balance.as_ref().map(Spanned::span)),
            (
                "balance_factor",
                l.balance_factor.as_ref().map(Spanned::span),
            ),
            ("health", l.health.as_ref().map(Spanned::span)),
        ];
        if let Some((k, Some(span))) = stray.into_iter().find(|(_, s)| s.is_some()) {
            return Err(src.error(
                span,
                format!("{key}.{k}"),
                format!("`{k}` applies to the listener's own backends, and it has none: set it on the [[pool]] it routes to"),
            ));
        }
    }
    let pool = own
        .then(|| super::pools::pool(src, &parts, &name, Some(&name), protocol, send_proxy))
        .transpose()?;
    let (route, refs) =
        super::routes::route(src, sl, protocol, own, &name, first_data_timeout, key)?;
    let listener = ListenerConfig {
        name,
        protocol,
        listen,
        hash,
        connect_timeout,
        idle_timeout,
        retries,
        max_connections,
        forward,
        send_proxy,
        accept_proxy,
        accept_proxy_from,
        udp_idle_timeout,
        udp_unanswered_timeout,
        udp_responses,
        udp_max_flows,
        limit_explicit: match protocol {
            Protocol::Tcp => l.max_connections.is_some(),
            Protocol::Udp => l.udp_max_flows.is_some(),
        },
        admission,
        backend_connect,
        first_data_timeout,
        queue,
        route,
    };
    Ok((listener, pool, refs))
}

/// `accept_proxy_from`: networks (`10.0.0.0/8`) or single addresses (`192.0.2.7`).
fn trusted_sources(
    src: &Source<'_>,
    l: &FileListener,
    accept_proxy: bool,
    key: &str,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let Some(list) = &l.accept_proxy_from else {
        return Ok(Vec::new());
    };
    let key = format!("{key}.accept_proxy_from");
    if !accept_proxy {
        return Err(src.error(
            list.span(),
            key,
            "`accept_proxy_from` says whose PROXY headers to read: it needs `accept_proxy = true`",
        ));
    }
    if list.get_ref().is_empty() {
        return Err(src.error(
            list.span(),
            key,
            "empty: list the balancers' addresses or networks, or leave the key out so that every peer must send a header",
        ));
    }
    super::admission::networks(src, list, &key)
}

/// Keys that only make sense for TCP listeners, with their spans.
fn tcp_only_keys(l: &FileListener) -> Vec<(&'static str, Option<Range<usize>>)> {
    vec![
        (
            "connect_timeout",
            l.connect_timeout.as_ref().map(Spanned::span),
        ),
        ("idle_timeout", l.idle_timeout.as_ref().map(Spanned::span)),
        ("retries", l.retries.as_ref().map(Spanned::span)),
        (
            "max_connections",
            l.max_connections.as_ref().map(Spanned::span),
        ),
        ("send_proxy", l.send_proxy.as_ref().map(Spanned::span)),
        ("accept_proxy", l.accept_proxy.as_ref().map(Spanned::span)),
        (
            "accept_proxy_from",
            l.accept_proxy_from.as_ref().map(Spanned::span),
        ),
    ]
}

/// Keys that only make sense for UDP listeners, with their spans.
fn udp_only_keys(l: &FileListener) -> Vec<(&'static str, Option<Range<usize>>)> {
    vec![
        (
            "udp_idle_timeout",
            l.udp_idle_timeout.as_ref().map(Spanned::span),
        ),
        (
            "udp_unanswered_timeout",
            l.udp_unanswered_timeout.as_ref().map(Spanned::span),
        ),
        ("udp_responses", l.udp_responses.as_ref().map(Spanned::span)),
        ("udp_max_flows", l.udp_max_flows.as_ref().map(Spanned::span)),
    ]
}

/// Rejects keys meant for `wanted` on a listener of another protocol.
fn only_for(
    src: &Source<'_>,
    protocol: Protocol,
    wanted: Protocol,
    key: &str,
    keys: &[(&'static str, Option<Range<usize>>)],
) -> Result<(), ConfigError> {
    if protocol == wanted {
        return Ok(());
    }
    for (name, span) in keys {
        if let Some(span) = span {
            let hint = match protocol {
                Protocol::Udp => "UDP listeners take forward, udp_idle_timeout, udp_unanswered_timeout, udp_responses, udp_max_flows, udp_max_flows_per_source and udp_flow_rate_per_source",
                Protocol::Tcp => "TCP listeners take connect_timeout, idle_timeout, retries, max_connections, send_proxy, accept_proxy, accept_proxy_from, max_connections_per_source, connection_rate_per_source, backend_connect, first_data_timeout, queue_timeout and queue_overflow",
            };
            return Err(src.error(
                span.clone(),
                format!("{key}.{name}"),
                format!(
                    "`{name}` applies to {wanted} listeners only, this one is {protocol}: {hint}"
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn backend(
    src: &Source<'_>,
    b: &FileBackend,
    key: &str,
) -> Result<Backend, ConfigError> {
    let addr = backend_addr(src, &b.address, &format!("{key}.address"))?;
    let weight = match &b.weight {
        None => 1,
        Some(w) => int_of(src, w, &format!("{key}.weight"), 1, 1000)? as u32,
    };
    let addr_text = b.address.get_ref().trim().to_string();
    let id = match &b.id {
        None => addr_text.clone(),
        Some(id) if id.get_ref().is_empty() => {
            return Err(src.error(
                id.span(),
                format!("{key}.id"),
                "must not be empty (omit it to use the address)",
            ));
        }
        Some(id) => {
            printable(src, id, &format!("{key}.id"))?;
            id.get_ref().clone()
        }
    };
    Ok(Backend {
        id,
        addr,
        addr_text,
        weight,
        set: None,
        backup: b.backup.as_ref().is_some_and(|b| *b.get_ref()),
        limits: super::limits::backend_limits(src, b, key)?,
    })
}

/// Names and ids end up in log lines, metric labels, `/status` and admin URLs: a
/// control or format character (NUL, a newline, a bidi override such as U+202E, a
/// zero-width space) or a line separator would split or disguise them there.
pub(super) fn printable(
    src: &Source<'_>,
    s: &Spanned<String>,
    key: &str,
) -> Result<(), ConfigError> {
    use unicode_properties::{GeneralCategory as G, GeneralCategoryGroup, UnicodeGeneralCategory};
    let bad = s.get_ref().chars().find(|c| {
        c.general_category_group() == GeneralCategoryGroup::Other
            || matches!(
                c.general_category(),
                G::LineSeparator | G::ParagraphSeparator
            )
    });
    match bad {
        None => Ok(()),
        Some(c) => Err(src.error(
            s.span(),
            key,
            format!(
                "contains a control or format character (U+{:04X}): names and ids appear in logs, metrics and /status, so they must be printable",
                c as u32
            ),
        )),
    }
}

/// A backend's address: an IP literal, or a host name resolved now.
fn backend_addr(
    src: &Source<'_>,
    s: &Spanned<String>,
    key: &str,
) -> Result<SocketAddr, ConfigError> {
    resolve::backend_addr_via(s.get_ref().trim(), src.resolver)
        .map_err(|e| src.error(s.span(), key, e.to_string()))
}

/// An address to listen on: an IP literal (wildcards allowed) with a non-zero port.
/// `admin.listen` (`IP:port` or `unix:PATH`) and, for a unix socket, `admin.mode`.
fn admin_listen(src: &Source<'_>, a: &super::file::FileAdmin) -> Result<AdminListen, ConfigError> {
    let text = a.listen.get_ref().trim();
    let Some(path) = text.strip_prefix("unix:") else {
        if let Some(m) = &a.mode {
            return Err(src.error(
                m.span(),
                "admin.mode",
                "`mode` is the file mode of a unix socket: it needs `listen = \"unix:/path/to/admin.sock\"`",
            ));
        }
        return listen_addr(src, &a.listen, "admin.listen").map(AdminListen::Tcp);
    };
    if path.is_empty() || !path.starts_with('/') || path.contains('\0') || path.len() > 107 {
        return Err(src.error(
            a.listen.span(),
            "admin.listen",
            format!("{text:?}: a unix socket takes an absolute path of at most 107 bytes (`unix:/run/ringway/admin.sock`)"),
        ));
    }
    let mode = match &a.mode {
        None => AdminListen::DEFAULT_MODE,
        Some(m) => {
            let t = m.get_ref().trim();
            match u32::from_str_radix(t.trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o777 && !t.is_empty() => mode,
                _ => {
                    return Err(src.error(
                        m.span(),
                        "admin.mode",
                        format!(
                            "{t:?} is not a file mode: expected octal like \"0600\" or \"0660\""
                        ),
                    ))
                }
            }
        }
    };
    Ok(AdminListen::Unix {
        path: path.into(),
        mode,
    })
}

fn listen_addr(
    src: &Source<'_>,
    s: &Spanned<String>,
    key: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = s.get_ref().trim();
    let addr: SocketAddr = text.parse().map_err(|_| {
        let why = super::wording::port_out_of_range(text).unwrap_or_else(|| {
            format!("{text:?} is not a socket address: expected IPv4 `1.2.3.4:port` or IPv6 `[::1]:port`")
        });
        src.error(s.span(), key, why)
    })?;
    if addr.port() == 0 {
        return Err(src.error(s.span(), key, format!("{text:?}: the port must not be 0")));
    }
    Ok(addr)
}

pub(super) fn int_of(
    src: &Source<'_>,
    v: &Spanned<i64>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<i64, ConfigError> {
    let n = *v.get_ref();
    if n < min || n > max {
        return Err(src.error(
            v.span(),
            key,
            format!("expected an integer from {min} to {max}, got {n}"),
        ));
    }
    Ok(n)
}

pub(super) fn duration_of(
    src: &Source<'_>,
    d: &Spanned<String>,
    key: &str,
) -> Result<Duration, ConfigError> {
    let text = d.get_ref().trim();
    let dur = humantime::parse_duration(text).map_err(|e| {
        src.error(
            d.span(),
            key,
            format!("{text:?} is not a duration ({e}): expected e.g. \"500ms\", \"3s\", \"10m\""),
        )
    })?;
    if dur.is_zero() {
        return Err(src.error(d.span(), key, "must be greater than zero"));
    }
    Ok(dur)
}

fn opt_duration(
    src: &Source<'_>,
    d: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    d.as_ref().map_or(Ok(default), |d| duration_of(src, d, key))
}

/// The `[[pool]]`s after the listeners' own (`pools`), each validated as the protocol
/// of the listeners that use it; every pool a listener names (`refs`) must exist.
fn named_pools(
    src: &Source<'_>,
    file: &FileConfig,
    mut pools: Vec<PoolConfig>,
    refs: &[PoolRef],
    listeners: &[ListenerConfig],
) -> Result<Vec<PoolConfig>, ConfigError> {
    let mut seen: HashMap<String, String> = pools
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                format!("listener {:?}'s own backends", p.name),
            )
        })
        .collect();
    let mut named = Vec::with_capacity(file.pools.len());
    for (i, fp) in file.pools.iter().enumerate() {
        let key = format!("pool[{i}]");
        let f = fp.get_ref();
        let name = f.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(src.error(f.name.span(), format!("{key}.name"), "must not be empty"));
        }
        printable(src, &f.name, &format!("{key}.name"))?;
        if let Some(first) = seen.insert(name.clone(), key.clone()) {
            return Err(src.error(
                f.name.span(),
                format!("{key}.name"),
                format!("duplicate pool name {name:?} (also {first})"),
            ));
        }
        named.push((i, name));
    }
    for r in refs {
        if !seen.contains_key(&r.name) {
            let mut known: Vec<&str> = named.iter().map(|(_, n)| n.as_str()).collect();
            known.sort_unstable();
            let hint = if known.is_empty() {
                "there are no [[pool]]s".to_string()
            } else {
                format!("pools: {}", known.join(", "))
            };
            return Err(src.error(
                r.span.clone(),
                r.key.clone(),
                format!("no pool is called {:?} ({hint})", r.name),
            ));
        }
    }
    // A listener's own pool is its alone.
    for r in refs {
        if let Some(owner) = pools.iter().find(|p| p.name == r.name) {
            return Err(src.error(
                r.span.clone(),
                r.key.clone(),
                format!("{:?} is listener {:?}'s own backends, not a [[pool]]: move them into a [[pool]] to share them", r.name, owner.name),
            ));
        }
    }
    for (i, name) in named {
        let f = file.pools[i].get_ref();
        let users: Vec<&ListenerConfig> = listeners
            .iter()
            .filter(|l| l.route.pools().contains(&name.as_str()))
            .collect();
        let protocol = users.first().map_or(Protocol::Tcp, |l| l.protocol);
        if let Some(other) = users.iter().find(|l| l.protocol != protocol) {
            return Err(src.error(
                f.name.span(),
                format!("pool[{i}].name"),
                format!("pool {name:?} is used by {} listener {:?} and {} listener {:?}: a pool serves one protocol (its checks and its flows are of that protocol); give each its own pool", protocol, users[0].name, other.protocol, other.name),
            ));
        }
        // Checks send a PROXY header where every listener using the pool does.
        let send_proxy = users
            .first()
            .and_then(|l| l.send_proxy)
            .filter(|v| users.iter().all(|l| l.send_proxy == Some(*v)));
        let parts = Parts {
            vnodes: f.vnodes.as_ref(),
            balance: f.balance.as_ref(),
            balance_factor: f.balance_factor.as_ref(),
            backends: &f.backends,
            backend_sets: &f.backend_sets,
            health: f.health.as_ref(),
            span: file.pools[i].span(),
            key: format!("pool[{i}]"),
        };
        pools.push(super::pools::pool(
            src, &parts, &name, None, protocol, send_proxy,
        )?);
    }
    Ok(pools)
}

/// A list of interface names (`key`): each as `ip link` names it (1 to 15 bytes, no
/// `/`, whitespace or NUL), none twice.
fn interfaces(
    src: &Source,
    list: Option<&Spanned<Vec<Spanned<String>>>>,
    key: &str,
) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for name in list.map(|l| l.get_ref().as_slice()).unwrap_or_default() {
        let n = name.get_ref();
        if n.is_empty()
            || n.len() > 15
            || n.bytes()
                .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
        {
            return Err(src.error(
                name.span(),
                key,
                format!("{n:?} is not an interface name (1 to 15 bytes, no '/' or spaces)"),
            ));
        }
        if out.contains(n) {
            return Err(src.error(name.span(), key, format!("{n:?} is named twice")));
        }
        out.push(n.clone());
    }
    Ok(out)
}
