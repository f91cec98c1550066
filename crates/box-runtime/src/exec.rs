//! `exec`: a new process inside a running box. The runtime joins the box's pid namespace (so
//! its child is born there), forks, and the child joins the other namespaces and the cgroup,
//! then takes the process's user, privileges and seccomp filter, as the init did.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::Process;

use crate::create::{clone_into, write_pid_file};
use crate::error::{Context, Error, Result};
use crate::lifecycle::{wait_exit_code, RunOutcome, Runtime};
use crate::state::Status;
use crate::sync::{channel_pair, Channel, Message};

/// Options of `exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The process to start.
    pub process: Process,
    /// Unix socket to send the pty master to.
    pub console_socket: Option<PathBuf>,
    /// Where to write the new process's host pid.
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs.
    pub detach: bool,
    /// Descriptors after stdio to pass.
    pub preserve_fds: u32,
}

/// Namespaces joined by exec, in order (user first, mount last).
const JOIN_ORDER: [(libc::c_int, &str); 7] = [
    (libc::CLONE_NEWUSER, "user"),
    (libc::CLONE_NEWIPC, "ipc"),
    (libc::CLONE_NEWUTS, "uts"),
    (libc::CLONE_NEWNET, "net"),
    (libc::CLONE_NEWCGROUP, "cgroup"),
    (libc::CLONE_NEWTIME, "time"),
    (libc::CLONE_NEWNS, "mnt"),
];

impl Runtime {
    /// Starts `opts.process` inside running box `id`.
    pub fn exec(&self, id: &str, opts: &ExecOptions) -> Result<RunOutcome> {
        let record = self.load(id)?;
        match record.status(self.root()) {
            Status::Running => {}
            s => {
                return Err(Error::WrongState(format!(
                    "cannot exec in a {} container",
                    s.as_str()
                )))
            }
        }
        let init = record.pid;
        let mut joins: Vec<(libc::c_int, File)> = Vec::new();
        for (flag, name) in JOIN_ORDER {
            if differs(init, name)? {
                let f = File::open(format!("/proc/{init}/ns/{name}"))
                    .ctx(|| format!("cannot open the box's {name} namespace"))?;
                joins.push((flag, f));
            }
        }
        let linux = record.config.linux().as_ref();
        let seccomp = linux
            .and_then(|l| l.seccomp().as_ref())
            .map(|s| crate::seccomp_cache::compile_cached(s, &self.root().seccomp_cache_dir()))
            .transpose()?;
        let terminal = opts.process.terminal() == Some(true);
        let (console, relay) = match (&opts.console_socket, terminal) {
            (_, false) => (None, None),
            (Some(p), true) => (Some(crate::console::connect(p)?), None),
            (None, true) if !opts.detach => {
                let (a, b) = crate::console::relay_pair()?;
                (Some(a), Some(b))
            }
            (None, true) => {
                return Err(Error::config(
                    "a detached terminal process needs --console-socket",
                ))
            }
        };
        let pid_ns = if differs(init, "pid")? {
            Some(
                File::open(format!("/proc/{init}/ns/pid"))
                    .ctx(|| "cannot open the box's pid namespace")?,
            )
        } else {
            None
        };
        // Joining a pid namespace owned by the box's user namespace needs rights in that user
        // namespace (rootless): an intermediate process joins both, then clones the exec'd
        // process as our child (CLONE_PARENT). Otherwise we join the pid namespace ourselves.
        let user_first = joins.iter().position(|(f, _)| *f == libc::CLONE_NEWUSER);
        let staged = user_first.is_some() && pid_ns.is_some();
        if let (Some(f), false) = (&pid_ns, staged) {
            nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWPID)
                .ctx(|| "cannot join the box's pid namespace")?;
        }
        // v1: the process moves itself into the box's cgroup (see `SelfAttach`).
        let cgroup = record.cgroup.as_ref().filter(|c| c.is_enabled());
        let self_attach = cgroup.map(|c| c.self_attach()).transpose()?.flatten();
        let (channel, child_end) = channel_pair()?;
        let child_joins: Vec<(libc::c_int, &File)> = joins
            .iter()
            .filter(|(f, _)| !(staged && *f == libc::CLONE_NEWUSER))
            .map(|(f, file)| (*f, file))
            .collect();
        let child = ExecChild {
            process: &opts.process,
            joins: &child_joins,
            channel: &child_end,
            runtime_end: channel.raw_fd(),
            console: console.as_ref(),
            seccomp: seccomp.as_ref(),
            preserve_fds: opts.preserve_fds,
            new_user: joins.iter().any(|(f, _)| *f == libc::CLONE_NEWUSER),
            spec: &record.config,
            self_attach: self_attach.as_ref(),
        };
        let pid = if let (true, Some(u), Some(p)) = (staged, user_first, &pid_ns) {
            let stage = clone_into(0, || stage_into(&joins[u].1, p, &child_end, || child.run()))?;
            let got = channel.recv();
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage), None);
            match got? {
                Some(Message::Pid(pid)) => pid,
                Some(Message::Failed(why)) => return Err(Error::Init(why)),
                _ => {
                    return Err(Error::Init(
                        "exec's intermediate process exited early".into(),
                    ))
                }
            }
        } else {
            clone_into(0, || child.run())?
        };
        drop(child_end);
        drop(console);
        let undo = |e: Error| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            e
        };
        if let (Some(cg), None) = (cgroup, &self_attach) {
            cg.add_process(pid).map_err(|e| undo(e.into()))?;
        }
        if let Err(e) = channel.send(&Message::Go) {
            return Err(undo(
                channel.pending_failure().map(Error::Init).unwrap_or(e),
            ));
        }
        channel.expect(Message::Created).map_err(undo)?;
        if let Some(path) = &opts.pid_file {
            write_pid_file(path, pid)?;
        }
        channel.send(&Message::Start)?;
        if let Ok(Some(Message::Failed(why))) = channel.recv() {
            let _ = wait_exit_code(pid);
            return Err(Error::Init(why));
        }
        if opts.detach {
            return Ok(RunOutcome::Detached);
        }
        if let Some(sock) = relay {
            let pty = crate::console::recv_fd(sock.as_fd())?;
            let _ = crate::console::relay(pty);
        }
        Ok(RunOutcome::Exited(wait_exit_code(pid)?))
    }
}

/// Whether the box's init lives in a different `name` namespace than we do. A namespace kind
/// this kernel lacks (we have no such link either) counts as the same; a namespace of the
/// box's we cannot see (its init gone, or no ptrace rights over it, e.g. rootless from another
/// user namespace) is an error: taking it for ours would start the process outside the box.
fn differs(init: i32, name: &str) -> Result<bool> {
    let theirs = std::fs::read_link(format!("/proc/{init}/ns/{name}"));
    let ours = std::fs::read_link(format!("/proc/self/ns/{name}"));
    match (theirs, ours) {
        (Ok(t), Ok(o)) => Ok(t != o),
        (_, Err(_)) => Ok(false),
        (Err(e), Ok(_)) => Err(e)
            .ctx(|| format!("cannot see the box's {name} namespace (of its init, pid {init})")),
    }
}

/// The intermediate of a staged exec: joins the box's user and pid namespaces, clones the
/// exec'd process as a sibling (our caller's child), reports its pid, and exits.
fn stage_into(
    user_ns: &File,
    pid_ns: &File,
    channel: &Channel,
    child: impl FnOnce() -> Infallible,
) -> Infallible {
    let result = (|| -> Result<i32> {
        nix::sched::setns(user_ns.as_fd(), CloneFlags::CLONE_NEWUSER)
            .ctx(|| "cannot join the box's user namespace")?;
        become_root_in_user_ns();
        nix::sched::setns(pid_ns.as_fd(), CloneFlags::CLONE_NEWPID)
            .ctx(|| "cannot join the box's pid namespace")?;
        clone_into(libc::CLONE_PARENT, child)
    })();
    let msg = match result {
        Ok(pid) => Message::Pid(pid),
        Err(e) => Message::Failed(e.to_string()),
    };
    let _ = channel.send(&msg);
    // SAFETY: _exit ends this intermediate process without running inherited atexit handlers.
    unsafe { libc::_exit(0) }
}

struct ExecChild<'a> {
    process: &'a Process,
    joins: &'a [(libc::c_int, &'a File)],
    channel: &'a Channel,
    runtime_end: std::os::fd::RawFd,
    console: Option<&'a OwnedFd>,
    seccomp: Option<&'a crate::seccomp::SeccompProgram>,
    preserve_fds: u32,
    new_user: bool,
    spec: &'a oci_spec::runtime::Spec,
    /// The box's v1 cgroup, for the process to move itself into (none: the runtime moves it).
    self_attach: Option<&'a crate::cgroups::SelfAttach>,
}

impl ExecChild<'_> {
    fn run(&self) -> ! {
        let mut started = false;
        let err = match self.main(&mut started) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        let _ = self.channel.send(&Message::Failed(err.to_string()));
        if started {
            eprintln!("box-runc exec: {err}");
        }
        // SAFETY: _exit ends this forked process without running inherited atexit handlers.
        unsafe { libc::_exit(if started { 127 } else { 1 }) }
    }

    fn main(&self, started: &mut bool) -> Result<Infallible> {
        // SAFETY: closing an inherited descriptor this process never uses.
        unsafe { libc::close(self.runtime_end) };
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        if let Some(cg) = self.self_attach {
            cg.attach_current()
                .map_err(|e| Error::Init(e.to_string()))?;
        }
        self.channel.expect(Message::Go)?;
        for (flag, f) in self.joins {
            nix::sched::setns(f.as_fd(), CloneFlags::from_bits_retain(*flag)).ctx(|| {
                format!(
                    "cannot join the box's {} namespace",
                    crate::namespaces::proc_name(*flag)
                )
            })?;
            if *flag == libc::CLONE_NEWUSER {
                become_root_in_user_ns();
            }
        }
        let may_setgroups =
            std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny");
        if let Some(rl) = self.process.rlimits() {
            crate::rlimits::apply(rl).map_err(|e| Error::Init(e.to_string()))?;
        }
        if let Some(sock) = self.console {
            let size = self.process.console_size().as_ref().map(|b| {
                (
                    u16::try_from(b.height()).unwrap_or(u16::MAX),
                    u16::try_from(b.width()).unwrap_or(u16::MAX),
                )
            });
            crate::console::setup_in_box(sock.as_fd(), size)?;
        } else {
            let _ = nix::unistd::setsid();
        }
        let image = crate::process::prepare_exec(self.process)?;
        let nnp = self.process.no_new_privileges() == Some(true);
        if let (Some(f), false) = (self.seccomp, nnp) {
            f.load()?;
        }
        crate::process::switch_user(self.process, may_setgroups && !self.new_user_denies())?;
        let cwd = self.process.cwd();
        nix::unistd::chdir(cwd).ctx(|| format!("cannot enter cwd {}", cwd.display()))?;
        crate::process::apply_privileges(self.process)?;
        crate::process::cloexec_from(3 + self.preserve_fds)?;
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
        self.channel.send(&Message::Created)?;
        self.channel.expect(Message::Start)?;
        *started = true;
        if let (Some(f), true) = (self.seccomp, nnp) {
            f.load()?;
        }
        Err(crate::process::exec(&image))
    }

    /// In a user namespace with a single unprivileged gid mapping, setgroups stays denied.
    fn new_user_denies(&self) -> bool {
        self.new_user
            && self
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.gid_mappings().as_ref())
                .is_some_and(|m| m.len() == 1 && m[0].size() == 1)
    }
}

fn become_root_in_user_ns() {
    let g = nix::unistd::Gid::from_raw(0);
    let u = nix::unistd::Uid::from_raw(0);
    let _ = nix::unistd::setresgid(g, g, g);
    let _ = nix::unistd::setresuid(u, u, u);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_of_the_box_we_cannot_see_is_an_error_not_ours() {
        let me = std::process::id() as i32;
        assert!(!differs(me, "pid").expect("our own pid namespace"));
        // A kind no kernel has: neither side has the link, so it counts as the same.
        assert!(!differs(me, "no-such-kind").expect("no such kind"));
        // An init that is gone (or hidden from us): its namespaces cannot be told.
        let err = differs(i32::MAX, "mnt").expect_err("no such process");
        assert!(err.to_string().contains("mnt namespace"), "{err}");
    }
}
