//! Dropping root: after every socket is bound, switch to the configured user and group.

use anyhow::{bail, Context as _};
use nix::unistd::{getgid, getuid, setgid, setgroups, setuid, Gid, Group, Uid, User};

/// Switches the whole process (every thread; called before any worker starts) to
/// `user` and `group` (default: the user's primary group). Fails, and ringway does not
/// start, when the user or group does not exist or the switch is not allowed: it never
/// carries on as root when told not to.
pub fn drop_to(user: &str, group: Option<&str>) -> anyhow::Result<()> {
    let u = User::from_name(user)
        .with_context(|| format!("user {user:?}: cannot look it up"))?
        .with_context(|| format!("user {user:?} does not exist"))?;
    let gid: Gid = match group {
        None => u.gid,
        Some(g) => {
            Group::from_name(g)
                .with_context(|| format!("group {g:?}: cannot look it up"))?
                .with_context(|| format!("group {g:?} does not exist"))?
                .gid
        }
    };
    if getuid() == u.uid && getgid() == gid {
        return Ok(());
    }
    let refuse = |what: &str, e: nix::Error| {
        anyhow::anyhow!(
            "cannot switch to user {user:?} (uid {}) / gid {gid}: {what}: {e}; refusing to run as uid {}",
            u.uid,
            getuid()
        )
    };
    if getuid().is_root() {
        setgroups(&[gid]).map_err(|e| refuse("setgroups", e))?;
    }
    setgid(gid).map_err(|e| refuse("setgid", e))?;
    setuid(u.uid).map_err(|e| refuse("setuid", e))?;
    if getuid() != u.uid || Uid::effective() != u.uid {
        bail!(
            "switched to user {user:?} but still running as uid {}",
            Uid::effective()
        );
    }
    tracing::info!("running as user {user} (uid {}), gid {gid}", u.uid);
    Ok(())
}
