//! supervisor: the small process that owns one box from start to end (`box __supervise <id>`).
//! It mounts the box's snapshot in a mount namespace of its own, creates and starts the box
//! through box-runtime with its stdio on pipes (or a pty), then becomes the lean
//! `box-supervisor` image (crate box-supervisor: the I/O loop, the log, the attach socket) until
//! the box ends; back in this image it records the end and applies `--rm` and the restart
//! policy. One thread around one `poll(2)` loop, no async runtime, so it stays small. The
//! attach protocol is described in [`box_supervisor::hub`].
//!
//! # Spawning
//! [`spawn`] starts `box __supervise <id>` detached (double fork + setsid, stdio on /dev/null)
//! and waits on a pipe until the supervisor says "started <pid>" or "failed <reason>". Tests use
//! [`spawn_command`] with their own binary re-executed (see tests/supervisor.rs).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use box_image::snapshot::Snapshot;
use box_runtime::{CreateOptions, Runtime};
use box_supervisor::handover::{self, Handover};
use box_supervisor::hub::Hub;
use box_supervisor::log::LogWriter;
use box_supervisor::pump::{pump, pump_until, BoxIo, Pumped};
pub use box_supervisor::{CLIENT_BACKLOG, FRAME_ATTACHED, FRAME_EXIT, FRAME_STDERR, FRAME_STDOUT};

use crate::db::{
    now_ms, process_alive, process_start_time, BoxDb, BoxRecord, BoxState, StateChange,
};
use crate::error::{EngineError, IoContext, Result};
use crate::paths::Paths;
use crate::spec::RestartPolicy;

pub mod exec;
mod prepared;
pub use prepared::Prepared;

/// The environment variable carrying the spawn pipe's descriptor number to the supervisor.
pub const SYNC_FD_ENV: &str = "BOX_SUPERVISOR_SYNC_FD";
/// The environment variables carrying the data and run dirs to the supervisor.
pub const DATA_DIR_ENV: &str = "BOX_SUPERVISOR_DATA_DIR";
/// See [`DATA_DIR_ENV`].
pub const RUN_DIR_ENV: &str = "BOX_SUPERVISOR_RUN_DIR";
/// Set by [`spawn_attached`]: the supervisor says "listening" once its attach socket exists and
/// starts the box only after a first client has said hello, so no output is missed.
pub const ATTACH_FIRST_ENV: &str = "BOX_SUPERVISOR_ATTACH_FIRST";
/// How long an attach-first supervisor waits for its client.
const ATTACH_FIRST_WAIT: Duration = Duration::from_secs(30);
/// The hidden subcommand of the `box` binary that runs [`run`].
pub const SUBCOMMAND: &str = "__supervise";
/// The lean image's binary, looked for next to the running executable.
pub const LEAN_BIN: &str = "box-supervisor";
/// Names the lean image's binary instead (installs that keep it elsewhere).
pub const LEAN_BIN_ENV: &str = "BOX_SUPERVISOR_LEAN_BIN";
/// How long a box runs before its supervisor becomes the lean image.
const LEAN_AFTER: Duration = Duration::from_millis(200);
/// The marker `request_stop` leaves so that a stop by the user is not restarted.
const STOP_MARKER: &str = "stop-requested";

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A box that ran this long before it ended is restarted after [`BACKOFF_START`] again.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// Starts the supervisor of box `id` as `box_bin __supervise <id>`, detached from the caller,
/// and waits until it reports the box started (returns the supervisor's pid) or failed (the
/// error carries its reason).
pub fn spawn(box_bin: &Path, paths: &Paths, id: &str) -> Result<i32> {
    spawn_inner(supervise_command(box_bin, id), paths, id, None).map(|(pid, _)| pid)
}

/// [`spawn`] with the command given: the program and its arguments are the caller's; this adds
/// the environment ([`SYNC_FD_ENV`], [`DATA_DIR_ENV`], [`RUN_DIR_ENV`]), /dev/null stdio, and
/// the detaching (the command runs as a grandchild in a new session, so it is reparented away
/// from the caller at once and survives it).
pub fn spawn_command(cmd: Command, paths: &Paths, id: &str) -> Result<i32> {
    spawn_inner(cmd, paths, id, None).map(|(pid, _)| pid)
}

/// Like [`spawn`], but the box starts only once this caller is attached (with `hello`, see
/// the module docs): returns the supervisor's pid and the attach stream, which then carries
/// everything the box writes, from its first byte to its exit code.
pub fn spawn_attached(
    box_bin: &Path,
    paths: &Paths,
    id: &str,
    hello: u8,
) -> Result<(i32, UnixStream)> {
    attached(
        spawn_inner(supervise_command(box_bin, id), paths, id, Some(hello))?,
        id,
    )
}

/// [`spawn_attached`] with the command given (tests run themselves as the supervisor).
pub fn spawn_command_attached(
    cmd: Command,
    paths: &Paths,
    id: &str,
    hello: u8,
) -> Result<(i32, UnixStream)> {
    attached(spawn_inner(cmd, paths, id, Some(hello))?, id)
}

fn attached((pid, stream): (i32, Option<UnixStream>), id: &str) -> Result<(i32, UnixStream)> {
    let stream = stream.ok_or_else(|| {
        EngineError::WrongState(format!("the supervisor of box {id} never listened"))
    })?;
    Ok((pid, stream))
}

fn supervise_command(box_bin: &Path, id: &str) -> Command {
    let mut cmd = Command::new(box_bin);
    cmd.arg(SUBCOMMAND).arg(id);
    cmd
}

fn spawn_inner(
    cmd: Command,
    paths: &Paths,
    id: &str,
    attach: Option<u8>,
) -> Result<(i32, Option<UnixStream>)> {
    let (read_end, write_end) = pipe()?;
    launch(cmd, paths, id, attach.is_some(), write_end)?;
    handshake(read_end, paths, id, attach)
}

/// The spawner's side of the spawn pipe: "listening" (attach-first: connect then), then
/// "started <pid>" or "failed <why>".
fn handshake(
    read_end: OwnedFd,
    paths: &Paths,
    id: &str,
    attach: Option<u8>,
) -> Result<(i32, Option<UnixStream>)> {
    let mut lines = std::io::BufReader::new(std::fs::File::from(read_end));
    let mut next_line = || -> Result<String> {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut lines, &mut line)
            .ctx(|| format!("cannot read from the supervisor of box {id}"))?;
        Ok(line.trim_end().to_string())
    };
    let mut line = next_line()?;
    let mut stream = None;
    if let (Some(hello), "listening") = (attach, line.as_str()) {
        stream = Some(connect_attach(paths, id, hello)?);
        line = next_line()?;
    }
    if let Some(pid) = line.strip_prefix("started ") {
        let pid = pid.trim().parse().map_err(|_| {
            EngineError::WrongState(format!("the supervisor of box {id} said {line:?}"))
        })?;
        return Ok((pid, stream));
    }
    if let Some(why) = line.strip_prefix("failed ") {
        return Err(EngineError::WrongState(format!(
            "cannot start box {id}: {why}"
        )));
    }
    Err(EngineError::WrongState(format!(
        "the supervisor of box {id} exited without starting it (see box inspect {id})"
    )))
}

fn launch(
    mut cmd: Command,
    paths: &Paths,
    id: &str,
    attach_first: bool,
    write_end: OwnedFd,
) -> Result<()> {
    if attach_first {
        cmd.env(ATTACH_FIRST_ENV, "1");
    }
    let wfd = write_end.as_raw_fd();
    cmd.env(SYNC_FD_ENV, wfd.to_string())
        .env(DATA_DIR_ENV, &paths.data)
        .env(RUN_DIR_ENV, &paths.run)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (fcntl, fork, _exit, setsid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(wfd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .ctx(|| format!("cannot start the supervisor of box {id}"))?;
    drop(write_end);
    let _ = child.wait(); // the intermediate, gone at once
    Ok(())
}

/// The dirs [`spawn_command`] passed in the environment, if any (for the `__supervise` handler).
pub fn paths_from_env() -> Option<Paths> {
    let data = std::env::var_os(DATA_DIR_ENV)?;
    let run = std::env::var_os(RUN_DIR_ENV)?;
    Some(Paths::with_dirs(data, run))
}

/// Asks that the next end of box `id` is final (no restart): `box stop` calls this before it
/// signals the box.
pub fn request_stop(paths: &Paths, id: &str) -> Result<()> {
    let dir = paths.box_run_dir(id);
    std::fs::create_dir_all(&dir).ctx(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(STOP_MARKER), b"")
        .ctx(|| format!("cannot write {}", dir.join(STOP_MARKER).display()))
}

/// Waits until box `id` has ended for good (state exited or dead) and returns its exit code;
/// a box whose supervisor died is repaired (marked exited) and reported with code 255 when no
/// code was recorded. A box that is removed meanwhile (`--rm`) is [`EngineError::NoSuchBox`].
pub fn wait_exit(paths: &Paths, id: &str) -> Result<i32> {
    wait_exit_within(paths, id, None)
}

/// [`wait_exit`] that gives up after `limit` (none: waits for good) with
/// [`EngineError::WrongState`] saying the box did not end in time.
pub fn wait_exit_within(paths: &Paths, id: &str, limit: Option<Duration>) -> Result<i32> {
    let deadline = limit.map(|l| Instant::now() + l);
    let db = BoxDb::open(&paths.db_path())?;
    // Short polls first: a foreground run learns the exit code a moment before it is recorded.
    let mut pause = Duration::from_millis(1);
    loop {
        let rec = db
            .get(id)?
            .ok_or_else(|| EngineError::NoSuchBox(id.to_string()))?;
        match rec.state {
            BoxState::Exited | BoxState::Dead => return Ok(rec.exit_code.unwrap_or(255)),
            _ => {}
        }
        if let Some(pid) = rec.supervisor_pid {
            if !process_alive(pid, rec.supervisor_start) {
                db.repair()?;
                continue;
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(EngineError::WrongState(format!(
                "box {} did not end within {:?} of being killed: one of its processes may be \
                 stuck in the kernel (state D in `box top {}`), or its supervisor{} does not \
                 respond; try again later",
                rec.name,
                limit.unwrap_or_default(),
                rec.name,
                rec.supervisor_pid
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The supervisor's body (`box __supervise <id>`): supervises box `id` until it has ended for
/// good, then exits 0 (1 when it could not do its job; the reason is in the box's record).
/// Started again by the lean image with [`handover::ENV`] set, it takes the ended box back.
pub fn run(paths: &Paths, id: &str) -> ! {
    let code = match std::env::var(handover::ENV) {
        Ok(state) => {
            std::env::remove_var(handover::ENV);
            // SAFETY: the value is our own start-up environment, written by the lean image that
            // executed us, and nothing in this process has taken a descriptor yet.
            match unsafe { Handover::decode(&state) } {
                Ok(h) => finish_run(paths, id, resume(paths, id, h), &mut None),
                Err(e) => finish_run(paths, id, Err(EngineError::io("hand-over", e)), &mut None),
            }
        }
        Err(_) => {
            let mut sync = take_sync_fd();
            let attach_first = std::env::var_os(ATTACH_FIRST_ENV).is_some();
            std::env::remove_var(ATTACH_FIRST_ENV);
            let result = supervise(
                paths,
                id,
                &mut sync,
                attach_first,
                Back::this_process(),
                None,
            );
            finish_run(paths, id, result, &mut sync)
        }
    };
    std::process::exit(code)
}

/// Reports a failure (to the spawner if it still listens, and in the box's record) and
/// removes the box's run dir; returns the process's exit code.
fn finish_run(
    paths: &Paths,
    id: &str,
    result: Result<()>,
    sync: &mut Option<std::fs::File>,
) -> i32 {
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            let why = e.to_string().replace('\n', " ");
            if let Some(mut s) = sync.take() {
                let _ = writeln!(s, "failed {why}");
            }
            if let Ok(db) = BoxDb::open(&paths.db_path()) {
                let _ = db.update_state(
                    id,
                    &StateChange::Exited {
                        exit_code: 255,
                        oom_killed: false,
                        finished_at: now_ms(),
                        error: Some(why),
                    },
                );
            }
            1
        }
    };
    let _ = std::fs::remove_dir_all(paths.box_run_dir(id));
    code
}

fn take_sync_fd() -> Option<std::fs::File> {
    let fd: RawFd = std::env::var(SYNC_FD_ENV).ok()?.parse().ok()?;
    std::env::remove_var(SYNC_FD_ENV);
    // SAFETY: F_GETFD only inspects the descriptor number.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the spawner left this descriptor open for us and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: FD_CLOEXEC on our own descriptor, so the box never inherits it.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(std::fs::File::from(owned))
}

fn sys(what: &str, rc: libc::c_int) -> Result<()> {
    if rc < 0 {
        return Err(EngineError::io(
            what.to_string(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// How the lean image gets back to the full one: the program and arguments it executes.
struct Back {
    program: PathBuf,
    args: Vec<String>,
}

impl Back {
    /// This process again, as it was started (`box __supervise <id>`, or a test binary).
    fn this_process() -> Back {
        Back {
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            args: std::env::args().skip(1).collect(),
        }
    }
}

/// What the full image works with, from the first start to the final record.
struct Supervision<'a> {
    back: Back,
    paths: &'a Paths,
    id: &'a str,
    db: BoxDb,
    rec: BoxRecord,
    runtime: Runtime,
    /// The box's overlay (none for `--rootfs DIR` boxes), mounted in our mount namespace.
    snapshot: Option<Snapshot>,
    me: i32,
    my_start: Option<u64>,
}

impl<'a> Supervision<'a> {
    fn load(
        paths: &'a Paths,
        id: &'a str,
        back: Back,
        ground: Groundwork,
    ) -> Result<Supervision<'a>> {
        let Groundwork { db, runtime } = ground;
        let rec = db
            .get(id)?
            .ok_or_else(|| EngineError::NoSuchBox(id.to_string()))?;
        let snapshot = if paths.snapshot_dir(id).exists() || rec.spec.rootfs.is_none() {
            let mut s = Snapshot::open(&paths.data, id)?;
            // A `--rm` box's changes go with it: no need to sync them to disk.
            s.set_volatile(rec.spec.auto_remove);
            Some(s)
        } else {
            None
        };
        let me = std::process::id() as i32;
        Ok(Supervision {
            back,
            paths,
            id,
            runtime,
            db,
            rec,
            snapshot,
            me,
            my_start: process_start_time(me),
        })
    }

    fn stop_requested(&self) -> bool {
        self.paths.box_run_dir(self.id).join(STOP_MARKER).exists()
    }
}

/// Everything after the spawn handshake: the life of the box, restarts included.
/// What a supervisor makes before it needs to know its box: its own mount namespace (`/`
/// a slave, so the box's overlay stays ours), the subreaper flag, the database connection and
/// the runtime. A prepared supervisor makes it while it waits for the box's id.
pub(crate) struct Groundwork {
    db: BoxDb,
    runtime: Runtime,
}

impl Groundwork {
    /// Enters the supervisor's own mount namespace and opens the database and the runtime.
    pub(crate) fn make(paths: &Paths) -> Result<Groundwork> {
        Groundwork::enter_own_namespace()?;
        Groundwork::open(paths)
    }

    /// The supervisor's own mount namespace, and the subreaper flag.
    pub(crate) fn enter_own_namespace() -> Result<()> {
        // The overlay lives in our own mount namespace; the box's init inherits it.
        // SAFETY: unshare and mount with constant or valid NUL-terminated arguments.
        unsafe {
            sys(
                "cannot make the supervisor's mount namespace",
                libc::unshare(libc::CLONE_NEWNS),
            )?;
            sys(
                "cannot make / a slave mount",
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_SLAVE | libc::MS_REC,
                    std::ptr::null(),
                ),
            )?;
            // SAFETY (same block): prctl with integer arguments.
            sys(
                "cannot become a child subreaper",
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0),
            )?;
        }
        Ok(())
    }

    /// The database and the runtime only (the full image coming back from the lean one is in
    /// its namespace already).
    pub(crate) fn open(paths: &Paths) -> Result<Groundwork> {
        Ok(Groundwork {
            db: BoxDb::open(&paths.db_path())?,
            runtime: Runtime::new(paths.runtime_root())?,
        })
    }
}

fn supervise(
    paths: &Paths,
    id: &str,
    sync: &mut Option<std::fs::File>,
    attach_first: bool,
    back: Back,
    ground: Option<Groundwork>,
) -> Result<()> {
    let ground = match ground {
        Some(g) => g,
        None => Groundwork::make(paths)?,
    };
    let mut sv = Supervision::load(paths, id, back, ground)?;
    sv.db.set_supervisor(id, sv.me, sv.my_start)?;
    let run_dir = paths.box_run_dir(id);
    std::fs::create_dir_all(&run_dir).ctx(|| format!("cannot create {}", run_dir.display()))?;
    let _ = std::fs::remove_file(run_dir.join(STOP_MARKER));
    if let Some(s) = sv.snapshot.as_mut() {
        s.mount()?;
    }

    let sock_path = paths.attach_socket(id);
    let _ = std::fs::remove_file(&sock_path);
    let listener = UnixListener::bind(&sock_path)
        .ctx(|| format!("cannot listen on {}", sock_path.display()))?;
    let mut hub = Hub::new(listener).ctx(|| "cannot make the attach socket non-blocking".into())?;
    hub.tty = sv.rec.spec.tty;
    let log = LogWriter::open(&paths.log_path(id))
        .map_err(|e| EngineError::io("cannot open the box's log".to_string(), e))?;
    let mut io = Handover {
        hub,
        log,
        running: None,
        exit: None,
        backoff_ms: BACKOFF_START.as_millis() as u64,
    };
    if attach_first {
        if let Some(s) = sync.as_mut() {
            let _ = writeln!(s, "listening");
        }
        io.hub
            .wait_first_client(ATTACH_FIRST_WAIT)
            .ctx(|| "no attach".into())?;
    }
    life(&mut sv, io, sync)
}

/// The full image again after the lean one: the box has ended with `h.exit`.
fn resume(paths: &Paths, id: &str, h: Handover) -> Result<()> {
    let mut sv = Supervision::load(paths, id, Back::this_process(), Groundwork::open(paths)?)?;
    life(&mut sv, h, &mut None)
}

/// Starts the box (unless `io.exit` says it has just ended), supervises it until it has ended
/// for good (restarting it as its policy says), and records the end.
fn life(sv: &mut Supervision, mut io: Handover, sync: &mut Option<std::fs::File>) -> Result<()> {
    let (code, oom) = loop {
        let code = match io.exit.take() {
            Some(code) => code,
            None => {
                crate::oci::rejoin_network(sv.paths, &sv.db, sv.id, &sv.rec.spec)?;
                let started = start_box(&sv.runtime, sv.paths, &sv.db, sv.id, &sv.rec.spec)?;
                sv.db.update_state(
                    sv.id,
                    &StateChange::Running {
                        pid: started.pid,
                        supervisor_pid: sv.me,
                        supervisor_start: sv.my_start,
                        started_at: now_ms(),
                    },
                )?;
                if let Some(mut s) = sync.take() {
                    let _ = writeln!(s, "started {}", sv.me);
                }
                run_until_end(&mut io, started, &sv.back)?
            }
        };
        crate::network::unwire(sv.paths, sv.id, &sv.rec.spec);
        if sv.rec.spec.auto_remove {
            // Nothing restarts a `--rm` box, and its record (where an OOM kill would show) goes
            // with it: its runtime state goes after the clients (below).
            break (code, false);
        }
        let oom = oom_killed(&sv.runtime, sv.id);
        let _ = sv.runtime.delete(sv.id, true);
        let now = sv.db.get(sv.id)?;
        let restarts = now.as_ref().map(|r| r.restart_count).unwrap_or(0);
        // A box that ran a while before it ended starts over with the shortest back-off.
        let ran_ms = now.and_then(|r| r.started_at).map(|t| now_ms() - t);
        if ran_ms.is_some_and(|ms| ms >= BACKOFF_RESET.as_millis() as i64) {
            io.backoff_ms = BACKOFF_START.as_millis() as u64;
        }
        if sv.stop_requested() || !should_restart(sv.rec.spec.restart, code, restarts) {
            break (code, oom);
        }
        sv.db.update_state(
            sv.id,
            &StateChange::Restarting {
                exit_code: code,
                oom_killed: oom,
                finished_at: now_ms(),
            },
        )?;
        sv.db.increment_restart_count(sv.id)?;
        let backoff = Duration::from_millis(io.backoff_ms);
        io.hub.serve_until(backoff, || sv.stop_requested());
        io.backoff_ms = (backoff * 2).min(BACKOFF_MAX).as_millis() as u64;
        if sv.stop_requested() {
            break (code, oom);
        }
    };
    io.hub.finish(code);
    if sv.rec.spec.auto_remove {
        // Gone for its user once its row is: the clients (a foreground `run --rm`) are let go
        // then, and the files that no one else sees (runtime state, cgroups, the overlay in our
        // own mount namespace, the box's dirs) are removed after, off their critical path. A
        // supervisor killed in between leaves them to `Engine::open`'s orphan sweep.
        sv.db.delete(sv.id)?;
        drop(io);
        let _ = sv.runtime.delete(sv.id, true);
        if let Some(s) = sv.snapshot.take() {
            let _ = s.remove();
        }
        let _ = std::fs::remove_dir_all(sv.paths.box_dir(sv.id));
        return Ok(());
    }
    if let Some(s) = &sv.snapshot {
        let _ = s.unmount();
    }
    sv.db.update_state(
        sv.id,
        &StateChange::Exited {
            exit_code: code,
            oom_killed: oom,
            finished_at: now_ms(),
            error: None,
        },
    )?;
    Ok(())
}

/// The lean image's binary: [`LEAN_BIN_ENV`] if set, else `box-supervisor` next to our own
/// executable; none (the pump then runs in this image) when it does not exist.
fn lean_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(LEAN_BIN_ENV) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.with_file_name(LEAN_BIN)).filter(|p| p.is_file())
}

/// Pumps the started box's I/O until it ends and returns its exit code. Where the lean binary
/// exists and the box is still running after [`LEAN_AFTER`], this image is replaced by it (the
/// box's end then comes back through [`resume`]); if that exec fails, the pump goes on here.
/// Short-lived boxes (`run --rm … true`) thus never pay for the two image changes.
fn run_until_end(io: &mut Handover, started: BoxIo, back: &Back) -> Result<i32> {
    let Some(lean) = lean_binary() else {
        return pump(&mut io.hub, &mut io.log, started).ctx(|| "the box's I/O loop failed".into());
    };
    let mut running = started;
    loop {
        let deadline = Instant::now() + LEAN_AFTER;
        match pump_until(&mut io.hub, &mut io.log, running, Some(deadline))
            .ctx(|| "the box's I/O loop failed".into())?
        {
            Pumped::Exited(code) => return Ok(code),
            Pumped::Running(b) => io.running = Some(b),
        }
        // Queued client output is not part of the hand-over: it must be written first (else
        // try again after another round of pumping).
        if io.hub.drain(Duration::from_millis(100)) {
            let mut args = vec![
                "--".to_string(),
                back.program.to_string_lossy().into_owned(),
            ];
            args.extend(back.args.iter().cloned());
            let err = io.exec(&lean, &args);
            // Still here: carry on in this image.
            let _ = writeln!(
                std::io::stderr(),
                "box: cannot run {}: {err}; supervising in the full image",
                lean.display()
            );
            let b = io.running.take().expect("set above");
            return pump(&mut io.hub, &mut io.log, b).ctx(|| "the box's I/O loop failed".into());
        }
        running = io.running.take().expect("set above");
    }
}

/// Docker's restart rules: `restarts` is how many restarts happened already.
pub fn should_restart(policy: RestartPolicy, code: i32, restarts: u32) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure(max) => code != 0 && max.is_none_or(|m| restarts < m),
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EngineError::io("cannot create a pipe", std::io::Error::from(e)))
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Creates the box, wires its network, and starts it with its stdio on our pipes (or a pty
/// from a console socket).
fn start_box(
    runtime: &Runtime,
    paths: &Paths,
    db: &BoxDb,
    id: &str,
    spec: &crate::spec::BoxSpec,
) -> Result<BoxIo> {
    let (tty, stdin) = (spec.tty, spec.stdin_open);
    // A leftover from a crash of an earlier supervisor would block the id.
    let _ = runtime.delete(id, true);
    let console = paths.box_run_dir(id).join("console.sock");
    let started = with_box_stdio(&console, tty, stdin, |console_socket| {
        let opts = CreateOptions {
            bundle: paths.box_dir(id),
            console_socket,
            ..Default::default()
        };
        // Created and started over the handshake socket (no exec fifo to make and remove).
        let mut wire =
            |_: &box_runtime::state::BoxRecord, netns: Option<BorrowedFd<'_>>| match netns {
                Some(ns) => {
                    crate::network::wire(paths, db, id, spec, ns).map_err(|e| e.to_string())
                }
                None => Ok(()),
            };
        runtime.run_with(id, &opts, true, &mut wire)?;
        Ok(())
    })?;
    let pid = runtime.load(id)?.pid;
    Ok(finish_box_io(started, pid))
}

/// Runs `start` (which makes a process of the box) with our stdio on new pipes, or, with
/// `tty`, a console socket bound at `console` from which the pty master is then received; the
/// returned descriptors are ours (pid and pidfd not filled in yet).
fn with_box_stdio(
    console: &Path,
    tty: bool,
    stdin: bool,
    start: impl FnOnce(Option<PathBuf>) -> Result<()>,
) -> Result<BoxIo> {
    if tty {
        let _ = std::fs::remove_file(console);
        let listener = UnixListener::bind(console)
            .ctx(|| format!("cannot listen on {}", console.display()))?;
        let started = start(Some(console.to_path_buf()));
        let _ = std::fs::remove_file(console);
        started?;
        let (conn, _) = listener
            .accept()
            .ctx(|| "cannot accept the box's console".into())?;
        let master = box_runtime::console::recv_fd(conn.as_fd())?;
        let input = if stdin {
            Some(
                master
                    .try_clone()
                    .ctx(|| "cannot dup the pty master".into())?,
            )
        } else {
            None
        };
        return Ok(BoxIo {
            pid: 0,
            pidfd: None,
            stdout: Some(master),
            stderr: None,
            stdin: input,
        });
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (in_r, in_w) = if stdin {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let devnull = std::fs::File::open("/dev/null").ctx(|| "cannot open /dev/null".into())?;
    let in_fd = in_r
        .as_ref()
        .map(|f| f.as_raw_fd())
        .unwrap_or(devnull.as_raw_fd());
    with_stdio([in_fd, out_w.as_raw_fd(), err_w.as_raw_fd()], || {
        start(None)
    })?;
    Ok(BoxIo {
        pid: 0,
        pidfd: None,
        stdout: Some(out_r),
        stderr: Some(err_r),
        stdin: in_w,
    })
}

/// Fills in the started process's pid and a pidfd of it, and makes our ends non-blocking.
fn finish_box_io(started: BoxIo, pid: i32) -> BoxIo {
    // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a descriptor the kernel just gave us.
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as RawFd) });
    for fd in [&started.stdout, &started.stderr, &started.stdin]
        .into_iter()
        .flatten()
    {
        set_nonblocking(fd);
    }
    BoxIo {
        pid,
        pidfd,
        ..started
    }
}

/// Runs `f` with `fds` as our descriptors 0, 1, 2 (box-runtime hands its own stdio to the
/// init), then puts ours back.
fn with_stdio<T>(fds: [RawFd; 3], f: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut saved = Vec::with_capacity(3);
    for target in 0..3 {
        // SAFETY: F_DUPFD_CLOEXEC duplicates one of our standard descriptors.
        let d = unsafe { libc::fcntl(target, libc::F_DUPFD_CLOEXEC, 3) };
        sys("cannot save the supervisor's stdio", d)?;
        // SAFETY: `d` was just returned by fcntl and is ours.
        saved.push(unsafe { OwnedFd::from_raw_fd(d) });
    }
    for (target, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 onto a standard descriptor from a descriptor we hold.
        sys("cannot redirect stdio for the box", unsafe {
            libc::dup2(*fd, target as RawFd)
        })?;
    }
    let out = f();
    for (target, fd) in saved.iter().enumerate() {
        // SAFETY: as above, restoring our own saved descriptors.
        unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) };
    }
    out
}

/// Whether the kernel OOM-killed a process of the box's cgroup (v1 memory.oom_control or v2
/// memory.events `oom_kill N`).
fn oom_killed(runtime: &Runtime, id: &str) -> bool {
    let Ok(rec) = runtime.load(id) else {
        return false;
    };
    let Some(cg) = rec.cgroup else {
        return false;
    };
    cg.paths().iter().any(|dir| {
        ["memory.oom_control", "memory.events"].iter().any(|f| {
            std::fs::read_to_string(dir.join(f))
                .map(|t| {
                    t.lines().any(|l| {
                        l.strip_prefix("oom_kill ")
                            .and_then(|n| n.trim().parse::<u64>().ok())
                            .is_some_and(|n| n > 0)
                    })
                })
                .unwrap_or(false)
        })
    })
}

/// A minimal attach client: connects to box `id`'s socket with `hello`, waits for the
/// "attached" frame and returns the stream (frames as described in [`box_supervisor::hub`]). The CLI builds `attach`/`peek` on this.
pub fn connect_attach(paths: &Paths, id: &str, hello: u8) -> Result<UnixStream> {
    connect_attach_at(&paths.attach_socket(id), &format!("box {id}"), hello).map(|a| a.stream)
}

/// An attach stream, and whether the process behind it has a terminal.
#[derive(Debug)]
pub struct Attached {
    /// The stream (frames as described in [`box_supervisor::hub`]).
    pub stream: UnixStream,
    /// The box or session has a terminal (the client may want raw mode).
    pub tty: bool,
}

/// [`connect_attach`] to the socket at `path` (an exec session's, say); `what` names it in
/// errors.
pub fn connect_attach_at(path: &Path, what: &str, hello: u8) -> Result<Attached> {
    let mut stream = UnixStream::connect(path)
        .ctx(|| format!("cannot connect to {} (is {what} running?)", path.display()))?;
    stream
        .write_all(&[hello])
        .ctx(|| format!("cannot attach to {what}"))?;
    // Wait for the supervisor to take the hello, so that nothing the box writes from now on
    // is missed. An end of stream instead means the box is ending: the caller reads that end.
    match read_frame(&mut stream) {
        Ok(Some((FRAME_ATTACHED, data))) => Ok(Attached {
            stream,
            tty: data.first() == Some(&1),
        }),
        Ok(Some((kind, _))) => Err(EngineError::WrongState(format!(
            "the supervisor of {what} answered the attach with frame {kind}"
        ))),
        Ok(None) => Ok(Attached { stream, tty: false }),
        Err(e) => Err(EngineError::io(format!("cannot attach to {what}"), e)),
    }
}

/// Reads one frame from an attach stream: `(stream id, data)`; `None` at the end.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some((head[0], data)))
}
