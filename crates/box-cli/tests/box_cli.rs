//! `box` with boxes, end to end on the offline host image: run in the foreground and detached,
//! ps, logs, exec, stop, kill, rm, --rm, wait, export, diff, rename, clear errors, a
//! supervisor killed with -9, stop/kill/restart/rm -f/close of a paused box, and exec -d.

mod support;

use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

type Data = BoxData;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_in_the_foreground_passes_output_and_exit_code() {
    if !require_root("run_in_the_foreground_passes_output_and_exit_code") {
        return;
    }
    let d = Data::new("");
    let out = d.boxc(&[
        "run",
        "--rm",
        "host",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 3",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert_eq!(stdout, "hello\n");
    assert_eq!(stderr, "oops\n");
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "--rm left nothing");
}

#[test]
fn detached_box_lives_logs_execs_stops_and_is_removed() {
    if !require_root("detached_box_lives_logs_execs_stops_and_is_removed") {
        return;
    }
    let d = Data::new("");
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-e",
        "GREETING=hi",
        "host",
        "sh",
        "-c",
        "echo $GREETING; while true; do sleep 1; done",
    ]);
    assert_eq!(id.trim().len(), 64, "prints the full id: {id}");
    assert!(d.ok(&["ps"]).contains("web"));
    let logs = wait_for(Duration::from_secs(10), "the first log line", || {
        let l = d.ok(&["logs", "web"]);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(logs, "hi\n");
    // A box that keeps running gets the lean supervisor image (box-supervisor) after a moment,
    // and still logs and answers through it.
    let inspect: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "web"])).unwrap();
    let sup = inspect[0]["State"]["SupervisorPid"]
        .as_i64()
        .expect("supervisor pid");
    let exe = wait_for(Duration::from_secs(5), "the lean supervisor image", || {
        std::fs::read_link(format!("/proc/{sup}/exe"))
            .ok()
            .filter(|p| p.ends_with("box-supervisor"))
    });
    assert!(exe.ends_with("box-supervisor"), "{exe:?}");
    let out = d.boxc(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo $GREETING from exec; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out).0, "hi from exec\n");
    d.ok(&["stop", "-t", "1", "web"]);
    let ps = d.ok(&["ps", "-a"]);
    assert!(
        ps.contains("Exited (137)"),
        "sh as pid 1 ignores SIGTERM: {ps}"
    );
    assert!(!d.ok(&["ps"]).contains("web"), "not running any more");
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["inspect", "web"])).expect("JSON");
    assert_eq!(inspect[0]["State"]["ExitCode"], 137);
    d.ok(&["rm", "web"]);
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn wait_export_diff_and_rename() {
    if !require_root("wait_export_diff_and_rename") {
        return;
    }
    let d = Data::new("");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "w",
        "host",
        "sh",
        "-c",
        "echo data > /made-here; exit 5",
    ]);
    assert_eq!(d.ok(&["wait", "w"]).trim(), "5");
    let diff = d.ok(&["diff", "w"]);
    assert!(diff.lines().any(|l| l == "A /made-here"), "{diff}");
    let tar = d.0.join("w.tar");
    d.ok(&["export", "-o", tar.to_str().expect("utf8"), "w"]);
    let list = Command::new("tar")
        .arg("tf")
        .arg(&tar)
        .output()
        .expect("tar");
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "made-here"),
        "{names}"
    );
    assert!(names
        .lines()
        .any(|l| l.trim_start_matches("./") == "bin/sh"));
    d.ok(&["rename", "w", "w2"]);
    assert!(d.ok(&["ps", "-a"]).contains("w2"));
}

#[test]
fn name_conflicts_unknown_boxes_and_images_fail_clearly() {
    if !require_root("name_conflicts_unknown_boxes_and_images_fail_clearly") {
        return;
    }
    let d = Data::new("");
    d.ok(&["create", "--name", "one", "host", "true"]);
    let out = d.boxc(&["create", "--name", "one", "host", "true"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("in use"), "{}", text(&out).1);
    let out = d.boxc(&["logs", "nope"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("nope"));
    let out = d.boxc(&["run", "no-such-image:1", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("box pull"),
        "says what to do: {}",
        text(&out).1
    );
    assert_eq!(
        d.ok(&["ps", "-a", "-q"]).lines().count(),
        1,
        "only the first box"
    );
}

#[test]
fn a_killed_supervisor_is_repaired_into_an_exited_box() {
    if !require_root("a_killed_supervisor_is_repaired_into_an_exited_box") {
        return;
    }
    let d = Data::new("");
    d.ok(&["run", "-d", "--name", "orphan", "host", "sleep", "1000"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["inspect", "orphan"])).expect("JSON");
    let sup = inspect[0]["State"]["SupervisorPid"]
        .as_i64()
        .expect("supervisor pid") as i32;
    let init = inspect[0]["State"]["Pid"].as_i64().expect("pid") as i32;
    assert!(alive(sup) && alive(init));
    // SAFETY: signalling a process this test started (through box run), by pid.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    wait_for(Duration::from_secs(10), "the supervisor to die", || {
        (!alive(sup)).then_some(())
    });
    let ps = d.ok(&["ps", "-a"]);
    assert!(
        ps.contains("orphan") && !ps.contains("Up "),
        "repaired on open: {ps}"
    );
    d.ok(&["rm", "-f", "orphan"]);
    wait_for(Duration::from_secs(10), "the box's init to be gone", || {
        (!alive(init)).then_some(())
    });
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

/// `box inspect` of one box.
fn inspect(d: &Data, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", name])).expect("JSON");
    v[0].clone()
}

/// Runs `box ARGS…`, asserting success within `limit` (a box command stuck on a frozen box
/// fails the test instead of hanging it); returns how long it took.
fn ok_within(d: &Data, args: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    let mut child = d
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run box");
    let st = wait_deadline(&mut child, limit, &format!("box {args:?}"));
    assert!(st.success(), "box {args:?} failed: {st:?}");
    start.elapsed()
}

/// Starts box `name` again and pauses it; returns its init's host pid.
fn start_paused(d: &Data, name: &str) -> i32 {
    d.ok(&["start", name]);
    d.ok(&["pause", name]);
    let rec = inspect(d, name);
    assert_eq!(rec["State"]["Status"], "paused");
    rec["State"]["Pid"].as_i64().expect("pid") as i32
}

/// The existing cgroup directories of process `pid` (every v1 hierarchy, and the v2 one), as
/// this process sees them.
fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    read_lines(format!("/proc/{pid}/cgroup"))
        .into_iter()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (hid, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let mnt = if hid == "0" {
                ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|m| m.join("cgroup.controllers").exists())?
            } else {
                let name = ctrls.strip_prefix("name=").unwrap_or(ctrls);
                let m = PathBuf::from("/sys/fs/cgroup").join(name);
                if m.exists() {
                    m
                } else {
                    PathBuf::from("/sys/fs/cgroup").join(name.split(',').next()?)
                }
            };
            Some(mnt.join(path.trim_start_matches('/')))
        })
        .filter(|d| d.is_dir())
        .collect()
}

#[test]
fn a_paused_box_is_stopped_killed_restarted_and_removed() {
    if !require_root("a_paused_box_is_stopped_killed_restarted_and_removed") {
        return;
    }
    let d = Data::new("");
    d.ok(&["run", "-d", "--name", "frozen", "host", "sleep", "1000"]);
    d.ok(&["pause", "frozen"]);

    // stop: SIGTERM (sleep as pid 1 ignores it), the box thawed, SIGKILL after 1 s.
    let took = ok_within(&d, &["stop", "-t", "1", "frozen"], Duration::from_secs(20));
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    assert_eq!(inspect(&d, "frozen")["State"]["Status"], "exited");

    // The signal itself reaches a paused box: a trap ends it long before the SIGKILL.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "trapper",
        "host",
        "sh",
        "-c",
        "trap 'exit 7' TERM; while true; do sleep 0.1; done",
    ]);
    d.ok(&["pause", "trapper"]);
    let took = ok_within(
        &d,
        &["stop", "-t", "30", "trapper"],
        Duration::from_secs(40),
    );
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert_eq!(inspect(&d, "trapper")["State"]["ExitCode"], 7);

    // kill -9 of a paused box ends it.
    let init = start_paused(&d, "frozen");
    ok_within(
        &d,
        &["kill", "-s", "KILL", "frozen"],
        Duration::from_secs(20),
    );
    wait_for(Duration::from_secs(10), "the killed box to end", || {
        (inspect(&d, "frozen")["State"]["Status"] == "exited" && !alive(init)).then_some(())
    });
    assert_eq!(inspect(&d, "frozen")["State"]["ExitCode"], 137);

    // restart of a paused box: a new, running main process.
    let init = start_paused(&d, "frozen");
    ok_within(
        &d,
        &["restart", "-t", "1", "frozen"],
        Duration::from_secs(20),
    );
    let rec = inspect(&d, "frozen");
    assert_eq!(rec["State"]["Status"], "running");
    assert_ne!(rec["State"]["Pid"].as_i64(), Some(i64::from(init)));
    assert!(!alive(init), "the old main process is gone");

    // rm -f of a paused box: no process, no cgroup, no record left.
    d.ok(&["pause", "frozen"]);
    let rec = inspect(&d, "frozen");
    let init = rec["State"]["Pid"].as_i64().expect("pid") as i32;
    let id = rec["Id"].as_str().expect("id");
    let dirs: Vec<PathBuf> = cgroup_dirs(init)
        .into_iter()
        .filter(|p| p.ends_with(id))
        .collect();
    assert!(!dirs.is_empty(), "the box has cgroups of its own");
    ok_within(&d, &["rm", "-f", "frozen"], Duration::from_secs(20));
    assert!(!alive(init), "the box's process is gone");
    let left: Vec<_> = dirs.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");

    // close of a paused box: the same.
    start_paused(&d, "trapper");
    ok_within(&d, &["close", "trapper"], Duration::from_secs(20));
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "nothing left");
}

#[test]
fn stop_gives_up_with_a_clear_error_on_a_box_that_cannot_end() {
    if !require_root("stop_gives_up_with_a_clear_error_on_a_box_that_cannot_end") {
        return;
    }
    let d = Data::new("");
    d.ok(&["run", "-d", "--name", "stuck", "host", "sleep", "1000"]);
    let rec = inspect(&d, "stuck");
    let init = rec["State"]["Pid"].as_i64().expect("pid") as i32;
    let supervisor = rec["State"]["SupervisorPid"]
        .as_i64()
        .expect("supervisor pid") as i32;
    // A supervisor that does not respond (stopped here) never records the end.
    sh(&format!("kill -STOP {supervisor}"));
    let start = Instant::now();
    let out = d
        .cmd(&["stop", "-t", "0", "stuck"])
        .output()
        .expect("run box");
    let took = start.elapsed();
    sh(&format!("kill -CONT {supervisor}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "stop of a box that cannot end succeeded"
    );
    assert!(
        err.contains("did not end") && err.contains(&format!("pid {supervisor}")),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "stop took {took:?}");
    // Resumed, the supervisor records the end, and the box is removed as usual.
    wait_for(Duration::from_secs(10), "the box to end", || {
        (inspect(&d, "stuck")["State"]["Status"] == "exited").then_some(())
    });
    ok_within(&d, &["rm", "stuck"], Duration::from_secs(20));
    assert!(!alive(init));
}

#[test]
fn restart_policies_show_restarting_and_bring_boxes_back_at_boot() {
    if !require_root("restart_policies_show_restarting_and_bring_boxes_back_at_boot") {
        return;
    }
    let d = Data::new("");
    // A box that keeps failing is `restarting` between its runs (the back-off doubles from
    // 100 ms), refuses exec and kill meanwhile, and a stop ends it at once.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "always",
        "host",
        "sh",
        "-c",
        "exit 3",
    ]);
    wait_for(Duration::from_secs(20), "the box to be restarting", || {
        (inspect(&d, "flaky")["State"]["Status"] == "restarting").then_some(())
    });
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("Restarting (3)"), "{ps}");
    let out = d.boxc(&["exec", "flaky", "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is restarting"),
        "{out:?}"
    );
    let took = ok_within(&d, &["stop", "flaky"], Duration::from_secs(30));
    assert!(
        took < Duration::from_secs(5),
        "stop of a restarting box took {took:?}"
    );
    let rec = inspect(&d, "flaky");
    assert_eq!(rec["State"]["Status"], "exited");
    assert!(rec["RestartCount"].as_u64().unwrap_or(0) >= 1, "{rec}");
    d.ok(&["rm", "flaky"]);

    // A reboot, as far as boxes can tell: every supervisor and box killed at once.
    for (name, policy) in [
        ("always-stopped", "always"),
        ("unless-up", "unless-stopped"),
        ("unless-stopped", "unless-stopped"),
        ("never", "no"),
        ("failure-up", "on-failure:3"),
    ] {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "host",
            "sleep",
            "1000",
        ]);
    }
    d.ok(&["stop", "-t", "0", "always-stopped", "unless-stopped"]);
    assert_eq!(
        inspect(&d, "unless-stopped")["State"]["StoppedByUser"],
        true
    );
    for name in ["unless-up", "never", "failure-up"] {
        let rec = inspect(&d, name);
        let supervisor = rec["State"]["SupervisorPid"].as_i64().expect("supervisor");
        let init = rec["State"]["Pid"].as_i64().expect("pid");
        sh(&format!("kill -9 {supervisor} {init}"));
        wait_for(
            Duration::from_secs(10),
            "the box's processes to die",
            || (!alive(supervisor as i32) && !alive(init as i32)).then_some(()),
        );
    }
    let booted = d.ok(&["system", "boot"]);
    let mut started: Vec<&str> = booted.lines().collect();
    started.sort_unstable();
    assert_eq!(started, ["always-stopped", "failure-up", "unless-up"]);
    for (name, state) in [
        ("always-stopped", "running"),
        ("unless-up", "running"),
        ("failure-up", "running"),
        ("unless-stopped", "exited"),
        ("never", "exited"),
    ] {
        assert_eq!(inspect(&d, name)["State"]["Status"], state, "{name}");
    }
    // Booting again starts nothing more.
    assert_eq!(d.ok(&["system", "boot"]), "");
}

#[test]
fn exec_detached_returns_at_once_and_keeps_nothing_of_the_caller() {
    if !require_root("exec_detached_returns_at_once_and_keeps_nothing_of_the_caller") {
        return;
    }
    let d = Data::new("");
    d.ok(&["run", "-d", "--name", "ed", "host", "sleep", "1000"]);
    // output() reads stdout and stderr to their ends: it returns only once no process holds them.
    let start = Instant::now();
    let out = d.boxc(&["exec", "-d", "ed", "sh", "-c", DETACHED_EXEC_SCRIPT]);
    let took = start.elapsed();
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out), (String::new(), String::new()), "prints nothing");
    assert!(
        took < Duration::from_millis(800),
        "returned after {took:?}: the detached process (sleep 1) held the caller's pipes"
    );
    let got = wait_for(Duration::from_secs(10), "the detached process", || {
        let out = d.boxc(&["exec", "ed", "cat", "/tmp/x"]);
        let t = text(&out).0;
        t.ends_with("hi\n").then_some(t)
    });
    assert_eq!(got, DETACHED_EXEC_LEAVES);
}
