//! config.json: loading and checking a bundle's spec, and the default spec `box-runc spec` writes.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::error::{Context, Error, Result};

/// A bundle's spec with its resolved paths.
#[derive(Debug)]
pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    /// Absolute rootfs directory.
    pub rootfs: PathBuf,
    /// The parsed config.json.
    pub spec: Spec,
}

/// Loads `<bundle>/config.json`, resolves the rootfs and checks what the runtime relies on.
pub fn load_bundle(bundle: &Path) -> Result<Bundle> {
    let dir =
        fs::canonicalize(bundle).ctx(|| format!("cannot open bundle {}", bundle.display()))?;
    let path = dir.join("config.json");
    let data = fs::read(&path).ctx(|| {
        format!(
            "cannot read {} (is {} an OCI bundle? `box-runc spec` writes a default config.json)",
            path.display(),
            dir.display()
        )
    })?;
    let spec: Spec = serde_json::from_slice(&data).map_err(|e| Error::Config {
        what: path.display().to_string(),
        why: e.to_string(),
    })?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::config("root.path is missing"))?;
    let rootfs = dir.join(root.path());
    let rootfs =
        fs::canonicalize(&rootfs).ctx(|| format!("cannot open rootfs {}", rootfs.display()))?;
    if !rootfs.is_dir() {
        return Err(Error::config(format!(
            "root.path {} is not a directory",
            rootfs.display()
        )));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("process is missing"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::config("process.args must name a program"));
    }
    if spec.linux().is_none() {
        return Err(Error::config("linux section is missing"));
    }
    Ok(Bundle { dir, rootfs, spec })
}

/// Parses a process.json (for `exec --process`).
pub fn load_process(path: &Path) -> Result<oci_spec::runtime::Process> {
    let data = fs::read(path).ctx(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| Error::Config {
        what: path.display().to_string(),
        why: e.to_string(),
    })
}

/// The default config.json: a busybox-friendly box with the usual mounts and isolation.
/// `rootless` adds a user namespace mapping the caller to root and binds /sys instead of mounting it.
pub fn default_spec(rootless: bool) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "network"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    let mut linux = json!({
        "namespaces": [],
        "maskedPaths": crate::policy::MASKED_PATHS,
        "readonlyPaths": crate::policy::READONLY_PATHS,
    });
    if rootless {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        // Like runc: rootless boxes share the caller's network (no veth without privilege).
        namespaces.retain(|n| n["type"] != "network");
        namespaces.push(json!({"type": "user"}));
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        // A single mapped gid: devpts cannot be owned by gid 5, and sysfs is bound, not mounted.
        if let Some(opts) = mounts[2]["options"].as_array_mut() {
            opts.retain(|o| o != "gid=5");
        }
        mounts[5] = json!({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
    } else {
        linux["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    }
    linux["namespaces"] = Value::Array(namespaces);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "box",
        "mounts": mounts,
        "linux": linux
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_specs_parse_as_oci_specs() {
        for rootless in [false, true] {
            let v = default_spec(rootless);
            let spec: Spec = serde_json::from_value(v).expect("default spec must parse");
            let ns = spec
                .linux()
                .as_ref()
                .and_then(|l| l.namespaces().clone())
                .unwrap_or_default();
            let has_user = ns
                .iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User);
            assert_eq!(has_user, rootless);
        }
    }

    #[test]
    fn bundle_without_config_says_what_to_do() {
        let dir = std::env::temp_dir().join(format!("box-spec-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let err = load_bundle(&dir).expect_err("no config.json");
        assert!(err.to_string().contains("box-runc spec"), "{err}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
