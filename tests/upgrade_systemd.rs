//! Upgrading under systemd, with the shipped unit (conf/ringway.service): the main PID
//! follows the new process (`MAINPID=`), the service never leaves `active`, nothing is
//! restarted, the connections stay open, and `systemctl reload` and `stop` reach the
//! process that serves (`stop` lets it drain: the unit's `ExecStop` waits for it).
//!
//! This machine's PID 1 is not systemd, so the test boots one: systemd as PID 1 of a
//! fresh PID and mount namespace (the network is the test's own loopback), with a
//! private `/run` holding the unit and nothing else to start (`--unit=` the service,
//! `DefaultDependencies=no`). The unit is the shipped one with three changes: the paths
//! of the binary and the config (copied into that `/run`: the unit's `ProtectHome=` and
//! `PrivateTmp=` hide the test's own directories), no `User=`/`Group=` (no `ringway`
//! user is made on the test machine), and no ordering after `network-online.target`.
//! Every sandbox option stays. A machine whose systemd cannot boot in a namespace says
//! so and skips; here and on CI it boots.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::*;

const SYSTEMD: &str = "/lib/systemd/systemd";
const UNIT: &str = "ringway-lab.service";

/// systemd booted as PID 1 of its own PID and mount namespaces; killed (and with it
/// everything it started) on drop.
struct Systemd {
    unshare: Child,
    /// Its pid as this test sees it.
    pid: u32,
}

impl Systemd {
    /// Boots systemd with `unit` (text) as its only unit, `binary` and `config`
    /// copied to `/run/lab/`; `None` when it does not answer `systemctl` within 20 s.
    fn boot(dir: &Path, unit: &str, binary: &str, config: &str) -> Option<Systemd> {
        std::fs::write(dir.join(UNIT), unit).unwrap();
        std::fs::write(dir.join("ringway.toml"), config).unwrap();
        let script = format!(
            "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/system /run/lab; \
             cp {binary} /run/lab/ringway; cp {dir}/ringway.toml /run/lab/ringway.toml; \
             cp {dir}/{UNIT} /run/systemd/system/{UNIT}; \
             exec {SYSTEMD} --system --unit={UNIT} --log-target=console",
            dir = dir.display()
        );
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount", "--mount-proc"])
            .args(["--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        let mut pid = None;
        eventually(Duration::from_secs(5), || {
            pid = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok());
            pid.is_some()
        });
        let sd = Systemd { unshare, pid: pid? };
        eventually(Duration::from_secs(20), || sd.show("ActiveState").is_some()).then_some(sd)
    }

    /// `systemctl ARGS` inside, or `None` when it fails.
    fn systemctl(&self, args: &[&str]) -> Option<String> {
        let pid = self.pid.to_string();
        let out = Command::new("timeout")
            .args(["10", "nsenter", "-t", &pid, "-m", "-p", "systemctl"])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// One property of the unit.
    fn show(&self, property: &str) -> Option<String> {
        self.systemctl(&["show", "-p", property, "--value", UNIT])
    }

    /// `(MainPID, ActiveState, NRestarts)`, for messages and checks.
    fn state(&self) -> (String, String, String) {
        let get = |p| self.show(p).unwrap_or_else(|| "?".into());
        (get("MainPID"), get("ActiveState"), get("NRestarts"))
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // PID 1 of a namespace takes every process of it along.
        let _ = ringway::sys::signal::send(self.pid, ringway::sys::signal::Signal::Kill);
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// conf/ringway.service as the lab runs it (see the module doc for the three changes).
fn lab_unit() -> String {
    let shipped = include_str!("../conf/ringway.service");
    let unit: Vec<String> = shipped
        .lines()
        .filter(|l| {
            !["User=", "Group=", "After=", "Wants="]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| {
            l.replace("/usr/local/bin/ringway", "/run/lab/ringway")
                .replace("/etc/ringway/ringway.toml", "/run/lab/ringway.toml")
        })
        .map(|l| match l.as_str() {
            "[Unit]" => "[Unit]\nDefaultDependencies=no".to_string(),
            _ => l,
        })
        .collect();
    assert!(
        unit.iter()
            .any(|l| l.starts_with("ExecStart=/run/lab/ringway run")),
        "conf/ringway.service no longer starts /usr/local/bin/ringway: update the lab"
    );
    unit.join("\n") + "\n"
}

/// The pid `/status` reports (as seen inside the namespace, like systemd's MainPID).
fn status_pid(admin: SocketAddr) -> Option<String> {
    try_get(admin, "/status")
        .ok()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["process"]["pid"].as_u64())
        .map(|p| p.to_string())
}

fn echoes(s: &mut TcpStream, msg: &str) -> bool {
    let mut back = vec![0u8; msg.len()];
    s.write_all(msg.as_bytes()).is_ok() && s.read_exact(&mut back).is_ok() && back == msg.as_bytes()
}

#[test]
#[ignore = "needs root and systemd"]
fn under_systemd_the_main_pid_follows_each_upgrade() {
    require_root();
    assert!(
        Path::new(SYSTEMD).exists(),
        "{SYSTEMD} is missing: apt-get install systemd (scripts/test-packages.txt)"
    );
    let (backend, listen, admin) = (Backend::echo("127.0.0.1:0"), free_addr(), free_addr());
    let toml = with_tables(
        // The shipped unit grants no CAP_BPF: `forward = "kernel"` is refused under it
        // (its comment says what to add), so this test keeps the default in every mode.
        &config(listen, &[(backend.addr, "b")], "forward = \"auto\"")
            .replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"2s\""),
        &ops_tables(free_addr(), admin, None),
    );
    assert!(toml.contains("shutdown_timeout = \"2s\""));
    let dir = std::env::temp_dir().join(format!("ringway-systemd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(sd) = Systemd::boot(&dir, &lab_unit(), bin(), &toml) else {
        eprintln!("SKIPPED: systemd does not boot in a PID namespace on this machine");
        return;
    };
    assert!(
        eventually(Duration::from_secs(20), || sd
            .show("ActiveState")
            .as_deref()
            == Some("active")
            && status_pid(admin).is_some()),
        "the unit never became active: {:?}",
        sd.state()
    );
    let mut held = TcpStream::connect(listen).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(echoes(&mut held, "before"));
    for n in 1..=3 {
        let (old, _, _) = sd.state();
        if n == 2 {
            // As the unit's comment says: USR2 to the main PID.
            let pid = sd.show("MainPID").unwrap();
            assert!(Command::new("nsenter")
                .args(["-t", &sd.pid.to_string(), "-m", "-p", "kill", "-USR2", &pid])
                .status()
                .unwrap()
                .success());
        } else {
            let out = ctl(admin, None, &["upgrade"]);
            assert!(
                out.status.success(),
                "upgrade {n}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut last = None;
        let followed = eventually(Duration::from_secs(10), || {
            let (main, active, restarts) = sd.state();
            let serving = status_pid(admin);
            let ok = main != old
                && Some(&main) == serving.as_ref()
                && active == "active"
                && restarts == "0";
            last = Some((main, active, restarts, serving));
            ok
        });
        assert!(
            followed,
            "upgrade {n}: systemd's main PID did not follow the new process (was {old}; \
             MainPID, ActiveState, NRestarts, /status pid: {last:?})"
        );
        // Still so a moment later: the old process's exit did not stop the unit.
        std::thread::sleep(Duration::from_millis(500));
        let (main, active, restarts) = sd.state();
        assert_eq!(
            (active.as_str(), restarts.as_str(), Some(main.clone())),
            ("active", "0", status_pid(admin)),
            "upgrade {n}: the unit changed after the old process exited"
        );
        assert!(
            echoes(&mut held, &format!("after {n}")),
            "upgrade {n}: the held connection broke"
        );
    }
    // reload reaches the process that serves now.
    let reloads = || {
        try_get(admin, "/status")
            .ok()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["process"]["reloads_ok"].as_u64())
    };
    let before = reloads().expect("/status process.reloads_ok");
    assert!(
        sd.systemctl(&["reload", UNIT]).is_some(),
        "systemctl reload"
    );
    assert!(
        eventually(Duration::from_secs(5), || reloads() > Some(before)),
        "systemctl reload did not reach the serving process"
    );
    assert_eq!(sd.show("ActiveState").as_deref(), Some("active"));
    // stop drains: the connection still echoes while the serving process drains (up to
    // shutdown_timeout, 2 s), then the unit ends cleanly. (After an upgrade the main
    // process is not systemd's child; without the unit's ExecStop systemd does not wait
    // for it and kills it at once.)
    let stopping = std::thread::scope(|scope| {
        let stop = scope.spawn(|| sd.systemctl(&["stop", UNIT]));
        std::thread::sleep(Duration::from_millis(500));
        let draining = echoes(&mut held, "while stopping");
        (draining, stop.join().unwrap())
    });
    assert!(
        stopping.0,
        "the connection broke at once on systemctl stop: {:?}",
        ["Result", "ExecMainCode", "ExecMainStatus"].map(|p| sd.show(p))
    );
    assert!(stopping.1.is_some(), "systemctl stop");
    let (main, active, _) = sd.state();
    let why = ["Result", "ExecMainCode", "ExecMainStatus", "StatusText"].map(|p| sd.show(p));
    assert_eq!(
        (main.as_str(), active.as_str()),
        ("0", "inactive"),
        "after systemctl stop: {why:?}"
    );
    assert_eq!(why[0].as_deref(), Some("success"), "{why:?}");
    assert!(
        status_pid(admin).is_none(),
        "ringway still answers after stop"
    );
    drop(sd);
    let _ = std::fs::remove_dir_all(&dir);
}
