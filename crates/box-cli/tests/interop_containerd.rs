//! Interop: Debian's containerd drives `box-runc` through its runc shim (`io.containerd.runc.v2`,
//! with the shim's `BinaryName` set by `ctr run --runc-binary`).
//!
//! Each test starts a private containerd (root, state, sockets in its temp dir; CRI and the other
//! plugins it does not need disabled), imports an OCI image layout the test builds from
//! busybox-static, runs tasks with `ctr`, then removes them, stops the daemon (by pid) and checks
//! that nothing is left (shims, mounts, cgroups). See docs/interop.md.

mod interop_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use interop_support::{CgroupScope, Leftovers, Workdir};
use support::Outcome;

const IMAGE: &str = "localhost/boxtest-busybox:latest";

/// The runc shim makes its socket dir here whatever containerd's config says (containerd 1.6);
/// ctr's default fifo dir (we pass --fifo-dir, this is for safety).
static CONTAINERD_DIRS: interop_support::SharedDirs = interop_support::SharedDirs::new(&[
    "/run/containerd",
    "/run/containerd/s",
    "/run/containerd/fifo",
]);

struct Containerd {
    // Drop order: the daemon is stopped (Drop below) before the cgroup scope and the dirs go.
    cgroup: Option<CgroupScope>,
    work: Workdir,
    daemon: Option<Child>,
    namespace: String,
    runtime: PathBuf,
    cleaned: bool,
    /// Every container id used, to find the shims' sockets in /run/containerd/s.
    ids: std::cell::RefCell<Vec<String>>,
}

impl Containerd {
    fn new(test: &str) -> Option<Containerd> {
        if !support::require_root(test)
            || !interop_support::require_tools(
                test,
                &["containerd", "ctr", "containerd-shim-runc-v2"],
            )
        {
            return None;
        }
        CONTAINERD_DIRS.enter();
        let mut c = Containerd {
            cgroup: CgroupScope::new("boxtest-ctr"),
            work: Workdir::new(test),
            daemon: None,
            namespace: support::unique("boxtest"),
            runtime: interop_support::box_runc(),
            cleaned: false,
            ids: Default::default(),
        };
        for d in ["root", "state", "runc", "fifo"] {
            std::fs::create_dir_all(c.work.join(d)).expect("mkdir");
        }
        let t = c.work.path().display().to_string();
        let config = format!(
            r#"version = 2
root = "{t}/root"
state = "{t}/state"
# Only what ctr run needs: no CRI, no /opt/containerd (opt plugin), no snapshotters but native
# and overlayfs.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{t}/c.sock"

[ttrpc]
  address = "{t}/c.ttrpc.sock"

[debug]
  address = ""

[metrics]
  address = ""
"#
        );
        let config_path = c.work.join("config.toml");
        std::fs::write(&config_path, config).expect("write config.toml");
        let log = std::fs::File::create(c.work.join("containerd.log")).expect("log file");
        let mut cmd = interop_support::peer("containerd");
        cmd.arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        c.daemon = Some(cmd.spawn().expect("spawn containerd"));
        support::wait_for(Duration::from_secs(60), "containerd to answer", || {
            if let Some(st) = c
                .daemon
                .as_mut()
                .and_then(|d| d.try_wait().expect("try_wait"))
            {
                panic!(
                    "containerd exited ({st}) at start:\n{}",
                    std::fs::read_to_string(c.work.join("containerd.log")).unwrap_or_default()
                );
            }
            let v = c.work.run(c.ctr(&["version"]));
            v.success().then_some(())
        });
        let archive = interop_support::busybox_oci_archive(&c.work, IMAGE);
        let out = c.ctr_run(&[
            "images".as_ref(),
            "import".as_ref(),
            "--snapshotter".as_ref(),
            "native".as_ref(),
            archive.as_os_str(),
        ]);
        assert!(out.success(), "ctr images import failed: {out}");
        std::fs::remove_file(&archive).expect("remove archive");
        let out = c.ctr_run(&["images", "ls", "--quiet"]);
        assert!(
            out.stdout.lines().any(|l| l == IMAGE),
            "image imported: {out}"
        );
        Some(c)
    }

    fn socket(&self) -> PathBuf {
        self.work.join("c.sock")
    }

    /// ctr is only a client: it runs directly (the daemon and its shims are under peer-view).
    fn ctr<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        c
    }

    fn ctr_run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Outcome {
        self.work.run(self.ctr(args))
    }

    /// box-runc's state dir for this namespace (`ctr run --runc-root`).
    fn runc_root(&self) -> PathBuf {
        self.work.join("runc")
    }

    /// `ctr run` arguments: the runc shim with box-runc as its binary, our state and fifo dirs,
    /// the cgroup in our scope (or none).
    fn run_args(&self, id: &str, opts: &[&str], args: &[&str]) -> Vec<String> {
        self.ids.borrow_mut().push(id.to_string());
        let mut all: Vec<String> = vec!["run".into()];
        all.extend(opts.iter().map(|s| s.to_string()));
        all.extend([
            "--snapshotter".into(),
            "native".into(),
            "--runtime".into(),
            "io.containerd.runc.v2".into(),
            "--runc-binary".into(),
            self.runtime.display().to_string(),
            "--runc-root".into(),
            self.runc_root().display().to_string(),
            "--fifo-dir".into(),
            self.work.join("fifo").display().to_string(),
            "--cgroup".into(),
            match &self.cgroup {
                Some(c) => format!("{}/{id}", c.path),
                None => String::new(),
            },
            IMAGE.into(),
            id.into(),
        ]);
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    fn run(&self, id: &str, opts: &[&str], args: &[&str]) -> Outcome {
        self.ctr_run(&self.run_args(id, opts, args))
    }

    /// `STATUS` of a task as `ctr task ls` shows it.
    fn task_status(&self, id: &str) -> Option<(i32, String)> {
        let out = self.ctr_run(&["task", "ls"]);
        out.stdout.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0] == id).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
        })
    }

    fn wait_task(&self, id: &str, want: &str) {
        support::wait_for(
            Duration::from_secs(60),
            &format!("task {id} {want}"),
            || (self.task_status(id).map(|s| s.1).as_deref() == Some(want)).then_some(()),
        );
    }

    fn box_runc_state(&self, id: &str) -> Outcome {
        let mut c = Command::new(&self.runtime);
        c.arg("--root")
            .arg(self.runc_root().join(&self.namespace))
            .args(["state", id]);
        self.work.run(c)
    }

    /// The runc shim's socket for `id`: /run/containerd/s/<sha256(address/namespace/id)>
    /// (containerd 1.6 `shim.SocketAddress`), outside anything we can configure.
    fn shim_socket(&self, id: &str) -> PathBuf {
        let key = format!("{}/{}/{id}", self.socket().display(), self.namespace);
        Path::new("/run/containerd/s").join(interop_support::sha256_str(&key))
    }

    fn finish(mut self) {
        self.cleanup();
        let left: Vec<PathBuf> = self
            .ids
            .borrow()
            .iter()
            .map(|id| self.shim_socket(id))
            .filter(|p| p.exists())
            .collect();
        Leftovers::check(&self.work, self.cgroup.as_ref());
        assert!(left.is_empty(), "shim sockets left behind: {left:?}");
    }

    /// Kill and delete every task, remove containers and images, stop the daemon (by pid).
    fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        if self.daemon.is_some() {
            // Never panics: this also runs from Drop while a failed test unwinds.
            let q = |args: &[&str]| {
                self.work
                    .run_for(self.ctr(args), Duration::from_secs(30))
                    .unwrap_or(Outcome {
                        code: -1,
                        stdout: String::new(),
                        stderr: "timed out".into(),
                        cmdline: format!("ctr {args:?}"),
                    })
            };
            let tasks = q(&["task", "ls", "--quiet"]);
            for id in tasks.stdout.split_whitespace() {
                q(&["task", "kill", "--all", "--signal", "SIGKILL", id]);
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_secs(30)
                    && q(&["task", "ls"]).stdout.lines().any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.len() >= 3 && f[0] == id && f[2] != "STOPPED"
                    })
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                q(&["task", "delete", "--force", id]);
            }
            let cs = q(&["containers", "ls", "--quiet"]);
            for id in cs.stdout.split_whitespace() {
                let out = q(&["containers", "rm", id]);
                if !out.success() {
                    eprintln!("warning: {out}");
                }
            }
            let out = q(&["images", "rm", IMAGE]);
            if !out.success() {
                eprintln!("warning: {out}");
            }
        }
        if let Some(mut d) = self.daemon.take() {
            interop_support::term_pid(d.id() as i32);
            let start = std::time::Instant::now();
            loop {
                if d.try_wait().ok().flatten().is_some() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    eprintln!("warning: containerd ignored SIGTERM for 30 s: SIGKILL");
                    let _ = d.kill();
                    let _ = d.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup();
        for (pid, _) in interop_support::processes_naming(self.work.path()) {
            interop_support::kill_pid(pid);
        }
        if let Some(c) = &self.cgroup {
            for pid in c.pids() {
                interop_support::kill_pid(pid);
            }
        }
        // A shim killed above cannot remove its socket.
        for id in self.ids.borrow().iter() {
            let _ = std::fs::remove_file(self.shim_socket(id));
        }
        CONTAINERD_DIRS.leave();
    }
}

/// The shim ran our runtime with our --runc-root: the id has a state dir there.
fn assert_runtime_state_dir(dir: &Path) {
    assert!(
        dir.is_dir(),
        "no runtime state dir at {} (did the shim run the runtime with --runc-root?)",
        dir.display()
    );
}

#[test]
fn containerd_run_exit_codes_and_output() {
    let Some(c) = Containerd::new("containerd_run_exit_codes_and_output") else {
        return;
    };
    let out = c.run("t-true", &["--rm"], &["true"]);
    assert_eq!(out.code, 0, "ctr run true: {out}");

    let out = c.run("t-exit3", &["--rm"], &["sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "the box's exit code must pass through: {out}");

    let out = c.run("t-echo", &["--rm"], &["echo", "hello"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "hello\n", "stdout must pass through: {out}");

    let out = c.run(
        "t-stderr",
        &["--rm"],
        &["sh", "-c", "echo to-stderr >&2; exit 0"],
    );
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("to-stderr"), "stderr: {out}");

    // Environment and cwd from the image config reach the box.
    let out = c.run("t-env", &["--rm"], &["sh", "-c", "echo $PATH; pwd"]);
    assert_eq!(
        out.stdout, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/\n",
        "{out}"
    );

    let out = c.ctr_run(&["containers", "ls", "--quiet"]);
    assert!(out.stdout.trim().is_empty(), "--rm removed them: {out}");
    c.finish();
}

#[test]
fn containerd_detached_exec_pause_kill_delete() {
    let Some(c) = Containerd::new("containerd_detached_exec_pause_kill_delete") else {
        return;
    };
    let id = "t-detached";
    let out = c.run(
        id,
        &["-d"],
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; while :; do sleep 1 & wait $!; done",
        ],
    );
    assert_eq!(out.code, 0, "ctr run -d: {out}");
    c.wait_task(id, "RUNNING");
    let (pid, _) = c.task_status(id).expect("task listed");

    // The shim really ran box-runc: box-runc's state under --runc-root has the task's pid.
    assert_runtime_state_dir(&c.runc_root().join(&c.namespace).join(id));
    let st = c.box_runc_state(id);
    assert!(st.success(), "box-runc state: {st}");
    assert_eq!(st.json()["pid"].as_i64(), Some(pid as i64), "{st}");
    assert_eq!(st.json()["status"], "running", "{st}");
    if let Some(cg) = &c.cgroup {
        let have = support::cgroup_of(&pid.to_string(), "pids").unwrap_or_default();
        assert_eq!(
            have,
            format!("{}/{id}", cg.path),
            "cgroup from ctr --cgroup"
        );
    }

    let fifo = c.work.join("fifo").display().to_string();
    let out = c.ctr_run(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "e1",
        id,
        "sh",
        "-c",
        "echo from-exec; exit 4",
    ]);
    assert_eq!(out.code, 4, "ctr task exec exit code: {out}");
    assert_eq!(out.stdout, "from-exec\n", "{out}");

    // ps goes through `box-runc ps --format json`.
    let out = c.ctr_run(&["task", "ps", id]);
    assert!(out.success(), "ctr task ps: {out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "ctr task ps lists the init {pid}: {out}"
    );

    // pause / resume go through box-runc pause / resume (freezer).
    let out = c.ctr_run(&["task", "pause", id]);
    assert!(out.success(), "ctr task pause: {out}");
    c.wait_task(id, "PAUSED");
    let out = c.ctr_run(&["task", "resume", id]);
    assert!(out.success(), "ctr task resume: {out}");
    c.wait_task(id, "RUNNING");

    let out = c.ctr_run(&["task", "kill", id]);
    assert!(out.success(), "ctr task kill: {out}");
    c.wait_task(id, "STOPPED");
    let out = c.ctr_run(&["task", "delete", id]);
    assert!(out.success(), "ctr task delete: {out}");
    assert!(
        out.stderr.contains("exit code 7"),
        "the trap's exit status reaches containerd: {out}"
    );
    assert!(c.task_status(id).is_none(), "task gone");
    assert!(
        !c.box_runc_state(id).success(),
        "box-runc deleted its state"
    );

    let out = c.ctr_run(&["containers", "rm", id]);
    assert!(out.success(), "ctr containers rm: {out}");
    c.finish();
}

#[test]
fn containerd_run_tty() {
    let Some(c) = Containerd::new("containerd_run_tty") else {
        return;
    };
    if interop_support::which("script").is_none() {
        support::skip("containerd_run_tty", "script (bsdutils) not installed");
        return;
    }
    // ctr run -t needs a terminal on its own stdin: script(1) gives it one. The shim passes
    // --console-socket to box-runc create.
    let args = c.run_args(
        "t-tty",
        &["--rm", "-t"],
        &[
            "sh",
            "-c",
            "tty; test -t 0 && test -t 1 && echo is-a-tty; echo x > /dev/null && echo devnull-ok; exit 5",
        ],
    );
    let mut line = format!(
        "exec ctr --address '{}' --namespace '{}'",
        c.socket().display(),
        c.namespace
    );
    for a in &args {
        line.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
    }
    let mut cmd = Command::new("script");
    cmd.args(["--quiet", "--return", "--command", &line, "/dev/null"]);
    let out = c.work.run(cmd);
    assert_eq!(out.code, 5, "ctr run -t exit code: {out}");
    let text = out.stdout.replace('\r', "");
    assert!(text.contains("/dev/pts/"), "tty names a pty: {out}");
    assert!(text.contains("is-a-tty"), "{out}");
    assert!(text.contains("devnull-ok"), "{out}");
    c.finish();
}
