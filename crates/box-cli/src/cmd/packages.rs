//! `box pkg add|del|list|search|update|info`: Alpine packages installed from the host side into
//! a `.box/` environment or a box. The package manager works on a thread confined to the
//! target's root (its own chroot: symlinks inside cannot lead to the host), downloading through
//! threads that keep the host's root. Package scripts run inside: in an environment through
//! `box enter`, in a running box through `box exec`, in a stopped box under the same chroot (as
//! `apk --root` runs them).

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;

use anyhow::Result;
use box_engine::environment::{self, Environment};
use box_pkg::fetch::{Fetcher, Http};
use box_pkg::manager::{host_arch, Changes, Root};
use box_pkg::scripts::Script;
use box_pkg::PkgError;

use super::cli::PkgCommand;

/// The PATH package scripts get.
const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `box pkg …` on box `box_name`, or else on the environment of `directory` (or the current
/// directory).
pub fn pkg(
    root: Option<PathBuf>,
    directory: Option<PathBuf>,
    box_name: Option<String>,
    cmd: PkgCommand,
) -> Result<()> {
    match box_name {
        Some(name) => pkg_in_box(root, &name, cmd),
        None => pkg_in_environment(directory, cmd),
    }
}

fn pkg_in_environment(directory: Option<PathBuf>, cmd: PkgCommand) -> Result<()> {
    let env = Environment::find(&super::environments::project_dir(directory)?)?;
    // Rootless, the caller becomes root of a user namespace of its own (the rootfs is the
    // caller's) so the confined thread may chroot; only while single-threaded.
    if box_runtime::idmap::running_rootless() && !box_runtime::idmap::in_user_namespace() {
        environment::enter::map_caller_to_root()?;
    }
    let fetch = Fetcher { http: Http::new()? };
    let project = env.project.clone();
    let enter = move |body: &[u8], args: &[String]| {
        script_child(
            &[OsStr::new("enter"), OsStr::new("-C"), project.as_os_str()],
            body,
            args,
        )
    };
    with_script_server(&enter, |scripts| {
        box_engine::chroot::in_root(&env.rootfs(), || run(&cmd, &fetch, &scripts.runner()))?
    })
}

fn pkg_in_box(root: Option<PathBuf>, name: &str, cmd: PkgCommand) -> Result<()> {
    let engine = super::boxes::engine_for_box(root.clone(), name)?;
    let fetch = Fetcher { http: Http::new()? };
    let mut prefix: Vec<&OsStr> = Vec::new();
    if let Some(r) = &root {
        prefix.extend([OsStr::new("--root"), r.as_os_str()]);
    }
    prefix.extend([OsStr::new("exec"), OsStr::new("-i"), OsStr::new(name)]);
    let exec = |body: &[u8], args: &[String]| script_child(&prefix, body, args);
    with_script_server(&exec, |scripts| {
        engine.in_box_root(name, |running| {
            if running {
                run(&cmd, &fetch, &scripts.runner())
            } else {
                // A stopped box has no namespaces to run in: under the chroot, as apk does.
                run(&cmd, &fetch, &run_confined)
            }
        })?
    })
}

/// Where a confined thread sends package scripts: a thread that keeps the host's root runs
/// each through a child `box` (`enter` or `exec`) and answers with its outcome.
struct ScriptServer {
    requests: mpsc::Sender<ScriptRequest>,
}

/// A script and its arguments, and where its outcome goes.
struct ScriptRequest {
    body: Vec<u8>,
    args: Vec<String>,
    reply: mpsc::Sender<std::io::Result<std::process::ExitStatus>>,
}

/// How the server's thread starts a script: (content, arguments).
type ScriptSpawner<'a> =
    dyn Fn(&[u8], &[String]) -> std::io::Result<std::process::ExitStatus> + Sync + 'a;

impl ScriptServer {
    /// A runner for box-pkg that hands each script to the server and waits for it.
    fn runner(&self) -> impl Fn(&Script<'_>) -> box_pkg::Result<()> + '_ {
        move |script| {
            let gone = || PkgError::Io("the script runner is gone".into());
            let (reply, outcome) = mpsc::channel();
            self.requests
                .send(ScriptRequest {
                    body: script.body.to_vec(),
                    args: script.args.clone(),
                    reply,
                })
                .map_err(|_| gone())?;
            script_result(script, outcome.recv().map_err(|_| gone())?)
        }
    }
}

/// Runs `work` with a script server whose thread starts scripts with `spawn`.
fn with_script_server<T>(spawn: &ScriptSpawner<'_>, work: impl FnOnce(&ScriptServer) -> T) -> T {
    let (requests, served) = mpsc::channel::<ScriptRequest>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for req in served {
                let _ = req.reply.send(spawn(&req.body, &req.args));
            }
        });
        let server = ScriptServer { requests };
        // The server's thread ends once `server` (the only sender) is dropped here.
        work(&server)
    })
}

/// Runs `box ARGS… /bin/sh -s SCRIPT_ARGS…` with the script on its standard input.
fn script_child(
    args: &[&OsStr],
    body: &[u8],
    script_args: &[String],
) -> std::io::Result<std::process::ExitStatus> {
    let mut child = Process::new(std::env::current_exe()?)
        .args(args)
        .args(["--", "/bin/sh", "-s"])
        .args(script_args)
        .stdin(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body)?;
    }
    child.wait()
}

/// Runs a script from the calling (confined) thread: written to /tmp, run by `/bin/sh` with a
/// clean environment, then removed.
fn run_confined(script: &Script<'_>) -> box_pkg::Result<()> {
    let io = |what: &str, e: std::io::Error| PkgError::Io(format!("{what}: {e}"));
    std::fs::create_dir_all("/tmp").map_err(|e| io("cannot make /tmp", e))?;
    let file = format!("/tmp/.box-pkg-{}{}", script.package.name, script.name);
    std::fs::write(&file, script.body).map_err(|e| io("cannot write the script", e))?;
    let status = Process::new("/bin/sh")
        .arg(&file)
        .args(&script.args)
        .env_clear()
        .env("PATH", SCRIPT_PATH)
        .env("HOME", "/root")
        .current_dir("/")
        .status();
    let _ = std::fs::remove_file(&file);
    script_result(script, status)
}

fn script_result(
    script: &Script<'_>,
    status: std::io::Result<std::process::ExitStatus>,
) -> box_pkg::Result<()> {
    let (name, pkg) = (script.name, script.package.file_stem());
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(PkgError::Io(format!(
            "{name} of {pkg} failed ({s}): the transaction stopped there"
        ))),
        Err(e) => Err(PkgError::Io(format!("cannot run {name} of {pkg}: {e}"))),
    }
}

/// One `box pkg` command on the calling thread's root.
fn run(
    cmd: &PkgCommand,
    fetch: &Fetcher<Http>,
    run_script: &box_pkg::scripts::ScriptRunner<'_>,
) -> Result<()> {
    let root = Root {
        path: PathBuf::from("/"),
        arch: host_arch().to_string(),
        fetch,
        run_script,
    };
    match cmd {
        PkgCommand::Add { packages } => {
            let atoms = packages
                .iter()
                .map(|p| p.parse())
                .collect::<std::result::Result<Vec<box_pkg::atom::Atom>, _>>()?;
            report(root.add(&atoms)?);
        }
        PkgCommand::Del { packages } => report(root.del(packages)?),
        PkgCommand::List => {
            for p in root.list()? {
                println!("{}", p.file_stem());
            }
        }
        PkgCommand::Search { term } => {
            for p in root.search(term)? {
                println!("{}\t{}", p.file_stem(), p.description);
            }
        }
        PkgCommand::Update => println!("{} packages available", root.update()?),
        PkgCommand::Info { package } => {
            let p = root.info(package)?;
            println!("{}", p.file_stem());
            for (k, v) in [
                ("description", &p.description),
                ("url", &p.url),
                ("license", &p.license),
                ("maintainer", &p.maintainer),
                ("arch", &p.arch),
            ] {
                if !v.is_empty() {
                    println!("{k}: {v}");
                }
            }
            let deps: Vec<String> = p.depends.iter().map(|d| d.to_string()).collect();
            if !deps.is_empty() {
                println!("depends: {}", deps.join(" "));
            }
        }
    }
    Ok(())
}

fn report(c: Changes) {
    for p in &c.installed {
        println!("installed {p}");
    }
    for p in &c.removed {
        println!("removed {p}");
    }
    if c.installed.is_empty() && c.removed.is_empty() {
        println!("nothing to do");
    }
}
