//! Second chance between the nodes of a fleet (`[cluster] peers`): a TCP segment that
//! ECMP sent to a node that does not hold its connection is passed on to the peers
//! until the one that does takes it, instead of being answered with a reset.
//!
//! The work is a tc ingress program (`second_chance.bpf.c`, committed as
//! `second_chance.bpf.o`, rebuilt by `scripts/build-bpf.sh`) attached to the node's
//! interfaces; its comment says what it forwards and how (IPIP to the next peer, a chain
//! of at most peers - 1 hops that never returns to where it started). This side loads
//! it, tells it the peers, which of them this node is and ringway's TCP listener
//! addresses, and reads its counters. Dropping [`SecondChance`] detaches it (the links
//! are this process's: a process that dies leaves nothing attached).

pub mod announce;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType};
use aya::{include_bytes_aligned, Ebpf, EbpfError, EbpfLoader};

pub use super::stats::ClusterCounts as Counts;

/// The compiled program (see `second_chance.bpf.c`).
static OBJECT: &[u8] = include_bytes_aligned!("second_chance.bpf.o");

const PROGRAM: &str = "ringway_second_chance";
const LISTEN: &str = "RINGWAY_CL_LISTEN";
const PEERS: &str = "RINGWAY_CL_PEERS";
const SELF: &str = "RINGWAY_CL_SELF";
const STATS: &str = "RINGWAY_CL_STATS";
const UDP: &str = "RINGWAY_CL_UDP";

/// Most peers a cluster may have (the program's `MAX_PEERS`).
pub const MAX_PEERS: usize = 16;
/// The counter slots after the per-peer ones (the program's `DELIVERED` ...).
const DELIVERED: u32 = MAX_PEERS as u32;
const DROPPED: u32 = DELIVERED + 1;
const NO_ROUTE: u32 = DELIVERED + 2;
const TOO_BIG: u32 = DELIVERED + 3;

/// Why second chance could not start or be told something.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The object did not load (no privilege, no BPF).
    #[error("cannot load the second-chance program: {}", crate::error_chain(.0))]
    Load(EbpfError),
    /// The program did not load or attach.
    #[error("cannot load or attach the second-chance program: {}", crate::error_chain(.0))]
    Program(ProgramError),
    /// A map operation failed.
    #[error("BPF map: {}", crate::error_chain(.0))]
    Map(MapError),
    /// A descriptor could not be duplicated.
    #[error("{0}")]
    Io(std::io::Error),
    /// Something is missing from the object (a build problem).
    #[error("the second-chance object has no {0}")]
    Missing(&'static str),
    /// No interface to attach to.
    #[error("no network interface to attach to")]
    NoInterface,
    /// An interface could not take the program.
    #[error("interface {name:?}: {why}")]
    Interface {
        /// The interface.
        name: String,
        /// What went wrong.
        why: Box<ClusterError>,
    },
}

impl From<EbpfError> for ClusterError {
    fn from(e: EbpfError) -> Self {
        ClusterError::Load(e)
    }
}

impl From<ProgramError> for ClusterError {
    fn from(e: ProgramError) -> Self {
        ClusterError::Program(e)
    }
}

impl From<MapError> for ClusterError {
    fn from(e: MapError) -> Self {
        ClusterError::Map(e)
    }
}

/// A handle on the program's counters.
pub struct Counters {
    map: PerCpuArray<MapData, u64>,
    peers: usize,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Counters")
    }
}

impl Counters {
    /// What the program has counted, every CPU together.
    pub fn read(&self) -> Result<Counts, ClusterError> {
        let slot = |s: u32| -> Result<(u64, u64), ClusterError> {
            let sum = |k: u32| -> Result<u64, ClusterError> {
                Ok(self
                    .map
                    .get(&k, 0)?
                    .iter()
                    .copied()
                    .fold(0u64, u64::wrapping_add))
            };
            Ok((sum(2 * s)?, sum(2 * s + 1)?))
        };
        Ok(Counts {
            forwarded: (0..self.peers as u32).map(slot).collect::<Result<_, _>>()?,
            delivered: slot(DELIVERED)?,
            dropped: slot(DROPPED)?,
            no_route: slot(NO_ROUTE)?,
            too_big: slot(TOO_BIG)?,
        })
    }
}

/// The program's table of the UDP flows leaving peers hold: their datagrams go to them.
pub struct UdpFlows {
    map: HashMap<MapData, [u32; 3], u32>,
}

impl fmt::Debug for UdpFlows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UdpFlows")
    }
}

impl UdpFlows {
    /// Peer `peer` holds `flow`.
    pub fn insert(&mut self, flow: announce::FlowKey, peer: u32) -> Result<(), ClusterError> {
        Ok(self.map.insert(udp_key(flow), peer, 0)?)
    }

    /// No peer holds `flow` any more.
    pub fn remove(&mut self, flow: announce::FlowKey) {
        let _ = self.map.remove(&udp_key(flow));
    }
}

/// The program's key for a UDP flow: addresses and ports as on the wire.
fn udp_key((client, dst): announce::FlowKey) -> [u32; 3] {
    let port = |a: &SocketAddrV4| u32::from(u16::from_ne_bytes(a.port().to_be_bytes()));
    [
        wire(*client.ip()),
        wire(*dst.ip()),
        port(&client) | (port(&dst) << 16),
    ]
}

/// The loaded, attached program. Dropping it detaches it.
pub struct SecondChance {
    ebpf: Ebpf,
    interfaces: Vec<String>,
    peers: usize,
}

impl fmt::Debug for SecondChance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecondChance")
            .field("interfaces", &self.interfaces)
            .field("peers", &self.peers)
            .finish()
    }
}

impl SecondChance {
    /// Loads the program, tells it `peers` (this node is `peers[me]`) and attaches it at
    /// ingress of each of `interfaces` (every interface but loopback when empty).
    pub fn load(
        peers: &[Ipv4Addr],
        me: usize,
        interfaces: &[String],
    ) -> Result<SecondChance, ClusterError> {
        let names = if interfaces.is_empty() {
            all_interfaces()
        } else {
            interfaces.to_vec()
        };
        if names.is_empty() {
            return Err(ClusterError::NoInterface);
        }
        let mut chance = SecondChance {
            ebpf: EbpfLoader::new().load(OBJECT)?,
            interfaces: Vec::new(),
            peers: 0,
        };
        chance.set_peers(peers, me)?;
        let program: &mut SchedClassifier = chance
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(ClusterError::Missing(PROGRAM))?
            .try_into()?;
        program.load()?;
        for name in &names {
            program
                .attach(name, TcAttachType::Ingress)
                .map_err(|why| ClusterError::Interface {
                    name: name.clone(),
                    why: Box::new(why.into()),
                })?;
        }
        chance.interfaces = names;
        Ok(chance)
    }

    /// The interfaces it is attached to.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Tells the program the peers and which of them this node is.
    pub fn set_peers(&mut self, peers: &[Ipv4Addr], me: usize) -> Result<(), ClusterError> {
        let n = peers.len().min(MAX_PEERS);
        let mut map: Array<&mut MapData, u32> = Array::try_from(self.map(PEERS)?)?;
        for (i, p) in peers.iter().take(n).enumerate() {
            map.set(i as u32, wire(*p), 0)?;
        }
        let mut me_map: Array<&mut MapData, u32> = Array::try_from(self.map(SELF)?)?;
        me_map.set(0, me as u32, 0)?;
        me_map.set(1, n as u32, 0)?;
        self.peers = n;
        Ok(())
    }

    /// Tells the program ringway's TCP listener addresses (0.0.0.0 for a wildcard),
    /// replacing what it had.
    pub fn set_listeners(&mut self, listeners: &[SocketAddrV4]) -> Result<(), ClusterError> {
        let mut map: HashMap<&mut MapData, u64, u32> = HashMap::try_from(self.map(LISTEN)?)?;
        let want: Vec<u64> = listeners.iter().map(|l| listener_key(*l)).collect();
        let stale: Vec<u64> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains(k))
            .collect();
        for k in stale {
            map.remove(&k)?;
        }
        for k in want {
            map.insert(k, 1, 0)?;
        }
        Ok(())
    }

    /// A handle on its counters (its own descriptor: readable from any thread, after
    /// privileges are dropped, for as long as it lives).
    pub fn counters(&mut self) -> Result<Counters, ClusterError> {
        let map = PerCpuArray::try_from(Map::PerCpuArray(self.own_handle(STATS)?))?;
        Ok(Counters {
            map,
            peers: self.peers,
        })
    }

    /// A handle on the table of the UDP flows leaving peers hold (its own descriptor).
    pub fn udp_flows(&mut self) -> Result<UdpFlows, ClusterError> {
        let map = HashMap::try_from(Map::HashMap(self.own_handle(UDP)?))?;
        Ok(UdpFlows { map })
    }

    /// A descriptor of map `name` of its own (it outlives any borrow of the program).
    fn own_handle(&mut self, name: &'static str) -> Result<MapData, ClusterError> {
        let fd = match self.map(name)? {
            Map::PerCpuArray(data) | Map::HashMap(data) => data.fd().as_fd().try_clone_to_owned(),
            _ => return Err(ClusterError::Missing(name)),
        }
        .map_err(ClusterError::Io)?;
        Ok(MapData::from_fd(fd)?)
    }

    fn map(&mut self, name: &'static str) -> Result<&mut Map, ClusterError> {
        self.ebpf.map_mut(name).ok_or(ClusterError::Missing(name))
    }
}

/// An address as the program reads it off the wire (network order, in a native u32).
fn wire(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The program's key for a listener: (address << 16) | port, both as on the wire.
fn listener_key(l: SocketAddrV4) -> u64 {
    (u64::from(wire(*l.ip())) << 16) | u64::from(u16::from_ne_bytes(l.port().to_be_bytes()))
}

/// Every interface but loopback, by name.
fn all_interfaces() -> Vec<String> {
    let list = crate::sys::ifaces::list().unwrap_or_default();
    list.into_iter()
        .map(|(_, name)| name)
        .filter(|n| n != "lo")
        .collect()
}

/// Which of `peers` this machine is: the one address of theirs among `local`.
pub fn find_self(peers: &[Ipv4Addr], local: &[std::net::IpAddr]) -> Result<usize, String> {
    let mine: Vec<usize> = peers
        .iter()
        .enumerate()
        .filter(|(_, p)| local.contains(&std::net::IpAddr::V4(**p)))
        .map(|(i, _)| i)
        .collect();
    match mine.as_slice() {
        [me] => Ok(*me),
        [] => Err(format!(
            "none of the peers ({}) is an address of this machine: list this node's own address too (the same list on every node)",
            list(peers)
        )),
        _ => Err(format!(
            "more than one of the peers is an address of this machine ({}): each node must appear once",
            mine.iter()
                .map(|i| peers[*i].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn list(peers: &[Ipv4Addr]) -> String {
    peers
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn a_listener_key_is_what_the_program_builds_off_the_wire() {
        // The program: ((u64)daddr << 16) | dport, each loaded raw from the packet.
        let key = listener_key(SocketAddrV4::new(Ipv4Addr::new(10, 100, 0, 1), 80));
        let daddr = u32::from_ne_bytes([10, 100, 0, 1]);
        let dport = u16::from_ne_bytes([0, 80]);
        assert_eq!(key, (u64::from(daddr) << 16) | u64::from(dport));
        assert_eq!(
            listener_key(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80)),
            u64::from(dport)
        );
    }

    #[test]
    fn a_node_finds_itself_once_among_the_peers() {
        let peers = [
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 3),
        ];
        let local = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(peers[1])];
        assert_eq!(find_self(&peers, &local), Ok(1));
        let err = find_self(&peers, &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap_err();
        assert!(err.contains("none of the peers"), "{err}");
        let err = find_self(&peers, &[IpAddr::V4(peers[0]), IpAddr::V4(peers[2])]).unwrap_err();
        assert!(err.contains("more than one"), "{err}");
    }
}
