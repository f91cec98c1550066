//! cgroup v2 backend: one directory in the unified hierarchy; devices through eBPF.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use super::files::{self, write, write_if_exists};
use super::paths::{self, Hierarchy};
use super::stats::{self, CgroupStats};
use super::{devices_bpf, signal_pids, CgroupError, FREEZE_TIMEOUT};

/// A box's cgroup in the unified hierarchy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V2Cgroup {
    /// The caller's own cgroup.
    caller_dir: PathBuf,
    /// The box's cgroup.
    dir: PathBuf,
    /// Whether the box has it.
    enabled: bool,
    /// Directories `create` made, parents first.
    created: Vec<PathBuf>,
}

/// `cpu.weight` from OCI `cpu.shares` (runc's mapping of [2, 262144] onto [1, 10000]).
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// `cpu.max` from OCI quota/period, or `None` when neither is set.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let quota = quota.unwrap_or(0);
    let period = period.unwrap_or(0);
    if quota <= 0 && period == 0 {
        return if quota < 0 { Some("max".into()) } else { None };
    }
    let period = if period == 0 { 100_000 } else { period };
    Some(if quota <= 0 {
        format!("max {period}")
    } else {
        format!("{quota} {period}")
    })
}

/// `memory.swap.max` from OCI swap (memory+swap) and limit, like runc.
pub fn swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>, CgroupError> {
    let bad = |why: String| CgroupError::InvalidResource {
        what: "swap limit".into(),
        why,
    };
    match swap {
        // Unlimited memory with no swap setting: unlimited swap too (v1 compatibility).
        None | Some(0) => Ok((limit == Some(-1)).then(|| "max".into())),
        Some(-1) => Ok(Some("max".into())),
        Some(s) if s < 0 => Err(bad(format!("invalid value {s}"))),
        Some(s) => match limit {
            None | Some(0) | Some(-1) => Err(bad(
                "a memory+swap limit needs a memory limit (set linux.resources.memory.limit)"
                    .into(),
            )),
            Some(l) if l < 0 => Err(bad(format!("invalid memory limit {l}"))),
            Some(l) if s < l => Err(bad(format!(
                "memory+swap ({s}) must be >= the memory limit ({l})"
            ))),
            Some(l) => Ok(Some((s - l).to_string())),
        },
    }
}

/// `io.weight` from a blkio weight ([10, 1000] onto [1, 10000], like runc).
pub fn blkio_weight_to_io(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

fn mem_value(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// v2 controllers that `r` needs (devices are eBPF, not a controller).
pub fn wanted_controllers(r: &LinuxResources) -> BTreeSet<String> {
    let mut w = BTreeSet::new();
    if let Some(m) = r.memory() {
        if m.limit().is_some() || m.reservation().is_some() || m.swap().is_some() {
            w.insert("memory".to_owned());
        }
    }
    if let Some(c) = r.cpu() {
        if c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.burst().is_some()
            || c.idle().is_some()
        {
            w.insert("cpu".to_owned());
        }
        if c.cpus().is_some() || c.mems().is_some() {
            w.insert("cpuset".to_owned());
        }
    }
    if r.pids().is_some() {
        w.insert("pids".to_owned());
    }
    if let Some(b) = r.block_io() {
        let throttles = [
            b.throttle_read_bps_device(),
            b.throttle_write_bps_device(),
            b.throttle_read_iops_device(),
            b.throttle_write_iops_device(),
        ];
        if throttles
            .iter()
            .any(|t| t.as_ref().is_some_and(|v| !v.is_empty()))
        {
            w.insert("io".to_owned());
        }
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        w.insert("hugetlb".to_owned());
    }
    for key in r.unified().iter().flat_map(|u| u.keys()) {
        if let Some((ctrl, _)) = key.split_once('.') {
            if !ctrl.is_empty() && ctrl != "cgroup" {
                w.insert(ctrl.to_owned());
            }
        }
    }
    w
}

/// Controllers a cgroup may hand to its children (`cgroup.controllers`).
fn available(dir: &Path) -> Result<BTreeSet<String>, CgroupError> {
    Ok(files::read(&dir.join("cgroup.controllers"))?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

impl V2Cgroup {
    /// Computes the box's directory; touches nothing.
    pub fn new(
        h: &Hierarchy,
        cgroups_path: Option<&Path>,
        id: &str,
    ) -> Result<V2Cgroup, CgroupError> {
        Ok(V2Cgroup {
            caller_dir: h.caller_dir.clone(),
            dir: paths::box_dir(h, cgroups_path, id)?,
            enabled: false,
            created: Vec::new(),
        })
    }

    /// The box's directory.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The box's directory, when it has one.
    pub fn paths(&self) -> Vec<PathBuf> {
        if self.enabled {
            vec![self.dir.clone()]
        } else {
            Vec::new()
        }
    }

    /// Whether the box has its directory.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn need_enabled(&self, action: &str) -> Result<&Path, CgroupError> {
        if self.enabled {
            Ok(&self.dir)
        } else {
            Err(CgroupError::NotEnabled {
                action: action.into(),
            })
        }
    }

    /// Creates the directory (enabling the needed controllers on the way down, only inside the
    /// caller's subtree) and applies `resources`; undoes its mkdirs on failure.
    pub fn create(
        &mut self,
        resources: Option<&LinuxResources>,
        rootless: bool,
    ) -> Result<(), CgroupError> {
        let wanted = resources.map(wanted_controllers).unwrap_or_default();
        let base = paths::write_base(&self.caller_dir, &self.dir);
        let res = self.create_inner(&base, &wanted, resources, rootless);
        if res.is_err() {
            let _ = self.destroy();
            self.enabled = false;
            self.created.clear();
        }
        res
    }

    fn create_inner(
        &mut self,
        base: &Path,
        wanted: &BTreeSet<String>,
        resources: Option<&LinuxResources>,
        rootless: bool,
    ) -> Result<(), CgroupError> {
        let avail = available(base)?;
        if let Some(missing) = wanted.iter().find(|c| !avail.contains(*c)) {
            return Err(CgroupError::ControllerUnavailable {
                action: format!("apply {missing} limits"),
                version: "v2",
                controller: missing.clone(),
                why: format!(
                    "is not available to children of {} (its cgroup.controllers has: {})",
                    base.display(),
                    avail.iter().cloned().collect::<Vec<_>>().join(" ")
                ),
            });
        }
        let wants_devices = resources.is_some_and(|r| r.devices().is_some());
        match files::create_dirs(base, &self.dir) {
            Ok(made) => {
                self.created = made;
                self.enabled = true;
            }
            Err(e) if rootless && wanted.is_empty() && !wants_devices && is_permission(&e) => {
                self.enabled = false;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        self.enable_controllers(base, wanted, &avail)?;
        if let Some(r) = resources {
            self.apply(r)?;
        }
        Ok(())
    }

    /// Writes `+<controller>` into `cgroup.subtree_control` from `base` down to the box's parent:
    /// required ones must succeed; the other available ones are enabled best effort (for stats).
    fn enable_controllers(
        &self,
        base: &Path,
        wanted: &BTreeSet<String>,
        avail: &BTreeSet<String>,
    ) -> Result<(), CgroupError> {
        let Ok(rel) = self.dir.strip_prefix(base) else {
            return Ok(());
        };
        let mut cur = base.to_path_buf();
        let comps: Vec<_> = rel.components().collect();
        for comp in comps {
            let file = cur.join("cgroup.subtree_control");
            let enabled: BTreeSet<String> = files::read_opt(&file)
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            for c in avail {
                if enabled.contains(c) {
                    continue;
                }
                let r = write(
                    &file,
                    &format!("+{c}"),
                    &format!("enable the {c} controller"),
                );
                match r {
                    Err(CgroupError::Write { source, .. })
                        if wanted.contains(c) && source.raw_os_error() == Some(libc::EBUSY) =>
                    {
                        return Err(CgroupError::ControllerUnavailable {
                            action: format!("apply {c} limits"),
                            version: "v2",
                            controller: c.clone(),
                            why: format!(
                                "cannot be enabled in {}: that cgroup holds processes (the v2 \
                                 no-internal-processes rule); run from a leaf cgroup inside a \
                                 delegated subtree",
                                file.display()
                            ),
                        });
                    }
                    Err(e) if wanted.contains(c) => return Err(e),
                    _ => {}
                }
            }
            cur.push(comp);
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let d = self.dir.as_path();
        if let Some(m) = r.memory() {
            if let Some(l) = m.limit() {
                write(&d.join("memory.max"), &mem_value(l), "set memory limit")?;
            }
            if let Some(res) = m.reservation() {
                write(
                    &d.join("memory.low"),
                    &mem_value(res),
                    "set memory reservation",
                )?;
            }
            if let Some(v) = swap_max(m.limit(), m.swap())? {
                let f = d.join("memory.swap.max");
                if v == "max" {
                    write_if_exists(&f, &v, "set swap limit")?;
                } else {
                    write(&f, &v, "set swap limit (is swap accounting enabled?)")?;
                }
            }
            // swappiness, disableOOMKiller and kernel memory have no v2 equivalent: ignored, as runc.
        }
        if let Some(c) = r.cpu() {
            if c.realtime_period().is_some() || c.realtime_runtime().is_some() {
                return Err(CgroupError::Unsupported {
                    action: "set realtime cpu limits".into(),
                    why: "cgroup v2 has no realtime scheduling controller".into(),
                });
            }
            if let Some(s) = c.shares() {
                write(
                    &d.join("cpu.weight"),
                    &shares_to_weight(s).to_string(),
                    "set cpu weight",
                )?;
            }
            if let Some(v) = cpu_max(c.quota(), c.period()) {
                write(&d.join("cpu.max"), &v, "set cpu quota")?;
            }
            if let Some(b) = c.burst() {
                write(&d.join("cpu.max.burst"), &b.to_string(), "set cpu burst")?;
            }
            if let Some(i) = c.idle() {
                write(&d.join("cpu.idle"), &i.to_string(), "set cpu idle")?;
            }
            if let Some(cpus) = c.cpus() {
                write(&d.join("cpuset.cpus"), cpus, "set cpuset cpus")?;
            }
            if let Some(mems) = c.mems() {
                write(&d.join("cpuset.mems"), mems, "set cpuset mems")?;
            }
        }
        if let Some(p) = r.pids() {
            write(
                &d.join("pids.max"),
                &super::v1::pids_max(p.limit()),
                "set pids limit",
            )?;
        }
        if let Some(b) = r.block_io() {
            if let Some(w) = b.weight() {
                // Best effort: io weights need the io controller and a weight-aware scheduler.
                if !write_if_exists(&d.join("io.bfq.weight"), &w.to_string(), "set io weight")? {
                    write_if_exists(
                        &d.join("io.weight"),
                        &blkio_weight_to_io(w).to_string(),
                        "set io weight",
                    )?;
                }
            }
            for wd in b.weight_device().iter().flatten() {
                if let Some(w) = wd.weight() {
                    let v = format!("{}:{} {}", wd.major(), wd.minor(), w);
                    write_if_exists(&d.join("io.bfq.weight"), &v, "set io device weight")?;
                }
            }
            let throttles = [
                ("rbps", b.throttle_read_bps_device()),
                ("wbps", b.throttle_write_bps_device()),
                ("riops", b.throttle_read_iops_device()),
                ("wiops", b.throttle_write_iops_device()),
            ];
            for (key, list) in throttles {
                for t in list.iter().flatten() {
                    let v = format!("{}:{} {}={}", t.major(), t.minor(), key, t.rate());
                    write(&d.join("io.max"), &v, "set io throttle")?;
                }
            }
        }
        for h in r.hugepage_limits().iter().flatten() {
            let v = mem_value(h.limit());
            write(
                &d.join(format!("hugetlb.{}.max", h.page_size())),
                &v,
                "set hugetlb limit",
            )?;
        }
        for (key, value) in r.unified().iter().flatten() {
            if key.is_empty() || key.contains('/') || key.starts_with('.') {
                return Err(CgroupError::InvalidResource {
                    what: format!("unified key {key:?}"),
                    why: "it must be a control file name in the box's cgroup".into(),
                });
            }
            write(&d.join(key), value, &format!("set unified {key}"))?;
        }
        if let Some(devs) = r.devices() {
            devices_bpf::apply(d, devs)?;
        }
        Ok(())
    }

    /// Moves `pid` into the box's cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let d = self.need_enabled(&format!("add process {pid}"))?;
        write(
            &d.join("cgroup.procs"),
            &pid.to_string(),
            &format!("add process {pid} to the box's cgroup"),
        )
    }

    /// Applies new limits to a live box.
    pub fn update(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let d = self.need_enabled("update limits")?;
        let have = available(d)?;
        if let Some(missing) = wanted_controllers(r)
            .into_iter()
            .find(|c| !have.contains(c))
        {
            return Err(CgroupError::ControllerUnavailable {
                action: format!("update {missing} limits"),
                version: "v2",
                controller: missing,
                why: format!("is not enabled for {}", d.display()),
            });
        }
        self.apply(r)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let action = if frozen {
            "freeze the box"
        } else {
            "thaw the box"
        };
        let d = self.need_enabled(action)?;
        let file = d.join("cgroup.freeze");
        if !file.exists() {
            return Err(CgroupError::Unsupported {
                action: action.into(),
                why: format!(
                    "{} is missing (the v2 freezer needs Linux 5.2 or later)",
                    file.display()
                ),
            });
        }
        write(&file, if frozen { "1" } else { "0" }, action)?;
        if files::wait_until(FREEZE_TIMEOUT, || Ok(self.is_frozen()? == frozen))? {
            return Ok(());
        }
        if frozen {
            let _ = write(&file, "0", "thaw after a failed freeze");
        }
        Err(CgroupError::Timeout {
            action: action.into(),
            path: d.join("cgroup.events"),
            state: format!("frozen {}", u8::from(frozen)),
            secs: FREEZE_TIMEOUT.as_secs(),
        })
    }

    /// Freezes the box and waits for `frozen 1` in `cgroup.events`.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    /// Thaws the box.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    /// Whether `cgroup.events` says `frozen 1`.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let d = self.need_enabled("read the freezer state")?;
        let ev = stats::parse_flat_keyed(&files::read(&d.join("cgroup.events"))?);
        Ok(ev.get("frozen") == Some(&1))
    }

    /// Every pid in the box's cgroup and below.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        files::procs_recursive(self.need_enabled("list the box's processes")?)
    }

    /// SIGKILL through `cgroup.kill` where present; otherwise freeze, signal every pid, thaw.
    pub fn signal_all(&self, sig: Signal) -> Result<(), CgroupError> {
        let d = self.need_enabled("signal the box")?;
        if sig == Signal::SIGKILL && d.join("cgroup.kill").exists() {
            return write(&d.join("cgroup.kill"), "1", "kill the box");
        }
        if !d.join("cgroup.freeze").exists() {
            return signal_pids(&self.pids()?, sig);
        }
        let was_frozen = self.is_frozen()?;
        self.freeze()?;
        let res = self.pids().and_then(|p| signal_pids(&p, sig));
        if !was_frozen || sig == Signal::SIGKILL {
            self.thaw()?;
        }
        res
    }

    /// Usage figures.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        Ok(stats::read_v2(self.need_enabled("read usage")?))
    }

    /// Removes the box's cgroup (and any below it), then intermediates it made if empty.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        if !self.enabled && self.created.is_empty() {
            return Ok(());
        }
        files::remove_tree(&self.dir)?;
        let parents: Vec<PathBuf> = self
            .created
            .iter()
            .filter(|d| **d != self.dir)
            .cloned()
            .collect();
        files::remove_if_empty(&parents);
        Ok(())
    }
}

fn is_permission(e: &CgroupError) -> bool {
    matches!(
        e,
        CgroupError::Create { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS))
    )
}

#[cfg(test)]
mod tests {
    use super::super::files::testdir::TempDir;
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
        LinuxResourcesBuilder,
    };

    #[test]
    fn shares_convert_to_weight_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(1 << 40), 10_000);
    }

    #[test]
    fn cpu_max_combines_quota_and_period() {
        assert_eq!(cpu_max(None, None), None);
        assert_eq!(cpu_max(Some(50_000), None).as_deref(), Some("50000 100000"));
        assert_eq!(
            cpu_max(Some(20_000), Some(50_000)).as_deref(),
            Some("20000 50000")
        );
        assert_eq!(
            cpu_max(Some(-1), Some(50_000)).as_deref(),
            Some("max 50000")
        );
        assert_eq!(cpu_max(Some(-1), None).as_deref(), Some("max"));
        assert_eq!(cpu_max(None, Some(10_000)).as_deref(), Some("max 10000"));
    }

    #[test]
    fn swap_is_memory_plus_swap_minus_memory() {
        assert_eq!(
            swap_max(Some(100), Some(300)).expect("ok").as_deref(),
            Some("200")
        );
        assert_eq!(
            swap_max(Some(100), Some(100)).expect("ok").as_deref(),
            Some("0")
        );
        assert_eq!(
            swap_max(Some(100), Some(-1)).expect("ok").as_deref(),
            Some("max")
        );
        assert_eq!(
            swap_max(Some(-1), None).expect("ok").as_deref(),
            Some("max")
        );
        assert_eq!(swap_max(Some(100), None).expect("ok"), None);
        assert!(swap_max(Some(300), Some(100)).is_err());
        assert!(swap_max(None, Some(100)).is_err());
    }

    #[test]
    fn blkio_weight_maps_onto_io_weight() {
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10_000);
        assert_eq!(blkio_weight_to_io(500), 1 + 490 * 9999 / 990);
    }

    fn fake_v2(root: &Path, controllers: &str) -> Hierarchy {
        let caller = root.join("caller");
        std::fs::create_dir_all(&caller).expect("mkdir");
        std::fs::write(caller.join("cgroup.controllers"), controllers).expect("w");
        Hierarchy {
            controllers: vec![],
            mount_point: root.to_path_buf(),
            caller_dir: caller,
        }
    }

    #[test]
    fn v2_create_writes_converted_values_into_the_box_dir() {
        let t = TempDir::new("v2create");
        let h = fake_v2(t.path(), "cpu memory pids hugetlb");
        let mut cg = V2Cgroup::new(&h, None, "b1").expect("placed");
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(16 << 20)
                    .swap(48 << 20)
                    .reservation(1 << 20)
                    .build()
                    .expect("mem"),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000)
                    .period(100_000u64)
                    .build()
                    .expect("cpu"),
            )
            .pids(LinuxPidsBuilder::default().limit(0).build().expect("pids"))
            .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(1 << 21)
                .build()
                .expect("h")])
            .build()
            .expect("res");
        cg.create(Some(&res), false).expect("created");
        let rd = |p: &str| files::read(&t.path().join("caller").join(p)).expect(p);
        assert_eq!(rd("box/b1/memory.max"), (16u64 << 20).to_string());
        assert_eq!(rd("box/b1/memory.low"), (1u64 << 20).to_string());
        assert_eq!(rd("box/b1/memory.swap.max"), (32u64 << 20).to_string());
        assert_eq!(rd("box/b1/cpu.weight"), "39");
        assert_eq!(rd("box/b1/cpu.max"), "50000 100000");
        assert_eq!(rd("box/b1/pids.max"), "max");
        assert_eq!(rd("box/b1/hugetlb.2MB.max"), "2097152");
        // Controllers were enabled on the caller and on box/ (a plain file keeps the last write).
        assert!(rd("cgroup.subtree_control").starts_with('+'));
        assert!(rd("box/cgroup.subtree_control").starts_with('+'));
        assert_eq!(cg.paths(), vec![t.path().join("caller/box/b1")]);
    }

    #[test]
    fn v2_requested_controller_missing_in_caller_is_a_clear_error() {
        let t = TempDir::new("v2missing");
        let h = fake_v2(t.path(), "hugetlb");
        let mut cg = V2Cgroup::new(&h, None, "b1").expect("placed");
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1 << 24)
                    .build()
                    .expect("mem"),
            )
            .build()
            .expect("res");
        let msg = cg
            .create(Some(&res), false)
            .expect_err("memory missing")
            .to_string();
        assert!(msg.contains("memory controller"), "{msg}");
        assert!(msg.contains("hugetlb"), "{msg}");
        assert!(!t.path().join("caller/box").exists(), "nothing created");
        // Without resources, the same place works.
        cg.create(None, false).expect("created");
        assert!(cg.is_enabled());
    }

    #[test]
    fn v2_unified_keys_cannot_escape_the_box_dir() {
        let t = TempDir::new("v2unified");
        let h = fake_v2(t.path(), "memory");
        let mut cg = V2Cgroup::new(&h, None, "b1").expect("placed");
        let mut unified = std::collections::HashMap::new();
        unified.insert("../memory.max".to_owned(), "1".to_owned());
        let res = LinuxResourcesBuilder::default()
            .unified(unified)
            .build()
            .expect("res");
        let msg = cg
            .create(Some(&res), false)
            .expect_err("key with '/'")
            .to_string();
        assert!(msg.contains("unified key"), "{msg}");
        assert!(!t.path().join("memory.max").exists());
    }
}
