//! # ringway
//!
//! A Layer-4 TCP/UDP load balancer. Clients connect to a listener; ringway hashes the
//! flow onto a consistent-hash ring of virtual nodes, connects to the backend that owns
//! the key, and moves bytes between the two sockets with `splice(2)`.
//!
//! The crate is built in layers, one folder each, lowest first:
//!
//! * [`sys`]: the only `unsafe` code. Thin wrappers over `splice(2)`, `pipe2(2)`,
//!   `recvmmsg(2)`/`sendmmsg(2)`, `setrlimit(2)`, `kill(2)` and the socket options
//!   socket2 lacks (a reuseport BPF program among them) that return `io::Result` and
//!   never log.
//! * [`balance`]: the hash contract ([`balance::hash`]), the ring ([`balance::ring`])
//!   and the immutable [`balance::Snapshot`] workers read. Pure: no I/O, no clock.
//! * [`proxy_protocol`]: PROXY protocol headers: what ringway sends ahead of a client's
//!   bytes (`send_proxy`) and what one read from a balancer in front means
//!   (`accept_proxy`). Pure.
//! * [`sni`]: the server name a client asks for, read from its TLS ClientHello (TCP)
//!   or QUIC Initial (UDP) without terminating anything; incremental, pure. The QUIC
//!   Initial's keys and AEAD come from RustCrypto.
//! * [`config`]: TOML in, validated [`config::Config`] out, in two stages; errors name
//!   file, line, column and key.
//! * [`discovery`]: backends from DNS (`backend_set`: SRV, A/AAAA) through
//!   hickory-resolver, and the pure rule of what each answer does to a set (a failure
//!   keeps the last good set; NXDOMAIN empties it only after several in a row).
//! * [`health`]: what a health check is, the pure rise/fall state machine, and the
//!   probes (TCP, send/expect, HTTP, UDP, DNS) that the control plane runs.
//! * [`dataplane`]: worker threads, one per core, each with its own epoll loop (mio)
//!   and its own `SO_REUSEPORT` listening sockets. They never block, never lock on the
//!   forwarding path and never see the config: they get [`dataplane::WorkerParams`],
//!   load a [`dataplane::Routing`] (settings + [`balance::Snapshot`] + backend
//!   counters) published through `arc-swap` once per new connection or flow, take
//!   listeners added or removed by a reload as commands, and count into their own
//!   shard of [`dataplane::stats`]. A worker is a small dispatcher over two planes that
//!   own their state: TCP (listeners, sessions, a deadline heap, the pipe pool) and UDP
//!   (the flow table, batches). Tokens carry a slot generation, so no event reaches a
//!   connection that reused a closed one's slot; each worker draws its file
//!   descriptors from a budget the control plane sizes. Who gets in is decided first
//!   ([`dataplane::admission`]: allow/deny networks by bisection, per-source limits in
//!   a bounded, sharded table, the one place workers share a lock, and only on
//!   listeners that set such a limit). Workers are pinned to CPUs and TCP accepts
//!   steered to the receiving CPU where ringway owns CPUs `0..workers`. A listener
//!   with `forward = "kernel"` hands established sessions to a BPF sockmap program
//!   (loaded once at start through aya's safe API; `dataplane::kernel`), and its
//!   workers then only hear of EOFs and resets. UDP moves in batches both ways:
//!   `recvmmsg`/`sendmmsg` on the listener, and per flow one `sendmmsg` for its share
//!   of a batch and one `recvmmsg` for its waiting replies.
//! * [`accesslog`]: one record per connection and flow, handed by workers to a writer
//!   thread through bounded queues they never wait on.
//! * [`metrics`]: every metric name ([`metrics::names`]) and the Prometheus text a
//!   scrape writes straight from the workers' shards and the control plane's view.
//! * [`control`]: the control plane, on one tokio runtime on the main thread. One task
//!   owns its state and takes typed messages (check results, passive failures, admin
//!   calls, reloads, resolver answers); it binds sockets, drops privileges, keeps a
//!   reserve of file descriptors, starts workers, runs health checks, serves `/metrics`
//!   and the admin API, reloads on SIGHUP, drains on SIGTERM, and publishes every change
//!   as a new routing. Slow work (config loads, DNS) runs on the blocking pool.
//! * [`cli`], [`route`], [`ctl`]: the command line (`run`, `check`, `route`, `ctl`),
//!   parsed with clap; `ctl` is an HTTP client of the admin API.
//!
//! The binary (`src/main.rs`) only parses the command line and prints errors.

#![deny(unsafe_code)]

pub mod accesslog;
pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod ctl;
pub mod dataplane;
pub mod discovery;
pub mod health;
pub mod metrics;
pub mod proxy_protocol;
pub mod route;
pub mod shard;
pub mod sni;
pub mod sys;

/// An error and its causes, `: `-separated, each cause said once: most errors here
/// quote their cause in their own message already (so a log line read alone is
/// whole), and a cause they quote is not repeated.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut said = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        cause = c.source();
    }
    said
}
