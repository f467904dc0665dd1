//! Routes: which of a listener's pools a connection or flow goes to, by the server
//! name it asks for. Exact names win over one-label wildcards (`*.api.example` takes
//! `v1.api.example`, not `api.example` nor `a.v1.api.example`, as in certificates);
//! no name, or a name no route takes, goes to the default pool, if there is one.
//! Names are compared lowercase without a trailing dot ([`crate::sni::ServerName`]
//! and the config's patterns are both kept so).

use std::collections::HashMap;

/// A listener's routes: pool slots by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    by_name: bool,
    exact: HashMap<Box<str>, usize>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<Box<str>, usize>,
    default: Option<usize>,
}

impl Routes {
    /// Every connection to `default` (or to none).
    pub fn single(default: Option<usize>) -> Routes {
        Routes {
            default,
            ..Routes::default()
        }
    }

    /// Routes by server name: each pattern (`api.example`, `*.api.example`) to its
    /// pool slot; the rest to `default`. A pattern given twice keeps its first slot.
    pub fn by_name<'a>(
        patterns: impl IntoIterator<Item = (&'a str, usize)>,
        default: Option<usize>,
    ) -> Routes {
        let mut r = Routes {
            by_name: true,
            default,
            ..Routes::default()
        };
        for (p, slot) in patterns {
            match p.strip_prefix("*.") {
                Some(rest) => r.wildcard.entry(rest.into()).or_insert(slot),
                None => r.exact.entry(p.into()).or_insert(slot),
            };
        }
        r
    }

    /// Whether connections must say a name before they are placed.
    pub fn by_server_name(&self) -> bool {
        self.by_name
    }

    /// The pool slot of connections without a usable name.
    pub fn default_slot(&self) -> Option<usize> {
        self.default
    }

    /// The pool slot for server name `name` (normalized), or for none.
    pub fn pick(&self, name: Option<&str>) -> Option<usize> {
        let Some(name) = name.filter(|_| self.by_name) else {
            return self.default;
        };
        if let Some(&slot) = self.exact.get(name) {
            return Some(slot);
        }
        name.split_once('.')
            .and_then(|(_, rest)| self.wildcard.get(rest).copied())
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::Routes;

    #[test]
    fn exact_wins_then_one_label_wildcards_then_the_default() {
        let r = Routes::by_name(
            [
                ("api.example", 1),
                ("*.api.example", 2),
                ("v1.api.example", 3),
                ("*.example", 4),
            ],
            Some(0),
        );
        assert_eq!(r.pick(Some("api.example")), Some(1));
        assert_eq!(r.pick(Some("v1.api.example")), Some(3));
        assert_eq!(r.pick(Some("v2.api.example")), Some(2));
        assert_eq!(r.pick(Some("a.v2.api.example")), Some(0), "one label only");
        assert_eq!(r.pick(Some("www.example")), Some(4));
        assert_eq!(r.pick(Some("example")), Some(0));
        assert_eq!(r.pick(Some("other.test")), Some(0));
        assert_eq!(r.pick(None), Some(0));
        let closed = Routes::by_name([("a.example", 0)], None);
        assert_eq!(closed.pick(Some("b.example")), None);
        assert_eq!(closed.pick(None), None);
    }

    #[test]
    fn without_routes_everything_goes_to_the_default() {
        let r = Routes::single(Some(0));
        assert!(!r.by_server_name());
        assert_eq!(r.pick(Some("anything")), Some(0));
        assert_eq!(Routes::single(None).pick(None), None);
    }
}
