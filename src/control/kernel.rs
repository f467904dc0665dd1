//! Kernel forwarding (`forward = "kernel"`): whether this process has it, decided
//! once at start, while it still has the privileges to load a BPF program.

use crate::config::{Config, ForwardMode, Protocol};
use crate::dataplane::kernel::{KernelError, Program};
use crate::dataplane::udp_kernel::XdpOutcome;

/// The first TCP listener that asks for kernel forwarding.
pub fn demanded_by(config: &Config) -> Option<&str> {
    config
        .listeners
        .iter()
        .find(|l| l.protocol == Protocol::Tcp && l.forward == ForwardMode::Kernel)
        .map(|l| l.name.as_str())
}

/// Loads the program when the config has a TCP listener (so a reload can turn kernel
/// forwarding on later), with room for `sessions` sessions. An error only when a
/// listener demands it; otherwise its absence is logged once.
pub fn load(config: &Config, sessions: u32) -> Result<Option<Program>, (String, Box<KernelError>)> {
    if !config.listeners.iter().any(|l| l.protocol == Protocol::Tcp) {
        return Ok(None);
    }
    match Program::load(sessions) {
        Ok(p) => {
            tracing::debug!("kernel forwarding available (room for {sessions} sessions)");
            Ok(Some(p))
        }
        Err(e) => match demanded_by(config) {
            Some(name) => Err((name.to_string(), Box::new(e))),
            None => {
                tracing::info!(
                    "kernel forwarding unavailable ({e}): TCP listeners forward in ringway; forward = \"kernel\" needs CAP_BPF and CAP_NET_ADMIN at start"
                );
                Ok(None)
            }
        },
    }
}

/// The UDP listeners that ask for the kernel path.
pub fn udp_demanding(config: &Config) -> Vec<&str> {
    config
        .listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Udp && l.forward == ForwardMode::Kernel)
        .map(|l| l.name.as_str())
        .collect()
}

/// Loads the UDP kernel path when a UDP listener asks for it, with room for `flows`
/// flows, and gives each of `workers` its handle. Where it cannot load, those
/// listeners forward in ringway: one warning says so and why.
pub fn load_udp(
    config: &Config,
    flows: u32,
) -> Option<(
    crate::dataplane::udp_kernel::Program,
    Vec<crate::dataplane::udp_kernel::Flows>,
)> {
    let names = udp_demanding(config);
    if names.is_empty() {
        return None;
    }
    let loaded = crate::dataplane::udp_kernel::Program::load(flows, &config.udp_kernel_xdp)
        .and_then(|(mut p, xdp)| {
            let handles = (0..config.workers)
                .map(|w| p.flows(w, config.workers))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((p, handles, xdp))
        });
    match loaded {
        Ok((p, handles, xdp)) => {
            xdp_said(&xdp, &config.udp_kernel_xdp);
            tracing::info!(
                listeners = %names.join(", "),
                interfaces = %p.interfaces().join(", "),
                "UDP flows forwarded by the kernel once established (room for {flows} flows)"
            );
            Some((p, handles))
        }
        Err(e) => {
            tracing::warn!(
                listeners = %names.join(", "),
                "forward = \"kernel\" unavailable for UDP ({e}): these listeners forward in ringway; the kernel path needs CAP_BPF and CAP_NET_ADMIN at start"
            );
            None
        }
    }
}

/// The UDP kernel program, kept by the control task for the life of the process
/// (dropping it detaches it). Once a second it looks for interfaces that appeared
/// since start (a container's veth, a VLAN made later) and attaches to them too.
#[derive(Debug)]
pub struct UdpProgram {
    program: crate::dataplane::udp_kernel::Program,
    next_look: std::time::Instant,
    /// An interface refused it: later refusals are logged at debug level (a host
    /// where ringway gave up its privileges would warn at every new container).
    warned: bool,
}

impl UdpProgram {
    /// How often it looks for new interfaces (one netlink dump).
    const LOOK: std::time::Duration = std::time::Duration::from_secs(1);

    pub fn new(program: crate::dataplane::udp_kernel::Program) -> UdpProgram {
        UdpProgram {
            program,
            next_look: std::time::Instant::now() + Self::LOOK,
            warned: false,
        }
    }

    /// Attaches to the interfaces that appeared, if a look is due; logs each.
    pub fn look(&mut self, now: std::time::Instant) {
        if now < self.next_look {
            return;
        }
        self.next_look = now + Self::LOOK;
        for (name, attached) in self.program.attach_new() {
            match attached {
                Ok(xdp) => {
                    let at = match xdp {
                        Some(XdpOutcome::Attached) => "XDP",
                        _ => "tc ingress",
                    };
                    tracing::info!(
                        interface = %name,
                        "UDP kernel path: attached to a new interface, at {at}"
                    );
                    if let Some(refused @ XdpOutcome::Refused(_)) = &xdp {
                        xdp_outcome(&name, refused);
                    }
                }
                Err(e) if self.warned => tracing::debug!(
                    interface = %name,
                    "UDP kernel path: cannot attach to a new interface ({e})"
                ),
                Err(e) => {
                    self.warned = true;
                    tracing::warn!(
                        interface = %name,
                        "UDP kernel path: cannot attach to a new interface ({e}): flows arriving there are forwarded in ringway (further refusals are logged at debug level)"
                    );
                }
            }
        }
    }
}

/// Logs what interface `name`, named in `udp_kernel_xdp`, got: XDP, or tc ingress and
/// why.
fn xdp_outcome(name: &str, outcome: &XdpOutcome) {
    match outcome {
        XdpOutcome::Attached => {
            tracing::info!(interface = %name, "UDP kernel path at XDP (native mode)")
        }
        XdpOutcome::Refused(e) => tracing::warn!(
            interface = %name,
            "udp_kernel_xdp: {e}: the kernel path runs at tc ingress there"
        ),
    }
}

/// Logs what the interfaces named in `udp_kernel_xdp` (`asked`) got at start; a name
/// with no interface yet is said too (it gets XDP when it appears).
fn xdp_said(got: &[(String, XdpOutcome)], asked: &[String]) {
    for (name, outcome) in got {
        xdp_outcome(name, outcome);
    }
    for name in asked.iter().filter(|n| !got.iter().any(|(g, _)| g == *n)) {
        tracing::info!(interface = %name, "udp_kernel_xdp: no such interface yet; it gets XDP when it appears");
    }
}
