//! Where cgroups are: parsing `/proc/self/cgroup` and `/proc/self/mountinfo`, and computing a box's
//! directory in each hierarchy, nested under the caller's own cgroup.

use std::path::{Component, Path, PathBuf};

use super::CgroupError;

/// Controller names the kernel knows for cgroup v1 hierarchies (other super options are flags).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroupEntry {
    /// Hierarchy id (0 is the cgroup v2 unified hierarchy).
    pub hierarchy_id: u32,
    /// Controllers (v1, sorted; named hierarchies as `name=…`); empty for v2.
    pub controllers: Vec<String>,
    /// The caller's cgroup path in that hierarchy (absolute, relative to the hierarchy's root).
    pub path: PathBuf,
}

/// Parses the text of `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Result<Vec<ProcCgroupEntry>, CgroupError> {
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CgroupError::Discover(format!(
                "malformed line {line:?} in /proc/self/cgroup"
            )));
        };
        let hierarchy_id = id.parse().map_err(|_| {
            CgroupError::Discover(format!(
                "malformed hierarchy id in {line:?} (/proc/self/cgroup)"
            ))
        })?;
        let mut controllers: Vec<String> = ctrls
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        controllers.sort();
        entries.push(ProcCgroupEntry {
            hierarchy_id,
            controllers,
            path: PathBuf::from(path),
        });
    }
    Ok(entries)
}

/// Cgroup filesystem version of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// `cgroup` (v1).
    V1,
    /// `cgroup2` (unified).
    V2,
}

/// A cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The cgroup path (in its hierarchy) that the mount point shows.
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// v1 or v2.
    pub kind: MountKind,
    /// v1 controllers (sorted, named hierarchies as `name=…`); empty for v2.
    pub controllers: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(v) = field
                .get(i + 1..i + 4)
                .and_then(|oct| u8::from_str_radix(oct, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of `/proc/self/mountinfo`, keeping cgroup and cgroup2 mounts in file order.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let kind = match right[0] {
            "cgroup" => MountKind::V1,
            "cgroup2" => MountKind::V2,
            _ => continue,
        };
        let mut controllers: Vec<String> = if kind == MountKind::V1 {
            right[2]
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                .map(str::to_owned)
                .collect()
        } else {
            Vec::new()
        };
        controllers.sort();
        mounts.push(CgroupMount {
            root: PathBuf::from(unescape_mountinfo(left[3])),
            mount_point: PathBuf::from(unescape_mountinfo(left[4])),
            kind,
            controllers,
        });
    }
    mounts
}

/// A hierarchy the caller belongs to, resolved to a directory it can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 controllers of the hierarchy (empty for v2).
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// The caller's own cgroup directory in it.
    pub caller_dir: PathBuf,
}

/// Joins a cgroup path (absolute within its hierarchy) onto a mount showing `root`.
fn dir_for(mount: &CgroupMount, cgroup_path: &Path) -> Option<PathBuf> {
    let rel = cgroup_path.strip_prefix(&mount.root).ok()?;
    Some(mount.mount_point.join(rel))
}

/// Picks, for each entry of `/proc/self/cgroup` of the wanted kind, a mount of that hierarchy that
/// shows the caller's cgroup (the one with the shortest root when bind mounts repeat it).
pub fn resolve_hierarchies(
    entries: &[ProcCgroupEntry],
    mounts: &[CgroupMount],
    kind: MountKind,
) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for entry in entries {
        let is_v2_entry = entry.hierarchy_id == 0 && entry.controllers.is_empty();
        if is_v2_entry != (kind == MountKind::V2) {
            continue;
        }
        let best = mounts
            .iter()
            .filter(|m| m.kind == kind && m.controllers == entry.controllers)
            .filter_map(|m| dir_for(m, &entry.path).map(|d| (m, d)))
            .min_by_key(|(m, _)| m.root.components().count());
        if let Some((mount, caller_dir)) = best {
            out.push(Hierarchy {
                controllers: entry.controllers.clone(),
                mount_point: mount.mount_point.clone(),
                caller_dir,
            });
        }
    }
    out
}

/// Rejects `..`, empty ids and ids with a `/`: a box's cgroup must stay where we computed it.
fn validate(cgroups_path: Option<&Path>, id: &str) -> Result<(), CgroupError> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(CgroupError::InvalidPath {
            path: PathBuf::from(id),
            why: "a box id used as a cgroup name must be non-empty and contain no '/'".into(),
        });
    }
    if let Some(p) = cgroups_path {
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(CgroupError::InvalidPath {
                path: p.to_path_buf(),
                why: "'..' is not allowed (it could leave the caller's cgroup)".into(),
            });
        }
        if p.components()
            .all(|c| matches!(c, Component::RootDir | Component::CurDir))
        {
            return Err(CgroupError::InvalidPath {
                path: p.to_path_buf(),
                why: "it names a hierarchy root or the caller's own cgroup, not a new one".into(),
            });
        }
    }
    Ok(())
}

/// The box's directory in one hierarchy: `<caller dir>/<relative path>`, `<caller dir>/box/<id>`
/// when no path is given, or `<mount point>/<absolute path>` for an absolute path.
pub fn box_dir(
    hierarchy: &Hierarchy,
    cgroups_path: Option<&Path>,
    id: &str,
) -> Result<PathBuf, CgroupError> {
    validate(cgroups_path, id)?;
    Ok(match cgroups_path {
        None => hierarchy.caller_dir.join("box").join(id),
        Some(p) if p.is_absolute() => {
            let rel: PathBuf = p
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect();
            hierarchy.mount_point.join(rel)
        }
        Some(p) => {
            let rel: PathBuf = p
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect();
            hierarchy.caller_dir.join(rel)
        }
    })
}

/// The directory below which this box may write cgroup files: the caller's own directory when the
/// box is inside it, otherwise (an explicit absolute path elsewhere) the deepest existing ancestor.
pub fn write_base(caller_dir: &Path, dir: &Path) -> PathBuf {
    if dir.starts_with(caller_dir) {
        return caller_dir.to_path_buf();
    }
    let mut base = dir.to_path_buf();
    while !base.is_dir() {
        if !base.pop() {
            break;
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
4:memory:/process_api/6108577dbd429a54012cd6dd74ec40c7\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const COMOUNT_CGROUP: &str = "12:cpu,cpuacct:/user.slice\n11:name=systemd:/user.slice/s\n\
10:net_cls,net_prio:/\n0::/user.slice/s\n";
    const COMOUNT_MOUNTINFO: &str = "\
25 24 0:22 / /sys/fs/cgroup/systemd rw,nosuid shared:6 - cgroup cgroup rw,xattr,name=systemd
26 24 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:7 - cgroup cgroup rw,cpu,cpuacct
27 24 0:24 / /sys/fs/cgroup/net_cls,net_prio rw shared:8 - cgroup cgroup rw,net_cls,net_prio
28 24 0:25 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

    const V2_CGROUP: &str = "0::/user.slice/user-1000.slice/session-2.scope\n";
    const V2_MOUNTINFO: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/root rw
35 22 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn parse_proc_cgroup_reads_hybrid_lines() {
        let e = parse_proc_cgroup(HYBRID_CGROUP).expect("parses");
        assert_eq!(e.len(), 10);
        assert_eq!(e[0].controllers, vec!["name=systemd"]);
        assert_eq!(
            e[5].path,
            PathBuf::from("/process_api/6108577dbd429a54012cd6dd74ec40c7")
        );
        assert_eq!(e[9].hierarchy_id, 0);
        assert!(e[9].controllers.is_empty());
    }

    #[test]
    fn parse_proc_cgroup_sorts_comounted_controllers_and_rejects_garbage() {
        let e = parse_proc_cgroup("3:cpuacct,cpu:/a\n").expect("parses");
        assert_eq!(e[0].controllers, vec!["cpu", "cpuacct"]);
        assert!(parse_proc_cgroup("nonsense\n").is_err());
        assert!(parse_proc_cgroup("x:cpu:/\n").is_err());
    }

    #[test]
    fn parse_mountinfo_keeps_cgroup_mounts_with_controllers() {
        let m = parse_mountinfo(COMOUNT_MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].controllers, vec!["name=systemd"]);
        assert_eq!(m[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            m[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(m[3].kind, MountKind::V2);
        assert!(parse_mountinfo(V2_MOUNTINFO).len() == 1);
    }

    #[test]
    fn pure_v2_host_resolves_the_unified_hierarchy_only() {
        let e = parse_proc_cgroup(V2_CGROUP).expect("parses");
        let m = parse_mountinfo(V2_MOUNTINFO);
        assert!(resolve_hierarchies(&e, &m, MountKind::V1).is_empty());
        let v2 = resolve_hierarchies(&e, &m, MountKind::V2);
        assert_eq!(
            v2[0].caller_dir,
            PathBuf::from("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope")
        );
    }

    #[test]
    fn parse_mountinfo_unescapes_spaces() {
        let m = parse_mountinfo("1 2 0:1 /a\\040b /mnt/x\\040y rw - cgroup2 none rw\n");
        assert_eq!(m[0].root, PathBuf::from("/a b"));
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/x y"));
    }

    #[test]
    fn hybrid_host_resolves_v1_dirs_under_callers_cgroup() {
        let e = parse_proc_cgroup(HYBRID_CGROUP).expect("parses");
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        let v1 = resolve_hierarchies(&e, &m, MountKind::V1);
        assert_eq!(v1.len(), 9);
        let mem = v1
            .iter()
            .find(|h| h.controllers == ["memory"])
            .expect("memory hierarchy");
        assert_eq!(
            mem.caller_dir,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/6108577dbd429a54012cd6dd74ec40c7")
        );
        let v2 = resolve_hierarchies(&e, &m, MountKind::V2);
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].caller_dir, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn comounted_and_named_hierarchies_resolve() {
        let e = parse_proc_cgroup(COMOUNT_CGROUP).expect("parses");
        let m = parse_mountinfo(COMOUNT_MOUNTINFO);
        let v1 = resolve_hierarchies(&e, &m, MountKind::V1);
        assert_eq!(v1.len(), 3);
        assert_eq!(
            v1[0].caller_dir,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/user.slice")
        );
        assert_eq!(
            v1[1].caller_dir,
            PathBuf::from("/sys/fs/cgroup/systemd/user.slice/s")
        );
    }

    #[test]
    fn mount_root_inside_a_container_is_stripped() {
        let e = parse_proc_cgroup("0::/docker/abc/sub\n").expect("parses");
        let m = parse_mountinfo("1 2 0:1 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let v2 = resolve_hierarchies(&e, &m, MountKind::V2);
        assert_eq!(v2[0].caller_dir, PathBuf::from("/sys/fs/cgroup/sub"));
        // A mount that does not show the caller's cgroup is not usable.
        let m = parse_mountinfo("1 2 0:1 /other /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert!(resolve_hierarchies(&e, &m, MountKind::V2).is_empty());
    }

    fn memory_hierarchy() -> Hierarchy {
        Hierarchy {
            controllers: vec!["memory".into()],
            mount_point: PathBuf::from("/sys/fs/cgroup/memory"),
            caller_dir: PathBuf::from("/sys/fs/cgroup/memory/process_api/h"),
        }
    }

    #[test]
    fn default_box_dir_is_box_id_under_caller() {
        let d = box_dir(&memory_hierarchy(), None, "b1").expect("valid");
        assert_eq!(
            d,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/h/box/b1")
        );
    }

    #[test]
    fn relative_cgroups_path_nests_under_caller() {
        let d = box_dir(&memory_hierarchy(), Some(Path::new("ci/job7")), "b1").expect("valid");
        assert_eq!(
            d,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/h/ci/job7")
        );
    }

    #[test]
    fn absolute_cgroups_path_is_taken_from_mount_root() {
        let d = box_dir(&memory_hierarchy(), Some(Path::new("/pods/p1")), "b1").expect("valid");
        assert_eq!(d, PathBuf::from("/sys/fs/cgroup/memory/pods/p1"));
    }

    #[test]
    fn escaping_or_empty_paths_are_rejected() {
        let h = memory_hierarchy();
        assert!(box_dir(&h, Some(Path::new("../x")), "b").is_err());
        assert!(box_dir(&h, Some(Path::new("/")), "b").is_err());
        assert!(box_dir(&h, None, "a/b").is_err());
        assert!(box_dir(&h, None, "").is_err());
    }

    #[test]
    fn write_base_is_caller_dir_for_nested_boxes() {
        let caller = Path::new("/sys/fs/cgroup/memory/process_api/h");
        let dir = caller.join("box/b1");
        assert_eq!(write_base(caller, &dir), caller.to_path_buf());
    }
}
