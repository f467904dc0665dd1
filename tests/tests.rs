//! The integration tests: one binary, real processes and sockets on loopback.

// Helpers: the ringway process, loopback backends, bounded waits.
mod util;

// Command line and configuration: `check`, errors with file/line/column/key, conf/.
mod cli;
// Byte integrity, half-close, resets, IPv6.
mod tcp;
// forward = "kernel": sockmap forwarding's bytes, EOFs, resets, idle, drain, fallback.
mod kernel;
// Where connections go: spread, `route` agreement, retries, hash modes, test vectors.
mod balance;
// Load-aware balancing: bounded loads, least connections, round robin.
mod load_balance;
// Per-backend max_connections: the queue, its order, its timeout and overflow.
mod queue;
// Upgrading the binary in place: listening sockets handed over, failures change nothing.
mod upgrade;
// The same under systemd (the shipped unit, systemd booted in a PID namespace).
mod upgrade_systemd;
// [cluster]: finding itself among the peers, the privilege it needs, leave and stay.
mod cluster;
// Connection lifecycle: idle timeout, max_connections, graceful shutdown.
mod lifecycle;
// UDP: flows, batching, affinity, expiry.
mod udp;
// UDP with forward = "kernel": established flows forwarded by a tc program.
mod udp_kernel;
// Backends discovered in DNS (backend_set), against unbound.
mod discovery;
// Health checks: kill, hang, lie, flap, recover; passive ejection; on_down, all_down.
mod health;
// Prometheus metrics over HTTP.
mod metrics;
// The admin API and `ringway ctl`: status, drain, enable, disable, bad calls.
mod admin;
// SIGHUP: reload under load, invalid reloads, listeners added and removed.
mod reload;
// Packaging: dropping privileges.
mod privileges;
// PROXY protocol: send_proxy to backends and their checks, accept_proxy from a balancer.
mod proxy_protocol;
// Layering rules read from the source tree: no import loops, no shared pub fields.
mod structure;
// Safe by default: faults injected from outside (prlimit, dead backends, idle sockets).
mod safety;
// Thousands of backends: the control plane answers while they change state.
mod scale;
// Safe by default, round 3: the admin API against other sites, loops, dual stack,
// signals, drains, resets after a half-close, spoofed UDP floods, a worker's panic.
mod hardening;
// Routing by server name: named pools, TLS SNI through real clients, shared checks.
mod sni;
// Holding the edge: access lists, per-source limits, on-data backend connects.
mod admission;
// The access log: every record, every end, through reloads, drains and rotation.
mod access_log;
// The status page in a real (headless) Chromium: render, drain, down and up, token.
mod status_page;
