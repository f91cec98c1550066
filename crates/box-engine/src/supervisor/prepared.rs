//! A supervisor prepared in advance: `box run` forks itself before it opens the database, and
//! the fork waits (detached, in its own session) to be told which box to supervise. Starting
//! the supervisor then costs a pipe write instead of starting the `box` binary again (its
//! loading and start-up were about a tenth of `run --rm … true`).
//!
//! The fork is taken before any SQLite connection exists (SQLite's state must not cross a
//! fork) and only while the caller has one thread. Dropping a [`Prepared`] unused (the create
//! failed, the caller was killed) closes the pipe: the fork sees the end and exits.

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{
    finish_run, handshake, pipe, supervise, Back, Groundwork, DATA_DIR_ENV, RUN_DIR_ENV, SUBCOMMAND,
};
use crate::error::{EngineError, Result};
use crate::paths::Paths;

/// A forked supervisor waiting for its box (see the module docs).
#[derive(Debug)]
pub struct Prepared {
    /// Where the box's id goes ("<id> <a|->\n"; `a`: attach first).
    go: std::fs::File,
    /// The spawn pipe's read end ("listening", "started <pid>", "failed <why>").
    sync: OwnedFd,
}

impl Prepared {
    /// Forks the prepared supervisor for boxes under `paths`; it returns to the full image as
    /// `box_bin __supervise <id>`. `None` when this process has more than one thread (a fork
    /// of it would not be whole): the caller then spawns the usual way.
    pub fn fork(box_bin: &Path, paths: &Paths) -> Result<Option<Prepared>> {
        if !std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1) {
            return Ok(None);
        }
        let (go_r, go_w) = pipe()?;
        let (sync_r, sync_w) = pipe()?;
        let devnull = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| EngineError::io("cannot open /dev/null", e))?;
        let box_bin = box_bin.to_path_buf();
        // SAFETY: this process has one thread (checked above), so the child is a whole copy of
        // it; the child never returns from `wait_and_supervise`.
        match unsafe { libc::fork() } {
            -1 => Err(EngineError::io(
                "cannot fork the supervisor",
                std::io::Error::last_os_error(),
            )),
            0 => {
                drop(go_w);
                drop(sync_r);
                wait_and_supervise(&box_bin, paths, go_r, sync_w, devnull)
            }
            child => {
                let mut status = 0;
                // SAFETY: reaps the intermediate child, which exits at once.
                unsafe { libc::waitpid(child, &mut status, 0) };
                Ok(Some(Prepared {
                    go: std::fs::File::from(go_w),
                    sync: sync_r,
                }))
            }
        }
    }

    /// Hands box `id` to the prepared supervisor and waits until it reports the box started
    /// (returns the supervisor's pid) or failed, as [`super::spawn`] does.
    pub fn spawn(self, id: &str, paths: &Paths) -> Result<i32> {
        self.go_with(id, false)?
            .handshake(paths, id, None)
            .map(|(pid, _)| pid)
    }

    /// Like [`Prepared::spawn`], attached from the box's first byte, as
    /// [`super::spawn_attached`] does.
    pub fn spawn_attached(self, id: &str, paths: &Paths, hello: u8) -> Result<(i32, UnixStream)> {
        let (pid, stream) = self.go_with(id, true)?.handshake(paths, id, Some(hello))?;
        let stream = stream.ok_or_else(|| {
            EngineError::WrongState(format!("the supervisor of box {id} never listened"))
        })?;
        Ok((pid, stream))
    }

    fn go_with(mut self, id: &str, attach_first: bool) -> Result<Prepared> {
        writeln!(self.go, "{id} {}", if attach_first { "a" } else { "-" })
            .map_err(|e| EngineError::io(format!("cannot start the supervisor of box {id}"), e))?;
        Ok(self)
    }

    fn handshake(
        self,
        paths: &Paths,
        id: &str,
        attach: Option<u8>,
    ) -> Result<(i32, Option<UnixStream>)> {
        drop(self.go);
        handshake(self.sync, paths, id, attach)
    }
}

/// The fork's body: detach, wait for a box id, supervise it; never returns.
fn wait_and_supervise(
    box_bin: &Path,
    paths: &Paths,
    go: OwnedFd,
    sync: OwnedFd,
    devnull: std::fs::File,
) -> ! {
    // SAFETY: single-threaded child: a second fork (the intermediate exits, so the supervisor
    // is reparented away from the caller), a new session, SIGPIPE ignored (the CLI restores its
    // default; a supervisor must outlive its clients), stdio on /dev/null, and every inherited
    // descriptor closed but the two pipes.
    unsafe {
        match libc::fork() {
            0 => {}
            -1 => libc::_exit(1),
            _ => libc::_exit(0),
        }
        libc::setsid();
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        for target in 0..3 {
            libc::dup2(devnull.as_raw_fd(), target);
        }
    }
    drop(devnull);
    close_all_but(&[go.as_raw_fd(), sync.as_raw_fd()]);
    // While the caller writes the box's files: the groundwork (own mount namespace, database,
    // runtime), off the critical path.
    // On a first use the caller makes the data dir only now: then the database waits.
    let entered = Groundwork::enter_own_namespace();
    let early = entered
        .as_ref()
        .ok()
        .and_then(|()| Groundwork::open(paths).ok());
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(std::fs::File::from(go));
    let got = reader.read_line(&mut line);
    drop(reader);
    let mut words = line.split_whitespace();
    let (Ok(1..), Some(id), Some(flag)) = (got, words.next(), words.next()) else {
        // The caller went away (or changed its mind) before naming a box.
        // SAFETY: ends this child without running the caller's exit-time code.
        unsafe { libc::_exit(0) }
    };
    let id = id.to_string();
    std::env::set_var(DATA_DIR_ENV, &paths.data);
    std::env::set_var(RUN_DIR_ENV, &paths.run);
    let back = Back {
        program: PathBuf::from(box_bin),
        args: vec![SUBCOMMAND.to_string(), id.clone()],
    };
    let mut sync = Some(std::fs::File::from(sync));
    let ground = match (entered, early) {
        (_, Some(g)) => Ok(g),
        (Ok(()), None) => Groundwork::open(paths),
        (Err(e), None) => Err(e),
    };
    let result = ground.and_then(|g| supervise(paths, &id, &mut sync, flag == "a", back, Some(g)));
    let code = finish_run(paths, &id, result, &mut sync);
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

/// Closes every descriptor from 3 up except `keep`.
fn close_all_but(keep: &[RawFd]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from: RawFd = 3;
    for k in keep.into_iter().chain([RawFd::MAX]) {
        if k > from {
            let last = if k == RawFd::MAX {
                u32::MAX
            } else {
                (k - 1) as u32
            };
            // SAFETY: close_range on a range of our own descriptor numbers.
            unsafe { libc::syscall(libc::SYS_close_range, from as u32, last, 0) };
        }
        from = from.max(k.saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_all_but_keeps_only_the_named_descriptors() {
        // In a child process, so the test harness's own descriptors are left alone.
        // SAFETY: the child only makes descriptors, closes them and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let fds: Vec<OwnedFd> = (0..6)
                .map(|_| std::fs::File::open("/dev/null").unwrap().into())
                .collect();
            let keep = [fds[1].as_raw_fd(), fds[4].as_raw_fd()];
            close_all_but(&keep);
            let open = |fd: RawFd| {
                // SAFETY: F_GETFD only inspects the descriptor number.
                unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
            };
            let ok = fds
                .iter()
                .all(|f| open(f.as_raw_fd()) == keep.contains(&f.as_raw_fd()))
                && open(0);
            std::mem::forget(fds);
            // SAFETY: ends the child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
