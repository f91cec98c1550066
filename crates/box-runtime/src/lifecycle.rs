//! Driving boxes after creation: start, run (create+start+wait), state, kill, delete, list,
//! pause/resume, update, stats — each a short command against the state root.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use crate::cgroups::CgroupStats;
use crate::create::{create_box, signal_init, CreateOptions};
use crate::error::{Context, Error, Result};
use crate::hooks::{run_hooks, HookPoint};
use crate::init::StartSignal;
use crate::state::{BoxRecord, StateRoot, Status, EXEC_FIFO};
use crate::sync::Message;

/// The runtime: every operation on boxes under one state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: StateRoot,
}

/// How `run` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Detached: the box runs on.
    Detached,
    /// The box's init exited with this shell-style code (128+n for signal n).
    Exited(i32),
}

static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// What [`Runtime::run_with`] calls between create and start: the box's record and its new
/// network namespace (none when it shares another); an `Err` carries the reason to fail.
pub type BeforeStart<'a> = dyn FnMut(&BoxRecord, Option<std::os::fd::BorrowedFd<'_>>) -> std::result::Result<(), String>
    + 'a;

impl Runtime {
    /// A runtime over the state root at `root` (created if missing).
    pub fn new(root: impl Into<std::path::PathBuf>) -> Result<Self> {
        Ok(Runtime {
            root: StateRoot::open(root)?,
        })
    }

    /// The state root.
    pub fn root(&self) -> &StateRoot {
        &self.root
    }

    /// `create`: the box waits for `start`.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<BoxRecord> {
        Ok(create_box(&self.root, id, opts, StartSignal::Fifo)?.record)
    }

    /// `run`: create and start; unless `detach`, wait for the init, forwarding signals, and
    /// delete the box after it exits.
    pub fn run(&self, id: &str, opts: &CreateOptions, detach: bool) -> Result<RunOutcome> {
        self.run_with(id, opts, detach, &mut |_, _| Ok(()))
    }

    /// `run` with `before_start` called between create and start with the new box's record and
    /// its new network namespace, if it has one (its namespaces exist, its program has not
    /// started): the engine wires the box's network there. An error from it destroys the box
    /// and is returned as [`Error::Init`].
    pub fn run_with(
        &self,
        id: &str,
        opts: &CreateOptions,
        detach: bool,
        before_start: &mut BeforeStart<'_>,
    ) -> Result<RunOutcome> {
        let created = create_box(&self.root, id, opts, StartSignal::Channel)?;
        let record = created.record;
        let netns = created.netns;
        if let Err(why) = before_start(&record, netns.as_ref().map(|fd| fd.as_fd())) {
            let _ = self.kill_all_and_reap(&record);
            let _ = self.destroy(&record);
            return Err(Error::Init(why));
        }
        if !detach {
            FORWARD_TO.store(record.pid, Ordering::Relaxed);
            install_forwarders();
        }
        created.channel.send(&Message::Start)?;
        // The channel closes on execve (close-on-exec) or carries the reason exec failed.
        if let Ok(Some(Message::Failed(why))) = created.channel.recv() {
            let _ = waitpid(Pid::from_raw(record.pid), None);
            let _ = self.destroy(&record);
            return Err(Error::Init(why));
        }
        let state = record.oci_state(Status::Running);
        if let Err(e) = run_hooks(record.config.hooks().as_ref(), HookPoint::Poststart, &state) {
            let _ = self.kill_all_and_reap(&record);
            let _ = self.destroy(&record);
            return Err(e);
        }
        if detach {
            return Ok(RunOutcome::Detached);
        }
        if let Some(master) = created.console_relay {
            let pty = crate::console::recv_fd(master.as_fd())?;
            let _ = crate::console::relay(pty);
        }
        let code = wait_exit_code(record.pid)?;
        self.destroy(&record)?;
        Ok(RunOutcome::Exited(code))
    }

    /// `start`: lets a created box's init exec the user program, then runs poststart hooks.
    pub fn start(&self, id: &str) -> Result<()> {
        let record = self.root.load(id)?;
        let status = record.status(&self.root);
        if status != Status::Created {
            return Err(Error::WrongState(format!(
                "cannot start a container that is {}: only created containers can be started",
                status.as_str()
            )));
        }
        let fifo_path = self.root.box_dir(id).join(EXEC_FIFO);
        let fifo = nix::fcntl::open(
            &fifo_path,
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|_| Error::WrongState("cannot start: the container's init is gone".into()))?;
        nix::unistd::write(fifo.as_fd(), b"0").ctx(|| "cannot signal the box's init to start")?;
        std::fs::remove_file(&fifo_path)
            .ctx(|| format!("cannot remove {}", fifo_path.display()))?;
        wait_for_exec(&fifo);
        run_hooks(
            record.config.hooks().as_ref(),
            HookPoint::Poststart,
            &record.oci_state(Status::Running),
        )
    }

    /// Loads a box's record.
    pub fn load(&self, id: &str) -> Result<BoxRecord> {
        self.root.load(id)
    }

    /// `state`: the OCI state document.
    pub fn state(&self, id: &str) -> Result<serde_json::Value> {
        let record = self.root.load(id)?;
        let status = record.status(&self.root);
        let mut state = record.oci_state(status);
        state["owner"] = record.owner_name().into();
        Ok(state)
    }

    /// Every box with its status.
    pub fn list(&self) -> Result<Vec<(BoxRecord, Status)>> {
        let mut out = Vec::new();
        for id in self.root.ids()? {
            if let Ok(r) = self.root.load(&id) {
                let s = r.status(&self.root);
                out.push((r, s));
            }
        }
        Ok(out)
    }

    /// `kill`: signals the init, or with `all` every process of the box.
    pub fn kill(&self, id: &str, sig: Signal, all: bool) -> Result<()> {
        let record = self.root.load(id)?;
        if all {
            if let Some(cg) = record.cgroup.as_ref().filter(|c| c.is_enabled()) {
                return Ok(cg.signal_all(sig)?);
            }
        }
        if record.status(&self.root) == Status::Stopped {
            return Err(Error::WrongState("container not running".into()));
        }
        if all {
            signal_pid_namespace(&record, sig);
        }
        signal_init(&record, sig)
    }

    /// `delete`: removes a stopped box (or, with `force`, kills it first), then runs poststop hooks.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let record = self.root.load(id)?;
        let status = record.status(&self.root);
        match status {
            Status::Stopped => {}
            Status::Created => self.kill_all_and_reap(&record)?,
            _ if force => self.kill_all_and_reap(&record)?,
            other => {
                return Err(Error::WrongState(format!(
                    "cannot delete container {id} that is not stopped: {}",
                    other.as_str()
                )))
            }
        }
        self.destroy(&record)
    }

    /// Removes what a dead box leaves: cgroup, state; then poststop hooks.
    fn destroy(&self, record: &BoxRecord) -> Result<()> {
        if let Some(cg) = &record.cgroup {
            cg.destroy()?;
        }
        self.root.remove(&record.id)?;
        run_hooks(
            record.config.hooks().as_ref(),
            HookPoint::Poststop,
            &record.oci_state(Status::Stopped),
        )
    }

    /// SIGKILLs every process of the box and waits until the init is gone.
    fn kill_all_and_reap(&self, record: &BoxRecord) -> Result<()> {
        if let Some(cg) = record.cgroup.as_ref().filter(|c| c.is_enabled()) {
            // A frozen box cannot die: thaw after signalling.
            cg.signal_all(Signal::SIGKILL)?;
        } else {
            signal_pid_namespace(record, Signal::SIGKILL);
            let _ = signal_init(record, Signal::SIGKILL);
        }
        let _ = waitpid(
            Pid::from_raw(record.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while record.init_alive() {
            if Instant::now() > deadline {
                return Err(Error::WrongState(format!(
                    "container {} did not die within 10s of SIGKILL",
                    record.id
                )));
            }
            let _ = waitpid(
                Pid::from_raw(record.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(cg) = record.cgroup.as_ref().filter(|c| c.is_enabled()) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while cg.pids().map(|p| !p.is_empty()).unwrap_or(false) && Instant::now() < deadline {
                let _ = cg.signal_all(Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    fn cgroup_of(&self, id: &str) -> Result<(BoxRecord, crate::cgroups::Cgroup)> {
        let record = self.root.load(id)?;
        let cg = record
            .cgroup
            .clone()
            .filter(|c| c.is_enabled())
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "container {id} has no cgroup (rootless without a delegated cgroup)"
                ))
            })?;
        Ok((record, cg))
    }

    /// `pause`: freezes every process of the box.
    pub fn pause(&self, id: &str) -> Result<()> {
        let (record, cg) = self.cgroup_of(id)?;
        match record.status(&self.root) {
            Status::Running => Ok(cg.freeze()?),
            s => Err(Error::WrongState(format!(
                "container {id} is {}, not running",
                s.as_str()
            ))),
        }
    }

    /// `resume`: thaws a paused box.
    pub fn resume(&self, id: &str) -> Result<()> {
        let (record, cg) = self.cgroup_of(id)?;
        match record.status(&self.root) {
            Status::Paused => Ok(cg.thaw()?),
            s => Err(Error::WrongState(format!(
                "container {id} is {}, not paused",
                s.as_str()
            ))),
        }
    }

    /// `update`: new resource limits for a live box.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let (record, cg) = self.cgroup_of(id)?;
        if record.status(&self.root) == Status::Stopped {
            return Err(Error::WrongState(format!("container {id} is stopped")));
        }
        Ok(cg.update(resources)?)
    }

    /// Usage figures (`events --stats`).
    pub fn stats(&self, id: &str) -> Result<CgroupStats> {
        let (_, cg) = self.cgroup_of(id)?;
        Ok(cg.stats()?)
    }

    /// Host pids of every process of the box.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let record = self.root.load(id)?;
        if let Some(cg) = record.cgroup.as_ref().filter(|c| c.is_enabled()) {
            return Ok(cg.pids()?);
        }
        Ok(if record.init_alive() {
            pid_namespace_members(record.pid)
        } else {
            Vec::new()
        })
    }
}

/// Without a cgroup (rootless, no delegation): signals every process of the box but its init
/// (see [`pid_namespace_members`]), when the box has a pid namespace of its own; a box sharing
/// the runtime's has no members to tell from the host's processes, so only its init is signalled.
fn signal_pid_namespace(record: &BoxRecord, sig: Signal) {
    // A recycled pid is not the box's init: its namespace says nothing about the box.
    if !record.init_alive() {
        return;
    }
    let theirs = std::fs::read_link(format!("/proc/{}/ns/pid", record.pid));
    let ours = std::fs::read_link("/proc/self/ns/pid");
    match (theirs, ours) {
        (Ok(t), Ok(o)) if t != o => {}
        _ => return,
    }
    for pid in pid_namespace_members(record.pid) {
        if pid != record.pid {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        }
    }
}

/// Without a cgroup: the processes sharing the init's pid namespace. A process whose namespace
/// cannot be read (rootless, from a user namespace that is not the box's, the box's own
/// processes' links are not ours to read) counts when one of its ancestors does: everything the
/// box forks descends from its init or from a process exec'd into it (orphans are reparented
/// to the init).
fn pid_namespace_members(init: i32) -> Vec<i32> {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).ok();
    let mut members = std::collections::BTreeSet::from([init]);
    let mut unreadable = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == init {
                continue;
            }
            match (&ns, std::fs::read_link(format!("/proc/{pid}/ns/pid"))) {
                (Some(ns), Ok(link)) if link == *ns => {
                    members.insert(pid);
                }
                (Some(_), Ok(_)) => {}
                _ => unreadable.push(pid),
            }
        }
    }
    for pid in unreadable {
        if descends_from_any(pid, &members) {
            members.insert(pid);
        }
    }
    members.into_iter().collect()
}

/// Whether one of `pid`'s ancestors (by the world-readable parent pid in /proc/PID/stat) is in
/// `set`.
fn descends_from_any(pid: i32, set: &std::collections::BTreeSet<i32>) -> bool {
    let mut cur = pid;
    for _ in 0..64 {
        let Some(parent) = parent_pid(cur) else {
            return false;
        };
        if set.contains(&parent) {
            return true;
        }
        if parent <= 1 {
            return false;
        }
        cur = parent;
    }
    false
}

/// The parent pid (field 4) of /proc/PID/stat.
fn parent_pid(pid: i32) -> Option<i32> {
    crate::state::stat_fields_from_state(pid)?
        .get(1)?
        .parse()
        .ok()
}

fn install_forwarders() {
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        // SAFETY: the handler only loads an atomic and calls kill(2), both async-signal-safe.
        unsafe { libc::signal(sig, forward_signal as *const () as libc::sighandler_t) };
    }
}

/// Waits for our child `pid` and turns its end into a shell-style exit code.
pub fn wait_exit_code(pid: i32) -> Result<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| format!("cannot wait for pid {pid}")),
        }
    }
}

/// How long `start` waits for the init to execute the user program before poststart hooks.
const EXEC_WAIT: Duration = Duration::from_secs(10);

/// Waits until the init has executed the user program (or died): its end of the exec fifo is
/// close-on-exec, and a fifo's write end reports POLLERR once no reader is left. Poststart
/// hooks run after the user process starts (OCI), so after the init's startContainer hooks.
/// Gives up after [`EXEC_WAIT`] (a startContainer hook that takes longer).
fn wait_for_exec(fifo: &impl AsFd) {
    let deadline = Instant::now() + EXEC_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: fifo.as_fd().as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd; events 0 still reports POLLERR/POLLHUP.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as libc::c_int) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
        if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return;
        }
    }
}
