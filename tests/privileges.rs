//! `user`/`group`: ringway binds as root, then runs as the configured user; it never
//! carries on as root when the switch is impossible.

use std::time::Duration;

use crate::util::*;

fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    // Real, effective, saved, filesystem: all must have changed.
    let ids: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(ids.iter().all(|&i| i == ids[0]), "{line}");
    ids[0]
}

#[test]
#[ignore = "needs root"]
fn runs_as_the_configured_user_after_binding() {
    require_root();
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let listen = free_addr();
    let toml = with_tables(
        &config(listen, &[(a.addr, "a")], ""),
        "user = \"nobody\"\ngroup = \"nogroup\"\n",
    );
    let rw = Ringway::start(&toml, &[listen]);
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let nobody: u32 = String::from_utf8_lossy(&nobody.stdout)
        .trim()
        .parse()
        .unwrap();
    // The listeners are bound (and accept into their backlogs) before the switch;
    // connections are served by workers started after it.
    eventually(Duration::from_secs(5), || uid_of(rw.pid()) == nobody);
    assert_eq!(uid_of(rw.pid()), nobody);
    assert!(rw.log().contains("running as user nobody"), "{}", rw.log());
    let (_, name) = connect_named(listen);
    assert_eq!(name, "a");
}

#[test]
fn an_unknown_user_stops_the_start() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let listen = free_addr();
    let toml = with_tables(
        &config(listen, &[(a.addr, "a")], ""),
        "user = \"no-such-user-ringway\"\n",
    );
    let mut rw = Ringway::spawn(&toml);
    let st = rw
        .wait_exit(Duration::from_secs(10))
        .expect("ringway kept running");
    assert_eq!(st.code(), Some(2));
    assert!(
        rw.log()
            .contains("user \"no-such-user-ringway\" does not exist"),
        "{}",
        rw.log()
    );
}

/// conf/ringway.service runs ringway unprivileged with the one capability it needs,
/// reloads with SIGHUP and restarts it on failure.
#[test]
fn the_systemd_unit_has_the_settings_ringway_relies_on() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/ringway.service"))
            .unwrap();
    for line in [
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "User=ringway",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
}

/// What conf/ringway.service does (User=, AmbientCapabilities=CAP_NET_BIND_SERVICE,
/// ExecReload= SIGHUP), without systemd: setpriv gives the same uid and ambient
/// capability. A port below 1024 binds, and a reload can bind another one.
#[test]
#[ignore = "needs root"]
fn the_systemd_unit_settings_bind_low_ports_and_reload_without_root() {
    require_root();
    let setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output();
    assert!(setpriv.is_ok(), "needs setpriv (util-linux)");
    let low = |skip: u16| {
        (600u16..1000)
            .filter(|&p| p != skip)
            .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
            .unwrap()
    };
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let p1 = low(0);
    let listen: std::net::SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ringway.toml");
    // The unit grants no BPF capabilities: `forward = "kernel"` would (rightly) refuse
    // to start under it, so this test keeps the default forwarding in every CI mode.
    let toml = config(listen, &[(a.addr, "a")], "forward = \"auto\"");
    std::fs::write(&conf, &toml).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let log = dir.path().join("log");
    let mut child = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args([
            "--inh-caps",
            "+net_bind_service",
            "--ambient-caps",
            "+net_bind_service",
        ])
        .arg(bin())
        .args(["run", "-c"])
        .arg(&conf)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(listen).is_ok()
    });
    if !up {
        let _ = child.kill();
        panic!("no listener on {listen}:\n{}", read_log());
    }
    assert_eq!(uid_of(child.id() as i32), 65534);
    // Reload: a second listener on another low port.
    let p2 = low(p1);
    let second = format!("{toml}\n[[listener]]\nname = \"low2\"\nlisten = \"127.0.0.1:{p2}\"\n[[listener.backend]]\naddress = \"{}\"\n", a.addr);
    std::fs::write(&conf, second).unwrap();
    ringway::sys::signal::send(child.id(), ringway::sys::signal::Signal::Hup).unwrap();
    let reloaded = eventually(Duration::from_secs(10), || read_log().contains("reloaded"));
    let served = reloaded && {
        let s = std::net::TcpStream::connect(("127.0.0.1", p2));
        s.is_ok_and(|s| read_line(&s) == "a")
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "reload could not bind port {p2}:\n{}", read_log());
}

/// The system calls a `SystemCallFilter=` line of the unit allows, groups expanded by
/// `systemd-analyze syscall-filter` (as systemd expands them).
fn unit_syscalls(unit: &str) -> Vec<String> {
    fn expand(name: &str, out: &mut Vec<String>, seen: &mut Vec<String>) {
        if !name.starts_with('@') {
            out.push(name.to_string());
            return;
        }
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_string());
        let listed = std::process::Command::new("systemd-analyze")
            .args(["syscall-filter", name])
            .output()
            .expect("systemd-analyze (apt-get install systemd)");
        assert!(
            listed.status.success(),
            "systemd-analyze syscall-filter {name}"
        );
        for line in String::from_utf8_lossy(&listed.stdout).lines().skip(1) {
            let item = line.trim();
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            expand(item, out, seen);
        }
    }
    let (mut out, mut seen) = (Vec::new(), Vec::new());
    for line in unit.lines() {
        if let Some(list) = line.strip_prefix("SystemCallFilter=") {
            for name in list.split_whitespace() {
                expand(name, &mut out, &mut seen);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Issue 18, from the code read: the unit's `SystemCallFilter=@system-service` denied
/// bpf(2), so `forward = "kernel"` could not start under it. This runs ringway (as
/// root: the capabilities kernel forwarding needs) under a seccomp filter built from
/// the unit's own lines, every other call failing with EPERM as
/// `SystemCallErrorNumber=EPERM` says, and forwards through the kernel. Without bpf in
/// the filter it does not start (the same run, the line taken out).
#[test]
#[ignore = "needs root, systemd-analyze and python3-seccomp"]
fn kernel_forwarding_starts_under_the_units_system_call_filter() {
    require_root();
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/ringway.service"))
            .unwrap();
    let allowed = unit_syscalls(&unit);
    assert!(allowed.iter().any(|s| s == "bpf"), "the unit denies bpf(2)");
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("seccomp-exec.py");
    std::fs::write(
        &wrapper,
        "import errno, os, sys, seccomp\n\
         f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))\n\
         for name in sys.argv[1].split(','):\n    \
             try:\n        f.add_rule(seccomp.ALLOW, name)\n    \
             except Exception:\n        pass\n\
         f.load()\n\
         os.execv(sys.argv[2], sys.argv[2:])\n",
    )
    .unwrap();
    let run = |calls: &[String]| {
        let b = Backend::named_echo("127.0.0.1:0", "k");
        let listen = free_addr();
        let toml = config(listen, &[(b.addr, "k")], "forward = \"kernel\"");
        let list = calls.join(",");
        // Debian's python3, where python3-seccomp is.
        let mut rw = Ringway::spawn_via(
            &toml,
            &[],
            &["/usr/bin/python3", wrapper.to_str().unwrap(), &list],
        );
        let served = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(listen).is_ok_and(|s| {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                read_line(&s) == "k"
            })
        });
        let exited = rw.child.as_mut().unwrap().try_wait().unwrap();
        (served, exited, rw.log())
    };
    let (served, exited, log) = run(&allowed);
    assert!(served && exited.is_none(), "{exited:?}\n{log}");
    assert!(!log.contains("forward = \"kernel\": "), "{log}");
    // The same filter without bpf: refused at start (the test can fail).
    let without: Vec<String> = allowed.into_iter().filter(|s| s != "bpf").collect();
    let (served, _, log) = run(&without);
    assert!(!served, "started without bpf(2):\n{log}");
    assert!(log.contains("forward = \"kernel\""), "{log}");
}
