//! Every metric ringway exports: names, label keys, label values, help texts. The one
//! place these strings are written (the README's table is checked against [`ALL`]).

/// Label: listener name.
pub const LISTENER: &str = "listener";
/// Label: backend id.
pub const BACKEND: &str = "backend";
/// Label: pool name (a listener's own backends: the listener's name; their series
/// carry `listener` too, a `[[pool]]`'s do not).
pub const POOL: &str = "pool";
/// Label: why something was rejected or dropped.
pub const REASON: &str = "reason";
/// Label: `success` or `failure`.
pub const RESULT: &str = "result";
/// Label: the state a backend moved to, `up` or `down`.
pub const TO: &str = "to";
/// Label: `in` (from clients) or `out` (to clients).
pub const DIRECTION: &str = "direction";
/// Label: a `backend_set`'s name (what it asks DNS).
pub const SET: &str = "set";
/// Label: ringway's version.
pub const VERSION: &str = "version";
/// Label: a `[cluster]` peer's address.
pub const PEER: &str = "peer";

/// `result` value of a passed check or applied reload.
pub const SUCCESS: &str = "success";
/// `result` value of a failed check or rejected reload.
pub const FAILURE: &str = "failure";
/// `result` value of a check that could not run (no descriptor or port here): no
/// evidence about the backend either way.
pub const UNKNOWN: &str = "unknown";

/// Connections accepted and established to a backend (TCP listeners).
pub const LISTENER_CONNECTIONS: &str = "ringway_listener_connections_total";
/// Connections (TCP) or flows (UDP) open now.
pub const LISTENER_ACTIVE: &str = "ringway_listener_active_connections";
/// Connections refused or reset by ringway, by `reason`: `max_connections`,
/// `no_backend` (none up), `backends_failed` (every connect attempt failed),
/// `proxy_header` (`accept_proxy` and no valid PROXY header in time), `fd_limit` (the
/// worker's share of file descriptors is spent), `local_error` (no local port or
/// memory for the backend socket), `denied` (`allow`/`deny`), `source_limit`
/// (`max_connections_per_source`), `source_rate` (`connection_rate_per_source`),
/// `first_data_timeout` (`backend_connect = "on-data"` and the client sent nothing),
/// `loop` (the only backends left are ringway's own addresses); with `route_by =
/// "sni"` and no default pool: `no_route` (no route takes the server name, or none
/// was named), `not_tls` (the first bytes are not a ClientHello ringway reads), and
/// `sni_timeout` (no whole ClientHello within `sni_timeout`).
pub const LISTENER_REJECTED: &str = "ringway_listener_rejected_connections_total";
/// `forward = "kernel"` listeners: sessions by `result`: `joined` (the kernel forwards
/// them), `declined` (the kernel would not take them, e.g. the client had already sent
/// its EOF: ringway forwards them), `failed` (handing over failed half-way: reset).
pub const LISTENER_KERNEL_SESSIONS: &str = "ringway_listener_kernel_sessions_total";
/// Connections (TCP) or flows (UDP) established to a backend.
pub const BACKEND_CONNECTIONS: &str = "ringway_backend_connections_total";
/// Connections (TCP) or flows (UDP) open to a backend now.
pub const BACKEND_ACTIVE: &str = "ringway_backend_active_connections";
/// Failed connect attempts (TCP) or ICMP errors (UDP) of a backend.
pub const BACKEND_CONNECT_ERRORS: &str = "ringway_backend_connect_errors_total";
/// Bytes received from a backend.
pub const BACKEND_RECEIVED_BYTES: &str = "ringway_backend_received_bytes_total";
/// Bytes sent to a backend.
pub const BACKEND_SENT_BYTES: &str = "ringway_backend_sent_bytes_total";
/// 1 when a backend is up (healthy and not disabled), else 0.
pub const BACKEND_UP: &str = "ringway_backend_up";
/// Fraction of the key space a backend owns now (0 when down or draining).
pub const BACKEND_RING_SHARE: &str = "ringway_backend_ring_share";
/// Connections (TCP) or flows (UDP) a backend took because `balance_factor` passed
/// over the ring's pick, which held its cap.
pub const BACKEND_OVERFLOWED: &str = "ringway_backend_overflowed_connections_total";
/// Connections waiting in a backend's queue now (`max_connections`).
pub const BACKEND_QUEUE_LENGTH: &str = "ringway_backend_queue_length";
/// How long connections waited in a backend's queue, served or timed out.
pub const BACKEND_QUEUE_SECONDS: &str = "ringway_backend_queue_seconds";
/// Active health checks, by `result`: `success`, `failure`, `unknown` (could not run
/// here).
pub const HEALTH_CHECKS: &str = "ringway_health_checks_total";
/// Duration of active health checks.
pub const HEALTH_CHECK_DURATION: &str = "ringway_health_check_duration_seconds";
/// Changes of a backend's up/down state, by `to`.
pub const BACKEND_TRANSITIONS: &str = "ringway_backend_transitions_total";
/// UDP flows open now.
pub const UDP_FLOWS_ACTIVE: &str = "ringway_udp_flows_active";
/// UDP flows created.
pub const UDP_FLOWS: &str = "ringway_udp_flows_total";
/// UDP datagrams, by `direction`: `in` from clients, `out` to clients.
pub const UDP_DATAGRAMS: &str = "ringway_udp_datagrams_total";
/// Of those, the datagrams the kernel forwarded (`forward = "kernel"`), by `direction`.
pub const UDP_KERNEL_DATAGRAMS: &str = "ringway_udp_kernel_datagrams_total";
/// UDP datagrams dropped, by `reason`: `max_flows`, `no_backend`, `send_failed`,
/// `listener_removed`, `fd_limit`, `denied` (`allow`/`deny`), `source_limit`
/// (`udp_max_flows_per_source`), `source_rate` (`udp_flow_rate_per_source`), `loop`
/// (the only backends left are ringway's own addresses); with `route_by = "sni"`:
/// `no_route`, `not_quic` (not a QUIC v1/v2 Initial; both without a default pool) and
/// `sni_timeout` (the flow's hello was not whole in time).
pub const UDP_DROPPED: &str = "ringway_udp_dropped_datagrams_total";
/// Fraction of the key space that changed backend at the pool's last ring change.
pub const RING_REMAPPED: &str = "ringway_ring_remapped_ratio";
/// Config reloads, by `result`.
pub const CONFIG_RELOADS: &str = "ringway_config_reloads_total";
/// Binary upgrades (`ringway ctl upgrade`, SIGUSR2), by `result`: `success` (counted on
/// from process to process), `failure` (the old process served on).
pub const UPGRADES: &str = "ringway_upgrades_total";
/// How long the last upgrade's hand-off took: from the new process's start to its
/// answer (0 until one happened).
pub const UPGRADE_HANDOFF: &str = "ringway_upgrade_handoff_seconds";
/// Worker threads that stopped on their own (a panic): ringway then drains the others
/// and exits with an error, for its supervisor to restart it.
pub const WORKER_PANICS: &str = "ringway_worker_panics_total";
/// Always 1; the `version` label carries the version.
pub const BUILD_INFO: &str = "ringway_build_info";
/// Access-log records lost, by `reason`: `queue_full` (a worker's queue to the writer
/// was full), `write_failed` (writing failed: no space, file too large, I/O error),
/// `not_open` (the file could not be opened).
pub const ACCESS_LOG_DROPPED: &str = "ringway_access_log_dropped_total";

/// `[cluster]`: TCP segments second chance sent on to a peer (a node that did not hold
/// them passed them down the chain), by `peer`.
pub const CLUSTER_FORWARDED: &str = "ringway_cluster_forwarded_packets_total";
/// `[cluster]`: the bytes of those segments (with their 20-byte IPIP header), by `peer`.
pub const CLUSTER_FORWARDED_BYTES: &str = "ringway_cluster_forwarded_bytes_total";
/// `[cluster]`: segments a peer passed on that a socket here held: delivered here.
pub const CLUSTER_DELIVERED: &str = "ringway_cluster_delivered_packets_total";
/// `[cluster]`: segments second chance could not save, by `reason`: `no_owner` (every
/// other node missed it too: the last one resets it), `no_route` (no route or
/// neighbour to the next peer), `too_big` (over the path MTU once encapsulated).
pub const CLUSTER_LOST: &str = "ringway_cluster_lost_packets_total";
/// `[cluster]`: 1 while this node is leaving the fleet (`ringway ctl leave`), else 0.
pub const CLUSTER_LEAVING: &str = "ringway_cluster_leaving";

/// Answers to a `backend_set`'s lookup that were not applied: failures (timeout,
/// SERVFAIL, no addresses: the last good set stays) and NXDOMAINs.
pub const RESOLVER_ERRORS: &str = "ringway_resolver_errors_total";
/// Backends a `backend_set` gives now.
pub const BACKEND_SET_BACKENDS: &str = "ringway_backend_set_backends";
/// Addresses a `backend_set`'s answers gave that were left out: not allowed (ringway's
/// own addresses, port 0, unspecified, multicast or broadcast addresses, outside
/// `allow`) or past `max_backends`.
pub const BACKEND_SET_REFUSED: &str = "ringway_backend_set_refused_total";
/// Buckets (seconds) of every duration histogram: [`HEALTH_CHECK_DURATION`] and
/// [`BACKEND_QUEUE_SECONDS`].
pub const DURATION_BUCKETS: &[f64] = crate::shard::DURATION_BUCKETS;

/// Every metric: name, labels, Prometheus type, help.
#[rustfmt::skip]
pub const ALL: &[(&str, &[&str], &str, &str)] = &[
    (LISTENER_CONNECTIONS, &[LISTENER], "counter", "TCP connections accepted and established to a backend"),
    (LISTENER_ACTIVE, &[LISTENER], "gauge", "Connections (TCP) or flows (UDP) open now"),
    (LISTENER_REJECTED, &[LISTENER, REASON], "counter", "Connections refused or reset by ringway: max_connections, no_backend, backends_failed, proxy_header, fd_limit, local_error, denied, source_limit, source_rate, first_data_timeout, loop, no_route, not_tls, sni_timeout, queue_timeout, queue_full"),
    (LISTENER_KERNEL_SESSIONS, &[LISTENER, RESULT], "counter", "forward = kernel: sessions the kernel took (joined), would not take (declined: ringway forwards them) or failed to take (failed: reset)"),
    (BACKEND_CONNECTIONS, &[LISTENER, POOL, BACKEND], "counter", "Connections (TCP) or flows (UDP) established to the backend"),
    (BACKEND_ACTIVE, &[LISTENER, POOL, BACKEND], "gauge", "Connections (TCP) or flows (UDP) open to the backend now"),
    (BACKEND_CONNECT_ERRORS, &[LISTENER, POOL, BACKEND], "counter", "Failed connect attempts (TCP) or ICMP errors (UDP)"),
    (BACKEND_RECEIVED_BYTES, &[LISTENER, POOL, BACKEND], "counter", "Bytes received from the backend"),
    (BACKEND_SENT_BYTES, &[LISTENER, POOL, BACKEND], "counter", "Bytes sent to the backend"),
    (BACKEND_UP, &[LISTENER, POOL, BACKEND], "gauge", "1 when the backend is up (healthy, not disabled), else 0"),
    (BACKEND_RING_SHARE, &[LISTENER, POOL, BACKEND], "gauge", "Fraction of the key space the backend owns now"),
    (BACKEND_OVERFLOWED, &[LISTENER, POOL, BACKEND], "counter", "Connections (TCP) or flows (UDP) the backend took because balance_factor passed over the ring's pick, which held its cap"),
    (BACKEND_QUEUE_LENGTH, &[LISTENER, POOL, BACKEND], "gauge", "TCP connections waiting in the backend's queue now (max_connections)"),
    (BACKEND_QUEUE_SECONDS, &[LISTENER, POOL, BACKEND], "histogram", "Time TCP connections waited in the backend's queue (max_connections) in seconds, served or timed out"),
    (HEALTH_CHECKS, &[LISTENER, POOL, BACKEND, RESULT], "counter", "Active health checks by result: success, failure, unknown (could not run here)"),
    (HEALTH_CHECK_DURATION, &[LISTENER, POOL, BACKEND], "histogram", "Duration of active health checks in seconds"),
    (BACKEND_TRANSITIONS, &[LISTENER, POOL, BACKEND, TO], "counter", "Backend state changes by new state: up, down"),
    (UDP_FLOWS_ACTIVE, &[LISTENER], "gauge", "UDP flows open now"),
    (UDP_FLOWS, &[LISTENER], "counter", "UDP flows created"),
    (UDP_DATAGRAMS, &[LISTENER, DIRECTION], "counter", "UDP datagrams: in from clients, out to clients"),
    (UDP_KERNEL_DATAGRAMS, &[LISTENER, DIRECTION], "counter", "forward = kernel: of the UDP datagrams, those the kernel forwarded"),
    (UDP_DROPPED, &[LISTENER, REASON], "counter", "UDP datagrams dropped: max_flows, no_backend, backend_full, send_failed, listener_removed, fd_limit, denied, source_limit, source_rate, loop, no_route, not_quic, sni_timeout"),
    (RING_REMAPPED, &[LISTENER, POOL], "gauge", "Fraction of the key space that changed backend at the last ring change"),
    (CONFIG_RELOADS, &[RESULT], "counter", "Config reloads by result: success, failure"),
    (UPGRADES, &[RESULT], "counter", "Binary upgrades by result: success (counted on from process to process), failure (the old process served on)"),
    (UPGRADE_HANDOFF, &[], "gauge", "Seconds the last upgrade's hand-off took, from the new process's start to its answer (0: none yet)"),
    (BUILD_INFO, &[VERSION], "gauge", "Always 1; labelled with the version"),
    (WORKER_PANICS, &[], "counter", "Worker threads that stopped on their own (panicked); ringway drains the others and exits with an error"),
    (ACCESS_LOG_DROPPED, &[REASON], "counter", "Access-log records lost: queue_full (a worker's queue to the writer was full), write_failed (no space, file too large, I/O error), not_open (the file could not be opened)"),
    (RESOLVER_ERRORS, &[LISTENER, POOL, SET], "counter", "backend_set lookups not applied: failures (the last good set stays) and NXDOMAIN answers"),
    (BACKEND_SET_BACKENDS, &[LISTENER, POOL, SET], "gauge", "Backends a backend_set gives now"),
    (CLUSTER_FORWARDED, &[PEER], "counter", "[cluster] TCP segments no local socket held, sent on to the peer (second chance)"),
    (CLUSTER_FORWARDED_BYTES, &[PEER], "counter", "[cluster] bytes of the segments sent on to the peer, IPIP header included"),
    (CLUSTER_DELIVERED, &[], "counter", "[cluster] segments a peer passed on that a socket here held: delivered here"),
    (CLUSTER_LOST, &[REASON], "counter", "[cluster] segments second chance could not save: no_owner (no node held it), no_route (none to the next peer), too_big (over the path MTU once encapsulated)"),
    (CLUSTER_LEAVING, &[], "gauge", "[cluster] 1 while this node is leaving the fleet (ringway ctl leave), else 0"),
    (BACKEND_SET_REFUSED, &[LISTENER, POOL, SET], "counter", "Addresses left out of a backend_set's answers: not allowed (own addresses, port 0, unspecified, multicast, broadcast, outside allow) or past max_backends"),
];
