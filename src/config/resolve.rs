//! Backend addresses: an IP literal (`10.0.0.5:5432`, `[2001:db8::5]:5432`) or a host
//! name (`db-1.internal:5432`), which the system resolver (`getaddrinfo`: /etc/hosts,
//! then DNS, as /etc/nsswitch.conf says) turns into the first address it returns.
//!
//! Names are resolved when the config is loaded (at start, by `check` and `route`, at
//! every reload), where a name that does not resolve is a config error; and again every
//! `resolve_interval` while running (`control/resolver.rs`), where it keeps its last
//! address.
//! A backend's ring identity is its `id` or its address as written, never the resolved
//! IP, so a name that moves to another IP keeps its keys.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Why an address is unusable; the caller adds file, line, column and key.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Not `host:port` at all.
    #[error("{0}")]
    Malformed(String),
    /// The name did not resolve, or resolved to nothing.
    #[error("{0}")]
    Unresolved(String),
}

/// True when `text` names a host rather than an IP (so it may resolve differently later).
pub fn is_host_name(text: &str) -> bool {
    text.parse::<SocketAddr>().is_err()
}

/// How host names become addresses: the system resolver, or (`check` of untrusted
/// bytes, the fuzz target) none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `getaddrinfo`.
    System,
    /// Every name fails to resolve; nothing leaves the machine.
    Offline,
}

/// `text` as a socket address: parsed when it is an IP literal, else resolved. Either
/// way it must be a concrete IP and a non-zero port, something to connect to.
pub fn backend_addr(text: &str) -> Result<SocketAddr, AddrError> {
    backend_addr_via(text, Resolver::System)
}

/// [`backend_addr`] with names resolved by `resolver`.
pub fn backend_addr_via(text: &str, resolver: Resolver) -> Result<SocketAddr, AddrError> {
    backend_addr_with(text, |host, port| match resolver {
        Resolver::System => (host, port).to_socket_addrs().map(Vec::from_iter),
        Resolver::Offline => Err(io::Error::other("name resolution is off")),
    })
}

/// [`backend_addr`] with the resolver passed in (tests).
fn backend_addr_with<I: IntoIterator<Item = SocketAddr>>(
    text: &str,
    resolve: impl FnOnce(&str, u16) -> io::Result<I>,
) -> Result<SocketAddr, AddrError> {
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => lookup(text, resolve)?,
    };
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(AddrError::Malformed(format!(
            "{text:?} ({addr}): a backend needs a concrete IP and a non-zero port"
        )));
    }
    Ok(addr)
}

/// `host:port` through `resolve`: its first address.
fn lookup<I: IntoIterator<Item = SocketAddr>>(
    text: &str,
    resolve: impl FnOnce(&str, u16) -> io::Result<I>,
) -> Result<SocketAddr, AddrError> {
    let malformed = || {
        AddrError::Malformed(super::wording::port_out_of_range(text).unwrap_or_else(|| {
            format!(
                "{text:?} is not an address: expected `1.2.3.4:port`, `[2001:db8::1]:port` or `host.name:port`"
            )
        }))
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(malformed)?;
    // A colon in the host is an IPv6 address without brackets, or a typo.
    if !valid_host(host) {
        return Err(malformed());
    }
    let port: u16 = port.parse().map_err(|_| malformed())?;
    let first = resolve(host, port)
        .map_err(|e| AddrError::Unresolved(format!("cannot resolve {host:?}: {e}")))?
        .into_iter()
        .next();
    first.ok_or_else(|| AddrError::Unresolved(format!("{host:?} resolved to no address")))
}

/// Letters, digits, `-`, `_` and `.`, in labels of 1..=63 characters, 253 at most
/// (RFC 1123, with `_` as resolvers accept it).
pub(super) fn valid_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(
        addrs: &[&str],
    ) -> impl FnOnce(&str, u16) -> io::Result<std::vec::IntoIter<SocketAddr>> {
        let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        move |_, port| {
            Ok(addrs
                .into_iter()
                .map(|mut a| {
                    a.set_port(port);
                    a
                })
                .collect::<Vec<_>>()
                .into_iter())
        }
    }

    fn never(_: &str, _: u16) -> io::Result<std::vec::IntoIter<SocketAddr>> {
        panic!("a literal must not be resolved")
    }

    #[test]
    fn literals_are_parsed_not_resolved() {
        assert_eq!(
            backend_addr_with("10.0.0.5:5432", never),
            Ok("10.0.0.5:5432".parse().unwrap())
        );
        assert_eq!(
            backend_addr_with("[2001:db8::5]:53", never),
            Ok("[2001:db8::5]:53".parse().unwrap())
        );
    }

    #[test]
    fn names_take_the_first_resolved_address_with_their_port() {
        let got = backend_addr_with("db-1.internal:5432", fixed(&["[::1]:0", "127.0.0.1:0"]));
        assert_eq!(got, Ok("[::1]:5432".parse().unwrap()));
        let got = backend_addr_with("db_1.internal.:80", fixed(&["127.0.0.9:0"]));
        assert_eq!(got, Ok("127.0.0.9:80".parse().unwrap()));
    }

    #[test]
    fn resolver_failures_and_empty_answers_are_unresolved() {
        let failing = |_: &str, _: u16| -> io::Result<std::vec::IntoIter<SocketAddr>> {
            Err(io::Error::other("Name or service not known"))
        };
        match backend_addr_with("nowhere.invalid:80", failing) {
            Err(AddrError::Unresolved(m)) => {
                assert!(
                    m.contains("\"nowhere.invalid\"") && m.contains("not known"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            backend_addr_with("empty.test:80", fixed(&[])),
            Err(AddrError::Unresolved(_))
        ));
    }

    #[test]
    fn wildcards_and_port_zero_are_refused_however_they_come() {
        for (text, answer) in [
            ("0.0.0.0:80", "127.0.0.1:0"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("zero.test:80", "0.0.0.0:0"),
            ("zero.test:0", "127.0.0.1:0"),
        ] {
            match backend_addr_with(text, fixed(&[answer])) {
                Err(AddrError::Malformed(m)) => assert!(m.contains("concrete IP"), "{m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_addresses_are_never_resolved() {
        for bad in [
            "db.internal",
            "db.internal:",
            "db.internal:http",
            "db.internal:70000",
            ":80",
            "2001:db8::5:53",
            "a b:80",
            "a..b:80",
            "[db]:80",
            "http://db:80",
        ] {
            assert!(
                matches!(backend_addr_with(bad, never), Err(AddrError::Malformed(_))),
                "{bad}"
            );
        }
        let long = format!("{}.test:80", "a".repeat(64));
        assert!(matches!(
            backend_addr_with(&long, never),
            Err(AddrError::Malformed(_))
        ));
    }
}
