//! supervisor: the small process that owns one box from start to end (`box __supervise <id>`).
//! It mounts the box's snapshot in a mount namespace of its own, creates and starts the box
//! through box-runtime with its stdio on pipes (or a pty), logs the output, serves the attach
//! socket, waits for the end, records it, and applies `--rm` and the restart policy. It is one
//! thread around one `poll(2)` loop: no async runtime, so it stays small.
//!
//! # Attach protocol (`<run>/boxes/<id>/attach.sock`, unix stream)
//! The client sends one hello byte: `r` read-only; `w` wants stdin (granted when nobody holds
//! it); `W` takes stdin over (the previous holder is disconnected); `o`/`O` like `w`/`W`, and
//! the end of this client's input (EOF) closes the box's stdin (`box run -i` with piped input).
//! Then the supervisor sends frames — 1 byte stream (1 stdout, 2 stderr, 3 exit), 4 bytes
//! big-endian length, data — and a stdin holder's bytes go to the box's stdin. Frame 3 carries
//! the box's exit code (4 bytes BE) and is the last one; the socket closes after it. A client
//! that falls more than [`CLIENT_BACKLOG`] bytes behind is disconnected. Detach keys are the
//! client's business (it just disconnects).
//!
//! # Spawning
//! [`spawn`] starts `box __supervise <id>` detached (double fork + setsid, stdio on /dev/null)
//! and waits on a pipe until the supervisor says "started <pid>" or "failed <reason>". Tests use
//! [`spawn_command`] with their own binary re-executed (see tests/supervisor.rs).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use box_runtime::{CreateOptions, Runtime};

use crate::db::{now_ms, process_alive, process_start_time, BoxDb, BoxState, StateChange};
use crate::error::{EngineError, IoContext, Result};
use crate::logs::{LogWriter, Stream};
use crate::paths::Paths;
use crate::spec::RestartPolicy;

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
/// A client further behind than this many bytes of output is disconnected.
pub const CLIENT_BACKLOG: usize = 4 << 20;
/// Frame stream ids on the attach socket.
pub const FRAME_STDOUT: u8 = 1;
/// See [`FRAME_STDOUT`].
pub const FRAME_STDERR: u8 = 2;
/// See [`FRAME_STDOUT`]: the last frame, 4 bytes of exit code.
pub const FRAME_EXIT: u8 = 3;
/// The marker `request_stop` leaves so that a stop by the user is not restarted.
const STOP_MARKER: &str = "stop-requested";

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Starts the supervisor of box `id` as `box_bin __supervise <id>`, detached from the caller,
/// and waits until it reports the box started (returns the supervisor's pid) or failed (the
/// error carries its reason).
pub fn spawn(box_bin: &Path, paths: &Paths, id: &str) -> Result<i32> {
    let mut cmd = Command::new(box_bin);
    cmd.arg(SUBCOMMAND).arg(id);
    spawn_command(cmd, paths, id)
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
    let mut cmd = Command::new(box_bin);
    cmd.arg(SUBCOMMAND).arg(id);
    spawn_command_attached(cmd, paths, id, hello)
}

/// [`spawn_attached`] with the command given (tests run themselves as the supervisor).
pub fn spawn_command_attached(
    cmd: Command,
    paths: &Paths,
    id: &str,
    hello: u8,
) -> Result<(i32, UnixStream)> {
    let (pid, stream) = spawn_inner(cmd, paths, id, Some(hello))?;
    let stream = stream.ok_or_else(|| {
        EngineError::WrongState(format!("the supervisor of box {id} never listened"))
    })?;
    Ok((pid, stream))
}

fn spawn_inner(
    mut cmd: Command,
    paths: &Paths,
    id: &str,
    attach: Option<u8>,
) -> Result<(i32, Option<UnixStream>)> {
    if attach.is_some() {
        cmd.env(ATTACH_FIRST_ENV, "1");
    }
    let (read_end, write_end) = pipe()?;
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
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The supervisor's body (`box __supervise <id>`): supervises box `id` until it has ended for
/// good, then exits 0 (1 when it could not do its job; the reason is in the box's record).
pub fn run(paths: &Paths, id: &str) -> ! {
    let mut sync = take_sync_fd();
    let attach_first = std::env::var_os(ATTACH_FIRST_ENV).is_some();
    std::env::remove_var(ATTACH_FIRST_ENV);
    let code = match supervise(paths, id, &mut sync, attach_first) {
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
    std::process::exit(code)
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

/// Everything after the spawn handshake: the life of the box, restarts included.
fn supervise(
    paths: &Paths,
    id: &str,
    sync: &mut Option<std::fs::File>,
    attach_first: bool,
) -> Result<()> {
    let db = BoxDb::open(&paths.db_path())?;
    let rec = db
        .get(id)?
        .ok_or_else(|| EngineError::NoSuchBox(id.to_string()))?;
    let me = std::process::id() as i32;
    let my_start = process_start_time(me);
    db.set_supervisor(id, me, my_start)?;
    let run_dir = paths.box_run_dir(id);
    std::fs::create_dir_all(&run_dir).ctx(|| format!("cannot create {}", run_dir.display()))?;
    let _ = std::fs::remove_file(run_dir.join(STOP_MARKER));
    std::fs::write(paths.supervisor_pid_path(id), me.to_string())
        .ctx(|| format!("cannot write {}", paths.supervisor_pid_path(id).display()))?;

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
    // `--rootfs DIR` boxes have no snapshot: config.json points at DIR.
    let snapshot = if paths.snapshot_dir(id).exists() || rec.spec.rootfs.is_none() {
        let mut s = box_image::snapshot::Snapshot::open(&paths.data, id)?;
        s.mount()?;
        Some(s)
    } else {
        None
    };

    let sock_path = paths.attach_socket(id);
    let _ = std::fs::remove_file(&sock_path);
    let listener = UnixListener::bind(&sock_path)
        .ctx(|| format!("cannot listen on {}", sock_path.display()))?;
    listener
        .set_nonblocking(true)
        .ctx(|| "cannot make the attach socket non-blocking".into())?;
    let mut log = LogWriter::open(&paths.log_path(id))
        .map_err(|e| EngineError::io("cannot open the box's log".to_string(), e))?;
    let runtime = Runtime::new(paths.runtime_root())?;
    let mut hub = Hub::new(listener);
    if attach_first {
        if let Some(s) = sync.as_mut() {
            let _ = writeln!(s, "listening");
        }
        hub.wait_first_client(ATTACH_FIRST_WAIT)?;
    }
    let mut backoff = BACKOFF_START;
    let mut final_code;
    loop {
        let started = start_box(&runtime, paths, id, rec.spec.tty, rec.spec.stdin_open)?;
        db.update_state(
            id,
            &StateChange::Running {
                pid: started.pid,
                supervisor_pid: me,
                supervisor_start: my_start,
                started_at: now_ms(),
            },
        )?;
        if let Some(mut s) = sync.take() {
            let _ = writeln!(s, "started {me}");
        }
        let code = pump(&mut hub, &mut log, started)?;
        let oom = oom_killed(&runtime, id);
        let _ = runtime.delete(id, true);
        final_code = (code, oom);
        let stop_requested = run_dir.join(STOP_MARKER).exists();
        let restarts = db.get(id)?.map(|r| r.restart_count).unwrap_or(0);
        if stop_requested || !should_restart(rec.spec.restart, code, restarts) {
            break;
        }
        db.increment_restart_count(id)?;
        hub.serve_for(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if run_dir.join(STOP_MARKER).exists() {
            break;
        }
    }
    let (code, oom) = final_code;
    hub.finish(code);
    if let Some(s) = &snapshot {
        let _ = s.unmount();
    }
    db.update_state(
        id,
        &StateChange::Exited {
            exit_code: code,
            oom_killed: oom,
            finished_at: now_ms(),
            error: None,
        },
    )?;
    if rec.spec.auto_remove {
        if let Some(s) = snapshot {
            let _ = s.remove();
        }
        let _ = std::fs::remove_dir_all(paths.box_dir(id));
        db.delete(id)?;
    }
    Ok(())
}

/// Docker's restart rules: `restarts` is how many restarts happened already.
pub fn should_restart(policy: RestartPolicy, code: i32, restarts: u32) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure(max) => code != 0 && max.is_none_or(|m| restarts < m),
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
    }
}

/// A started box's descriptors, as the supervisor holds them.
struct Started {
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// stdout pipe, or the pty master (everything comes as stdout).
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// The box's stdin: pipe write end, or a dup of the pty master.
    stdin: Option<OwnedFd>,
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

/// Creates and starts the box with its stdio on our pipes (or a pty from a console socket).
fn start_box(
    runtime: &Runtime,
    paths: &Paths,
    id: &str,
    tty: bool,
    stdin: bool,
) -> Result<Started> {
    // A leftover from a crash of an earlier supervisor would block the id.
    let _ = runtime.delete(id, true);
    let mut opts = CreateOptions {
        bundle: paths.box_dir(id),
        ..Default::default()
    };
    let started = if tty {
        let console = paths.box_run_dir(id).join("console.sock");
        let _ = std::fs::remove_file(&console);
        let listener = UnixListener::bind(&console)
            .ctx(|| format!("cannot listen on {}", console.display()))?;
        opts.console_socket = Some(console.clone());
        runtime.create(id, &opts)?;
        let _ = std::fs::remove_file(&console);
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
        Started {
            pid: 0,
            pidfd: None,
            stdout: Some(master),
            stderr: None,
            stdin: input,
        }
    } else {
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
            runtime.create(id, &opts).map_err(EngineError::from)
        })?;
        Started {
            pid: 0,
            pidfd: None,
            stdout: Some(out_r),
            stderr: Some(err_r),
            stdin: in_w,
        }
    };
    let pid = runtime.load(id)?.pid;
    runtime.start(id)?;
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
    Ok(Started {
        pid,
        pidfd,
        ..started
    })
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

/// One attach client.
struct Client {
    sock: UnixStream,
    hello: Option<u8>,
    out: Vec<u8>,
}

/// The attach socket and its clients: output broadcast, one stdin holder.
struct Hub {
    listener: UnixListener,
    clients: Vec<Client>,
    /// Index into `clients` of the stdin holder.
    holder: Option<usize>,
}

impl Hub {
    fn new(listener: UnixListener) -> Hub {
        Hub {
            listener,
            clients: Vec::new(),
            holder: None,
        }
    }

    fn accept(&mut self) {
        while let Ok((sock, _)) = self.listener.accept() {
            if sock.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    sock,
                    hello: None,
                    out: Vec::new(),
                });
            }
        }
    }

    fn broadcast(&mut self, stream: u8, data: &[u8]) {
        let len = (data.len() as u32).to_be_bytes();
        for c in self.clients.iter_mut().filter(|c| c.hello.is_some()) {
            c.out.push(stream);
            c.out.extend_from_slice(&len);
            c.out.extend_from_slice(data);
        }
        self.flush();
    }

    /// Writes what each client can take; drops those gone or too far behind.
    fn flush(&mut self) {
        let mut i = 0;
        while i < self.clients.len() {
            let c = &mut self.clients[i];
            let mut dead = false;
            while !c.out.is_empty() {
                match c.sock.write(&c.out) {
                    Ok(0) => {
                        dead = true;
                        break;
                    }
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        dead = true;
                        break;
                    }
                }
            }
            if dead || c.out.len() > CLIENT_BACKLOG {
                self.remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn remove(&mut self, i: usize) {
        self.clients.swap_remove(i);
        let last = self.clients.len();
        self.holder = match self.holder {
            Some(h) if h == i => None,
            Some(h) if h == last => Some(i),
            other => other,
        };
    }

    /// Handles input from client `i`: its hello, or stdin bytes (returned) if it holds stdin.
    /// Returns `Err(close_stdin)` when the client is gone.
    fn read_client(&mut self, i: usize, buf: &mut [u8]) -> std::result::Result<usize, bool> {
        let c = &mut self.clients[i];
        let n = match c.sock.read(buf) {
            Ok(0) => {
                let closes = self.holder == Some(i) && matches!(c.hello, Some(b'o' | b'O'));
                return Err(closes);
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(0)
            }
            Err(_) => return Err(false),
        };
        if c.hello.is_none() {
            self.set_hello(i, buf[0]);
            buf.copy_within(1..n, 0);
            return Ok(if self.holder == Some(i) { n - 1 } else { 0 });
        }
        Ok(if self.holder == Some(i) { n } else { 0 })
    }

    /// Records client `i`'s hello: `w`/`o` take stdin when it is free, `W`/`O` take it over.
    fn set_hello(&mut self, i: usize, h: u8) {
        self.clients[i].hello = Some(h);
        match h {
            b'w' | b'o' if self.holder.is_none() => self.holder = Some(i),
            b'W' | b'O' => {
                if let Some(old) = self.holder {
                    if old != i {
                        let _ = self.clients[old].sock.shutdown(std::net::Shutdown::Both);
                    }
                }
                self.holder = Some(i);
            }
            _ => {}
        }
    }

    /// Waits for the first client and reads only its hello byte (whatever follows is stdin,
    /// left in the socket for the pump).
    fn wait_first_client(&mut self, limit: Duration) -> Result<()> {
        let end = Instant::now() + limit;
        while self.clients.is_empty() {
            if Instant::now() > end {
                return Err(EngineError::WrongState(
                    "nobody attached to the box in time".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
            self.accept();
        }
        let sock = &mut self.clients[0].sock;
        let _ = sock.set_nonblocking(false);
        let _ = sock.set_read_timeout(Some(end.saturating_duration_since(Instant::now())));
        let mut hello = [0u8; 1];
        let got = sock.read_exact(&mut hello);
        let _ = sock.set_read_timeout(None);
        let _ = sock.set_nonblocking(true);
        got.ctx(|| "the attached client sent no hello".into())?;
        self.set_hello(0, hello[0]);
        Ok(())
    }

    /// Keeps accepting (and dropping input of) clients for `d`: the back-off between restarts.
    fn serve_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.accept();
            self.flush();
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
        }
    }

    /// Sends every client the exit frame and closes them (best effort, up to a second).
    fn finish(&mut self, code: i32) {
        self.accept();
        self.broadcast(FRAME_EXIT, &code.to_be_bytes());
        let end = Instant::now() + Duration::from_secs(1);
        while self.clients.iter().any(|c| !c.out.is_empty()) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
            self.flush();
        }
        self.clients.clear();
    }
}

/// The I/O loop while the box runs: output to log and clients, client stdin to the box, until
/// the init has exited and its output is drained. Returns the init's shell-style exit code.
fn pump(hub: &mut Hub, log: &mut LogWriter, mut s: Started) -> Result<i32> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdin_buf: Vec<u8> = Vec::new();
    let mut close_stdin_after = false;
    let mut exit: Option<i32> = None;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if exit.is_none() {
            exit = reap(s.pid);
        }
        if exit.is_some() {
            // The pipes may be held open by processes outliving the init (without a pid
            // namespace): give the output a moment, then stop.
            let deadline =
                *drain_deadline.get_or_insert(Instant::now() + Duration::from_millis(500));
            if (s.stdout.is_none() && s.stderr.is_none()) || Instant::now() > deadline {
                break;
            }
            s.pidfd = None;
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(6 + hub.clients.len());
        let pfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let raw = |o: &Option<OwnedFd>| o.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        fds.push(pfd(raw(&s.stdout), libc::POLLIN));
        fds.push(pfd(raw(&s.stderr), libc::POLLIN));
        fds.push(pfd(raw(&s.pidfd), libc::POLLIN));
        fds.push(pfd(hub.listener.as_raw_fd(), libc::POLLIN));
        let stdin_events = if stdin_buf.is_empty() {
            0
        } else {
            libc::POLLOUT
        };
        fds.push(pfd(
            if stdin_events != 0 { raw(&s.stdin) } else { -1 },
            stdin_events,
        ));
        let client_base = fds.len();
        for c in &hub.clients {
            let mut ev = 0;
            // Input of the holder waits while the box's stdin is full.
            if stdin_buf.is_empty() {
                ev |= libc::POLLIN;
            }
            if !c.out.is_empty() {
                ev |= libc::POLLOUT;
            }
            fds.push(pfd(c.sock.as_raw_fd(), ev));
        }
        let timeout = if exit.is_some() { 50 } else { 500 };
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(EngineError::io("poll".to_string(), e));
        }
        let ready = |i: usize| fds[i].revents != 0;
        for (i, stream, frame) in [
            (0, Stream::Stdout, FRAME_STDOUT),
            (1, Stream::Stderr, FRAME_STDERR),
        ] {
            if !ready(i) {
                continue;
            }
            let slot = if i == 0 { &mut s.stdout } else { &mut s.stderr };
            let Some(fd) = slot.as_ref() else { continue };
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => *slot = None, // EIO: pty slave closed
                Ok(n) => {
                    let _ = log.write(stream, &buf[..n]);
                    hub.broadcast(frame, &buf[..n]);
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(_) => *slot = None,
            }
        }
        if ready(3) {
            hub.accept();
        }
        if ready(4) || !stdin_buf.is_empty() {
            if let Some(fd) = s.stdin.as_ref() {
                match nix::unistd::write(fd, &stdin_buf) {
                    Ok(n) => {
                        stdin_buf.drain(..n);
                    }
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    Err(_) => {
                        stdin_buf.clear();
                        s.stdin = None;
                    }
                }
            } else {
                stdin_buf.clear();
            }
            if stdin_buf.is_empty() && close_stdin_after {
                s.stdin = None;
            }
        }
        // Clients, from the back so removals keep earlier indexes valid.
        let count = hub.clients.len().min(fds.len() - client_base);
        for i in (0..count).rev() {
            let rev = fds[client_base + i].revents;
            if rev == 0 {
                continue;
            }
            if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match hub.read_client(i, &mut buf) {
                    Ok(0) => {}
                    Ok(n) => {
                        if s.stdin.is_some() {
                            stdin_buf.extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(closes) => {
                        hub.remove(i);
                        if closes {
                            if stdin_buf.is_empty() {
                                s.stdin = None;
                            } else {
                                close_stdin_after = true;
                            }
                        }
                        continue;
                    }
                }
            }
        }
        hub.flush();
    }
    Ok(exit.unwrap_or(255))
}

/// Reaps every exited child (we are a subreaper: the box's orphans come to us); returns the
/// init's shell-style exit code once it is among them.
fn reap(init: i32) -> Option<i32> {
    let mut code = None;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into our local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        if pid == init {
            code = Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                255
            });
        }
    }
    code
}

/// A minimal attach client: connects to box `id`'s socket with `hello` and returns the stream
/// (frames as described in the module docs). The CLI builds `attach`/`peek` on this.
pub fn connect_attach(paths: &Paths, id: &str, hello: u8) -> Result<UnixStream> {
    let path = paths.attach_socket(id);
    let mut s = UnixStream::connect(&path)
        .ctx(|| format!("cannot connect to {} (is the box running?)", path.display()))?;
    s.write_all(&[hello])
        .ctx(|| format!("cannot attach to box {id}"))?;
    Ok(s)
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
