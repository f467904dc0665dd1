//! The TLS record layer of a connection's first bytes, reassembled until the
//! ClientHello is whole: over any number of TCP segments (each [`TlsHello::feed`]
//! takes what arrived) and any number of handshake records.

use super::client_hello::{self, MAX_HELLO};
use super::Verdict;

/// `ContentType.handshake`.
const HANDSHAKE: u8 = 22;
/// The largest record payload (RFC 8446 5.1: 2^14).
const MAX_RECORD: usize = 1 << 14;
/// The most bytes read before answering: a 16 KiB hello in records of 16 bytes or
/// more. Beyond it (thousands of tiny records) the hello is not routed by name.
pub const MAX_INPUT: usize = 2 * MAX_HELLO;

/// Reads a ClientHello out of a TCP stream's first bytes, as they come.
#[derive(Debug, Default)]
pub struct TlsHello {
    /// The current record's header, while incomplete.
    head: [u8; 5],
    have: u8,
    /// Payload bytes left in the current record (0: a header is next).
    left: usize,
    /// Handshake bytes so far, when the message spans records or feeds (empty while
    /// it could still be read in place).
    msg: Vec<u8>,
    /// The message's total length, once its header is read.
    want: Option<usize>,
    /// Bytes fed so far.
    seen: usize,
    /// The answer, once given.
    done: Option<Verdict>,
}

impl TlsHello {
    /// A reader at the start of a connection.
    pub fn new() -> TlsHello {
        TlsHello::default()
    }

    /// Bytes fed so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Takes the next bytes of the stream. Once the answer is not
    /// [`Verdict::NeedMore`] it stays the same, whatever follows.
    pub fn feed(&mut self, mut input: &[u8]) -> Verdict {
        if let Some(v) = &self.done {
            return v.clone();
        }
        // Past the limit nothing is read: the answer comes from what fits.
        input = &input[..input.len().min(MAX_INPUT - self.seen)];
        self.seen += input.len();
        if let Some(v) = self.in_place(input) {
            return self.answer(v);
        }
        while !input.is_empty() {
            if self.left == 0 {
                let n = (5 - usize::from(self.have)).min(input.len());
                let at = usize::from(self.have);
                self.head[at..at + n].copy_from_slice(&input[..n]);
                self.have += n as u8;
                input = &input[n..];
                if self.have < 5 {
                    break;
                }
                self.have = 0;
                match record_len(&self.head) {
                    Ok(len) => self.left = len,
                    Err(why) => return self.answer(Verdict::Not(why)),
                }
                continue;
            }
            let n = self.left.min(input.len());
            let (now, rest) = input.split_at(n);
            input = rest;
            self.left -= n;
            if let Some(v) = self.take(now) {
                return self.answer(v);
            }
        }
        if self.seen >= MAX_INPUT {
            return self.answer(Verdict::Not("no whole ClientHello in the first 32 KiB"));
        }
        Verdict::NeedMore
    }

    /// The common case, read without copying: the first feed holds a record that
    /// holds the whole message.
    fn in_place(&self, input: &[u8]) -> Option<Verdict> {
        if self.seen != input.len() || input.len() < 9 {
            return None;
        }
        let head: &[u8; 5] = input[..5].try_into().ok()?;
        let len = match record_len(head) {
            Ok(len) => len,
            Err(why) => return Some(Verdict::Not(why)),
        };
        let payload = input.get(5..5 + len)?;
        let want = match client_hello::message_len(payload.get(..4)?.try_into().ok()?) {
            Ok(want) => want,
            Err(why) => return Some(Verdict::Not(why)),
        };
        payload.get(..want).map(client_hello::server_name)
    }

    /// Adds handshake bytes; the answer once the message is whole.
    fn take(&mut self, bytes: &[u8]) -> Option<Verdict> {
        let want = match self.want {
            Some(w) => w,
            None => {
                let need = 4 - self.msg.len().min(4);
                self.msg.extend_from_slice(&bytes[..need.min(bytes.len())]);
                if self.msg.len() < 4 {
                    return None;
                }
                let head: [u8; 4] = self.msg[..4].try_into().ok()?;
                match client_hello::message_len(&head) {
                    Ok(w) => {
                        self.want = Some(w);
                        self.msg.reserve_exact(w - 4);
                        return self.take(&bytes[need.min(bytes.len())..]);
                    }
                    Err(why) => return Some(Verdict::Not(why)),
                }
            }
        };
        let n = (want - self.msg.len()).min(bytes.len());
        self.msg.extend_from_slice(&bytes[..n]);
        (self.msg.len() == want).then(|| client_hello::server_name(&self.msg))
    }

    fn answer(&mut self, v: Verdict) -> Verdict {
        self.msg = Vec::new();
        self.done = Some(v.clone());
        v
    }
}

/// A handshake record's payload length, from its header.
fn record_len(head: &[u8; 5]) -> Result<usize, &'static str> {
    if head[0] != HANDSHAKE {
        return Err(if head[0] & 0x80 != 0 {
            "not TLS: an SSLv2 hello"
        } else {
            "not TLS: the first bytes are not a handshake record"
        });
    }
    if head[1] != 3 || head[2] > 4 {
        return Err("not TLS: the record's version is not 3.x");
    }
    let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
    if len == 0 || len > MAX_RECORD {
        return Err("not TLS: a handshake record of 0 or over 16 KiB");
    }
    Ok(len)
}

#[cfg(test)]
mod tests;
