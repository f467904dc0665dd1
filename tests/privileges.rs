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

fn is_root() -> bool {
    uid_of(std::process::id() as i32) == 0
}

#[test]
fn runs_as_the_configured_user_after_binding() {
    let a = Backend::named_echo("127.0.0.1:0", "a");
    let listen = free_addr();
    let toml = with_tables(
        &config(listen, &[(a.addr, "a")], ""),
        "user = \"nobody\"\ngroup = \"nogroup\"\n",
    );
    if !is_root() {
        // Not root: switching is impossible, so ringway must refuse to start.
        let mut rw = Ringway::spawn(&toml);
        let st = rw
            .wait_exit(Duration::from_secs(10))
            .expect("ringway kept running");
        assert_eq!(st.code(), Some(2));
        assert!(rw.log().contains("refusing"), "{}", rw.log());
        return;
    }
    let rw = Ringway::start(&toml, &[listen]);
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let nobody: u32 = String::from_utf8_lossy(&nobody.stdout)
        .trim()
        .parse()
        .unwrap();
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
