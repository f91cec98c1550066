//! Reading and writing cgroup control files and directories, shared by the v1 and v2 backends.
//!
//! A plain directory tree may stand in for cgroupfs (tests): writing a missing control file creates
//! it only when the directory is not on a cgroup filesystem.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};

use super::CgroupError;

/// What to tell the user to try when a cgroup write or mkdir is refused.
pub fn hint_for(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            " (are you root? try --cgroup-parent pointing to a cgroup you may write)"
        }
        Some(libc::EBUSY) => " (the cgroup is busy: it may hold processes or children)",
        Some(libc::EINVAL) => " (the kernel rejected the value: check its range and units)",
        Some(libc::ENOSPC) => " (a parent cgroup does not allow this: e.g. empty cpuset)",
        Some(libc::ENOENT) => " (the controller file is missing: is the controller enabled?)",
        _ => "",
    }
}

/// Whether `dir` is on a cgroup (v1 or v2) filesystem.
pub fn on_cgroupfs(dir: &Path) -> bool {
    match statfs(dir) {
        Ok(s) => {
            let t = s.filesystem_type();
            t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
        }
        Err(_) => true,
    }
}

/// Whether `path` is on a cgroup2 filesystem.
pub fn is_cgroup2(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Reads a control file, trimmed.
pub fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a control file that may be missing.
pub fn read_opt(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Reads a number from a control file that may be missing (`max` reads as `u64::MAX`).
pub fn read_u64(path: &Path) -> Option<u64> {
    let s = read_opt(path)?;
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// Writes `value` to a control file in one `write(2)` (the kernel parses one write at a time).
pub fn write(path: &Path, value: &str, action: &str) -> Result<(), CgroupError> {
    let res = open_for_write(path).and_then(|mut f| f.write_all(value.as_bytes()));
    res.map_err(|source| CgroupError::Write {
        action: action.to_owned(),
        path: path.to_path_buf(),
        value: value.to_owned(),
        hint: hint_for(&source),
        source,
    })
}

fn open_for_write(path: &Path) -> io::Result<fs::File> {
    match fs::OpenOptions::new().write(true).truncate(true).open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = path.parent().unwrap_or(Path::new("/"));
            if parent.is_dir() && !on_cgroupfs(parent) {
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

/// Writes `value` only when the control file exists (for best-effort settings).
pub fn write_if_exists(path: &Path, value: &str, action: &str) -> Result<bool, CgroupError> {
    if !path.exists() {
        return Ok(false);
    }
    write(path, value, action).map(|()| true)
}

/// Creates every directory from `base` (exclusive, must exist) down to `dir`; returns those it
/// made, parents first. An `ENOENT` (a concurrent destroy removed a parent) is retried.
pub fn create_dirs(base: &Path, dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let rel = dir
        .strip_prefix(base)
        .map_err(|_| CgroupError::InvalidPath {
            path: dir.to_path_buf(),
            why: format!("it is not below {}", base.display()),
        })?;
    let mut created = Vec::new();
    'attempt: for attempt in 0..3 {
        let mut cur = base.to_path_buf();
        for comp in rel.components() {
            cur.push(comp);
            match fs::create_dir(&cur) {
                Ok(()) => {
                    if !created.contains(&cur) {
                        created.push(cur.clone());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 2 => continue 'attempt,
                Err(source) => {
                    return Err(CgroupError::Create {
                        path: cur,
                        hint: hint_for(&source),
                        source,
                    })
                }
            }
        }
        break;
    }
    Ok(created)
}

/// Every directory at or below `dir`, deepest last.
pub fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Pids listed in `cgroup.procs` of `dir` and of every cgroup below it.
pub fn procs_recursive(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut pids = Vec::new();
    for d in walk_dirs(dir) {
        let path = d.join("cgroup.procs");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            // A child cgroup removed while we walk is fine; the box's own dir must be readable.
            Err(e) if e.kind() == io::ErrorKind::NotFound && d != dir => continue,
            Err(source) => return Err(CgroupError::Read { path, source }),
        };
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Removes `dir` and every cgroup below it (deepest first), retrying briefly on `EBUSY` (the
/// kernel frees a cgroup a moment after its last process exits). Missing dirs are fine.
pub fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let mut dirs = walk_dirs(dir);
    dirs.reverse();
    for d in dirs {
        remove_dir_retry(&d)?;
    }
    Ok(())
}

/// `rmdir` with retries on `EBUSY`; a missing directory is success.
pub fn remove_dir_retry(dir: &Path) -> Result<(), CgroupError> {
    // Start short: on the hot path (`run` deleting its box) the cgroup is usually free at once.
    let mut delay = Duration::from_millis(1);
    for attempt in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 11 => {
                sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    hint: hint_for(&source),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Removes directories this box created (children before parents) only while they are empty:
/// intermediates like `box/` are shared with other boxes.
pub fn remove_if_empty(created: &[PathBuf]) {
    for d in created.iter().rev() {
        // ENOTEMPTY / EBUSY mean another box uses it: leave it.
        let _ = fs::remove_dir(d);
    }
}

/// Polls `done` every few milliseconds for up to `timeout`.
pub fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        if done()? {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
pub mod testdir {
    //! A self-removing temporary directory for tests (no extra crate needed).
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// Makes a fresh, empty directory.
        pub fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "box-cgroups-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("create temp dir");
            TempDir(p)
        }
        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testdir::TempDir;
    use super::*;

    #[test]
    fn create_dirs_reports_only_new_dirs_parents_first() {
        let t = TempDir::new("mk");
        std::fs::create_dir(t.path().join("box")).expect("mkdir");
        let made = create_dirs(t.path(), &t.path().join("box/a/b")).expect("creates");
        assert_eq!(made, vec![t.path().join("box/a"), t.path().join("box/a/b")]);
        assert!(create_dirs(t.path(), Path::new("/elsewhere")).is_err());
    }

    #[test]
    fn procs_recursive_collects_children() {
        let t = TempDir::new("procs");
        std::fs::create_dir_all(t.path().join("c/d")).expect("mkdir");
        std::fs::write(t.path().join("cgroup.procs"), "10\n11\n").expect("write");
        std::fs::write(t.path().join("c/d/cgroup.procs"), "12\n10\n").expect("write");
        assert_eq!(procs_recursive(t.path()).expect("reads"), vec![10, 11, 12]);
    }

    #[test]
    fn write_creates_files_only_off_cgroupfs() {
        let t = TempDir::new("write");
        write(&t.path().join("memory.max"), "42", "test").expect("writes");
        assert_eq!(read(&t.path().join("memory.max")).expect("reads"), "42");
        assert!(!write_if_exists(&t.path().join("nope"), "1", "test").expect("ok"));
    }

    #[test]
    fn remove_dir_retry_accepts_missing_dirs() {
        let t = TempDir::new("rm");
        remove_dir_retry(&t.path().join("missing")).expect("missing is fine");
    }
}
