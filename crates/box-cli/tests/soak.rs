//! Soak (root): `BOX_SOAK_RUNS` (default 500) sequential `box run --rm host true`, and 50 boxes
//! running at once (`box run -d host sleep 30` ×50, then `box rm -f` of all of them); afterwards
//! nothing may be left: mounts, cgroups, processes, files.
//!
//! Each test's boxes get their own `--cgroup-parent` (`bxs<pid>-<n>/box`, below this process's
//! cgroup, as the default `box/` is): leaked cgroups of `--rm` boxes, whose ids are never printed,
//! are its entries, and boxes of anything else running on the host are never counted (or
//! touched). The two tests take turns (one lock), so that the timings printed are their own.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// Serialises the tests of this file (see the module doc).
static TURN: Mutex<()> = Mutex::new(());

/// A data dir with a short path (attach sockets live below it). Drop removes every box, kills
/// whatever of its boxes is still alive, removes their cgroups and the dir.
struct Data {
    dir: PathBuf,
    ids: std::cell::RefCell<BTreeSet<String>>,
    /// The boxes' `--cgroup-parent`, relative to this process's cgroup.
    parent: String,
}

impl Data {
    fn new() -> Data {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bxs{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let dir = PathBuf::from("/tmp").join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        Data {
            dir,
            ids: Default::default(),
            parent: format!("{name}/box"),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(box_bin());
        c.arg("--root")
            .arg(&self.dir)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn boxc(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run box")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.boxc(args);
        assert!(
            out.status.success(),
            "box {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The ids of boxes this test made: those it saw, and every entry of its cgroup parent.
    fn all_ids(&self) -> Vec<String> {
        let mut ids = self.ids.borrow().clone();
        ids.extend(cgroup_entries(&self.parent));
        ids.into_iter().collect()
    }

    /// What is left once the supervisors are done: a `--rm` box's supervisor lets its client go
    /// as soon as the record is removed and removes the box's files, runtime state and cgroups
    /// right after, so a count taken at once may see the last box still being cleaned up.
    /// Counts again until nothing is left or a few seconds went by.
    fn leaks(&self) -> Leaks {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let l = Leaks::count(&self.dir, &self.all_ids(), &self.parent);
            if l.total() == 0 || Instant::now() >= deadline {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let out = self.boxc(&["ps", "-a", "--format", "json"]);
        if let Ok(Value::Array(boxes)) = serde_json::from_slice::<Value>(&out.stdout) {
            let ids: Vec<String> = boxes
                .iter()
                .filter_map(|b| b["Id"].as_str().map(str::to_string))
                .collect();
            self.ids.borrow_mut().extend(ids.iter().cloned());
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.boxc(&args);
            }
        }
        clean_up_after(&self.dir, &self.all_ids(), &self.parent);
        // The parent dirs the runtime made (`bxs…/box`, `bxs…`), in every hierarchy.
        for (_, dir) in cgroup_dirs(&self.parent) {
            let _ = std::fs::remove_dir(&dir);
            if let Some(up) = dir.parent() {
                let _ = std::fs::remove_dir(up);
            }
        }
    }
}

/// The `box` binary: `BOX_SOAK_BIN` (e.g. a release build), else the test build's.
fn box_bin() -> PathBuf {
    std::env::var_os("BOX_SOAK_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_box")))
}

/// Names of the entries of `<own cgroup>/<parent>/` in every v1 hierarchy.
fn cgroup_entries(parent: &str) -> BTreeSet<String> {
    cgroup_dirs(parent)
        .into_iter()
        .filter_map(|(_, dir)| std::fs::read_dir(dir).ok())
        .flat_map(|rd| rd.flatten())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect()
}

/// What a test left behind. Each entry names the thing.
#[derive(Debug, Default)]
struct Leaks {
    mounts: Vec<String>,
    cgroups: Vec<String>,
    processes: Vec<String>,
    files: Vec<String>,
}

impl Leaks {
    /// Counts what is left of the boxes `ids` made under the data dir `data`: mounts (lines of
    /// /proc/self/mountinfo naming the data dir), cgroups (`<own cgroup>/<parent>/<id>` in every v1
    /// hierarchy), processes (in such a cgroup, or naming the data dir or an id in their command
    /// line or environment) and files (the box dirs, run dirs, runtime state and snapshots).
    fn count(data: &Path, ids: &[String], parent: &str) -> Leaks {
        let d = data.to_string_lossy().into_owned();
        let mut l = Leaks {
            mounts: read_lines("/proc/self/mountinfo")
                .into_iter()
                .filter(|m| m.contains(&d))
                .collect(),
            ..Leaks::default()
        };
        for (_, dir) in cgroup_dirs(parent) {
            for id in ids {
                let p = dir.join(id);
                if p.exists() {
                    l.cgroups.push(p.display().to_string());
                }
            }
        }
        l.processes = processes_of(&d, ids)
            .into_iter()
            .map(|(pid, what)| format!("{pid}: {what}"))
            .collect();
        for sub in ["boxes", "run/boxes", "run/runtime", "snapshots"] {
            if let Ok(rd) = std::fs::read_dir(data.join(sub)) {
                for e in rd.flatten() {
                    // The runtime's cache of compiled seccomp filters is shared by all boxes.
                    if sub == "run/runtime" && e.file_name() == ".seccomp-cache" {
                        continue;
                    }
                    l.files.push(e.path().display().to_string());
                }
            }
        }
        l
    }

    fn total(&self) -> usize {
        self.mounts.len() + self.cgroups.len() + self.processes.len() + self.files.len()
    }

    fn assert_none(&self, after: &str) {
        assert_eq!(self.total(), 0, "leaked after {after}: {self:#?}");
    }
}

/// `(hierarchy, <mount>/<own cgroup>/<parent>)` for every v1 hierarchy this process is in.
fn cgroup_dirs(parent: &str) -> Vec<(String, PathBuf)> {
    read_lines("/proc/self/cgroup")
        .into_iter()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (hid, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            if hid == "0" || ctrls.is_empty() {
                return None;
            }
            let name = ctrls.strip_prefix("name=").unwrap_or(ctrls);
            let mut mnt = PathBuf::from("/sys/fs/cgroup").join(name);
            if !mnt.exists() {
                mnt = PathBuf::from("/sys/fs/cgroup").join(name.split(',').next()?);
            }
            Some((
                ctrls.to_string(),
                mnt.join(path.trim_start_matches('/')).join(parent),
            ))
        })
        .collect()
}

/// Processes (other than this one) in a box's cgroup, or naming the data dir or a box id in their
/// command line or environment: `(pid, why)`.
fn processes_of(data: &str, ids: &[String]) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let read = |f: &str| {
            std::fs::read(format!("/proc/{pid}/{f}"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default()
        };
        let cgroup = read("cgroup");
        let cmdline = read("cmdline");
        let environ = read("environ");
        let hit = ids
            .iter()
            .any(|id| cgroup.contains(&format!("/box/{id}")) || cmdline.contains(id.as_str()))
            || cmdline.contains(data)
            || environ.contains(data);
        if hit {
            found.push((
                pid,
                format!("{} [{}]", cmdline.trim(), cgroup.replace('\n', " ")),
            ));
        }
    }
    found
}

/// Last-resort cleanup (runs even when a test failed): kill what is left of our boxes, remove
/// their cgroups, unmount anything below the data dir and remove it.
fn clean_up_after(data: &Path, ids: &[String], parent: &str) {
    let d = data.to_string_lossy().into_owned();
    for _ in 0..50 {
        let left = processes_of(&d, ids);
        if left.is_empty() {
            break;
        }
        for (pid, _) in left {
            // SAFETY: a process of a box this test created (by its cgroup, command line or
            // environment naming the box's id or the test's data dir), signalled by pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (_, dir) in cgroup_dirs(parent) {
        for id in ids {
            let _ = std::fs::remove_dir(dir.join(id));
        }
    }
    let _ = Command::new("sh")
        .arg("-c")
        .arg(
            "grep -F \" $1\" /proc/self/mountinfo | awk '{print $5}' | sort -r | \
             while read -r m; do umount -l \"$m\"; done",
        )
        .arg("sh")
        .arg(data)
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn sequential_run_rm_leaves_nothing() {
    if !require_root("sequential_run_rm_leaves_nothing") {
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let runs: usize = std::env::var("BOX_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let d = Data::new();
    let start = Instant::now();
    for n in 0..runs {
        let out = d.boxc(&["run", "--rm", "--cgroup-parent", &d.parent, "host", "true"]);
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "run {n} of {runs}: {out:?}"
        );
    }
    let took = start.elapsed();
    eprintln!(
        "soak: {runs} sequential `box run --rm host true` in {:.1} s ({:.1} ms each)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / runs.max(1) as f64
    );
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "--rm left no box");
    d.leaks()
        .assert_none(&format!("{runs} sequential box run --rm"));
}

#[test]
fn fifty_concurrent_boxes_then_rm_f_leave_nothing() {
    if !require_root("fifty_concurrent_boxes_then_rm_f_leave_nothing") {
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    const BOXES: usize = 50;
    let d = Data::new();
    let start = Instant::now();
    // All 50 `box run -d` at once: concurrent creates, supervisors and database writers.
    let children: Vec<_> = (0..BOXES)
        .map(|_| {
            d.cmd(&[
                "run",
                "-d",
                "--cgroup-parent",
                &d.parent,
                "host",
                "sleep",
                "30",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn box run -d")
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().expect("wait box run -d");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if id.len() == 64 {
            d.ids.borrow_mut().insert(id.clone());
        }
        assert!(out.status.success(), "box run -d: {out:?}");
        ids.push(id);
    }
    let started = start.elapsed();
    let running: Value = serde_json::from_str(&d.ok(&["ps", "--format", "json"])).expect("ps JSON");
    let running = running.as_array().expect("array");
    assert_eq!(running.len(), BOXES, "all running at once");
    let pids: Vec<(i32, i32)> = running
        .iter()
        .map(|b| {
            let p = |f: &str| b["State"][f].as_i64().expect("pid") as i32;
            (p("Pid"), p("SupervisorPid"))
        })
        .collect();
    assert!(
        pids.iter().all(|&(i, s)| alive(i) && alive(s)),
        "every init and supervisor alive"
    );
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    d.ok(&args);
    eprintln!(
        "soak: {BOXES} concurrent `box run -d` in {:.1} s, all removed after {:.1} s",
        started.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "rm -f removed them all");
    for (i, s) in pids {
        wait_for(
            Duration::from_secs(15),
            "boxes' processes to be gone",
            || (!alive(i) && !alive(s)).then_some(()),
        );
    }
    d.leaks()
        .assert_none(&format!("{BOXES} concurrent boxes and rm -f"));
}
