//! The token namespace of a worker's poll: what an event belongs to.
//!
//! `0` is the waker, `1..=MAX_LISTENERS` are listening sockets, from `SESSION_BASE`
//! on each TCP session has two tokens, one per socket, and from `FLOW_BASE` on each UDP
//! flow has one (its upstream socket).

use mio::Token;

/// The worker's waker (commands from the control plane).
pub const WAKER: Token = Token(0);

/// Listening sockets one worker can hold.
pub const MAX_LISTENERS: usize = 65_535;

/// First session token.
const SESSION_BASE: usize = MAX_LISTENERS + 1;

/// First flow token; sessions stay below it (2^39 sessions is far beyond any fd limit).
const FLOW_BASE: usize = 1 << 40;

/// Which socket of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The accepted client connection.
    Client,
    /// The connection to the backend.
    Backend,
}

/// What a token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The waker.
    Waker,
    /// Listener at this index.
    Listener(usize),
    /// Session with this slab key, this socket.
    Session(usize, Side),
    /// UDP flow with this slab key.
    Flow(usize),
}

/// Token of listener `index`.
pub fn listener(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(index + 1)
}

/// Token of one socket of session `key`.
pub fn session(key: usize, side: Side) -> Token {
    Token(SESSION_BASE + key * 2 + (side == Side::Backend) as usize)
}

/// Token of UDP flow `key`.
pub fn flow(key: usize) -> Token {
    Token(FLOW_BASE + key)
}

/// Decodes a token.
pub fn decode(token: Token) -> Target {
    match token.0 {
        0 => Target::Waker,
        t if t < SESSION_BASE => Target::Listener(t - 1),
        t if t >= FLOW_BASE => Target::Flow(t - FLOW_BASE),
        t => {
            let x = t - SESSION_BASE;
            let side = if x % 2 == 0 {
                Side::Client
            } else {
                Side::Backend
            };
            Target::Session(x / 2, side)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(decode(WAKER), Target::Waker);
        for i in [0, 1, MAX_LISTENERS - 1] {
            assert_eq!(decode(listener(i)), Target::Listener(i));
        }
        for k in [0, 1, 12345] {
            assert_eq!(decode(flow(k)), Target::Flow(k));
            for s in [Side::Client, Side::Backend] {
                assert_eq!(decode(session(k, s)), Target::Session(k, s));
            }
        }
    }
}
