//! The command line as users and scripts see it: `check`, errors, exit codes, conf/.

use std::process::Command;

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
    // Who gets in, and when the backend connection opens.
    let edge = BASE.replace(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nallow = [\"10.0.0.0/8\", \"::1\"]\ndeny = [\"10.6.6.6\"]\nmax_connections_per_source = 100\nconnection_rate_per_source = \"600/m\"\nbackend_connect = \"on-data\"\n",
    );
    let (code, out, err) = check(&edge);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("web tcp 127.0.0.1:8080 -> 1 backends (allow 2 network(s), deny 1, 100 open per source, 600/m per source) (backend on first byte)"),
        "{out}"
    );
    let logged =
        format!("[access_log]\npath = \"/var/log/ringway/access.log\"\nsample = 0.1\n\n{BASE}");
    let (code, out, err) = check(&logged);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("; access log to /var/log/ringway/access.log (json, 10% of successful ones)"),
        "{out}"
    );
}

/// Every config error names file, line, column and key, and exits 2.
#[test]
fn config_errors_name_file_line_column_and_key() {
    let cases = [
        (format!("{BASE}colour = \"red\"\n"), "bad.toml:7:1: `listener[0].backend[0].colour`", "unknown key `colour`"),
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
        ("workers = \"two\"\n".to_string(), "bad.toml:1:11: `workers`", "expected a whole number, got the string \"two\""),
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

/// A config with the default limits starts without a warning at 20,000 open files
/// (its defaults fit the limit); one that sets a limit that cannot fit is warned about.
#[test]
fn defaults_fit_the_open_files_limit_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let check_at = |toml: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml).unwrap();
        let out = Command::new("prlimit")
            .args(["--nofile=20000:20000", "--"])
            .arg(bin())
            .args(["check", "-c"])
            .arg(&p)
            .output()
            .expect("prlimit (util-linux)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check_at(BASE);
    assert!(!err.contains("warning"), "{err}");
    let err = check_at(&BASE.replace(
        "\n\n[[listener.backend]]",
        "\nmax_connections = 10000\n\n[[listener.backend]]",
    ));
    assert!(
        err.contains("warning: at its limits this config needs"),
        "{err}"
    );
}

/// An address another process holds: one line that says the OS's reason once, which
/// listener, and what to run to see who holds it.
#[test]
fn a_taken_address_is_said_once_with_what_to_check() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("busy.toml");
    std::fs::write(&p, BASE.replace("8080", &port.to_string())).unwrap();
    let out = ringway(&["run", "-c", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("cannot listen on tcp 127.0.0.1:{port}"))
            && line.matches("os error 98").count() == 1
            && line.contains(&format!("ss -lntup 'sport = :{port}'")),
        "{err}"
    );
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
#[ignore = "needs root"]
fn an_unresolvable_backend_name_is_a_config_error() {
    let toml = BASE.replace("127.0.0.1:9001", "nowhere.invalid:9001");
    let (code, out, err, took) = in_netns("resolve", move || {
        let started = std::time::Instant::now();
        let (code, out, err) = check(&toml);
        (code, out, err, started.elapsed())
    });
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

/// Every TOML spelling of the same settings loads (issue 9, defect 12): dotted keys,
/// inline tables, arrays of inline tables, quoted keys. A bad value in each spelling
/// is named by its real key, at its real place.
#[test]
fn every_toml_spelling_loads_and_a_bad_value_names_its_key() {
    let head = "[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\n";
    let tail = "\n[[listener.backend]]\naddress = \"127.0.0.1:9001\"\n";
    let good = [
        format!("{head}health.check = \"tcp\"\nhealth.interval = \"2s\"\n{tail}"),
        format!("{head}health = {{ check = \"tcp\", interval = \"2s\" }}\n{tail}"),
        format!("{head}\"health\".\"check\" = \"tcp\"\n'retries' = 1\n{tail}"),
        format!("{head}backend = [{{ address = \"127.0.0.1:9001\" }}, {{ address = \"127.0.0.1:9002\", weight = 2 }}]\n"),
        "listener = [{ name = \"web\", listen = \"127.0.0.1:8080\", backend = [{ address = \"127.0.0.1:9001\" }] }]\n".to_string(),
    ];
    for toml in &good {
        let (code, out, err) = check(toml);
        assert_eq!(code, 0, "{toml}\n{err}");
        assert!(out.contains("web tcp 127.0.0.1:8080"), "{out}");
    }
    let bad = [
        (
            format!("{head}health.check = \"tcp\"\nhealth.interval = 5\n{tail}"),
            "bad.toml:5:19: `listener[0].health.interval`",
            "got the integer",
        ),
        (
            format!("{head}health.check = \"tcp\"\nhealth.interval = \"2 parsecs\"\n{tail}"),
            "bad.toml:5:19: `listener[0].health.interval`",
            "not a duration",
        ),
        (
            format!("{head}health = {{ check = \"tcp\", intervall = \"2s\" }}\n{tail}"),
            "bad.toml:4:27: `listener[0].health.intervall`",
            "unknown key `intervall`: did you mean `interval`?",
        ),
        (
            format!("{head}health = {{ check = \"tcp\", rise = 0 }}\n{tail}"),
            "bad.toml:4:34: `listener[0].health.rise`",
            "from 1 to 100",
        ),
        (
            format!("{head}\"health\".\"check\" = 7\n{tail}"),
            "bad.toml:4:20: `listener[0].health.check`",
            "wanted string",
        ),
        (
            format!("{head}'retries' = -1\n{tail}"),
            "bad.toml:4:13: `listener[0].retries`",
            "from 0 to 100",
        ),
        (
            format!("{head}backend = [{{ address = \"127.0.0.1:9001\" }}, {{ address = \"127.0.0.1:9002\", weight = 0 }}]\n"),
            "bad.toml:4:83: `listener[0].backend[1].weight`",
            "from 1 to 1000",
        ),
        (
            format!("{head}backend = [{{ address = \"127.0.0.1:9001\", wieght = 2 }}]\n"),
            "bad.toml:4:42: `listener[0].backend[0].wieght`",
            "unknown key `wieght`: did you mean `weight`?",
        ),
        (
            "listener = [{ name = \"web\", listen = \"127.0.0.1:8080\", backend = [{ address = \"127.0.0.1:9001\", weight = \"heavy\" }] }]\n".to_string(),
            "bad.toml:1:106: `listener[0].backend[0].weight`",
            "expected a whole number, got the string \"heavy\"",
        ),
    ];
    for (toml, place, what) in bad {
        let (code, out, err) = check(&toml);
        assert_eq!(code, 2, "{toml}\n{err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(place), "expected {place:?} in:\n{err}");
        assert!(err.contains(what), "expected {what:?} in:\n{err}");
    }
}

/// A syntax error names the key it interrupts, whatever the spelling.
#[test]
fn a_syntax_error_names_the_key_it_interrupts() {
    let cases = [
        ("workers = = 2\n", "bad.toml:1:11: `workers`"),
        (
            "[[listener]]\nname = \"web\"\nhealth = { check = \"tcp\", interval = }\n",
            "bad.toml:3:38: `listener[0].health.interval`",
        ),
        (
            "[[listener]]\nname = \"a\"\n[[listener]]\nname = \"b\"\n[[listener.backend]]\naddress = \"x\"\n[[listener.backend]]\nweight = 1 2\n",
            "bad.toml:8:10: `listener[1].backend[1].weight`",
        ),
    ];
    for (toml, place) in cases {
        let (code, _, err) = check(toml);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(place), "expected {place:?} in:\n{err}");
    }
}

/// A config that is not UTF-8 is reported at its first bad byte (issue 9, defect 9).
#[test]
fn invalid_utf8_is_reported_at_the_first_bad_byte() {
    let mut bytes = BASE.as_bytes().to_vec();
    // `name = "w\xffb"`: the bad byte is line 2, column 10.
    let at = BASE.find("web").unwrap() + 1;
    bytes.splice(at..at + 1, [0xff]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, &bytes).unwrap();
    let out = ringway(&["check", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).replace(p.to_str().unwrap(), "bad.toml");
    assert!(
        err.contains("bad.toml:2:10: `listener[0].name`"),
        "expected the bad byte's place in:\n{err}"
    );
    assert!(err.contains("UTF-8"), "{err}");
}

/// Names and ids land in logs, metrics labels and `/status`: control and format
/// characters (NUL, newlines, bidi overrides, zero-width) are refused at their place
/// (issue 9, defect 8).
#[test]
fn control_and_format_characters_in_names_and_ids_are_refused() {
    let cases = [
        (
            BASE.replace("\"web\"", "\"w\\u0000b\""),
            "bad.toml:2:8: `listener[0].name`",
        ),
        (
            BASE.replace("\"web\"", "\"w\\nb\""),
            "bad.toml:2:8: `listener[0].name`",
        ),
        (
            BASE.replace("\"web\"", "\"web\u{202E}gnp\""),
            "bad.toml:2:8: `listener[0].name`",
        ),
        (
            format!("{BASE}id = \"db\\u202e1\"\n"),
            "bad.toml:7:6: `listener[0].backend[0].id`",
        ),
        (
            format!("{BASE}id = \"db\u{200B}1\"\n"),
            "bad.toml:7:6: `listener[0].backend[0].id`",
        ),
        (
            format!("{BASE}id = \"db\\t1\"\n"),
            "bad.toml:7:6: `listener[0].backend[0].id`",
        ),
    ];
    for (toml, place) in cases {
        let (code, _, err) = check(&toml);
        assert_eq!(code, 2, "{toml:?}\n{err}");
        assert!(err.contains(place), "expected {place:?} in:\n{err}");
        assert!(err.contains("control or format character"), "{err}");
    }
    // Other scripts are fine.
    let (code, _, err) = check(&format!("{BASE}id = \"Zürich-東京-1\"\n"));
    assert_eq!(code, 0, "{err}");
}

/// An unknown log level is an error naming the accepted ones, not silence (issue 9,
/// defect 6); RUST_LOG-style filters stay accepted.
#[test]
fn an_unknown_log_level_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.toml");
    let port = free_port("127.0.0.1");
    std::fs::write(&p, BASE.replace("8080", &port.to_string())).unwrap();
    for level in ["verbose", "info,verbose", "ringway=loud"] {
        let mut child = std::process::Command::new(bin())
            .args(["run", "-c", p.to_str().unwrap(), "--log-level", level])
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: the defect was a process that ran on, logging nothing.
        let exited = eventually(std::time::Duration::from_secs(10), || {
            child.try_wait().unwrap().is_some()
        });
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(exited, "{level}: ringway ran on: {err}");
        assert_eq!(out.status.code(), Some(2), "{level}: {err}");
        assert!(
            err.contains("error, warn, info, debug, trace"),
            "{level}: {err}"
        );
    }
    // A good filter starts and logs.
    let mut child = std::process::Command::new(bin())
        .args([
            "run",
            "-c",
            p.to_str().unwrap(),
            "--log-level",
            "ringway=debug,warn",
        ])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = eventually(std::time::Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    // The port accepts as soon as it is bound, before the start is logged: SIGTERM (a
    // drain, handled once the start is done) rather than SIGKILL, so the log is whole.
    let _ = ringway::sys::signal::send(child.id(), ringway::sys::signal::Signal::Term);
    let exited = eventually(std::time::Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(up && exited, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listening on tcp"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `all_down = "use-all"` and every backend down, `route` says where the data
/// plane sends new connections (all of them, as if up), not `-` (issue 9, defect 10).
#[test]
fn route_follows_all_down_use_all() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.toml");
    let toml = format!(
        "{}\n[[listener.backend]]\naddress = \"127.0.0.1:9002\"\n",
        BASE.replace(
            "127.0.0.1:8080\"\n",
            "127.0.0.1:8080\"\nhealth = { all_down = \"use-all\" }\n"
        )
    );
    std::fs::write(&p, &toml).unwrap();
    let clients: Vec<std::net::SocketAddr> = (0..64)
        .map(|i| format!("10.0.0.{i}:{}", 40000 + i).parse().unwrap())
        .collect();
    let all_up = route(&p, "web", &[], &clients);
    let all_down = route(&p, "web", &["127.0.0.1:9001", "127.0.0.1:9002"], &clients);
    assert_eq!(all_down, all_up, "use-all: every backend serves as if up");
    // Reject (the default) still prints `-`.
    std::fs::write(&p, toml.replace("use-all", "reject")).unwrap();
    let rejected = route(&p, "web", &["127.0.0.1:9001", "127.0.0.1:9002"], &clients);
    assert!(rejected.iter().all(|(_, b)| b == "-"), "{rejected:?}");
}

/// `check` and `run` warn when the config's limits do not fit the open files limit,
/// and say what to set (issue 9, defect 3); `check` still exits 0.
#[test]
fn check_and_run_warn_when_max_connections_exceed_the_open_files_limit() {
    let big = BASE.replace(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nmax_connections = 10000000\n",
    );
    let (code, out, err) = check(&big);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("web tcp"), "{out}");
    assert!(
        err.contains("warning: at its limits this config needs 40000"),
        "{err}"
    );
    assert!(err.contains("raise it to at least"), "{err}");
    assert!(err.contains("LimitNOFILE"), "{err}");
    let (_, _, err) = check(&BASE.replace(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nmax_connections = 100\n",
    ));
    assert!(!err.contains("warning"), "{err}");
    // `run` says the same in its log.
    let port = free_port("127.0.0.1");
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rw = Ringway::start(&big.replace("8080", &port.to_string()), &[listen]);
    assert!(rw.log().contains("raise it to at least"), "{}", rw.log());
}

#[test]
fn run_help_says_what_each_signal_does() {
    let out = ringway(&["run", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (signal, does) in [
        ("SIGHUP", "reload the config file"),
        ("SIGTERM", "drain open connections"),
        ("SIGUSR1", "reopen the access log"),
    ] {
        let line = help
            .lines()
            .skip_while(|l| *l != "Signals:")
            .skip_while(|l| !l.contains(signal))
            .take(2)
            .collect::<String>();
        assert!(line.contains(does), "{signal}: {help}");
    }
    let top = String::from_utf8_lossy(&ringway(&["--help"]).stdout).into_owned();
    assert!(top.contains("SIGHUP reloads, SIGTERM drains"), "{top}");
}
