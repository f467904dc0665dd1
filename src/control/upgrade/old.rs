//! The running process's side: start the new binary, offer it the sockets, wait for
//! its answer. Blocking (it runs off the control task).

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::mpsc::Receiver;

use super::wire::{self, Answer, Batch, Kind, Offer, Offered, Taken, VERSION};
use super::{UpgradeError, DEADLINE, ENV};
use crate::dataplane::handoff::{Exported, Handed, State as Item};
use crate::sys::fdpass;

/// How the binary was started, and the descriptors of `/metrics` and the admin API
/// (copies: the HTTP thread owns the originals).
#[derive(Debug)]
pub struct Kit {
    exe: PathBuf,
    args: Vec<OsString>,
    http: Vec<(Offered, OwnedFd)>,
    /// An upgrade is under way.
    pub busy: bool,
    /// Upgrades that succeeded, this process's included.
    pub succeeded: u64,
    /// Upgrades that failed here.
    pub failed: u64,
    /// How long the last hand-off took (the new process's start to its answer).
    pub last: Option<Duration>,
    /// Where a successful upgrade is announced (the signal task, which then drains).
    pub stop: Option<tokio::sync::mpsc::UnboundedSender<Handover>>,
    /// What the processes before this one counted (`/metrics` goes on from there).
    pub carried: Option<std::sync::Arc<crate::metrics::carry::Offsets>>,
    /// After an upgrade: the channel to the new process, for the sessions.
    pub channel: Option<OwnedFd>,
    /// The worker the next adopted session goes to.
    pub next_worker: usize,
    /// Started by an upgrade: the UDP listeners are read (every flow has come).
    pub udp_started: bool,
}

/// A successful upgrade, announced to the signal task: the new process's pid, and
/// where to say that this one no longer accepts on `/metrics` and the admin API (the
/// new process answers every request made after that).
pub type Handover = (u32, tokio::sync::oneshot::Sender<()>);

impl Kit {
    /// The binary at the path this process was started from, with its arguments;
    /// `succeeded`: upgrades before this process.
    pub fn new(succeeded: u64) -> Kit {
        let mut args = std::env::args_os();
        let argv0 = args.next().map(PathBuf::from);
        // The path as started (a binary replaced there since is the one started), else
        // what the kernel says this one is.
        let exe = match argv0 {
            Some(p) if p.components().count() > 1 => p,
            _ => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ringway")),
        };
        Kit {
            exe,
            args: args.collect(),
            http: Vec::new(),
            busy: false,
            succeeded,
            failed: 0,
            last: None,
            stop: None,
            carried: None,
            channel: None,
            next_worker: 0,
            udp_started: false,
        }
    }

    /// Keeps a copy of an HTTP endpoint's listening socket for the next upgrade.
    pub fn keep_http(&mut self, kind: Kind, addr: String, fd: BorrowedFd<'_>) {
        match fd.try_clone_to_owned() {
            Ok(copy) => self.http.push((
                Offered {
                    kind,
                    name: String::new(),
                    addr,
                    count: 1,
                },
                copy,
            )),
            Err(e) => tracing::warn!(
                "cannot keep {addr} for upgrades ({e}): an upgrade will bind it again"
            ),
        }
    }

    /// The offer of `listeners` (kind, name, address, their sockets) and the HTTP
    /// endpoints, with copies of every descriptor in the offer's order.
    pub fn offer<'a>(
        &self,
        listeners: impl Iterator<Item = (Kind, &'a str, String, &'a [OwnedFd])>,
    ) -> std::io::Result<(Offer, Vec<OwnedFd>)> {
        let mut sockets = Vec::new();
        let mut fds = Vec::new();
        for (kind, name, addr, owned) in listeners {
            sockets.push(Offered {
                kind,
                name: name.to_string(),
                addr,
                count: owned.len(),
            });
            for fd in owned {
                fds.push(fd.try_clone()?);
            }
        }
        for (o, fd) in &self.http {
            sockets.push(o.clone());
            fds.push(fd.try_clone()?);
        }
        let offer = Offer {
            version: VERSION,
            pid: std::process::id(),
            sockets,
            upgrades: self.succeeded,
            state_bytes: 0,
        };
        Ok((offer, fds))
    }

    /// Closes the copies of the HTTP sockets, and refuses upgrades from now on (the
    /// process drains).
    pub fn release(&mut self) {
        self.http.clear();
        self.busy = true;
    }

    /// What [`hand_over`] needs to start the new binary.
    pub fn command(&self) -> (PathBuf, Vec<OsString>) {
        (self.exe.clone(), self.args.clone())
    }
}

/// Starts `exe` with `args`, offers it `offer` with `fds` and `state` (the carried
/// state's bytes, as many as the offer says), and waits for its answer: its process
/// id once it serves, or why not. A new process that failed is waited for (or
/// killed, past the deadline): none is left behind.
pub fn hand_over(
    (exe, args): (PathBuf, Vec<OsString>),
    offer: &Offer,
    fds: &[OwnedFd],
    state: &[u8],
) -> Result<(u32, Duration, OwnedFd), UpgradeError> {
    let started = Instant::now();
    let (ours, theirs) = fdpass::pair()?;
    fdpass::inheritable(theirs.as_fd())?;
    let child = Command::new(&exe)
        .args(&args)
        .env(ENV, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| UpgradeError::Spawn {
            exe: exe.display().to_string(),
            source,
        })?;
    drop(theirs);
    let mut child = Reaped(Some(child));
    let sent = wire::send(ours.as_fd(), offer).and_then(|()| {
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        wire::send_fds(ours.as_fd(), &borrowed)?;
        wire::send_bytes(ours.as_fd(), state)
    });
    if let Err(e) = sent {
        // It died before reading (its own error, if it printed one, is in the log).
        return Err(child.wait().map_or(e, UpgradeError::Exited));
    }
    socket2::SockRef::from(&ours).set_read_timeout(Some(Duration::from_millis(100)))?;
    loop {
        match wire::recv_small::<Answer>(ours.as_fd()) {
            Ok(Some(Answer::Ready { pid })) => {
                child.keep();
                return Ok((pid, started.elapsed(), ours));
            }
            Ok(Some(Answer::Failed { why })) => {
                child.wait();
                return Err(UpgradeError::Refused(why));
            }
            // It closed its end (it exited, or is exiting): its exit says why.
            Ok(None) => {
                return Err(child
                    .wait()
                    .map_or(UpgradeError::Message("closed".into()), UpgradeError::Exited))
            }
            Err(UpgradeError::Channel(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(child
                    .wait()
                    .map_or(UpgradeError::Channel(e), UpgradeError::Exited))
            }
            Err(UpgradeError::Channel(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if let Some(status) = child.exited() {
                    return Err(UpgradeError::Exited(status));
                }
                if started.elapsed() >= DEADLINE {
                    return Err(UpgradeError::Timeout);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The new process until it takes over: killed and waited for when dropped.
struct Reaped(Option<Child>);

impl Reaped {
    /// Its exit status, if it has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.0.as_mut()?.try_wait().ok()??;
        self.0 = None;
        Some(status)
    }

    /// Waits for it to exit (a refusal is followed by its exit).
    fn wait(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.0.take()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// It serves: it outlives this process.
    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sessions handed over per message (with up to six descriptors each: well under
/// [`fdpass::MAX_FDS`] a message, and few in flight at once).
const BATCH: usize = 32;

/// ... and at most about this many bytes of state (bytes held in memory count).
const BATCH_BYTES: usize = 64 << 10;

/// After the new process took over: sends it every session and flow the draining
/// workers export (`handed`), a batch at a time, each answered before the next (so
/// few descriptors are ever in flight), until every worker has stopped; then closes
/// the channel, which tells the new process there are no more. Once each of the
/// `workers` has sent its flows, the batch says so (the new process then reads its
/// UDP listeners). What went, and how long from the first to the last.
pub fn send_sessions(channel: OwnedFd, handed: Receiver<Handed>, workers: usize) -> Sent {
    let mut sent = Sent::default();
    let mut started = None;
    let mut flows_done = 0;
    let mut told = false;
    let _ = socket2::SockRef::from(&channel).set_read_timeout(Some(DEADLINE));
    let mut next = handed.recv().ok();
    while let Some(first) = next.take() {
        let mut batch: Vec<Exported> = Vec::new();
        let mut bytes = 0;
        let mut h = Some(first);
        let since = *started.get_or_insert_with(Instant::now);
        // A message must fit the socket's send buffer (about 200 KiB by default).
        while let Some(one) = h.take() {
            match one {
                Handed::One(e) => {
                    bytes += 512 + e.state.held();
                    batch.push(*e);
                }
                Handed::FlowsDone => flows_done += 1,
            }
            if batch.len() < BATCH && bytes < BATCH_BYTES {
                h = handed.try_recv().ok();
            }
        }
        let done = flows_done >= workers && !told;
        if batch.is_empty() && !done {
            next = handed.recv().ok();
            continue;
        }
        told |= done;
        let n = batch.len();
        let mut counts = Sent::default();
        for e in &batch {
            match &e.state {
                Item::Session(s) => {
                    counts.sessions += 1;
                    counts.pipes += usize::from(s.up.pipe) + usize::from(s.down.pipe);
                }
                Item::Flow(_) => counts.flows += 1,
            }
        }
        let (items, fds): (Vec<_>, Vec<_>) = batch.into_iter().map(|e| (e.state, e.fds)).unzip();
        let fds: Vec<OwnedFd> = fds.into_iter().flatten().collect();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let result = wire::send(
            channel.as_fd(),
            &Batch {
                items,
                flows_done: done,
            },
        )
        .and_then(|()| wire::send_fds(channel.as_fd(), &borrowed))
        .and_then(|()| match wire::recv_small::<Taken>(channel.as_fd())? {
            Some(t) if t.items == n => Ok(()),
            other => Err(UpgradeError::Message(format!(
                "{n} sessions and flows sent, answer {other:?}"
            ))),
        });
        if let Err(e) = result {
            tracing::error!(
                "handing sessions over failed after {} session(s) and {} flow(s): {e}; the rest are closed",
                sent.sessions,
                sent.flows
            );
            break;
        }
        sent.sessions += counts.sessions;
        sent.flows += counts.flows;
        sent.pipes += counts.pipes;
        sent.took = since.elapsed();
        next = handed.recv().ok();
    }
    sent
}

/// What [`send_sessions`] handed over.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// Established TCP sessions.
    pub sessions: usize,
    /// UDP flows.
    pub flows: usize,
    /// Pipes that went with the sessions (with the bytes in them).
    pub pipes: usize,
    /// From the first exported to the last taken (no session waited longer).
    pub took: Duration,
}
