//! What a reload changes, in words for its log line: listeners and pools added and
//! removed, and each kept pool's configured backends added and removed (backends a
//! `backend_set` discovers come and go with DNS, and are logged as they do). Pure.

use std::collections::BTreeSet;

use super::Config;

/// The listeners, pools and configured backends `new` adds to or removes from `old`.
pub fn changes(old: &Config, new: &Config) -> String {
    let mut said = Vec::new();
    let listeners =
        |c: &Config| -> BTreeSet<String> { c.listeners.iter().map(|l| l.name.clone()).collect() };
    diff("listeners", &listeners(old), &listeners(new), &mut said);
    let pools = |c: &Config| -> BTreeSet<String> {
        c.pools
            .iter()
            .filter(|p| p.owner.is_none())
            .map(|p| p.name.clone())
            .collect()
    };
    diff("pools", &pools(old), &pools(new), &mut said);
    for p in &new.pools {
        let Some(was) = old.pools.iter().find(|o| o.name == p.name) else {
            continue;
        };
        let ids = |b: &[crate::balance::Backend]| -> BTreeSet<String> {
            b.iter()
                .filter(|b| b.set.is_none())
                .map(|b| b.id.clone())
                .collect()
        };
        diff(
            &format!("pool {} backends", p.name),
            &ids(&was.backends),
            &ids(&p.backends),
            &mut said,
        );
        if was.balance != p.balance {
            said.push(format!(
                "pool {} balance {} -> {}",
                p.name,
                describe(was.balance),
                describe(p.balance)
            ));
        }
    }
    if said.is_empty() {
        "no listener, pool or backend added or removed".to_string()
    } else {
        said.join("; ")
    }
}

/// `what +a +b -c`, when anything changed.
/// `ring`, `ring x1.25`, `least-connections`, ...
fn describe(b: crate::balance::Balance) -> String {
    match b.factor {
        Some(f) => format!("{} x{f}", b.mode.name()),
        None => b.mode.name().to_string(),
    }
}

fn diff(what: &str, old: &BTreeSet<String>, new: &BTreeSet<String>, said: &mut Vec<String>) {
    let added = new.difference(old).map(|n| format!("+{n}"));
    let removed = old.difference(new).map(|n| format!("-{n}"));
    let all: Vec<String> = added.chain(removed).collect();
    if !all.is_empty() {
        said.push(format!("{what} {}", all.join(" ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        super::super::parse(std::path::Path::new("t.toml"), text).unwrap()
    }

    const OLD: &str = "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[listener.backend]]\naddress = \"127.0.0.1:2\"\nid = \"x\"\n[[listener.backend]]\naddress = \"127.0.0.1:3\"\nid = \"y\"\n";

    #[test]
    fn says_what_was_added_and_removed() {
        let old = config(OLD);
        assert_eq!(
            changes(&old, &old),
            "no listener, pool or backend added or removed"
        );
        let new = config(&format!(
            "{}[[listener]]\nname = \"b\"\nlisten = \"127.0.0.1:4\"\ndefault_pool = \"p\"\n[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"127.0.0.1:5\"\n",
            OLD.replace("id = \"y\"", "id = \"z\"")
        ));
        assert_eq!(
            changes(&old, &new),
            "listeners +b; pools +p; pool a backends +z -y"
        );
        assert_eq!(
            changes(&new, &old),
            "listeners -b; pools -p; pool a backends +y -z"
        );
        let bounded = config(&OLD.replace(
            "listen = \"127.0.0.1:1\"\n",
            "listen = \"127.0.0.1:1\"\nbalance_factor = 1.5\n",
        ));
        assert_eq!(changes(&old, &bounded), "pool a balance ring -> ring x1.5");
    }
}
