//! Helpers for the engine's integration tests: self-cleaning temp dirs, an engine over one,
//! a busybox-static rootfs, root checks.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use box_engine::engine::Engine;
use box_engine::paths::Paths;

/// A directory removed (with everything in it, mounts under it detached first) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "box-engine-test-{tag}-{}-{nanos}-{n}",
            std::process::id()
        ));
        fs::create_dir_all(&p).expect("mkdir temp");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        for m in mounts_under(&self.0) {
            let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Mount points at or under `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found
}

/// An engine over a fresh temp data dir (run dir inside it).
pub fn engine(tag: &str) -> (TempDir, Engine) {
    let dir = TempDir::new(tag);
    let engine = Engine::open(Paths::with_data_dir(dir.path().join("data"))).expect("open engine");
    (dir, engine)
}

/// Whether the test runs as root; panics when it is not but BOX_REQUIRE_PRIVILEGED=1.
pub fn is_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root() && !box_runtime::idmap::in_user_namespace();
    if !root {
        if std::env::var("BOX_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{test} needs root and BOX_REQUIRE_PRIVILEGED=1");
        }
        eprintln!("skipping {test}: needs root");
    }
    root
}

/// A busybox-static rootfs under `dir`: /bin/busybox and links for the applets tests use,
/// /etc/passwd and /etc/group, and the dirs the default mounts need.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "out"] {
        fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "echo", "cat", "id", "hostname", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("link");
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
    )
    .expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\nbob:x:1000:\n").expect("group");
    for f in ["hostname", "hosts", "resolv.conf"] {
        fs::write(root.join("etc").join(f), "").expect("etc file");
    }
    root
}
