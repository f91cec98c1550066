//! Interop: Debian's podman (with conmon) runs boxes through `box-runc` (`podman --runtime`).
//!
//! Each test has a private podman store (vfs driver, its own root, runroot and tmpdir, events in a
//! file, cgroupfs manager), imports an image it builds from busybox-static, and leaves nothing
//! behind (containers, images, mounts, conmon processes, cgroups). Peers run under the peer-view
//! wrapper when there is one (see docs/interop.md).

mod interop_support;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use interop_support::{CgroupScope, Leftovers, Workdir};
use support::Outcome;

const IMAGE: &str = "localhost/boxtest-busybox:latest";

/// podman (as root) creates its network run dir even with `--network none`.
static PODMAN_DIRS: interop_support::SharedDirs =
    interop_support::SharedDirs::new(&["/run/containers", "/run/containers/networks"]);

/// A private podman store with the busybox image imported, and a cgroup scope for its containers.
struct Podman {
    // Field order is drop order: the store is cleaned (Drop below) before the dirs go.
    cgroup: Option<CgroupScope>,
    work: Workdir,
    runtime: PathBuf,
    cleaned: bool,
    /// Rootless: podman runs as this user (inside peer-view, through setpriv).
    user: Option<support::TestUser>,
}

impl Podman {
    fn new(test: &str) -> Option<Podman> {
        Podman::with_user(test, false)
    }

    fn with_user(test: &str, rootless: bool) -> Option<Podman> {
        if !support::require_root(test)
            || !interop_support::require_tools(test, &["podman", "conmon", "setpriv"])
        {
            return None;
        }
        PODMAN_DIRS.enter();
        let work = Workdir::new(test);
        for d in ["root", "runroot", "tmp", "xdg", "home", "bin"] {
            std::fs::create_dir_all(work.join(d)).expect("mkdir");
        }
        let user = rootless.then(support::test_user);
        let mut runtime = interop_support::box_runc();
        if let Some(u) = &user {
            // The test user must be able to run the runtime and own the whole store.
            if !support::is_peer_runtime() {
                let copy = work.join("bin/box-runc");
                std::fs::copy(&runtime, &copy).expect("copy runtime binary");
                runtime = copy;
            }
            support::sh(&format!(
                "chown -R {}:{} '{d}' && chmod 0755 '{d}' '{d}/bin' && chmod 0700 '{d}/xdg'",
                u.uid,
                u.gid,
                d = work.path().display()
            ));
        }
        let p = Podman {
            // Rootless podman on cgroup v1 makes no cgroups: nothing to scope.
            cgroup: if rootless {
                None
            } else {
                CgroupScope::new("boxtest-podman")
            },
            work,
            runtime,
            cleaned: false,
            user,
        };
        let tar = interop_support::busybox_rootfs_tar(&p.work);
        if let Some(u) = &p.user {
            support::sh(&format!("chown {}:{} '{}'", u.uid, u.gid, tar.display()));
        }
        let out = p.podman(&[
            "import".as_ref(),
            "--change".as_ref(),
            r#"CMD ["/bin/sh"]"#.as_ref(),
            tar.as_os_str(),
            IMAGE.as_ref(),
        ]);
        assert!(out.success(), "podman import failed: {out}");
        std::fs::remove_file(&tar).expect("remove rootfs tar");
        Some(p)
    }

    /// `podman` with the private store and box-runc as its runtime.
    fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = match &self.user {
            None => interop_support::peer("podman"),
            Some(u) => {
                // peer-view needs root: drop to the test user inside it.
                let mut c = interop_support::peer("setpriv");
                c.args(["--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string()])
                    .args(["--init-groups", "env", "-i"])
                    .arg(format!("HOME={}", self.work.join("home").display()))
                    .arg(format!("USER={}", u.name))
                    .arg(format!("LOGNAME={}", u.name))
                    .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                    .arg(format!(
                        "XDG_RUNTIME_DIR={}",
                        self.work.join("xdg").display()
                    ))
                    .arg(format!(
                        "XDG_CONFIG_HOME={}",
                        self.work.join("home/.config").display()
                    ))
                    .arg(format!(
                        "XDG_DATA_HOME={}",
                        self.work.join("home/.local/share").display()
                    ))
                    .arg(format!("TMPDIR={}", self.work.join("tmp").display()))
                    .arg("podman");
                c
            }
        };
        c.arg("--root")
            .arg(self.work.join("root"))
            .arg("--runroot")
            .arg(self.work.join("runroot"))
            .arg("--tmpdir")
            .arg(self.work.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--log-level",
                "warning",
            ])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args)
            // conmon makes its console socket (run -t) in $TMPDIR: keep it in our dir.
            .env("TMPDIR", self.work.join("tmp"));
        c
    }

    fn podman<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Outcome {
        self.work.run(self.command(args))
    }

    /// `podman run` with the options every test needs: no network, our cgroup scope (or none),
    /// rlimits the caller can grant, then `args`.
    fn run(&self, args: &[&str]) -> Outcome {
        let (nofile, nproc) = interop_support::rlimits_for_peers();
        let mut all: Vec<String> = vec![
            "run".into(),
            "--network".into(),
            "none".into(),
            "--ulimit".into(),
            format!("nofile={nofile}:{nofile}"),
            "--ulimit".into(),
            format!("nproc={nproc}:{nproc}"),
        ];
        match &self.cgroup {
            Some(c) => {
                all.push("--cgroup-parent".into());
                all.push(c.path.clone());
            }
            // Rootless podman on cgroup v1 already makes none (and --cgroups=disabled is only
            // for runtimes podman lists in runtime_supports_nocgroups: crun, krun).
            None if self.user.is_some() => {}
            None => all.push("--cgroups=disabled".into()),
        }
        all.extend(args.iter().map(|s| s.to_string()));
        self.podman(&all)
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        let out = self.podman(&["inspect", "--format", format, name]);
        assert!(out.success(), "podman inspect failed: {out}");
        out.stdout.trim().to_string()
    }

    /// Remove every container and image of the store, then check nothing is left anywhere.
    fn finish(mut self) {
        self.cleanup();
        Leftovers::check(&self.work, self.cgroup.as_ref());
    }

    fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        // Never panics: this also runs from Drop while a failed test unwinds.
        for args in [
            &["rm", "--all", "--force", "--time", "0"][..],
            &["rmi", "--all", "--force"][..],
        ] {
            match self
                .work
                .run_for(self.command(args), Duration::from_secs(60))
            {
                Some(out) if out.success() => {}
                Some(out) => eprintln!("warning: cleanup failed: {out}"),
                None => eprintln!("warning: cleanup timed out: podman {args:?}"),
            }
        }
        // Rootless podman keeps its user namespace alive with a pause process (catatonit -P).
        let pause = self.work.join("tmp/pause.pid");
        if let Some(pid) = std::fs::read_to_string(&pause)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            if pid > 1 && support::alive(pid) {
                interop_support::kill_pid(pid);
                let start = Instant::now();
                while support::alive(pid) && start.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // On a failed assertion: still remove containers and images, then kill (by pid) anything
        // that names our dir (conmon), so the temp dir can go.
        self.cleanup();
        for (pid, _) in interop_support::processes_naming(self.work.path()) {
            interop_support::kill_pid(pid);
        }
        if let Some(c) = &self.cgroup {
            for pid in c.pids() {
                interop_support::kill_pid(pid);
            }
        }
        PODMAN_DIRS.leave();
    }
}

fn stderr_lines_without_warnings(out: &Outcome) -> String {
    out.stderr
        .lines()
        .filter(|l| !l.contains("level=warning") && !l.contains("WARN["))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn podman_run_exit_codes_and_output() {
    let Some(p) = Podman::new("podman_run_exit_codes_and_output") else {
        return;
    };
    let out = p.run(&["--rm", IMAGE, "true"]);
    assert_eq!(out.code, 0, "podman run true: {out}");

    let out = p.run(&["--rm", IMAGE, "sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "the box's exit code must pass through: {out}");

    let out = p.run(&["--rm", IMAGE, "echo", "hello"]);
    assert_eq!(out.code, 0, "podman run echo: {out}");
    assert_eq!(out.stdout, "hello\n", "stdout must pass through: {out}");

    let out = p.run(&["--rm", IMAGE, "sh", "-c", "echo to-stderr >&2"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("to-stderr"),
        "stderr must pass through: {out}"
    );
    let out = p.run(&["--rm", IMAGE]);
    assert_eq!(out.code, 0, "the image's CMD (/bin/sh, stdin empty): {out}");
    assert!(stderr_lines_without_warnings(&out).is_empty(), "{out}");

    // The containers are gone (--rm), through box-runc's delete.
    let out = p.podman(&["ps", "--all", "--quiet"]);
    assert!(out.success() && out.stdout.trim().is_empty(), "{out}");
    p.finish();
}

#[test]
fn podman_detached_exec_stop_rm() {
    let Some(p) = Podman::new("podman_detached_exec_stop_rm") else {
        return;
    };
    let name = support::unique("boxtest-d");
    // A PID 1 that exits 7 on SIGTERM (a shell without a trap would ignore it as PID 1).
    let out = p.run(&[
        "-d",
        "--name",
        &name,
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 7' TERM; echo started; while :; do sleep 1 & wait $!; done",
    ]);
    assert_eq!(out.code, 0, "podman run -d: {out}");
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "podman run -d prints the id: {out}");

    // podman really used box-runc: it says so, and box-runc's own state knows the container, with
    // the pid podman reports.
    let runtime = p.inspect(&name, "{{.OCIRuntime}}");
    assert_eq!(PathBuf::from(&runtime), p.runtime, "OCIRuntime");
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "running");
    let pid: i32 = p.inspect(&name, "{{.State.Pid}}").parse().expect("pid");
    let st = p.work.run({
        // podman 4.3 passes no --root: box-runc uses its default state dir.
        let mut c = Command::new(&p.runtime);
        c.args(["state", &id]);
        c
    });
    assert!(st.success(), "box-runc state of podman's container: {st}");
    let state = st.json();
    assert_eq!(state["status"], "running", "{st}");
    assert_eq!(state["pid"].as_i64(), Some(pid as i64), "{st}");
    if let Some(c) = &p.cgroup {
        let cg = support::cgroup_of(&pid.to_string(), "pids").unwrap_or_default();
        assert!(
            cg.starts_with(&format!("{}/", c.path)),
            "the box's pids cgroup {cg:?} must be under --cgroup-parent {}",
            c.path
        );
    }

    let out = p.podman(&["exec", &name, "sh", "-c", "echo in-exec; exit 4"]);
    assert_eq!(out.code, 4, "podman exec exit code: {out}");
    assert_eq!(out.stdout, "in-exec\n", "{out}");
    let out = p.podman(&["exec", &name, "cat", "/proc/1/cmdline"]);
    assert!(
        out.success() && out.stdout.starts_with("sh\0-c\0"),
        "exec joins the box's pid namespace: {out}"
    );

    let logs = p.podman(&["logs", &name]);
    assert!(logs.stdout.contains("started"), "podman logs: {logs}");

    let t = Instant::now();
    let out = p.podman(&["stop", "--time", "30", &name]);
    assert!(out.success(), "podman stop: {out}");
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "SIGTERM (box-runc kill) should have stopped it, not the SIGKILL fallback"
    );
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "exited");
    assert_eq!(
        p.inspect(&name, "{{.State.ExitCode}}"),
        "7",
        "trap exit code"
    );

    let out = p.podman(&["rm", &name]);
    assert!(out.success(), "podman rm: {out}");
    let st = p.work.run({
        let mut c = Command::new(&p.runtime);
        c.args(["state", &id]);
        c
    });
    assert!(!st.success(), "box-runc must have deleted the box: {st}");
    p.finish();
}

#[test]
fn podman_run_tty() {
    let Some(p) = Podman::new("podman_run_tty") else {
        return;
    };
    // -t: conmon passes --console-socket to box-runc create and receives the pty master.
    let out = p.run(&[
        "--rm",
        "-t",
        IMAGE,
        "sh",
        "-c",
        "tty; test -t 0 && test -t 1 && echo is-a-tty; echo x > /dev/null && echo devnull-ok; exit 5",
    ]);
    assert_eq!(out.code, 5, "podman run -t exit code: {out}");
    let text = out.stdout.replace('\r', "");
    assert!(text.contains("/dev/pts/"), "tty names a pty: {out}");
    assert!(text.contains("is-a-tty"), "{out}");
    assert!(text.contains("devnull-ok"), "{out}");
    // The pty turns \n into \r\n: proof the output went through the terminal.
    assert!(out.stdout.contains("\r\n"), "{out}");

    // Detached with a terminal: output is logged through conmon.
    let name = support::unique("boxtest-t");
    let out = p.run(&[
        "-d",
        "-t",
        "--name",
        &name,
        IMAGE,
        "sh",
        "-c",
        "tty; sleep 1000",
    ]);
    assert_eq!(out.code, 0, "podman run -d -t: {out}");
    support::wait_for(
        Duration::from_secs(30),
        "podman logs of the tty box",
        || {
            let l = p.podman(&["logs", &name]);
            l.stdout.contains("/dev/pts/").then_some(())
        },
    );
    let out = p.podman(&["exec", "-t", &name, "tty"]);
    assert!(
        out.success() && out.stdout.contains("/dev/pts/"),
        "podman exec -t: {out}"
    );
    let out = p.podman(&["rm", "--force", "--time", "0", &name]);
    assert!(out.success(), "podman rm -f: {out}");
    p.finish();
}

#[test]
fn podman_rootless_run() {
    let Some(p) = Podman::with_user("podman_rootless_run", true) else {
        return;
    };
    let out = p.run(&["--rm", IMAGE, "true"]);
    assert_eq!(out.code, 0, "rootless podman run true: {out}");
    let out = p.run(&["--rm", IMAGE, "sh", "-c", "echo hello; exit 3"]);
    assert_eq!(out.code, 3, "exit code: {out}");
    assert_eq!(out.stdout, "hello\n", "{out}");
    let out = p.run(&["--rm", IMAGE, "id", "-u"]);
    assert_eq!(out.stdout, "0\n", "root in the box: {out}");

    let name = support::unique("boxtest-rl");
    let out = p.run(&["-d", "--name", &name, IMAGE, "sleep", "1000"]);
    assert_eq!(out.code, 0, "rootless podman run -d: {out}");
    let out = p.podman(&["exec", &name, "sh", "-c", "echo in-exec; exit 4"]);
    assert_eq!(out.code, 4, "rootless podman exec: {out}");
    assert_eq!(out.stdout, "in-exec\n", "{out}");
    let out = p.podman(&["rm", "--force", "--time", "0", &name]);
    assert!(out.success(), "podman rm -f: {out}");
    p.finish();
}
