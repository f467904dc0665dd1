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
