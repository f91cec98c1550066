//! cgroup v1 backend: one directory per mounted hierarchy (comounted and named ones included).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use serde::{Deserialize, Serialize};

use super::files::{self, read_u64, write, write_if_exists};
use super::paths::{self, Hierarchy};
use super::stats::{self, CgroupStats};
use super::{signal_pids, CgroupError, FREEZE_TIMEOUT};

/// The box's directory in one v1 hierarchy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V1Dir {
    /// Controllers of the hierarchy (`name=…` for named ones).
    controllers: Vec<String>,
    /// The caller's own cgroup there.
    caller_dir: PathBuf,
    /// The box's cgroup there.
    dir: PathBuf,
    /// Whether the box has this directory (false: rootless and not writable, or not created).
    enabled: bool,
    /// Directories `create` made, parents first (the last is `dir`).
    created: Vec<PathBuf>,
}

/// A box's cgroup across v1 hierarchies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V1Cgroup {
    hierarchies: Vec<V1Dir>,
}

/// v1 controllers that `resources` needs.
pub fn wanted_controllers(r: &LinuxResources) -> BTreeSet<&'static str> {
    let mut w = BTreeSet::new();
    if r.memory().is_some() {
        w.insert("memory");
    }
    if let Some(c) = r.cpu() {
        if c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.realtime_period().is_some()
            || c.realtime_runtime().is_some()
            || c.burst().is_some()
        {
            w.insert("cpu");
        }
        if c.cpus().is_some() || c.mems().is_some() {
            w.insert("cpuset");
        }
    }
    if r.pids().is_some() {
        w.insert("pids");
    }
    if r.devices().is_some() {
        w.insert("devices");
    }
    if r.block_io().is_some() {
        w.insert("blkio");
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        w.insert("hugetlb");
    }
    if let Some(n) = r.network() {
        if n.class_id().is_some() {
            w.insert("net_cls");
        }
        if n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            w.insert("net_prio");
        }
    }
    w
}

/// A device rule as written to `devices.allow` / `devices.deny`.
pub fn device_rule_line(rule: &LinuxDeviceCgroup) -> String {
    let typ = rule.typ().unwrap_or(LinuxDeviceType::A);
    if typ == LinuxDeviceType::A {
        return "a".into();
    }
    let num = |n: Option<i64>| match n {
        Some(v) if v >= 0 => v.to_string(),
        _ => "*".into(),
    };
    let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
    format!(
        "{} {}:{} {}",
        typ.as_str(),
        num(rule.major()),
        num(rule.minor()),
        access
    )
}

fn is_permission_error(e: &CgroupError) -> bool {
    let raw = match e {
        CgroupError::Create { source, .. } | CgroupError::Write { source, .. } => {
            source.raw_os_error()
        }
        _ => None,
    };
    matches!(
        raw,
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
    )
}

impl V1Cgroup {
    /// Computes the box's directory in every hierarchy; touches nothing.
    pub fn new(
        hierarchies: &[Hierarchy],
        cgroups_path: Option<&Path>,
        id: &str,
    ) -> Result<V1Cgroup, CgroupError> {
        let mut out = Vec::new();
        for h in hierarchies {
            out.push(V1Dir {
                controllers: h.controllers.clone(),
                caller_dir: h.caller_dir.clone(),
                dir: paths::box_dir(h, cgroups_path, id)?,
                enabled: false,
                created: Vec::new(),
            });
        }
        Ok(V1Cgroup { hierarchies: out })
    }

    /// Every computed directory, enabled or not.
    #[cfg(test)]
    pub fn all_dirs(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.dir.clone()).collect()
    }

    /// The enabled directories.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.enabled().map(|h| h.dir.clone()).collect()
    }

    fn enabled(&self) -> impl Iterator<Item = &V1Dir> {
        self.hierarchies.iter().filter(|h| h.enabled)
    }

    /// The box's directory in the hierarchy holding `controller`, if it has one.
    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.enabled()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    fn require(&self, controller: &str, action: &str) -> Result<&Path, CgroupError> {
        if let Some(d) = self.dir_of(controller) {
            return Ok(d);
        }
        let why = match self
            .hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
        {
            Some(h) => format!("not writable at {}", h.dir.display()),
            None => "is not mounted (no v1 hierarchy holds it in /proc/self/mountinfo)".into(),
        };
        Err(CgroupError::ControllerUnavailable {
            action: action.into(),
            version: "v1",
            controller: controller.into(),
            why,
        })
    }

    /// Whether the box has a directory in at least one hierarchy.
    pub fn is_enabled(&self) -> bool {
        self.enabled().next().is_some()
    }

    /// Creates the directories and applies `resources`; undoes its mkdirs on failure.
    pub fn create(
        &mut self,
        resources: Option<&LinuxResources>,
        rootless: bool,
    ) -> Result<(), CgroupError> {
        let wanted = resources.map(wanted_controllers).unwrap_or_default();
        let result = self.create_dirs(&wanted, rootless).and_then(|()| {
            if let Some(r) = resources {
                self.apply(r)?;
            }
            Ok(())
        });
        if result.is_err() {
            let _ = self.destroy();
            for h in &mut self.hierarchies {
                h.enabled = false;
                h.created.clear();
            }
        }
        result
    }

    fn create_dirs(
        &mut self,
        wanted: &BTreeSet<&'static str>,
        rootless: bool,
    ) -> Result<(), CgroupError> {
        for h in &mut self.hierarchies {
            let needed = h.controllers.iter().any(|c| wanted.contains(c.as_str()));
            let base = paths::write_base(&h.caller_dir, &h.dir);
            let made = files::create_dirs(&base, &h.dir).and_then(|made| {
                h.created = made;
                h.enabled = true;
                if h.controllers.iter().any(|c| c == "cpuset") {
                    copy_cpuset_from_parents(&base, &h.dir)?;
                }
                Ok(())
            });
            match made {
                Ok(()) => {}
                Err(e) if rootless && !needed && is_permission_error(&e) => {
                    h.enabled = false;
                }
                Err(e) if needed && is_permission_error(&e) => {
                    let controller = h
                        .controllers
                        .iter()
                        .find(|c| wanted.contains(c.as_str()))
                        .cloned()
                        .unwrap_or_default();
                    return Err(CgroupError::ControllerUnavailable {
                        action: format!("apply {controller} limits"),
                        version: "v1",
                        controller,
                        why: format!("not writable at {} ({e})", h.dir.display()),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        for c in wanted {
            self.require(c, &format!("apply {c} limits"))?;
        }
        Ok(())
    }

    /// Writes every limit in `r` to its controller.
    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(CgroupError::Unsupported {
                action: "apply unified resources".into(),
                why: "linux.resources.unified needs cgroup v2 and this host uses v1".into(),
            });
        }
        if let Some(m) = r.memory() {
            let d = self.require("memory", "set memory limit")?;
            apply_memory(d, m)?;
        }
        if let Some(c) = r.cpu() {
            if wanted_controllers(r).contains("cpu") {
                let d = self.require("cpu", "set cpu limits")?;
                let w = |f: &str, v: String, a: &str| write(&d.join(f), &v, a);
                if let Some(s) = c.shares() {
                    w("cpu.shares", s.to_string(), "set cpu shares")?;
                }
                if let Some(p) = c.period() {
                    w("cpu.cfs_period_us", p.to_string(), "set cpu period")?;
                }
                if let Some(q) = c.quota() {
                    let q = if q <= 0 { -1 } else { q };
                    w("cpu.cfs_quota_us", q.to_string(), "set cpu quota")?;
                }
                if let Some(b) = c.burst() {
                    write_if_exists(&d.join("cpu.cfs_burst_us"), &b.to_string(), "set cpu burst")?;
                }
                if let Some(p) = c.realtime_period() {
                    w("cpu.rt_period_us", p.to_string(), "set realtime period")?;
                }
                if let Some(rt) = c.realtime_runtime() {
                    w("cpu.rt_runtime_us", rt.to_string(), "set realtime runtime")?;
                }
            }
            if c.cpus().is_some() || c.mems().is_some() {
                let d = self.require("cpuset", "set cpuset")?;
                if let Some(cpus) = c.cpus() {
                    write(&d.join("cpuset.cpus"), cpus, "set cpuset cpus")?;
                }
                if let Some(mems) = c.mems() {
                    write(&d.join("cpuset.mems"), mems, "set cpuset mems")?;
                }
            }
        }
        if let Some(p) = r.pids() {
            let d = self.require("pids", "set pids limit")?;
            write(&d.join("pids.max"), &pids_max(p.limit()), "set pids limit")?;
        }
        if let Some(devs) = r.devices() {
            let d = self.require("devices", "set device rules")?;
            for rule in devs {
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(&d.join(file), &device_rule_line(rule), "set device rules")?;
            }
        }
        if let Some(b) = r.block_io() {
            let d = self.require("blkio", "set blkio limits")?;
            if let Some(wt) = b.weight() {
                if !write_if_exists(&d.join("blkio.weight"), &wt.to_string(), "set blkio weight")? {
                    write_if_exists(
                        &d.join("blkio.bfq.weight"),
                        &wt.to_string(),
                        "set blkio weight",
                    )?;
                }
            }
            if let Some(lw) = b.leaf_weight() {
                write_if_exists(
                    &d.join("blkio.leaf_weight"),
                    &lw.to_string(),
                    "set blkio leaf weight",
                )?;
            }
            for wd in b.weight_device().iter().flatten() {
                if let Some(wt) = wd.weight() {
                    let v = format!("{}:{} {}", wd.major(), wd.minor(), wt);
                    if !write_if_exists(
                        &d.join("blkio.weight_device"),
                        &v,
                        "set blkio device weight",
                    )? {
                        write_if_exists(
                            &d.join("blkio.bfq.weight_device"),
                            &v,
                            "set blkio device weight",
                        )?;
                    }
                }
            }
            let throttles = [
                (
                    "blkio.throttle.read_bps_device",
                    b.throttle_read_bps_device(),
                ),
                (
                    "blkio.throttle.write_bps_device",
                    b.throttle_write_bps_device(),
                ),
                (
                    "blkio.throttle.read_iops_device",
                    b.throttle_read_iops_device(),
                ),
                (
                    "blkio.throttle.write_iops_device",
                    b.throttle_write_iops_device(),
                ),
            ];
            for (file, list) in throttles {
                for t in list.iter().flatten() {
                    let v = format!("{}:{} {}", t.major(), t.minor(), t.rate());
                    write_if_exists(&d.join(file), &v, "set blkio throttle")?;
                }
            }
        }
        for h in r.hugepage_limits().iter().flatten() {
            let d = self.require("hugetlb", "set hugetlb limit")?;
            let file = d.join(format!("hugetlb.{}.limit_in_bytes", h.page_size()));
            if !file.exists() {
                return Err(CgroupError::InvalidResource {
                    what: "hugetlb limit".into(),
                    why: format!(
                        "page size {:?} is not supported here ({} missing)",
                        h.page_size(),
                        file.display()
                    ),
                });
            }
            write(&file, &h.limit().to_string(), "set hugetlb limit")?;
        }
        if let Some(n) = r.network() {
            if let Some(id) = n.class_id() {
                let d = self.require("net_cls", "set net_cls classid")?;
                write(
                    &d.join("net_cls.classid"),
                    &id.to_string(),
                    "set net_cls classid",
                )?;
            }
            for p in n.priorities().iter().flatten() {
                let d = self.require("net_prio", "set net_prio priority")?;
                let v = format!("{} {}", p.name(), p.priority());
                write(&d.join("net_prio.ifpriomap"), &v, "set net_prio priority")?;
            }
        }
        Ok(())
    }

    /// Moves `pid` into the box's directory in every hierarchy.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if !self.is_enabled() {
            return Err(CgroupError::NotEnabled {
                action: format!("add process {pid}"),
            });
        }
        for h in self.enabled() {
            write(
                &h.dir.join("cgroup.procs"),
                &pid.to_string(),
                &format!("add process {pid} to the box's cgroup"),
            )?;
        }
        Ok(())
    }

    /// Applies new limits to a live box.
    pub fn update(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        for c in wanted_controllers(r) {
            self.require(c, &format!("update {c} limits"))?;
        }
        self.apply(r)
    }

    fn freezer(&self, action: &str) -> Result<&Path, CgroupError> {
        if !self.is_enabled() {
            return Err(CgroupError::NotEnabled {
                action: action.into(),
            });
        }
        self.require("freezer", action)
    }

    /// Freezes the box and waits until the kernel says `FROZEN`.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let d = self.freezer("freeze the box")?;
        let state = d.join("freezer.state");
        // Rewriting FROZEN while FREEZING retries tasks that were busy (what runc does).
        let done = files::wait_until(FREEZE_TIMEOUT, || {
            write(&state, "FROZEN", "freeze the box")?;
            Ok(files::read(&state)? == "FROZEN")
        })?;
        if done {
            return Ok(());
        }
        let _ = write(&state, "THAWED", "thaw after a failed freeze");
        Err(CgroupError::Timeout {
            action: "freeze the box".into(),
            path: state,
            state: "FROZEN".into(),
            secs: FREEZE_TIMEOUT.as_secs(),
        })
    }

    /// Thaws the box.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        let d = self.freezer("thaw the box")?;
        let state = d.join("freezer.state");
        write(&state, "THAWED", "thaw the box")?;
        let done = files::wait_until(FREEZE_TIMEOUT, || Ok(files::read(&state)? == "THAWED"))?;
        if done {
            Ok(())
        } else {
            Err(CgroupError::Timeout {
                action: "thaw the box".into(),
                path: state,
                state: "THAWED".into(),
                secs: FREEZE_TIMEOUT.as_secs(),
            })
        }
    }

    /// Whether the freezer says `FROZEN`.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let d = self.freezer("read the freezer state")?;
        Ok(files::read(&d.join("freezer.state"))? == "FROZEN")
    }

    /// Every pid in the box (freezer, pids or memory hierarchy first; all see the same tasks).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let dir = ["freezer", "pids", "memory", "cpu", "devices"]
            .iter()
            .find_map(|c| self.dir_of(c))
            .or_else(|| self.enabled().next().map(|h| h.dir.as_path()));
        match dir {
            Some(d) => files::procs_recursive(d),
            None => Err(CgroupError::NotEnabled {
                action: "list the box's processes".into(),
            }),
        }
    }

    /// Freezes (when there is a freezer), signals every pid, thaws (unless it was already
    /// frozen and the signal is not SIGKILL): a forking process cannot escape.
    pub fn signal_all(&self, sig: Signal) -> Result<(), CgroupError> {
        if self.dir_of("freezer").is_none() {
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
        if !self.is_enabled() {
            return Err(CgroupError::NotEnabled {
                action: "read usage".into(),
            });
        }
        Ok(stats::read_v1(&stats::V1Dirs {
            cpu: self.dir_of("cpu"),
            cpuacct: self.dir_of("cpuacct"),
            memory: self.dir_of("memory"),
            pids: self.dir_of("pids"),
            blkio: self.dir_of("blkio"),
            hugetlb: self.dir_of("hugetlb"),
        }))
    }

    /// Removes the box's directories, then the intermediates it made if empty.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for h in &self.hierarchies {
            // A reloaded box whose create failed may have enabled=false; removing is harmless.
            if !h.enabled && h.created.is_empty() {
                continue;
            }
            if let Err(e) = files::remove_tree(&h.dir) {
                first_err.get_or_insert(e);
                continue;
            }
            let parents: Vec<PathBuf> =
                h.created.iter().filter(|d| **d != h.dir).cloned().collect();
            files::remove_if_empty(&parents);
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// `pids.max` value: runc semantics, `<= 0` means no limit.
pub fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".into()
    }
}

/// Memory limits; memory+swap must never be below memory, so the order of the two writes
/// depends on whether the limit grows or shrinks.
fn apply_memory(d: &Path, m: &oci_spec::runtime::LinuxMemory) -> Result<(), CgroupError> {
    let limit_file = d.join("memory.limit_in_bytes");
    let memsw_file = d.join("memory.memsw.limit_in_bytes");
    let swap = m.swap().filter(|_| memsw_file.exists());
    match (m.limit(), swap) {
        (Some(limit), Some(swap)) => {
            if swap != -1 && limit != -1 && swap < limit {
                return Err(CgroupError::InvalidResource {
                    what: "memory+swap limit".into(),
                    why: format!("memory+swap ({swap}) must be >= the memory limit ({limit})"),
                });
            }
            let cur_memsw = read_u64(&memsw_file).unwrap_or(u64::MAX);
            let grows = swap == -1 || u64::try_from(swap).map_or(true, |s| s > cur_memsw);
            if grows {
                write(&memsw_file, &swap.to_string(), "set memory+swap limit")?;
                write(&limit_file, &limit.to_string(), "set memory limit")?;
            } else {
                write(&limit_file, &limit.to_string(), "set memory limit")?;
                write(&memsw_file, &swap.to_string(), "set memory+swap limit")?;
            }
        }
        (Some(limit), None) => write(&limit_file, &limit.to_string(), "set memory limit")?,
        (None, Some(swap)) => write(&memsw_file, &swap.to_string(), "set memory+swap limit")?,
        (None, None) => {}
    }
    if let Some(r) = m.reservation() {
        write(
            &d.join("memory.soft_limit_in_bytes"),
            &r.to_string(),
            "set memory reservation",
        )?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(CgroupError::InvalidResource {
                what: "memory swappiness".into(),
                why: format!("{s} is not within 0..=100"),
            });
        }
        write(
            &d.join("memory.swappiness"),
            &s.to_string(),
            "set memory swappiness",
        )?;
    }
    if let Some(off) = m.disable_oom_killer() {
        write(
            &d.join("memory.oom_control"),
            if off { "1" } else { "0" },
            "set the OOM killer",
        )?;
    }
    Ok(())
}

/// Fills empty `cpuset.cpus`/`cpuset.mems` from the parent on every level below `base`, or no
/// process could join (v1 cpusets start empty).
fn copy_cpuset_from_parents(base: &Path, dir: &Path) -> Result<(), CgroupError> {
    let Ok(rel) = dir.strip_prefix(base) else {
        return Ok(());
    };
    let mut cur = base.to_path_buf();
    for comp in rel.components() {
        let parent = cur.clone();
        cur.push(comp);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if files::read(&cur.join(f))?.is_empty() {
                let v = files::read(&parent.join(f))?;
                write(&cur.join(f), &v, "copy cpuset from the parent cgroup")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::files::testdir::TempDir;
    use super::*;
    use oci_spec::runtime::{
        LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    #[test]
    fn device_rule_lines_use_wildcards_and_a() {
        let all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .expect("rule");
        assert_eq!(device_rule_line(&all), "a");
        let null = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rw")
            .build()
            .expect("rule");
        assert_eq!(device_rule_line(&null), "c 1:3 rw");
        let any_block = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::B)
            .build()
            .expect("rule");
        assert_eq!(device_rule_line(&any_block), "b *:* rwm");
    }

    #[test]
    fn pids_limit_zero_or_negative_means_max() {
        assert_eq!(pids_max(0), "max");
        assert_eq!(pids_max(-1), "max");
        assert_eq!(pids_max(5), "5");
    }

    fn fake_hierarchies(root: &Path, names: &[&str]) -> Vec<Hierarchy> {
        names
            .iter()
            .map(|n| {
                let caller = root.join(n).join("caller");
                std::fs::create_dir_all(&caller).expect("mkdir");
                Hierarchy {
                    controllers: n.split(',').map(str::to_owned).collect(),
                    mount_point: root.join(n),
                    caller_dir: caller,
                }
            })
            .collect()
    }

    #[test]
    fn v1_create_writes_limits_in_each_hierarchy_dir() {
        let t = TempDir::new("v1create");
        let hs = fake_hierarchies(t.path(), &["memory", "pids", "cpuset"]);
        std::fs::write(t.path().join("cpuset/caller/cpuset.cpus"), "0-1").expect("w");
        std::fs::write(t.path().join("cpuset/caller/cpuset.mems"), "0").expect("w");
        // New v1 cpuset dirs start with empty files.
        for d in ["box", "box/b1"] {
            let p = t.path().join("cpuset/caller").join(d);
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join("cpuset.cpus"), "").expect("w");
            std::fs::write(p.join("cpuset.mems"), "").expect("w");
        }
        std::fs::create_dir_all(t.path().join("memory/caller/box/b1")).expect("mkdir");
        std::fs::write(
            t.path()
                .join("memory/caller/box/b1/memory.memsw.limit_in_bytes"),
            "9223372036854771712",
        )
        .expect("w");
        let mut cg = V1Cgroup::new(&hs, None, "b1").expect("placed");
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(16 << 20)
                    .swap(32 << 20)
                    .build()
                    .expect("mem"),
            )
            .pids(LinuxPidsBuilder::default().limit(5).build().expect("pids"))
            .build()
            .expect("res");
        cg.create(Some(&res), false).expect("created");
        assert!(cg.is_enabled());
        let rd = |p: &str| files::read(&t.path().join(p)).expect("read");
        assert_eq!(
            rd("memory/caller/box/b1/memory.limit_in_bytes"),
            (16u64 << 20).to_string()
        );
        assert_eq!(
            rd("memory/caller/box/b1/memory.memsw.limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(rd("pids/caller/box/b1/pids.max"), "5");
        assert_eq!(rd("cpuset/caller/box/cpuset.cpus"), "0-1");
        assert_eq!(rd("cpuset/caller/box/b1/cpuset.mems"), "0");
        assert_eq!(cg.paths().len(), 3);
    }

    #[test]
    fn v1_missing_controller_for_requested_limit_is_a_clear_error() {
        let t = TempDir::new("v1missing");
        let hs = fake_hierarchies(t.path(), &["memory"]);
        let mut cg = V1Cgroup::new(&hs, Some(Path::new("job")), "b1").expect("placed");
        let res = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(5).build().expect("pids"))
            .build()
            .expect("res");
        let err = cg.create(Some(&res), false).expect_err("no pids hierarchy");
        let msg = err.to_string();
        assert!(msg.contains("pids controller"), "{msg}");
        assert!(msg.contains("not mounted"), "{msg}");
        assert!(!cg.is_enabled());
        assert!(
            !t.path().join("memory/caller/job").exists(),
            "create undone"
        );
    }

    #[test]
    fn v1_swap_below_limit_is_rejected() {
        let t = TempDir::new("v1swap");
        std::fs::write(t.path().join("memory.memsw.limit_in_bytes"), "0").expect("w");
        let m = LinuxMemoryBuilder::default()
            .limit(100)
            .swap(50)
            .build()
            .expect("mem");
        assert!(apply_memory(t.path(), &m).is_err());
    }
}
