//! A minimal /dev: the standard character devices (made with mknod as root, bind-mounted from
//! the host inside a user namespace), config.json's extra devices, and the usual symlinks.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::LinuxDeviceType;

use super::safe_path::{ensure_file_in_root, fd_path, mkdir_all_in_root, open_in_root};
use super::RootfsPlan;
use crate::error::{Context, Result};

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
    if !plan.in_user_ns {
        let cname = CString::new(name.as_encoded_bytes()).unwrap_or_default();
        let dev = libc::makedev(node.major, node.minor);
        // SAFETY: `dir` is a live directory descriptor and `cname` a valid C string.
        let rc =
            unsafe { libc::mknodat(dir.as_raw_fd(), cname.as_ptr(), node.kind | node.mode, dev) };
        let err = std::io::Error::last_os_error();
        if rc == 0 || err.raw_os_error() == Some(libc::EEXIST) {
            let fd = open_in_root(root, &node.path, libc::O_PATH | libc::O_NOFOLLOW)
                .ctx(|| format!("cannot open {}", node.path.display()))?;
            // Mode again: mknod is subject to the umask.
            nix::sys::stat::fchmodat(
                dir.as_fd(),
                name,
                nix::sys::stat::Mode::from_bits_truncate(node.mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .ctx(|| format!("cannot chmod {}", node.path.display()))?;
            nix::unistd::fchownat(
                fd.as_fd(),
                "",
                Some(nix::unistd::Uid::from_raw(node.uid)),
                Some(nix::unistd::Gid::from_raw(node.gid)),
                nix::fcntl::AtFlags::AT_EMPTY_PATH,
            )
            .ctx(|| format!("cannot chown {}", node.path.display()))?;
            return Ok(());
        }
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err).ctx(|| format!("cannot mknod {}", node.path.display()));
        }
    }
    // No mknod here (user namespace): bind the host's node.
    let target = ensure_file_in_root(root, &node.path)
        .ctx(|| format!("cannot create {}", node.path.display()))?;
    mount(
        Some(&node.path),
        fd_path(&target).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("cannot bind host {} into the box", node.path.display()))
}
