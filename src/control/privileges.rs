//! Dropping root: after every socket is bound, switch to the configured user and group.

use nix::unistd::{getgid, getuid, setgid, setgroups, setuid, Gid, Group, Uid};

/// Why the switch failed (ringway then does not start).
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The user or group database could not be read.
    #[error("{kind} {name:?}: cannot look it up: {source}")]
    Lookup {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
        /// What the C library said.
        source: nix::Error,
    },
    /// No such user or group.
    #[error("{kind} {name:?} does not exist")]
    Missing {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A set*id call failed.
    #[error("cannot switch to user {user:?} (uid {uid}) / gid {gid}: {call}: {source}; refusing to run as uid {now}")]
    Refused {
        /// The user.
        user: String,
        /// Its uid.
        uid: Uid,
        /// The group id.
        gid: Gid,
        /// `setgroups`, `setgid` or `setuid`.
        call: &'static str,
        /// What the kernel said.
        source: nix::Error,
        /// The uid still in effect.
        now: Uid,
    },
    /// The calls succeeded but the process still runs as someone else.
    #[error("switched to user {user:?} but still running as uid {now}")]
    Unchanged {
        /// The user.
        user: String,
        /// The effective uid.
        now: Uid,
    },
}

/// The uid of `user` and the gid of `group` (default: the user's primary group).
pub fn ids(user: &str, group: Option<&str>) -> Result<(Uid, Gid), PrivilegeError> {
    let u = nix::unistd::User::from_name(user)
        .map_err(lookup("user", user))?
        .ok_or_else(|| missing("user", user))?;
    let gid: Gid = match group {
        None => u.gid,
        Some(g) => {
            Group::from_name(g)
                .map_err(lookup("group", g))?
                .ok_or_else(|| missing("group", g))?
                .gid
        }
    };
    Ok((u.uid, gid))
}

fn lookup(kind: &'static str, name: &str) -> impl FnOnce(nix::Error) -> PrivilegeError {
    let name = name.to_string();
    move |source| PrivilegeError::Lookup { kind, name, source }
}

fn missing(kind: &'static str, name: &str) -> PrivilegeError {
    PrivilegeError::Missing {
        kind,
        name: name.to_string(),
    }
}

/// Switches the whole process (every thread; called before any worker starts) to
/// `user` and `group` (default: the user's primary group). Fails, and ringway does not
/// start, when the user or group does not exist or the switch is not allowed: it never
/// carries on as root when told not to.
pub fn drop_to(user: &str, group: Option<&str>) -> Result<(), PrivilegeError> {
    let (uid, gid) = ids(user, group)?;
    if getuid() == uid && getgid() == gid {
        return Ok(());
    }
    let refuse = |call: &'static str| {
        move |source| PrivilegeError::Refused {
            user: user.to_string(),
            uid,
            gid,
            call,
            source,
            now: getuid(),
        }
    };
    if getuid().is_root() {
        setgroups(&[gid]).map_err(refuse("setgroups"))?;
    }
    setgid(gid).map_err(refuse("setgid"))?;
    setuid(uid).map_err(refuse("setuid"))?;
    if getuid() != uid || Uid::effective() != uid {
        return Err(PrivilegeError::Unchanged {
            user: user.to_string(),
            now: Uid::effective(),
        });
    }
    tracing::info!("running as user {user} (uid {}), gid {gid}", uid);
    Ok(())
}
