//! Making a box: the runtime side of `create` and `run`. Claims the id, prepares the cgroup and
//! seccomp filter, clones the init into its namespaces, writes its id maps, runs the runtime
//! hooks, and records the box once the init reports "created". Any failure undoes everything.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};
use crate::hooks::{hooks_at, run_hooks, HookPoint};
use crate::init::{InitArgs, StartSignal};
use crate::namespaces::NamespacePlan;
use crate::state::{now_rfc3339, process_start_time, BoxRecord, StateRoot, Status, EXEC_FIFO};
use crate::sync::{channel_pair, Channel, Message};

/// Options of `create` (and `run`), as runc names them.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Bundle directory (config.json + rootfs).
    pub bundle: PathBuf,
    /// Where to write the init's host pid.
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to.
    pub console_socket: Option<PathBuf>,
    /// chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Descriptors after stdio to pass to the box.
    pub preserve_fds: u32,
}

/// A box just created, with the runtime's ends of its channels.
#[derive(Debug)]
pub struct Created {
    /// The saved record.
    pub record: BoxRecord,
    /// The runtime end of the handshake (used by `run` to start and watch the init).
    pub channel: Channel,
    /// For `run` with a terminal and no console socket: where the pty master arrives.
    pub console_relay: Option<OwnedFd>,
    /// The network namespace the init was cloned into, when it got a new one: opened before
    /// the init takes the box's identity (a process that changed its ids may no longer be
    /// inspectable through /proc, rootless).
    pub netns: Option<OwnedFd>,
}

/// Undoes a half-made box unless disarmed.
struct Undo<'a> {
    root: &'a StateRoot,
    id: &'a str,
    cgroup: Option<Cgroup>,
    child: Option<i32>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.destroy();
        }
        let _ = self.root.remove(self.id);
    }
}

/// Creates box `id`; `start` says how it will be started (exec fifo for `create`, channel for `run`).
pub fn create_box(
    root: &StateRoot,
    id: &str,
    opts: &CreateOptions,
    start: StartSignal,
) -> Result<Created> {
    let bundle = crate::spec::load_bundle(&opts.bundle)?;
    let spec = &bundle.spec;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::config("linux section is missing"))?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("process is missing"))?;
    let plan = NamespacePlan::new(linux.namespaces().as_deref().unwrap_or(&[]))?;
    if !plan.own_mount {
        return Err(Error::config(
            "a mount namespace is required (add {\"type\": \"mount\"} to linux.namespaces)",
        ));
    }
    let rootless = crate::idmap::running_rootless();
    let dir = root.claim(id)?;
    let mut undo = Undo {
        root,
        id,
        cgroup: None,
        child: None,
        armed: true,
    };
    let mut cgroup = Cgroup::for_box(linux.cgroups_path().as_deref(), id)?;
    let resources = effective_resources(linux, rootless)?;
    cgroup.create(resources.as_ref(), rootless)?;
    undo.cgroup = Some(cgroup.clone());
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(|s| crate::seccomp_cache::compile_cached(s, &root.seccomp_cache_dir()))
        .transpose()?;
    let fifo = match start {
        StartSignal::Fifo => Some(make_exec_fifo(&dir)?),
        StartSignal::Channel => None,
    };
    let terminal = process.terminal() == Some(true);
    let (console, console_relay) = match (&opts.console_socket, terminal, start) {
        (_, false, _) => (None, None),
        (Some(path), true, _) => (Some(crate::console::connect(path)?), None),
        (None, true, StartSignal::Channel) => {
            let (a, b) = crate::console::relay_pair()?;
            (Some(a), Some(b))
        }
        (None, true, StartSignal::Fifo) => {
            return Err(Error::config(
                "process.terminal is true: pass --console-socket, or set terminal to false",
            ))
        }
    };
    if let Some(path) = &plan.join_pid {
        crate::namespaces::join_path(libc::CLONE_NEWPID, path)?;
    }
    let hooks = spec.hooks().as_ref();
    let runtime_hooks = !hooks_at(hooks, HookPoint::Prestart).is_empty()
        || !hooks_at(hooks, HookPoint::CreateRuntime).is_empty();
    let mut record = BoxRecord {
        id: id.to_string(),
        pid: 0,
        pid_start_time: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: now_rfc3339(),
        owner: nix::unistd::geteuid().as_raw(),
        rootless,
        cgroup: cgroup.is_enabled().then(|| cgroup.clone()),
        config: spec.clone(),
    };
    let cgroup_dirs = if cgroup.is_enabled() {
        cgroup.paths()
    } else {
        Vec::new()
    };
    // v1: the init moves itself (see `SelfAttach`); otherwise we move it below.
    let self_attach = cgroup.self_attach()?;
    let moves_itself = self_attach.is_some();
    let (channel, init_channel) = channel_pair()?;
    let state = record.oci_state(Status::Creating);
    let args = InitArgs {
        spec,
        process,
        rootfs: &bundle.rootfs,
        bundle: &bundle.dir,
        plan: &plan,
        channel: &init_channel,
        fifo: fifo.as_ref(),
        console: console.as_ref(),
        seccomp: seccomp.as_ref(),
        preserve_fds: opts.preserve_fds,
        no_pivot: opts.no_pivot,
        runtime_hooks,
        start,
        state: &state,
        runtime_end: channel.raw_fd(),
        cgroup_dirs: &cgroup_dirs,
        self_attach: self_attach.as_ref(),
        in_cgroup: std::cell::Cell::new(false),
    };
    let pid = crate::namespaces::joined_for(&plan.join_before_clone, || {
        clone_into(plan.clone_flags, || crate::init::run(&args))
    })?;
    undo.child = Some(pid);
    // The init waits for our first Go before it changes anything: its namespace is open to us.
    let netns = if plan.clone_flags & libc::CLONE_NEWNET != 0 {
        Some(
            fs::File::open(format!("/proc/{pid}/ns/net"))
                .ctx(|| "cannot open the box's network namespace")?
                .into(),
        )
    } else {
        None
    };
    drop(self_attach);
    drop(init_channel);
    drop(fifo);
    drop(console);
    if plan.new_user {
        crate::idmap::write_maps(
            pid,
            linux.uid_mappings().as_deref().unwrap_or(&[]),
            linux.gid_mappings().as_deref().unwrap_or(&[]),
        )?;
    }
    // The init builds its rootfs while we move it into its cgroup (v2; on v1 it moves itself
    // when it gets there). It waits for the second Go before it starts any process, makes its
    // cgroup namespace, or reports itself created.
    let handshake = || -> Result<()> {
        channel.send(&Message::Go)?;
        if cgroup.is_enabled() && !moves_itself {
            cgroup.add_process(pid)?;
        }
        if let Some(adj) = process.oom_score_adj() {
            fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string()).ctx(|| {
                format!("cannot set oom_score_adj {adj} (lowering it needs CAP_SYS_RESOURCE)")
            })?;
        }
        channel.send(&Message::Go)
    };
    // If the init failed meanwhile, its reason beats ours (a closed socket, a vanished pid).
    if let Err(e) = handshake() {
        return Err(channel.pending_failure().map(Error::Init).unwrap_or(e));
    }
    record.pid = pid;
    record.pid_start_time = process_start_time(pid).unwrap_or(0);
    loop {
        match channel.recv()? {
            Some(Message::RunHooks) => {
                let state = record.oci_state(Status::Creating);
                run_hooks(hooks, HookPoint::Prestart, &state)?;
                run_hooks(hooks, HookPoint::CreateRuntime, &state)?;
                channel.send(&Message::Go)?;
            }
            Some(Message::Created) => break,
            Some(Message::Failed(why)) => return Err(Error::Init(why)),
            Some(other) => {
                return Err(Error::Init(format!(
                    "unexpected message from the box's init: {other:?}"
                )))
            }
            None => {
                return Err(Error::Init(
                    "the box's init exited during setup without saying why".into(),
                ))
            }
        }
    }
    root.save(&record)?;
    if let Some(path) = &opts.pid_file {
        write_pid_file(path, pid)?;
    }
    undo.armed = false;
    Ok(Created {
        record,
        channel,
        console_relay,
        netns,
    })
}

/// The exec fifo in the box's state dir, opened read-write for the init: its read blocks
/// until `start` writes a byte.
fn make_exec_fifo(dir: &Path) -> Result<OwnedFd> {
    let path = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .ctx(|| format!("cannot create {}", path.display()))?;
    let fd = nix::fcntl::open(
        &path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("cannot open {}", path.display()))?;
    Ok(fd)
}

/// Writes a pid file atomically (write to a temp name, then rename), as runc does.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("box-tmp");
    fs::write(&tmp, pid.to_string()).ctx(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("cannot write pid file {}", path.display()))
}

/// clone(2) with `flags` and no new stack, like fork: the child runs `child` and never returns.
pub fn clone_into(
    flags: libc::c_int,
    child: impl FnOnce() -> std::convert::Infallible,
) -> Result<i32> {
    let full = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: without CLONE_VM the child gets a copy of our address space and continues on its
    // copy of this stack, exactly like fork; this process is single-threaded at this point.
    let rc = unsafe { libc::syscall(libc::SYS_clone, full, 0usize, 0usize, 0usize, 0usize) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        let hint = if err.raw_os_error() == Some(libc::EPERM)
            || err.raw_os_error() == Some(libc::EINVAL)
        {
            " (creating these namespaces needs root, or a user namespace in the config)"
        } else {
            ""
        };
        return Err(err).ctx(|| format!("cannot clone the box's init{hint}"));
    }
    if rc == 0 {
        child();
    }
    Ok(rc as i32)
}

/// Signals (by pidfd, so a recycled pid is never hit) the process recorded as a box's init.
pub fn signal_init(record: &BoxRecord, sig: Signal) -> Result<()> {
    if !record.init_alive() {
        return Err(Error::WrongState("container not running".into()));
    }
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, record.pid, 0) };
    if fd < 0 {
        return Err(Error::WrongState("container not running".into()));
    }
    // SAFETY: the kernel returned a fresh descriptor we now own.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // The pidfd pins the process: re-check it is still the recorded one.
    if !record.init_alive() {
        return Err(Error::WrongState("container not running".into()));
    }
    // SAFETY: pidfd_send_signal with a live pidfd, a signal number and no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd.as_fd()),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| format!("cannot send {sig} to the box's init"));
    }
    Ok(())
}

/// Devices every box may use (runc's list): mknod of anything, and read/write of the standard
/// nodes, ptys and tun.
const DEFAULT_ALLOWED_DEVICES: [(&str, i64, i64, &str); 11] = [
    ("c", -1, -1, "m"),
    ("b", -1, -1, "m"),
    ("c", 1, 3, "rwm"),
    ("c", 1, 5, "rwm"),
    ("c", 1, 7, "rwm"),
    ("c", 1, 8, "rwm"),
    ("c", 1, 9, "rwm"),
    ("c", 5, 0, "rwm"),
    ("c", 5, 1, "rwm"),
    ("c", 5, 2, "rwm"),
    ("c", 136, -1, "rwm"),
];

/// The box's resources as applied to its cgroup: as root, the device rules become deny-all,
/// then config.json's rules, then the box's own device nodes and the standard devices allowed
/// (as runc does), so a box can always use /dev/null and its pty whatever the config says.
fn effective_resources(
    linux: &oci_spec::runtime::Linux,
    rootless: bool,
) -> Result<Option<oci_spec::runtime::LinuxResources>> {
    let given = linux.resources().clone();
    if rootless {
        return Ok(given);
    }
    let mut v = serde_json::to_value(given.unwrap_or_default())
        .map_err(|e| Error::config(format!("resources: {e}")))?;
    let rule = |typ: &str, major: i64, minor: i64, access: &str, allow: bool| {
        let mut r = serde_json::json!({"allow": allow, "type": typ, "access": access});
        if major >= 0 {
            r["major"] = major.into();
        }
        if minor >= 0 {
            r["minor"] = minor.into();
        }
        r
    };
    let mut rules = vec![serde_json::json!({"allow": false, "access": "rwm"})];
    if let Some(user) = v.get("devices").and_then(|d| d.as_array()) {
        rules.extend(user.iter().cloned());
    }
    for d in linux.devices().as_deref().unwrap_or(&[]) {
        rules.push(rule(d.typ().as_str(), d.major(), d.minor(), "rwm", true));
    }
    for (typ, major, minor, access) in DEFAULT_ALLOWED_DEVICES {
        rules.push(rule(typ, major, minor, access, true));
    }
    v["devices"] = serde_json::Value::Array(rules);
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| Error::config(format!("resources: {e}")))
}
