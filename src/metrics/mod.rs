//! Prometheus metrics: the names ([`names`]) and the text each scrape renders.
//!
//! Data-plane counters live in per-worker shards ([`crate::dataplane::stats`]); the
//! control plane's own figures (health, transitions, shares, check durations in a
//! fixed-bucket [`Histogram`]) live in its state and are copied into each published
//! view. A scrape sums the shards and writes the text straight from a [`Sample`] of
//! them ([`render`], [`text`]): nothing is kept between scrapes, so memory does not
//! grow with time or with scrapers, and series of backends and listeners a reload
//! removed are gone at the next scrape.

pub mod carry;
pub mod histogram;
pub mod names;
pub mod text;

pub use histogram::Histogram;

use crate::dataplane::stats::{BackendStats, ListenerCounters, Sharded};
use names::*;
use text::Text;

/// What one scrape reports about one backend.
#[derive(Debug)]
pub struct BackendSample<'a> {
    /// Identity and data-plane counters.
    pub stats: &'a BackendStats,
    /// Healthy and not disabled.
    pub up: bool,
    /// Fraction of the key space it owns now.
    pub share: f64,
    /// Passed active checks.
    pub checks_ok: u64,
    /// Failed active checks.
    pub checks_failed: u64,
    /// Active checks that could not run here.
    pub checks_unknown: u64,
    /// Transitions to up.
    pub to_up: u64,
    /// Transitions to down.
    pub to_down: u64,
    /// Durations of its active checks, when it is actively checked (shown from the
    /// start, empty before the first check).
    pub check_durations: Option<&'a Histogram>,
}

/// What one scrape reports about one listener.
#[derive(Debug)]
pub struct ListenerSample<'a> {
    /// Listener name.
    pub name: &'a str,
    /// UDP listener (flows) rather than TCP (connections).
    pub udp: bool,
    /// Connections or flows open now.
    pub active: usize,
    /// Data-plane counters.
    pub stats: &'a Sharded<ListenerCounters>,
}

/// What one scrape reports about one pool.
#[derive(Debug)]
pub struct PoolSample<'a> {
    /// Pool name.
    pub name: &'a str,
    /// The listener whose own backends these are (its series carry `listener` too);
    /// `None` for a `[[pool]]`.
    pub owner: Option<&'a str>,
    /// Key space moved at the last ring change.
    pub remapped: f64,
    /// Its backends.
    pub backends: Vec<BackendSample<'a>>,
    /// Its backend sets.
    pub sets: Vec<SetSample<'a>>,
}

impl PoolSample<'_> {
    /// The labels that name it: `pool`, and `listener` for a listener's own backends.
    fn labels(&self) -> Vec<(&str, &str)> {
        match self.owner {
            Some(owner) => vec![(LISTENER, owner), (POOL, self.name)],
            None => vec![(POOL, self.name)],
        }
    }
}

/// Everything one scrape reports.
#[derive(Debug)]
pub struct Sample<'a> {
    /// Listeners.
    pub listeners: Vec<ListenerSample<'a>>,
    /// Pools.
    pub pools: Vec<PoolSample<'a>>,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads rejected.
    pub reloads_failed: u64,
    /// Worker threads that stopped on their own (panicked).
    pub worker_panics: u64,
    /// Upgrades succeeded and failed, and the last hand-off's duration.
    pub upgrades: (u64, u64, Option<std::time::Duration>),
    /// Access-log records lost, by reason.
    pub access_log_lost: [(&'static str, u64); 3],
    /// What the processes before this one counted (an upgrade carries it on).
    pub carried: Option<&'a carry::Offsets>,
    /// `[cluster]`: the peers, what second chance counted, whether this node leaves.
    pub cluster: Option<ClusterSample>,
}

/// What one scrape reports about `[cluster]`.
#[derive(Debug)]
pub struct ClusterSample {
    /// The peers' addresses, in config order.
    pub peers: Vec<String>,
    /// Which of them this node is.
    pub me: usize,
    /// What the program counted.
    pub counts: crate::dataplane::stats::ClusterCounts,
    /// This node is leaving.
    pub leaving: bool,
}

/// What one scrape reports about one `backend_set`.
#[derive(Debug)]
pub struct SetSample<'a> {
    /// Its name.
    pub set: &'a str,
    /// Answers not applied.
    pub errors: u64,
    /// Addresses left out of answers (not allowed, or past `max_backends`).
    pub refused: u64,
    /// Backends it gives now.
    pub backends: usize,
}

/// Help and type of a metric.
fn about(name: &str) -> (&'static str, &'static str) {
    ALL.iter()
        .find(|m| m.0 == name)
        .map_or(("gauge", ""), |m| (m.2, m.3))
}

/// The Prometheus text of `sample`.
pub fn render(sample: &Sample<'_>) -> String {
    let backends: usize = sample.pools.iter().map(|p| p.backends.len()).sum();
    let mut t = Text::with_capacity(4096 + backends * 3000).carrying(sample.carried);
    let family = |t: &mut Text, name: &str| {
        let (kind, help) = about(name);
        t.family(name, kind, help);
    };
    let version = env!("CARGO_PKG_VERSION");
    family(&mut t, BUILD_INFO);
    t.sample(BUILD_INFO, &[(VERSION, version)], 1u64);
    family(&mut t, CONFIG_RELOADS);
    t.sample(CONFIG_RELOADS, &[(RESULT, SUCCESS)], sample.reloads_ok);
    t.sample(CONFIG_RELOADS, &[(RESULT, FAILURE)], sample.reloads_failed);
    family(&mut t, UPGRADES);
    t.sample(UPGRADES, &[(RESULT, SUCCESS)], sample.upgrades.0);
    t.sample(UPGRADES, &[(RESULT, FAILURE)], sample.upgrades.1);
    family(&mut t, UPGRADE_HANDOFF);
    let took = sample.upgrades.2.unwrap_or_default();
    t.sample(UPGRADE_HANDOFF, &[], text::Value::Float(took.as_secs_f64()));
    family(&mut t, WORKER_PANICS);
    t.sample(WORKER_PANICS, &[], sample.worker_panics);
    family(&mut t, ACCESS_LOG_DROPPED);
    for (reason, n) in sample.access_log_lost {
        t.sample(ACCESS_LOG_DROPPED, &[(REASON, reason)], n);
    }
    if let Some(c) = &sample.cluster {
        cluster(&mut t, c);
    }
    let tcp = || sample.listeners.iter().filter(|l| !l.udp);
    let udp = || sample.listeners.iter().filter(|l| l.udp);
    let sum = |l: &ListenerSample<'_>, f: fn(&ListenerCounters) -> u64| l.stats.sum(f);
    // Listeners.
    family(&mut t, RING_REMAPPED);
    for p in &sample.pools {
        t.sample(RING_REMAPPED, &p.labels(), p.remapped);
    }
    family(&mut t, LISTENER_ACTIVE);
    for l in tcp() {
        t.sample(LISTENER_ACTIVE, &[(LISTENER, l.name)], l.active as u64);
    }
    family(&mut t, LISTENER_CONNECTIONS);
    for l in tcp() {
        let v = sum(l, |c| c.connections.get());
        t.sample(LISTENER_CONNECTIONS, &[(LISTENER, l.name)], v);
    }
    family(&mut t, LISTENER_REJECTED);
    for l in tcp() {
        for (reason, v) in ListenerCounters::rejected(l.stats) {
            t.sample(
                LISTENER_REJECTED,
                &[(LISTENER, l.name), (REASON, reason)],
                v,
            );
        }
    }
    family(&mut t, LISTENER_KERNEL_SESSIONS);
    for l in tcp() {
        for (result, v) in ListenerCounters::kernel(l.stats) {
            let labels = [(LISTENER, l.name), (RESULT, result)];
            t.sample(LISTENER_KERNEL_SESSIONS, &labels, v);
        }
    }
    family(&mut t, UDP_FLOWS_ACTIVE);
    for l in udp() {
        t.sample(UDP_FLOWS_ACTIVE, &[(LISTENER, l.name)], l.active as u64);
    }
    family(&mut t, UDP_FLOWS);
    for l in udp() {
        t.sample(
            UDP_FLOWS,
            &[(LISTENER, l.name)],
            sum(l, |c| c.udp_flows.get()),
        );
    }
    family(&mut t, UDP_DATAGRAMS);
    for l in udp() {
        let (i, o) = (sum(l, |c| c.udp_in.get()), sum(l, |c| c.udp_out.get()));
        t.sample(UDP_DATAGRAMS, &[(LISTENER, l.name), (DIRECTION, "in")], i);
        t.sample(UDP_DATAGRAMS, &[(LISTENER, l.name), (DIRECTION, "out")], o);
    }
    family(&mut t, UDP_KERNEL_DATAGRAMS);
    for l in udp() {
        let i = sum(l, |c| c.udp_kernel_in.get());
        let o = sum(l, |c| c.udp_kernel_out.get());
        t.sample(
            UDP_KERNEL_DATAGRAMS,
            &[(LISTENER, l.name), (DIRECTION, "in")],
            i,
        );
        t.sample(
            UDP_KERNEL_DATAGRAMS,
            &[(LISTENER, l.name), (DIRECTION, "out")],
            o,
        );
    }
    family(&mut t, UDP_DROPPED);
    for l in udp() {
        for (reason, v) in ListenerCounters::udp_dropped(l.stats) {
            t.sample(UDP_DROPPED, &[(LISTENER, l.name), (REASON, reason)], v);
        }
    }
    // Backends: one family at a time, every backend of every pool.
    let each = |t: &mut Text, name: &str, value: &dyn Fn(&BackendSample<'_>) -> text::Value| {
        for p in &sample.pools {
            for b in &p.backends {
                let mut labels = p.labels();
                labels.push((BACKEND, &*b.stats.id));
                t.sample(name, &labels, value(b));
            }
        }
    };
    let counter = |c: &BackendStats, f: fn(&crate::dataplane::stats::BackendCounters) -> u64| {
        text::Value::Int(c.counters.sum(f))
    };
    family(&mut t, BACKEND_CONNECTIONS);
    each(&mut t, BACKEND_CONNECTIONS, &|b| {
        counter(b.stats, |x| x.connections.get())
    });
    family(&mut t, BACKEND_ACTIVE);
    each(&mut t, BACKEND_ACTIVE, &|b| b.stats.active().into());
    family(&mut t, BACKEND_CONNECT_ERRORS);
    each(&mut t, BACKEND_CONNECT_ERRORS, &|b| {
        counter(b.stats, |x| x.connect_errors.get())
    });
    family(&mut t, BACKEND_RECEIVED_BYTES);
    each(&mut t, BACKEND_RECEIVED_BYTES, &|b| {
        counter(b.stats, |x| x.received_bytes.get())
    });
    family(&mut t, BACKEND_SENT_BYTES);
    each(&mut t, BACKEND_SENT_BYTES, &|b| {
        counter(b.stats, |x| x.sent_bytes.get())
    });
    family(&mut t, BACKEND_UP);
    each(&mut t, BACKEND_UP, &|b| u64::from(b.up).into());
    family(&mut t, BACKEND_RING_SHARE);
    each(&mut t, BACKEND_RING_SHARE, &|b| b.share.into());
    family(&mut t, BACKEND_OVERFLOWED);
    each(&mut t, BACKEND_OVERFLOWED, &|b| {
        counter(b.stats, |x| x.overflowed.get())
    });
    family(&mut t, BACKEND_QUEUE_LENGTH);
    each(&mut t, BACKEND_QUEUE_LENGTH, &|b| {
        (b.stats.queue.len() as u64).into()
    });
    family(&mut t, BACKEND_QUEUE_SECONDS);
    for p in &sample.pools {
        for b in &p.backends {
            let (counts, sum) = b.stats.counters.durations(|x| &x.queue_waits);
            let mut labels = p.labels();
            labels.push((BACKEND, &*b.stats.id));
            t.histogram(
                BACKEND_QUEUE_SECONDS,
                &labels,
                &Histogram::from_counts(counts, sum),
            );
        }
    }
    family(&mut t, HEALTH_CHECKS);
    for p in &sample.pools {
        for b in &p.backends {
            for (result, v) in [
                (SUCCESS, b.checks_ok),
                (FAILURE, b.checks_failed),
                (UNKNOWN, b.checks_unknown),
            ] {
                let mut labels = p.labels();
                labels.extend([(BACKEND, &*b.stats.id), (RESULT, result)]);
                t.sample(HEALTH_CHECKS, &labels, v);
            }
        }
    }
    family(&mut t, HEALTH_CHECK_DURATION);
    for p in &sample.pools {
        for b in &p.backends {
            if let Some(h) = b.check_durations {
                let mut labels = p.labels();
                labels.push((BACKEND, &*b.stats.id));
                t.histogram(HEALTH_CHECK_DURATION, &labels, h);
            }
        }
    }
    family(&mut t, BACKEND_TRANSITIONS);
    for p in &sample.pools {
        for b in &p.backends {
            for (to, v) in [("up", b.to_up), ("down", b.to_down)] {
                let mut labels = p.labels();
                labels.extend([(BACKEND, &*b.stats.id), (TO, to)]);
                t.sample(BACKEND_TRANSITIONS, &labels, v);
            }
        }
    }
    // Backend sets.
    for (name, value) in [
        (
            RESOLVER_ERRORS,
            (|s: &SetSample<'_>| s.errors) as fn(&SetSample<'_>) -> u64,
        ),
        (BACKEND_SET_BACKENDS, |s| s.backends as u64),
        (BACKEND_SET_REFUSED, |s| s.refused),
    ] {
        family(&mut t, name);
        for p in &sample.pools {
            for s in &p.sets {
                let mut labels = p.labels();
                labels.push((SET, s.set));
                t.sample(name, &labels, value(s));
            }
        }
    }
    t.finish()
}

#[cfg(test)]
mod tests;

/// The `[cluster]` families.
fn cluster(t: &mut Text, c: &ClusterSample) {
    let family = |t: &mut Text, name: &str| {
        let (kind, help) = about(name);
        t.family(name, kind, help);
    };
    let others = || {
        c.peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != c.me)
            .map(|(i, p)| {
                (
                    p.as_str(),
                    c.counts.forwarded.get(i).copied().unwrap_or_default(),
                )
            })
    };
    family(t, CLUSTER_FORWARDED);
    for (peer, (packets, _)) in others() {
        t.sample(CLUSTER_FORWARDED, &[(PEER, peer)], packets);
    }
    family(t, CLUSTER_FORWARDED_BYTES);
    for (peer, (_, bytes)) in others() {
        t.sample(CLUSTER_FORWARDED_BYTES, &[(PEER, peer)], bytes);
    }
    family(t, CLUSTER_DELIVERED);
    t.sample(CLUSTER_DELIVERED, &[], c.counts.delivered.0);
    family(t, CLUSTER_LOST);
    for (reason, (packets, _)) in [
        ("no_owner", c.counts.dropped),
        ("no_route", c.counts.no_route),
        ("too_big", c.counts.too_big),
    ] {
        t.sample(CLUSTER_LOST, &[(REASON, reason)], packets);
    }
    family(t, CLUSTER_LEAVING);
    t.sample(CLUSTER_LEAVING, &[], u64::from(c.leaving));
}
