//! `box` with boxes, end to end on the offline host image: run in the foreground and detached,
//! ps, logs, exec, stop, kill, rm, --rm, wait, export, diff, rename, clear errors, and a
//! supervisor killed with -9.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

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
