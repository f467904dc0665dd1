//! The server name a client asks for, read from its first bytes without terminating
//! anything: the TLS ClientHello on TCP ([`tls::TlsHello`]) and the QUIC Initial on
//! UDP ([`quic::QuicHello`]).
//!
//! Pure, like every parser of client bytes here: no I/O, no clock, no allocation
//! beyond the reassembly buffers a split hello needs. Both readers are incremental:
//! they take bytes (or datagrams) as they come and answer [`Verdict::NeedMore`] until
//! they can answer for good. Every cut of a valid hello reads as "need more", never as
//! another answer (property-tested; fuzzed by `fuzz/fuzz_targets/sni.rs`).

pub mod client_hello;
mod name;
pub mod quic;
pub mod tls;

pub use name::ServerName;

/// What the first bytes of a connection or flow say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough yet: feed more.
    NeedMore,
    /// A hello that asks for this server name.
    Name(ServerName),
    /// A well-formed hello that names no server (no `server_name` extension).
    NoName,
    /// Not a hello of the expected protocol, a malformed one, or one beyond the limits;
    /// why, in words (for debug logs and tests).
    Not(&'static str),
}

impl Verdict {
    /// True when more input could change the answer.
    pub fn is_final(&self) -> bool {
        !matches!(self, Verdict::NeedMore)
    }
}
