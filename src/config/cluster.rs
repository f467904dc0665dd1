//! `[cluster]`: the nodes of a fleet behind ECMP, for second-chance forwarding
//! between them (`dataplane/cluster`).

use std::net::{IpAddr, Ipv4Addr};

use toml::Spanned;

use super::error::ConfigError;
use super::file::FileCluster;
use super::validate::{int_of, Source};

/// Most peers (the program's limit).
pub const MAX_PEERS: usize = 16;

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Every node's address on the network the nodes share, this node's too; the same
    /// list, in the same order, on every node.
    pub peers: Vec<Ipv4Addr>,
    /// The interfaces second chance watches (every one but loopback when empty).
    pub interfaces: Vec<String>,
    /// The UDP port the nodes tell each other which flows a leaving node holds on.
    pub port: u16,
}

impl ClusterConfig {
    /// The default `port`.
    pub const DEFAULT_PORT: u16 = 7947;
}

/// `[cluster]`, checked.
pub(super) fn cluster(
    src: &Source<'_>,
    c: &Spanned<FileCluster>,
) -> Result<ClusterConfig, ConfigError> {
    let c = c.get_ref();
    let mut peers: Vec<Ipv4Addr> = Vec::with_capacity(c.peers.get_ref().len());
    for (i, p) in c.peers.get_ref().iter().enumerate() {
        let key = format!("cluster.peers[{i}]");
        let text = p.get_ref().trim();
        let ip = match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => ip,
            Ok(IpAddr::V6(_)) => {
                return Err(src.error(
                    p.span(),
                    key,
                    format!(
                        "{text:?}: IPv6 peers are not supported yet: give each node's IPv4 address"
                    ),
                ))
            }
            Err(_) => {
                return Err(src.error(
                    p.span(),
                    key,
                    format!(
                    "{text:?} is not an IP address: expected a node's address, like `10.0.0.11`"
                ),
                ))
            }
        };
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
            return Err(src.error(
                p.span(),
                key,
                format!(
                    "{ip} cannot be a node's address: give the address the other nodes reach it at"
                ),
            ));
        }
        if peers.contains(&ip) {
            return Err(src.error(p.span(), key, format!("{ip} is listed twice")));
        }
        peers.push(ip);
    }
    if peers.len() < 2 || peers.len() > MAX_PEERS {
        return Err(src.error(
            c.peers.span(),
            "cluster.peers",
            format!(
                "{} peer(s): a cluster has 2 to {MAX_PEERS} nodes, this one among them",
                peers.len()
            ),
        ));
    }
    let mut interfaces = Vec::new();
    for (i, name) in c.interfaces.iter().flat_map(|v| v.get_ref()).enumerate() {
        let text = name.get_ref().trim();
        let ok = !text.is_empty()
            && text.len() < 16
            && !text.contains(['/', ' ', '\t'])
            && text != "."
            && text != "..";
        if !ok {
            return Err(src.error(
                name.span(),
                format!("cluster.interfaces[{i}]"),
                format!("{text:?} is not a network interface name"),
            ));
        }
        interfaces.push(text.to_string());
    }
    let port = match &c.port {
        None => ClusterConfig::DEFAULT_PORT,
        Some(p) => int_of(src, p, "cluster.port", 1, 65535)? as u16,
    };
    Ok(ClusterConfig {
        peers,
        interfaces,
        port,
    })
}
