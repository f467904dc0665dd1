//! `accept_proxy`: a session's first bytes are a PROXY protocol header from the load
//! balancer in front. Its addresses stand for the client's: they pick the backend (so
//! ringway nodes behind one balancer hash real clients alike), show in logs and go on
//! in a `send_proxy` header. The header is peeked until complete, then exactly its
//! bytes are consumed: whatever the client sent after it stays in the socket for the
//! forwarding path.

use std::io::{self, Read as _};

use super::accept::reached;
use super::session::Close;
use super::token::Side;
use super::worker::Worker;
use crate::balance::hash::{flow_hash, PROTO_TCP};
use crate::proxy_protocol::{self, Received, MAX_HEADER};

impl Worker {
    /// The client of a session awaiting its header is readable (or may be): read the
    /// header if it is all there, then start connecting.
    pub(super) fn read_header(&mut self, skey: usize) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        if !s.connecting.as_ref().is_some_and(|c| c.awaiting_header) {
            return;
        }
        let mut buf = [0u8; MAX_HEADER];
        let peeked = loop {
            match s.client.peek(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        let seen = match peeked {
            Ok(0) => {
                // Closed before a word: a balancer's TCP health check, most likely.
                self.close(skey, Close::Normal);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.client_ready.read = false;
                return;
            }
            Err(_) => {
                self.close(skey, Close::Reset(Side::Client));
                return;
            }
        };
        let (len, addresses) = match proxy_protocol::parse(&buf[..seen]) {
            Received::Incomplete if s.client_ready.hup => {
                self.reject_header(skey, "closed before its PROXY header ended");
                return;
            }
            // More bytes raise a new edge.
            Received::Incomplete => {
                s.client_ready.read = false;
                return;
            }
            Received::Invalid(why) => {
                self.reject_header(skey, &why);
                return;
            }
            Received::Header { len, addresses } => (len, addresses),
        };
        // The bytes were peeked, so they are there: one read takes exactly them.
        match (&s.client).read(&mut buf[..len]) {
            Ok(n) if n == len => {}
            _ => {
                self.close(skey, Close::Reset(Side::Client));
                return;
            }
        }
        if seen > len {
            // Client bytes after the header are waiting: the forwarding path takes them.
            s.client_ready.read = true;
        }
        let Some(c) = s.connecting.as_mut() else {
            return;
        };
        c.awaiting_header = false;
        let (client, local) = match addresses {
            Some((client, local)) => {
                c.client_addr = client;
                c.local_addr = Some(local);
                (client, local)
            }
            // LOCAL / UNKNOWN: the connection's own endpoints.
            None => (
                c.client_addr,
                reached(self.listeners[s.listener].shared.listen, &s.client),
            ),
        };
        c.key = flow_hash(c.routing.params.hash, PROTO_TCP, client, local);
        if c.routing.snapshot.pick(c.key).is_none() {
            let li = s.listener;
            self.no_backend(li, client);
            self.close(skey, Close::Normal);
            return;
        }
        self.start_connect(skey);
    }

    /// Ends a session whose client did not send a usable PROXY header in time.
    pub(super) fn reject_header(&mut self, skey: usize, why: &str) {
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        let shared = &self.listeners[s.listener].shared;
        shared.stats.shard(self.index).rejected_proxy_header.inc();
        if let Some(suppressed) = self.warn_limit.allow(self.now) {
            let client = s.connecting.as_ref().map(|c| c.client_addr);
            tracing::warn!(listener = %shared.name, client = ?client, suppressed, "accept_proxy: {why}: closing the connection");
        }
        self.close(skey, Close::Reset(Side::Client));
    }
}
