//! Whether the access log can be written: before ringway starts (`check`, which asks
//! for `user` from the file modes, and `run`, which opens the file as the user it
//! runs as) and before a reload switches to another path. A log that cannot be
//! written is a config error: better refused at once than one ERROR line and nothing
//! logged from then on.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Opens `path` for appending (creating it) as this process, and closes it.
pub fn open(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
}

/// Why user `uid` (in group `gid` only, as ringway runs once it switched) could not
/// append to `path`, read from the file modes (access control lists are not read): the
/// file must be writable, or, if it does not exist, its directory writable; every
/// directory on the way must be searchable. `None` when it can.
pub fn denied_to(path: &Path, uid: u32, gid: u32) -> Option<String> {
    if uid == 0 {
        return None;
    }
    let may = |m: &std::fs::Metadata, bits: u32| {
        let mode = m.mode();
        if m.uid() == uid {
            mode & (bits << 6) == bits << 6
        } else if m.gid() == gid {
            mode & (bits << 3) == bits << 3
        } else {
            mode & bits == bits
        }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match std::fs::metadata(ancestor) {
            Ok(m) if !may(&m, 0o1) => {
                return Some(format!("{} is not searchable by it", ancestor.display()))
            }
            Ok(_) => {}
            Err(e) => return Some(format!("{}: {e}", ancestor.display())),
        }
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Some("it is a directory".into()),
        Ok(m) if !may(&m, 0o2) => Some(format!(
            "the file is owned by uid {} gid {} with mode {:o}",
            m.uid(),
            m.gid(),
            m.mode() & 0o777
        )),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::metadata(dir) {
            Ok(m) if !may(&m, 0o3) => Some(format!(
                "it does not exist and its directory {} is owned by uid {} gid {} with mode {:o}",
                dir.display(),
                m.uid(),
                m.gid(),
                m.mode() & 0o777
            )),
            Ok(_) => None,
            Err(e) => Some(format!("{}: {e}", dir.display())),
        },
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn modes_decide_for_another_user() {
        let d = tempfile::tempdir().unwrap();
        let group = std::fs::metadata(d.path()).unwrap().gid();
        // A user who owns nothing here, in no group of it, and one in its group.
        let owner = std::fs::metadata(d.path()).unwrap().uid();
        let other = owner.wrapping_add(4242).max(1);
        let other_gid = group.wrapping_add(4242);
        let log = d.path().join("access.log");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let why = denied_to(&log, other, other_gid).unwrap();
        assert!(
            why.contains("does not exist") && why.contains("mode 755"),
            "{why}"
        );
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            denied_to(&log, other, other_gid),
            None,
            "a world-writable directory"
        );
        std::fs::write(&log, b"").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
        let why = denied_to(&log, other, other_gid).unwrap();
        assert!(why.contains("mode 640"), "{why}");
        assert!(
            denied_to(&log, other, group).is_some(),
            "640: the group may only read"
        );
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o660)).unwrap();
        assert_eq!(
            denied_to(&log, other, group),
            None,
            "group-writable, same group"
        );
        assert_eq!(denied_to(&log, 0, 0), None, "root");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let why = denied_to(&log, other, group).unwrap();
        assert!(why.contains("not searchable"), "{why}");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(denied_to(d.path(), other, group)
            .unwrap()
            .contains("directory"));
    }
}
