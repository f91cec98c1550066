//! Shared helpers of the interop suites (`interop_podman.rs`, `interop_containerd.rs`): Debian's podman
//! and containerd drive `box-runc` here, with images the tests build from the host's busybox-static.
//!
//! Everything a test makes lives in its own temp dir (private podman store, private containerd root,
//! state, sockets), its cgroups live in one uniquely named cgroup below the caller's own, and each
//! test ends with [`Leftovers::check`]: no mount below its dir, no process that names its dir, no
//! process or directory left in its cgroup. See docs/interop.md.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::support::{self, Outcome};

/// Deadline for any one peer command (a 2-core machine under load is slow; podman's first call
/// in a fresh store migrates and creates its database).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(90);

const DEFAULT_PEER_VIEW: &str = "/work/shared/tools/peer-view";

/// The wrapper peers run under: `$BOX_PEER_VIEW`, else the workplace default when it exists, else
/// none (peers run directly: right on a host whose cgroups they may use freely).
pub fn peer_view() -> Option<PathBuf> {
    support::peer_view().or_else(|| {
        let p = Path::new(DEFAULT_PEER_VIEW);
        (std::env::var_os("BOX_PEER_VIEW").is_none() && p.exists()).then(|| p.to_path_buf())
    })
}

/// `program` as a peer: under the peer-view wrapper when there is one.
pub fn peer<S: AsRef<OsStr>>(program: S) -> Command {
    match peer_view() {
        Some(w) => {
            let mut c = Command::new(w);
            c.arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Where `name` is on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Gate: true when every tool is installed; otherwise skip (or panic under
/// `BOX_REQUIRE_PRIVILEGED=1`: CI must install podman and containerd).
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    support::skip(
        test,
        &format!(
            "{} not installed (apt-get install podman containerd busybox-static)",
            missing.join(", ")
        ),
    )
}

/// The runtime under test as an absolute path (podman and the shim resolve it themselves).
pub fn box_runc() -> PathBuf {
    let p = support::runtime_bin();
    fs::canonicalize(&p).unwrap_or(p)
}

/// A test's own directory: logs, stores, sockets. Removed (after unmounting anything below it) on
/// drop by [`support::TempDir`].
pub struct Workdir {
    pub dir: support::TempDir,
    n: AtomicUsize,
}

impl Workdir {
    pub fn new(prefix: &str) -> Workdir {
        let dir = support::TempDir::new(prefix);
        fs::create_dir_all(dir.path.join("logs")).expect("mkdir logs");
        Workdir {
            dir,
            n: AtomicUsize::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path.join(rel)
    }

    /// Run a command to completion with stdin from /dev/null and stdout/stderr in files (never pipes:
    /// conmon or a shim may keep an inherited pipe open for ever), under [`PEER_TIMEOUT`].
    pub fn run(&self, cmd: Command) -> Outcome {
        let cmdline = format!("{cmd:?}");
        self.run_for(cmd, PEER_TIMEOUT)
            .unwrap_or_else(|| panic!("timed out after {PEER_TIMEOUT:?}: {cmdline}"))
    }

    /// Like [`Workdir::run`] but never panics (for cleanup, which may run while a test unwinds):
    /// on timeout the command is killed (by pid) and None returned.
    pub fn run_for(&self, mut cmd: Command, limit: Duration) -> Option<Outcome> {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let out_path = self.join(&format!("logs/{n}.out"));
        let err_path = self.join(&format!("logs/{n}.err"));
        let out = fs::File::create(&out_path).expect("create out file");
        let err = fs::File::create(&err_path).expect("create err file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let cmdline = format!("{cmd:?}");
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("warning: cannot spawn {cmdline}: {e}");
                return None;
            }
        };
        let start = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if start.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    eprintln!("warning: timed out after {limit:?}, killing: {cmdline}");
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        };
        Some(Outcome {
            code: support::exit_code(status),
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
            cmdline,
        })
    }
}

/// A busybox-static rootfs (support's, so the same applets as the runtime suites) as a plain tar,
/// entries relative (`./bin/sh`), owned by root.
pub fn busybox_rootfs_tar(work: &Workdir) -> PathBuf {
    let rootfs = work.join("image-rootfs");
    support::make_busybox_rootfs(&rootfs);
    let tar = work.join("rootfs.tar");
    let out = work.run({
        let mut c = Command::new("tar");
        c.arg("--numeric-owner")
            .args(["--owner=0", "--group=0", "--sort=name", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".");
        c
    });
    assert!(out.success(), "building the rootfs tar failed: {out}");
    fs::remove_dir_all(&rootfs).expect("remove image rootfs");
    tar
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run sha256sum (coreutils)");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(hex.len(), 64, "sha256sum printed {text:?}");
    hex
}

/// sha256 (hex) of a string, by coreutils' sha256sum.
pub fn sha256_str(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum (coreutils)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Adds a file to `layout/blobs/sha256/` under its digest; returns (digest, size).
fn add_blob(layout: &Path, file: &Path) -> (String, u64) {
    let hex = sha256_hex(file);
    let size = fs::metadata(file).expect("stat blob").len();
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).expect("mkdir blobs");
    fs::copy(file, dir.join(&hex)).expect("copy blob");
    (format!("sha256:{hex}"), size)
}

/// The OCI architecture name of this machine (`amd64`, `arm64`, ...).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An OCI image layout tar (`oci-layout`, `index.json`, `blobs/sha256/…`: config, manifest and one
/// uncompressed layer holding the busybox rootfs) naming itself `name` (e.g.
/// `localhost/boxtest-busybox:latest`) through the `io.containerd.image.name` annotation, with
/// `Cmd ["/bin/sh"]`. Digests come from coreutils' sha256sum, so no crate is needed.
pub fn busybox_oci_archive(work: &Workdir, name: &str) -> PathBuf {
    let layer = busybox_rootfs_tar(work);
    let layout = work.join("oci-layout");
    fs::create_dir_all(&layout).expect("mkdir layout");
    let (layer_digest, layer_size) = add_blob(&layout, &layer);
    let arch = oci_arch();
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/"
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] }
    });
    let config_file = work.join("image-config.json");
    fs::write(&config_file, config.to_string()).expect("write image config");
    let (config_digest, config_size) = add_blob(&layout, &config_file);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size
        }]
    });
    let manifest_file = work.join("image-manifest.json");
    fs::write(&manifest_file, manifest.to_string()).expect("write manifest");
    let (manifest_digest, manifest_size) = add_blob(&layout, &manifest_file);
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": { "architecture": arch, "os": "linux" },
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag
            }
        }]
    });
    fs::write(layout.join("index.json"), index.to_string()).expect("write index.json");
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let archive = work.join("image-oci.tar");
    let out = work.run({
        let mut c = Command::new("tar");
        c.args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .args(["oci-layout", "index.json", "blobs"]);
        c
    });
    assert!(out.success(), "building the OCI archive failed: {out}");
    for f in [&layer, &config_file, &manifest_file] {
        let _ = fs::remove_file(f);
    }
    fs::remove_dir_all(&layout).expect("remove layout");
    archive
}

/// Hard limits `(nofile, nproc)` to hand podman with `--ulimit`: podman 4.3 asks for 1048576 of
/// each as root, which no runtime (runc, crun, box-runc) can set where CAP_SYS_RESOURCE is not in
/// the bounding set and the caller's hard limit is lower. Lowering is always allowed.
pub fn rlimits_for_peers() -> (u64, u64) {
    let hard = |res| {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit struct that lives on our stack.
        let rc = unsafe { libc::getrlimit(res, &mut r) };
        assert_eq!(rc, 0, "getrlimit");
        #[allow(clippy::unnecessary_cast)] // rlim_t is u32 on some 32-bit targets
        let max = r.rlim_max as u64;
        max
    };
    let nofile = hard(libc::RLIMIT_NOFILE).min(1_048_576);
    // podman lowers its own RLIMIT_NPROC (32768 seen here): stay below anything it may pick.
    let nproc = hard(libc::RLIMIT_NPROC).min(4096);
    (nofile, nproc)
}

// ---- cgroups ----

/// v1 hierarchies (and the v2 mount) visible to us: (controllers as in /proc/self/cgroup, mount point).
fn cgroup_mounts() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for line in support::read_lines("/proc/self/mountinfo") {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post_f = post.split_whitespace();
        let fstype = post_f.next().unwrap_or_default();
        let _source = post_f.next();
        let super_opts = post_f.next().unwrap_or_default();
        let pre_f: Vec<&str> = pre.split_whitespace().collect();
        if pre_f.len() < 5 || pre_f[3] != "/" {
            continue; // a bind of a sub-cgroup, not a hierarchy root
        }
        let mount = PathBuf::from(pre_f[4]);
        match fstype {
            "cgroup" => {
                let ctrls: Vec<&str> = super_opts
                    .split(',')
                    .filter(|o| {
                        !matches!(
                            *o,
                            "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime" | "xattr"
                        ) && !o.starts_with("release_agent")
                            && *o != "clone_children"
                            && *o != "noprefix"
                            && *o != "cpuset_v2_mode"
                    })
                    .collect();
                out.push((ctrls.join(","), mount));
            }
            "cgroup2" => out.push((String::new(), mount)),
            _ => {}
        }
    }
    out
}

/// The caller's cgroup in the hierarchy whose /proc/self/cgroup controller field is `ctrls`.
fn own_cgroup(ctrls: &str) -> Option<String> {
    support::read_lines("/proc/self/cgroup")
        .into_iter()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, c, p) = (f.next()?, f.next()?, f.next()?);
            let mut a: Vec<&str> = c.split(',').collect();
            let mut b: Vec<&str> = ctrls.split(',').collect();
            a.sort_unstable();
            b.sort_unstable();
            (a == b).then(|| p.to_string())
        })
}

/// One uniquely named cgroup (the same relative path in every hierarchy) under the caller's own,
/// that peers put their containers in: podman's `--cgroup-parent`, ctr's `--cgroup <parent>/<id>`.
/// Peers write absolute cgroup paths, counted from each hierarchy's root; that stays inside the
/// caller's subtree only where the caller's cgroup is the same in every hierarchy a peer can see.
/// `None` (peers then run with cgroups disabled) when it is not. Drop removes the directories.
pub struct CgroupScope {
    /// Absolute path, e.g. `/boxtest-ctr-1234-0` or `/ci/job/boxtest-ctr-1234-0`.
    pub path: String,
    hierarchies: Vec<PathBuf>,
}

impl CgroupScope {
    pub fn new(prefix: &str) -> Option<CgroupScope> {
        let mounts = cgroup_mounts();
        let hidden = peer_view().is_some();
        let mut base: Option<String> = None;
        let mut hierarchies = Vec::new();
        for (ctrls, mount) in &mounts {
            // peer-view hides memory and the v2 mount from peers: they cannot write there.
            let peer_visible = !(hidden && (ctrls.is_empty() || ctrls == "memory"));
            if !peer_visible {
                continue;
            }
            let own = own_cgroup(ctrls)?;
            match &base {
                None => base = Some(own.clone()),
                Some(b) if *b == own => {}
                Some(_) => return None,
            }
            hierarchies.push(mount.clone());
        }
        let base = base?;
        let name = support::unique(prefix);
        let path = if base == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", base.trim_end_matches('/'))
        };
        Some(CgroupScope { path, hierarchies })
    }

    /// Directories of this scope in every hierarchy we can see (existing ones only).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let rel = self.path.trim_start_matches('/');
        cgroup_mounts()
            .into_iter()
            .map(|(_, m)| m.join(rel))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// Pids still in the scope (any hierarchy, any depth).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in self.dirs() {
            collect_procs(&d, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Remove the scope's directories depth first; returns the ones that could not be removed.
    pub fn remove(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        for d in self.dirs() {
            rmdir_tree(&d, &mut left);
        }
        left
    }
}

impl Drop for CgroupScope {
    fn drop(&mut self) {
        let left = self.remove();
        if !left.is_empty() {
            eprintln!("warning: cgroup directories left behind: {left:?}");
        }
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    for l in support::read_lines(dir.join("cgroup.procs")) {
        if let Ok(p) = l.trim().parse() {
            out.push(p);
        }
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_procs(&e.path(), out);
            }
        }
    }
}

fn rmdir_tree(dir: &Path, left: &mut Vec<PathBuf>) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path(), left);
            }
        }
    }
    // A freshly emptied cgroup can be busy for a moment while its last task is reaped.
    for i in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if i < 49 => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => left.push(dir.to_path_buf()),
        }
    }
}

// ---- leftovers ----

/// Processes whose command line or cwd names `needle` (a test's unique temp dir), except us.
pub fn processes_naming(needle: &Path) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let needle = needle.to_string_lossy().into_owned();
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || !support::alive(pid) {
            continue;
        }
        let cmd = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let cwd = fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if cmd.contains(&needle) || cwd.starts_with(&needle) {
            out.push((pid, cmd));
        }
    }
    out
}

/// Mount points at or below `dir` in our mount namespace.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    support::read_lines("/proc/self/mountinfo")
        .into_iter()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m == &d || m.starts_with(&format!("{d}/")))
        .collect()
}

/// What a test left behind, found after its own cleanup ran. Anything found is killed (by pid:
/// these processes name the test's unique dir or sit in its unique cgroup, so they are the test's)
/// or removed, and the test fails saying what leaked.
pub struct Leftovers;

impl Leftovers {
    pub fn check(work: &Workdir, cgroup: Option<&CgroupScope>) {
        let mut problems = Vec::new();
        // Give exiting conmons / shims a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let procs = processes_naming(work.path());
            let cg = cgroup.map(|c| c.pids()).unwrap_or_default();
            if (procs.is_empty() && cg.is_empty()) || std::time::Instant::now() > deadline {
                for (pid, cmd) in &procs {
                    problems.push(format!("process {pid} still running: {cmd}"));
                    kill_pid(*pid);
                }
                for pid in &cg {
                    problems.push(format!("process {pid} still in the test's cgroup"));
                    kill_pid(*pid);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for m in mounts_below(work.path()) {
            problems.push(format!("mount left: {m}"));
        }
        if let Some(c) = cgroup {
            let left = c.remove();
            for d in left {
                problems.push(format!(
                    "cgroup directory cannot be removed: {}",
                    d.display()
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "the test left things behind:\n  {}",
            problems.join("\n  ")
        );
    }
}

/// SIGKILL one pid (only ever a pid this test started, see [`Leftovers`]).
pub fn kill_pid(pid: i32) {
    // SAFETY: kill(2) with a positive pid signals exactly that process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// SIGTERM one pid.
pub fn term_pid(pid: i32) {
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

/// Directories a peer creates outside any dir we can give it (podman's /run/containers/networks,
/// the runc shim's socket dir /run/containerd/s): remembered when they did not exist before the
/// first test of this binary that uses the peer, removed (only when empty) when the last one ends.
pub struct SharedDirs {
    dirs: &'static [&'static str],
    state: std::sync::Mutex<(usize, Option<CreatedDirs>)>,
}

impl SharedDirs {
    pub const fn new(dirs: &'static [&'static str]) -> SharedDirs {
        SharedDirs {
            dirs,
            state: std::sync::Mutex::new((0, None)),
        }
    }

    /// A test starts using the peer.
    pub fn enter(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0 == 0 {
            st.1 = Some(CreatedDirs::note(self.dirs));
        }
        st.0 += 1;
    }

    /// A test is done with the peer (call once per [`SharedDirs::enter`]).
    pub fn leave(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = st.0.saturating_sub(1);
        if st.0 == 0 {
            if let Some(c) = st.1.take() {
                c.remove_if_empty();
            }
        }
    }
}

/// Directories that did not exist when noted; removed at the end only if empty.
pub struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// Remember which of `dirs` (listed parents first) do not exist yet.
    pub fn note(dirs: &[&str]) -> CreatedDirs {
        CreatedDirs(
            dirs.iter()
                .map(PathBuf::from)
                .filter(|p| !p.exists())
                .collect(),
        )
    }

    /// Remove (rmdir: only when empty) the ones that appeared, deepest first.
    pub fn remove_if_empty(&self) {
        for p in self.0.iter().rev() {
            let _ = fs::remove_dir(p);
        }
    }
}
