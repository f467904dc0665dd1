//! `[cluster]`: the second-chance program (loaded at start, while privileged), the
//! listener addresses it watches (told again after each reload), and whether this
//! node is leaving the fleet (`ringway ctl leave`, `POST /leave`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, Protocol};
use crate::dataplane::cluster::{find_self, ClusterError, Counters, SecondChance};

/// Why `[cluster]` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// This machine is not one of the peers, or is several.
    #[error("cluster.peers: {0}")]
    NotAPeer(String),
    /// The cluster's port could not be bound.
    #[error("cluster.port: cannot listen on udp {addr}: {why}")]
    Bind {
        /// The address.
        addr: String,
        /// What the OS said.
        why: std::io::Error,
    },
    /// The program could not be loaded or attached.
    #[error("[cluster]: {0} (second chance loads a tc program: ringway needs CAP_BPF and CAP_NET_ADMIN at start, or root)")]
    Program(#[from] ClusterError),
}

/// This node's place in the fleet.
#[derive(Debug)]
pub struct Cluster {
    program: SecondChance,
    /// The peers, which of them this node is, and the port they talk on.
    peers: super::announce::Peers,
    counters: Arc<Counters>,
    /// Since when this node is leaving, when it is.
    leaving: Option<SystemTime>,
    /// Bound at start; taken by [`Cluster::start_tasks`].
    bound: Option<(std::net::UdpSocket, crate::dataplane::cluster::UdpFlows)>,
    /// The socket, once the tasks run.
    socket: Option<Arc<tokio::net::UdpSocket>>,
    /// Set while leaving: the task that tells the peers runs while it holds.
    telling: Arc<std::sync::atomic::AtomicBool>,
}

/// What `/status` and `/metrics` show of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The peers, in config order.
    pub peers: Vec<Ipv4Addr>,
    /// Which of them this node is.
    pub me: usize,
    /// The interfaces second chance watches.
    pub interfaces: Vec<String>,
    /// Since when this node is leaving, when it is.
    pub leaving: Option<SystemTime>,
    /// The program's counters (read live).
    pub counters: Arc<Counters>,
}

impl Cluster {
    /// Starts second chance for `config`'s `[cluster]`, if it has one.
    pub fn start(config: &Config) -> Result<Option<Cluster>, StartError> {
        let Some(c) = &config.cluster else {
            return Ok(None);
        };
        let local = crate::discovery::filter::local_addresses();
        let me = find_self(&c.peers, &local).map_err(StartError::NotAPeer)?;
        let mut program = SecondChance::load(&c.peers, me, &c.interfaces)?;
        program.set_listeners(&tcp_listeners(config))?;
        let counters = Arc::new(program.counters()?);
        let peers = super::announce::Peers {
            all: c.peers.clone(),
            me,
            port: c.port,
        };
        let socket = super::announce::bind(&peers).map_err(|why| StartError::Bind {
            addr: format!("{}:{}", c.peers[me], c.port),
            why,
        })?;
        let bound = Some((socket, program.udp_flows()?));
        tracing::info!(
            "cluster: node {} of {} ({}); second chance on {}",
            me + 1,
            c.peers.len(),
            c.peers[me],
            program.interfaces().join(", ")
        );
        // The program's route lookup to a peer is the stack's forwarding lookup from
        // the interface the segment came in on: off there, every segment it should
        // send on is lost (counted as no_route).
        let off: Vec<&str> = program
            .interfaces()
            .iter()
            .map(String::as_str)
            .filter(|i| crate::sys::ifaces::ipv4_forwarding(i) == Some(false))
            .collect();
        if !off.is_empty() {
            tracing::warn!(
                "cluster: IPv4 forwarding is off on {} (net.ipv4.conf.<interface>.forwarding = 0): second chance cannot send a segment that arrives there on to its peer, and loses it (ringway_cluster_lost_packets_total{{reason=\"no_route\"}}); turn it on where clients' packets arrive",
                off.join(", ")
            );
        }
        Ok(Some(Cluster {
            program,
            peers,
            counters,
            leaving: None,
            bound,
            socket: None,
            telling: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }))
    }

    /// After a reload: the program watches the listeners the config has now.
    pub fn listeners_changed(&mut self, config: &Config) {
        if let Err(e) = self.program.set_listeners(&tcp_listeners(config)) {
            tracing::error!("cluster: cannot tell second chance the new listeners: {e}");
        }
    }

    /// Starts listening to the peers (in the runtime, once).
    pub fn start_tasks(&mut self) {
        let Some((socket, table)) = self.bound.take() else {
            return;
        };
        match tokio::net::UdpSocket::from_std(socket) {
            Ok(s) => {
                let s = Arc::new(s);
                tokio::spawn(super::announce::listen(
                    Arc::clone(&s),
                    self.peers.clone(),
                    table,
                ));
                self.socket = Some(s);
            }
            Err(e) => tracing::error!("cluster: cannot listen to the peers: {e}"),
        }
    }

    /// This node's address.
    fn node(&self) -> Ipv4Addr {
        self.peers.all[self.peers.me]
    }

    /// Marks this node as leaving (from `since`) and starts telling the peers which UDP
    /// flows it holds (`workers` list them); false when it already was leaving.
    pub fn leave(
        &mut self,
        since: SystemTime,
        workers: Vec<crate::dataplane::WorkerControl>,
    ) -> bool {
        if self.leaving.is_some() {
            return false;
        }
        self.leaving = Some(since);
        if let Some(socket) = &self.socket {
            use std::sync::atomic::Ordering;
            if !self.telling.swap(true, Ordering::Relaxed) {
                tokio::spawn(super::announce::tell(
                    Arc::clone(socket),
                    self.peers.clone(),
                    workers,
                    Arc::clone(&self.telling),
                ));
            }
        }
        tracing::info!(
            "cluster: this node ({}) is leaving: withdraw its route, then stop it once its connections have drained",
            self.node()
        );
        true
    }

    /// Takes a leave back; false when it was not leaving.
    pub fn stay(&mut self) -> bool {
        self.telling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let was = self.leaving.take().is_some();
        if was {
            tracing::info!("cluster: this node ({}) stays", self.node());
        }
        was
    }

    /// What `/status` and `/metrics` show.
    pub fn view(&self) -> ClusterView {
        ClusterView {
            peers: self.peers.all.clone(),
            me: self.peers.me,
            interfaces: self.program.interfaces().to_vec(),
            leaving: self.leaving,
            counters: Arc::clone(&self.counters),
        }
    }
}

impl ClusterView {
    /// What `/metrics` shows (the counters read now; zeros if they cannot be read).
    pub fn sample(&self) -> crate::metrics::ClusterSample {
        crate::metrics::ClusterSample {
            peers: self.peers.iter().map(Ipv4Addr::to_string).collect(),
            me: self.me,
            counts: self.counts(),
            leaving: self.leaving.is_some(),
        }
    }

    /// The counters now (zeros, logged, if they cannot be read).
    fn counts(&self) -> crate::dataplane::stats::ClusterCounts {
        self.counters.read().unwrap_or_else(|e| {
            tracing::warn!("cluster: cannot read second chance's counters: {e}");
            Default::default()
        })
    }

    /// What `/status` shows.
    pub fn status(&self) -> ClusterStatus {
        let c = self.counts();
        let pair = |(packets, bytes): (u64, u64)| Traffic { packets, bytes };
        ClusterStatus {
            node: self.peers[self.me].to_string(),
            peers: self.peers.iter().map(Ipv4Addr::to_string).collect(),
            interfaces: self.interfaces.clone(),
            leaving: self.leaving.is_some(),
            leaving_since: self.leaving.and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }),
            forwarded: self
                .peers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != self.me)
                .map(|(i, p)| PeerTraffic {
                    peer: p.to_string(),
                    traffic: pair(c.forwarded.get(i).copied().unwrap_or_default()),
                })
                .collect(),
            delivered: pair(c.delivered),
            lost: Lost {
                no_owner: pair(c.dropped),
                no_route: pair(c.no_route),
                too_big: pair(c.too_big),
            },
        }
    }
}

/// `/status`: `cluster`.
#[derive(Debug, serde::Serialize)]
pub struct ClusterStatus {
    /// This node's address among the peers.
    pub node: String,
    /// Every peer, in config order.
    pub peers: Vec<String>,
    /// The interfaces second chance watches.
    pub interfaces: Vec<String>,
    /// This node is leaving the fleet.
    pub leaving: bool,
    /// Since when (Unix seconds), while leaving.
    pub leaving_since: Option<u64>,
    /// Segments sent on to each other peer.
    pub forwarded: Vec<PeerTraffic>,
    /// Segments a peer passed on that a socket here held.
    pub delivered: Traffic,
    /// Segments second chance could not save, by reason.
    pub lost: Lost,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Traffic {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Segments sent on to one peer.
#[derive(Debug, serde::Serialize)]
pub struct PeerTraffic {
    /// The peer.
    pub peer: String,
    /// What went to it.
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// Segments second chance could not save.
#[derive(Debug, serde::Serialize)]
pub struct Lost {
    /// No node held it (the last of the chain reset it).
    pub no_owner: Traffic,
    /// No route or neighbour to the next peer.
    pub no_route: Traffic,
    /// Over the path MTU once encapsulated.
    pub too_big: Traffic,
}

/// What `leave`/`stay` did: whether it changed anything, and the status after.
pub type Left = Result<(bool, ClusterStatus), NoCluster>;

/// `leave` or `stay` without `[cluster]`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("this node has no [cluster] in its config: there is no fleet to leave")]
pub struct NoCluster;

impl super::core::Control {
    /// `POST /leave` (`leave`) or `/stay`, at `now`.
    pub fn set_leaving(&mut self, leave: bool, now: SystemTime) -> Left {
        let cluster = self.cluster.as_mut().ok_or(NoCluster)?;
        let changed = if leave {
            cluster.leave(now, self.workers.clone())
        } else {
            cluster.stay()
        };
        let status = cluster.view().status();
        // Whoever asked reads /status or /metrics next.
        self.publish_all_now();
        Ok((changed, status))
    }
}

/// The IPv4 TCP listener addresses of `config` (second chance is IPv4 only).
fn tcp_listeners(config: &Config) -> Vec<SocketAddrV4> {
    config
        .listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Tcp)
        .filter_map(|l| match l.listen {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        })
        .collect()
}
