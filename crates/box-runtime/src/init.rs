//! The box's init, between clone and execve: joins and finishes its namespaces, builds the
//! rootfs, sets identity, limits and privileges, reports "created", waits for start, then
//! becomes the user's program. Runs in a freshly cloned, single-threaded process.

use std::convert::Infallible;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxPersonalityDomain, Process, Spec};

use crate::error::{Context, Error, Result};
use crate::hooks::{run_hooks, HookPoint};
use crate::namespaces::{join_path, NamespacePlan};
use crate::rootfs::{self, RootfsPlan};
use crate::seccomp::SeccompProgram;
use crate::sync::{Channel, Message};

/// How the init learns that it may start the user's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSignal {
    /// `create`: a byte written to the exec fifo by `start`.
    Fifo,
    /// `run`: a Start message on the handshake channel.
    Channel,
}

/// Everything the init needs, prepared by the runtime before clone.
#[derive(Debug)]
pub struct InitArgs<'a> {
    /// The box's spec.
    pub spec: &'a Spec,
    /// The process to run (spec.process).
    pub process: &'a Process,
    /// Absolute rootfs path.
    pub rootfs: &'a Path,
    /// Absolute bundle path.
    pub bundle: &'a Path,
    /// Namespace plan.
    pub plan: &'a NamespacePlan,
    /// The init's end of the handshake.
    pub channel: &'a Channel,
    /// The exec fifo, opened read-write (so a read blocks until `start` writes).
    pub fifo: Option<&'a OwnedFd>,
    /// Console socket to send the pty master to (terminal boxes).
    pub console: Option<&'a OwnedFd>,
    /// Compiled seccomp filter.
    pub seccomp: Option<&'a SeccompProgram>,
    /// Number of descriptors after stdio passed to the box.
    pub preserve_fds: u32,
    /// chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Whether the runtime must run prestart/createRuntime hooks before pivot_root.
    pub runtime_hooks: bool,
    /// How start is signalled.
    pub start: StartSignal,
    /// The OCI state handed to in-box hooks.
    pub state: &'a serde_json::Value,
    /// The runtime's end of the handshake, inherited by clone: closed first, so the
    /// init sees EOF if the runtime dies.
    pub runtime_end: std::os::fd::RawFd,
    /// The box's cgroup directories on the host (empty when it has none).
    pub cgroup_dirs: &'a [std::path::PathBuf],
    /// The box's v1 cgroup, for the init to move itself into (none: the runtime moves it).
    pub self_attach: Option<&'a crate::cgroups::SelfAttach>,
    /// Whether the init already waited for its cgroup (see `enter_cgroup`).
    pub in_cgroup: std::cell::Cell<bool>,
}

/// The init's entry point; never returns.
pub fn run(a: &InitArgs<'_>) -> ! {
    let mut started = false;
    let err = match init_main(a, &mut started) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = a.channel.send(&Message::Failed(err.to_string()));
    if started {
        eprintln!("box-runc: {err}");
    }
    // SAFETY: _exit ends this cloned process without running the parent's atexit handlers.
    unsafe { libc::_exit(if started { 127 } else { 1 }) }
}

fn init_main(a: &InitArgs<'_>, started: &mut bool) -> Result<Infallible> {
    // SAFETY: the runtime's end is a descriptor this process inherited and never uses.
    unsafe { libc::close(a.runtime_end) };
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    a.channel.expect(Message::Go)?;
    let linux = a.spec.linux().as_ref();
    if a.plan.new_user {
        become_namespace_root(a.spec)?;
    }
    for (flag, path) in &a.plan.join {
        join_path(*flag, path)?;
    }
    let later = a.plan.unshare_later & !(libc::CLONE_NEWTIME | libc::CLONE_NEWCGROUP);
    if later != 0 {
        nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(later))
            .ctx(|| "cannot create the box's namespaces")?;
    }
    if a.plan.new_time {
        enter_time_namespace(a.spec)?;
    }
    if a.plan.new_net || later & libc::CLONE_NEWNET != 0 {
        crate::namespaces::loopback_up()?;
    }
    let plan = RootfsPlan {
        cgroup_dirs: a.cgroup_dirs,
        spec: a.spec,
        rootfs: a.rootfs,
        bundle: a.bundle,
        in_user_ns: a.plan.new_user || a.plan.join.iter().any(|(f, _)| *f == libc::CLONE_NEWUSER),
        no_pivot: a.no_pivot,
    };
    let may_setgroups = setgroups_allowed();
    rootfs::prepare(&plan)?;
    let hooks_in_box =
        !crate::hooks::hooks_at(a.spec.hooks().as_ref(), HookPoint::CreateContainer).is_empty();
    if a.runtime_hooks || hooks_in_box {
        // Hooks may start processes: from here on everything must be in the box's cgroup.
        enter_cgroup(a)?;
    }
    if a.runtime_hooks {
        a.channel.send(&Message::RunHooks)?;
        a.channel.expect(Message::Go)?;
    }
    run_hooks(a.spec.hooks().as_ref(), HookPoint::CreateContainer, a.state)?;
    rootfs::pivot(&plan)?;
    set_identity(a)?;
    if let Some(sysctls) = linux.and_then(|l| l.sysctl().as_ref()) {
        for (key, value) in sysctls {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            fs::write(&path, value).ctx(|| format!("cannot set sysctl {key}={value}"))?;
        }
    }
    rootfs::finish(&plan)?;
    if let Some(rl) = a.process.rlimits() {
        crate::rlimits::apply(rl).map_err(|e| Error::Init(e.to_string()))?;
    }
    if let Some(p) = linux.and_then(|l| l.personality().as_ref()) {
        set_personality(p.domain())?;
    }
    enter_cgroup(a)?;
    match (a.process.terminal() == Some(true), a.console) {
        (true, Some(sock)) => {
            let size = a
                .process
                .console_size()
                .as_ref()
                .map(|b| (clamp16(b.height()), clamp16(b.width())));
            crate::console::setup_in_box(sock.as_fd(), size)?;
        }
        (true, None) => {
            return Err(Error::config(
                "process.terminal is true but no console socket was given (use --console-socket)",
            ))
        }
        _ => {
            let _ = nix::unistd::setsid();
        }
    }
    let image = crate::process::prepare_exec(a.process)?;
    let cwd = a.process.cwd();
    if !cwd.is_absolute() {
        return Err(Error::config(format!(
            "process.cwd {} must be absolute",
            cwd.display()
        )));
    }
    let _ = fs::create_dir_all(cwd);
    let nnp = a.process.no_new_privileges() == Some(true);
    if let (Some(filter), false) = (a.seccomp, nnp) {
        filter.load()?;
    }
    crate::process::switch_user(a.process, may_setgroups)?;
    nix::unistd::chdir(cwd).ctx(|| format!("cannot enter cwd {}", cwd.display()))?;
    crate::process::apply_privileges(a.process)?;
    crate::process::cloexec_from(3 + a.preserve_fds)?;
    // From here the runtime may exit (create): its death must not kill the box.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    a.channel.send(&Message::Created)?;
    match a.start {
        StartSignal::Fifo => wait_fifo(a.fifo)?,
        StartSignal::Channel => a.channel.expect(Message::Start)?,
    }
    *started = true;
    run_hooks(a.spec.hooks().as_ref(), HookPoint::StartContainer, a.state)?;
    if let (Some(filter), true) = (a.seccomp, nnp) {
        filter.load()?;
    }
    Err(crate::process::exec(&image))
}

fn clamp16(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// Enters the box's cgroup (once): moves itself in (v1), or waits until the runtime has moved
/// it (v2: the runtime does that while the rootfs is being built, since that cgroup write waits
/// for the kernel), then makes the cgroup namespace, rooted at that cgroup.
fn enter_cgroup(a: &InitArgs<'_>) -> Result<()> {
    if a.in_cgroup.replace(true) {
        return Ok(());
    }
    if let Some(cg) = a.self_attach {
        cg.attach_current()
            .map_err(|e| Error::Init(e.to_string()))?;
    }
    a.channel.expect(Message::Go)?;
    if a.plan.new_cgroup {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .ctx(|| "cannot create the box's cgroup namespace")?;
    }
    Ok(())
}

/// In a new user namespace, become its root (when root is mapped) so the setup runs as the box's root.
fn become_namespace_root(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let uids = linux
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    let gids = linux
        .and_then(|l| l.gid_mappings().clone())
        .unwrap_or_default();
    if crate::idmap::to_host(&gids, 0).is_some() {
        let g = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(g, g, g).ctx(|| "cannot become gid 0 in the user namespace")?;
    }
    if crate::idmap::to_host(&uids, 0).is_some() {
        let u = nix::unistd::Uid::from_raw(0);
        nix::unistd::setresuid(u, u, u).ctx(|| "cannot become uid 0 in the user namespace")?;
    }
    Ok(())
}

fn enter_time_namespace(spec: &Spec) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(
        libc::CLONE_NEWTIME,
    ))
    .ctx(|| "cannot create a time namespace (kernel 5.6 or later needed)")?;
    if let Some(offsets) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
    {
        let mut text = String::new();
        for (clock, off) in offsets {
            text.push_str(&format!(
                "{clock} {} {}\n",
                off.secs().unwrap_or(0),
                off.nanosecs().unwrap_or(0)
            ));
        }
        fs::write("/proc/self/timens_offsets", text).ctx(|| "cannot set the time offsets")?;
    }
    let ns = fs::File::open("/proc/self/ns/time_for_children")
        .ctx(|| "cannot open the new time namespace")?;
    nix::sched::setns(
        ns.as_fd(),
        nix::sched::CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    )
    .ctx(|| "cannot enter the new time namespace")
}

fn set_identity(a: &InitArgs<'_>) -> Result<()> {
    if let Some(h) = a.spec.hostname() {
        if !a.plan.own_uts {
            return Err(Error::config(
                "hostname needs a uts namespace (add {\"type\": \"uts\"} to linux.namespaces)",
            ));
        }
        nix::unistd::sethostname(h).ctx(|| format!("cannot set hostname {h:?}"))?;
    }
    if let Some(d) = a.spec.domainname() {
        if !a.plan.own_uts {
            return Err(Error::config("domainname needs a uts namespace"));
        }
        // SAFETY: the pointer and length describe `d`'s bytes, which outlive the call.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(std::io::Error::last_os_error())
                .ctx(|| format!("cannot set domainname {d:?}"));
        }
    }
    Ok(())
}

fn set_personality(domain: LinuxPersonalityDomain) -> Result<()> {
    let persona = match domain {
        LinuxPersonalityDomain::PerLinux => 0,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality takes an integer.
    if unsafe { libc::personality(persona) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "cannot set personality");
    }
    Ok(())
}

/// setgroups(2) is denied in user namespaces whose gid map was written without privilege.
fn setgroups_allowed() -> bool {
    fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}

fn wait_fifo(fifo: Option<&OwnedFd>) -> Result<()> {
    let Some(fd) = fifo else {
        return Err(Error::Init("no exec fifo to wait on".into()));
    };
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(fd.as_fd(), &mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(Error::Init("exec fifo closed".into())),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| "cannot wait on the exec fifo"),
        }
    }
}
