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
    /// The program could not be loaded or attached.
    #[error("[cluster]: {0} (second chance loads a tc program: ringway needs CAP_BPF and CAP_NET_ADMIN at start, or root)")]
    Program(#[from] ClusterError),
}

/// This node's place in the fleet.
#[derive(Debug)]
pub struct Cluster {
    program: SecondChance,
    peers: Vec<Ipv4Addr>,
    me: usize,
    counters: Arc<Counters>,
    /// Since when this node is leaving, when it is.
    leaving: Option<SystemTime>,
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
        tracing::info!(
            "cluster: node {} of {} ({}); second chance on {}",
            me + 1,
            c.peers.len(),
            c.peers[me],
            program.interfaces().join(", ")
        );
        Ok(Some(Cluster {
            program,
            peers: c.peers.clone(),
            me,
            counters,
            leaving: None,
        }))
    }

    /// After a reload: the program watches the listeners the config has now.
    pub fn listeners_changed(&mut self, config: &Config) {
        if let Err(e) = self.program.set_listeners(&tcp_listeners(config)) {
            tracing::error!("cluster: cannot tell second chance the new listeners: {e}");
        }
    }

    /// Marks this node as leaving (from `since`); false when it already was.
    pub fn leave(&mut self, since: SystemTime) -> bool {
        if self.leaving.is_some() {
            return false;
        }
        self.leaving = Some(since);
        tracing::info!(
            "cluster: this node ({}) is leaving: withdraw its route, then stop it once its connections have drained",
            self.peers[self.me]
        );
        true
    }

    /// Takes a leave back; false when it was not leaving.
    pub fn stay(&mut self) -> bool {
        let was = self.leaving.take().is_some();
        if was {
            tracing::info!("cluster: this node ({}) stays", self.peers[self.me]);
        }
        was
    }

    /// What `/status` and `/metrics` show.
    pub fn view(&self) -> ClusterView {
        ClusterView {
            peers: self.peers.clone(),
            me: self.me,
            interfaces: self.program.interfaces().to_vec(),
            leaving: self.leaving,
            counters: Arc::clone(&self.counters),
        }
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
