//! Thousands of backends (issue 18, defect 1): the control plane keeps answering while
//! they change state, the dead ones all leave, and clients are served by the one that
//! is alive. (How fast, beside HAProxy, is measured by `scripts/scale_bench.py`, not
//! asserted here.)

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use crate::util::*;

/// 2,000 backends that refuse every connection and one that answers, 1,024 points
/// each (2 million ring points), checked every second. Before, each of the 2,000
/// transitions rebuilt and compared the whole ring on the control task (about 0.15 s
/// each, 5 minutes in all), `/status` and `/metrics` waited behind them, and clients'
/// retries kept landing on backends not yet down.
#[test]
fn two_thousand_dead_backends_leave_while_the_control_plane_answers() {
    let good = Backend::named_echo("127.0.0.1:0", "good");
    let (listen, metrics, admin) = (free_addr(), free_addr(), free_addr());
    let mut toml = format!(
        "workers = 2\n{}[[listener]]\nname = \"t\"\nlisten = \"{listen}\"\nconnect_timeout = \"1s\"\n[[listener.backend]]\naddress = \"{}\"\nid = \"good\"\n",
        ops_tables(metrics, admin, None),
        good.addr
    );
    // Nothing listens on port 9 of 127.1.0.0/16: every connect is refused at once.
    for i in 0..2000u32 {
        toml.push_str(&format!(
            "[[listener.backend]]\naddress = \"127.1.{}.{}:9\"\n",
            i / 250,
            i % 250 + 1
        ));
    }
    toml.push_str("[listener.health]\ninterval = \"1s\"\ntimeout = \"500ms\"\n");
    let rw = Ringway::start(&toml, &[listen, metrics, admin]);
    let down = || {
        let body = http("GET", admin, "/status", None);
        assert_eq!(body.status, 200, "{}", body.body);
        let s: serde_json::Value = serde_json::from_str(&body.body).unwrap();
        s["listeners"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["state"] == "down")
            .count()
    };
    // Every answer comes (http() gives up after 10 s): the control plane is never
    // stuck behind the transitions.
    let all_down = eventually(Duration::from_secs(60), || {
        let _ = scrape(metrics);
        down() == 2000
    });
    assert!(
        all_down,
        "{} of 2000 down; log tail:\n{}",
        down(),
        tail(&rw.log())
    );
    assert_eq!(
        sample(
            &scrape(metrics),
            "ringway_backend_up",
            &[("listener", "t"), ("pool", "t"), ("backend", "good")]
        ),
        Some(1.0)
    );
    // Clients are served by the one backend that is up.
    for _ in 0..200 {
        let mut s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut greeting = [0u8; 5];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"good\n");
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
