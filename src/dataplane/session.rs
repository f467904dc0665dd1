//! A proxied TCP connection: connecting to a backend (with retries), then forwarding.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Interest;

use super::accept::reached;
use super::forward::{End, Half, Ready};
use super::stats::BackendStats;
use super::token::{self, Side};
use super::worker::{Timer, Worker};
use super::Routing;
use crate::proxy_protocol::{self, Version};

/// Source reads one direction may do per wake-up before others get a turn.
const PUMP_BUDGET: u32 = 16;

/// A session between a client and a backend.
#[derive(Debug)]
pub(super) struct Session {
    /// Unique within the worker (slab keys are reused; timers check this).
    pub id: u64,
    pub listener: usize,
    pub client: TcpStream,
    pub client_ready: Ready,
    pub backend: Option<TcpStream>,
    pub backend_ready: Ready,
    /// Present until a backend connection is established (boxed: an established
    /// session, the common idle case, carries 8 bytes for it instead of the whole).
    pub connecting: Option<Box<Connecting>>,
    /// Client -> backend.
    pub up: Half,
    /// Backend -> client.
    pub down: Half,
    pub last_active: Instant,
    /// The backend forwarded to (set once connected): its counters, and its identity
    /// for `on_down = "close"`.
    pub target: Option<Arc<BackendStats>>,
}

/// Connect-phase state.
#[derive(Debug)]
pub(super) struct Connecting {
    pub routing: Arc<Routing>,
    pub key: u64,
    /// The client: the peer, or what a received PROXY header says.
    pub client_addr: SocketAddr,
    /// The address the client reached, when a received PROXY header said it.
    pub local_addr: Option<SocketAddr>,
    /// 0 for the ring's pick, then 1..=retries.
    pub attempt: u32,
    /// `accept_proxy`: no backend is chosen before the client's PROXY header is read.
    pub awaiting_header: bool,
}

/// The `attempt` of a timer that bounds the wait for a PROXY header.
pub(super) const HEADER_TIMER: u32 = u32::MAX;

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Close {
    /// Orderly: both sockets closed normally.
    Normal,
    /// Abort: send a reset to this side (the other one failed or was reset).
    Reset(Side),
}

impl Worker {
    /// Starts a session for an admitted client: connects to the backend for `key`, or,
    /// without a key (`accept_proxy`), first waits for the client's PROXY header.
    pub(super) fn open_session(
        &mut self,
        li: usize,
        mut stream: TcpStream,
        peer: SocketAddr,
        key: Option<u64>,
        routing: Arc<Routing>,
    ) {
        let mode = routing.params.forward;
        let entry = self.sessions.vacant_entry();
        let skey = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token::session(skey, Side::Client),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("cannot register client socket: {e}");
            self.listeners[li].shared.release();
            return;
        }
        self.listeners[li].open += 1;
        self.next_id += 1;
        let header_deadline = self.now + routing.params.connect_timeout;
        entry.insert(Session {
            id: self.next_id,
            listener: li,
            client: stream,
            client_ready: Ready::default(),
            backend: None,
            backend_ready: Ready::default(),
            connecting: Some(Box::new(Connecting {
                routing,
                key: key.unwrap_or_default(),
                client_addr: peer,
                local_addr: None,
                attempt: 0,
                awaiting_header: key.is_none(),
            })),
            up: Half::new(mode),
            down: Half::new(mode),
            last_active: self.now,
            target: None,
        });
        if key.is_some() {
            self.start_connect(skey);
        } else {
            self.timers.push(std::cmp::Reverse(Timer {
                deadline: header_deadline,
                session: skey,
                id: self.next_id,
                attempt: HEADER_TIMER,
            }));
            // The header often arrives with the handshake: no need to wait for epoll.
            self.read_header(skey);
        }
    }

    /// Connects to the candidate for the current attempt, skipping candidates whose
    /// connect fails at once; closes the session when no attempt is left.
    pub(super) fn start_connect(&mut self, skey: usize) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        let shared = &self.listeners[s.listener].shared;
        let Some(c) = s.connecting.as_mut() else {
            return;
        };
        let routing = &c.routing;
        let params = &routing.params;
        loop {
            let candidate = if c.attempt <= params.retries {
                routing.snapshot.attempt(c.key, c.attempt)
            } else {
                None
            };
            let Some(bi) = candidate else {
                shared
                    .stats
                    .shard(self.index)
                    .rejected_backends_failed
                    .inc();
                if let Some(suppressed) = self.warn_limit.allow(self.now) {
                    tracing::warn!(
                        listener = %shared.name,
                        client = %c.client_addr,
                        attempts = c.attempt,
                        suppressed,
                        "every backend attempt failed: resetting client"
                    );
                }
                self.close(skey, Close::Reset(Side::Client));
                return;
            };
            let backend = &routing.snapshot.backends()[bi];
            match TcpStream::connect(backend.addr) {
                Ok(mut stream) => {
                    let registered = self.poll.registry().register(
                        &mut stream,
                        token::session(skey, Side::Backend),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if registered.is_ok() {
                        let deadline = self.now + params.connect_timeout;
                        self.timers.push(std::cmp::Reverse(Timer {
                            deadline,
                            session: skey,
                            id: s.id,
                            attempt: c.attempt,
                        }));
                        s.backend = Some(stream);
                        s.backend_ready = Ready::default();
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(listener = %shared.name, backend = %backend.id, "connect failed at once: {e}");
                    shared.report_failure(routing, bi, &e);
                }
            }
            routing.backends[bi]
                .counters
                .shard(self.index)
                .connect_errors
                .inc();
            c.attempt += 1;
        }
    }

    /// The backend socket of a connecting session reported readiness (`writable`: the
    /// event said writable with no error or hang-up, which means connected), or the
    /// connect timer fired (`timed_out`): find out whether the connect succeeded.
    pub(super) fn check_connect(&mut self, skey: usize, writable: bool, timed_out: bool) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        let Some(stream) = s.backend.as_ref() else {
            return;
        };
        let mut outcome: io::Result<bool> = if timed_out {
            Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        } else if writable {
            // Writable without error or hang-up flags: connect(2) completed.
            Ok(true)
        } else {
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
                    Err(e) => Err(e),
                },
            }
        };
        if let (Ok(true), Some(c)) = (&outcome, &s.connecting) {
            if let Some(version) = c.routing.params.send_proxy {
                // A received header already said where the client went.
                let local = c.local_addr.unwrap_or_else(|| {
                    reached(self.listeners[s.listener].shared.listen, &s.client)
                });
                outcome = send_proxy_header(stream, version, c.client_addr, local);
            }
        }
        match outcome {
            Ok(false) => {}
            Ok(true) => {
                let _ = stream.set_nodelay(true);
                if let Some(c) = s.connecting.take() {
                    if let Some(bi) = c.routing.snapshot.attempt(c.key, c.attempt) {
                        let target = Arc::clone(&c.routing.backends[bi]);
                        let counters = target.counters.shard(self.index);
                        counters.connections.inc();
                        counters.active.add(1);
                        s.target = Some(target);
                    }
                }
                s.backend_ready.write = true;
                s.last_active = self.now;
                self.listeners[s.listener]
                    .shared
                    .stats
                    .shard(self.index)
                    .connections
                    .inc();
                self.drive(skey);
            }
            Err(e) => {
                let shared = &self.listeners[s.listener].shared;
                if let Some(c) = s.connecting.as_mut() {
                    let bi = c.routing.snapshot.attempt(c.key, c.attempt);
                    let id = bi
                        .map(|i| c.routing.snapshot.backends()[i].id.as_str())
                        .unwrap_or("?");
                    tracing::debug!(listener = %shared.name, backend = %id, attempt = c.attempt, "connect failed: {e}");
                    if let Some(bi) = bi {
                        c.routing.backends[bi]
                            .counters
                            .shard(self.index)
                            .connect_errors
                            .inc();
                        shared.report_failure(&c.routing, bi, &e);
                    }
                    c.attempt += 1;
                }
                // Dropping the stream closes it and removes it from epoll.
                s.backend = None;
                self.start_connect(skey);
            }
        }
    }

    /// Moves bytes both ways as far as readiness allows; closes the session when both
    /// directions are done or one side failed.
    pub(super) fn drive(&mut self, skey: usize) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        if s.connecting.is_some() {
            return;
        }
        let Session {
            client,
            client_ready,
            backend,
            backend_ready,
            up,
            down,
            last_active,
            target,
            ..
        } = s;
        let Some(backend) = backend.as_ref() else {
            return;
        };
        let before = (up.bytes, down.bytes);
        let scratch = &mut self.scratch;
        let a = up.pump(
            client,
            client_ready,
            backend,
            backend_ready,
            scratch,
            PUMP_BUDGET,
            down.done(),
        );
        let b = a.as_ref().ok().map(|_| {
            let up_done = up.done();
            down.pump(
                backend,
                backend_ready,
                client,
                client_ready,
                scratch,
                PUMP_BUDGET,
                up_done,
            )
        });
        if let Some(t) = target.as_ref() {
            let counters = t.counters.shard(self.index);
            if up.bytes != before.0 {
                counters.sent_bytes.add(up.bytes - before.0);
            }
            if down.bytes != before.1 {
                counters.received_bytes.add(down.bytes - before.1);
            }
        }
        let close = match (&a, &b) {
            (Err(f), _) => Some(failure_close(f.end, Side::Client)),
            (_, Some(Err(f))) => Some(failure_close(f.end, Side::Backend)),
            _ => None,
        };
        if let Some(how) = close {
            self.close(skey, how);
            return;
        }
        let (a, b) = (
            a.unwrap_or_default(),
            b.and_then(Result::ok).unwrap_or_default(),
        );
        if a.moved || b.moved {
            *last_active = self.now;
        }
        if up.done() && down.done() {
            self.close(skey, Close::Normal);
        } else if a.more || b.more {
            self.requeue_session(skey);
        }
    }

    /// Ends a session: closes both sockets (resetting one if asked), returns pipes,
    /// releases the listener's connection slot.
    pub(super) fn close(&mut self, skey: usize, how: Close) {
        if !self.sessions.contains(skey) {
            return;
        }
        let mut s = self.sessions.remove(skey);
        s.up.release(&mut self.scratch.pool);
        s.down.release(&mut self.scratch.pool);
        if let Close::Reset(side) = how {
            let target = match side {
                Side::Client => Some(&s.client),
                Side::Backend => s.backend.as_ref(),
            };
            if let Some(t) = target {
                let _ = socket2::SockRef::from(t).set_linger(Some(std::time::Duration::ZERO));
            }
        }
        if let Some(t) = &s.target {
            t.counters.shard(self.index).active.add(-1);
        }
        self.listeners[s.listener].shared.release();
        self.slot_closed(s.listener);
    }
}

/// Writes the PROXY protocol header to a backend that just connected, ahead of any
/// client byte. Its send buffer is empty, so the few bytes go in one write; a short
/// write or an error fails this connect (the next backend is tried) rather than send
/// a torn header.
fn send_proxy_header(
    backend: &TcpStream,
    version: Version,
    client: SocketAddr,
    local: SocketAddr,
) -> io::Result<bool> {
    let header = proxy_protocol::relayed(version, client, local);
    match (&*backend).write(&header) {
        Ok(n) if n == header.len() => Ok(true),
        Ok(n) => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("PROXY header: wrote {n} of {} bytes", header.len()),
        )),
        Err(e) => Err(e),
    }
}

/// A failure at `end` of the direction whose source is `src_side`: reset the other side.
fn failure_close(end: End, src_side: Side) -> Close {
    let other = |s: Side| {
        if s == Side::Client {
            Side::Backend
        } else {
            Side::Client
        }
    };
    match end {
        // The source failed (e.g. reset): reset the destination, the other side.
        End::Source => Close::Reset(other(src_side)),
        // The destination failed: reset the source side.
        End::Destination => Close::Reset(src_side),
        End::Local => Close::Reset(Side::Client),
    }
}
