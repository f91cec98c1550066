//! The box's root filesystem: propagation, config.json's mounts, /dev, pivot_root (or chroot),
//! masked and read-only paths, the read-only root. Runs in the init, inside the box's mount namespace.

pub mod devices;
pub mod options;
pub mod safe_path;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::{Mount, Spec};

use crate::error::{Context, Error, Result};
use options::{parse, REMOUNT_FLAGS};
use safe_path::{ensure_file_in_root, fd_path, mkdir_all_in_root, open_in_root};

/// What rootfs setup needs to know about the box.
#[derive(Debug)]
pub struct RootfsPlan<'a> {
    /// The box's own cgroup directories on the host (empty: it has none, and sees the
    /// caller's). Known before the init joins them, so the cgroup mount needs no waiting.
    pub cgroup_dirs: &'a [PathBuf],
    /// The spec (mounts, masked paths, devices, propagation).
    pub spec: &'a Spec,
    /// Absolute rootfs path on the host.
    pub rootfs: &'a Path,
    /// Absolute bundle path (relative bind sources are taken from it).
    pub bundle: &'a Path,
    /// Whether the init runs in a user namespace of its own (no mknod; bind devices instead).
    pub in_user_ns: bool,
    /// Use chroot instead of pivot_root (`--no-pivot`).
    pub no_pivot: bool,
}

const NONE: Option<&str> = None;

/// Everything before the hooks that run ahead of pivot_root: propagation, the rootfs bind,
/// every configured mount, and /dev.
pub fn prepare(plan: &RootfsPlan<'_>) -> Result<()> {
    // Nothing done here may leak back to the host.
    mount(NONE, "/", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
        .ctx(|| "cannot make / a recursive slave mount")?;
    mount(
        Some(plan.rootfs),
        plan.rootfs,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .ctx(|| format!("cannot bind-mount rootfs {}", plan.rootfs.display()))?;
    let root =
        File::open(plan.rootfs).ctx(|| format!("cannot open rootfs {}", plan.rootfs.display()))?;
    let mounts = plan.spec.mounts().clone().unwrap_or_default();
    let mut cgroups = None;
    for m in &mounts {
        mount_one(plan, root.as_fd(), m, &mut cgroups)?;
    }
    let dev_is_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && m.options()
                .as_ref()
                .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
    });
    if !dev_is_bound {
        devices::populate(plan, root.as_fd())?;
    }
    Ok(())
}

/// Which host directory the box sees for each cgroup hierarchy: its own directory where it has
/// one, else the cgroup it runs in (the caller's: rootless without delegation). Read from the
/// host's view, before the box's cgroup namespace exists.
fn cgroup_view(plan: &RootfsPlan<'_>) -> Result<CgroupView> {
    let own = own_cgroups().ctx(|| "cannot read /proc/self/cgroup")?;
    let mounts = cgroup_mounts(plan.rootfs).ctx(|| "cannot read /proc/self/mountinfo")?;
    let sources = mounts
        .into_iter()
        .filter_map(|h| {
            let src = match plan
                .cgroup_dirs
                .iter()
                .find(|d| d.starts_with(&h.mount_point))
            {
                Some(dir) => dir.clone(),
                None => {
                    let c = own
                        .iter()
                        .find(|c| c.v2 == h.v2 && (h.v2 || c.controllers == h.name))?;
                    h.mount_point.join(c.path.trim_start_matches('/'))
                }
            };
            Some((h, src))
        })
        .collect();
    Ok(CgroupView { sources })
}

/// Each host cgroup hierarchy with the directory of it the box sees.
#[derive(Debug)]
struct CgroupView {
    sources: Vec<(CgroupMount, PathBuf)>,
}

fn mount_one(
    plan: &RootfsPlan<'_>,
    root: BorrowedFd<'_>,
    m: &Mount,
    cgroups: &mut Option<CgroupView>,
) -> Result<()> {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(Error::config(format!(
            "mount destination {} must be absolute",
            dest.display()
        )));
    }
    let opts = parse(m.options().as_deref().unwrap_or(&[])).map_err(Error::config)?;
    let typ = m
        .typ()
        .as_deref()
        .unwrap_or(if opts.bind { "bind" } else { "" });
    let source = m.source().clone().unwrap_or_default();
    if typ == "cgroup" || typ == "cgroup2" {
        if cgroups.is_none() {
            *cgroups = Some(cgroup_view(plan)?);
        }
        let Some(view) = cgroups.as_ref() else {
            return Ok(());
        };
        return mount_cgroup(root, dest, &opts, typ, view);
    }
    let target = if opts.bind {
        let src = if source.is_absolute() {
            source.clone()
        } else {
            plan.bundle.join(&source)
        };
        let meta = std::fs::metadata(&src)
            .ctx(|| format!("bind source {} for {}", src.display(), dest.display()))?;
        let fd = if meta.is_dir() {
            mkdir_all_in_root(root, dest, 0o755)
        } else {
            ensure_file_in_root(root, dest)
        }
        .ctx(|| format!("cannot create mount point {}", dest.display()))?;
        let target = fd_path(&fd);
        mount(
            Some(&src),
            target.as_str(),
            NONE,
            opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            NONE,
        )
        .ctx(|| format!("cannot bind-mount {} on {}", src.display(), dest.display()))?;
        if opts.flags.intersects(REMOUNT_FLAGS) {
            // Reopen: the new mount now covers the old mount point.
            let fd = open_in_root(root, dest, libc::O_PATH)
                .ctx(|| format!("cannot reopen {}", dest.display()))?;
            remount_bind(&fd_path(&fd), opts.flags & REMOUNT_FLAGS)
                .ctx(|| format!("cannot remount {} with {:?}", dest.display(), m.options()))?;
        }
        fd
    } else {
        let fd = mkdir_all_in_root(root, dest, 0o755)
            .ctx(|| format!("cannot create mount point {}", dest.display()))?;
        let target = fd_path(&fd);
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        match mount(Some(&source), target.as_str(), Some(typ), opts.flags, data) {
            Ok(()) => {}
            // sysfs needs a network namespace of the box's own user namespace: bind the host's.
            Err(nix::errno::Errno::EPERM) if typ == "sysfs" => {
                mount(
                    Some("/sys"),
                    target.as_str(),
                    NONE,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    NONE,
                )
                .ctx(|| format!("cannot bind /sys on {}", dest.display()))?;
                let fd = open_in_root(root, dest, libc::O_PATH)
                    .ctx(|| format!("cannot reopen {}", dest.display()))?;
                remount_bind(&fd_path(&fd), opts.flags & REMOUNT_FLAGS)
                    .ctx(|| format!("cannot remount {}", dest.display()))?;
            }
            Err(e) => {
                return Err(e).ctx(|| {
                    format!(
                        "cannot mount {typ} ({}) on {} with {:?}",
                        source.display(),
                        dest.display(),
                        m.options().as_deref().unwrap_or(&[])
                    )
                })
            }
        }
        fd
    };
    if !opts.propagation.is_empty() {
        let fd = open_in_root(root, dest, libc::O_PATH)
            .ctx(|| format!("cannot reopen {}", dest.display()))?;
        for p in &opts.propagation {
            mount(NONE, fd_path(&fd).as_str(), NONE, *p, NONE)
                .ctx(|| format!("cannot set propagation of {}", dest.display()))?;
        }
    }
    drop(target);
    Ok(())
}

/// Remounts a bind mount with `flags`, keeping the flags a user namespace may not clear.
pub fn remount_bind(target: &str, flags: MsFlags) -> nix::Result<()> {
    let locked = locked_flags(target);
    mount(
        NONE,
        target,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked,
        NONE,
    )
}

/// The flags of the mount at `target` that a remount must repeat (the kernel locks them in a user namespace).
fn locked_flags(target: &str) -> MsFlags {
    let Ok(st) = statvfs(target) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// The `cgroup` mount: a tmpfs holding a bind of each of the box's own cgroup directories
/// (cgroup v1), or the box's cgroup2 directory itself. The box never sees other cgroups.
fn mount_cgroup(
    root: BorrowedFd<'_>,
    dest: &Path,
    opts: &options::MountOptions,
    typ: &str,
    view: &CgroupView,
) -> Result<()> {
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let base = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let v2_only = view.sources.iter().all(|(h, _)| h.v2) && typ != "cgroup" || typ == "cgroup2";
    let dest_fd = mkdir_all_in_root(root, dest, 0o755)
        .ctx(|| format!("cannot create mount point {}", dest.display()))?;
    if v2_only {
        let Some((_, src)) = view.sources.iter().find(|(h, _)| h.v2) else {
            return Err(Error::Unsupported(
                "no cgroup2 hierarchy is mounted on the host".into(),
            ));
        };
        let at = Reopen {
            dir: root,
            rel: dest,
            shown: dest,
        };
        return bind_cgroup_dir(&at, src, &fd_path(&dest_fd), base, ro);
    }
    mount(
        Some("tmpfs"),
        fd_path(&dest_fd).as_str(),
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )
    .ctx(|| format!("cannot mount tmpfs on {}", dest.display()))?;
    // The new tmpfs: every hierarchy's directory is made and reached from it (one short lookup
    // each instead of a walk from the rootfs).
    let tmpfs = open_in_root(root, dest, libc::O_PATH | libc::O_DIRECTORY)
        .ctx(|| format!("cannot open {}", dest.display()))?;
    for (h, src) in &view.sources {
        let key = h.name.as_str();
        let name = if h.v2 {
            "unified"
        } else {
            key.trim_start_matches("name=")
        };
        let sub = dest.join(name);
        let fd = mkdir_all_in_root(tmpfs.as_fd(), Path::new(name), 0o755)
            .ctx(|| format!("cannot create {}", sub.display()))?;
        let at = Reopen {
            dir: tmpfs.as_fd(),
            rel: Path::new(name),
            shown: &sub,
        };
        bind_cgroup_dir(&at, src, &fd_path(&fd), base, ro)?;
        // Co-mounted controllers (cpu,cpuacct) also get a link per controller name.
        if name.contains(',') {
            for part in name.split(',') {
                let _ = nix::unistd::symlinkat(name, tmpfs.as_fd(), part);
            }
        }
    }
    if ro {
        let fd = open_in_root(root, dest, libc::O_PATH)
            .ctx(|| format!("cannot reopen {}", dest.display()))?;
        mount(
            NONE,
            fd_path(&fd).as_str(),
            NONE,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
            Some("mode=755"),
        )
        .ctx(|| format!("cannot remount {} read-only", dest.display()))?;
    }
    Ok(())
}

/// Where a just-made mount point is found again (inside `dir`, at `rel`), and its path in the
/// box for messages.
struct Reopen<'a> {
    dir: BorrowedFd<'a>,
    rel: &'a Path,
    shown: &'a Path,
}

fn bind_cgroup_dir(
    at: &Reopen<'_>,
    src: &Path,
    target: &str,
    base: MsFlags,
    ro: bool,
) -> Result<()> {
    let dest = at.shown;
    mount(
        Some(src),
        target,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .ctx(|| format!("cannot bind {} on {}", src.display(), dest.display()))?;
    let flags = base
        | if ro {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
    // Reopen: the descriptor behind `target` names the directory under the new mount.
    let fd = open_in_root(at.dir, at.rel, libc::O_PATH)
        .ctx(|| format!("cannot reopen {}", dest.display()))?;
    remount_bind(&fd_path(&fd), flags).ctx(|| format!("cannot remount {}", dest.display()))
}

/// One line of /proc/self/cgroup.
struct OwnCgroup {
    v2: bool,
    controllers: String,
    path: String,
}

fn own_cgroups() -> std::io::Result<Vec<OwnCgroup>> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let id = parts.next()?;
            let controllers = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            Some(OwnCgroup {
                v2: id == "0" && controllers.is_empty(),
                controllers,
                path,
            })
        })
        .collect())
}

/// One cgroup hierarchy mounted on the host (from mountinfo).
#[derive(Debug)]
struct CgroupMount {
    v2: bool,
    /// Controller list as /proc/self/cgroup names it (e.g. "cpu,cpuacct", "name=systemd").
    name: String,
    mount_point: PathBuf,
}

/// The host's cgroup mounts, one per hierarchy: copies below the rootfs (an rbind of /sys) are
/// skipped, since the cgroup mount covers them.
fn cgroup_mounts(rootfs: &Path) -> std::io::Result<Vec<CgroupMount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split_whitespace();
        let fstype = post.next().unwrap_or("");
        let _src = post.next();
        let super_opts = post.next().unwrap_or("");
        let mount_point = pre.split_whitespace().nth(4).unwrap_or("");
        // Only mounts of a hierarchy's root are usable as bind sources.
        if pre.split_whitespace().nth(3) != Some("/") || Path::new(mount_point).starts_with(rootfs)
        {
            continue;
        }
        match fstype {
            "cgroup2" if !out.iter().any(|m: &CgroupMount| m.v2) => out.push(CgroupMount {
                v2: true,
                name: String::new(),
                mount_point: PathBuf::from(mount_point),
            }),
            "cgroup" => {
                let ctrls: Vec<&str> = super_opts
                    .split(',')
                    .filter(|o| {
                        !matches!(
                            *o,
                            "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec"
                        ) && !o.starts_with("release_agent")
                            && *o != "xattr"
                            && *o != "clone_children"
                            && *o != "noprefix"
                            && *o != "cpuset_v2_mode"
                    })
                    .collect();
                let name = ctrls.join(",");
                if !out.iter().any(|m: &CgroupMount| !m.v2 && m.name == name) {
                    out.push(CgroupMount {
                        v2: false,
                        name,
                        mount_point: PathBuf::from(mount_point),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Makes the rootfs the box's `/`: pivot_root (old root detached) or, with `no_pivot`, MS_MOVE + chroot.
pub fn pivot(plan: &RootfsPlan<'_>) -> Result<()> {
    let new_root = File::open(plan.rootfs).ctx(|| "cannot open rootfs")?;
    if plan.no_pivot {
        nix::unistd::fchdir(new_root.as_fd()).ctx(|| "cannot enter rootfs")?;
        mount(Some("."), "/", NONE, MsFlags::MS_MOVE, NONE)
            .ctx(|| "cannot move the rootfs mount to /")?;
        nix::unistd::chroot(".").ctx(|| "cannot chroot into the rootfs")?;
    } else {
        let old_root = File::open("/").ctx(|| "cannot open /")?;
        nix::unistd::fchdir(new_root.as_fd()).ctx(|| "cannot enter rootfs")?;
        nix::unistd::pivot_root(".", ".")
            .ctx(|| "cannot pivot_root into the rootfs (on a ramfs root, use --no-pivot)")?;
        nix::unistd::fchdir(old_root.as_fd()).ctx(|| "cannot enter the old root")?;
        mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
            .ctx(|| "cannot make the old root a slave")?;
        umount2(".", MntFlags::MNT_DETACH).ctx(|| "cannot detach the old root")?;
    }
    nix::unistd::chdir("/").ctx(|| "cannot chdir to /")?;
    Ok(())
}

/// After pivot: root propagation, masked paths, read-only paths, read-only root.
pub fn finish(plan: &RootfsPlan<'_>) -> Result<()> {
    let linux = plan.spec.linux().as_ref();
    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        mount(NONE, "/", NONE, options::propagation_flag(p), NONE)
            .ctx(|| format!("cannot set rootfs propagation {p}"))?;
    }
    let root = File::open("/").ctx(|| "cannot open /")?;
    if let Some(paths) = linux.and_then(|l| l.masked_paths().as_ref()) {
        let null = verified_dev_null(root.as_fd())?;
        for p in paths {
            mask_path(root.as_fd(), Path::new(p), &null)?;
        }
    }
    if let Some(paths) = linux.and_then(|l| l.readonly_paths().as_ref()) {
        for p in paths {
            readonly_path(root.as_fd(), Path::new(p))?;
        }
    }
    if plan.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount_bind("/", MsFlags::MS_RDONLY).ctx(|| "cannot remount the rootfs read-only")?;
    }
    Ok(())
}

/// /dev/null of the box, checked to really be the 1:3 character device before it is used to
/// hide files (a planted symlink or regular file would defeat masking: CVE-2025-31133).
fn verified_dev_null(root: BorrowedFd<'_>) -> Result<OwnedFd> {
    let fd = open_in_root(
        root,
        Path::new("/dev/null"),
        libc::O_PATH | libc::O_NOFOLLOW,
    )
    .ctx(|| "cannot open /dev/null to mask paths")?;
    let st = nix::sys::stat::fstat(fd.as_fd()).ctx(|| "cannot stat /dev/null")?;
    let is_chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if !is_chr || st.st_rdev != libc::makedev(1, 3) {
        return Err(Error::Init(
            "/dev/null in the box is not the null device (1:3); refusing to use it for masking"
                .into(),
        ));
    }
    Ok(fd)
}

fn mask_path(root: BorrowedFd<'_>, path: &Path, null: &OwnedFd) -> Result<()> {
    let fd = match open_in_root(root, path, libc::O_PATH | libc::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("cannot open masked path {}", path.display())),
    };
    let st = nix::sys::stat::fstat(fd.as_fd()).ctx(|| format!("cannot stat {}", path.display()))?;
    let target = fd_path(&fd);
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        mount(
            Some("tmpfs"),
            target.as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k"),
        )
    } else {
        mount(
            Some(fd_path(null).as_str()),
            target.as_str(),
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )
    }
    .ctx(|| format!("cannot mask {}", path.display()))
}

fn readonly_path(root: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let fd = match open_in_root(root, path, libc::O_PATH | libc::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("cannot open read-only path {}", path.display())),
    };
    let target = fd_path(&fd);
    mount(
        Some(target.as_str()),
        target.as_str(),
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .ctx(|| format!("cannot bind {} to itself", path.display()))?;
    let fd = open_in_root(root, path, libc::O_PATH | libc::O_NOFOLLOW)
        .ctx(|| format!("cannot reopen {}", path.display()))?;
    remount_bind(&fd_path(&fd), MsFlags::MS_RDONLY | MsFlags::MS_REC)
        .ctx(|| format!("cannot make {} read-only", path.display()))
}
