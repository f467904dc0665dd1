//! A listener's config as the data plane takes it: [`ListenerParams`] and the
//! admission [`Rules`] (the one definition the workers and `ringway route` share).

use crate::config::{
    AdmissionConfig, BackendConnect, ForwardMode, ListenerConfig, Protocol, QueueOverflow,
};
use crate::dataplane::admission::{NetSet, Rate, Rules, SourceLimits};
use crate::dataplane::{ListenerParams, Mode};

/// The worker-facing settings of a listener config.
pub fn params(l: &ListenerConfig) -> ListenerParams {
    ListenerParams {
        hash: l.hash,
        connect_timeout: l.connect_timeout,
        idle_timeout: match l.protocol {
            Protocol::Tcp => l.idle_timeout,
            Protocol::Udp => l.udp_idle_timeout,
        },
        unanswered_timeout: l.udp_unanswered_timeout,
        retries: l.retries,
        max_connections: match l.protocol {
            Protocol::Tcp => l.max_connections,
            Protocol::Udp => l.udp_max_flows,
        },
        udp_responses: l.udp_responses,
        forward: match (l.protocol, l.forward) {
            (Protocol::Udp, ForwardMode::Kernel) => Mode::Kernel,
            (Protocol::Udp, _) | (Protocol::Tcp, ForwardMode::Auto) => Mode::Auto,
            (Protocol::Tcp, ForwardMode::Splice) => Mode::Splice,
            (Protocol::Tcp, ForwardMode::Copy) => Mode::Copy,
            (Protocol::Tcp, ForwardMode::Kernel) => Mode::Kernel,
        },
        send_proxy: l.send_proxy,
        accept_proxy: l.accept_proxy,
        accept_proxy_from: l.accept_proxy_from.clone(),
        admission: admission_rules(&l.admission),
        source_table_size: l.admission.source_table_size,
        first_data: (l.protocol == Protocol::Tcp && l.backend_connect == BackendConnect::OnData)
            .then_some(l.first_data_timeout),
        sni_timeout: l.route.sni_timeout,
        queue_timeout: l.queue.timeout,
        queue_next: l.queue.overflow == QueueOverflow::Next,
    }
}

/// The data plane's admission rules for a listener's admission config (the one
/// definition the data plane and `ringway route` share).
pub fn admission_rules(a: &AdmissionConfig) -> Rules {
    let limits = (a.max_per_source.is_some() || a.rate_per_source.is_some()).then(|| {
        SourceLimits::new(
            a.max_per_source,
            a.rate_per_source.map(|r| Rate::new(r.count, r.per)),
            a.source_prefix_v4,
            a.source_prefix_v6,
        )
    });
    Rules::new(
        a.allow.as_deref().map(NetSet::new),
        NetSet::new(&a.deny),
        limits,
    )
}
