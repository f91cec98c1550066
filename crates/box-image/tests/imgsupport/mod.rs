//! Shared helpers of the archive, snapshot and host tests: temporary directories that unmount
//! and delete themselves, and the root-only test gate.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Gate for root-only tests: true when root; otherwise prints a skip line and returns false,
/// or panics when BOX_REQUIRE_PRIVILEGED=1 (CI that must run them).
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("BOX_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: needs root and BOX_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("{test}: skipped (needs root)");
    false
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// A directory under /var/tmp removed (after unmounting anything below it) when dropped,
/// so a failing test leaves nothing behind.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh directory named after the test.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/var/tmp/box-img-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        for m in mounts_under(&self.path) {
            let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).unwrap_or_default();
            // SAFETY: c is a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        if fs::remove_dir_all(&self.path).is_err() {
            let _ = std::process::Command::new("chmod")
                .arg("-R")
                .arg("u+rwx")
                .arg(&self.path)
                .status();
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes `content` to `root/rel`, creating parents.
pub fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// Makes an overlay whiteout (0:0 char device) at `root/rel` (root only).
pub fn whiteout(root: &Path, rel: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a NUL-terminated path.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) };
    assert_eq!(rc, 0, "mknod whiteout {}", p.display());
}
