//! Pools: a `[[pool]]`, or a listener's own backends. Their backends, backend sets,
//! ring size and health checks, validated once the protocol of the listeners that
//! use them is known.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;

use super::error::ConfigError;
use super::file::{FileBackend, FileBackendSet, FileBalance, FileHealth};
use super::validate::{backend, int_of, Source};
use super::{PoolConfig, Protocol, ProxyVersion};
use crate::balance::ring::{DEFAULT_VNODES, MAX_POINTS};
use crate::balance::{Balance, Mode};

/// The parts of the file a pool is made of, wherever they stand.
pub(super) struct Parts<'a> {
    pub vnodes: Option<&'a Spanned<i64>>,
    pub balance: Option<&'a Spanned<FileBalance>>,
    pub balance_factor: Option<&'a Spanned<f64>>,
    pub backends: &'a [Spanned<FileBackend>],
    pub backend_sets: &'a [Spanned<FileBackendSet>],
    pub health: Option<&'a Spanned<FileHealth>>,
    /// The table they are in, and its key (`listener[0]`, `pool[2]`).
    pub span: Range<usize>,
    pub key: String,
}

impl Parts<'_> {
    /// Backends of any kind.
    pub fn has_backends(&self) -> bool {
        !self.backends.is_empty() || !self.backend_sets.is_empty()
    }
}

/// Pool `name` from `parts`; `owner`: the listener whose own backends these are.
/// Checks run as `protocol` and send a PROXY header (`send_proxy`) where its
/// listeners send one.
pub(super) fn pool(
    src: &Source<'_>,
    parts: &Parts<'_>,
    name: &str,
    owner: Option<&str>,
    protocol: Protocol,
    send_proxy: Option<ProxyVersion>,
) -> Result<PoolConfig, ConfigError> {
    let key = &parts.key;
    let vnodes = match parts.vnodes {
        None => DEFAULT_VNODES,
        Some(v) => int_of(src, v, &format!("{key}.vnodes"), 1, 65_536)? as u32,
    };
    let balance = balance(src, parts)?;
    let health = super::health::health(src, parts.health, protocol, send_proxy, key)?;
    let backend_sets = super::sets::backend_sets(src, parts.backend_sets, key)?;
    if !parts.has_backends() {
        let what = match owner {
            Some(_) => "listener",
            None => "pool",
        };
        return Err(src.error(
            parts.span.clone(),
            format!("{key}.backend"),
            format!("{what} {name:?} has no backends: add at least one [[{what}.backend]] with an `address`, or a [[{what}.backend_set]]"),
        ));
    }
    let mut backends = Vec::with_capacity(parts.backends.len());
    let mut ids: HashSet<String> = HashSet::new();
    for (j, b) in parts.backends.iter().enumerate() {
        let bkey = format!("{key}.backend[{j}]");
        let backend = backend(src, b.get_ref(), &bkey)?;
        if !ids.insert(backend.id.clone()) {
            let span = b
                .get_ref()
                .id
                .as_ref()
                .map_or(b.get_ref().address.span(), |i| i.span());
            let first = parts
                .backends
                .iter()
                .position(|o| {
                    let o = o.get_ref();
                    o.id.as_ref()
                        .map_or(o.address.get_ref().trim(), |i| i.get_ref())
                        == backend.id
                })
                .unwrap_or(0);
            return Err(src.error(
                span,
                format!("{bkey}.id"),
                format!(
                    "duplicate backend id {:?} (also {key}.backend[{first}], line {}): ids must be unique in a pool (they are the ring identity)",
                    backend.id,
                    src.line_of(parts.backends[first].span().start)
                ),
            ));
        }
        backends.push(backend);
    }
    let points: u64 = backends
        .iter()
        .map(|b| u64::from(b.weight) * u64::from(vnodes))
        .sum();
    if points > MAX_POINTS {
        let span = parts.vnodes.map_or(parts.span.clone(), |v| v.span());
        return Err(src.error(
            span,
            format!("{key}.vnodes"),
            format!(
                "vnodes x total weight = {points} ring points; at most {MAX_POINTS} are allowed"
            ),
        ));
    }
    Ok(PoolConfig {
        name: name.to_string(),
        owner: owner.map(str::to_string),
        protocol,
        vnodes,
        balance,
        health,
        backends,
        backend_sets,
    })
}

/// Most `balance_factor` may be: past it, a bound no longer bounds anything.
const MAX_FACTOR: f64 = 100.0;

/// `balance` and `balance_factor`.
fn balance(src: &Source<'_>, parts: &Parts<'_>) -> Result<Balance, ConfigError> {
    let key = &parts.key;
    let mode = match parts.balance.map(|b| *b.get_ref()) {
        None | Some(FileBalance::Ring) => Mode::Ring,
        Some(FileBalance::LeastConnections) => Mode::LeastConnections,
        Some(FileBalance::RoundRobin) => Mode::RoundRobin,
        Some(FileBalance::Maglev) => Mode::Maglev,
    };
    let factor = match parts.balance_factor {
        None => None,
        Some(f) if !matches!(mode, Mode::Ring | Mode::Maglev) => {
            return Err(src.error(
                f.span(),
                format!("{key}.balance_factor"),
                format!("`balance_factor` bounds the loads of the ring (or of maglev), and this pool balances by {}: remove it, or set `balance = \"ring\"`", mode.name()),
            ));
        }
        Some(f) if *f.get_ref() > 1.0 && *f.get_ref() <= MAX_FACTOR => Some(*f.get_ref()),
        Some(f) => {
            return Err(src.error(
                f.span(),
                format!("{key}.balance_factor"),
                format!("expected a number over 1.0 and at most {MAX_FACTOR} (1.25: no backend holds more than 125% of the average), got {}", f.get_ref()),
            ));
        }
    };
    Ok(Balance { mode, factor })
}

#[cfg(test)]
mod tests;
