//! `[cluster]`'s UDP side: a leaving node tells its peers, every second, which UDP flows
//! it holds ([`tell`]); each node listens for that ([`listen`]) and keeps its second
//! chance program's table of those flows, so their datagrams go on to the node that
//! holds their upstream socket (the backend keeps seeing the same source). A flow not
//! told of again for `FORGET_AFTER_SECONDS` is forgotten (the node stayed, or stopped,
//! or the flow ended). Peers are known by their address: an announcement from
//! anywhere else is ignored.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::dataplane::cluster::announce::{self, FlowKey, FORGET_AFTER_SECONDS};
use crate::dataplane::cluster::UdpFlows;
use crate::dataplane::{Command, WorkerControl};

/// How often a leaving node tells its peers.
const EVERY: Duration = Duration::from_secs(1);

/// Who this node is among its peers, and where they listen.
#[derive(Debug, Clone)]
pub struct Peers {
    /// Every peer, in config order.
    pub all: Vec<Ipv4Addr>,
    /// This node's index.
    pub me: usize,
    /// The port they listen on.
    pub port: u16,
}

/// While `leaving` holds: every second, the workers' open UDP flows, sent to every
/// other peer.
pub async fn tell(
    socket: Arc<UdpSocket>,
    peers: Peers,
    workers: Vec<WorkerControl>,
    leaving: Arc<AtomicBool>,
) {
    while leaving.load(Ordering::Relaxed) {
        let workers = workers.clone();
        let flows = tokio::task::spawn_blocking(move || open_flows(&workers))
            .await
            .unwrap_or_default();
        let datagrams = announce::encode(&flows);
        for (i, peer) in peers.all.iter().enumerate() {
            if i == peers.me {
                continue;
            }
            for d in &datagrams {
                if let Err(e) = socket.send_to(d, (*peer, peers.port)).await {
                    tracing::debug!("cluster: cannot tell {peer} this node's flows: {e}");
                    break;
                }
            }
        }
        tracing::debug!(
            flows = flows.len(),
            "cluster: told the peers the UDP flows this node holds"
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// The workers' open IPv4 UDP flows (each worker answers within 200 ms or is skipped).
fn open_flows(workers: &[WorkerControl]) -> Vec<FlowKey> {
    let mut flows = Vec::new();
    for w in workers {
        let (tx, rx) = std::sync::mpsc::channel();
        if w.send(Command::ListFlows(tx)).is_err() {
            continue;
        }
        if let Ok(list) = rx.recv_timeout(Duration::from_millis(200)) {
            flows.extend(list.into_iter().filter_map(|f| match f {
                (SocketAddr::V4(c), SocketAddr::V4(d)) => Some((c, d)),
                _ => None,
            }));
        }
    }
    flows
}

/// Reads the peers' announcements for ever, keeping `table` to what they said in the
/// last `FORGET_AFTER_SECONDS`.
pub async fn listen(socket: Arc<UdpSocket>, peers: Peers, mut table: UdpFlows) {
    let mut known: HashMap<FlowKey, (u32, Instant)> = HashMap::new();
    let mut sweep = tokio::time::interval(EVERY);
    let mut buf = vec![0u8; 2048];
    let forget = Duration::from_secs(FORGET_AFTER_SECONDS);
    let mut full_logged = false;
    loop {
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                let Some(peer) = peer_of(&peers, from.ip()) else {
                    tracing::debug!("cluster: ignored an announcement from {from}, no peer");
                    continue;
                };
                let flows = match announce::decode(&buf[..n]) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::debug!("cluster: ignored a datagram from {from}: {e}");
                        continue;
                    }
                };
                let now = Instant::now();
                for flow in flows {
                    let fresh = known.get(&flow).is_none_or(|(p, _)| *p != peer);
                    if fresh {
                        if let Err(e) = table.insert(flow, peer) {
                            if !full_logged {
                                tracing::warn!("cluster: cannot note a flow peer {from} holds: {e}");
                                full_logged = true;
                            }
                            continue;
                        }
                    }
                    known.insert(flow, (peer, now));
                }
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                known.retain(|flow, (_, at)| {
                    let keep = now.duration_since(*at) < forget;
                    if !keep {
                        table.remove(*flow);
                    }
                    keep
                });
                if known.is_empty() {
                    full_logged = false;
                }
            }
        }
    }
}

/// Which peer (not this node) `ip` is.
fn peer_of(peers: &Peers, ip: IpAddr) -> Option<u32> {
    let IpAddr::V4(ip) = ip else { return None };
    peers
        .all
        .iter()
        .position(|p| *p == ip)
        .filter(|i| *i != peers.me)
        .map(|i| i as u32)
}

/// This node's address on the cluster's port (shared with `SO_REUSEPORT`: during an
/// upgrade the old and the new process both listen, until the old one exits).
pub fn bind(peers: &Peers) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddrV4::new(peers.all[peers.me], peers.port).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}
