//! `forward = "kernel"` on a UDP listener: the kernel forwards an established flow's
//! datagrams itself, both ways, without waking ringway.
//!
//! A flow still opens in ringway, from its first datagram (admission, per-source
//! limits, the ring, its own connected upstream socket). Then [`Flows::install`] puts
//! it in the map of a tc ingress program (`forward.bpf.c`, committed as
//! `forward.bpf.o`, rebuilt by `scripts/build-bpf.sh`; its XDP variant on the
//! interfaces `udp_kernel_xdp` names), which rewrites its later
//! datagrams as ringway would send them: client -> listener becomes flow socket ->
//! backend, backend -> flow socket becomes listener -> client. What the program is
//! unsure of goes up to the sockets unchanged, and ringway forwards it as in userspace
//! mode.
//!
//! The program counts each flow's datagrams, bytes and last activity in an array this
//! process maps into its memory ([`crate::sys::shared::SharedWords`]): reading them
//! costs no system call, so the plane reads them for its metrics, the access log and
//! the idle timeout as often as it likes.
//!
//! Entries are this process's: the maps die with it (nothing is pinned), and the
//! program's links are detached when [`Program`] drops. A flow handed to another
//! process by an upgrade leaves the map first ([`Flows::remove`]); the new process puts
//! it in its own.

mod entry;

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::AsFd;
use std::sync::Arc;

use aya::maps::{HashMap, Map, MapData, MapError};
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::{include_bytes_aligned, Ebpf, EbpfError, EbpfLoader};

use crate::sys::shared::SharedWords;
pub use entry::{Counts, Installed, Path};
use entry::{Key, Value, WORDS};

/// The compiled program (see `forward.bpf.c`).
static OBJECT: &[u8] = include_bytes_aligned!("forward.bpf.o");

const PROGRAM: &str = "ringway_udp_forward";
const PROGRAM_XDP: &str = "ringway_udp_forward_xdp";
const FLOWS: &str = "RINGWAY_UDP_FLOWS";
const STATE: &str = "RINGWAY_UDP_STATE";

/// Why the UDP kernel path is unavailable, or a flow could not use it. Each message
/// says it all.
#[derive(Debug, thiserror::Error)]
pub enum UdpKernelError {
    /// The object did not load (no privilege, no BPF).
    #[error("cannot load the UDP forwarding program: {}", crate::error_chain(.0))]
    Load(EbpfError),
    /// The program did not load or attach (the verifier's log is in the message).
    #[error("cannot load or attach the UDP forwarding program: {}", crate::error_chain(.0))]
    Program(ProgramError),
    /// A map operation failed.
    #[error("BPF map: {}", crate::error_chain(.0))]
    Map(MapError),
    /// A descriptor could not be duplicated or mapped.
    #[error("{0}")]
    Io(std::io::Error),
    /// Something is missing from the object (a build problem).
    #[error("the UDP forwarding object has no {0}")]
    Missing(&'static str),
    /// An interface could not take the program.
    #[error("interface {name:?}: {why}")]
    Interface {
        /// The interface.
        name: String,
        /// What went wrong.
        why: Box<UdpKernelError>,
    },
}

/// Where the program runs on one interface.
#[derive(Debug)]
enum Hook {
    /// tc ingress (every interface, loopback included).
    Tc(SchedClassifierLinkId),
    /// XDP, native mode (`udp_kernel_xdp`).
    Xdp(XdpLinkId),
}

/// What an interface named in `udp_kernel_xdp` got.
#[derive(Debug)]
pub enum XdpOutcome {
    /// The program runs at XDP there.
    Attached,
    /// Its driver refused native XDP (the reason): tc ingress took it.
    Refused(UdpKernelError),
}

fn on(name: &str) -> impl FnOnce(ProgramError) -> UdpKernelError + '_ {
    move |why| UdpKernelError::Interface {
        name: name.to_string(),
        why: Box::new(why.into()),
    }
}

/// Attaches the program of `ebpf` to interface `name`: at XDP when `xdp` asks for it
/// and the driver takes it (else the refusal, with tc taking it), at tc ingress
/// otherwise.
fn attach(
    ebpf: &mut Ebpf,
    name: &str,
    xdp: bool,
) -> Result<(Hook, Option<XdpOutcome>), UdpKernelError> {
    let mut outcome = None;
    if xdp {
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_XDP)
            .ok_or(UdpKernelError::Missing(PROGRAM_XDP))?
            .try_into()?;
        match program.attach(name, XdpMode::Driver) {
            Ok(link) => return Ok((Hook::Xdp(link), Some(XdpOutcome::Attached))),
            Err(e) => outcome = Some(XdpOutcome::Refused(on(name)(e))),
        }
    }
    let program: &mut SchedClassifier = ebpf
        .program_mut(PROGRAM)
        .ok_or(UdpKernelError::Missing(PROGRAM))?
        .try_into()?;
    let link = program
        .attach(name, TcAttachType::Ingress)
        .map_err(on(name))?;
    Ok((Hook::Tc(link), outcome))
}

impl From<EbpfError> for UdpKernelError {
    fn from(e: EbpfError) -> Self {
        UdpKernelError::Load(e)
    }
}

impl From<ProgramError> for UdpKernelError {
    fn from(e: ProgramError) -> Self {
        UdpKernelError::Program(e)
    }
}

impl From<MapError> for UdpKernelError {
    fn from(e: MapError) -> Self {
        UdpKernelError::Map(e)
    }
}

impl From<std::io::Error> for UdpKernelError {
    fn from(e: std::io::Error) -> Self {
        UdpKernelError::Io(e)
    }
}

/// The loaded program, attached at ingress of every interface. The control plane keeps
/// it for the life of the process: dropping it detaches it.
pub struct Program {
    ebpf: Ebpf,
    /// The interfaces it is attached to: index, name, link.
    interfaces: Vec<(u32, String, Hook)>,
    /// The interfaces where it runs at XDP if they take it (`udp_kernel_xdp`).
    xdp: Vec<String>,
    /// Interfaces that refused it since start (not tried again).
    refused: Vec<u32>,
    slots: u32,
    state: Arc<SharedWords>,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("interfaces", &self.interfaces)
            .field("slots", &self.slots)
            .finish()
    }
}

impl Program {
    /// Loads the program with room for `flows` flows and attaches it to every
    /// interface there is now (loopback included): at XDP on those named in `xdp`,
    /// where their driver takes it, at tc ingress on the others. Returns what each
    /// interface named in `xdp` got.
    pub fn load(
        flows: u32,
        xdp: &[String],
    ) -> Result<(Program, Vec<(String, XdpOutcome)>), UdpKernelError> {
        let mut p = Program::load_detached(flows)?;
        p.xdp = xdp.to_vec();
        let mut outcomes = Vec::new();
        for (index, name) in crate::sys::ifaces::list()? {
            let (hook, outcome) = attach(&mut p.ebpf, &name, p.xdp.contains(&name))?;
            if let Some(o) = outcome {
                outcomes.push((name.clone(), o));
            }
            p.interfaces.push((index, name, hook));
        }
        Ok((p, outcomes))
    }

    /// The program loaded with room for `flows` flows, attached nowhere yet.
    fn load_detached(flows: u32) -> Result<Program, UdpKernelError> {
        let slots = flows.max(1);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS, slots.saturating_mul(2))
            .map_max_entries(STATE, slots)
            .load(OBJECT)?;
        let state = match ebpf.map(STATE) {
            Some(Map::Array(data)) => SharedWords::map(data.fd().as_fd(), slots as usize * WORDS)?,
            _ => return Err(UdpKernelError::Missing(STATE)),
        };
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or(UdpKernelError::Missing(PROGRAM))?
            .try_into()?;
        program.load()?;
        let xdp: &mut Xdp = ebpf
            .program_mut(PROGRAM_XDP)
            .ok_or(UdpKernelError::Missing(PROGRAM_XDP))?
            .try_into()?;
        xdp.load()?;
        Ok(Program {
            ebpf,
            interfaces: Vec::new(),
            xdp: Vec::new(),
            refused: Vec::new(),
            slots,
            state: Arc::new(state),
        })
    }

    /// The names of the interfaces it is attached to (`name (xdp)` where it runs at
    /// XDP).
    pub fn interfaces(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .map(|(_, n, hook)| match hook {
                Hook::Tc(_) => n.clone(),
                Hook::Xdp(_) => format!("{n} (xdp)"),
            })
            .collect()
    }

    /// Attaches to the interfaces that appeared since the last look (a container's
    /// veth, a VLAN made later) and lets go of those that went. Returns each new
    /// interface's name and whether it took the program; one that refused (ringway
    /// gave up its privileges since start) is not tried again.
    pub fn attach_new(&mut self) -> Vec<(String, Result<Option<XdpOutcome>, UdpKernelError>)> {
        let Ok(now) = crate::sys::ifaces::list() else {
            return Vec::new();
        };
        let gone: Vec<usize> = (0..self.interfaces.len())
            .filter(|&i| !now.iter().any(|(index, _)| *index == self.interfaces[i].0))
            .collect();
        for i in gone.into_iter().rev() {
            let (_, _, hook) = self.interfaces.swap_remove(i);
            // Its link's descriptor closes (the interface, and the link with it, is gone).
            let _ = self.detach(hook);
        }
        self.refused
            .retain(|r| now.iter().any(|(index, _)| index == r));
        let mut out = Vec::new();
        for (index, name) in now {
            if self.interfaces.iter().any(|(i, _, _)| *i == index) || self.refused.contains(&index)
            {
                continue;
            }
            let xdp = self.xdp.contains(&name);
            match attach(&mut self.ebpf, &name, xdp) {
                Ok((hook, outcome)) => {
                    self.interfaces.push((index, name.clone(), hook));
                    out.push((name, Ok(outcome)));
                }
                Err(e) => {
                    self.refused.push(index);
                    out.push((name, Err(e)));
                }
            }
        }
        out
    }

    fn detach(&mut self, hook: Hook) -> Result<(), ProgramError> {
        match hook {
            Hook::Tc(link) => {
                let program: Option<&mut SchedClassifier> = self
                    .ebpf
                    .program_mut(PROGRAM)
                    .and_then(|p| p.try_into().ok());
                program.map_or(Ok(()), |p| p.detach(link))
            }
            Hook::Xdp(link) => {
                let program: Option<&mut Xdp> = self
                    .ebpf
                    .program_mut(PROGRAM_XDP)
                    .and_then(|p| p.try_into().ok());
                program.map_or(Ok(()), |p| p.detach(link))
            }
        }
    }

    /// Worker `worker`'s (of `workers`) handle: its own descriptor on the flow map,
    /// the shared counts, and its own share of the slots.
    pub fn flows(&mut self, worker: usize, workers: usize) -> Result<Flows, UdpKernelError> {
        let fd = match self.ebpf.map(FLOWS) {
            Some(Map::HashMap(data)) => data.fd().as_fd().try_clone_to_owned()?,
            _ => return Err(UdpKernelError::Missing(FLOWS)),
        };
        let map = HashMap::try_from(Map::HashMap(MapData::from_fd(fd)?))?;
        let workers = workers.max(1) as u32;
        let share = self.slots / workers;
        let first = share * worker as u32;
        Ok(Flows {
            map,
            state: Arc::clone(&self.state),
            free: (first..first + share).collect(),
        })
    }
}

/// A worker's handle on the program's maps.
pub struct Flows {
    map: HashMap<MapData, Key, Value>,
    state: Arc<SharedWords>,
    /// Its slots not in use, oldest freed first: a slot is used again as late as
    /// possible, so a datagram the program matched to a flow just removed (on another
    /// CPU, in the instant of the removal) cannot count against the flow that follows.
    free: VecDeque<u32>,
}

impl fmt::Debug for Flows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flows")
            .field("free", &self.free.len())
            .finish()
    }
}

impl Flows {
    /// Puts a flow in the kernel's hands: `sent` datagrams went to its backend and
    /// `replies` came back so far, and it ends after `expect` replies per datagram (0:
    /// never). `None` when it cannot be (no slot left, a family the program does not
    /// rewrite between, the map refused): the flow stays in userspace.
    pub fn install(
        &mut self,
        path: Path,
        (sent, replies, expect): (u64, u64, u64),
    ) -> Option<Installed> {
        let (keys, values) = entry::entries(&path)?;
        let slot = self.free.pop_front()?;
        entry::reset(&self.state, slot, (sent, replies, expect));
        let values = values.map(|v| entry::with_slot(v, slot));
        for (i, (k, v)) in keys.iter().zip(values.iter()).enumerate() {
            if let Err(e) = self.map.insert(*k, *v, 0) {
                tracing::debug!("udp kernel path: cannot add a flow: {e}");
                for k in &keys[..i] {
                    let _ = self.map.remove(k);
                }
                self.free.push_back(slot);
                return None;
            }
        }
        Some(Installed::new(slot, keys))
    }

    /// What the kernel forwarded for `flow` since the last call (and its last activity).
    pub fn take(&self, flow: &mut Installed) -> Counts {
        flow.take(&self.state)
    }

    /// Whether the kernel forwarded a reply of `flow`.
    pub fn answered(&self, flow: &Installed) -> bool {
        flow.answered(&self.state)
    }

    /// Tells the kernel ringway forwarded `sent` datagrams and `replies` replies of
    /// `flow` itself (its udp_responses count stays right).
    pub fn add_own(&self, flow: &Installed, sent: u64, replies: u64) {
        entry::add_own(&self.state, flow.slot(), sent, replies);
    }

    /// Stops the kernel forwarding `flow`'s datagrams (they go up to ringway), and
    /// returns what it forwarded since the last look: once this returns, no datagram
    /// of it is forwarded that these counts do not show.
    pub fn pause(&self, flow: &mut Installed) -> Counts {
        entry::pause(&self.state, flow.slot());
        flow.take(&self.state)
    }

    /// Lets the kernel forward `flow` again.
    pub fn resume(&self, flow: &Installed) {
        entry::resume(&self.state, flow.slot());
    }

    /// Of the datagrams `flow` was installed as sending, `n` did not go.
    pub fn not_sent(&self, flow: &Installed, n: u64) {
        entry::not_sent(&self.state, flow.slot(), n);
    }

    /// Takes the flow out of the kernel's hands; its last counts are returned. Paused
    /// first: a datagram the program matched to it before its entries went is either
    /// in these counts or goes up, so nothing it forwards is missing from them.
    pub fn remove(&mut self, mut flow: Installed) -> Counts {
        entry::pause(&self.state, flow.slot());
        for k in flow.keys() {
            let _ = self.map.remove(k);
        }
        let counts = flow.take(&self.state);
        self.free.push_back(flow.slot());
        counts
    }
}

/// The program itself, run on datagrams made here (`BPF_PROG_TEST_RUN`: nothing is
/// attached, nothing leaves the test): what it rewrites, what it counts, and what it
/// sends up to ringway.
#[cfg(test)]
mod tests {
    use super::entry::fold;
    use super::*;
    use aya::programs::{TestRun, TestRunOptions};
    use std::net::SocketAddr;

    /// `TC_ACT_OK` (to this host, on loopback) and `TC_ACT_UNSPEC` (up, unchanged).
    const FORWARDED: u32 = 0;
    const UP: u32 = u32::MAX;

    const CLIENT: &str = "127.0.0.10:5000";
    const LISTENER: &str = "127.0.0.1:53";
    const UPSTREAM: &str = "127.0.0.1:40000";
    const BACKEND: &str = "127.0.0.2:5353";

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn sum16(bytes: &[u8]) -> u32 {
        bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    }

    /// An Ethernet frame with an IPv4 UDP datagram `from` -> `to`, checksums right.
    fn datagram(from: &str, to: &str, payload: &[u8]) -> Vec<u8> {
        let (SocketAddr::V4(from), SocketAddr::V4(to)) = (a(from), a(to)) else {
            unreachable!()
        };
        let udp_len = 8 + payload.len() as u16;
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
        ip.extend_from_slice(&from.ip().octets());
        ip.extend_from_slice(&to.ip().octets());
        let check = !fold(sum16(&ip));
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        let mut udp = Vec::new();
        udp.extend_from_slice(&from.port().to_be_bytes());
        udp.extend_from_slice(&to.port().to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let check = !fold(udp_sum(&ip, &udp));
        udp[6..8].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&udp);
        f
    }

    /// The UDP checksum's sum over the pseudo-header and `udp`.
    fn udp_sum(ip: &[u8], udp: &[u8]) -> u32 {
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        sum16(&pseudo) + sum16(udp)
    }

    /// The addresses a frame carries, and whether both checksums hold.
    fn read(frame: &[u8]) -> (SocketAddr, SocketAddr, bool) {
        let (ip, udp) = (&frame[14..34], &frame[34..]);
        let at = |o: usize, p: usize| {
            SocketAddr::from((
                [ip[o], ip[o + 1], ip[o + 2], ip[o + 3]],
                u16::from_be_bytes([udp[p], udp[p + 1]]),
            ))
        };
        let sound = fold(sum16(ip)) == 0xffff && fold(udp_sum(ip, udp)) == 0xffff;
        (at(12, 0), at(16, 2), sound)
    }

    /// Runs the program on `frame`: its verdict and the frame as it left it.
    fn run(p: &Program, frame: &[u8]) -> (u32, Vec<u8>) {
        let program: &SchedClassifier = p.ebpf.program(PROGRAM).unwrap().try_into().unwrap();
        let mut out = vec![0u8; frame.len() + 64];
        let r = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .unwrap();
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    #[test]
    #[ignore = "needs root (BPF)"]
    fn a_flow_is_rewritten_both_ways_and_a_paused_flow_goes_up_uncounted() {
        let mut p = Program::load_detached(4).unwrap();
        let mut flows = p.flows(0, 1).unwrap();
        let path = Path::new(a(CLIENT), a(LISTENER), a(UPSTREAM), a(BACKEND));
        // udp_responses = 1, nothing sent or answered yet.
        let mut f = flows.install(path, (0, 0, 1)).unwrap();
        let query = datagram(CLIENT, LISTENER, b"q1");

        let (verdict, out) = run(&p, &query);
        assert_eq!(verdict, FORWARDED);
        assert_eq!(read(&out), (a(UPSTREAM), a(BACKEND), true));
        assert_eq!(flows.take(&mut f).sent(), (1, 2));

        // Paused: the same query goes up unchanged, and is not counted.
        assert_eq!(flows.pause(&mut f).sent(), (0, 0));
        let (verdict, out) = run(&p, &query);
        assert_eq!((verdict, out), (UP, query.clone()));
        assert_eq!(flows.take(&mut f).sent(), (0, 0));

        flows.resume(&f);
        assert_eq!(run(&p, &query).0, FORWARDED);
        assert_eq!(flows.take(&mut f).sent(), (1, 2));

        // A reply it would forward goes up too while paused.
        let reply = datagram(BACKEND, UPSTREAM, b"r1");
        flows.pause(&mut f);
        assert_eq!(run(&p, &reply), (UP, reply.clone()));
        flows.resume(&f);

        // Two queries sent: the first reply is forwarded to the address the client
        // sent to; the second would complete the flow, so it goes up to ringway.
        let (verdict, out) = run(&p, &reply);
        assert_eq!(verdict, FORWARDED);
        assert_eq!(read(&out), (a(LISTENER), a(CLIENT), true));
        assert_eq!(run(&p, &reply).0, UP);
        assert_eq!(flows.take(&mut f).replies(), (1, 2));

        // Removed: nothing of it is touched.
        flows.remove(f);
        assert_eq!(run(&p, &query), (UP, query.clone()));
    }
}
