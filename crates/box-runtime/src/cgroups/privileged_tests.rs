//! Tests against the real kernel: they run as root only (set `BOX_REQUIRE_PRIVILEGED=1` to make a
//! non-root run fail instead of skipping). Every cgroup and process they make is removed by guards,
//! also when an assertion fails.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use oci_spec::runtime::{
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder,
};

use super::{files, Cgroup, CgroupHost, CgroupVersion};

fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("BOX_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test} needs root and BOX_REQUIRE_PRIVILEGED=1 forbids skipping it");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// Skips a test for `why` (not for want of root); a failure under BOX_REQUIRE_PRIVILEGED=1.
fn skip(test: &str, why: &str) {
    if std::env::var("BOX_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test} cannot run: {why} (BOX_REQUIRE_PRIVILEGED=1 forbids skipping it)");
    }
    eprintln!("skipping {test}: {why}");
}

fn unique_id(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("cgtest-{tag}-{}-{nanos}", std::process::id())
}

/// Kills and reaps a child we spawned (by its pid) when dropped.
struct ChildGuard(Child);

impl ChildGuard {
    fn spawn(script: &str) -> ChildGuard {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        ChildGuard(child)
    }
    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid fits i32")
    }
    /// Lets a `read x` at the start of the script go on.
    fn go(&mut self) {
        let stdin = self.0.stdin.as_mut().expect("stdin piped");
        stdin.write_all(b"go\n").expect("write to child");
        stdin.flush().expect("flush");
    }
    fn wait_status(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.0.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                start.elapsed() < timeout,
                "child {} did not exit in time",
                self.pid()
            );
            sleep(Duration::from_millis(20));
        }
    }
    fn output(&mut self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(o) = self.0.stdout.as_mut() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(e) = self.0.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        (out, err)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills what is left in the box's cgroup (the grandchildren our scripts forked) and destroys it.
struct CgroupGuard(Cgroup);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if !self.0.is_enabled() {
            return;
        }
        let _ = self.0.thaw();
        let _ = self.0.signal_all(Signal::SIGKILL);
        let _ = files::wait_until(Duration::from_secs(5), || {
            Ok(self.0.pids().map(|p| p.is_empty()).unwrap_or(true))
        });
        if let Err(e) = self.0.destroy() {
            eprintln!("cleanup: {e}");
        }
    }
}

fn resources(memory: i64, pids: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory)
                .swap(memory)
                .build()
                .expect("memory"),
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(pids)
                .build()
                .expect("pids"),
        )
        .build()
        .expect("resources")
}

/// Field 3 (state) and utime+stime (fields 14, 15) of /proc/<pid>/stat.
fn proc_state(pid: i32) -> (char, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = &stat[stat.rfind(')').expect("comm end") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let state = f[0].chars().next().expect("state");
    let cpu = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    (state, cpu)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn privileged_box_cgroup_lifecycle_limits_freeze_kill_destroy() {
    if !privileged("privileged_box_cgroup_lifecycle_limits_freeze_kill_destroy") {
        return;
    }
    let id = unique_id("life");
    let mut cg = Cgroup::for_box(None, &id).expect("placed");
    cg.create(Some(&resources(64 << 20, 20)), false)
        .expect("created");
    let guard = CgroupGuard(cg.clone());
    assert!(cg.is_enabled());
    let dirs = cg.paths();
    assert!(!dirs.is_empty());
    for d in &dirs {
        assert!(d.is_dir(), "{} exists", d.display());
        assert!(
            d.ends_with(Path::new("box").join(&id)),
            "{} nests as box/<id>",
            d.display()
        );
    }
    // State survives a JSON round trip (later commands reload it).
    let cg: Cgroup =
        serde_json::from_str(&serde_json::to_string(&cg).expect("json")).expect("reload");

    // A busy loop made only of shell builtins: it uses CPU unless frozen, and never forks.
    let mut child = ChildGuard::spawn("read x; while :; do :; done");
    cg.add_process(child.pid()).expect("added");
    child.go();
    assert!(cg.pids().expect("pids").contains(&child.pid()));

    assert_eq!(cg.stats().expect("stats").pids.limit, 20);
    cg.update(&resources(64 << 20, 7)).expect("updated");

    wait_for("the loop to use CPU", Duration::from_secs(5), || {
        proc_state(child.pid()).1 > 0
    });
    let st = cg.stats().expect("stats");
    assert_eq!(st.pids.limit, 7);
    assert!(st.pids.current >= 1);
    assert_eq!(st.memory.usage.limit, 64 << 20);
    assert!(
        st.cpu.usage.total > 0,
        "the loop's CPU time is accounted: {:?}",
        st.cpu
    );

    cg.freeze().expect("frozen");
    assert!(cg.is_frozen().expect("state"));
    let (state, cpu_before) = proc_state(child.pid());
    assert_ne!(state, 'R', "a frozen task is not runnable");
    sleep(Duration::from_millis(300));
    let (_, cpu_after) = proc_state(child.pid());
    assert_eq!(cpu_before, cpu_after, "a frozen task gets no CPU");

    cg.thaw().expect("thawed");
    assert!(!cg.is_frozen().expect("state"));
    wait_for("the loop to run again", Duration::from_secs(5), || {
        proc_state(child.pid()).1 > cpu_after
    });

    cg.signal_all(Signal::SIGKILL).expect("killed");
    let status = child.wait_status(Duration::from_secs(10));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    wait_for("the cgroup to empty", Duration::from_secs(5), || {
        cg.pids().map(|p| p.is_empty()).unwrap_or(false)
    });

    cg.destroy().expect("destroyed");
    for d in &dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    drop(guard);
}

#[test]
fn privileged_memory_limit_gets_a_hog_oom_killed() {
    if !privileged("privileged_memory_limit_gets_a_hog_oom_killed") {
        return;
    }
    let mut cg = Cgroup::for_box(Some(Path::new(&unique_id("oom"))), "oom").expect("placed");
    cg.create(Some(&resources(16 << 20, 50)), false)
        .expect("created");
    let _guard = CgroupGuard(cg.clone());
    // tail keeps the whole newline-free 64 MiB "line" in memory.
    let mut child =
        ChildGuard::spawn("read x; head -c 67108864 /dev/zero | tail >/dev/null; exit $?");
    cg.add_process(child.pid()).expect("added");
    child.go();
    let status = child.wait_status(Duration::from_secs(60));
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.code() == Some(128 + libc::SIGKILL) || status.signal() == Some(libc::SIGKILL),
        "the hog was not OOM-killed: {status:?}"
    );
    let st = cg.stats().expect("stats");
    // With memory+swap equal to memory, either counter may be the one that records the hit.
    assert!(
        st.memory.usage.failcnt + st.memory.swap.failcnt > 0 || st.memory.usage.max == 16 << 20,
        "the limit was reached: {:?}",
        st.memory
    );
    assert!(st.memory.usage.max <= 16 << 20);
}

#[test]
fn privileged_pids_limit_stops_a_fork_loop() {
    if !privileged("privileged_pids_limit_stops_a_fork_loop") {
        return;
    }
    let mut cg = Cgroup::for_box(Some(Path::new(&unique_id("pids"))), "pids").expect("placed");
    cg.create(Some(&resources(256 << 20, 5)), false)
        .expect("created");
    let _guard = CgroupGuard(cg.clone());
    let mut child = ChildGuard::spawn(
        "read x; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 60 & done; echo forked; wait",
    );
    cg.add_process(child.pid()).expect("added");
    child.go();
    // dash gives up on the first fork that fails: sh + 4 sleeps fit in 5, the 5th fork fails.
    let status = child.wait_status(Duration::from_secs(10));
    assert!(!status.success());
    let pids = cg.pids().expect("pids");
    assert_eq!(
        pids.len(),
        4,
        "the 4 sleeps that fit are still there: {pids:?}"
    );
    let st = cg.stats().expect("stats");
    assert_eq!(st.pids.limit, 5);
    assert_eq!(st.pids.current, 4);
    let events = cg
        .paths()
        .into_iter()
        .find_map(|d| files::read_opt(&d.join("pids.events")))
        .unwrap_or_default();
    if !events.is_empty() {
        assert_ne!(events.trim(), "max 0", "pids.events counted refused forks");
    }
    cg.signal_all(Signal::SIGKILL).expect("killed");
    wait_for("the cgroup to empty", Duration::from_secs(5), || {
        cg.pids().map(|p| p.is_empty()).unwrap_or(false)
    });
    // The sleeps held the pipes open: read only once they are dead.
    let (_, err) = child.output();
    assert!(
        err.to_lowercase().contains("fork"),
        "sh reported a fork failure: {err}"
    );
}

/// The cgroup2 mount of this host (pure v2 root or the hybrid `unified` one).
fn cgroup2_host() -> Option<CgroupHost> {
    let host = CgroupHost::detect().expect("host");
    let mounts = super::paths::parse_mountinfo(&host.mountinfo);
    mounts
        .iter()
        .any(|m| m.kind == super::paths::MountKind::V2)
        .then_some(CgroupHost {
            pure_v2: true,
            ..host
        })
}

#[test]
fn privileged_v2_device_program_denies_dev_null_but_not_dev_zero() {
    if !privileged("privileged_v2_device_program_denies_dev_null_but_not_dev_zero") {
        return;
    }
    let Some(host) = cgroup2_host() else {
        return skip(
            "privileged_v2_device_program_denies_dev_null_but_not_dev_zero",
            "no cgroup2 mount",
        );
    };
    let id = unique_id("bpf");
    let mut cg = Cgroup::for_box_on(&host, None, &id).expect("placed");
    assert_eq!(cg.version(), CgroupVersion::V2);
    let allow_all = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .access("rwm")
        .build()
        .expect("rule");
    let deny_null = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .typ(LinuxDeviceType::C)
        .major(1)
        .minor(3)
        .access("rwm")
        .build()
        .expect("rule");
    let res = LinuxResourcesBuilder::default()
        .devices(vec![allow_all, deny_null])
        .build()
        .expect("resources");
    cg.create(Some(&res), false)
        .expect("created with a device program");
    let _guard = CgroupGuard(cg.clone());
    let dir: PathBuf = cg.paths().into_iter().next().expect("v2 dir");
    assert!(dir.ends_with(Path::new("box").join(&id)));

    let mut child = ChildGuard::spawn(
        "read x; if cat /dev/null; then echo null-open; else echo null-denied; fi; head -c 4 /dev/zero | wc -c",
    );
    cg.add_process(child.pid()).expect("added");
    assert!(cg.pids().expect("pids").contains(&child.pid()));
    // Updating replaces the program rather than stacking a second one.
    cg.update(&res).expect("updated");
    child.go();
    let status = child.wait_status(Duration::from_secs(10));
    let (out, err) = child.output();
    assert!(status.success(), "{out} {err}");
    assert!(out.contains("null-denied"), "stdout: {out}; stderr: {err}");
    assert!(
        out.lines().any(|l| l.trim() == "4"),
        "/dev/zero readable: {out}"
    );
    assert!(err.contains("not permitted"), "stderr: {err}");
}

#[test]
fn privileged_v2_freeze_and_cgroup_kill() {
    if !privileged("privileged_v2_freeze_and_cgroup_kill") {
        return;
    }
    let Some(host) = cgroup2_host() else {
        return skip("privileged_v2_freeze_and_cgroup_kill", "no cgroup2 mount");
    };
    let mut cg =
        Cgroup::for_box_on(&host, Some(Path::new(&unique_id("v2kill"))), "v2kill").expect("placed");
    cg.create(None, false).expect("created");
    let _guard = CgroupGuard(cg.clone());
    let mut child = ChildGuard::spawn("read x; sleep 60 & sleep 60");
    cg.add_process(child.pid()).expect("added");
    child.go();
    wait_for("both processes", Duration::from_secs(5), || {
        cg.pids().map(|p| p.len() >= 3).unwrap_or(false)
    });
    cg.freeze().expect("frozen");
    assert!(cg.is_frozen().expect("state"));
    cg.thaw().expect("thawed");
    assert!(!cg.is_frozen().expect("state"));
    cg.signal_all(Signal::SIGKILL).expect("killed");
    child.wait_status(Duration::from_secs(10));
    wait_for("the cgroup to empty", Duration::from_secs(5), || {
        cg.pids().map(|p| p.is_empty()).unwrap_or(false)
    });
    let dirs = cg.paths();
    cg.destroy().expect("destroyed");
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[test]
fn privileged_a_process_moves_itself_into_a_v1_box_cgroup() {
    if !privileged("privileged_a_process_moves_itself_into_a_v1_box_cgroup") {
        return;
    }
    let id = unique_id("self");
    let mut cg = Cgroup::for_box(None, &id).expect("placed");
    cg.create(None, false).expect("created");
    let _guard = CgroupGuard(cg.clone());
    let Some(attach) = cg.self_attach().expect("open the tasks files") else {
        assert_eq!(
            cg.version(),
            CgroupVersion::V2,
            "only v2 has no self-attach"
        );
        return;
    };
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    // SAFETY: between fork and exec the child only writes to descriptors opened before the
    // fork (no allocation on success); an error is returned as is.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            attach
                .attach_current()
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EIO))
        });
    }
    let child = ChildGuard(cmd.spawn().expect("spawn sleep"));
    let pid = child.pid();
    assert!(cg.pids().expect("pids").contains(&pid));
    // In every hierarchy, not only the one `pids` reads.
    for dir in cg.paths() {
        let tasks = std::fs::read_to_string(dir.join("tasks")).expect("tasks");
        assert!(
            tasks.lines().any(|l| l == pid.to_string()),
            "{pid} in {}",
            dir.display()
        );
    }
}
