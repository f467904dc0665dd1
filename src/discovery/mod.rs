//! Backends discovered in DNS: what a `backend_set` (of a listener or a pool) asks, the answer,
//! and what an answer does to the set.
//!
//! [`dns`] asks (hickory-resolver, blocking: callers run it at load, in `route` and
//! `check`, or on the control plane's blocking pool, never on its task); [`track`]
//! decides, without I/O or a clock, what each answer does: a set of addresses
//! replaces the set's members (`config::ListenerConfig::replace_set`), a failed or
//! empty answer keeps the last good set, NXDOMAIN empties it only after
//! `[resolver] nxdomain_after` in a row.

pub mod dns;
pub mod filter;
pub mod track;

use std::collections::HashMap;
use std::time::Duration;

use crate::config::{Config, Member};
use track::{Note, SetTrack, Verdict};

/// One set's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Addresses (never empty), and how long the shortest record in the answer may
    /// be used.
    Found {
        /// The addresses with their weights.
        members: Vec<Member>,
        /// The shortest TTL in the answer.
        ttl: Duration,
    },
    /// The name does not exist.
    NxDomain,
    /// No usable answer (a timeout, SERVFAIL, no records): why.
    Failed(String),
}

/// One set's answer, by pool and set name (a reload may reorder both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAnswer {
    /// The pool's name (a listener's own backends: the listener's).
    pub pool: String,
    /// The set's name.
    pub set: String,
    /// What DNS said.
    pub answer: Answer,
}

/// Looks up every set of `config` once (blocking). Empty, without a resolver, when
/// there are no sets.
pub fn lookup(config: &Config) -> Vec<SetAnswer> {
    let sets: Vec<(&str, &crate::config::BackendSet)> = config
        .pools
        .iter()
        .flat_map(|p| p.backend_sets.iter().map(move |s| (p.name.as_str(), s)))
        .collect();
    if sets.is_empty() {
        return Vec::new();
    }
    let queries: Vec<_> = sets
        .iter()
        .map(|(_, s)| (s.query.clone(), s.weight))
        .collect();
    sets.iter()
        .zip(dns::lookup(&config.resolver, &queries))
        .map(|((p, s), answer)| SetAnswer {
            pool: p.to_string(),
            set: s.name.clone(),
            answer,
        })
        .collect()
}

/// For one-shot commands (`check`, `route`): asks every set of `config` once and
/// applies the answers as a start would (a set that did not answer is empty); returns
/// the answers that were not sets of addresses.
pub fn fill(config: &mut Config) -> Vec<SetAnswer> {
    let answers = lookup(config);
    Sets::default().settle(config, &answers, None);
    answers
        .into_iter()
        .filter(|a| !matches!(a.answer, Answer::Found { .. }))
        .collect()
}

impl std::fmt::Display for SetAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.answer {
            Answer::Found { members, .. } => format!("{} address(es)", members.len()),
            Answer::NxDomain => "no such name (NXDOMAIN)".to_string(),
            Answer::Failed(why) => why.clone(),
        };
        write!(
            f,
            "pool {:?}: backend set {:?}: {what}",
            self.pool, self.set
        )
    }
}

/// The sets' history (every pool's), and how answers change a config.
#[derive(Debug, Default)]
pub struct Sets {
    tracks: HashMap<(String, String), SetTrack>,
}

impl Sets {
    /// Applies `answers` to `next`: found addresses replace a set's members; where the
    /// set's history says keep, the members it has in `running` (the config serving
    /// now; `None` at start, when there is nothing to keep) are kept. Logs each change
    /// of a set's state and each changed set. True when a pool's backends changed.
    pub fn settle(
        &mut self,
        next: &mut Config,
        answers: &[SetAnswer],
        running: Option<&Config>,
    ) -> bool {
        let mut changed = false;
        let after = next.resolver.nxdomain_after;
        let found = answers
            .iter()
            .any(|a| matches!(a.answer, Answer::Found { .. }));
        let local = if found {
            filter::local_addresses()
        } else {
            Vec::new()
        };
        let own = |p| filter::Own::of(next, p, &local);
        let own = [
            own(crate::config::Protocol::Tcp),
            own(crate::config::Protocol::Udp),
        ];
        for a in answers {
            let Some(l) = next.pools.iter_mut().find(|p| p.name == a.pool) else {
                continue;
            };
            let Some(i) = l.backend_sets.iter().position(|s| s.name == a.set) else {
                continue;
            };
            let track = self
                .tracks
                .entry((a.pool.clone(), a.set.clone()))
                .or_default();
            // What may not be a backend is left out first; an answer left with
            // nothing usable is a failed one (the last good set stays).
            let set = &l.backend_sets[i];
            let answer = match &a.answer {
                Answer::Found { members, ttl } => {
                    let rules = filter::Rules {
                        own: &own[usize::from(l.protocol == crate::config::Protocol::Udp)],
                        allow: set.allow.as_deref(),
                        max: set.max_backends,
                    };
                    let (kept, refused) = filter::apply(members, rules);
                    if track.left_out(&refused) {
                        tracing::warn!(pool = %a.pool, set = %a.set, "answer with {} address(es): {refused}", members.len());
                    }
                    if kept.is_empty() {
                        Answer::Failed(format!("no usable address: {refused}"))
                    } else {
                        Answer::Found {
                            members: kept,
                            ttl: *ttl,
                        }
                    }
                }
                other => other.clone(),
            };
            let (verdict, note) = track.answer(&answer, after);
            let members: Vec<Member> = match verdict {
                Verdict::Apply(m) => m,
                Verdict::Empty => Vec::new(),
                Verdict::Keep => running
                    .and_then(|r| r.pool(&a.pool))
                    .map(|r| {
                        r.set_members(&a.set)
                            .map(|b| Member {
                                addr: b.addr,
                                weight: b.weight,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            // After `members`: a reloaded config has none yet, the running one has them.
            log_note(&a.pool, &a.set, note, members.len());
            match l.replace_set(i, &members) {
                Ok(r) => {
                    if !r.skipped.is_empty() {
                        tracing::warn!(pool = %a.pool, set = %a.set, "left out {:?}: another backend of this pool has that id", r.skipped);
                    }
                    if r.changed {
                        tracing::info!(pool = %a.pool, set = %a.set, "backend set now {} backend(s): added {:?}, removed {:?}", l.set_members(&a.set).count(), r.added, r.removed);
                        changed = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(pool = %a.pool, set = %a.set, "answer not applied, keeping the set: {e}");
                }
            }
        }
        changed
    }

    /// Failed and NXDOMAIN answers of set `set` of pool `pool`.
    pub fn errors_of(&self, pool: &str, set: &str) -> u64 {
        self.tracks
            .get(&(pool.to_string(), set.to_string()))
            .map_or(0, SetTrack::errors)
    }

    /// Addresses left out of the answers of set `set` of pool `pool`.
    pub fn refused_of(&self, pool: &str, set: &str) -> u64 {
        self.tracks
            .get(&(pool.to_string(), set.to_string()))
            .map_or(0, SetTrack::refused)
    }

    /// Forgets sets `config` no longer has.
    pub fn retain(&mut self, config: &Config) {
        self.tracks.retain(|(p, s), _| {
            config
                .pool(p)
                .is_some_and(|p| p.backend_sets.iter().any(|x| &x.name == s))
        });
    }
}

fn log_note(pool: &str, set: &str, note: Option<Note>, members: usize) {
    match note {
        None => {}
        Some(Note::Recovered) => tracing::info!(pool, set, "backend set answers again"),
        Some(Note::Failing(why)) => {
            tracing::warn!(pool, set, "backend set lookup failed, keeping its {members} backend(s): {why}")
        }
        Some(Note::Missing) => tracing::warn!(pool, set, "backend set name does not exist (NXDOMAIN); keeping its {members} backend(s) until it stays so"),
        Some(Note::Emptied(n)) => tracing::warn!(pool, set, "backend set name did not exist in {n} answers in a row (NXDOMAIN): its backends are removed"),
    }
}

/// When the next round is due after `answers`: the shortest TTL among the sets of
/// addresses, but never later than `interval` nor sooner than a second.
pub fn next_round(answers: &[SetAnswer], interval: Duration) -> Duration {
    answers
        .iter()
        .filter_map(|a| match &a.answer {
            Answer::Found { ttl, .. } => Some(*ttl),
            _ => None,
        })
        .min()
        .map_or(interval, |ttl| {
            ttl.clamp(MIN_ROUND, interval.max(MIN_ROUND))
        })
}

/// The shortest wait between two rounds (a TTL of 0 does not mean "ask nonstop").
pub const MIN_ROUND: Duration = Duration::from_secs(1);
