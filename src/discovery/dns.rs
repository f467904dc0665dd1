//! Asking DNS, with hickory-resolver (its blocking front end: each call runs its own
//! small runtime, so it belongs on a blocking thread).
//!
//! - `dns = "name:port"`: the name's A and AAAA records, each address at `port`, every
//!   one with the set's weight.
//! - `srv = "_svc._proto.name"`: the SRV records of the lowest priority present (the
//!   others are standbys by RFC 2782, and ringway spreads over one group); each
//!   target's A and AAAA addresses at the record's port, with the record's weight
//!   (0 counts as 1, above 1000 as 1000). A target that does not exist is left out; a
//!   target that cannot be looked up fails the whole answer (it is not a smaller set).
//!
//! Answers are not cached here: every round asks the servers, and the caller
//! schedules rounds by the answers' TTLs.

use std::net::SocketAddr;
use std::time::Instant;

use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, Protocol, ResolverConfig as HickoryConfig,
    ResolverOpts,
};
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::Resolver;

use super::Answer;
use crate::config::{Member, ResolverConfig, SetQuery};

/// Asks each query (with a `dns` set's weight) once; one answer per query, in order.
pub fn lookup(config: &ResolverConfig, queries: &[(SetQuery, u32)]) -> Vec<Answer> {
    let resolver = match resolver(config) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("cannot set up the resolver: {e}");
            return queries
                .iter()
                .map(|_| Answer::Failed(why.clone()))
                .collect();
        }
    };
    queries
        .iter()
        .map(|(q, weight)| match q {
            SetQuery::Host { host, port } => host_answer(&resolver, host, *port, *weight),
            SetQuery::Srv(name) => srv_answer(&resolver, name),
        })
        .collect()
}

fn resolver(config: &ResolverConfig) -> std::io::Result<Resolver> {
    let (hickory, mut opts) = if config.servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()?
    } else {
        let mut group = NameServerConfigGroup::with_capacity(config.servers.len() * 2);
        for &addr in &config.servers {
            // UDP first; TCP for answers too large for a datagram.
            group.push(NameServerConfig::new(addr, Protocol::Udp));
            group.push(NameServerConfig::new(addr, Protocol::Tcp));
        }
        (
            HickoryConfig::from_parts(None, Vec::new(), group),
            ResolverOpts::default(),
        )
    };
    opts.timeout = config.timeout;
    opts.attempts = 2;
    opts.cache_size = 0;
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    Resolver::new(hickory, opts)
}

/// The addresses of `host`: `Ok(None)` when the name does not exist or has none.
fn addresses(
    resolver: &Resolver,
    host: &str,
) -> Result<Option<(Vec<std::net::IpAddr>, Instant)>, Answer> {
    match resolver.lookup_ip(host) {
        Ok(found) => {
            let ips: Vec<_> = found.iter().collect();
            Ok((!ips.is_empty()).then(|| (ips, found.valid_until())))
        }
        Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => Ok(None),
        Err(e) => Err(failure(&e)),
    }
}

fn host_answer(resolver: &Resolver, host: &str, port: u16, weight: u32) -> Answer {
    match resolver.lookup_ip(host) {
        Ok(found) => {
            let members: Vec<Member> = found
                .iter()
                .map(|ip| Member {
                    addr: SocketAddr::new(ip, port),
                    weight,
                })
                .collect();
            found_or_empty(members, found.valid_until(), host)
        }
        Err(e) => failure(&e),
    }
}

fn srv_answer(resolver: &Resolver, name: &str) -> Answer {
    let srv = match resolver.srv_lookup(name) {
        Ok(srv) => srv,
        Err(e) => return failure(&e),
    };
    let mut until = srv.as_lookup().valid_until();
    let Some(first) = srv.iter().map(|r| r.priority()).min() else {
        return Answer::Failed(format!("{name}: no SRV records"));
    };
    let mut members = Vec::new();
    for r in srv.iter().filter(|r| r.priority() == first) {
        let target = r.target().to_utf8();
        match addresses(resolver, &target) {
            Ok(Some((ips, valid))) => {
                until = until.min(valid);
                members.extend(ips.into_iter().map(|ip| Member {
                    addr: SocketAddr::new(ip, r.port()),
                    weight: u32::from(r.weight()).clamp(1, 1000),
                }));
            }
            Ok(None) => {}
            Err(Answer::Failed(why)) => {
                return Answer::Failed(format!("SRV target {target}: {why}"))
            }
            Err(other) => return other,
        }
    }
    found_or_empty(members, until, name)
}

fn found_or_empty(members: Vec<Member>, until: Instant, name: &str) -> Answer {
    if members.is_empty() {
        return Answer::Failed(format!("{name}: the answer has no addresses"));
    }
    Answer::Found {
        members,
        ttl: until.saturating_duration_since(Instant::now()),
    }
}

/// A lookup error as an answer: NXDOMAIN, or a failure with its reason.
fn failure(e: &ResolveError) -> Answer {
    match e.kind() {
        ResolveErrorKind::NoRecordsFound { response_code, .. }
            if *response_code == ResponseCode::NXDomain =>
        {
            Answer::NxDomain
        }
        ResolveErrorKind::NoRecordsFound { query, .. } => {
            Answer::Failed(format!("{}: no records", query.name()))
        }
        _ => Answer::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_unreachable_server_is_a_failure_not_an_empty_set() {
        // A port nothing listens on, on loopback: refused at once.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = ResolverConfig {
            servers: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            timeout: Duration::from_millis(200),
            nxdomain_after: 3,
        };
        let answers = lookup(
            &config,
            &[
                (
                    SetQuery::Host {
                        host: "api.test".into(),
                        port: 80,
                    },
                    1,
                ),
                (SetQuery::Srv("_api._tcp.test".into()), 1),
            ],
        );
        assert_eq!(answers.len(), 2);
        for a in answers {
            assert!(matches!(a, Answer::Failed(_)), "{a:?}");
        }
    }
}
