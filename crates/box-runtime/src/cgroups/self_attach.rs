//! A new process of a box moving itself into the box's cgroup (cgroup v1).
//!
//! Writing a pid to `cgroup.procs` (or any pid but the caller's own to `tasks`) takes the
//! kernel's global lock that keeps thread groups still during migrations; the first taker after
//! an idle moment waits for an RCU grace period, 10-20 ms on the machines we measured, on the
//! critical path of every box start. A single thread that writes `0` (itself) to `tasks` is
//! moved without that lock. The box's init and exec'd processes are single-threaded when they
//! join, so each writes `0` to the `tasks` file of every hierarchy, opened by the runtime before
//! the process was cloned (the opener's credentials are the ones checked). Cgroup v2 has no such
//! path for a domain cgroup: there the runtime moves the process (`Cgroup::add_process`).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use super::files::hint_for;
use super::CgroupError;

/// The box's `tasks` files, open for writing, one per v1 hierarchy.
#[derive(Debug)]
pub struct SelfAttach {
    files: Vec<(PathBuf, File)>,
}

impl SelfAttach {
    /// Opens `tasks` in each of `dirs` (the box's directories).
    pub(crate) fn open(dirs: Vec<PathBuf>) -> Result<SelfAttach, CgroupError> {
        let mut files = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let path = dir.join("tasks");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| write_error(&path, source))?;
            files.push((path, file));
        }
        Ok(SelfAttach { files })
    }

    /// Moves the calling thread (the whole process, when it has only this thread) into the
    /// box's cgroup in every hierarchy.
    pub fn attach_current(&self) -> Result<(), CgroupError> {
        for (path, file) in &self.files {
            let mut f: &File = file;
            f.write_all(b"0")
                .map_err(|source| write_error(path, source))?;
        }
        Ok(())
    }
}

fn write_error(path: &std::path::Path, source: std::io::Error) -> CgroupError {
    CgroupError::Write {
        action: "move the box's process into its cgroup".into(),
        path: path.to_path_buf(),
        value: "0".into(),
        hint: hint_for(&source),
        source,
    }
}
