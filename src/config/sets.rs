//! Backends that come from DNS: `[[listener.backend_set]]` (`srv = "_api._tcp.example"`
//! or `dns = "api.example:8443"`) and the `[resolver]` they are looked up with.
//!
//! The config says what to ask; `discovery/` asks; the answers become backends here,
//! by one rule on every node: a discovered backend's id, its ring identity, is its
//! `IP:PORT`. Two nodes that get the same answer build the same ring, and an answer is
//! a set: the order of its records and any duplicates do not matter.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use toml::Spanned;

use super::file::{FileBackendSet, FileResolver};
use super::validate::{duration_of, int_of, Source};
use super::{ConfigError, PoolConfig};
use crate::balance::ring::MAX_POINTS;
use crate::balance::Backend;

/// `[resolver]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// The DNS servers asked, in order; empty: those of `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// How long one query may take.
    pub timeout: Duration,
    /// Consecutive NXDOMAIN answers after which a set is emptied (before: kept).
    pub nxdomain_after: u32,
}

impl ResolverConfig {
    /// `timeout` default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// `nxdomain_after` default.
    pub const DEFAULT_NXDOMAIN_AFTER: u32 = 3;
}

impl Default for ResolverConfig {
    fn default() -> ResolverConfig {
        ResolverConfig {
            servers: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            nxdomain_after: Self::DEFAULT_NXDOMAIN_AFTER,
        }
    }
}

/// One `[[listener.backend_set]]` or `[[pool.backend_set]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSet {
    /// What it asks, as written (`_api._tcp.example` or `api.example:8443`): names the
    /// set in `/status`, logs and metrics.
    pub name: String,
    /// The query.
    pub query: SetQuery,
    /// `dns` sets: the weight of every address (SRV records carry their own).
    pub weight: u32,
    /// Only addresses in these networks become backends (`None`: any address that is
    /// not ringway's own or otherwise unusable; see `discovery::filter`).
    pub allow: Option<Vec<ipnet::IpNet>>,
    /// Backends the set gives at most; an answer with more keeps the first ones in
    /// address order (the same ones on every node) and counts the rest as refused.
    pub max_backends: usize,
}

impl BackendSet {
    /// `max_backends` default: enough for any service we know of, and a bound on what
    /// one DNS answer can make the control plane do.
    pub const DEFAULT_MAX_BACKENDS: usize = 1000;
}

/// What a set asks DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetQuery {
    /// SRV records: each target's addresses at the record's port, with its weight.
    Srv(String),
    /// A and AAAA records: each address at `port`.
    Host {
        /// The name.
        host: String,
        /// The port every address gets.
        port: u16,
    },
}

/// One address an answer gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Ring weight, 1..=1000.
    pub weight: u32,
}

/// Why an answer was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The ring would be too large.
    #[error("the answer would give {points} ring points (vnodes x total weight); at most {MAX_POINTS} are allowed")]
    TooManyPoints {
        /// vnodes x total weight with the answer.
        points: u64,
    },
}

/// What replacing a set's members did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replaced {
    /// The pool's backends changed.
    pub changed: bool,
    /// Addresses left out because a configured backend or an earlier set already has
    /// that id.
    pub skipped: Vec<SocketAddr>,
    /// Ids the set gained.
    pub added: Vec<String>,
    /// Ids the set lost.
    pub removed: Vec<String>,
}

impl PoolConfig {
    /// The backends set `name` gave, in backend order.
    pub fn set_members<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Backend> + 'a {
        self.backends
            .iter()
            .filter(move |b| b.set.as_deref() == Some(name))
    }

    /// Makes `members` the backends of set `set` (an index into `backend_sets`): the
    /// configured backends first, then each set's, sorted by address. An address that
    /// appears twice counts once, at its largest weight; one whose id a configured
    /// backend or an earlier set already uses is skipped. Nothing changes on error.
    pub fn replace_set(&mut self, set: usize, members: &[Member]) -> Result<Replaced, SetError> {
        let mut fresh: BTreeMap<SocketAddr, u32> = BTreeMap::new();
        for m in members {
            let w = fresh.entry(m.addr).or_insert(m.weight);
            *w = (*w).max(m.weight);
        }
        let mut ids: HashSet<String> = HashSet::new();
        let mut next: Vec<Backend> = Vec::with_capacity(self.backends.len() + fresh.len());
        let mut skipped = Vec::new();
        for b in self.backends.iter().filter(|b| b.set.is_none()) {
            ids.insert(b.id.clone());
            next.push(b.clone());
        }
        for (j, s) in self.backend_sets.iter().enumerate() {
            let of_set: Vec<(SocketAddr, u32)> = if j == set {
                fresh.iter().map(|(a, w)| (*a, *w)).collect()
            } else {
                self.set_members(&s.name)
                    .map(|b| (b.addr, b.weight))
                    .collect()
            };
            for (addr, weight) in of_set {
                let id = addr.to_string();
                if !ids.insert(id.clone()) {
                    if j == set {
                        skipped.push(addr);
                    }
                    continue;
                }
                next.push(Backend {
                    addr_text: id.clone(),
                    id,
                    addr,
                    weight: weight.clamp(1, 1000),
                    set: Some(s.name.clone()),
                    backup: false,
                    limits: Default::default(),
                });
            }
        }
        let points: u64 = next
            .iter()
            .map(|b| b.weight as u64 * self.vnodes as u64)
            .sum();
        if points > MAX_POINTS {
            return Err(SetError::TooManyPoints { points });
        }
        let name = &self.backend_sets[set].name;
        let ids_of = |list: &[Backend]| -> Vec<String> {
            list.iter()
                .filter(|b| b.set.as_deref() == Some(name.as_str()))
                .map(|b| b.id.clone())
                .collect()
        };
        let (was, now) = (ids_of(&self.backends), ids_of(&next));
        // Sets, not lists: answers of thousands of addresses.
        let (was_set, now_set): (HashSet<&String>, HashSet<&String>) =
            (was.iter().collect(), now.iter().collect());
        let added = now
            .iter()
            .filter(|id| !was_set.contains(id))
            .cloned()
            .collect();
        let removed = was
            .iter()
            .filter(|id| !now_set.contains(id))
            .cloned()
            .collect();
        let changed = next != self.backends;
        self.backends = next;
        Ok(Replaced {
            changed,
            skipped,
            added,
            removed,
        })
    }
}

/// `[resolver]`.
pub(super) fn resolver(
    src: &Source<'_>,
    r: Option<&Spanned<FileResolver>>,
) -> Result<ResolverConfig, ConfigError> {
    let Some(r) = r.map(Spanned::get_ref) else {
        return Ok(ResolverConfig::default());
    };
    let mut servers = Vec::new();
    for (i, s) in r.servers.iter().flat_map(|v| v.get_ref()).enumerate() {
        let text = s.get_ref().trim();
        let addr = text
            .parse::<SocketAddr>()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .ok()
            .filter(|a| !a.ip().is_unspecified() && a.port() != 0);
        match addr {
            Some(a) => servers.push(a),
            None => {
                return Err(src.error(
                    s.span(),
                    format!("resolver.servers[{i}]"),
                    format!("{text:?} is not a DNS server address: expected `10.0.0.2`, `10.0.0.2:53` or `[2001:db8::2]:53`"),
                ))
            }
        }
    }
    let timeout = match &r.timeout {
        None => ResolverConfig::DEFAULT_TIMEOUT,
        Some(t) => duration_of(src, t, "resolver.timeout")?,
    };
    let nxdomain_after = match &r.nxdomain_after {
        None => ResolverConfig::DEFAULT_NXDOMAIN_AFTER,
        Some(n) => int_of(src, n, "resolver.nxdomain_after", 1, 1000)? as u32,
    };
    Ok(ResolverConfig {
        servers,
        timeout,
        nxdomain_after,
    })
}

/// A pool's backend sets.
pub(super) fn backend_sets(
    src: &Source<'_>,
    sets: &[Spanned<FileBackendSet>],
    key: &str,
) -> Result<Vec<BackendSet>, ConfigError> {
    let mut out: Vec<BackendSet> = Vec::with_capacity(sets.len());
    for (j, s) in sets.iter().enumerate() {
        let skey = format!("{key}.backend_set[{j}]");
        let set = backend_set(src, s, &skey)?;
        if out.iter().any(|o| o.name == set.name) {
            return Err(src.error(
                s.span(),
                skey,
                format!("{:?} is asked twice in this pool", set.name),
            ));
        }
        out.push(set);
    }
    Ok(out)
}

fn backend_set(
    src: &Source<'_>,
    s: &Spanned<FileBackendSet>,
    key: &str,
) -> Result<BackendSet, ConfigError> {
    let f = s.get_ref();
    let bad_name = |v: &Spanned<String>, k: &str, what: &str| {
        src.error(
            v.span(),
            format!("{key}.{k}"),
            format!("{:?} is not {what}", v.get_ref()),
        )
    };
    let (name, query) = match (&f.srv, &f.dns) {
        (Some(srv), None) => {
            let name = srv.get_ref().trim();
            if !super::resolve::valid_host(name) {
                return Err(bad_name(srv, "srv", "a DNS name (`_service._tcp.example`)"));
            }
            if let Some(w) = &f.weight {
                return Err(src.error(
                    w.span(),
                    format!("{key}.weight"),
                    "an `srv` set takes each backend's weight from its SRV record: remove `weight`",
                ));
            }
            (name.to_string(), SetQuery::Srv(name.to_string()))
        }
        (None, Some(dns)) => {
            let text = dns.get_ref().trim();
            let parsed = text.rsplit_once(':').and_then(|(h, p)| {
                let port = p.parse::<u16>().ok().filter(|&p| p != 0)?;
                super::resolve::valid_host(h).then(|| (h.to_string(), port))
            });
            let Some((host, port)) = parsed else {
                return Err(bad_name(dns, "dns", "`host.name:port`"));
            };
            (text.to_string(), SetQuery::Host { host, port })
        }
        _ => {
            return Err(src.error(
                s.span(),
                key,
                "a backend_set takes exactly one of `srv` (SRV records) or `dns` (A/AAAA records, `name:port`)",
            ))
        }
    };
    let weight = match &f.weight {
        None => 1,
        Some(w) => int_of(src, w, &format!("{key}.weight"), 1, 1000)? as u32,
    };
    let allow = match &f.allow {
        None => None,
        Some(list) if list.get_ref().is_empty() => return Err(src.error(
            list.span(),
            format!("{key}.allow"),
            "empty: list the networks backends may come from (`10.0.0.0/8`), or leave the key out",
        )),
        Some(list) => Some(super::admission::networks(
            src,
            list,
            &format!("{key}.allow"),
        )?),
    };
    let max_backends = match &f.max_backends {
        None => BackendSet::DEFAULT_MAX_BACKENDS,
        Some(m) => int_of(src, m, &format!("{key}.max_backends"), 1, 100_000)? as usize,
    };
    Ok(BackendSet {
        name,
        query,
        weight,
        allow,
        max_backends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The own pool of a listener with one backend and `toml_sets`.
    fn listener(toml_sets: &str) -> PoolConfig {
        let text = format!(
            "[[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:1\"\nvnodes = 4\n[[listener.backend]]\naddress = \"10.0.0.1:80\"\n{toml_sets}"
        );
        crate::config::parse(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .pools
            .remove(0)
    }

    fn m(addr: &str, weight: u32) -> Member {
        Member {
            addr: addr.parse().unwrap(),
            weight,
        }
    }

    const TWO_SETS: &str = "[[listener.backend_set]]\ndns = \"a.test:80\"\n[[listener.backend_set]]\nsrv = \"_b._tcp.test\"\n";

    #[test]
    fn answers_are_sets_whatever_their_order() {
        let mut l = listener(TWO_SETS);
        let r = l
            .replace_set(0, &[m("10.0.0.3:80", 1), m("10.0.0.2:80", 1)])
            .unwrap();
        assert!(r.changed);
        let ids: Vec<&str> = l.backends.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        assert_eq!(l.backends[1].set.as_deref(), Some("a.test:80"));
        assert_eq!(l.backends[0].set, None);
        let again = l
            .replace_set(
                0,
                &[
                    m("10.0.0.2:80", 1),
                    m("10.0.0.3:80", 1),
                    m("10.0.0.2:80", 1),
                ],
            )
            .unwrap();
        assert_eq!(again, Replaced::default(), "same set: no change");
    }

    #[test]
    fn sets_keep_their_order_and_only_their_members_change() {
        let mut l = listener(TWO_SETS);
        l.replace_set(1, &[m("10.0.0.9:81", 5), m("[::1]:81", 2)])
            .unwrap();
        l.replace_set(0, &[m("10.0.0.2:80", 1)]).unwrap();
        let ids: Vec<(&str, u32)> = l
            .backends
            .iter()
            .map(|b| (b.id.as_str(), b.weight))
            .collect();
        assert_eq!(
            ids,
            [
                ("10.0.0.1:80", 1),
                ("10.0.0.2:80", 1),
                ("10.0.0.9:81", 5),
                ("[::1]:81", 2)
            ]
        );
        l.replace_set(0, &[]).unwrap();
        assert_eq!(l.backends.len(), 3);
        assert_eq!(l.set_members("_b._tcp.test").count(), 2);
    }

    #[test]
    fn a_taken_id_is_skipped_and_the_largest_weight_wins() {
        let mut l = listener(TWO_SETS);
        let r = l
            .replace_set(
                0,
                &[
                    m("10.0.0.1:80", 1),
                    m("10.0.0.4:80", 2),
                    m("10.0.0.4:80", 7),
                ],
            )
            .unwrap();
        assert_eq!(r.skipped, vec!["10.0.0.1:80".parse().unwrap()]);
        assert_eq!(l.backends.len(), 2);
        assert_eq!(l.backends[1].weight, 7);
    }

    #[test]
    fn an_answer_too_large_for_the_ring_changes_nothing() {
        let mut l = listener(TWO_SETS);
        let many: Vec<Member> = (0..60_000u32)
            .map(|i| {
                m(
                    &format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 255, i & 255),
                    1000,
                )
            })
            .collect();
        let before = l.backends.clone();
        assert!(matches!(
            l.replace_set(0, &many),
            Err(SetError::TooManyPoints { .. })
        ));
        assert_eq!(l.backends, before);
    }
}
