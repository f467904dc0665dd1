//! A server name as routes compare it: ASCII, lowercase, without a trailing dot.

use std::fmt;

/// A host name from a hello, normalized: routes compare names case-insensitively and
/// ignore one trailing dot, so the name is kept lowercase and without it. Only
/// printable ASCII is accepted (a host name is ASCII: IDNs travel as `xn--` labels),
/// so a name can go into logs and labels as it is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServerName(Box<str>);

/// The longest host name DNS allows.
pub const MAX_LEN: usize = 253;

impl ServerName {
    /// The normalized name of `raw`, or `None` when it is not a usable host name
    /// (empty, longer than 253 bytes, or not printable ASCII).
    pub fn new(raw: &[u8]) -> Option<ServerName> {
        let raw = raw.strip_suffix(b".").unwrap_or(raw);
        if raw.is_empty() || raw.len() > MAX_LEN || !raw.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let lower: String = raw.iter().map(|b| b.to_ascii_lowercase() as char).collect();
        Some(ServerName(lower.into_boxed_str()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::ServerName;

    #[test]
    fn lowercase_without_the_trailing_dot() {
        assert_eq!(
            ServerName::new(b"API.Example.").unwrap().as_str(),
            "api.example"
        );
        assert_eq!(ServerName::new(b"a").unwrap().as_str(), "a");
    }

    #[test]
    fn what_is_not_a_host_name() {
        for bad in [
            &b""[..],
            b".",
            b"a b",
            b"a\0b",
            b"caf\xc3\xa9",
            b"x\n",
            &[b'a'; 254],
        ] {
            assert_eq!(ServerName::new(bad), None, "{bad:?}");
        }
        assert!(ServerName::new(&[b'a'; 253]).is_some());
    }
}
