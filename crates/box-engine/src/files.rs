//! `box cp`: files into and out of a box as tar streams. Every path inside the box is resolved
//! within the box's root (openat2 `RESOLVE_IN_ROOT`), so symlinks the box planted (`/x -> /`)
//! cannot lead to the host. The root is the snapshot's merged view: for a running box, seen
//! from the supervisor's mount namespace (the overlay is mounted only there); for a stopped
//! box, mounted in a private mount namespace. Either way a short-lived thread of its own does
//! the work and takes the namespace with it.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use box_image::snapshot::Snapshot;
use box_runtime::rootfs::safe_path::{mkdir_all_in_root, open_in_root};

use crate::db::{self, BoxRecord};
use crate::engine::Engine;
use crate::error::{EngineError, IoContext, Result};

/// What is at a path inside a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxPathKind {
    /// Nothing.
    Missing,
    /// A directory.
    Dir,
    /// Anything else (a symlink counts as what it points to, inside the box).
    Other,
}

impl Engine {
    /// Runs `f` on a thread of its own with a descriptor of the box's root directory.
    fn with_box_root<T: Send>(
        &self,
        rec: &BoxRecord,
        f: impl FnOnce(BorrowedFd<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        let supervisor = if box_is_running(rec) {
            rec.supervisor_pid
        } else {
            None
        };
        let rootfs = rec.spec.rootfs.clone();
        let snap = match &rootfs {
            Some(_) => None,
            None => Some(Snapshot::open(&self.paths().data, &rec.id)?),
        };
        std::thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T> {
                    let mut mounted: Option<Snapshot> = None;
                    let root_dir: PathBuf = match (rootfs, snap, supervisor) {
                        (Some(dir), _, _) => {
                            unshare_fs()?;
                            dir
                        }
                        (None, Some(snap), Some(pid)) => {
                            enter_mount_ns(pid)?;
                            snap.merged()
                        }
                        (None, Some(mut snap), None) => {
                            crate::volumes::private_mount_ns("box cp")?;
                            snap.mount()?;
                            let merged = snap.merged();
                            mounted = Some(snap);
                            merged
                        }
                        (None, None, _) => {
                            return Err(EngineError::WrongState("the box has no root".into()))
                        }
                    };
                    let res = (|| {
                        let root = open_dir(&root_dir)?;
                        f(root.as_fd())
                    })();
                    if let Some(s) = mounted {
                        let _ = s.unmount();
                    }
                    res
                })
                .join()
                .unwrap_or_else(|_| Err(EngineError::WrongState("the cp thread panicked".into())))
        })
    }

    /// Runs `f` on a thread confined to the box's root ([`crate::chroot::ChrootGuard`]): every
    /// path it uses, symlinks included, stays in the box (`box pkg`). Whether the box runs is
    /// passed to `f`; a stopped box's root is mounted for the time of the call.
    pub fn in_box_root<T: Send>(
        &self,
        name_or_id: &str,
        f: impl FnOnce(bool) -> T + Send,
    ) -> Result<T> {
        let rec = self.db().find(name_or_id)?;
        let running = box_is_running(&rec);
        self.with_box_root(&rec, move |root| {
            let _guard = crate::chroot::ChrootGuard::enter(root)?;
            Ok(f(running))
        })
    }

    /// What is at `path` inside the box (resolved within its root).
    pub fn box_path_kind(&self, name_or_id: &str, path: &str) -> Result<BoxPathKind> {
        let rec = self.db().find(name_or_id)?;
        let path = path.to_string();
        self.with_box_root(&rec, move |root| {
            match open_in_root(root, Path::new(&path), libc::O_PATH) {
                Ok(fd) => {
                    let st = nix::sys::stat::fstat(fd.as_fd())
                        .map_err(|e| EngineError::io(format!("cannot stat {path}"), e.into()))?;
                    Ok(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                        BoxPathKind::Dir
                    } else {
                        BoxPathKind::Other
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(BoxPathKind::Missing),
                Err(e) => Err(EngineError::io(
                    format!("cannot look up {path} in the box"),
                    e,
                )),
            }
        })
    }

    /// Writes `src` (a file or, recursively, a directory inside the box) to `writer` as a tar
    /// whose top entry is called `name`. Symlinks inside are stored as symlinks, not followed.
    pub fn copy_out<W: Write + Send>(
        &self,
        name_or_id: &str,
        src: &str,
        name: &str,
        writer: W,
    ) -> Result<W> {
        let rec = self.db().find(name_or_id)?;
        let src = src.to_string();
        let name = name.to_string();
        let box_name = rec.name.clone();
        self.with_box_root(&rec, move |root| {
            let not_found =
                |e: io::Error| EngineError::io(format!("cannot copy {src} from box {box_name}"), e);
            let fd = open_in_root(root, Path::new(&src), libc::O_PATH).map_err(not_found)?;
            let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| not_found(e.into()))?;
            let mut tar = tar::Builder::new(writer);
            tar.follow_symlinks(false);
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                // The thread has its own cwd (CLONE_FS unshared): walk from the directory itself.
                nix::unistd::fchdir(fd.as_fd()).map_err(|e| not_found(e.into()))?;
                tar.append_dir_all(&name, ".").map_err(not_found)?;
            } else {
                let file = open_in_root(root, Path::new(&src), libc::O_RDONLY | libc::O_NOCTTY)
                    .map_err(not_found)?;
                tar.append_file(&name, &mut fs::File::from(file))
                    .map_err(not_found)?;
            }
            let mut w = tar.into_inner().map_err(not_found)?;
            w.flush().map_err(not_found)?;
            Ok(w)
        })
    }

    /// Unpacks the tar read from `reader` into the directory `dest_dir` inside the box (which
    /// must exist). Entries are created relative to descriptors resolved within the box's root;
    /// an existing file or symlink in the way is replaced, never written through.
    pub fn copy_in<R: Read + Send>(
        &self,
        name_or_id: &str,
        dest_dir: &str,
        reader: R,
    ) -> Result<()> {
        let rec = self.db().find(name_or_id)?;
        let dest = PathBuf::from(dest_dir);
        let box_name = rec.name.clone();
        self.with_box_root(&rec, move |root| {
            let base =
                open_in_root(root, &dest, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| {
                    EngineError::io(
                        format!(
                            "cannot copy into {} in box {}: it must be an existing directory",
                            dest.display(),
                            box_name
                        ),
                        e,
                    )
                })?;
            drop(base);
            let mut archive = tar::Archive::new(reader);
            let entries = archive
                .entries()
                .map_err(|e| EngineError::io("cannot read the tar stream", e))?;
            for entry in entries {
                let mut entry =
                    entry.map_err(|e| EngineError::io("cannot read the tar stream", e))?;
                let raw = entry
                    .path()
                    .map_err(|e| EngineError::io("bad path in the tar stream", e))?
                    .into_owned();
                let Some(rel) = clean_relative(&raw) else {
                    return Err(EngineError::invalid(format!(
                        "refusing tar entry {}: it climbs out with ..",
                        raw.display()
                    )));
                };
                if rel.as_os_str().is_empty() {
                    continue;
                }
                extract_entry(root, &dest, &rel, &mut entry).map_err(|e| {
                    EngineError::io(
                        format!("cannot write {} in the box", dest.join(&rel).display()),
                        e,
                    )
                })?;
            }
            Ok(())
        })
    }
}

/// Whether the box is up: active, with its supervisor alive.
fn box_is_running(rec: &BoxRecord) -> bool {
    rec.state.is_active()
        && rec
            .supervisor_pid
            .filter(|pid| db::process_alive(*pid, rec.supervisor_start))
            .is_some()
}

/// `p` without `.` and leading `/`; `None` when it has `..`.
fn clean_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Creates one tar entry at `dest/rel` inside `root`.
fn extract_entry<R: Read>(
    root: BorrowedFd<'_>,
    dest: &Path,
    rel: &Path,
    entry: &mut tar::Entry<'_, R>,
) -> io::Result<()> {
    let full = dest.join(rel);
    let parent_path = full.parent().unwrap_or(Path::new("/"));
    let name = full
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let parent = mkdir_all_in_root(root, parent_path, 0o755)?;
    let pfd = parent.as_raw_fd();
    let cname = cstr(name)?;
    let header = entry.header();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let kind = header.entry_type();
    let remove_old = || {
        // SAFETY: `pfd` is a live directory descriptor and `cname` a valid C string. A
        // directory in the way makes this fail (EISDIR), and the creation below then fails too.
        unsafe { libc::unlinkat(pfd, cname.as_ptr(), 0) };
    };
    match kind {
        tar::EntryType::Directory => {
            // SAFETY: as above; mkdirat only reads its arguments.
            let rc = unsafe { libc::mkdirat(pfd, cname.as_ptr(), mode) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()?
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            let ctarget = cstr(target.as_os_str())?;
            remove_old();
            // SAFETY: valid C strings and a live directory descriptor.
            check(unsafe { libc::symlinkat(ctarget.as_ptr(), pfd, cname.as_ptr()) })?;
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name()?
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            let target = clean_relative(&target)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            let existing = open_in_root(root, &dest.join(target), libc::O_PATH)?;
            remove_old();
            // SAFETY: both descriptors are live; the empty path with AT_EMPTY_PATH names
            // `existing` itself.
            check(unsafe {
                libc::linkat(
                    existing.as_raw_fd(),
                    c"".as_ptr(),
                    pfd,
                    cname.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            })?;
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let fmt = match kind {
                tar::EntryType::Char => libc::S_IFCHR,
                tar::EntryType::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            let dev = libc::makedev(
                header.device_major()?.unwrap_or(0),
                header.device_minor()?.unwrap_or(0),
            );
            remove_old();
            // SAFETY: valid C string and directory descriptor; mknodat only reads them.
            check(unsafe { libc::mknodat(pfd, cname.as_ptr(), fmt | mode, dev) })?;
        }
        _ => {
            remove_old();
            // SAFETY: valid C string and directory descriptor; O_NOFOLLOW|O_EXCL: a symlink
            // raced in is never written through.
            let fd = unsafe {
                libc::openat(
                    pfd,
                    cname.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    mode,
                )
            };
            check(fd)?;
            // SAFETY: openat returned a fresh descriptor that nothing else owns.
            let mut file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            io::copy(entry, &mut file)?;
            // The umask trimmed the mode at creation.
            // SAFETY: `fd` is the live descriptor owned by `file`.
            check(unsafe { libc::fchmod(file.as_raw_fd(), mode) })?;
        }
    }
    Ok(())
}

/// Gives the calling thread its own cwd and root (so that fchdir stays in it).
fn unshare_fs() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
        .map_err(|e| EngineError::io("cannot unshare the thread's fs attributes", e.into()))
}

/// Moves the calling thread into the mount namespace of process `pid`.
fn enter_mount_ns(pid: i32) -> Result<()> {
    unshare_fs()?;
    let path = format!("/proc/{pid}/ns/mnt");
    let ns = fs::File::open(&path).ctx(|| format!("cannot open {path}"))?;
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
        EngineError::io(
            format!("cannot enter the mount namespace of the box's supervisor ({path})"),
            e.into(),
        )
    })
}

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let f = fs::File::open(dir).ctx(|| format!("cannot open {}", dir.display()))?;
    Ok(OwnedFd::from(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_cleaned_and_dotdot_refused() {
        assert_eq!(
            clean_relative(Path::new("./a/b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(clean_relative(Path::new("/a")), Some(PathBuf::from("a")));
        assert_eq!(clean_relative(Path::new("a/../../b")), None);
        assert_eq!(clean_relative(Path::new(".")), Some(PathBuf::new()));
    }
}
