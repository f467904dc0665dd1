//! A listener's routing: `route_by`, `[[listener.route]]`, `default_pool` and
//! `sni_timeout`, and the server-name patterns routes match.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::file::{FileListener, FileRouteBy};
use super::validate::{duration_of, Source};
use super::{Protocol, RouteBy, RouteConfig, RouteRule, Tuning};

/// A pool a listener names, to be looked up once every pool is known.
#[derive(Debug)]
pub(super) struct PoolRef {
    pub name: String,
    pub span: Range<usize>,
    pub key: String,
}

/// The routing of listener `l` (called `name`, at `key`); `own`: it has backends of
/// its own (they are its default pool). The pools it names come back to be checked.
pub(super) fn route(
    src: &Source<'_>,
    sl: &Spanned<FileListener>,
    protocol: Protocol,
    own: bool,
    name: &str,
    first_data_timeout: Duration,
    key: &str,
) -> Result<(RouteConfig, Vec<PoolRef>), ConfigError> {
    let l = sl.get_ref();
    let by = match l.route_by.as_ref().map(|b| *b.get_ref()) {
        None | Some(FileRouteBy::None) => RouteBy::None,
        Some(FileRouteBy::Sni) => RouteBy::Sni,
    };
    let mut refs = Vec::new();
    if by == RouteBy::None {
        if let Some(r) = l.routes.first() {
            return Err(src.error(
                r.span(),
                format!("{key}.route"),
                "routes match the server name a client asks for: they need `route_by = \"sni\"` on the listener",
            ));
        }
        if let Some(t) = &l.sni_timeout {
            return Err(src.error(
                t.span(),
                format!("{key}.sni_timeout"),
                "`sni_timeout` bounds the wait for a client's hello: it needs `route_by = \"sni\"`",
            ));
        }
    }
    let default_pool = match (&l.default_pool, own) {
        (Some(d), true) => {
            return Err(src.error(
                d.span(),
                format!("{key}.default_pool"),
                format!("listener {name:?} has backends of its own: they are its default pool. Move them into a [[pool]], or leave `default_pool` out"),
            ))
        }
        (Some(d), false) => {
            let pool = d.get_ref().trim().to_string();
            refs.push(PoolRef {
                name: pool.clone(),
                span: d.span(),
                key: format!("{key}.default_pool"),
            });
            Some(pool)
        }
        (None, true) => Some(name.to_string()),
        (None, false) => None,
    };
    if default_pool.is_none() && l.routes.is_empty() {
        return Err(src.error(
            sl.span(),
            format!("{key}.backend"),
            format!("listener {name:?} has no backends: add at least one [[listener.backend]] with an `address`, a [[listener.backend_set]], or `default_pool = \"NAME\"` naming a [[pool]]"),
        ));
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut rules = Vec::with_capacity(l.routes.len());
    for (i, r) in l.routes.iter().enumerate() {
        let rkey = format!("{key}.route[{i}]");
        let r = r.get_ref();
        if r.sni.get_ref().is_empty() {
            return Err(src.error(
                r.sni.span(),
                format!("{rkey}.sni"),
                "empty: list the server names this route takes (`api.example`, `*.api.example`)",
            ));
        }
        let mut names = Vec::with_capacity(r.sni.get_ref().len());
        for (j, n) in r.sni.get_ref().iter().enumerate() {
            let nkey = format!("{rkey}.sni[{j}]");
            let pattern =
                pattern(n.get_ref()).map_err(|why| src.error(n.span(), nkey.clone(), why))?;
            if let Some(first) = seen.insert(pattern.clone(), nkey.clone()) {
                return Err(src.error(
                    n.span(),
                    nkey,
                    format!("{pattern:?} is also claimed by {first}: one name, one route"),
                ));
            }
            names.push(pattern);
        }
        let pool = r.pool.get_ref().trim().to_string();
        refs.push(PoolRef {
            name: pool.clone(),
            span: r.pool.span(),
            key: format!("{rkey}.pool"),
        });
        rules.push(RouteRule { names, pool });
    }
    let sni_timeout = match &l.sni_timeout {
        Some(t) => duration_of(src, t, &format!("{key}.sni_timeout"))?,
        None => match protocol {
            Protocol::Tcp => first_data_timeout,
            Protocol::Udp => Tuning::DEFAULT_UDP_SNI_TIMEOUT,
        },
    };
    Ok((
        RouteConfig {
            by,
            rules,
            default_pool,
            sni_timeout,
        },
        refs,
    ))
}

/// A route's server name as written: `api.example` or `*.api.example` (the wildcard
/// stands for exactly one label, as in certificates). Lowercase, no trailing dot.
pub fn pattern(text: &str) -> Result<String, String> {
    let t = text.trim();
    let t = t.strip_suffix('.').unwrap_or(t).to_ascii_lowercase();
    let name = t.strip_prefix("*.").unwrap_or(&t);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.contains('*') {
        return Err(format!("{text:?}: a wildcard is `*.` before a name (`*.api.example`); it stands for exactly one label"));
    }
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{text:?} is not a server name: letters, digits, `-` and `_` in dot-separated labels (IDNs as `xn--` labels)"));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn patterns() {
        assert_eq!(pattern("API.Example."), Ok("api.example".into()));
        assert_eq!(pattern("*.Api.example"), Ok("*.api.example".into()));
        assert_eq!(
            pattern("xn--bcher-kva.example"),
            Ok("xn--bcher-kva.example".into())
        );
        for bad in [
            "",
            "*",
            "*.",
            "a.*.b",
            "**.a",
            "a..b",
            "a b",
            "bücher.example",
            "*a.b",
        ] {
            assert!(pattern(bad).is_err(), "{bad:?}");
        }
    }
}
