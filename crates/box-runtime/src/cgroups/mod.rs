//! Cgroups of a box: v1 or v2 (chosen at run time), nested under the caller's own cgroup.
//!
//! Placement: in each hierarchy the box's cgroup is `<caller's cgroup>/box/<id>` by default,
//! `<caller's cgroup>/<path>` for a relative `cgroups_path`, and `<mount>/<path>` for an absolute
//! one. Processes are never moved out of the caller's subtree and no control file outside it is
//! written (for an absolute path elsewhere: nothing above its deepest existing ancestor).
//!
//! Cleanup: [`Cgroup::destroy`] removes the box's directory (and any cgroups below it), then the
//! intermediate directories this box created (like `box/`) only while they are empty: they are
//! shared with sibling boxes.

mod devices_bpf;
mod files;
mod paths;
mod self_attach;
mod stats;
mod v1;
mod v2;

#[cfg(test)]
mod privileged_tests;

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use self_attach::SelfAttach;
pub use stats::{
    BlkioEntry, BlkioStats, CgroupStats, CpuStats, CpuUsage, HugetlbStats, MemoryEntry,
    MemoryStats, PidsStats, Throttling,
};

/// Errors from cgroup setup and control. Each says what failed, why, and what to try.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The caller's cgroups could not be found or understood.
    #[error("cannot find the caller's cgroups: {0}")]
    Discover(String),
    /// A cgroups path or box id that cannot be used.
    #[error("invalid cgroups path {path}: {why}")]
    InvalidPath {
        /// The path or id.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },
    /// A control file could not be read.
    #[error("cannot read cgroup file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A control file could not be written.
    #[error("cannot {action}: writing {value:?} to {path} failed: {source}{hint}")]
    Write {
        /// What we were doing (e.g. "set memory limit").
        action: String,
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The OS error.
        source: std::io::Error,
        /// What to try.
        hint: &'static str,
    },
    /// A cgroup directory could not be created.
    #[error("cannot create cgroup {path}: {source}{hint}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// What to try.
        hint: &'static str,
    },
    /// A cgroup directory could not be removed.
    #[error("cannot remove cgroup {path}: {source}{hint}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// What to try.
        hint: &'static str,
    },
    /// A resource was asked for whose controller is not there or not writable.
    #[error("cannot {action}: cgroup {version} {controller} controller {why} (try --cgroup-parent pointing to a cgroup where it is delegated, or drop that limit)")]
    ControllerUnavailable {
        /// What we were doing.
        action: String,
        /// "v1" or "v2".
        version: &'static str,
        /// The controller.
        controller: String,
        /// Where and why (e.g. "not writable at …", "not enabled in …/cgroup.controllers").
        why: String,
    },
    /// A resource value that cannot be applied.
    #[error("cannot set {what}: {why}")]
    InvalidResource {
        /// The resource.
        what: String,
        /// Why.
        why: String,
    },
    /// The operation needs something this host or backend lacks.
    #[error("cannot {action}: {why}")]
    Unsupported {
        /// What we were doing.
        action: String,
        /// Why not.
        why: String,
    },
    /// The box has no cgroup (rootless without a writable hierarchy).
    #[error("cannot {action}: the box has no cgroup (rootless without delegated cgroups; run as root or with a delegated --cgroup-parent)")]
    NotEnabled {
        /// What we were doing.
        action: String,
    },
    /// Waiting for the kernel timed out.
    #[error("cannot {action}: {path} did not reach {state} within {secs} s (a process may be stuck in uninterruptible sleep; retry)")]
    Timeout {
        /// What we were doing.
        action: String,
        /// The file polled.
        path: PathBuf,
        /// The state waited for.
        state: String,
        /// How long we waited.
        secs: u64,
    },
    /// A `bpf(2)` call failed.
    #[error("cannot {action}: bpf(2) failed: {source} (needs CAP_SYS_ADMIN/CAP_BPF and a kernel with CONFIG_CGROUP_BPF){}", if log.is_empty() { String::new() } else { format!("; verifier said: {log}") })]
    Bpf {
        /// What we were doing.
        action: String,
        /// The OS error.
        source: std::io::Error,
        /// The verifier log, if any.
        log: String,
    },
    /// A signal could not be delivered.
    #[error("cannot send {signal} to process {pid}: {source}")]
    Signal {
        /// The process.
        pid: i32,
        /// The signal.
        signal: Signal,
        /// The OS error.
        source: nix::Error,
    },
}

/// Which cgroup version a box uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    /// Legacy or hybrid hierarchies (one directory per hierarchy).
    V1,
    /// The unified hierarchy (one directory).
    V2,
}

/// What the host says about cgroups: the caller's membership, the mounts, and whether
/// `/sys/fs/cgroup` is itself cgroup2. [`CgroupHost::detect`] reads it; tests build it by hand
/// (pointing the mounts at a temporary tree).
#[derive(Debug, Clone)]
pub struct CgroupHost {
    /// Text of `/proc/self/cgroup`.
    pub proc_self_cgroup: String,
    /// Text of `/proc/self/mountinfo`.
    pub mountinfo: String,
    /// Whether the host is pure cgroup v2.
    pub pure_v2: bool,
}

impl CgroupHost {
    /// Reads the running process's view of cgroups.
    pub fn detect() -> Result<CgroupHost, CgroupError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|e| {
                CgroupError::Discover(format!("cannot read {p}: {e} (is /proc mounted?)"))
            })
        };
        Ok(CgroupHost {
            proc_self_cgroup: read("/proc/self/cgroup")?,
            mountinfo: read("/proc/self/mountinfo")?,
            pure_v2: files::is_cgroup2(Path::new("/sys/fs/cgroup")),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
enum Backend {
    V1(v1::V1Cgroup),
    V2(v2::V2Cgroup),
}

/// The cgroup (v1: one directory per hierarchy; v2: one directory) of one box.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cgroup {
    id: String,
    #[serde(flatten)]
    backend: Backend,
}

impl Cgroup {
    /// Decides where the box's cgroup lives (absolute `cgroups_path` under the hierarchy roots,
    /// relative under the caller's own cgroup, none: `<own cgroup>/box/<id>`); touches nothing.
    pub fn for_box(cgroups_path: Option<&Path>, id: &str) -> Result<Cgroup, CgroupError> {
        Self::for_box_on(&CgroupHost::detect()?, cgroups_path, id)
    }

    /// [`Cgroup::for_box`] for a given view of the host.
    pub fn for_box_on(
        host: &CgroupHost,
        cgroups_path: Option<&Path>,
        id: &str,
    ) -> Result<Cgroup, CgroupError> {
        let entries = paths::parse_proc_cgroup(&host.proc_self_cgroup)?;
        let mounts = paths::parse_mountinfo(&host.mountinfo);
        let backend = if host.pure_v2 {
            let h = paths::resolve_hierarchies(&entries, &mounts, paths::MountKind::V2);
            let Some(h) = h.into_iter().next() else {
                return Err(CgroupError::Discover(
                    "the host is cgroup v2 but no cgroup2 mount shows this process's cgroup \
                     (is /sys/fs/cgroup mounted from another cgroup namespace?)"
                        .into(),
                ));
            };
            Backend::V2(v2::V2Cgroup::new(&h, cgroups_path, id)?)
        } else {
            let hs = paths::resolve_hierarchies(&entries, &mounts, paths::MountKind::V1);
            Backend::V1(v1::V1Cgroup::new(&hs, cgroups_path, id)?)
        };
        Ok(Cgroup {
            id: id.to_owned(),
            backend,
        })
    }

    /// Creates the directories and applies `resources`.
    pub fn create(
        &mut self,
        resources: Option<&LinuxResources>,
        rootless: bool,
    ) -> Result<(), CgroupError> {
        let rootless = rootless || !nix::unistd::geteuid().is_root();
        match &mut self.backend {
            Backend::V1(c) => c.create(resources, rootless),
            Backend::V2(c) => c.create(resources, rootless),
        }
    }

    /// Whether the box really has a cgroup (false for rootless without delegation).
    pub fn is_enabled(&self) -> bool {
        match &self.backend {
            Backend::V1(c) => c.is_enabled(),
            Backend::V2(c) => c.is_enabled(),
        }
    }

    /// Which cgroup version this box uses.
    pub fn version(&self) -> CgroupVersion {
        match &self.backend {
            Backend::V1(_) => CgroupVersion::V1,
            Backend::V2(_) => CgroupVersion::V2,
        }
    }

    /// The box's cgroup directories (every hierarchy where it has one).
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.backend {
            Backend::V1(c) => c.paths(),
            Backend::V2(c) => c.paths(),
        }
    }

    /// Opens what a new single-threaded process of the box needs to move itself into the
    /// box's cgroup (v1: the `tasks` files, see [`SelfAttach`]); none on v2 or without a
    /// cgroup, where [`Cgroup::add_process`] moves it from outside.
    pub fn self_attach(&self) -> Result<Option<SelfAttach>, CgroupError> {
        match &self.backend {
            Backend::V1(c) if c.is_enabled() => SelfAttach::open(c.paths()).map(Some),
            _ => Ok(None),
        }
    }

    /// Moves `pid` into the box's cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.add_process(pid),
            Backend::V2(c) => c.add_process(pid),
        }
    }

    /// Applies new limits to a live box.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.update(resources),
            Backend::V2(c) => c.update(resources),
        }
    }

    /// Freezes every process of the box; returns once the kernel reports it frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.freeze(),
            Backend::V2(c) => c.freeze(),
        }
    }

    /// Thaws the box.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.thaw(),
            Backend::V2(c) => c.thaw(),
        }
    }

    /// Whether the box is frozen.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.is_frozen(),
            Backend::V2(c) => c.is_frozen(),
        }
    }

    /// Pids of every process in the box's cgroup (and cgroups below it).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.pids(),
            Backend::V2(c) => c.pids(),
        }
    }

    /// Sends `sig` to every process of the box (frozen while signalled, so forks cannot escape;
    /// v2 uses `cgroup.kill` for SIGKILL where the kernel has it).
    pub fn signal_all(&self, sig: Signal) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.signal_all(sig),
            Backend::V2(c) => c.signal_all(sig),
        }
    }

    /// Current usage.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.stats(),
            Backend::V2(c) => c.stats(),
        }
    }

    /// Removes the box's cgroup directories (they must be empty of processes), then the
    /// intermediates it created if they are empty. Missing directories are fine.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.destroy(),
            Backend::V2(c) => c.destroy(),
        }
    }

    /// The box id this cgroup was computed for.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Signals every pid, ignoring processes that already exited.
fn signal_pids(pids: &[i32], sig: Signal) -> Result<(), CgroupError> {
    for &pid in pids {
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Signal {
                    pid,
                    signal: sig,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Freeze/thaw waits this long for the kernel.
const FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "4:memory:/process_api/h\n3:cpuset:/\n1:cpu,cpuacct:/\n0::/\n";
    const HYBRID_MOUNTINFO: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_chooses_v1_with_a_dir_per_hierarchy() {
        let host = CgroupHost {
            proc_self_cgroup: HYBRID_CGROUP.into(),
            mountinfo: HYBRID_MOUNTINFO.into(),
            pure_v2: false,
        };
        let cg = Cgroup::for_box_on(&host, None, "b1").expect("placed");
        assert_eq!(cg.version(), CgroupVersion::V1);
        assert!(!cg.is_enabled(), "nothing created yet");
        let mut p = match &cg.backend {
            Backend::V1(c) => c.all_dirs(),
            Backend::V2(_) => unreachable!("v1 expected"),
        };
        p.sort();
        assert_eq!(
            p,
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/box/b1"),
                PathBuf::from("/sys/fs/cgroup/cpuset/box/b1"),
                PathBuf::from("/sys/fs/cgroup/memory/process_api/h/box/b1"),
            ]
        );
    }

    #[test]
    fn pure_v2_host_chooses_v2_under_caller() {
        let host = CgroupHost {
            proc_self_cgroup: "0::/user.slice/u\n".into(),
            mountinfo: "35 22 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n".into(),
            pure_v2: true,
        };
        let cg = Cgroup::for_box_on(&host, Some(Path::new("ci/j1")), "b1").expect("placed");
        assert_eq!(cg.version(), CgroupVersion::V2);
        match &cg.backend {
            Backend::V2(c) => assert_eq!(c.dir(), Path::new("/sys/fs/cgroup/user.slice/u/ci/j1")),
            Backend::V1(_) => unreachable!("v2 expected"),
        }
    }

    #[test]
    fn cgroup_round_trips_through_json_state() {
        let host = CgroupHost {
            proc_self_cgroup: HYBRID_CGROUP.into(),
            mountinfo: HYBRID_MOUNTINFO.into(),
            pure_v2: false,
        };
        let cg = Cgroup::for_box_on(&host, Some(Path::new("/pods/p")), "b1").expect("placed");
        let json = serde_json::to_string(&cg).expect("serializes");
        let back: Cgroup = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back.version(), CgroupVersion::V1);
        assert_eq!(back.id(), "b1");
        assert_eq!(serde_json::to_string(&back).expect("serializes"), json);
    }
}
