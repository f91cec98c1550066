//! Safe layer unpack: a tar stream written into a directory that no entry can leave.
//!
//! Rules (every path is resolved by this module, never by the tar crate):
//! - Entry paths are cleaned lexically; a leading `/` is dropped (absolute paths are *contained*:
//!   `/etc/x` lands at `<dest>/etc/x`), and a path whose `..` would climb above `dest` makes the
//!   whole layer fail (*rejected*).
//! - Parent directories are opened with openat2 `RESOLVE_IN_ROOT` (box_runtime's safe_path), so
//!   symlinks written by earlier entries (`a -> /`) resolve inside `dest`, never out of it; the
//!   final component is created with `O_NOFOLLOW` / `*at` calls that do not follow it.
//! - Hardlink targets are resolved the same way (inside `dest`), and must already exist.
//! - Device nodes are skipped (and counted) when rootless; fifos are made.
//! - OCI whiteouts become overlay form: `.wh.<name>` a 0:0 char device (falling back, where
//!   mknod is refused, to an empty file with `user.overlay.whiteout`), `.wh..wh..opq` the opaque
//!   xattr on its directory (`trusted.overlay.opaque=y` as root, `user.overlay.opaque=y` rootless).
//! - Modes (setuid/setgid only where ownership was applied), mtimes (directories after their
//!   contents), xattrs from PAX `SCHILY.xattr.*` (no `security.*` but `security.capability` as
//!   root, never overlay's own) and ownership are kept. Rootless, ownership is applied only where
//!   the kernel allows it (inside a user namespace with the ids mapped); elsewhere files belong to
//!   the caller and the original owners are not recorded.
//! - The diff id (sha256 of the whole uncompressed tar, padding included) is computed on the way.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use box_runtime::rootfs::safe_path::{mkdir_all_in_root, open_in_root};
use tar::EntryType;

use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, IoContext, Result};

/// The prefix of an OCI whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Longest entry path accepted (Linux PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// How an unpack treats ownership and privileged entries.
#[derive(Clone, Debug, Default)]
pub struct UnpackOptions {
    /// Running without host root: device nodes are skipped, opaque/whiteout xattrs use the
    /// `user.overlay.*` names, and ownership changes the kernel refuses are skipped, not errors.
    pub rootless: bool,
    /// Leave ownership alone entirely (everything belongs to the caller).
    pub ignore_ownership: bool,
}

impl UnpackOptions {
    /// Options for the current process: rootless when not host root.
    pub fn for_current_process() -> UnpackOptions {
        UnpackOptions {
            rootless: box_runtime::idmap::running_rootless(),
            ignore_ownership: false,
        }
    }
}

/// What an unpack did.
#[derive(Clone, Debug)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream, to the last byte (the layer's diff id).
    pub diff_id: Digest,
    /// Length of the uncompressed tar stream.
    pub tar_size: u64,
    /// Entries seen (including whiteouts and skipped ones).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub file_bytes: u64,
    /// Whiteouts made.
    pub whiteouts: u64,
    /// Whiteouts made in the xattr form because mknod was refused.
    pub xattr_whiteouts: u64,
    /// Opaque directories marked.
    pub opaque_dirs: u64,
    /// Device nodes skipped (rootless).
    pub devices_skipped: u64,
    /// xattrs not applied (refused by policy or by the file system).
    pub xattrs_skipped: u64,
    /// Ownership changes the kernel refused (rootless only).
    pub ownership_skipped: u64,
}

/// Unpacks the uncompressed tar stream `reader` into the existing directory `dest`, reading it
/// to its very end so the diff id covers every byte.
pub fn unpack<R: Read>(reader: R, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let root =
        File::open(dest).ctx(|| format!("cannot open layer directory {}", dest.display()))?;
    let mut hashing = HashingReader::new(reader);
    let mut u = Unpacker {
        root: root.as_fd(),
        opts,
        privileged: !opts.rootless,
        stats: Stats::default(),
        dirs: Vec::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(|e| ImageError::Tar(format!("cannot read entries: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ImageError::Tar(e.to_string()))?;
            u.stats.entries += 1;
            u.entry(&mut entry)?;
        }
    }
    hashing
        .drain()
        .ctx(|| "cannot read the end of the layer stream".to_string())?;
    u.finish_dirs()?;
    let s = u.stats;
    let (_, diff_id, tar_size) = hashing.finish();
    Ok(UnpackStats {
        diff_id,
        tar_size,
        entries: s.entries,
        file_bytes: s.file_bytes,
        whiteouts: s.whiteouts,
        xattr_whiteouts: s.xattr_whiteouts,
        opaque_dirs: s.opaque_dirs,
        devices_skipped: s.devices_skipped,
        xattrs_skipped: s.xattrs_skipped,
        ownership_skipped: s.ownership_skipped,
    })
}

#[derive(Default)]
struct Stats {
    entries: u64,
    file_bytes: u64,
    whiteouts: u64,
    xattr_whiteouts: u64,
    opaque_dirs: u64,
    devices_skipped: u64,
    xattrs_skipped: u64,
    ownership_skipped: u64,
}

/// Metadata of one entry, PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct PendingDir {
    path: PathBuf,
    mode: u32,
    mtime: libc::timespec,
}

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    opts: &'a UnpackOptions,
    privileged: bool,
    stats: Stats,
    dirs: Vec<PendingDir>,
}

/// Cleans a tar path: drops `/`, `.` and empty parts, applies `..` lexically, and refuses a
/// path that climbs above the root. `None` means the root itself.
pub fn clean_entry_path(raw: &[u8]) -> Result<Option<PathBuf>> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.len() > MAX_PATH_LEN {
        return Err(ImageError::unsafe_entry(
            shown().chars().take(64).collect::<String>() + "…",
            format!("path longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    let mut out = PathBuf::new();
    for comp in Path::new(OsStr::from_bytes(raw)).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                if !out.pop() {
                    return Err(ImageError::unsafe_entry(
                        shown(),
                        "the path climbs out of the layer with `..`",
                    ));
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        let meta = self.meta(entry, &shown)?;
        let Some(path) = clean_entry_path(&raw_path)? else {
            // The root directory itself: keep its mode and mtime.
            if kind.is_dir() {
                self.apply_owner(self.root, None, &meta, &shown)?;
                self.dirs.push(PendingDir {
                    path: PathBuf::new(),
                    mode: meta.mode,
                    mtime: meta.mtime,
                });
            }
            return Ok(());
        };
        let (parent_path, name) = split(&path, &shown)?;
        let name_bytes = name.as_bytes();

        // Whiteouts.
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            let dir = self.dir(&parent_path, &shown)?;
            self.mark_opaque(&dir, &shown)?;
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(ImageError::unsafe_entry(shown, "malformed whiteout name"));
            }
            let dir = self.dir(&parent_path, &shown)?;
            let hidden = cstring(hidden, &shown)?;
            self.whiteout(&dir, &hidden, &shown)?;
            return Ok(());
        }

        let cname = cstring(name_bytes, &shown)?;
        match kind {
            EntryType::Directory => {
                let parent = self.dir(&parent_path, &shown)?;
                let fd = self.make_dir(&parent, &cname, &shown)?;
                self.apply_owner(fd.as_fd(), None, &meta, &shown)?;
                self.apply_xattrs_fd(&fd, &meta, &shown);
                self.dirs.push(PendingDir {
                    path,
                    mode: meta.mode,
                    mtime: meta.mtime,
                });
            }
            EntryType::Regular | EntryType::Continuous => {
                let parent = self.dir(&parent_path, &shown)?;
                self.replace(&parent, &cname, &shown)?;
                // SAFETY: `parent` is a live directory fd and `cname` a valid C string.
                let raw = unsafe {
                    libc::openat(
                        parent.as_raw_fd(),
                        cname.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600,
                    )
                };
                if raw < 0 {
                    return Err(entry_io(&shown, "create file", io::Error::last_os_error()));
                }
                // SAFETY: openat returned a fresh descriptor nobody else owns.
                let mut file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
                let n =
                    io::copy(entry, &mut file).map_err(|e| entry_io(&shown, "write file", e))?;
                self.stats.file_bytes += n;
                let owned = self.apply_owner(file.as_fd(), None, &meta, &shown)?;
                self.apply_mode_fd(&file, meta.mode, owned, &shown)?;
                self.apply_xattrs_fd(file.as_fd(), &meta, &shown);
                set_times(file.as_fd(), None, meta.mtime)
                    .map_err(|e| entry_io(&shown, "set mtime", e))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        ImageError::unsafe_entry(shown.clone(), "symlink without target")
                    })?
                    .into_owned();
                let ctarget = cstring(&target, &shown)?;
                let parent = self.dir(&parent_path, &shown)?;
                self.replace(&parent, &cname, &shown)?;
                // SAFETY: valid C strings and a live directory fd; the target is stored, not followed.
                let rc = unsafe {
                    libc::symlinkat(ctarget.as_ptr(), parent.as_raw_fd(), cname.as_ptr())
                };
                if rc < 0 {
                    return Err(entry_io(
                        &shown,
                        "create symlink",
                        io::Error::last_os_error(),
                    ));
                }
                self.apply_owner(parent.as_fd(), Some(&cname), &meta, &shown)?;
                set_times(parent.as_fd(), Some(&cname), meta.mtime)
                    .map_err(|e| entry_io(&shown, "set symlink mtime", e))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        ImageError::unsafe_entry(shown.clone(), "hardlink without target")
                    })?
                    .into_owned();
                let Some(target_path) = clean_entry_path(&target)? else {
                    return Err(ImageError::unsafe_entry(
                        shown,
                        "hardlink to the layer root",
                    ));
                };
                let (tparent_path, tname) = split(&target_path, &shown)?;
                let tparent =
                    open_in_root(self.root, &tparent_path, libc::O_PATH | libc::O_DIRECTORY)
                        .map_err(|e| entry_io(&shown, "resolve hardlink target directory", e))?;
                let ctname = cstring(tname.as_bytes(), &shown)?;
                let parent = self.dir(&parent_path, &shown)?;
                self.replace(&parent, &cname, &shown)?;
                // SAFETY: live directory fds and valid C strings; flags 0 does not follow a
                // symlink target (the link is to the symlink itself, as tar means).
                let rc = unsafe {
                    libc::linkat(
                        tparent.as_raw_fd(),
                        ctname.as_ptr(),
                        parent.as_raw_fd(),
                        cname.as_ptr(),
                        0,
                    )
                };
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    return Err(ImageError::unsafe_entry(
                        shown,
                        format!(
                            "hardlink target {:?} is not an earlier file of this layer ({e})",
                            String::from_utf8_lossy(&target)
                        ),
                    ));
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let fmt = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                if fmt != libc::S_IFIFO && !self.privileged {
                    self.stats.devices_skipped += 1;
                    return Ok(());
                }
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let parent = self.dir(&parent_path, &shown)?;
                self.replace(&parent, &cname, &shown)?;
                let dev = libc::makedev(major, minor);
                // SAFETY: live directory fd and valid C string.
                let rc =
                    unsafe { libc::mknodat(parent.as_raw_fd(), cname.as_ptr(), fmt | 0o600, dev) };
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EPERM) && fmt != libc::S_IFIFO {
                        self.stats.devices_skipped += 1;
                        return Ok(());
                    }
                    return Err(entry_io(&shown, "create special file", e));
                }
                let owned = self.apply_owner(parent.as_fd(), Some(&cname), &meta, &shown)?;
                let mode = if owned { meta.mode } else { meta.mode & 0o777 };
                // SAFETY: live directory fd and valid C string; fchmodat does not follow (no symlink here).
                unsafe { libc::fchmodat(parent.as_raw_fd(), cname.as_ptr(), mode & 0o7777, 0) };
                set_times(parent.as_fd(), Some(&cname), meta.mtime)
                    .map_err(|e| entry_io(&shown, "set mtime", e))?;
            }
            // PAX and GNU long-name headers are consumed by the tar crate; others carry nothing
            // a root filesystem needs.
            _ => {}
        }
        Ok(())
    }

    /// Reads mode, owner, mtime and xattrs, with PAX records overriding the header.
    fn meta<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| {
            ImageError::unsafe_entry(shown.to_string(), format!("bad {what}: {e}"))
        };
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut uid = h.uid().map_err(|e| bad("uid", e))?;
        let mut gid = h.gid().map_err(|e| bad("gid", e))?;
        let mut mtime = libc::timespec {
            tv_sec: i64::try_from(h.mtime().map_err(|e| bad("mtime", e))?).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX header", e))? {
            for ext in pax {
                let ext = ext.map_err(|e| bad("PAX record", e))?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                match key {
                    "uid" => uid = parse_u64(value).unwrap_or(uid),
                    "gid" => gid = parse_u64(value).unwrap_or(gid),
                    "mtime" => {
                        if let Some(t) = parse_pax_time(value) {
                            mtime = t;
                        }
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                            if self.xattr_allowed(name) {
                                if let Ok(c) = CString::new(name) {
                                    xattrs.push((c, value.to_vec()));
                                }
                            } else {
                                self.stats.xattrs_skipped += 1;
                            }
                        }
                    }
                }
            }
        }
        let id = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| {
                ImageError::unsafe_entry(shown.to_string(), format!("{what} {v} out of range"))
            })
        };
        Ok(Meta {
            mode,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            mtime,
            xattrs,
        })
    }

    fn xattr_allowed(&self, name: &str) -> bool {
        // Overlay's own attributes would let a layer forge redirects, whiteouts or metacopy.
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            return false;
        }
        if name.starts_with("security.") {
            return self.privileged && name == "security.capability";
        }
        if name.starts_with("trusted.") {
            return self.privileged;
        }
        name.starts_with("user.") || name.starts_with("system.")
    }

    /// The directory `rel` inside the root (made as needed), as an O_PATH descriptor.
    fn dir(&self, rel: &Path, shown: &str) -> Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return open_in_root(self.root, Path::new("."), libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| entry_io(shown, "open layer root", e));
        }
        mkdir_all_in_root(self.root, rel, 0o755)
            .map_err(|e| entry_io(shown, "make parent directory", e))
    }

    /// Makes (or reuses) directory `name` in `parent`; returns an O_RDONLY descriptor of it.
    fn make_dir(&self, parent: &OwnedFd, name: &CStr, shown: &str) -> Result<OwnedFd> {
        // SAFETY: live directory fd and valid C string.
        let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(entry_io(shown, "create directory", e));
            }
        }
        match open_nofollow(parent, name, libc::O_RDONLY | libc::O_DIRECTORY) {
            Ok(fd) => Ok(fd),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                // A non-directory (maybe a symlink) sits there: replace it.
                self.replace(parent, name, shown)?;
                // SAFETY: as above.
                let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) };
                if rc < 0 {
                    return Err(entry_io(
                        shown,
                        "create directory",
                        io::Error::last_os_error(),
                    ));
                }
                open_nofollow(parent, name, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(|e| entry_io(shown, "open directory", e))
            }
            Err(e) => Err(entry_io(shown, "open directory", e)),
        }
    }

    /// Removes whatever non-directory (or empty directory) sits at `name`, as tar replaces.
    fn replace(&self, parent: &OwnedFd, name: &CStr, shown: &str) -> Result<()> {
        // SAFETY: live directory fd and valid C string; unlinkat never follows symlinks.
        let rc = unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), 0) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(()),
            Some(libc::EISDIR) => {
                // SAFETY: as above.
                let rc = unsafe {
                    libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR)
                };
                if rc < 0 {
                    return Err(entry_io(
                        shown,
                        "replace a non-empty directory",
                        io::Error::last_os_error(),
                    ));
                }
                Ok(())
            }
            _ => Err(entry_io(shown, "replace existing entry", e)),
        }
    }

    fn mark_opaque(&mut self, dir: &OwnedFd, shown: &str) -> Result<()> {
        let fd = open_nofollow(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| entry_io(shown, "open opaque directory", e))?;
        let name: &CStr = if self.privileged {
            c"trusted.overlay.opaque"
        } else {
            c"user.overlay.opaque"
        };
        fsetxattr(fd.as_fd(), name, b"y")
            .map_err(|e| entry_io(shown, "mark directory opaque", e))?;
        self.stats.opaque_dirs += 1;
        Ok(())
    }

    fn whiteout(&mut self, dir: &OwnedFd, hidden: &CStr, shown: &str) -> Result<()> {
        self.replace(dir, hidden, shown)?;
        // SAFETY: live directory fd and valid C string; 0:0 char device is overlay's whiteout.
        let rc = unsafe {
            libc::mknodat(
                dir.as_raw_fd(),
                hidden.as_ptr(),
                libc::S_IFCHR,
                libc::makedev(0, 0),
            )
        };
        if rc == 0 {
            self.stats.whiteouts += 1;
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(entry_io(shown, "create whiteout", e));
        }
        // Kernel-refused mknod (rootless outside a user namespace): overlay's xattr whiteout,
        // an empty file marked user.overlay.whiteout in a directory marked user.overlay.whiteouts.
        // SAFETY: live directory fd and valid C string.
        let raw = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                hidden.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o000,
            )
        };
        if raw < 0 {
            return Err(entry_io(
                shown,
                "create whiteout file",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fresh descriptor from openat.
        let f = unsafe { OwnedFd::from_raw_fd(raw) };
        fsetxattr(f.as_fd(), c"user.overlay.whiteout", b"y")
            .map_err(|e| entry_io(shown, "mark whiteout", e))?;
        let d = open_nofollow(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| entry_io(shown, "open whiteout directory", e))?;
        fsetxattr(d.as_fd(), c"user.overlay.whiteouts", b"y")
            .map_err(|e| entry_io(shown, "mark whiteout directory", e))?;
        self.stats.whiteouts += 1;
        self.stats.xattr_whiteouts += 1;
        Ok(())
    }

    /// lchown (fd, or `name` in the directory fd without following); returns whether the
    /// owner was applied (so setuid/setgid bits may be kept).
    fn apply_owner(
        &mut self,
        fd: BorrowedFd<'_>,
        name: Option<&CStr>,
        meta: &Meta,
        shown: &str,
    ) -> Result<bool> {
        if self.opts.ignore_ownership {
            return Ok(false);
        }
        let (path, flags) = match name {
            Some(n) => (n.as_ptr(), libc::AT_SYMLINK_NOFOLLOW),
            None => (c"".as_ptr(), libc::AT_EMPTY_PATH),
        };
        // SAFETY: live fd and a valid C string; AT_SYMLINK_NOFOLLOW / AT_EMPTY_PATH never follow.
        let rc = unsafe { libc::fchownat(fd.as_raw_fd(), path, meta.uid, meta.gid, flags) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if self.opts.rootless && matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EINVAL))
        {
            self.stats.ownership_skipped += 1;
            return Ok(false);
        }
        Err(entry_io(shown, "set owner", e))
    }

    fn apply_mode_fd(&self, f: &File, mode: u32, owned: bool, shown: &str) -> Result<()> {
        let mode = if owned { mode } else { mode & 0o1777 };
        // SAFETY: fchmod on a descriptor we own.
        if unsafe { libc::fchmod(f.as_raw_fd(), mode) } < 0 {
            return Err(entry_io(shown, "set mode", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn apply_xattrs_fd(&mut self, fd: impl AsFd, meta: &Meta, _shown: &str) {
        for (name, value) in &meta.xattrs {
            if fsetxattr(fd.as_fd(), name, value).is_err() {
                // Unsupported by the file system or refused: the file stays usable without it.
                self.stats.xattrs_skipped += 1;
            }
        }
    }

    /// Sets directory modes and mtimes, deepest first, after all contents are written.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut last: HashMap<PathBuf, usize> = HashMap::new();
        for (i, d) in self.dirs.iter().enumerate() {
            last.insert(d.path.clone(), i);
        }
        let mut order: Vec<usize> = last.into_values().collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.dirs[i].path.components().count()));
        for i in order {
            let d = &self.dirs[i];
            let shown = d.path.display().to_string();
            let rel = if d.path.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d.path.as_path()
            };
            let fd = match open_in_root(
                self.root,
                rel,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // Replaced later in the stream by a non-directory: nothing to finish.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::ENOENT)
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(entry_io(&shown, "open directory", e)),
            };
            // SAFETY: fchmod on a descriptor we own.
            if unsafe { libc::fchmod(fd.as_raw_fd(), d.mode) } < 0 {
                return Err(entry_io(
                    &shown,
                    "set directory mode",
                    io::Error::last_os_error(),
                ));
            }
            set_times(fd.as_fd(), None, d.mtime)
                .map_err(|e| entry_io(&shown, "set directory mtime", e))?;
        }
        Ok(())
    }
}

fn split(path: &Path, shown: &str) -> Result<(PathBuf, OsStrBuf)> {
    let name = path
        .file_name()
        .ok_or_else(|| ImageError::unsafe_entry(shown.to_string(), "no file name"))?;
    if name.len() > 255 {
        return Err(ImageError::unsafe_entry(
            shown.to_string(),
            "a path component is longer than 255 bytes",
        ));
    }
    Ok((
        path.parent().map(Path::to_path_buf).unwrap_or_default(),
        name.to_os_string(),
    ))
}

type OsStrBuf = std::ffi::OsString;

fn cstring(bytes: &[u8], shown: &str) -> Result<CString> {
    CString::new(bytes)
        .map_err(|_| ImageError::unsafe_entry(shown.to_string(), "NUL byte in a name"))
}

fn entry_io(shown: &str, action: &str, e: io::Error) -> ImageError {
    ImageError::io(format!("cannot {action} for layer entry {shown:?}"), e)
}

fn open_nofollow(dir: &OwnedFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: live directory fd and valid C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor from openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: live fd, valid C string, and a value pointer/length pair from a slice.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// utimensat: atime and mtime both set to `mtime`; `name` relative to `fd` without following,
/// or the fd itself.
fn set_times(fd: BorrowedFd<'_>, name: Option<&CStr>, mtime: libc::timespec) -> io::Result<()> {
    let times = [mtime, mtime];
    let (path, flags) = match name {
        Some(n) => (n.as_ptr(), libc::AT_SYMLINK_NOFOLLOW),
        None => (c"".as_ptr(), libc::AT_EMPTY_PATH),
    };
    // SAFETY: live fd, valid C string, and a two-element timespec array as utimensat wants.
    let rc = unsafe { libc::utimensat(fd.as_raw_fd(), path, times.as_ptr(), flags) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // Older kernels refuse AT_EMPTY_PATH for utimensat; use the /proc path of the fd instead.
        if name.is_none() && e.raw_os_error() == Some(libc::EINVAL) {
            let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_err(io::Error::other)?;
            // SAFETY: valid C string and timespec array.
            let rc = unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) };
            if rc == 0 {
                return Ok(());
            }
            return Err(io::Error::last_os_error());
        }
        return Err(e);
    }
    Ok(())
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// A PAX time: `seconds[.fraction]`, possibly negative.
fn parse_pax_time(v: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = sec.parse().ok()?;
    let mut nsec: i64 = 0;
    let digits: String = frac.chars().take(9).collect();
    if !digits.is_empty() {
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        nsec = digits.parse::<i64>().ok()? * 10_i64.pow(9 - digits.len() as u32);
    }
    if tv_sec < 0 && nsec > 0 {
        return Some(libc::timespec {
            tv_sec: tv_sec - 1,
            tv_nsec: 1_000_000_000 - nsec,
        });
    }
    Some(libc::timespec {
        tv_sec,
        tv_nsec: nsec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_entry_path_contains_absolute_and_rejects_escapes() {
        let ok = |s: &str| {
            clean_entry_path(s.as_bytes())
                .expect(s)
                .map(|p| p.display().to_string())
        };
        assert_eq!(ok("/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(ok("./a/./b/").as_deref(), Some("a/b"));
        assert_eq!(ok("a/../b").as_deref(), Some("b"));
        assert_eq!(ok("./").as_deref(), None);
        assert!(clean_entry_path(b"../../etc/passwd").is_err());
        assert!(clean_entry_path(b"a/../../b").is_err());
        assert!(clean_entry_path(&vec![b'a'; MAX_PATH_LEN + 1]).is_err());
    }

    #[test]
    fn pax_times_parse() {
        let t = parse_pax_time(b"1700000000.5").expect("t");
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"12").expect("t");
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time(b"x").is_none());
    }
}
