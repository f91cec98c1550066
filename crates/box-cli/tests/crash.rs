//! Crash tests for `box` with boxes (root): kill -9 of the CLI during a foreground `box run`, of a
//! box's supervisor and of a box's init, each followed by `box ps` / `box rm` and a count of what
//! leaked — mounts, cgroups, processes and files — which must be nothing.
//!
//! Only processes this test started, or that belong to boxes it created (pids read from
//! `box inspect`), are ever signalled.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// A data dir with a short path (attach sockets live below it). Drop removes every box, kills
/// whatever of its boxes is still alive, removes their cgroups and the dir.
struct Data {
    dir: PathBuf,
    ids: std::cell::RefCell<BTreeSet<String>>,
}

impl Data {
    fn new() -> Data {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/bxc{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Data {
            dir,
            ids: Default::default(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_box"));
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

    /// `box inspect NAME`'s first element; remembers the box's id for the leak count.
    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect JSON");
        let rec = v[0].clone();
        if let Some(id) = rec["Id"].as_str() {
            self.ids.borrow_mut().insert(id.to_string());
        }
        rec
    }

    fn leaks(&self) -> Leaks {
        let ids: Vec<String> = self.ids.borrow().iter().cloned().collect();
        Leaks::count(&self.dir, &ids)
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let out = self.boxc(&["ps", "-a", "--format", "json"]);
        if let Ok(Value::Array(boxes)) = serde_json::from_slice::<Value>(&out.stdout) {
            for b in boxes {
                if let Some(id) = b["Id"].as_str() {
                    self.ids.borrow_mut().insert(id.to_string());
                    let _ = self.boxc(&["rm", "-f", id]);
                }
            }
        }
        let ids: Vec<String> = self.ids.borrow().iter().cloned().collect();
        clean_up_after(&self.dir, &ids);
    }
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
    /// /proc/self/mountinfo naming the data dir), cgroups (`<own cgroup>/box/<id>` in every v1
    /// hierarchy), processes (in such a cgroup, or naming the data dir or an id in their command
    /// line or environment) and files (the box dirs, run dirs, runtime state and snapshots).
    fn count(data: &Path, ids: &[String]) -> Leaks {
        let d = data.to_string_lossy().into_owned();
        let mut l = Leaks {
            mounts: read_lines("/proc/self/mountinfo")
                .into_iter()
                .filter(|m| m.contains(&d))
                .collect(),
            ..Leaks::default()
        };
        for (_, dir) in box_cgroup_dirs() {
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

/// `(hierarchy, <mount>/<own cgroup>/box)` for every v1 hierarchy this process is in.
fn box_cgroup_dirs() -> Vec<(String, PathBuf)> {
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
                mnt.join(path.trim_start_matches('/')).join("box"),
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
fn clean_up_after(data: &Path, ids: &[String]) {
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
    for (_, dir) in box_cgroup_dirs() {
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

fn pid_of(rec: &Value, field: &str) -> i32 {
    rec["State"][field]
        .as_i64()
        .unwrap_or_else(|| panic!("inspect has no State.{field}: {rec}")) as i32
}

fn wait_dead(pid: i32, what: &str) {
    wait_for(Duration::from_secs(15), what, || {
        (!alive(pid)).then_some(())
    });
}

/// A foreground `box run` as a child of this test (its output discarded).
fn spawn_foreground(d: &Data, args: &[&str]) -> Child {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    d.cmd(&all)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn box run")
}

#[test]
fn cli_killed_during_a_foreground_run_leaves_the_box_running_and_rm_cleans_it() {
    if !require_root("cli_killed_during_a_foreground_run_leaves_the_box_running_and_rm_cleans_it") {
        return;
    }
    let d = Data::new();
    let mut cli = spawn_foreground(&d, &["--name", "fg", "host", "sleep", "1000"]);
    let rec = wait_for(Duration::from_secs(20), "the box to run", || {
        let out = d.boxc(&["inspect", "fg"]);
        if !out.status.success() {
            return None;
        }
        let rec = d.inspect("fg");
        (rec["State"]["Running"] == true && pid_of(&rec, "Pid") > 0).then_some(rec)
    });
    let (sup, init) = (pid_of(&rec, "SupervisorPid"), pid_of(&rec, "Pid"));
    // SIGKILL to the CLI this test spawned.
    cli.kill().expect("kill -9 the CLI");
    let _ = cli.wait();
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(sup), "the supervisor survives its CLI");
    assert!(alive(init), "the box survives its CLI");
    let ps = d.ok(&["ps"]);
    assert!(
        ps.lines().any(|l| l.contains("fg") && l.contains("Up ")),
        "still running: {ps}"
    );
    d.ok(&["rm", "-f", "fg"]);
    wait_dead(sup, "the supervisor to be gone");
    wait_dead(init, "the box's init to be gone");
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "rm -f removed it");
    d.leaks().assert_none("kill -9 of the CLI, then rm -f");
}

#[test]
fn cli_killed_at_chosen_points_of_a_run_leaves_nothing_after_rm() {
    if !require_root("cli_killed_at_chosen_points_of_a_run_leaves_nothing_after_rm") {
        return;
    }
    let d = Data::new();
    // The host image is made on first use: not what this test kills.
    d.ok(&["run", "--rm", "host", "true"]);
    // 0 ms: during create (snapshot, record); later: while the supervisor starts the box, and
    // once it runs. Foreground and detached runs alike.
    for (n, ms) in [0u64, 10, 20, 30, 45, 60, 90, 120, 250, 500]
        .into_iter()
        .enumerate()
    {
        for detach in [false, true] {
            let name = format!("k{n}{}", if detach { "d" } else { "f" });
            let mut args = vec!["--name", &name];
            if detach {
                args.push("-d");
            }
            args.extend(["host", "sleep", "1000"]);
            let mut cli = spawn_foreground(&d, &args);
            std::thread::sleep(Duration::from_millis(ms));
            cli.kill().expect("kill -9 the CLI");
            let _ = cli.wait();
        }
    }
    // Whatever each run got to, `box ps -a` lists it and `box rm -f` removes it.
    let out = d.boxc(&["ps", "-a", "--format", "json"]);
    assert!(out.status.success(), "ps -a after the kills: {out:?}");
    let boxes: Value = serde_json::from_slice(&out.stdout).expect("ps JSON");
    let states: Vec<String> = boxes
        .as_array()
        .expect("array")
        .iter()
        .map(|b| {
            format!(
                "{}: {} {}",
                b["Name"], b["State"]["Status"], b["State"]["Error"]
            )
        })
        .collect();
    eprintln!("after the kills: {states:?}");
    // The supervisor survives its CLI at every point (it once died of SIGPIPE writing "started"
    // to the killed CLI, leaving the box's init running unsupervised).
    assert!(
        !states.iter().any(|s| s.contains("supervisor died")),
        "a supervisor died with its CLI: {states:?}"
    );
    for b in boxes.as_array().expect("array") {
        let id = b["Id"].as_str().expect("Id");
        d.ids.borrow_mut().insert(id.to_string());
        d.ok(&["rm", "-f", id]);
    }
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
    // A supervisor killed with its SIGKILLed box needs a moment to be reaped.
    // A CLI killed during create, before the record is written, leaves the box dir and snapshot
    // without a record: the next `box` command removes them once older than the engine's grace
    // period (2 min, so that a create in progress is never touched). Age them past it.
    let orphans: Vec<PathBuf> = ["boxes", "snapshots"]
        .iter()
        .filter_map(|s| std::fs::read_dir(d.dir.join(s)).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .collect();
    if !orphans.is_empty() {
        eprintln!("record-less leftovers of killed creates: {orphans:?}");
        for p in &orphans {
            sh(&format!("touch -h -d '-3 minutes' '{}'", p.display()));
        }
        d.ok(&["ps", "-a"]);
    }
    let mut leaks = d.leaks();
    for _ in 0..100 {
        if leaks.total() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        leaks = d.leaks();
    }
    leaks.assert_none("kill -9 of the CLI at chosen points, then rm -f");
}

#[test]
fn supervisor_killed_shows_an_exited_box_with_a_reason_and_rm_removes_it() {
    if !require_root("supervisor_killed_shows_an_exited_box_with_a_reason_and_rm_removes_it") {
        return;
    }
    let d = Data::new();
    d.ok(&["run", "-d", "--name", "sv", "host", "sleep", "1000"]);
    let rec = d.inspect("sv");
    let (sup, init) = (pid_of(&rec, "SupervisorPid"), pid_of(&rec, "Pid"));
    assert!(alive(sup) && alive(init));
    // SAFETY: the supervisor of a box this test created, by the pid `box inspect` gave.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    wait_dead(sup, "the supervisor to die");
    let ps = d.ok(&["ps", "-a"]);
    let line = ps
        .lines()
        .find(|l| l.contains("sv"))
        .unwrap_or_else(|| panic!("ps -a lists the box: {ps}"));
    assert!(!line.contains("Up "), "not running any more: {line}");
    assert!(
        !d.ok(&["ps"]).contains("sv"),
        "ps without -a omits an ended box"
    );
    let rec = d.inspect("sv");
    assert_ne!(rec["State"]["Running"], true, "{rec}");
    let error = rec["State"]["Error"].as_str().unwrap_or_default();
    assert!(
        error.contains("supervisor"),
        "the reason is recorded: {rec}"
    );
    d.ok(&["rm", "sv"]);
    wait_dead(init, "the box's init to be gone");
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
    d.leaks().assert_none("kill -9 of the supervisor, then rm");
}

#[test]
fn init_killed_is_recorded_as_exit_137_and_rm_leaves_nothing() {
    if !require_root("init_killed_is_recorded_as_exit_137_and_rm_leaves_nothing") {
        return;
    }
    let d = Data::new();
    d.ok(&["run", "-d", "--name", "initkill", "host", "sleep", "1000"]);
    let rec = d.inspect("initkill");
    let (sup, init) = (pid_of(&rec, "SupervisorPid"), pid_of(&rec, "Pid"));
    // SAFETY: the init of a box this test created, by the pid `box inspect` gave.
    unsafe { libc::kill(init, libc::SIGKILL) };
    assert_eq!(d.ok(&["wait", "initkill"]).trim(), "137");
    let ps = d.ok(&["ps", "-a"]);
    assert!(
        ps.lines()
            .any(|l| l.contains("initkill") && l.contains("Exited (137)")),
        "{ps}"
    );
    let rec = d.inspect("initkill");
    assert_eq!(rec["State"]["ExitCode"], 137, "{rec}");
    assert_eq!(rec["State"]["Status"], "exited", "{rec}");
    wait_dead(sup, "the supervisor to finish");
    d.ok(&["rm", "initkill"]);
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
    d.leaks().assert_none("kill -9 of the init, then rm");
}
