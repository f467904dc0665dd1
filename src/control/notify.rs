//! systemd's readiness protocol (`sd_notify`): with `Type=notify`, systemd sets
//! `NOTIFY_SOCKET` and waits for `READY=1` before it calls the service started.
//! ringway says READY once every listener is bound and the workers run, RELOADING and
//! READY around a reload, and STOPPING when it starts to drain. Without
//! `NOTIFY_SOCKET` (not under systemd) nothing is sent. Failures are ignored: telling
//! systemd is never a reason to stop serving.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd, if it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        // An abstract socket: '@' stands for the leading NUL byte.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| socket.send_to_addr(state.as_bytes(), &a))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::debug!("sd_notify {state:?}: {e}");
    }
}
