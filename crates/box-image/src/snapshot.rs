//! snapshot: a box's root filesystem. An overlay of its image's unpacked layers (read-only
//! lowers) with its own upper and work directories under `<data>/snapshots/<id>/`, or, where
//! overlay cannot be mounted, a plain copy of the layers; and `diff`, what the box changed.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, IoContext, Result};

/// Overlay's mount data must fit in one page (with its NUL).
const MOUNT_DATA_MAX: usize = 4095;

/// Name of the file that records how a snapshot was made.
const META_FILE: &str = "snapshot.json";

/// How a snapshot's `merged` directory was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// An overlay mount (lower = layers, upper/work = the snapshot's own).
    Overlay,
    /// A copy of the layers (no overlay available); writes go straight to `merged`.
    Copy,
}

/// What happened to a path, as `box diff` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ChangeKind {
    /// New in the box.
    Added,
    /// Present in the image and changed (content, metadata, or a directory's entries).
    Changed,
    /// Present in the image and deleted in the box.
    Deleted,
}

/// One changed path of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The absolute path inside the box (`/etc/passwd`).
    pub path: PathBuf,
}

/// Overlay mount options as the runtime needs them to mount the snapshot itself (inside a
/// box's user and mount namespaces, for rootless boxes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayOptions {
    /// The mount data: `lowerdir=…,upperdir=…,workdir=…[,userxattr]`.
    pub data: String,
    /// When set, the lowers in `data` are relative to this directory: mount with it as the
    /// current directory (the absolute form would not fit in overlay's one-page mount data).
    pub lower_base: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotMeta {
    lowers: Vec<PathBuf>,
    rootless: bool,
    force_copy: bool,
    kind: Option<MountKind>,
}

/// A box's root filesystem under `<data>/snapshots/<id>/{upper,work,merged}`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    id: String,
    root: PathBuf,
    meta: SnapshotMeta,
    /// Mount the overlay `volatile` (see [`Snapshot::set_volatile`]); not persisted.
    volatile: bool,
}

impl Snapshot {
    /// Makes the directories of snapshot `id` over `lower_dirs` (top-most layer first, as
    /// overlay's `lowerdir` lists them). Nothing is mounted yet.
    pub fn create(
        data_dir: &Path,
        id: &str,
        lower_dirs: &[PathBuf],
        rootless: bool,
    ) -> Result<Snapshot> {
        validate_id(id)?;
        if lower_dirs.is_empty() {
            return Err(ImageError::Snapshot(format!(
                "snapshot {id}: an image has at least one layer, none given"
            )));
        }
        for l in lower_dirs {
            if !l.is_absolute() || !l.is_dir() {
                return Err(ImageError::Snapshot(format!(
                    "snapshot {id}: layer directory {} does not exist (is the image store intact? try box image prune and pull again)",
                    l.display()
                )));
            }
        }
        let root = data_dir.join("snapshots").join(id);
        if root.exists() {
            return Err(ImageError::Conflict(format!(
                "snapshot {id} already exists at {}",
                root.display()
            )));
        }
        fs::create_dir_all(root.parent().unwrap_or(data_dir))
            .ctx(|| format!("cannot create {}/snapshots", data_dir.display()))?;
        // Built under a temporary name and renamed: a half-made snapshot is never seen.
        let tmp = data_dir.join("snapshots").join(format!(".tmp-{id}"));
        let _ = fs::remove_dir_all(&tmp);
        for sub in ["upper", "work", "merged"] {
            fs::create_dir_all(tmp.join(sub))
                .ctx(|| format!("cannot create {}", tmp.join(sub).display()))?;
        }
        fs::set_permissions(tmp.join("upper"), fs::Permissions::from_mode(0o755))
            .ctx(|| format!("cannot chmod {}/upper", tmp.display()))?;
        let snap = Snapshot {
            id: id.to_string(),
            root: tmp.clone(),
            meta: SnapshotMeta {
                lowers: lower_dirs.to_vec(),
                rootless,
                force_copy: false,
                kind: None,
            },
            volatile: false,
        };
        snap.save_meta()?;
        fs::rename(&tmp, &root)
            .ctx(|| format!("cannot rename {} to {}", tmp.display(), root.display()))?;
        Ok(Snapshot { root, ..snap })
    }

    /// Opens an existing snapshot (made by [`Snapshot::create`], mounted or not).
    pub fn open(data_dir: &Path, id: &str) -> Result<Snapshot> {
        validate_id(id)?;
        let root = data_dir.join("snapshots").join(id);
        let path = root.join(META_FILE);
        let text = fs::read(&path).ctx(|| format!("cannot read {}", path.display()))?;
        let meta: SnapshotMeta = serde_json::from_slice(&text)
            .map_err(|e| ImageError::invalid_document(format!("snapshot {id} metadata"), e))?;
        Ok(Snapshot {
            id: id.to_string(),
            root,
            meta,
            volatile: false,
        })
    }

    fn save_meta(&self) -> Result<()> {
        let path = self.root.join(META_FILE);
        let tmp = self.root.join(".snapshot.json.tmp");
        let text = serde_json::to_vec(&self.meta).map_err(|e| {
            ImageError::Snapshot(format!("snapshot {}: cannot encode metadata: {e}", self.id))
        })?;
        fs::write(&tmp, text).ctx(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).ctx(|| format!("cannot write {}", path.display()))
    }

    /// Makes [`Snapshot::mount`] mount the overlay with `volatile` (no syncs of the upper
    /// directory, so the unmount does not wait for the disk), for boxes whose changes are
    /// removed with them anyway (`--rm`). Kernels without the option get a normal mount.
    pub fn set_volatile(&mut self, volatile: bool) {
        self.volatile = volatile;
    }

    /// Makes [`Snapshot::mount`] copy the layers instead of trying overlay (for file systems
    /// or kernels where overlay is known not to work, and for tests of the fallback).
    pub fn force_copy(&mut self, force: bool) -> Result<()> {
        self.meta.force_copy = force;
        self.save_meta()
    }

    /// The snapshot's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `<data>/snapshots/<id>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The box's root filesystem (the overlay mount point or the copy).
    pub fn merged(&self) -> PathBuf {
        self.root.join("merged")
    }

    /// The overlay upper directory (the box's changes).
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }

    /// The overlay work directory.
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// The layer directories, top-most first.
    pub fn lowers(&self) -> &[PathBuf] {
        &self.meta.lowers
    }

    /// How `merged` was last made, if known: a copy is recorded; overlay only in the process
    /// that mounted it (an unrecorded kind is an overlay, or not mounted yet).
    pub fn kind(&self) -> Option<MountKind> {
        self.meta.kind
    }

    /// The overlay mount data for this snapshot. Rootless adds `userxattr`: such a mount works
    /// only inside a user and mount namespace the caller owns (the runtime mounts it there).
    pub fn mount_options(&self) -> OverlayOptions {
        let tail = format!(
            ",upperdir={},workdir={}{}{}",
            escape(&self.upper()),
            escape(&self.work()),
            if self.meta.rootless { ",userxattr" } else { "" },
            if self.volatile { ",volatile" } else { "" }
        );
        let absolute = join_lowers(self.meta.lowers.iter().map(|p| p.as_os_str()));
        if "lowerdir=".len() + absolute.len() + tail.len() <= MOUNT_DATA_MAX {
            return OverlayOptions {
                data: format!("lowerdir={absolute}{tail}"),
                lower_base: None,
            };
        }
        // Too long: name the lowers relative to their common parent (`<data>/layers`).
        let base = common_parent(&self.meta.lowers);
        let rel: Vec<PathBuf> = self
            .meta
            .lowers
            .iter()
            .map(|p| {
                p.strip_prefix(&base)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| p.clone())
            })
            .collect();
        OverlayOptions {
            data: format!(
                "lowerdir={}{tail}",
                join_lowers(rel.iter().map(|p| p.as_os_str()))
            ),
            lower_base: Some(base),
        }
    }

    /// Whether `merged` is a mount point in this process's mount namespace.
    pub fn is_mounted(&self) -> Result<bool> {
        is_mount_point(&self.merged())
    }

    /// Mounts the overlay at `merged`; if overlay cannot be mounted here (or a copy was
    /// forced), copies the layers into `merged` instead. Returns which one it did.
    pub fn mount(&mut self) -> Result<MountKind> {
        if self.is_mounted()? {
            return Ok(MountKind::Overlay);
        }
        if self.meta.kind == Some(MountKind::Copy) {
            return Ok(MountKind::Copy);
        }
        let kind = if self.meta.force_copy {
            self.copy_layers()?;
            MountKind::Copy
        } else {
            let mut mounted = self.mount_overlay();
            if self.volatile
                && mounted.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EINVAL)
            {
                // A kernel older than 5.10 does not know `volatile`.
                self.volatile = false;
                mounted = self.mount_overlay();
            }
            match mounted {
                Ok(()) => MountKind::Overlay,
                Err(e) => {
                    let errno = e.raw_os_error();
                    // Permission and file-system support problems fall back to a copy; other
                    // errors (missing dirs, bad options) are real failures.
                    if matches!(
                        errno,
                        Some(
                            libc::EPERM
                                | libc::ENODEV
                                | libc::EINVAL
                                | libc::ENOTSUP
                                | libc::EACCES
                        )
                    ) {
                        self.copy_layers()?;
                        MountKind::Copy
                    } else {
                        return Err(ImageError::Snapshot(format!(
                            "snapshot {}: cannot mount overlay at {}: {e}",
                            self.id,
                            self.merged().display()
                        )));
                    }
                }
            }
        };
        if self.meta.kind != Some(kind) {
            self.meta.kind = Some(kind);
            // Only a copy is remembered (later mounts and diffs must not try the overlay); an
            // unrecorded kind means overlay, so the usual case writes nothing (every file made
            // and removed per box costs, notably on ext4 without a journal).
            if kind == MountKind::Copy {
                self.save_meta()?;
            }
        }
        Ok(kind)
    }

    fn mount_overlay(&self) -> io::Result<()> {
        let opts = self.mount_options();
        let target = cstring(self.merged().as_os_str())?;
        match &opts.lower_base {
            None => mount_overlay_data(&target, &opts.data),
            Some(base) => match mount_overlay_new_api(self) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => {
                    mount_overlay_from(base, &target, &opts.data)
                }
                other => other,
            },
        }
    }

    /// Unmounts `merged` (lazily if busy). A copy-made snapshot has nothing to unmount.
    pub fn unmount(&self) -> Result<()> {
        let merged = self.merged();
        if !self.is_mounted()? {
            return Ok(());
        }
        let target =
            cstring(merged.as_os_str()).ctx(|| format!("cannot unmount {}", merged.display()))?;
        // SAFETY: target is a valid NUL-terminated path.
        let mut rc = unsafe { libc::umount2(target.as_ptr(), 0) };
        if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) {
            // SAFETY: as above.
            rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(ImageError::io_path("unmount", &merged, e));
            }
        }
        Ok(())
    }

    /// Unmounts and deletes the snapshot's directories (the box's changes are gone).
    pub fn remove(self) -> Result<()> {
        self.unmount()?;
        remove_tree(&self.root).ctx(|| format!("cannot remove snapshot {}", self.root.display()))
    }

    /// What the box changed relative to its image, sorted by path.
    pub fn diff(&self) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        match self.meta.kind {
            Some(MountKind::Copy) => self.diff_copy(&mut changes)?,
            _ => self.diff_upper(Path::new(""), false, &mut changes)?,
        }
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(changes)
    }

    fn diff_upper(&self, rel: &Path, under_opaque: bool, out: &mut Vec<Change>) -> Result<()> {
        let dir = self.upper().join(rel);
        for (name, meta) in read_dir_sorted(&dir)? {
            let rel_path = rel.join(&name);
            let full = dir.join(&name);
            let abs = Path::new("/").join(&rel_path);
            if is_whiteout(&meta) {
                out.push(Change {
                    kind: ChangeKind::Deleted,
                    path: abs,
                });
                continue;
            }
            let in_lowers = !under_opaque && self.in_lowers(&rel_path);
            let kind = if in_lowers {
                ChangeKind::Changed
            } else {
                ChangeKind::Added
            };
            out.push(Change { kind, path: abs });
            if meta.is_dir() {
                let opaque = under_opaque || is_opaque(&full);
                self.diff_upper(&rel_path, opaque || !in_lowers, out)?;
            }
        }
        Ok(())
    }

    /// Whether `rel` exists in the image (the union of the lowers, whiteouts applied).
    fn in_lowers(&self, rel: &Path) -> bool {
        for lower in &self.meta.lowers {
            let mut cur = lower.clone();
            let mut hidden_below = false;
            let comps: Vec<_> = rel.components().collect();
            for (i, c) in comps.iter().enumerate() {
                cur.push(c);
                match fs::symlink_metadata(&cur) {
                    Ok(m) if is_whiteout(&m) => return false,
                    Ok(m) => {
                        if i + 1 == comps.len() {
                            return true;
                        }
                        if m.is_dir() && is_opaque(&cur) {
                            hidden_below = true;
                        }
                    }
                    Err(_) => break,
                }
            }
            if hidden_below {
                return false;
            }
        }
        false
    }

    fn diff_copy(&self, out: &mut Vec<Change>) -> Result<()> {
        let mut image: BTreeMap<PathBuf, EntrySummary> = BTreeMap::new();
        for lower in self.meta.lowers.iter().rev() {
            union_layer(lower, Path::new(""), &mut image)?;
        }
        let mut seen = HashSet::new();
        walk_merged(&self.merged(), Path::new(""), &image, &mut seen, out)?;
        for path in image.keys() {
            if seen.contains(path) {
                continue;
            }
            // Report a deleted directory once, not each of its entries.
            if path
                .parent()
                .is_some_and(|p| !p.as_os_str().is_empty() && !seen.contains(p))
            {
                continue;
            }
            out.push(Change {
                kind: ChangeKind::Deleted,
                path: Path::new("/").join(path),
            });
        }
        Ok(())
    }

    /// The copy fallback: the layers bottom-up into `merged`, whiteouts and opaque
    /// directories applied, ownership, modes, xattrs and times kept.
    fn copy_layers(&self) -> Result<()> {
        let merged = self.merged();
        for lower in self.meta.lowers.iter().rev() {
            copy_layer(lower, &merged).ctx(|| {
                format!(
                    "snapshot {}: cannot copy layer {} into {}",
                    self.id,
                    lower.display(),
                    merged.display()
                )
            })?;
        }
        Ok(())
    }
}

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ImageError::Snapshot(format!(
            "invalid snapshot id {id:?}: use letters, digits, '-', '_' and '.' (not first)"
        )))
    }
}

/// Escapes the characters overlay's option parser treats specially.
fn escape(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn join_lowers<'a>(lowers: impl Iterator<Item = &'a OsStr>) -> String {
    lowers
        .map(|l| escape(Path::new(l)))
        .collect::<Vec<_>>()
        .join(":")
}

fn common_parent(paths: &[PathBuf]) -> PathBuf {
    let mut base = paths
        .first()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    while !paths.iter().all(|p| p.starts_with(&base)) {
        if !base.pop() {
            break;
        }
    }
    base
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn mount_overlay_data(target: &CString, data: &str) -> io::Result<()> {
    let data = CString::new(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Mounts with relative lowers from a child process whose current directory is `base`
/// (the current directory is per process; changing ours would race other threads).
fn mount_overlay_from(base: &Path, target: &CString, data: &str) -> io::Result<()> {
    let base = cstring(base.as_os_str())?;
    let data = CString::new(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the child only calls async-signal-safe functions (chdir, mount, _exit) on
    // memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; the child never returns into Rust code.
        unsafe {
            if libc::chdir(base.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            let rc = libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                data.as_ptr().cast(),
            );
            libc::_exit(if rc == 0 {
                0
            } else {
                *libc::__errno_location()
            });
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: pid is our child; status is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if libc::WIFEXITED(status) {
        Err(io::Error::from_raw_os_error(libc::WEXITSTATUS(status)))
    } else {
        Err(io::Error::other("overlay mount helper died"))
    }
}

const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

fn fsconfig(
    fd: &OwnedFd,
    cmd: libc::c_uint,
    key: Option<&CString>,
    value: Option<&CString>,
) -> io::Result<()> {
    // SAFETY: fd is an open fs context; key/value are NUL-terminated or null as fsconfig(2)
    // allows for the command given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.as_raw_fd(),
            cmd,
            key.map_or(std::ptr::null(), |k| k.as_ptr()),
            value.map_or(std::ptr::null(), |v| v.as_ptr()),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The new mount API with one `lowerdir+` per layer (Linux 6.8+): no length limit.
fn mount_overlay_new_api(snap: &Snapshot) -> io::Result<()> {
    // SAFETY: fsopen takes a NUL-terminated name and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: fd was just returned by fsopen and is owned by nobody else.
    let ctx = unsafe { OwnedFd::from_raw_fd(fd) };
    let lower_key = CString::new("lowerdir+").map_err(io::Error::other)?;
    for lower in &snap.meta.lowers {
        fsconfig(
            &ctx,
            FSCONFIG_SET_STRING,
            Some(&lower_key),
            Some(&cstring(lower.as_os_str())?),
        )?;
    }
    let set = |k: &str, v: &Path| -> io::Result<()> {
        let k = CString::new(k).map_err(io::Error::other)?;
        fsconfig(
            &ctx,
            FSCONFIG_SET_STRING,
            Some(&k),
            Some(&cstring(v.as_os_str())?),
        )
    };
    set("upperdir", &snap.upper())?;
    set("workdir", &snap.work())?;
    if snap.meta.rootless {
        let k = CString::new("userxattr").map_err(io::Error::other)?;
        fsconfig(&ctx, FSCONFIG_SET_FLAG, Some(&k), None)?;
    }
    fsconfig(&ctx, FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: ctx is a created fs context.
    let mfd = unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if mfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mfd = i32::try_from(mfd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: mfd was just returned by fsmount.
    let mnt = unsafe { OwnedFd::from_raw_fd(mfd) };
    let target = cstring(snap.merged().as_os_str())?;
    // SAFETY: mnt is a detached mount fd; "" with F_EMPTY_PATH names it; target is a path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `path` is a mount point in this mount namespace (per /proc/self/mountinfo).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo")
        .ctx(|| "cannot read /proc/self/mountinfo".to_string())?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mountinfo(mp)) == canon))
}

fn unescape_mountinfo(s: &str) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from(std::ffi::OsStr::from_bytes(&out))
}

/// Overlay's whiteout: a 0:0 character device.
fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether a directory is opaque (trusted.overlay.opaque or user.overlay.opaque = "y").
fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| get_xattr(dir, name).ok().flatten().as_deref() == Some(b"y"))
}

/// Reads one extended attribute of `path` (not following a final symlink).
pub(crate) fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cstring(path.as_os_str())?;
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: p and n are NUL-terminated; buf is writable for buf.len() bytes.
        let rc =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

/// Every extended attribute of `path` (not following a final symlink), name → value.
pub(crate) fn list_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let p = cstring(path.as_os_str())?;
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: p is NUL-terminated; buf is writable for buf.len() bytes.
        let rc = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            break rc as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in buf[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if let Some(value) = get_xattr(path, &name)? {
            out.push((name, value));
        }
    }
    Ok(out)
}

/// Sets one extended attribute of `path` (not following a final symlink).
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cstring(path.as_os_str())?;
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: p and n are NUL-terminated; value is readable for value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<(OsString, fs::Metadata)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).ctx(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.ctx(|| format!("cannot read {}", dir.display()))?;
        let meta = fs::symlink_metadata(entry.path())
            .ctx(|| format!("cannot stat {}", entry.path().display()))?;
        out.push((entry.file_name(), meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What the copy-mode diff compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntrySummary {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl EntrySummary {
    fn of(meta: &fs::Metadata) -> Self {
        let dir = meta.is_dir();
        EntrySummary {
            kind: meta.mode() & libc::S_IFMT,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            // A directory's size and times change with its entries, which are diffed themselves.
            size: if dir { 0 } else { meta.size() },
            mtime: if dir { 0 } else { meta.mtime() },
            mtime_nsec: if dir { 0 } else { meta.mtime_nsec() },
        }
    }
}

fn union_layer(
    layer: &Path,
    rel: &Path,
    image: &mut BTreeMap<PathBuf, EntrySummary>,
) -> Result<()> {
    let dir = layer.join(rel);
    for (name, meta) in read_dir_sorted(&dir)? {
        let rel_path = rel.join(&name);
        if is_whiteout(&meta) {
            let doomed: Vec<PathBuf> = image
                .range(rel_path.clone()..)
                .map(|(k, _)| k.clone())
                .take_while(|k| k.starts_with(&rel_path))
                .collect();
            for k in doomed {
                image.remove(&k);
            }
            continue;
        }
        if meta.is_dir() && is_opaque(&dir.join(&name)) {
            let doomed: Vec<PathBuf> = image
                .range(rel_path.clone()..)
                .map(|(k, _)| k.clone())
                .take_while(|k| k.starts_with(&rel_path))
                .filter(|k| k != &rel_path)
                .collect();
            for k in doomed {
                image.remove(&k);
            }
        }
        image.insert(rel_path.clone(), EntrySummary::of(&meta));
        if meta.is_dir() {
            union_layer(layer, &rel_path, image)?;
        }
    }
    Ok(())
}

fn walk_merged(
    merged: &Path,
    rel: &Path,
    image: &BTreeMap<PathBuf, EntrySummary>,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<Change>,
) -> Result<()> {
    for (name, meta) in read_dir_sorted(&merged.join(rel))? {
        let rel_path = rel.join(&name);
        match image.get(&rel_path) {
            None => out.push(Change {
                kind: ChangeKind::Added,
                path: Path::new("/").join(&rel_path),
            }),
            Some(s) if *s != EntrySummary::of(&meta) => out.push(Change {
                kind: ChangeKind::Changed,
                path: Path::new("/").join(&rel_path),
            }),
            Some(_) => {}
        }
        seen.insert(rel_path.clone());
        if meta.is_dir() {
            walk_merged(merged, &rel_path, image, seen, out)?;
        }
    }
    Ok(())
}

/// Copies one layer (overlay form) onto `dest`.
fn copy_layer(layer: &Path, dest: &Path) -> io::Result<()> {
    let mut dirs_to_finish = Vec::new();
    copy_dir_entries(layer, dest, &mut dirs_to_finish)?;
    // Directory times last: creating entries changes them.
    for (src_meta, d) in dirs_to_finish.iter().rev() {
        set_times(d, src_meta)?;
    }
    Ok(())
}

fn copy_dir_entries(
    src: &Path,
    dest: &Path,
    dirs: &mut Vec<(fs::Metadata, PathBuf)>,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let s = entry.path();
        let d = dest.join(entry.file_name());
        let meta = fs::symlink_metadata(&s)?;
        let existing = fs::symlink_metadata(&d).ok();
        if is_whiteout(&meta) {
            if let Some(m) = existing {
                remove_path(&d, &m)?;
            }
            continue;
        }
        if meta.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {
                    if is_opaque(&s) {
                        for e in fs::read_dir(&d)? {
                            let e = e?;
                            remove_path(&e.path(), &fs::symlink_metadata(e.path())?)?;
                        }
                    }
                }
                Some(m) => {
                    remove_path(&d, &m)?;
                    fs::create_dir(&d)?;
                }
                None => fs::create_dir(&d)?,
            }
            copy_dir_entries(&s, &d, dirs)?;
            copy_owner_mode_xattrs(&s, &d, &meta)?;
            dirs.push((meta, d));
            continue;
        }
        if let Some(m) = existing {
            remove_path(&d, &m)?;
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            copy_file_contents(&s, &d)?;
        } else {
            let c = cstring(d.as_os_str())?;
            // SAFETY: c is NUL-terminated; mode and rdev come from the source's stat.
            let rc = unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev()) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        copy_owner_mode_xattrs(&s, &d, &meta)?;
        set_times(&d, &meta)?;
    }
    Ok(())
}

/// Reflink where the file system can (FICLONE), else copy_file_range (std's copy).
fn copy_file_contents(src: &Path, dest: &Path) -> io::Result<()> {
    let from = fs::File::open(src)?;
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both fds are open; FICLONE takes the source fd as its argument.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE, from.as_raw_fd()) };
    if rc == 0 {
        return Ok(());
    }
    let mut from = from;
    let mut to = to;
    io::copy(&mut from, &mut to)?;
    Ok(())
}

fn copy_owner_mode_xattrs(src: &Path, dest: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let is_link = meta.file_type().is_symlink();
    match std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid())) {
        Ok(()) => {}
        // Rootless copies cannot give files away; they stay the caller's.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => return Err(e),
    }
    if !is_link {
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    for (name, value) in list_xattrs(src).unwrap_or_default() {
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        // Best effort: the destination file system or our privileges may refuse some.
        let _ = set_xattr(dest, &name, &value);
    }
    Ok(())
}

fn set_times(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let c = cstring(path.as_os_str())?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: c is NUL-terminated; times points to two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn remove_path(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// remove_dir_all that also gets through directories without permissions (overlay leaves
/// `work/work` as mode 000, which a rootless owner must chmod before removing).
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            fs::remove_dir_all(path)
        }
    }
}

fn make_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}
