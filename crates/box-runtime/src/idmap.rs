//! Uid/gid maps of a new user namespace: written directly when the kernel allows it (root, or one
//! mapping of the caller's own id), otherwise through the setuid helpers newuidmap/newgidmap.

use std::fs;
use std::process::Command;

use oci_spec::runtime::LinuxIdMapping;

use crate::error::{Context, Error, Result};

/// Writes the uid and gid maps of process `pid` (a child just cloned into a new user namespace).
pub fn write_maps(pid: i32, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<()> {
    if uids.is_empty() || gids.is_empty() {
        return Err(Error::config(
            "a new user namespace needs linux.uidMappings and linux.gidMappings",
        ));
    }
    let privileged = nix::unistd::geteuid().is_root();
    if privileged || is_own_id_only(uids, nix::unistd::geteuid().as_raw()) {
        write_direct(pid, "uid_map", uids)?;
    } else {
        run_helper("newuidmap", pid, uids)?;
    }
    if privileged {
        write_direct(pid, "gid_map", gids)?;
    } else if is_own_id_only(gids, nix::unistd::getegid().as_raw()) {
        // Unprivileged gid maps require giving up setgroups(2) in the namespace.
        fs::write(format!("/proc/{pid}/setgroups"), "deny")
            .ctx(|| format!("cannot write /proc/{pid}/setgroups"))?;
        write_direct(pid, "gid_map", gids)?;
    } else {
        run_helper("newgidmap", pid, gids)?;
    }
    Ok(())
}

/// Whether `maps` is the single mapping of the caller's own id, which needs no helper.
pub fn is_own_id_only(maps: &[LinuxIdMapping], own: u32) -> bool {
    matches!(maps, [m] if m.host_id() == own && m.size() == 1)
}

/// The map file text: one "inside outside count" line per range.
pub fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

fn write_direct(pid: i32, file: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    fs::write(&path, map_text(maps)).ctx(|| {
        format!(
            "cannot write {path} ({}): the mapping must use ids you own, or install uidmap for newuidmap/newgidmap",
            map_text(maps).trim().replace('\n', ", ")
        )
    })
}

fn run_helper(helper: &str, pid: i32, maps: &[LinuxIdMapping]) -> Result<()> {
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.arg(m.container_id().to_string())
            .arg(m.host_id().to_string())
            .arg(m.size().to_string());
    }
    let out = cmd.output().ctx(|| {
        format!("cannot run {helper} (install Debian's uidmap package for several id ranges)")
    })?;
    if !out.status.success() {
        return Err(Error::Init(format!(
            "{helper} failed ({}): {} (check /etc/subuid and /etc/subgid ranges for this user)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Whether this process runs in a user namespace other than the initial one (e.g. under
/// rootless podman): root there is not root on the host.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Whether the runtime lacks host root: not uid 0, or uid 0 of a user namespace.
pub fn running_rootless() -> bool {
    !nix::unistd::geteuid().is_root() || in_user_namespace()
}

/// The first subordinate id range of the user `name` (uid `id`) in an /etc/subuid-style file:
/// lines `user:start:count`, where `user` is a name or a numeric id.
pub fn subordinate_range(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        (who == name || who.parse::<u32>() == Ok(id))
            .then(|| Some((start.parse().ok()?, count.parse().ok()?)))
            .flatten()
    })
}

/// Maps an id inside the namespace to the host id, `None` when it is not mapped.
pub fn to_host(maps: &[LinuxIdMapping], inside: u32) -> Option<u32> {
    maps.iter().find_map(|m| {
        let start = m.container_id();
        (inside >= start && inside - start < m.size()).then(|| m.host_id() + (inside - start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;

    fn map(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(s)
            .build()
            .expect("mapping")
    }

    #[test]
    fn subordinate_ranges_are_found_by_name_or_id() {
        let path = std::env::temp_dir().join(format!("box-subuid-{}", std::process::id()));
        std::fs::write(&path, "alice:100000:65536\n1001:200000:1000\nbad line\n").expect("write");
        let file = path.to_str().expect("utf8");
        assert_eq!(
            subordinate_range(file, "alice", 1000),
            Some((100000, 65536))
        );
        assert_eq!(subordinate_range(file, "bob", 1001), Some((200000, 1000)));
        assert_eq!(subordinate_range(file, "carol", 1002), None);
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn single_own_mapping_needs_no_helper() {
        assert!(is_own_id_only(&[map(0, 1000, 1)], 1000));
        assert!(!is_own_id_only(
            &[map(0, 1000, 1), map(1, 100000, 65536)],
            1000
        ));
        assert!(!is_own_id_only(&[map(0, 1001, 1)], 1000));
    }

    #[test]
    fn map_text_and_lookup_follow_the_ranges() {
        let maps = [map(0, 1000, 1), map(1, 100000, 65536)];
        assert_eq!(map_text(&maps), "0 1000 1\n1 100000 65536\n");
        assert_eq!(to_host(&maps, 0), Some(1000));
        assert_eq!(to_host(&maps, 5), Some(100004));
        assert_eq!(to_host(&maps, 70000), None);
    }
}
