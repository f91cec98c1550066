//! Supervised exec sessions: a detached `box exec -d` / `box use -d` process gets a small
//! supervisor of its own (`box __supervise-exec <id> <file>`), as the box's main process does:
//! it holds the process's pipes or pty, logs its output to `<data>/boxes/<id>/exec-<pid>.log`
//! and serves an attach socket at `<run>/boxes/<id>/e<pid>.sock` (the protocol of
//! [`box_supervisor::hub`]), so `box grab BOX PID` can take the session over later. The session
//! ends with its process; stopping or removing the box ends it too. Like the box's supervisor,
//! a session that runs on becomes the lean `box-supervisor` image and comes back to end.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use box_runtime::{ExecOptions, Runtime};
use box_supervisor::handover::{self, Handover};
use box_supervisor::hub::Hub;
use box_supervisor::log::LogWriter;
use serde::{Deserialize, Serialize};

use super::{
    finish_box_io, handshake, launch, pipe, run_until_end, sys, take_sync_fd, with_box_stdio, Back,
};
use crate::error::{EngineError, IoContext, Result};
use crate::paths::Paths;

/// The hidden subcommand of the `box` binary that runs [`run_exec`].
pub const EXEC_SUBCOMMAND: &str = "__supervise-exec";

/// What the spawner hands an exec session's supervisor (in a file: a process can be large).
#[derive(Debug, Serialize, Deserialize)]
struct SessionRequest {
    /// The OCI process to start in the box.
    process: oci_spec::runtime::Process,
    /// Give it a stdin (a pipe, or the pty) that attach clients can write to.
    stdin: bool,
}

/// Starts `process` in running box `id` as a supervised session, detached from the caller
/// (`box_bin __supervise-exec`); returns the process's host pid once it runs.
pub fn spawn_exec(
    box_bin: &Path,
    paths: &Paths,
    id: &str,
    process: oci_spec::runtime::Process,
    stdin: bool,
) -> Result<i32> {
    let run_dir = paths.box_run_dir(id);
    std::fs::create_dir_all(&run_dir).ctx(|| format!("cannot create {}", run_dir.display()))?;
    let file = run_dir.join(format!("exec-{}.json", crate::db::new_id()?));
    let text = serde_json::to_vec(&SessionRequest { process, stdin })
        .map_err(|e| EngineError::WrongState(format!("cannot encode the exec process: {e}")))?;
    std::fs::write(&file, text).ctx(|| format!("cannot write {}", file.display()))?;
    let mut cmd = Command::new(box_bin);
    cmd.arg(EXEC_SUBCOMMAND).arg(id).arg(&file);
    let (read_end, write_end) = pipe()?;
    let started = launch(cmd, paths, id, false, write_end)
        .and_then(|()| handshake(read_end, paths, id, None));
    let _ = std::fs::remove_file(&file);
    started.map(|(pid, _)| pid)
}

/// The session supervisor's body (`box __supervise-exec <id> <file>`): starts the process,
/// reports "started <pid>", pumps its I/O until it ends, keeps its exit code; exits 0 (1 when
/// it could not start it; the spawner got the reason). When the lean image comes back
/// ([`handover::ENV`] set), the last argument is the session's pid instead of the request.
pub fn run_exec(paths: &Paths, id: &str, request: &Path) -> ! {
    if let Ok(state) = std::env::var(handover::ENV) {
        std::env::remove_var(handover::ENV);
        let pid = request.to_str().and_then(|p| p.parse::<i32>().ok());
        // SAFETY: the value is our own start-up environment, written by the lean image that
        // executed us, and nothing in this process has taken a descriptor yet.
        let code = match (unsafe { Handover::decode(&state) }, pid) {
            (Ok(h), Some(pid)) => {
                end_session(paths, id, pid, h);
                0
            }
            _ => 1,
        };
        std::process::exit(code)
    }
    let mut sync = take_sync_fd();
    let code = match supervise_exec(paths, id, request, &mut sync) {
        Ok(()) => 0,
        Err(e) => {
            if let Some(mut s) = sync.take() {
                let _ = writeln!(s, "failed {}", e.to_string().replace('\n', " "));
            }
            1
        }
    };
    std::process::exit(code)
}

fn supervise_exec(
    paths: &Paths,
    id: &str,
    request: &Path,
    sync: &mut Option<std::fs::File>,
) -> Result<()> {
    let text = std::fs::read(request).ctx(|| format!("cannot read {}", request.display()))?;
    let _ = std::fs::remove_file(request);
    let req: SessionRequest = serde_json::from_slice(&text)
        .map_err(|e| EngineError::WrongState(format!("bad exec request: {e}")))?;
    // SAFETY: prctl with integer arguments: the session's orphans come to us to be reaped.
    sys("cannot become a child subreaper", unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    })?;
    let runtime = Runtime::new(paths.runtime_root())?;
    let me = std::process::id();
    let run_dir = paths.box_run_dir(id);
    let pid_file: PathBuf = run_dir.join(format!("e{me}.pid"));
    let console = run_dir.join(format!("c{me}.sock"));
    let tty = req.process.terminal() == Some(true);
    let started = with_box_stdio(&console, tty, req.stdin, |console_socket| {
        let opts = ExecOptions {
            process: req.process,
            console_socket,
            pid_file: Some(pid_file.clone()),
            detach: true,
            preserve_fds: 0,
        };
        runtime.exec(id, &opts)?;
        Ok(())
    })?;
    let pid_text =
        std::fs::read_to_string(&pid_file).ctx(|| format!("cannot read {}", pid_file.display()))?;
    let _ = std::fs::remove_file(&pid_file);
    let pid: i32 = pid_text
        .trim()
        .parse()
        .map_err(|_| EngineError::WrongState(format!("bad exec pid {pid_text:?}")))?;
    let io = finish_box_io(started, pid);
    let sock = paths.exec_socket(id, pid);
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).ctx(|| format!("cannot listen on {}", sock.display()))?;
    let mut hub = Hub::new(listener).ctx(|| "cannot make the attach socket non-blocking".into())?;
    hub.tty = tty;
    let log = LogWriter::open(&paths.exec_log_path(id, pid))
        .map_err(|e| EngineError::io("cannot open the exec session's log".to_string(), e))?;
    if let Some(mut s) = sync.take() {
        let _ = writeln!(s, "started {pid}");
    }
    let mut state = Handover {
        hub,
        log,
        running: None,
        exit: None,
        backoff_ms: 0,
    };
    // A session that runs on becomes the lean image too, and comes back here (its pid in place
    // of the request, which is gone) at its end.
    let back = Back {
        program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
        args: vec![EXEC_SUBCOMMAND.to_string(), id.to_string(), pid.to_string()],
    };
    let code = run_until_end(&mut state, io, &back)?;
    state.exit = Some(code);
    end_session(paths, id, pid, state);
    Ok(())
}

/// The exit code of box `id`'s exec session `pid` once it has ended (none while it runs, or
/// when there was no such session).
pub fn session_exit_code(paths: &Paths, id: &str, pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(paths.exec_exit_path(id, pid)).ok()?;
    text.trim().parse().ok()
}

/// The session's end: its exit code kept next to its log (for `box grab` after the end), the
/// exit frame to the clients, its socket removed.
fn end_session(paths: &Paths, id: &str, pid: i32, mut h: Handover) {
    let code = h.exit.unwrap_or(255);
    let exit = paths.exec_exit_path(id, pid);
    let tmp = exit.with_extension("exit.tmp");
    if std::fs::write(&tmp, format!("{code}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, &exit);
    }
    h.hub.finish(code);
    let sock = h.hub.listener.local_addr().ok();
    if let Some(path) = sock.as_ref().and_then(|a| a.as_pathname()) {
        let _ = std::fs::remove_file(path);
    }
}
