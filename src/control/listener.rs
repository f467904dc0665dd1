//! A listener as the control plane keeps it: its settings, its routes, which pools
//! they lead to, and the [`Routing`] workers load, assembled from its settings and its
//! pools' current routings. A pool change publishes a new routing on every listener
//! that uses the pool (the pools' routings are shared, not copied).

use std::sync::Arc;

use super::params::params;
use super::pool::PoolState;
use super::view::{ListenerView, RouteView};
use crate::balance::Routes;
use crate::config::{ForwardMode, ListenerConfig, Protocol, RouteBy};
use crate::dataplane::{ListenerParams, ListenerShared, Routing};

/// How listener `l` forwards: a TCP listener's `forward`; for UDP, `kernel` (its
/// established flows) or `ringway` (every datagram: asked to, or the kernel path is
/// unavailable in this process, or `auto`, which forwards UDP in ringway).
pub fn forward_in_use(l: &ListenerConfig, udp_kernel: bool) -> &'static str {
    match (l.protocol, l.forward) {
        (Protocol::Udp, ForwardMode::Kernel) if udp_kernel => "kernel",
        (Protocol::Udp, _) => "ringway",
        (Protocol::Tcp, ForwardMode::Auto) => "auto",
        (Protocol::Tcp, ForwardMode::Splice) => "splice",
        (Protocol::Tcp, ForwardMode::Copy) => "copy",
        (Protocol::Tcp, ForwardMode::Kernel) => "kernel",
    }
}

/// One listener.
#[derive(Debug)]
pub struct ListenerState {
    /// Its config.
    pub config: ListenerConfig,
    /// What workers share.
    pub shared: Arc<ListenerShared>,
    /// The settings workers use (shared by every routing until a reload).
    params: Arc<ListenerParams>,
    /// Which slot a connection goes to (likewise).
    routes: Arc<Routes>,
    /// For each slot, its pool's index in the control plane's pools.
    pools: Vec<usize>,
    /// Its view is out of date.
    pub view_stale: bool,
    /// Copies of its listening sockets (the workers own the originals), offered to
    /// the new process at an upgrade.
    sockets: Vec<std::os::fd::OwnedFd>,
}

impl ListenerState {
    /// A new listener over `pools` (the control plane's, which hold every pool its
    /// config names).
    pub fn new(config: ListenerConfig, workers: usize, pools: &[PoolState]) -> ListenerState {
        let (routes, slots) = routes(&config, pools);
        let params = Arc::new(params(&config));
        let routing = Routing {
            params: Arc::clone(&params),
            routes: Arc::clone(&routes),
            pools: slots
                .iter()
                .map(|&pi| Arc::clone(pools[pi].routing()))
                .collect(),
        };
        let shared = Arc::new(ListenerShared::new(
            &config.name,
            config.listen,
            routing,
            workers,
        ));
        ListenerState {
            config,
            shared,
            params,
            routes,
            pools: slots,
            view_stale: true,
            sockets: Vec::new(),
        }
    }

    /// Keeps copies of `sockets`, its listening sockets, for an upgrade (one that
    /// cannot be copied is left out: the new process binds it again).
    pub fn keep_sockets(&mut self, sockets: &[crate::dataplane::BoundSocket]) {
        for s in sockets {
            match s.as_fd().try_clone_to_owned() {
                Ok(fd) => self.sockets.push(fd),
                Err(e) => {
                    tracing::warn!(listener = %self.config.name, "cannot keep a copy of a listening socket for upgrades: {e}")
                }
            }
        }
    }

    /// Closes the copies kept for an upgrade.
    pub fn release_sockets(&mut self) {
        self.sockets.clear();
    }

    /// Its listening sockets, as kept for an upgrade.
    pub fn sockets(&self) -> &[std::os::fd::OwnedFd] {
        &self.sockets
    }

    /// Takes a reloaded config for the same listener (same name, protocol and address)
    /// and the reloaded pools; [`ListenerState::publish`] next.
    pub fn reconfigure(&mut self, config: ListenerConfig, pools: &[PoolState]) {
        let (routes, slots) = routes(&config, pools);
        self.routes = routes;
        self.pools = slots;
        self.params = Arc::new(params(&config));
        self.config = config;
    }

    /// The pools' indices it routes to (what re-indexing after a reload must redo).
    pub fn refresh_pools(&mut self, pools: &[PoolState]) {
        let (routes, slots) = routes(&self.config, pools);
        self.routes = routes;
        self.pools = slots;
    }

    /// Whether it routes to pool `pi`.
    pub fn uses(&self, pi: usize) -> bool {
        self.pools.contains(&pi)
    }

    /// Publishes its routing: its settings and routes, and `pools`' current routings.
    pub fn publish(&mut self, pools: &[PoolState]) {
        self.shared.routing.store(Arc::new(Routing {
            params: Arc::clone(&self.params),
            routes: Arc::clone(&self.routes),
            pools: self
                .pools
                .iter()
                .map(|&pi| Arc::clone(pools[pi].routing()))
                .collect(),
        }));
        self.view_stale = true;
    }

    /// What `/status` and `/metrics` show of it; `udp_kernel`: this process has the
    /// UDP kernel path.
    pub fn view(&self, udp_kernel: bool) -> ListenerView {
        let r = &self.config.route;
        ListenerView {
            forward: forward_in_use(&self.config, udp_kernel),
            name: self.config.name.clone(),
            protocol: self.config.protocol,
            listen: self.config.listen,
            shared: Arc::clone(&self.shared),
            route: RouteView {
                by: match r.by {
                    RouteBy::None => "none",
                    RouteBy::Sni => "sni",
                },
                default_pool: r.default_pool.clone(),
                rules: r
                    .rules
                    .iter()
                    .map(|rule| (rule.names.clone(), rule.pool.clone()))
                    .collect(),
            },
            own: r
                .default_pool
                .as_ref()
                .filter(|p| **p == self.config.name)
                .cloned(),
        }
    }
}

/// The routes of listener `config` over `pools`, and each slot's pool index.
fn routes(config: &ListenerConfig, pools: &[PoolState]) -> (Arc<Routes>, Vec<usize>) {
    let (routes, names) = routes_of(config);
    let slots = names
        .iter()
        .filter_map(|n| pools.iter().position(|p| p.config.name == *n))
        .collect();
    (Arc::new(routes), slots)
}

/// The routes of listener `config`, and the pool of each slot: slot 0 is the default
/// pool when it has one, then each other pool its routes name. The one definition the
/// data plane and `ringway route` share.
pub fn routes_of(config: &ListenerConfig) -> (Routes, Vec<&str>) {
    let names = config.route.pools();
    let slot_of = |pool: &str| names.iter().position(|n| *n == pool);
    let default = config.route.default_pool.as_deref().and_then(slot_of);
    let routes = match config.route.by {
        RouteBy::None => Routes::single(default),
        RouteBy::Sni => Routes::by_name(
            config.route.rules.iter().flat_map(|rule| {
                let slot = slot_of(&rule.pool);
                rule.names
                    .iter()
                    .filter_map(move |n| slot.map(|s| (n.as_str(), s)))
            }),
            default,
        ),
    };
    (routes, names)
}
