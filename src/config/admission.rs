//! A listener's admission keys: `allow`, `deny`, the per-source limits and the size of
//! the table that tracks sources, and when the backend connection opens
//! (`backend_connect`, `first_data_timeout`).

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::file::{FileBackendConnect, FileListener};
use super::validate::{duration_of, int_of, Source};
use super::{AdmissionConfig, BackendConnect, Protocol, RateConfig, Tuning};

/// `allow`, `deny`, the per-source keys of a listener of `protocol` (named `key`).
pub(super) fn admission(
    src: &Source<'_>,
    l: &FileListener,
    protocol: Protocol,
    key: &str,
) -> Result<AdmissionConfig, ConfigError> {
    let allow = match &l.allow {
        None => None,
        Some(list) if list.get_ref().is_empty() => {
            return Err(src.error(
                list.span(),
                format!("{key}.allow"),
                "empty: no source would be served; leave `allow` out to serve every source",
            ))
        }
        Some(list) => Some(networks(src, list, &format!("{key}.allow"))?),
    };
    let deny = match &l.deny {
        None => Vec::new(),
        Some(list) => networks(src, list, &format!("{key}.deny"))?,
    };
    let (max_key, rate_key, max, rate) = match protocol {
        Protocol::Tcp => (
            "max_connections_per_source",
            "connection_rate_per_source",
            &l.max_connections_per_source,
            &l.connection_rate_per_source,
        ),
        Protocol::Udp => (
            "udp_max_flows_per_source",
            "udp_flow_rate_per_source",
            &l.udp_max_flows_per_source,
            &l.udp_flow_rate_per_source,
        ),
    };
    let max_per_source = match max {
        None => None,
        Some(m) => Some(int_of(src, m, &format!("{key}.{max_key}"), 1, 10_000_000)? as u32),
    };
    let rate_per_source = match rate {
        None => None,
        Some(r) => Some(rate_of(src, r, &format!("{key}.{rate_key}"))?),
    };
    let limited = max_per_source.is_some() || rate_per_source.is_some();
    let sizing = |v: &Option<Spanned<i64>>, name: &str, min: i64, max: i64, default: i64| {
        let Some(v) = v else {
            return Ok(default);
        };
        if !limited {
            return Err(src.error(
                v.span(),
                format!("{key}.{name}"),
                format!("`{name}` shapes the per-source limits, and this listener sets none: add `{max_key}` or `{rate_key}`, or remove it"),
            ));
        }
        int_of(src, v, &format!("{key}.{name}"), min, max)
    };
    let source_prefix_v4 = sizing(&l.source_prefix_v4, "source_prefix_v4", 1, 32, 32)? as u8;
    let source_prefix_v6 = sizing(&l.source_prefix_v6, "source_prefix_v6", 1, 128, 64)? as u8;
    let source_table_size = sizing(
        &l.source_table_size,
        "source_table_size",
        16,
        16_777_216,
        Tuning::DEFAULT_SOURCE_TABLE_SIZE as i64,
    )? as usize;
    Ok(AdmissionConfig {
        allow,
        deny,
        max_per_source,
        rate_per_source,
        source_prefix_v4,
        source_prefix_v6,
        source_table_size,
    })
}

/// `backend_connect` and `first_data_timeout`.
pub(super) fn backend_connect(
    src: &Source<'_>,
    l: &FileListener,
    key: &str,
) -> Result<(BackendConnect, Duration), ConfigError> {
    let when = match l.backend_connect.as_ref().map(|b| *b.get_ref()) {
        None | Some(FileBackendConnect::AtAccept) => BackendConnect::AtAccept,
        Some(FileBackendConnect::OnData) => BackendConnect::OnData,
    };
    let timeout = match &l.first_data_timeout {
        None => Tuning::DEFAULT_FIRST_DATA_TIMEOUT,
        Some(t) if when == BackendConnect::AtAccept => {
            return Err(src.error(
                t.span(),
                format!("{key}.first_data_timeout"),
                "`first_data_timeout` is how long a client may stay silent before its backend connection opens: it needs `backend_connect = \"on-data\"`",
            ))
        }
        Some(t) => duration_of(src, t, &format!("{key}.first_data_timeout"))?,
    };
    Ok((when, timeout))
}

/// A list of networks (`10.0.0.0/8`, `2001:db8::/32`) or single addresses (`192.0.2.7`).
pub(super) fn networks(
    src: &Source<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    key: &str,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.get_ref()
        .iter()
        .map(|s| {
            let text = s.get_ref().trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    src.error(
                        s.span(),
                        key,
                        format!("{text:?} is not an address or network: expected `10.0.0.0/8`, `192.0.2.7` or `2001:db8::/32`"),
                    )
                })
        })
        .collect()
}

/// A rate: `"100/s"`, `"600/m"`, `"3600/h"`.
fn rate_of(src: &Source<'_>, r: &Spanned<String>, key: &str) -> Result<RateConfig, ConfigError> {
    let text = r.get_ref().trim();
    let bad = |why: &str| -> ConfigError {
        src.error(
            r.span(),
            key,
            format!("{text:?} {why}: expected new connections per second, minute or hour, e.g. \"20/s\", \"600/m\""),
        )
    };
    let Some((count, unit)) = text.split_once('/') else {
        return Err(bad("is not a rate"));
    };
    let count: u32 = match count.trim().parse() {
        Ok(n) if (1..=10_000_000).contains(&n) => n,
        _ => return Err(bad("needs a count from 1 to 10000000")),
    };
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad("has an unknown unit")),
    };
    Ok(RateConfig { count, per })
}

/// The admission keys that only make sense for TCP listeners, with their spans.
pub(super) fn tcp_only_keys(l: &FileListener) -> Vec<(&'static str, Option<Range<usize>>)> {
    vec![
        (
            "max_connections_per_source",
            l.max_connections_per_source.as_ref().map(Spanned::span),
        ),
        (
            "connection_rate_per_source",
            l.connection_rate_per_source.as_ref().map(Spanned::span),
        ),
        (
            "backend_connect",
            l.backend_connect.as_ref().map(Spanned::span),
        ),
        (
            "first_data_timeout",
            l.first_data_timeout.as_ref().map(Spanned::span),
        ),
    ]
}

/// The admission keys that only make sense for UDP listeners, with their spans.
pub(super) fn udp_only_keys(l: &FileListener) -> Vec<(&'static str, Option<Range<usize>>)> {
    vec![
        (
            "udp_max_flows_per_source",
            l.udp_max_flows_per_source.as_ref().map(Spanned::span),
        ),
        (
            "udp_flow_rate_per_source",
            l.udp_flow_rate_per_source.as_ref().map(Spanned::span),
        ),
    ]
}
