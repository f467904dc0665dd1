//! Who may call the admin API from a browser: the checks that stop another web site
//! from using an operator's browser against it (docs/ADMIN.md has the threat model).
//! Pure: strings in, a verdict out.
//!
//! * **DNS rebinding**: a page at `evil.example` makes its own name resolve to
//!   127.0.0.1 and then reads `/status` as a same-origin request. The browser still
//!   sends `Host: evil.example`, so a request is answered only when its `Host` names
//!   the admin API itself ([`host_ok`]): its listen address (any IP literal when it
//!   listens on a wildcard address; an IP literal is no rebinding), `localhost` when
//!   it listens on loopback, or a name in `[admin] hosts`. On a unix socket any `Host`
//!   goes: no browser reaches one.
//! * **Cross-site requests** (CSRF): a form on another site can POST to the admin API
//!   without reading the answer. A state-changing request is refused when it carries
//!   an `Origin` or `Referer` of another origin ([`same_origin`]), or a body that is not
//!   JSON ([`json_or_empty`]): a form sends `application/x-www-form-urlencoded`,
//!   `multipart/form-data` or `text/plain`, and a page cannot send
//!   `application/json` to another origin without a CORS preflight, which the API
//!   never grants.

use std::net::{IpAddr, SocketAddr};

/// Whether `host` (the request's `Host`) names an admin API listening on `listen`
/// (`None`: a unix socket) with extra names `hosts` (lowercase, no trailing dot).
pub fn host_ok(host: Option<&str>, listen: Option<SocketAddr>, hosts: &[String]) -> bool {
    let Some(listen) = listen else {
        return true;
    };
    let Some((name, port)) = host.and_then(split_host) else {
        return false;
    };
    if port.is_some_and(|p| p != listen.port()) {
        return false;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = name.parse::<IpAddr>() {
        return ip.to_canonical() == listen.ip().to_canonical() || listen.ip().is_unspecified();
    }
    let local = listen.ip().is_loopback() || listen.ip().is_unspecified();
    (local && name == "localhost") || hosts.contains(&name)
}

/// `name[:port]` or `[v6]:port` split into the name (brackets removed) and the port;
/// `None` when it is not a host.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        return match after {
            "" => Some((v6, None)),
            p => Some((v6, Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match host.rsplit_once(':') {
        Some((name, p)) if !name.contains(':') => Some((name, Some(p.parse().ok()?))),
        Some(_) => None,
        None if host.is_empty() => None,
        None => Some((host, None)),
    }
}

/// Whether `origin` (an `Origin` or `Referer` value) is the origin of a request to
/// `host`: `http://` or `https://` followed by the same host and port. `null`, other
/// schemes and other hosts are not.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let origin = origin.trim();
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // No userinfo: `http://127.0.0.1:9101@evil.example` is evil.example.
    if authority.contains('@') {
        return false;
    }
    let norm = |a: &str| {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(default).map(str::to_string).unwrap_or(a)
    };
    !authority.is_empty() && norm(authority) == norm(host.trim())
}

/// Whether a state-changing request's body is acceptable: `Content-Type:
/// application/json` (any parameters), or no content type and no body.
pub fn json_or_empty(content_type: Option<&str>, has_body: bool) -> bool {
    match content_type {
        None => !has_body,
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn host_names_the_admin_api_or_nothing() {
        let lo = a("127.0.0.1:9101");
        let names = vec!["ringway.internal".to_string()];
        for ok in [
            "127.0.0.1:9101",
            "127.0.0.1",
            "localhost:9101",
            "LOCALHOST",
            "ringway.internal:9101",
            "ringway.internal.",
        ] {
            assert!(host_ok(Some(ok), lo, &names), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9101",
            "127.0.0.1:80",
            "127.0.0.2:9101",
            "",
            "127.0.0.1:x",
            "localhost.evil.example",
            "[::1]:9101",
        ] {
            assert!(!host_ok(Some(bad), lo, &names), "{bad}");
        }
        assert!(!host_ok(None, lo, &names), "no Host");
        let any = a("0.0.0.0:9101");
        assert!(host_ok(Some("192.0.2.5:9101"), any, &[]));
        assert!(host_ok(Some("localhost:9101"), any, &[]));
        assert!(!host_ok(Some("evil.example:9101"), any, &[]));
        let v6 = a("[::1]:9101");
        assert!(host_ok(Some("[::1]:9101"), v6, &[]));
        assert!(host_ok(Some("localhost:9101"), v6, &[]));
        assert!(!host_ok(Some("[::2]:9101"), v6, &[]));
        let public = a("192.0.2.1:9101");
        assert!(
            !host_ok(Some("localhost:9101"), public, &[]),
            "localhost is not a public address"
        );
        assert!(host_ok(Some("anything"), None, &[]), "unix socket");
    }

    #[test]
    fn origins_must_match_the_host() {
        assert!(same_origin("http://127.0.0.1:9101", "127.0.0.1:9101"));
        assert!(same_origin("http://127.0.0.1:9101/", "127.0.0.1:9101"));
        assert!(same_origin(
            "http://LocalHost:9101/status?x",
            "localhost:9101"
        ));
        assert!(same_origin(
            "http://ringway.internal:80",
            "ringway.internal"
        ));
        for bad in [
            "http://evil.example",
            "null",
            "",
            "file://",
            "http://127.0.0.1:9102",
            "http://127.0.0.1:9101@evil.example",
            "javascript:alert(1)",
            "http://",
        ] {
            assert!(!same_origin(bad, "127.0.0.1:9101"), "{bad}");
        }
    }

    #[test]
    fn only_json_or_nothing_changes_state() {
        assert!(json_or_empty(Some("application/json"), true));
        assert!(json_or_empty(
            Some("Application/JSON; charset=utf-8"),
            false
        ));
        assert!(json_or_empty(None, false));
        for bad in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/jsonx",
        ] {
            assert!(!json_or_empty(Some(bad), false), "{bad}");
        }
        assert!(!json_or_empty(None, true), "a body without a type");
    }
}
