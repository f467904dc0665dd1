//! `accept_proxy`: a session's first bytes are a PROXY protocol header from the load
//! balancer in front. The header is peeked until complete, then exactly its bytes are
//! consumed: whatever the client sent after it stays in the socket for the forwarding
//! path. What the header means is [`crate::proxy_protocol`]'s business.

use std::io::{self, Read as _};
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::forward::Ready;
use crate::proxy_protocol::{self, Received, MAX_HEADER};

/// What a look at a client awaiting its header found.
#[derive(Debug)]
pub(super) enum Read {
    /// Not all there yet: a new edge will say when more arrives.
    Wait,
    /// Closed before sending a byte (a balancer's TCP health check, most likely).
    ClosedEarly,
    /// The socket failed.
    Broken,
    /// Not a usable header.
    Invalid(String),
    /// A header, consumed; its addresses (client, reached) unless LOCAL/UNKNOWN.
    Header(Option<(SocketAddr, SocketAddr)>),
}

/// Reads the PROXY header of `client` if it is all there.
pub(super) fn read(client: &TcpStream, ready: &mut Ready) -> Read {
    let mut buf = [0u8; MAX_HEADER];
    let peeked = loop {
        match client.peek(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => break other,
        }
    };
    let seen = match peeked {
        Ok(0) => return Read::ClosedEarly,
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            ready.set_readable(false);
            return Read::Wait;
        }
        Err(_) => return Read::Broken,
    };
    let (len, addresses) = match proxy_protocol::parse(&buf[..seen]) {
        Received::Incomplete if ready.closed() => {
            return Read::Invalid("closed before its PROXY header ended".into())
        }
        Received::Incomplete => {
            ready.set_readable(false);
            return Read::Wait;
        }
        Received::Invalid(why) => return Read::Invalid(why),
        Received::Header { len, addresses } => (len, addresses),
    };
    // The bytes were peeked, so they are there: one read takes exactly them.
    match (&*client).read(&mut buf[..len]) {
        Ok(n) if n == len => {}
        _ => return Read::Broken,
    }
    if seen > len {
        // Client bytes after the header are waiting: the forwarding path takes them.
        ready.set_readable(true);
    }
    Read::Header(addresses)
}
