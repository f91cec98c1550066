//! A thread confined to a root directory: after [`ChrootGuard::enter`] every path the thread
//! resolves, absolute symlinks a box planted included, stays under that root (the thread's own
//! `chroot`, its fs attributes unshared from the rest of the process). Processes the thread
//! starts inherit the root, as apk-tools' scripts do under `apk --root`. Dropping the guard
//! takes the thread back to the root it had, so it can clean up mounts made outside.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sched::{unshare, CloneFlags};

use crate::error::{EngineError, Result};

/// The calling thread's root while it is confined; restores it on drop.
pub struct ChrootGuard {
    outer: OwnedFd,
}

fn failed(what: &str, e: nix::Error) -> EngineError {
    EngineError::io(what.to_string(), std::io::Error::from(e))
}

impl ChrootGuard {
    /// Makes `root` (a directory descriptor) the calling thread's root and working directory.
    /// Needs CAP_SYS_CHROOT in the thread's user namespace: host root, or root of a user
    /// namespace the process made or joined.
    pub fn enter(root: BorrowedFd<'_>) -> Result<ChrootGuard> {
        unshare(CloneFlags::CLONE_FS)
            .map_err(|e| failed("cannot unshare the thread's fs attributes", e))?;
        let outer: OwnedFd = std::fs::File::open("/")
            .map_err(|e| EngineError::io("cannot open the current root", e))?
            .into();
        nix::unistd::fchdir(root.as_fd())
            .map_err(|e| failed("cannot change into the root directory", e))?;
        nix::unistd::chroot(".").map_err(|e| {
            failed(
                "cannot change the root directory (chroot needs root, or a user namespace)",
                e,
            )
        })?;
        nix::unistd::chdir("/").map_err(|e| failed("cannot change into /", e))?;
        Ok(ChrootGuard { outer })
    }
}

impl Drop for ChrootGuard {
    fn drop(&mut self) {
        if nix::unistd::fchdir(self.outer.as_fd()).is_ok() {
            let _ = nix::unistd::chroot(".");
        }
    }
}

/// Runs `f` on a new thread whose root is the directory `root` (see [`ChrootGuard`]).
pub fn in_root<T: Send>(root: &std::path::Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<T> {
                let dir = std::fs::File::open(root)
                    .map_err(|e| EngineError::io(format!("cannot open {}", root.display()), e))?;
                let _guard = ChrootGuard::enter(dir.as_fd())?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(EngineError::WrongState("a confined thread panicked".into())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confined_thread_cannot_follow_a_symlink_out() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("box-chroot-test-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/inside"), "in").unwrap();
        let outside = dir.join("outside");
        std::fs::write(&outside, "out").unwrap();
        // An absolute link to the outside file's host path.
        std::os::unix::fs::symlink(&outside, root.join("etc/escape")).unwrap();
        let (inside, escape) = in_root(&root, || {
            (
                std::fs::read_to_string("/etc/inside").ok(),
                std::fs::read_to_string("/etc/escape").ok(),
            )
        })
        .unwrap();
        assert_eq!(inside.as_deref(), Some("in"));
        assert_eq!(escape, None);
        // The rest of the process keeps its root.
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "out");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
