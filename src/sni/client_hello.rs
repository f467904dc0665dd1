//! The server name in a complete ClientHello handshake message (RFC 8446 4.1.2, RFC
//! 6066 3): what TLS records carry on TCP and QUIC's CRYPTO frames carry on UDP.

use super::{ServerName, Verdict};

/// `HandshakeType.client_hello`.
pub const CLIENT_HELLO: u8 = 1;
/// The largest ClientHello read: the 16 KiB a handshake message may take in one TLS
/// record (a post-quantum hello is 1.7-2.1 KB; one over this is not routed by name).
pub const MAX_HELLO: usize = 16 * 1024;
/// `ExtensionType.server_name`.
const SERVER_NAME: u16 = 0;
/// `NameType.host_name`.
const HOST_NAME: u8 = 0;

/// The handshake header: type and 24-bit length. `Some(total)` (header included)
/// once 4 bytes are there and the type is ClientHello; an error for another type or
/// a length over [`MAX_HELLO`].
pub fn message_len(head: &[u8; 4]) -> Result<usize, &'static str> {
    if head[0] != CLIENT_HELLO {
        return Err("the first handshake message is not a ClientHello");
    }
    let len = usize::from(head[1]) << 16 | usize::from(head[2]) << 8 | usize::from(head[3]);
    if len > MAX_HELLO {
        return Err("ClientHello over 16 KiB");
    }
    Ok(4 + len)
}

/// Reads the whole handshake message `msg` (header included, exactly its length).
pub fn server_name(msg: &[u8]) -> Verdict {
    match parse(msg) {
        Ok(Some(name)) => Verdict::Name(name),
        Ok(None) => Verdict::NoName,
        Err(why) => Verdict::Not(why),
    }
}

/// A cursor over bytes that fails rather than reading past the end.
struct Bytes<'a>(&'a [u8]);

const SHORT: &str = "malformed ClientHello: a length runs past its end";

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err(SHORT);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn parse(msg: &[u8]) -> Result<Option<ServerName>, &'static str> {
    let head: &[u8; 4] = msg.get(..4).and_then(|h| h.try_into().ok()).ok_or(SHORT)?;
    if message_len(head)? != msg.len() {
        return Err("malformed ClientHello: its length is not the message's");
    }
    let mut b = Bytes(&msg[4..]);
    let version = b.u16()?;
    if version >> 8 != 3 {
        return Err("not TLS: the ClientHello's version is not 3.x");
    }
    b.take(32)?; // random
    let session = b.vec8()?;
    if session.len() > 32 {
        return Err("malformed ClientHello: session id over 32 bytes");
    }
    let suites = b.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("malformed ClientHello: cipher suites");
    }
    if b.vec8()?.is_empty() {
        return Err("malformed ClientHello: no compression methods");
    }
    if b.0.is_empty() {
        // No extensions at all (SSL 3.0 style): no name.
        return Ok(None);
    }
    let mut exts = Bytes(b.vec16()?);
    if !b.0.is_empty() {
        return Err("malformed ClientHello: bytes after its extensions");
    }
    let mut found = None;
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != SERVER_NAME {
            continue;
        }
        if found.is_some() {
            return Err("malformed ClientHello: two server_name extensions");
        }
        found = Some(host_name(data)?);
    }
    Ok(found.flatten())
}

/// The host name in a `server_name` extension's data (`ServerNameList`): the first
/// `host_name` entry (RFC 6066 allows one of each type).
fn host_name(data: &[u8]) -> Result<Option<ServerName>, &'static str> {
    let mut d = Bytes(data);
    let mut list = Bytes(d.vec16()?);
    if !d.0.is_empty() {
        return Err("malformed ClientHello: bytes after the server name list");
    }
    if list.0.is_empty() {
        // An empty extension (what servers echo) names nothing.
        return Ok(None);
    }
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == HOST_NAME {
            return ServerName::new(name)
                .map(Some)
                .ok_or("the server name is not a host name");
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod build;

#[cfg(test)]
mod tests;
