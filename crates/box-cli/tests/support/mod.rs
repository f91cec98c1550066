//! Test harness for the box-runc integration suite: busybox bundles, per-test state roots, running the
//! runtime as root or as the rootless test user, and cleanup of everything a test made (Drop guards).
//!
//! runc's CLI and behaviour are the spec: point `BOX_RUNC_BIN` at another runtime (e.g. a script that
//! runs `peer-view runc "$@"`) to run the same tests against it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod apk_repo;

/// Name of the unprivileged user that rootless tests run the runtime as.
pub const TEST_USER: &str = "boxtest";
/// How long any single runtime command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The runtime under test: `$BOX_RUNC_BIN`, else the workspace's `box-runc`.
pub fn runtime_bin() -> PathBuf {
    match std::env::var_os("BOX_RUNC_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_box-runc")),
    }
}

/// True when the suite runs against a runtime other than the workspace's box-runc.
pub fn is_peer_runtime() -> bool {
    std::env::var_os("BOX_RUNC_BIN").is_some_and(|p| !p.is_empty())
}

/// The peer-view wrapper (see docs/testing.md) used to run peer runtimes, if configured.
pub fn peer_view() -> Option<PathBuf> {
    std::env::var_os("BOX_PEER_VIEW")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn privileged_required() -> bool {
    std::env::var("BOX_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

/// Gate for tests that need root. Returns false (the test returns early, saying why) when not root,
/// but panics when `BOX_REQUIRE_PRIVILEGED=1`: CI must never skip a privileged test.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if privileged_required() {
        panic!("{test}: needs root, and BOX_REQUIRE_PRIVILEGED=1 forbids skipping it");
    }
    eprintln!("SKIPPED {test}: needs root (run as root, or set BOX_REQUIRE_PRIVILEGED=1 to make this fatal)");
    false
}

/// Skip (or, under `BOX_REQUIRE_PRIVILEGED=1`, fail) a test for a reason other than root.
pub fn skip(test: &str, why: &str) -> bool {
    if privileged_required() {
        panic!("{test}: cannot run: {why} (BOX_REQUIRE_PRIVILEGED=1 forbids skipping)");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// A fresh short unique name: `<prefix>-<pid>-<n>` (short because unix socket paths are limited).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut p: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    p.truncate(24);
    format!("{p}-{}-{n}", std::process::id())
}

/// Run a host command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "host command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rootless test user: its uid/gid, and its subordinate id range start.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub subuid_start: u32,
    pub subgid_start: u32,
}

/// Ensure the user `boxtest` exists with 65536 subordinate uids and gids (needs root).
pub fn test_user() -> TestUser {
    static USER: OnceLock<TestUser> = OnceLock::new();
    USER.get_or_init(|| {
        assert!(is_root(), "creating the rootless test user needs root");
        // Several test binaries may run at once: serialise user creation with a lock file.
        sh(&format!(
            "exec 9>/tmp/.box-test-user.lock; flock 9; \
             id -u {u} >/dev/null 2>&1 || useradd -m -s /bin/sh {u}; \
             for f in /etc/subuid /etc/subgid; do touch $f; \
               grep -q '^{u}:' $f || echo \"{u}:$(( 200000 + $(id -u {u}) * 65536 )):65536\" >> $f; done",
            u = TEST_USER
        ));
        let uid: u32 = sh(&format!("id -u {TEST_USER}")).trim().parse().expect("uid");
        let gid: u32 = sh(&format!("id -g {TEST_USER}")).trim().parse().expect("gid");
        let sub = |file: &str| -> u32 {
            let text = fs::read_to_string(file).expect("read subid file");
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let (who, start, count) = (f.next()?, f.next()?, f.next()?);
                    let count: u32 = count.trim().parse().ok()?;
                    ((who == TEST_USER || who == uid.to_string()) && count >= 65536)
                        .then(|| start.parse().ok())
                        .flatten()
                })
                .next()
                .unwrap_or_else(|| panic!("{file} has no 65536-id range for {TEST_USER}"))
        };
        TestUser {
            name: TEST_USER.into(),
            uid,
            gid,
            subuid_start: sub("/etc/subuid"),
            subgid_start: sub("/etc/subgid"),
        }
    })
    .clone()
}

/// Who runs the runtime.
#[derive(Clone, Debug)]
pub enum Mode {
    /// As root (the test process itself).
    Root,
    /// As the rootless test user via setpriv (when the suite runs as root), or as the current
    /// unprivileged user itself.
    Rootless(Option<TestUser>),
}

/// A temporary directory removed (with everything under it) on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Never follow a mount the runtime might have left: unmount anything below us first.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(
                "grep -F \" $1/\" /proc/self/mountinfo | awk '{print $5}' | sort -r | \
                 while read -r m; do umount -l \"$m\"; done",
            )
            .arg("sh")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// The outcome of one runtime command.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub cmdline: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panic with the full output unless the command exited 0.
    pub fn ok(self) -> Outcome {
        assert_eq!(self.code, 0, "command failed: {self}");
        self
    }

    /// Panic unless the command failed.
    pub fn fails(self) -> Outcome {
        assert_ne!(self.code, 0, "command unexpectedly succeeded: {self}");
        self
    }

    /// stdout and stderr together, lowercased, for matching error messages.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr).to_lowercase()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline, self.code, self.stdout, self.stderr
        )
    }
}

/// Exit code as a shell reports it: the code, or 128+signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Wait for a child with a deadline; on timeout kill it (by pid) and panic.
pub fn wait_deadline(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {limit:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Poll `f` until it returns Some, or panic after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Set `value` at a JSON pointer (`/linux/resources/pids`), creating intermediate objects.
pub fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let obj = cur.as_object_mut().expect("object");
        if i == parts.len() - 1 {
            obj.insert((*part).to_string(), value);
            return;
        }
        cur = obj.entry((*part).to_string()).or_insert_with(|| json!({}));
    }
}

/// An OCI bundle in its own temp dir (busybox rootfs + config.json from `<runtime> spec`), with its own
/// `--root` state dir. Dropping it force-deletes every container it created and removes the dir.
pub struct Bundle {
    /// config.json as JSON; written before every runtime command.
    pub config: Value,
    pub mode: Mode,
    pub dir: TempDir,
    pub bin: PathBuf,
    ids: std::cell::RefCell<Vec<String>>,
    name: String,
    n: AtomicUsize,
}

impl Bundle {
    /// A bundle run as root.
    pub fn new(name: &str) -> Bundle {
        Bundle::with_mode(name, Mode::Root)
    }

    /// A rootless bundle (`spec --rootless`), run as the test user when the suite runs as root.
    pub fn rootless(name: &str) -> Bundle {
        let user = is_root().then(test_user);
        Bundle::with_mode(name, Mode::Rootless(user))
    }

    fn with_mode(name: &str, mode: Mode) -> Bundle {
        let dir = TempDir::new(name);
        let bundle = dir.path.join("bundle");
        for d in ["bundle/rootfs", "state", "logs", "xdg", "bin"] {
            fs::create_dir_all(dir.path.join(d)).expect("mkdir");
        }
        make_busybox_rootfs(&bundle.join("rootfs"));
        let mut bin = runtime_bin();
        if let Mode::Rootless(Some(user)) = &mode {
            // The test user must be able to execute the runtime and own the bundle and state.
            if !is_peer_runtime() {
                let copy = dir.path.join("bin/box-runc");
                fs::copy(&bin, &copy).expect("copy runtime binary");
                fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
                bin = copy;
            }
            sh(&format!(
                "chown -R {}:{} '{}' && chmod 0755 '{}' && chmod 0700 '{}/xdg'",
                user.uid,
                user.gid,
                dir.path.display(),
                dir.path.display(),
                dir.path.display()
            ));
        }
        let mut b = Bundle {
            config: Value::Null,
            mode,
            dir,
            bin,
            ids: Default::default(),
            name: name.to_string(),
            n: AtomicUsize::new(0),
        };
        let rootless = matches!(b.mode, Mode::Rootless(_));
        let spec_args: &[&str] = if rootless {
            &["spec", "--rootless"]
        } else {
            &["spec"]
        };
        b.raw(spec_args).ok();
        let text = fs::read_to_string(b.config_path()).expect("spec wrote no config.json");
        b.config = serde_json::from_str(&text).expect("spec wrote invalid JSON");
        // Predictable defaults for tests; each test states what it needs beyond these.
        b.set("/process/terminal", json!(false));
        b.set("/root/readonly", json!(false));
        b.set("/process/args", json!(["true"]));
        b
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.dir.path.join("bundle")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle_path().join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.bundle_path().join("config.json")
    }

    pub fn state_root(&self) -> PathBuf {
        self.dir.path.join("state")
    }

    /// A scratch path in the test dir (not in the bundle).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path.join(name)
    }

    pub fn is_rootless(&self) -> bool {
        matches!(self.mode, Mode::Rootless(_))
    }

    /// A fresh container id, remembered for cleanup.
    pub fn id(&self) -> String {
        let id = unique(&self.name);
        self.ids.borrow_mut().push(id.clone());
        id
    }

    /// Make a path in the test dir owned by the user that runs the runtime.
    pub fn give(&self, path: &Path) {
        if let Mode::Rootless(Some(u)) = &self.mode {
            sh(&format!(
                "chown -R {}:{} '{}'",
                u.uid,
                u.gid,
                path.display()
            ));
        }
    }

    // ---- config.json editing ----

    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        set_pointer(&mut self.config, pointer, value);
        self
    }

    pub fn get(&self, pointer: &str) -> Option<&Value> {
        self.config.pointer(pointer)
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    /// `sh -c SCRIPT` inside the box.
    pub fn script(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    pub fn env(&mut self, kv: &str) -> &mut Self {
        let env = self
            .config
            .pointer_mut("/process/env")
            .and_then(Value::as_array_mut)
            .expect("process.env");
        env.push(json!(kv));
        self
    }

    pub fn add_mount(&mut self, mount: Value) -> &mut Self {
        self.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(mount);
        self
    }

    /// Add a namespace of `kind` (optionally joining `path`), replacing one of the same kind.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(kind);
        let mut ns = json!({ "type": kind });
        if let Some(p) = path {
            ns["path"] = json!(p);
        }
        self.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(ns);
        self
    }

    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(list) = self
            .config
            .pointer_mut("/linux/namespaces")
            .and_then(Value::as_array_mut)
        {
            list.retain(|n| n["type"] != kind);
        }
        self
    }

    pub fn has_namespace(&self, kind: &str) -> bool {
        self.get("/linux/namespaces")
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|n| n["type"] == kind))
    }

    /// Give the box all five capability sets of `caps` (ambient needs inheritable too).
    pub fn caps(&mut self, caps: &[&str]) -> &mut Self {
        let c = json!(caps);
        self.set(
            "/process/capabilities",
            json!({ "bounding": c, "effective": c, "permitted": c, "inheritable": c, "ambient": c }),
        )
    }

    pub fn write_config(&self) {
        if self.config.is_null() {
            return; // before `spec` ran
        }
        let text = serde_json::to_string_pretty(&self.config).expect("serialise config");
        let path = self.config_path();
        fs::write(&path, text).expect("write config.json");
        self.give(&path);
    }

    /// Write a file into the rootfs (mode 0755 when `exec`).
    pub fn rootfs_file(&self, rel: &str, content: &str, exec: bool) -> PathBuf {
        let path = self.rootfs().join(rel.trim_start_matches('/'));
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, content).expect("write rootfs file");
        let mode = if exec { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        self.give(&path);
        path
    }

    // ---- running the runtime ----

    /// A runtime command with `--root <state>` and the right user, cwd = bundle dir. Writes config.json.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        self.write_config();
        let mut cmd = match &self.mode {
            Mode::Root | Mode::Rootless(None) => Command::new(&self.bin),
            Mode::Rootless(Some(u)) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string()])
                    .arg("--init-groups")
                    .env_clear()
                    .env("HOME", format!("/home/{}", u.name))
                    .env("USER", &u.name)
                    .env("LOGNAME", &u.name)
                    .env(
                        "PATH",
                        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    )
                    .env("XDG_RUNTIME_DIR", self.dir.path.join("xdg"))
                    .arg(&self.bin);
                c
            }
        };
        if let Mode::Rootless(None) = self.mode {
            cmd.env("XDG_RUNTIME_DIR", self.dir.path.join("xdg"));
        }
        cmd.arg("--root").arg(self.state_root());
        cmd.args(args);
        cmd.current_dir(self.bundle_path());
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Run a prepared command with stdout/stderr going to files (never pipes: a detached box would
    /// hold a pipe open forever), wait for it with a deadline, and collect its output.
    pub fn finish(&self, mut cmd: Command) -> Outcome {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let out_path = self.dir.path.join(format!("logs/{n}.out"));
        let err_path = self.dir.path.join(format!("logs/{n}.err"));
        let out = fs::File::create(&out_path).expect("create out file");
        let err = fs::File::create(&err_path).expect("create err file");
        self.give(&out_path);
        self.give(&err_path);
        cmd.stdout(out).stderr(err);
        let cmdline = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
        let status = wait_deadline(&mut child, COMMAND_TIMEOUT, &cmdline);
        Outcome {
            code: exit_code(status),
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
            cmdline,
        }
    }

    /// Run the runtime with these arguments.
    pub fn raw<S: AsRef<OsStr>>(&self, args: &[S]) -> Outcome {
        self.finish(self.command(args))
    }

    /// `run --bundle B ID` (foreground): the box's output and exit code.
    pub fn run(&self, id: &str) -> Outcome {
        let b = self.bundle_path();
        self.raw(&[
            OsStr::new("run"),
            "--bundle".as_ref(),
            b.as_os_str(),
            id.as_ref(),
        ])
    }

    /// Start `run --bundle B ID` in the background (output discarded); the caller waits on it.
    pub fn spawn_run(&self, id: &str) -> Child {
        let mut cmd = self.command(&["run", "--bundle"]);
        cmd.arg(self.bundle_path()).arg(id);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.spawn().expect("spawn runtime run")
    }

    /// A fresh id, `run` the current config, and delete the stopped box.
    pub fn run_once(&self) -> Outcome {
        let id = self.id();
        let out = self.run(&id);
        let _ = self.raw(&["delete", "--force", &id]);
        out
    }

    /// `create --bundle B ID`; the box's own stdout/stderr go to the returned outcome's files.
    pub fn create(&self, id: &str) -> Outcome {
        let b = self.bundle_path();
        self.raw(&[
            OsStr::new("create"),
            "--bundle".as_ref(),
            b.as_os_str(),
            id.as_ref(),
        ])
    }

    pub fn start(&self, id: &str) -> Outcome {
        self.raw(&["start", id])
    }

    /// `state ID` parsed, or None when the runtime does not know the box.
    pub fn state(&self, id: &str) -> Option<Value> {
        let out = self.raw(&["state", id]);
        out.success().then(|| out.json())
    }

    pub fn status(&self, id: &str) -> Option<String> {
        self.state(id)
            .and_then(|s| s["status"].as_str().map(str::to_string))
    }

    pub fn pid(&self, id: &str) -> i32 {
        let st = self.state(id).expect("state of a known box");
        st["pid"].as_i64().expect("state has pid") as i32
    }

    pub fn wait_status(&self, id: &str, want: &str) {
        wait_for(
            Duration::from_secs(20),
            &format!("{id} to be {want}"),
            || (self.status(id).as_deref() == Some(want)).then_some(()),
        );
    }

    pub fn kill(&self, id: &str, signal: &str) -> Outcome {
        self.raw(&["kill", id, signal])
    }

    pub fn delete(&self, id: &str) -> Outcome {
        self.raw(&["delete", id])
    }

    /// Create and start a box running `sleep 1000` (or the configured args) and wait until running.
    pub fn start_sleeper(&mut self) -> String {
        if self.get("/process/args") == Some(&json!(["true"])) {
            self.args(&["sleep", "1000"]);
        }
        let id = self.id();
        self.create(&id).ok();
        self.start(&id).ok();
        self.wait_status(&id, "running");
        id
    }

    /// `exec ID ARGS...` in the foreground.
    pub fn exec(&self, id: &str, args: &[&str]) -> Outcome {
        let mut all = vec!["exec", id];
        all.extend_from_slice(args);
        self.raw(&all)
    }

    /// The ids `list --format json` shows.
    pub fn listed_ids(&self) -> Vec<String> {
        let out = self.raw(&["list", "--format", "json"]).ok();
        let v: Value = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.finish_quiet(&["delete", "--force", id]);
        }
    }
}

impl Bundle {
    fn finish_quiet(&self, args: &[&str]) -> Option<i32> {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().ok()?;
        let st = wait_deadline(&mut child, COMMAND_TIMEOUT, "cleanup delete --force");
        Some(exit_code(st))
    }
}

/// Busybox applets the tests use, symlinked into rootfs/bin.
const APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "cat", "ls", "sleep", "id", "ps", "mount", "hostname", "touch",
    "mkdir", "readlink", "grep", "wc", "head", "tail", "tr", "seq", "env", "pwd", "stat", "test",
    "[", "tty", "kill", "dd", "umask", "awk", "sed", "sort", "rm", "ln", "chmod", "nproc", "ip",
    "sysctl", "uname", "mknod", "chroot", "printf", "find", "cut", "date", "whoami", "stty", "cp",
    "basename", "dirname", "xargs", "timeout", "yes", "nslookup", "nc", "ifconfig", "free", "top",
];

/// Build a minimal busybox rootfs: /bin/busybox (a copy: never a link to the host's), applet links,
/// /etc/passwd and /etc/group with root and a uid 1000 user, and the usual empty dirs.
pub fn make_busybox_rootfs(rootfs: &Path) {
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "etc",
        "root",
        "home/user",
        "mnt",
        "run",
        "var",
    ] {
        fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs dir");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    let bb = rootfs.join("bin/busybox");
    fs::copy("/bin/busybox", &bb).expect("copy /bin/busybox (install busybox-static)");
    fs::set_permissions(&bb, fs::Permissions::from_mode(0o755)).expect("chmod busybox");
    for a in APPLETS {
        symlink("busybox", rootfs.join("bin").join(a)).expect("applet symlink");
    }
    let mut passwd = fs::File::create(rootfs.join("etc/passwd")).expect("passwd");
    writeln!(
        passwd,
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false"
    )
    .expect("write passwd");
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nextra:x:2000:\nnogroup:x:65534:\n",
    )
    .expect("write group");
    fs::write(rootfs.join("etc/hosts"), "127.0.0.1 localhost\n").expect("write hosts");
}

/// Lines of a host file, or empty.
pub fn read_lines(path: impl AsRef<Path>) -> Vec<String> {
    fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The cgroup path of `pid` for a v1 controller (or "" for the v2 line).
pub fn cgroup_of(pid: &str, controller: &str) -> Option<String> {
    read_lines(format!("/proc/{pid}/cgroup"))
        .into_iter()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
}

/// True while a process with this pid exists (not a zombie).
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// A script for `box exec -d BOX sh -c SCRIPT`: after a second, it appends to /tmp/x its own
/// stdin, stdout and stderr (what they point at) and `own-session` when it leads its session,
/// then `hi`.
pub const DETACHED_EXEC_SCRIPT: &str =
    "sleep 1; readlink /proc/$$/fd/0 >> /tmp/x; for f in 1 2; do \
     case $(readlink /proc/$$/fd/$f) in pipe:*) echo pipe >> /tmp/x;; *) echo other >> /tmp/x;; esac; \
     done; [ \"$(cut -d' ' -f6 /proc/$$/stat)\" = $$ ] && echo own-session >> /tmp/x; echo hi >> /tmp/x";

/// /tmp/x once [`DETACHED_EXEC_SCRIPT`] is done in a properly detached process: /dev/null for
/// its stdin, pipes to its session supervisor for output (never the caller's: the caller's
/// `box exec -d` returned long before), a session of its own.
pub const DETACHED_EXEC_LEAVES: &str = "/dev/null\npipe\npipe\nown-session\nhi\n";

/// A `box` data dir with a short path (attach sockets live below it, and unix socket paths
/// are short), removing every box and the data when dropped. Field 0 is the path.
pub struct BoxData(pub PathBuf);

impl BoxData {
    /// A fresh data dir `/tmp/bx<tag><pid>-<n>`.
    pub fn new(tag: &str) -> BoxData {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = PathBuf::from(format!(
            "/tmp/bx{tag}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        BoxData(p)
    }

    /// A fresh data dir whose boxes read the engine settings `settings` (TOML, through
    /// `$BOX_CONFIG`): network tests give each data dir a bridge and subnet of its own.
    pub fn with_settings(tag: &str, settings: &str) -> BoxData {
        let d = BoxData::new(tag);
        fs::create_dir_all(&d.0).expect("data dir");
        fs::write(d.settings_path(), settings).expect("settings");
        d
    }

    fn settings_path(&self) -> PathBuf {
        self.0.join("settings.toml")
    }

    /// `box --root <data> ARGS…`, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_box"));
        c.arg("--root").arg(&self.0).args(args);
        let settings = self.settings_path();
        if settings.exists() {
            c.env("BOX_CONFIG", settings);
        }
        c
    }

    /// Runs `box ARGS…` in directory `dir` (where box.toml and .box/ are looked for), no stdin.
    pub fn boxc_in(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        self.cmd(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("run box")
    }

    /// [`BoxData::boxc_in`], asserting success; returns stdout.
    pub fn ok_in(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.boxc_in(dir, args);
        assert!(
            out.status.success(),
            "box {args:?} in {} failed: {}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `box ARGS…` with no stdin.
    pub fn boxc(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run box")
    }

    /// Runs `box ARGS…`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.boxc(args);
        assert!(
            out.status.success(),
            "box {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for BoxData {
    fn drop(&mut self) {
        // A data dir with a bridge of its own: everything, networks too, by system reset.
        if self.settings_path().exists() {
            let _ = self.boxc(&["system", "reset", "--force"]);
        }
        // Remove every box (kills supervisors by their recorded pid), then the data.
        let ids = self.boxc(&["ps", "-a", "-q"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.boxc(&["rm", "-f", id]);
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The link of this test process's namespace of `kind` (`net`, `ipc`, …), e.g. `net:[4026531840]`.
pub fn own_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .expect("own namespace")
        .display()
        .to_string()
}

/// The interface names of a `/proc/net/dev` text (two header lines, then `NAME: counters`).
pub fn net_dev_interfaces(text: &str) -> Vec<&str> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect()
}

/// `GET /` from `addr` (HOST:PORT) over plain TCP, retried for up to ~10 s while nothing
/// answers; the response's body (none when no server answered).
pub fn http_get(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            if s.write_all(b"GET / HTTP/1.0\r\nHost: box\r\n\r\n").is_ok() {
                let mut reply = String::new();
                if s.read_to_string(&mut reply).is_ok() && !reply.is_empty() {
                    return reply
                        .split_once("\r\n\r\n")
                        .map(|(_, body)| body.to_string());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// A shell snippet for a box: connects to 127.0.0.1:`port` until a server answers (up to ~20 s,
/// for loaded machines) and prints the first answer. The client's input stays open a moment so
/// that busybox nc reads the reply before it hangs up.
pub fn loopback_fetch(port: u16) -> String {
    format!(
        "i=0; while [ $i -lt 50 ]; do out=$(sleep 0.3 | nc 127.0.0.1 {port} 2>/dev/null); \
         if [ -n \"$out\" ]; then echo \"$out\"; break; fi; i=$((i+1)); sleep 0.1; done"
    )
}
