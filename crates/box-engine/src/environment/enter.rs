//! `box enter`: a login shell or one command in an environment, started the short way (no OCI
//! bundle, no database, no supervisor): new mount, pid, IPC and UTS namespaces (and a user
//! namespace mapping the caller to root when rootless, a network namespace with
//! `--network none`), the environment's rootfs pivoted to, /proc of the new pid namespace, the
//! host's /dev and /sys, and (network shared) its resolv.conf and hosts bound in. Pid 1 of the
//! new namespace spawns the program and passes its exit code on, so Ctrl-C reaches the program.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::Environment;
use crate::error::{EngineError, Result};

/// How `box enter` runs.
#[derive(Debug, Clone, Default)]
pub struct EnterOptions {
    /// A network namespace of its own with only loopback (`--network none`); else the host's.
    pub network_none: bool,
    /// Bind the project directory at /work and start there (`--mount-project`).
    pub mount_project: bool,
    /// The command (none: a login shell).
    pub command: Vec<String>,
}

/// The PATH inside.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the shell or command in `env`; returns its exit code (128 + signal when killed).
pub fn enter(env: &Environment, opts: &EnterOptions) -> Result<i32> {
    let rootfs = env.rootfs();
    if !rootfs.join("bin").exists() && !rootfs.join("usr/bin").exists() {
        return Err(EngineError::WrongState(format!(
            "{} has no programs: the environment is damaged (box env rm, then box init)",
            rootfs.display()
        )));
    }
    let rootless = box_runtime::idmap::running_rootless();
    if rootless {
        map_caller_to_root()?;
    }
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if opts.network_none {
        flags |= libc::CLONE_NEWNET;
    }
    let plan = Plan::new(env, opts)?;
    // SAFETY: ignoring SIGINT/SIGQUIT in the waiting parent (the program gets them from the
    // terminal); restored to the default in the child before exec.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let pid = clone_shared(flags, &plan)?;
    Ok(wait_code(pid))
}

/// Clones pid 1 of the new namespaces the vfork way: it shares this process's memory (no page
/// tables copied, no copy-on-write faults after) and runs on a stack of its own, while this
/// process stays suspended until it exits (it never execs: it spawns the program and waits).
fn clone_shared(flags: libc::c_int, plan: &Plan) -> Result<i32> {
    const STACK: usize = 1 << 20;
    extern "C" fn start(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&Plan` handed to clone below; the parent is suspended (vfork)
        // and keeps it alive until this child has exited.
        let plan = unsafe { &*(arg as *const Plan) };
        plan.run()
    }
    let mut stack = vec![0u8; STACK];
    // The stack grows down from its (16-byte aligned) end.
    let top = (stack.as_mut_ptr() as usize + STACK) & !15;
    // SAFETY: the child runs `start` on `stack`, which outlives it (this call returns only once
    // the child has exited, CLONE_VFORK); sharing memory is sound because this process does
    // nothing while suspended.
    let pid = unsafe {
        libc::clone(
            start,
            top as *mut libc::c_void,
            flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            plan as *const Plan as *mut libc::c_void,
        )
    };
    drop(stack);
    if pid < 0 {
        return Err(EngineError::io(
            "cannot create the environment's namespaces (this needs root or unprivileged user namespaces)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(pid)
}

/// Rootless: a user namespace of our own where the caller is root (one mapping, written by
/// ourselves: no newuidmap needed, and files the caller owns are root's inside). The process
/// must be single-threaded.
pub fn map_caller_to_root() -> Result<()> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(|e| {
        EngineError::io(
            "cannot create a user namespace (are unprivileged user namespaces enabled?)",
            std::io::Error::from(e),
        )
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .map_err(|e| EngineError::io(format!("cannot write /proc/self/{file}"), e))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1"))?;
    write("gid_map", format!("0 {gid} 1"))
}

/// Waits for `pid`; its shell-style exit code.
fn wait_code(pid: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our local.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 255;
        }
    }
}

/// Everything the child needs, prepared before the clone (the child only makes system calls).
struct Plan {
    rootfs: PathBuf,
    project: Option<PathBuf>,
    share_host_files: bool,
    hostname: String,
    workdir: &'static str,
    argv: Vec<CString>,
    env: Vec<CString>,
    search: bool,
}

impl Plan {
    fn new(env: &Environment, opts: &EnterOptions) -> Result<Plan> {
        let rootfs = env.rootfs();
        let (argv, search): (Vec<String>, bool) = if opts.command.is_empty() {
            let shell = if rootfs.join("bin/bash").exists() {
                "/bin/bash"
            } else {
                "/bin/sh"
            };
            (vec![shell.to_string(), "-l".to_string()], false)
        } else {
            (opts.command.clone(), !opts.command[0].contains('/'))
        };
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        let vars = [
            format!("PATH={PATH}"),
            "HOME=/root".to_string(),
            format!("TERM={term}"),
            "USER=root".to_string(),
            "LOGNAME=root".to_string(),
            format!("BOX_ENV={}", env.meta.name),
            format!("HOSTNAME={}", env.meta.name),
        ];
        let cstr = |s: &str| {
            CString::new(s).map_err(|_| EngineError::invalid(format!("{s:?} contains a NUL byte")))
        };
        Ok(Plan {
            rootfs,
            project: opts.mount_project.then(|| env.project.clone()),
            share_host_files: !opts.network_none,
            hostname: env.meta.name.clone(),
            workdir: if opts.mount_project { "/work" } else { "/root" },
            argv: argv.iter().map(|a| cstr(a)).collect::<Result<_>>()?,
            env: vars.iter().map(|v| cstr(v)).collect::<Result<_>>()?,
            search,
        })
    }

    /// The child (pid 1 of the new namespace): its mounts, then the program, spawned while
    /// pid 1 waits and exits with its code.
    fn run(&self) -> ! {
        if let Err(why) = self.prepare() {
            eprintln!("box: cannot enter the environment: {why}");
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(125) }
        }
        let code = match self.spawn() {
            Ok(pid) => wait_code(pid),
            Err(e) => {
                eprintln!("box: cannot run {}: {e}", self.argv[0].to_string_lossy());
                if e == nix::errno::Errno::ENOENT {
                    127
                } else {
                    126
                }
            }
        };
        // SAFETY: as above.
        unsafe { libc::_exit(code) }
    }

    /// Starts the program with posix_spawn (a vfork-like clone: this process's page tables are
    /// not copied), SIGINT and SIGQUIT back to their defaults; its pid.
    fn spawn(&self) -> nix::Result<i32> {
        use nix::spawn::{posix_spawn, posix_spawnp, PosixSpawnAttr, PosixSpawnFileActions};
        use nix::sys::signal::{SigSet, Signal};
        let mut attr = PosixSpawnAttr::init()?;
        let mut defaults = SigSet::empty();
        defaults.add(Signal::SIGINT);
        defaults.add(Signal::SIGQUIT);
        attr.set_sigdefault(&defaults)?;
        attr.set_flags(nix::spawn::PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF)?;
        let actions = PosixSpawnFileActions::init()?;
        let pid = if self.search {
            // posix_spawnp searches the PATH of this process, not the one handed to the program.
            std::env::set_var("PATH", PATH);
            posix_spawnp(&self.argv[0], &actions, &attr, &self.argv, &self.env)?
        } else {
            posix_spawn(
                self.argv[0].as_c_str(),
                &actions,
                &attr,
                &self.argv,
                &self.env,
            )?
        };
        Ok(pid.as_raw())
    }

    fn prepare(&self) -> std::result::Result<(), String> {
        let bind = |src: &Path, dst: &Path| {
            mount(
                Some(src),
                dst,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("cannot bind {} at {}: {e}", src.display(), dst.display()))
        };
        crate::volumes::make_mounts_private()
            .map_err(|e| format!("cannot make mounts private: {e}"))?;
        let r = &self.rootfs;
        bind(r, r)?;
        mount(
            Some("proc"),
            &r.join("proc"),
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| format!("cannot mount /proc: {e}"))?;
        bind(Path::new("/dev"), &r.join("dev"))?;
        bind(Path::new("/sys"), &r.join("sys"))?;
        if self.share_host_files {
            for f in ["etc/resolv.conf", "etc/hosts"] {
                let host = Path::new("/").join(f);
                let inside = r.join(f);
                if host.is_file() && (inside.is_file() || std::fs::write(&inside, b"").is_ok()) {
                    bind(&host, &inside)?;
                }
            }
        }
        if let Some(project) = &self.project {
            let work = r.join("work");
            let _ = std::fs::create_dir_all(&work);
            bind(project, &work)?;
        }
        std::env::set_current_dir(r).map_err(|e| format!("cannot enter {}: {e}", r.display()))?;
        nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
        umount2(".", MntFlags::MNT_DETACH)
            .map_err(|e| format!("cannot detach the old root: {e}"))?;
        nix::unistd::sethostname(&self.hostname).map_err(|e| format!("sethostname: {e}"))?;
        if std::env::set_current_dir(self.workdir).is_err() {
            let _ = std::env::set_current_dir("/");
        }
        Ok(())
    }
}
