//! The control state driven by messages directly: what a result means depends on what
//! it is and in which order it comes, never on timing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::health::probe::ProbeError;

fn control(toml: &str) -> Control {
    let config = crate::config::parse(Path::new("t.toml"), toml).unwrap();
    let (passive, _) = crate::dataplane::passive_channel();
    let pools: Vec<PoolState> = config
        .pools
        .iter()
        .map(|p| PoolState::new(p.clone(), 1, passive.clone(), vec![None; p.backends.len()]))
        .collect();
    let listeners = config
        .listeners
        .iter()
        .map(|l| ListenerState::new(l.clone(), 1, &pools))
        .collect();
    let published = Arc::new(super::super::view::Published::new(
        super::super::view::View::empty(),
    ));
    let (handle, _) = super::super::actor::channel(Default::default(), published);
    let (log, _) = crate::accesslog::AccessLog::start(1, None).unwrap();
    Control::new(
        config,
        (pools, listeners),
        Vec::new(),
        (handle, log.control()),
        passive,
        super::super::resolver::Resolving::new(std::time::Instant::now(), Default::default()),
    )
}

const TCP: &str = "[[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:1\"\nhealth = { fall = 3, rise = 2 }\n[[listener.backend]]\naddress = \"127.0.0.1:9001\"\nid = \"a\"\n[[listener.backend]]\naddress = \"127.0.0.1:9002\"\nid = \"b\"\n";

const UDP: &str = "[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:1\"\n[[listener.backend]]\naddress = \"127.0.0.1:9001\"\nid = \"a\"\n[[listener.backend]]\naddress = \"127.0.0.1:9002\"\nid = \"b\"\n";

fn checked(c: &Control, bi: usize, result: Result<(), ProbeError>) -> Outcome {
    Outcome {
        backend: Arc::clone(&c.pools[0].backends[bi].stats),
        result,
        took: Duration::from_millis(1),
    }
}

/// One failure seen on the data path, as a worker reports it.
fn passive(c: &Control, bi: usize) -> PassiveFailure {
    let backend = Arc::clone(&c.pools[0].backends[bi].stats);
    backend.failures.record(&errno(libc::ECONNREFUSED));
    PassiveFailure { backend }
}

fn up(c: &Control, bi: usize) -> bool {
    c.pools[0].backends[bi].is_up()
}

fn errno(e: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(e)
}

/// Defect 2 at its root: a check that could not open its socket is no evidence.
#[test]
fn a_check_that_cannot_run_is_unknown_never_a_failure() {
    let mut c = control(TCP);
    let now = Instant::now();
    // Not even as the first check, which decides alone.
    for _ in 0..10 {
        let o = checked(&c, 1, Err(ProbeError::Local(errno(libc::EMFILE))));
        c.on_checked(o, now);
    }
    assert!(up(&c, 1), "EMFILE took a backend down");
    let b = &c.pools[0].backends[1];
    assert_eq!((b.checks_unknown, b.checks_failed, b.checks_ok), (10, 0, 0));
    assert!(b.health.is_unconfirmed(), "no verdict yet");
    c.on_checked(checked(&c, 1, Ok(())), now);
    // Real failures still count, and unknowns in between do not interrupt them.
    for i in 0..3 {
        let o = checked(&c, 1, Err(ProbeError::Connect(errno(libc::ECONNREFUSED))));
        c.on_checked(o, now);
        let o = checked(&c, 1, Err(ProbeError::Local(errno(libc::ENFILE))));
        c.on_checked(o, now);
        assert_eq!(up(&c, 1), i < 2, "after {} failures", i + 1);
    }
    assert!(up(&c, 0));
}

/// Defect 1: on a listener without active checks, passive failures that come close
/// together take a backend out, and the hold-down brings it back; spread-out ones
/// never do; `passive = false` turns them off.
#[test]
fn passive_failures_take_out_and_the_hold_down_readmits() {
    let mut c = control(UDP);
    let hold = c.pools[0].config.health.readmit_after();
    assert_eq!(hold, Duration::from_secs(6), "fall 3 x interval 2 s");
    let t0 = Instant::now();
    c.on_passive(passive(&c, 1), t0);
    c.on_passive(passive(&c, 1), t0 + Duration::from_secs(1));
    assert!(up(&c, 1));
    let t = t0 + Duration::from_secs(2);
    c.on_passive(passive(&c, 1), t);
    assert!(!up(&c, 1), "three within the window");
    assert_eq!(c.next_readmit(), Some(t + hold));
    c.readmit(t + hold - Duration::from_millis(1));
    assert!(!up(&c, 1), "not before the hold-down ends");
    c.readmit(t + hold);
    assert!(up(&c, 1));
    assert_eq!(c.next_readmit(), None);
    // Spread out: never.
    let mut c = control(UDP);
    for i in 0..100 {
        c.on_passive(passive(&c, 0), t0 + Duration::from_secs(10 * i));
    }
    assert!(up(&c, 0));
    // Turned off: never.
    let off = UDP.replace(
        "protocol = \"udp\"\n",
        "protocol = \"udp\"\nhealth = { passive = false }\n",
    );
    let mut c = control(&off);
    for _ in 0..10 {
        c.on_passive(passive(&c, 0), t0);
    }
    assert!(up(&c, 0));
}

/// With active checks, a backend taken out by the data path waits for its checks:
/// no hold-down re-admits it blindly.
#[test]
fn with_active_checks_only_checks_bring_a_backend_back() {
    let mut c = control(TCP);
    let t0 = Instant::now();
    for _ in 0..3 {
        c.on_passive(passive(&c, 0), t0);
    }
    assert!(!up(&c, 0));
    assert_eq!(c.next_readmit(), None);
    c.readmit(t0 + Duration::from_secs(3600));
    assert!(!up(&c, 0));
    for _ in 0..2 {
        c.on_checked(checked(&c, 0, Ok(())), t0);
    }
    assert!(up(&c, 0), "rise = 2 successful checks");
}

/// "A reload while a check is in flight": a result about a backend the reload
/// replaced arrives after it, finds nothing and changes nothing.
#[test]
fn a_result_about_a_replaced_backend_is_ignored() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = control(TCP);
        let stale: Vec<Outcome> = (0..3)
            .map(|_| checked(&c, 1, Err(ProbeError::Timeout(Duration::from_secs(1)))))
            .collect();
        let moved = crate::config::parse(
            Path::new("t.toml"),
            &TCP.replace("127.0.0.1:9002", "127.0.0.1:9003"),
        )
        .unwrap();
        c.apply(moved).unwrap();
        for o in stale {
            c.on_checked(o, Instant::now());
        }
        assert!(up(&c, 1), "a stale result took the new backend down");
        assert_eq!(c.pools[0].backends[1].checks_failed, 0);
    });
}
