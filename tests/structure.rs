//! The layering rules of issue 9, checked from the source tree as a reviewer would:
//! no import loop inside `dataplane/`, no `pub` fields on the worker's own structs
//! (each file's state is reached through its methods), and `config/` imports nothing
//! from the data plane.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The module path of a file (`src/dataplane/tcp/mod.rs` -> `crate::dataplane::tcp`).
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    let mut m = vec!["crate".to_string()];
    m.extend(parts);
    m
}

/// The top-level `use` paths of a file (outside `#[cfg(test)]` modules, which are
/// indented), with groups expanded one level (`a::{b, c::d}` -> `a::b`, `a::c::d`).
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stmt = String::new();
    for line in text.lines() {
        let starts = line.starts_with("use ")
            || line.starts_with("pub use ")
            || line.starts_with("pub(crate) use ")
            || line.starts_with("pub(super) use ");
        if stmt.is_empty() && !starts {
            continue;
        }
        stmt.push_str(line.trim());
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let body = stmt
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("use ")
            .trim_end_matches(';')
            .to_string();
        stmt.clear();
        match body.split_once("::{") {
            Some((prefix, rest)) => {
                for item in rest.trim_end_matches('}').split(',') {
                    let item = item.trim();
                    if !item.is_empty() {
                        out.push(format!("{prefix}::{item}"));
                    }
                }
            }
            None => out.push(body),
        }
    }
    out
}

/// The module a `use` path in module `from` refers into, as a path of segments.
fn resolve(from: &[String], path: &str, is_mod_file: bool) -> Vec<String> {
    let segs: Vec<&str> = path
        .split("::")
        .map(|s| s.split(" as ").next().unwrap().trim())
        .collect();
    let mut base: Vec<String> = match segs.first() {
        Some(&"crate") => Vec::new(),
        Some(&"super") | Some(&"self") => from.to_vec(),
        // A child module of a `mod.rs`/`lib.rs` file, or a crate.
        _ => from.to_vec(),
    };
    let _ = is_mod_file;
    for s in &segs {
        match *s {
            "crate" => base = vec!["crate".to_string()],
            "super" => {
                base.pop();
            }
            "self" => {}
            other => base.push(other.to_string()),
        }
    }
    base
}

#[test]
fn no_import_loop_inside_the_data_plane() {
    let dir = src().join("dataplane");
    let modules: BTreeSet<Vec<String>> = files(&dir).iter().map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in files(&dir) {
        let from = module_of(&file);
        let is_mod = file.file_name().is_some_and(|n| n == "mod.rs");
        let text = std::fs::read_to_string(&file).unwrap();
        for u in uses(&text) {
            let target = resolve(&from, &u, is_mod);
            // The longest known module the path goes through.
            let Some(to) = (1..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|m| modules.contains(m))
            else {
                continue;
            };
            if to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 20,
        "the parser found too few imports to judge: {edges:?}"
    );
    // Depth-first search for a cycle.
    fn visit(
        m: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle: Vec<String> = stack[i..].iter().map(|s| s.join("::")).collect();
            cycle.push(m.join("::"));
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.clone());
        None
    }
    let mut done = BTreeSet::new();
    for m in &modules {
        if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("import loop: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_worker_s_structs_have_no_pub_fields() {
    let dir = src().join("dataplane");
    // The data plane's interface to the control plane and the metrics exporter
    // (mod.rs, listener.rs, pool.rs, command.rs, stats.rs, handoff.rs) publishes plain data on
    // purpose.
    let interface = [
        "mod.rs",
        "listener.rs",
        "pool.rs",
        "command.rs",
        "stats.rs",
        "handoff.rs",
    ];
    let field = regex_lite_field();
    let mut found = Vec::new();
    let mut checked = 0;
    for file in files(&dir) {
        let top = file.parent() == Some(dir.as_path());
        if top && interface.iter().any(|n| file.ends_with(n)) {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if field(line) {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(checked >= 15, "only {checked} files checked");
    assert!(found.is_empty(), "pub fields:\n{}", found.join("\n"));
}

/// A matcher for a `pub` field declaration: `    pub name: Type,` (any visibility
/// qualifier, any indentation), but not `pub fn`, `pub const`, `pub use`, ...
fn regex_lite_field() -> impl Fn(&str) -> bool {
    |line: &str| {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix("pub") else {
            return false;
        };
        let rest = if rest.starts_with('(') {
            match rest.find(')') {
                Some(i) => &rest[i + 1..],
                None => return false,
            }
        } else {
            rest
        };
        let rest = rest.trim_start();
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let keyword = [
            "fn", "const", "use", "mod", "struct", "enum", "trait", "type", "static", "impl",
            "unsafe", "async",
        ];
        !name.is_empty()
            && !keyword.contains(&name.as_str())
            && rest[name.len()..].trim_start().starts_with(':')
            && !rest[name.len()..].trim_start().starts_with("::")
    }
}

#[test]
fn config_imports_nothing_from_the_data_plane() {
    let mut found = Vec::new();
    for file in files(&src().join("config")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.contains("dataplane") && !line.trim_start().starts_with("//") {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "config/ reaches into the data plane:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_field_matcher_matches_fields_only() {
    let m = regex_lite_field();
    assert!(m("    pub read: bool,"));
    assert!(m("    pub(super) socket: Option<TcpListener>,"));
    assert!(!m("    pub fn read(&self) -> bool {"));
    assert!(!m("pub use tcp::bind_tcp;"));
    assert!(!m("    read: bool,"));
    assert!(!m("    pub const X: usize = 1;"));
}
