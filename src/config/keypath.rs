//! Which key a byte offset of a TOML file belongs to, as a dotted path with array
//! indices (`listener[1].backend[0].weight`).
//!
//! Used to name the key in errors that come from the TOML parser and serde, which give
//! a span but no path. It reads table headers and `key =` prefixes line by line: good
//! enough for config files, which use one key per line.

use std::collections::HashMap;

/// The dotted key path in effect at byte `offset` of `src`.
pub fn key_at(src: &str, offset: usize) -> String {
    let offset = offset.min(src.len());
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut table: Vec<String> = Vec::new();
    let mut line_key = None;
    let mut pos = 0;
    for line in src.split_inclusive('\n') {
        let here = pos <= offset && offset < pos + line.len().max(1);
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            *counts.entry(name.clone()).or_insert(0) += 1;
            let child = format!("{name}.");
            counts.retain(|k, _| !k.starts_with(&child));
            table = name.split('.').map(str::to_string).collect();
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().split('.').map(str::to_string).collect();
        } else if here {
            if let Some((k, _)) = t.split_once('=') {
                let k = k.trim().trim_matches('"');
                if !k.is_empty() && !k.starts_with('#') {
                    line_key = Some(k.to_string());
                }
            }
        }
        if here {
            break;
        }
        pos += line.len();
    }
    let mut out = String::new();
    for i in 0..table.len() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&table[i]);
        let prefix = table[..=i].join(".");
        if let Some(n) = counts.get(&prefix) {
            out.push_str(&format!("[{}]", n - 1));
        }
    }
    if let Some(k) = line_key {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::key_at;

    const SRC: &str = "workers = 2\n[[listener]]\nname = \"a\"\n[[listener.backend]]\naddress = \"x\"\n[[listener.backend]]\nweight = 0\n[[listener]]\nname = \"b\"\n[[listener.backend]]\nid = \"q\"\n";

    fn at(needle: &str) -> String {
        key_at(SRC, SRC.find(needle).unwrap())
    }

    #[test]
    fn top_level_key() {
        assert_eq!(at("workers"), "workers");
    }

    #[test]
    fn nested_array_tables_are_indexed() {
        assert_eq!(at("\"a\""), "listener[0].name");
        assert_eq!(at("\"x\""), "listener[0].backend[0].address");
        assert_eq!(at("0\n"), "listener[0].backend[1].weight");
        assert_eq!(at("\"b\""), "listener[1].name");
        assert_eq!(at("\"q\""), "listener[1].backend[0].id");
    }

    #[test]
    fn a_header_names_its_table() {
        let second = SRC.rfind("[[listener]]").unwrap();
        assert_eq!(key_at(SRC, second), "listener[1]");
    }
}
