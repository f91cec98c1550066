//! Paths from config.json resolved inside the box's rootfs without ever leaving it, even through
//! symlinks planted in the image (openat2 RESOLVE_IN_ROOT; the defence against CVE-2021-30465).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

/// Opens `path` (absolute or relative, taken as inside `root`) with `flags`, resolving every
/// symlink and `..` as if `root` were `/`. Magic links (/proc/*/fd) are refused.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let c = CString::new(rel.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain integers; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c` is a valid NUL-terminated string and `how` a valid open_how of the size passed;
    // the kernel only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Makes every missing directory of `path` inside `root` (mode `mode`) and returns an O_PATH
/// descriptor of the last one. A dangling symlink on the way gets its target created, inside
/// the root, as the kernel would resolve it there.
pub fn mkdir_all_in_root(root: BorrowedFd<'_>, path: &Path, mode: u32) -> io::Result<OwnedFd> {
    mkdir_all_depth(root, path, mode, 0)
}

/// Symlinks followed while creating one path, as the kernel's own limit.
const MAX_LINKS: u32 = 40;

fn mkdir_all_depth(
    root: BorrowedFd<'_>,
    path: &Path,
    mode: u32,
    depth: u32,
) -> io::Result<OwnedFd> {
    if depth > MAX_LINKS {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let rel = relative(path);
    let mut prefix = PathBuf::new();
    let mut current = open_in_root(root, Path::new("."), libc::O_PATH | libc::O_DIRECTORY)?;
    for comp in rel.components() {
        let name = match comp {
            Component::Normal(name) => name,
            // `..` from a symlink target: step back up, never above the root.
            Component::ParentDir => {
                prefix.pop();
                current = open_in_root(root, &prefix, libc::O_PATH | libc::O_DIRECTORY)?;
                continue;
            }
            _ => continue,
        };
        let parent = prefix.clone();
        prefix.push(name);
        match open_in_root(root, &prefix, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => current = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let cname = CString::new(name.as_encoded_bytes())
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                // SAFETY: `current` is a live directory descriptor and `cname` a valid C string.
                let rc = unsafe { libc::mkdirat(current.as_raw_fd(), cname.as_ptr(), mode) };
                if rc < 0 {
                    let err = io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::EEXIST) {
                        return Err(err);
                    }
                    // Something is there but does not resolve: a dangling symlink.
                    let target =
                        nix::fcntl::readlinkat(current.as_fd(), name).map_err(io::Error::from)?;
                    let target = Path::new(&target);
                    let next = if target.is_absolute() {
                        target.to_path_buf()
                    } else {
                        parent.join(target)
                    };
                    mkdir_all_depth(root, &next, mode, depth + 1)?;
                }
                current = open_in_root(root, &prefix, libc::O_PATH | libc::O_DIRECTORY)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(current)
}

/// Makes sure a regular file (a bind-mount target) exists at `path` inside `root`, creating
/// parents; returns an O_PATH descriptor of whatever is there after resolution.
pub fn ensure_file_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    if let Ok(fd) = open_in_root(root, path, libc::O_PATH) {
        return Ok(fd);
    }
    let rel = relative(path);
    let parent = rel.parent().unwrap_or(Path::new(""));
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // An O_PATH directory descriptor serves as the dirfd of openat.
    let dir = mkdir_all_in_root(root, parent, 0o755)?;
    let cname = CString::new(name.as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `dir` is a live directory descriptor and `cname` a valid C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd >= 0 {
        // SAFETY: `fd` is a fresh descriptor we own; closing it is fine.
        unsafe { libc::close(fd) };
    }
    open_in_root(root, path, libc::O_PATH)
}

/// The /proc/self/fd path naming `fd`, usable as a mount source or target.
pub fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// `path` with its root and `.`/`..`-free prefix stripped, so it is relative to a dirfd.
fn relative(path: &Path) -> PathBuf {
    let stripped: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if stripped.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        stripped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("box-safe-path-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("root")).expect("mkdir");
        d
    }

    fn real_path(fd: &OwnedFd) -> PathBuf {
        fs::read_link(fd_path(fd)).expect("readlink")
    }

    #[test]
    fn absolute_symlink_out_of_root_stays_inside() {
        let d = tmp("abs");
        let root = d.join("root");
        symlink("/etc", root.join("evil")).expect("symlink");
        let rootfd = fs::File::open(&root).expect("open root");
        let made = mkdir_all_in_root(rootfd.as_fd(), Path::new("/evil/sub"), 0o755).expect("mkdir");
        assert_eq!(real_path(&made), root.join("etc/sub"));
        assert!(!Path::new("/etc/sub").exists());
        fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn dotdot_cannot_climb_above_root() {
        let d = tmp("dotdot");
        let root = d.join("root");
        let rootfd = fs::File::open(&root).expect("open root");
        let made =
            mkdir_all_in_root(rootfd.as_fd(), Path::new("../../../x/y"), 0o755).expect("mkdir");
        assert_eq!(real_path(&made), root.join("x/y"));
        symlink("../../../../..", root.join("up")).expect("symlink");
        let f = ensure_file_in_root(rootfd.as_fd(), Path::new("/up/file")).expect("file");
        assert_eq!(real_path(&f), root.join("file"));
        fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn dangling_symlink_target_is_made_inside_root() {
        let d = tmp("dangling");
        let root = d.join("root");
        fs::create_dir_all(root.join("mnt")).expect("mkdir");
        symlink("/etc/not-there", root.join("mnt/abs")).expect("symlink");
        symlink("../../../../rel-target", root.join("mnt/rel")).expect("symlink");
        let rootfd = fs::File::open(&root).expect("open root");
        let a = mkdir_all_in_root(rootfd.as_fd(), Path::new("/mnt/abs"), 0o755).expect("abs");
        assert_eq!(real_path(&a), root.join("etc/not-there"));
        assert!(!Path::new("/etc/not-there").exists());
        let r = mkdir_all_in_root(rootfd.as_fd(), Path::new("/mnt/rel/x"), 0o755).expect("rel");
        assert_eq!(real_path(&r), root.join("rel-target/x"));
        symlink("loop", root.join("loop")).expect("symlink");
        assert!(mkdir_all_in_root(rootfd.as_fd(), Path::new("/loop"), 0o755).is_err());
        fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn magic_links_are_refused() {
        let d = tmp("magic");
        let root = d.join("root");
        symlink("/proc/self/root", root.join("m")).expect("symlink");
        let rootfd = fs::File::open(&root).expect("open root");
        // Inside the root "/proc/self/root" does not exist, so the walk cannot reach the host.
        let err =
            open_in_root(rootfd.as_fd(), Path::new("/m/etc"), libc::O_PATH).expect_err("must fail");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        fs::remove_dir_all(&d).expect("cleanup");
    }
}
