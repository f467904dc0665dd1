//! The host's network interfaces.

use std::io;

/// Every interface (loopback included) by index and name; interfaces whose names are
/// not UTF-8 are left out (none can be named in a config).
pub fn list() -> io::Result<Vec<(u32, String)>> {
    let list = nix::net::if_::if_nameindex()?;
    Ok(list
        .iter()
        .filter_map(|i| Some((i.index(), i.name().to_str().ok()?.to_string())))
        .collect())
}

/// Whether interface `name` forwards IPv4 (`net.ipv4.conf.NAME.forwarding`); `None`
/// when that cannot be read (no such interface, no /proc).
pub fn ipv4_forwarding(name: &str) -> Option<bool> {
    if name.contains('/') || name.starts_with('.') {
        return None;
    }
    let v = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/forwarding")).ok()?;
    Some(v.trim() != "0")
}
