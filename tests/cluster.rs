//! `[cluster]` from outside: a node finds itself among its peers or refuses to start,
//! second chance needs the privilege to load its program (refused clearly without
//! it), and `ctl leave` / `stay` mark the node in `/status`, `ctl status` and
//! `/metrics`. (Second chance's forwarding itself is proven in the ECMP lab:
//! scripts/ecmp_check.py with ECMP_SECOND_CHANCE=on, which CI runs.)

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// A config with `[cluster] peers` and one TCP listener on `listen`.
fn cluster_config(
    peers: &[&str],
    listen: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
) -> String {
    let b = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let list: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    with_tables(
        // (The default forwarding in every CI mode: without the privilege, a demanded
        // `forward = "kernel"` would stop the start first, for its own reason.)
        &config(listen, &[(b.parse().unwrap(), "b")], "forward = \"auto\""),
        &format!(
            "[cluster]\npeers = [{}]\n\n{}",
            list.join(", "),
            ops_tables(metrics, admin, None)
        ),
    )
}

/// Runs `ip ARGS` (in the calling thread's namespace); panics when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace's network with one more interface than loopback: a veth pair, the
/// first end holding `addr`/24.
fn network(addr: &str) {
    ip(&[
        "link", "add", "rwc0", "type", "veth", "peer", "name", "rwc1",
    ]);
    ip(&["addr", "add", &format!("{addr}/24"), "dev", "rwc0"]);
    ip(&["link", "set", "rwc0", "up"]);
    ip(&["link", "set", "rwc1", "up"]);
}

#[test]
fn a_node_that_is_none_of_the_peers_does_not_start() {
    // TEST-NET-2 addresses: no machine has them.
    let toml = cluster_config(
        &["198.51.100.1", "198.51.100.2"],
        free_addr(),
        free_addr(),
        free_addr(),
    );
    let mut rw = Ringway::spawn(&toml);
    let status = rw
        .wait_exit(Duration::from_secs(10))
        .expect("ringway started although it is none of the peers");
    assert!(!status.success());
    let log = rw.log();
    assert!(
        log.contains("cluster.peers: none of the peers (198.51.100.1, 198.51.100.2) is an address of this machine"),
        "{log}"
    );
}

#[test]
#[ignore = "needs root"]
fn without_cap_bpf_and_cap_net_admin_a_cluster_is_refused_at_start() {
    in_netns("clcap", || {
        network("10.55.0.1");
        let toml = cluster_config(
            &["10.55.0.1", "10.55.0.2"],
            "10.55.0.1:8080".parse().unwrap(),
            free_addr(),
            free_addr(),
        );
        // Root, without the capabilities a BPF program needs.
        let wrapper = [
            "setpriv",
            "--bounding-set=-bpf,-net_admin,-sys_admin,-perfmon",
            "--inh-caps=-bpf,-net_admin,-sys_admin,-perfmon",
        ];
        let mut rw = Ringway::spawn_via(&toml, &[], &wrapper);
        let status = rw
            .wait_exit(Duration::from_secs(10))
            .expect("ringway started second chance without the privilege to");
        assert!(!status.success());
        let log = rw.log();
        assert!(
            log.contains("[cluster]: cannot load")
                && log.contains("needs CAP_BPF and CAP_NET_ADMIN at start"),
            "{log}"
        );
    });
}

#[test]
#[ignore = "needs root"]
fn a_node_leaves_and_stays_and_says_so_everywhere() {
    in_netns("clleave", || {
        network("10.55.0.1");
        let (listen, admin, metrics) =
            ("10.55.0.1:8080".parse().unwrap(), free_addr(), free_addr());
        let toml = cluster_config(
            &["10.55.0.2", "10.55.0.1", "10.55.0.3"],
            listen,
            admin,
            metrics,
        );
        let _rw = Ringway::start(&toml, &[admin]);
        let cluster = || status(admin)["cluster"].clone();
        let c = cluster();
        assert_eq!(c["node"], "10.55.0.1", "{c}");
        assert_eq!(c["leaving"], false);
        let interfaces: Vec<&str> = c["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.as_str())
            .collect();
        assert!(
            interfaces.contains(&"rwc0") && !interfaces.contains(&"lo"),
            "{interfaces:?}"
        );
        let leaving = |v: f64| sample(&scrape(metrics), "ringway_cluster_leaving", &[]) == Some(v);
        assert!(leaving(0.0));
        // Every [cluster] family, typed as documented.
        let text = scrape(metrics);
        let mut families = 0;
        for &(name, _, kind, _) in ringway::metrics::names::ALL {
            if name.starts_with("ringway_cluster_") {
                assert!(
                    text.contains(&format!("# TYPE {name} {kind}")),
                    "{name}:\n{text}"
                );
                families += 1;
            }
        }
        assert_eq!(families, 5);
        // No peer named this node's own.
        let text = scrape(metrics);
        assert!(text.contains("ringway_cluster_forwarded_packets_total{peer=\"10.55.0.3\"} 0"));
        assert!(!text.contains("peer=\"10.55.0.1\""), "{text}");

        let out = ctl(admin, None, &["leave"]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains("node 10.55.0.1 is leaving: withdraw its route"),
            "{said}"
        );
        assert_eq!(cluster()["leaving"], true);
        assert!(cluster()["leaving_since"].as_u64().is_some());
        assert!(leaving(1.0));
        let table = String::from_utf8_lossy(&ctl(admin, None, &["status"]).stdout).to_string();
        assert!(
            table.contains("cluster: node 10.55.0.1 (2 of 3), LEAVING"),
            "{table}"
        );
        let again = ctl(admin, None, &["leave"]);
        assert!(String::from_utf8_lossy(&again.stdout).contains("was already leaving"));

        let out = ctl(admin, None, &["stay"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("node 10.55.0.1 stays"));
        assert_eq!(cluster()["leaving"], false);
        assert!(leaving(0.0));
        let table = String::from_utf8_lossy(&ctl(admin, None, &["status"]).stdout).to_string();
        assert!(table.contains("(2 of 3), serving"), "{table}");
    });
}

#[test]
fn leave_without_a_cluster_says_there_is_none() {
    let (b, listen, admin) = (Backend::echo("127.0.0.1:0"), free_addr(), free_addr());
    let toml = with_tables(
        &config(listen, &[(b.addr, "b")], ""),
        &ops_tables(free_addr(), admin, None),
    );
    let _rw = Ringway::start(&toml, &[listen, admin]);
    let out = ctl(admin, None, &["leave"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("409") && err.contains("no [cluster] in its config"),
        "{err}"
    );
    assert!(status(admin)["cluster"].is_null());
    let r = http("POST", admin, "/stay", None);
    assert_eq!(r.status, 409);
}

#[test]
#[ignore = "needs root"]
fn an_upgrade_keeps_the_cluster() {
    in_netns("clupg", || {
        network("10.55.0.1");
        let (listen, admin, metrics) =
            ("10.55.0.1:8080".parse().unwrap(), free_addr(), free_addr());
        let toml = cluster_config(&["10.55.0.1", "10.55.0.2"], listen, admin, metrics);
        let rw = Ringway::start(&toml, &[admin]);
        let _serving = crate::upgrade::Serving(admin);
        // The new process binds the cluster's port while the old one still holds it.
        let pid = crate::upgrade::upgrade(admin, &rw);
        let st = crate::upgrade::status_of(admin, pid);
        assert_eq!(st["cluster"]["node"], "10.55.0.1", "{st}");
    });
}
