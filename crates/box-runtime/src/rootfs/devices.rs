//! A minimal /dev: the standard character devices (made with mknod as root, bind-mounted from
//! the host inside a user namespace), config.json's extra devices, and the usual symlinks.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;

use nix::fcntl::OFlag;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::LinuxDeviceType;

use super::safe_path::{mkdir_all_in_root, open_in_root};
use super::RootfsPlan;
use crate::error::{Context, Error, Result};

/// One device node to provide.
#[derive(Debug, Clone)]
struct DeviceNode {
    path: PathBuf,
    kind: libc::mode_t,
    major: u32,
    minor: u32,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The devices every box gets.
const DEFAULT_DEVICES: [(&str, u32, u32); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Links every box gets: (link, target).
const DEFAULT_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Creates /dev's nodes and links inside the rootfs (before pivot_root).
pub fn populate(plan: &RootfsPlan<'_>, root: BorrowedFd<'_>) -> Result<()> {
    let mut nodes: Vec<DeviceNode> = DEFAULT_DEVICES
        .iter()
        .map(|(p, major, minor)| DeviceNode {
            path: PathBuf::from(p),
            kind: libc::S_IFCHR,
            major: *major,
            minor: *minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
        .collect();
    let extra = plan
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for d in extra {
        let kind = match d.typ() {
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        nodes.retain(|n| n.path != *d.path());
        nodes.push(DeviceNode {
            path: d.path().clone(),
            kind,
            major: u32::try_from(d.major()).unwrap_or(0),
            minor: u32::try_from(d.minor()).unwrap_or(0),
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    for node in &nodes {
        make_node(plan, root, node)?;
    }
    let dev = mkdir_all_in_root(root, Path::new("/dev"), 0o755).ctx(|| "cannot create /dev")?;
    for (link, target) in DEFAULT_LINKS {
        symlink_in(dev.as_fd(), link, target)?;
    }
    if open_in_root(root, Path::new("/proc/kcore"), libc::O_PATH).is_ok() {
        symlink_in(dev.as_fd(), "core", "/proc/kcore")?;
    }
    // /dev/ptmx must be the devpts instance's multiplexer of the box, not the host's.
    if open_in_root(root, Path::new("/dev/pts/ptmx"), libc::O_PATH).is_ok() {
        let _ = nix::unistd::unlinkat(dev.as_fd(), "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
        symlink_in(dev.as_fd(), "ptmx", "pts/ptmx")?;
    }
    Ok(())
}

fn symlink_in(dir: BorrowedFd<'_>, link: &str, target: &str) -> Result<()> {
    match nix::unistd::symlinkat(target, dir, link) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e).ctx(|| format!("cannot link /dev/{link} to {target}")),
    }
}

fn make_node(plan: &RootfsPlan<'_>, root: BorrowedFd<'_>, node: &DeviceNode) -> Result<()> {
    let parent = node.path.parent().unwrap_or(Path::new("/dev"));
    let name = node.path.file_name().unwrap_or_default();
    let dir = mkdir_all_in_root(root, parent, 0o755)
        .ctx(|| format!("cannot create {}", parent.display()))?;
    let rdev = libc::makedev(node.major, node.minor);
    // Whatever the image left at this name is replaced, never followed: a planted symlink is
    // resolved against the host's / before pivot_root (CVE-2025-31133 class).
    match nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            return Err(Error::config(format!(
                "{} is a directory in the rootfs; a device node belongs there",
                node.path.display()
            )))
        }
        Ok(_) => nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .ctx(|| format!("cannot replace {} from the image", node.path.display()))?,
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).ctx(|| format!("cannot stat {}", node.path.display())),
    }
    if !plan.in_user_ns {
        let cname = CString::new(name.as_encoded_bytes()).unwrap_or_default();
        // SAFETY: `dir` is a live directory descriptor and `cname` a valid C string.
        let rc =
            unsafe { libc::mknodat(dir.as_raw_fd(), cname.as_ptr(), node.kind | node.mode, rdev) };
        if rc == 0 {
            return finish_node(dir.as_fd(), node, rdev);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err).ctx(|| format!("cannot mknod {}", node.path.display()));
        }
    }
    // No mknod here (user namespace): bind the host's node onto a fresh empty file.
    let target = nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .ctx(|| format!("cannot create {}", node.path.display()))?;
    mount(
        Some(&node.path),
        format!("/proc/self/fd/{}", target.as_raw_fd()).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("cannot bind host {} into the box", node.path.display()))
}

/// Mode and owner of a node we just made, set through a descriptor of that very node.
fn finish_node(dir: BorrowedFd<'_>, node: &DeviceNode, rdev: libc::dev_t) -> Result<()> {
    let fd = nix::fcntl::openat(
        dir,
        node.path.file_name().unwrap_or_default(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("cannot open {}", node.path.display()))?;
    let st =
        nix::sys::stat::fstat(fd.as_fd()).ctx(|| format!("cannot stat {}", node.path.display()))?;
    if st.st_mode & libc::S_IFMT != node.kind || st.st_rdev != rdev {
        return Err(Error::Init(format!(
            "{} changed under us while it was being made",
            node.path.display()
        )));
    }
    // mknod is subject to the umask: set the mode again, on the node itself.
    std::fs::set_permissions(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        std::fs::Permissions::from_mode(node.mode),
    )
    .ctx(|| format!("cannot chmod {}", node.path.display()))?;
    nix::unistd::fchownat(
        fd.as_fd(),
        "",
        Some(nix::unistd::Uid::from_raw(node.uid)),
        Some(nix::unistd::Gid::from_raw(node.gid)),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .ctx(|| format!("cannot chown {}", node.path.display()))
}
