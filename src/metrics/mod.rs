//! Prometheus metrics: the names ([`names`]) and the exporter.
//!
//! Data-plane counters live in per-worker shards ([`crate::dataplane::stats`]); they are
//! summed and copied into a `metrics-exporter-prometheus` recorder when `/metrics` is
//! scraped, so workers never touch the recorder. The health checker records check
//! durations into the histogram as checks finish. The recorder is owned here, not
//! installed as the process-global one: everything goes through
//! [`metrics::with_local_recorder`].
//!
//! Series of listeners and backends removed by a reload stop being updated and are
//! dropped from the output after [`STALE_AFTER`].

pub mod names;

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use metrics_util::MetricKindMask;

use crate::dataplane::stats::{BackendStats, ListenerCounters, Sharded};
use names::*;

/// How long series nobody updates stay in the output (those of removed backends).
pub const STALE_AFTER: Duration = Duration::from_secs(300);

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
    /// Actively health-checked (its check-duration histogram is shown from the start).
    pub checked: bool,
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
    /// Key space moved at the last ring change.
    pub remapped: f64,
    /// Its backends.
    pub backends: Vec<BackendSample<'a>>,
}

/// Everything one scrape reports.
#[derive(Debug)]
pub struct Sample<'a> {
    /// Listeners.
    pub listeners: Vec<ListenerSample<'a>>,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads rejected.
    pub reloads_failed: u64,
    /// Access-log records dropped because a worker's queue was full.
    pub access_log_dropped: u64,
    /// Backend sets.
    pub sets: Vec<SetSample<'a>>,
}

/// What one scrape reports about one `backend_set`.
#[derive(Debug)]
pub struct SetSample<'a> {
    /// Its listener.
    pub listener: &'a str,
    /// Its name.
    pub set: &'a str,
    /// Answers not applied.
    pub errors: u64,
    /// Backends it gives now.
    pub backends: usize,
}

/// The Prometheus recorder and its renderer.
#[derive(Debug)]
pub struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Exporter {
    /// A recorder whose un-updated series disappear after `stale_after`.
    pub fn new(stale_after: Duration) -> Exporter {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(HEALTH_CHECK_DURATION.to_string()),
                CHECK_DURATION_BUCKETS,
            )
            .expect("the bucket list is not empty")
            .idle_timeout(MetricKindMask::ALL, Some(stale_after))
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for &(name, _, kind, help) in ALL {
                match kind {
                    "counter" => describe_counter!(name, help),
                    "gauge" => describe_gauge!(name, help),
                    _ => describe_histogram!(name, help),
                }
            }
        });
        Exporter { recorder, handle }
    }

    /// Records how long one active check of `backend` took.
    pub fn record_check(&self, listener: &str, backend: &str, took: Duration) {
        metrics::with_local_recorder(&self.recorder, || {
            histogram!(HEALTH_CHECK_DURATION, LISTENER => listener.to_string(), BACKEND => backend.to_string())
                .record(took.as_secs_f64());
        });
    }

    /// Copies `sample` into the recorder and renders the Prometheus text format.
    pub fn render(&self, sample: &Sample<'_>) -> String {
        metrics::with_local_recorder(&self.recorder, || {
            gauge!(BUILD_INFO, VERSION => env!("CARGO_PKG_VERSION")).set(1.0);
            counter!(CONFIG_RELOADS, RESULT => SUCCESS).absolute(sample.reloads_ok);
            counter!(CONFIG_RELOADS, RESULT => FAILURE).absolute(sample.reloads_failed);
            counter!(ACCESS_LOG_DROPPED).absolute(sample.access_log_dropped);
            for l in &sample.listeners {
                listener(l);
            }
            for s in &sample.sets {
                let labels = [(LISTENER, s.listener.to_string()), (SET, s.set.to_string())];
                counter!(RESOLVER_ERRORS, &labels).absolute(s.errors);
                gauge!(BACKEND_SET_BACKENDS, &labels).set(s.backends as f64);
            }
        });
        self.handle.render()
    }
}

fn listener(l: &ListenerSample<'_>) {
    let name = l.name.to_string();
    let s = l.stats;
    let sum = |f: fn(&ListenerCounters) -> u64| s.sum(f);
    let lbl = |v: &str| [(LISTENER, name.clone()), (REASON, v.to_string())];
    gauge!(RING_REMAPPED, LISTENER => name.clone()).set(l.remapped);
    if l.udp {
        gauge!(UDP_FLOWS_ACTIVE, LISTENER => name.clone()).set(l.active as f64);
        counter!(UDP_FLOWS, LISTENER => name.clone()).absolute(sum(|c| c.udp_flows.get()));
        counter!(UDP_DATAGRAMS, LISTENER => name.clone(), DIRECTION => "in")
            .absolute(sum(|c| c.udp_in.get()));
        counter!(UDP_DATAGRAMS, LISTENER => name.clone(), DIRECTION => "out")
            .absolute(sum(|c| c.udp_out.get()));
        for (reason, v) in ListenerCounters::udp_dropped(s) {
            counter!(UDP_DROPPED, &lbl(reason)).absolute(v);
        }
    } else {
        gauge!(LISTENER_ACTIVE, LISTENER => name.clone()).set(l.active as f64);
        counter!(LISTENER_CONNECTIONS, LISTENER => name.clone())
            .absolute(sum(|c| c.connections.get()));
        for (reason, v) in ListenerCounters::rejected(s) {
            counter!(LISTENER_REJECTED, &lbl(reason)).absolute(v);
        }
        for (result, v) in ListenerCounters::kernel(s) {
            counter!(LISTENER_KERNEL_SESSIONS, LISTENER => name.clone(), RESULT => result)
                .absolute(v);
        }
    }
    for b in &l.backends {
        backend(&name, b);
    }
}

fn backend(listener: &str, b: &BackendSample<'_>) {
    let c = &b.stats.counters;
    let labels = [
        (LISTENER, listener.to_string()),
        (BACKEND, b.stats.id.to_string()),
    ];
    let with = |k: &'static str, v: &'static str| {
        [
            (LISTENER, listener.to_string()),
            (BACKEND, b.stats.id.to_string()),
            (k, v.to_string()),
        ]
    };
    counter!(BACKEND_CONNECTIONS, &labels).absolute(c.sum(|x| x.connections.get()));
    gauge!(BACKEND_ACTIVE, &labels).set(b.stats.active() as f64);
    counter!(BACKEND_CONNECT_ERRORS, &labels).absolute(c.sum(|x| x.connect_errors.get()));
    counter!(BACKEND_RECEIVED_BYTES, &labels).absolute(c.sum(|x| x.received_bytes.get()));
    counter!(BACKEND_SENT_BYTES, &labels).absolute(c.sum(|x| x.sent_bytes.get()));
    gauge!(BACKEND_UP, &labels).set(if b.up { 1.0 } else { 0.0 });
    gauge!(BACKEND_RING_SHARE, &labels).set(b.share);
    counter!(HEALTH_CHECKS, &with(RESULT, SUCCESS)).absolute(b.checks_ok);
    counter!(HEALTH_CHECKS, &with(RESULT, FAILURE)).absolute(b.checks_failed);
    counter!(HEALTH_CHECKS, &with(RESULT, UNKNOWN)).absolute(b.checks_unknown);
    if b.checked {
        // Registering shows the histogram (empty) before the first check finishes.
        let _ = histogram!(HEALTH_CHECK_DURATION, &labels);
    }
    counter!(BACKEND_TRANSITIONS, &with(TO, "up")).absolute(b.to_up);
    counter!(BACKEND_TRANSITIONS, &with(TO, "down")).absolute(b.to_down);
}

#[cfg(test)]
mod tests;
