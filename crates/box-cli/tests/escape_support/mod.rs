//! Helpers for the escape suite (tests/escape.rs): the security profiles a box is tried under, host
//! marker files the box must never reach, a shell preamble that records each attempt, and parsing
//! of those records.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::support::{self, Bundle};

/// Docker's 14 default capabilities (Box's own default set).
pub const DOCKER_CAPS: &[&str] = box_runtime::policy::DEFAULT_CAPABILITIES;

/// Who runs the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Root,
    Rootless,
}

/// The privileges the box's process gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `box-runc spec` as written: 3 capabilities, no_new_privs, no seccomp.
    Spec,
    /// Docker's 14 default capabilities, no seccomp (to tell capabilities and seccomp apart).
    Docker,
    /// Docker's 14 default capabilities and Box's default seccomp profile for them.
    DockerSeccomp,
}

/// One configuration an attempt is made under.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub who: Who,
    pub profile: Profile,
}

impl Setup {
    pub fn label(&self) -> String {
        let who = match self.who {
            Who::Root => "rootful",
            Who::Rootless => "rootless",
        };
        let p = match self.profile {
            Profile::Spec => "spec-default(3 caps, nnp)",
            Profile::Docker => "docker-caps(no seccomp)",
            Profile::DockerSeccomp => "docker-caps+box-seccomp",
        };
        format!("{who}/{p}")
    }

    pub fn has_seccomp(&self) -> bool {
        self.profile == Profile::DockerSeccomp
    }

    pub fn docker_caps(&self) -> bool {
        self.profile != Profile::Spec
    }

    pub fn rootless(&self) -> bool {
        self.who == Who::Rootless
    }
}

/// The setups a test runs under: the rootful ones only as root (`require_root` says why not, and
/// fails under BOX_REQUIRE_PRIVILEGED=1), the rootless ones always.
pub fn setups(test: &str, profiles: &[Profile], rootless: bool) -> Vec<Setup> {
    let mut v = Vec::new();
    if support::require_root(test) {
        v.extend(profiles.iter().map(|&profile| Setup {
            who: Who::Root,
            profile,
        }));
    }
    if rootless {
        v.extend(profiles.iter().map(|&profile| Setup {
            who: Who::Rootless,
            profile,
        }));
    }
    v
}

/// Box's default seccomp profile for these capabilities, as config.json's `linux.seccomp`.
pub fn box_seccomp(caps: &[&str]) -> serde_json::Value {
    let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    serde_json::to_value(box_runtime::policy::default_seccomp(&caps)).expect("serialise seccomp")
}

/// A busybox bundle configured for `setup`, with a file `/box-root-id` at the root of the rootfs so
/// an attempt can tell when it reached the box's own root (and no further).
pub fn bundle(name: &str, setup: &Setup) -> Bundle {
    let mut b = match setup.who {
        Who::Root => Bundle::new(name),
        Who::Rootless => Bundle::rootless(name),
    };
    if setup.docker_caps() {
        b.caps(DOCKER_CAPS);
    }
    if setup.has_seccomp() {
        b.set("/linux/seccomp", box_seccomp(DOCKER_CAPS));
    }
    b.rootfs_file("/box-root-id", "box-root\n", false);
    // busybox applets the harness does not link.
    for a in ["unshare", "nsenter", "chroot", "mknod", "umount"] {
        let l = b.rootfs().join("bin").join(a);
        if fs::symlink_metadata(&l).is_err() {
            std::os::unix::fs::symlink("busybox", &l).expect("applet link");
        }
    }
    b
}

fn nonce() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", t ^ (u128::from(std::process::id()) << 64))
}

/// A file (or directory) on the host, outside every rootfs, with a random name and secret content;
/// removed on drop.
pub struct HostMarker {
    pub path: PathBuf,
    pub secret: String,
}

impl HostMarker {
    /// A regular file in the host's /tmp with `mode`.
    pub fn file(tag: &str, mode: u32) -> HostMarker {
        let path = PathBuf::from(format!("/tmp/{}-{}", support::unique(tag), nonce()));
        let secret = format!("HOST-SECRET-{}", nonce());
        fs::write(&path, format!("{secret}\n")).expect("write host marker");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod marker");
        HostMarker { path, secret }
    }

    /// A directory in the host's /tmp holding one file `keep` with the secret.
    pub fn dir(tag: &str) -> HostMarker {
        let path = PathBuf::from(format!("/tmp/{}-{}", support::unique(tag), nonce()));
        fs::create_dir_all(&path).expect("mkdir host marker dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        let secret = format!("HOST-SECRET-{}", nonce());
        fs::write(path.join("keep"), format!("{secret}\n")).expect("write keep");
        HostMarker { path, secret }
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// (mode, uid, gid, content) — what an escape would change.
    pub fn fingerprint(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(&self.path).expect("host marker vanished");
        let content = if m.is_dir() {
            let mut names: Vec<String> = fs::read_dir(&self.path)
                .expect("read marker dir")
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            names.sort();
            format!(
                "{names:?} keep={:?}",
                fs::read_to_string(self.path.join("keep")).ok()
            )
        } else {
            fs::read_to_string(&self.path).unwrap_or_default()
        };
        format!(
            "mode={:o} uid={} gid={} {content}",
            m.mode(),
            m.uid(),
            m.gid()
        )
    }

    /// Host mounts at or below the marker.
    pub fn host_mounts(&self) -> Vec<String> {
        support::read_lines("/proc/self/mountinfo")
            .into_iter()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|mp| Path::new(mp).starts_with(&self.path))
            })
            .collect()
    }
}

impl Drop for HostMarker {
    fn drop(&mut self) {
        let _ = if self.path.is_dir() {
            fs::remove_dir_all(&self.path)
        } else {
            fs::remove_file(&self.path)
        };
    }
}

/// Shell functions for box scripts: `try NAME CMD...` runs CMD and prints one record line
/// `@NAME rc=N out=<stdout and stderr on one line>`.
pub const PREAMBLE: &str = r#"
try() { n=$1; shift; o=$("$@" 2>&1); r=$?; echo "@$n rc=$r out=$(echo "$o" | tr '\n' ' ')"; }
"#;

/// One recorded attempt.
#[derive(Debug, Clone)]
pub struct Try {
    pub rc: i32,
    pub out: String,
}

/// The `@NAME rc=N out=...` records of a box's stdout.
pub fn records(stdout: &str) -> BTreeMap<String, Try> {
    stdout
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix('@')?;
            let (name, rest) = l.split_once(" rc=")?;
            let (rc, out) = rest.split_once(" out=").unwrap_or((rest, ""));
            Some((
                name.to_string(),
                Try {
                    rc: rc.trim().parse().ok()?,
                    out: out.trim().to_string(),
                },
            ))
        })
        .collect()
}

/// The suite's verdict line for one attempt.
pub fn blocked(setup: &Setup, attempt: &str, defence: &str, evidence: &str) {
    println!(
        "ESCAPE BLOCKED [{}] {attempt}: {defence} (evidence: {})",
        setup.label(),
        evidence.trim()
    );
}

/// The record `name`, panicking with the whole box output when it is missing.
pub fn rec<'a>(recs: &'a BTreeMap<String, Try>, name: &str, all: &str) -> &'a Try {
    recs.get(name)
        .unwrap_or_else(|| panic!("attempt {name} left no record; box output:\n{all}"))
}

/// Assert an attempt failed, with one of `errors` in its output, and report the defence.
pub fn expect_blocked(
    setup: &Setup,
    recs: &BTreeMap<String, Try>,
    name: &str,
    errors: &[&str],
    defence: &str,
    all: &str,
) {
    let t = rec(recs, name, all);
    assert_ne!(
        t.rc,
        0,
        "ESCAPE SUCCEEDED [{}] {name}: the attempt exited 0: {}\nbox output:\n{all}",
        setup.label(),
        t.out
    );
    assert!(
        errors.iter().any(|e| t.out.contains(e)),
        "[{}] {name} failed, but not with the expected defence {errors:?} ({defence}): {}\nbox output:\n{all}",
        setup.label(),
        t.out
    );
    blocked(setup, name, defence, &t.out);
}

/// Copy the dynamic loader and libraries `bin` needs into `rootfs` at the same paths, so the box can
/// run that binary (used to let the box exec the runtime itself through `#!/proc/self/exe`).
pub fn copy_libs_for(bin: &Path, rootfs: &Path) {
    let out = support::sh(&format!("ldd '{}'", bin.display()));
    for line in out.lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        let Some(p) = path else { continue };
        let dest = rootfs.join(p.strip_prefix("/").expect("absolute"));
        fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir lib dir");
        fs::copy(&p, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", p.display()));
    }
}

/// sha256 of a file, by the host's sha256sum.
pub fn sha256(path: &Path) -> String {
    support::sh(&format!("sha256sum '{}'", path.display()))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A mount for config.json.
pub fn tmpfs_mount(dest: &str) -> serde_json::Value {
    json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]})
}
