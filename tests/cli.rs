//! The command line as users and scripts see it: `check`, errors, exit codes, conf/.

use crate::util::*;

fn check(toml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, toml).unwrap();
    let out = ringway(&["check", "--config", p.to_str().unwrap()]);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).replace(p.to_str().unwrap(), "bad.toml"),
    )
}

const BASE: &str = "[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\n\n[[listener.backend]]\naddress = \"127.0.0.1:9001\"\n";

#[test]
fn check_accepts_a_good_config_with_a_summary() {
    let (code, out, err) = check(BASE);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    assert!(
        out.contains("web tcp 127.0.0.1:8080 -> 1 backends"),
        "{out}"
    );
    // Operations settings show in the summary too.
    let ops = format!("[metrics]\nlisten = \"127.0.0.1:9100\"\n[admin]\nlisten = \"127.0.0.1:9101\"\ntoken = \"t\"\n\n{BASE}");
    let (code, out, err) = check(&ops);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("; metrics on 127.0.0.1:9100; admin API on 127.0.0.1:9101 (with token)"),
        "{out}"
    );
}

/// Every config error names file, line, column and key, and exits 2.
#[test]
fn config_errors_name_file_line_column_and_key() {
    let cases = [
        (format!("{BASE}colour = \"red\"\n"), "bad.toml:7:1: `listener[0].backend[0].colour`", "unknown field"),
        (format!("{BASE}weight = 0\n"), "bad.toml:7:10: `listener[0].backend[0].weight`", "from 1 to 1000"),
        (
            format!("{BASE}id = \"x\"\n[[listener.backend]]\naddress = \"127.0.0.1:9002\"\nid = \"x\"\n"),
            "bad.toml:10:6: `listener[0].backend[1].id`",
            "duplicate backend id",
        ),
        ("[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\n".to_string(), "bad.toml:1:1: `listener[0].backend`", "no backends"),
        (
            format!("{BASE}\n{}", BASE.replace("\"web\"", "\"api\"")),
            "bad.toml:10:10: `listener[1].listen`",
            "cannot share an address",
        ),
        (format!("{BASE}\n{}", BASE.replace("8080", "8081")), "bad.toml:9:8: `listener[1].name`", "duplicate listener name"),
        ("workers = \"two\"\n".to_string(), "bad.toml:1:11: `workers`", "invalid type"),
    ];
    for (toml, place, what) in cases {
        let (code, out, err) = check(&toml);
        assert_eq!(code, 2, "{place}: {err}");
        assert!(out.is_empty());
        assert!(err.contains(place), "expected {place:?} in:\n{err}");
        assert!(err.contains(what), "expected {what:?} in:\n{err}");
    }
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let out = ringway(&["check", "-c", "/nonexistent/ringway.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/ringway.toml") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn run_with_a_bad_config_exits_2_and_binds_nothing() {
    let port = free_port("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        BASE.replace("8080", &port.to_string())
            .replace("9001\"", "9001\"\nweight = 1001"),
    )
    .unwrap();
    let out = ringway(&["run", "-c", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn every_shipped_config_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let out = ringway(&["check", "-c", p.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 2, "conf/ has {n} configs");
}

#[test]
fn route_rejects_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.toml");
    std::fs::write(&p, BASE).unwrap();
    let out = ringway(&["route", "-c", p.to_str().unwrap(), "--listener", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no listener named \"nope\" (listeners: web)"));
    let out = ringway(&[
        "route",
        "-c",
        p.to_str().unwrap(),
        "--listener",
        "web",
        "--down",
        "ghost",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no backend with id \"ghost\""));
}

#[test]
fn route_with_a_wildcard_listener_needs_dst() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.toml");
    std::fs::write(&p, BASE.replace("127.0.0.1:8080", "0.0.0.0:8080")).unwrap();
    let out = ringway(&["route", "-c", p.to_str().unwrap(), "--listener", "web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dst"));
    let clients: [std::net::SocketAddr; 1] = ["10.1.2.3:4567".parse().unwrap()];
    let mut cmd_out = std::process::Command::new(bin())
        .args([
            "route",
            "-c",
            p.to_str().unwrap(),
            "--listener",
            "web",
            "--dst",
            "192.0.2.1:8080",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(cmd_out.stdin.take().unwrap(), "{}", clients[0]).unwrap();
    let o = cmd_out.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "10.1.2.3:4567 127.0.0.1:9001\n"
    );
}

/// A backend host name that does not resolve is a config error with its place. In a
/// network namespace of the test's own no DNS server is reachable, so the lookup fails
/// at once instead of waiting for a resolver.
#[test]
fn an_unresolvable_backend_name_is_a_config_error() {
    let toml = BASE.replace("127.0.0.1:9001", "nowhere.invalid:9001");
    let Some((code, out, err, took)) = in_netns("resolve", move || {
        let started = std::time::Instant::now();
        let (code, out, err) = check(&toml);
        (code, out, err, started.elapsed())
    }) else {
        return;
    };
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    let place = "bad.toml:6:11: `listener[0].backend[0].address`";
    assert!(err.contains(place), "expected {place:?} in:\n{err}");
    assert!(err.contains("cannot resolve \"nowhere.invalid\""), "{err}");
    assert!(
        took < std::time::Duration::from_secs(30),
        "the lookup hung for {took:?}"
    );
}
