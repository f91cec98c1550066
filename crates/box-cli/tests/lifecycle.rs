//! Lifecycle of a box as root, per runc: run/create/start/state/kill/delete/list/ps/pause/resume/
//! events/spec/features, exit codes and the state each step leaves.

mod support;

use std::fs;
use std::time::Duration;

use serde_json::json;
use support::*;

#[test]
fn run_propagates_exit_codes() {
    if !require_root("run_propagates_exit_codes") {
        return;
    }
    let mut b = Bundle::new("exitcodes");
    for (args, want) in [
        (vec!["true"], 0),
        (vec!["false"], 1),
        (vec!["sh", "-c", "exit 7"], 7),
    ] {
        b.args(&args);
        let out = b.run_once();
        assert_eq!(out.code, want, "{args:?}: {out}");
    }
}

#[test]
fn run_passes_stdout_and_stderr_through() {
    if !require_root("run_passes_stdout_and_stderr_through") {
        return;
    }
    let mut b = Bundle::new("stdio");
    b.script("echo to-stdout; echo to-stderr >&2");
    let out = b.run_once().ok();
    assert_eq!(out.stdout.trim(), "to-stdout", "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");
    assert!(!out.stdout.contains("to-stderr"), "{out}");
}

#[test]
fn run_killed_by_signal_exits_128_plus_signal() {
    if !require_root("run_killed_by_signal_exits_128_plus_signal") {
        return;
    }
    let mut b = Bundle::new("sigexit");
    b.args(&["sleep", "1000"]);
    let id = b.id();
    let mut child = b.spawn_run(&id);
    b.wait_status(&id, "running");
    b.kill(&id, "KILL").ok();
    let st = wait_deadline(&mut child, Duration::from_secs(20), "run after kill");
    assert_eq!(exit_code(st), 128 + 9);
}

#[test]
fn run_detach_returns_while_box_runs_and_writes_pid_file() {
    if !require_root("run_detach_returns_while_box_runs_and_writes_pid_file") {
        return;
    }
    let mut b = Bundle::new("detach");
    b.args(&["sleep", "1000"]);
    let id = b.id();
    let pidfile = b.path("run.pid");
    let bundle = b.bundle_path();
    let out = b.raw(&[
        "run".as_ref(),
        "--detach".as_ref(),
        "--pid-file".as_ref(),
        pidfile.as_os_str(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        id.as_ref(),
    ]);
    assert!(out.success(), "{out}");
    assert_eq!(b.status(&id).as_deref(), Some("running"));
    let pid: i32 = fs::read_to_string(&pidfile)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("pid file holds a number");
    assert_eq!(pid, b.pid(&id));
    assert!(alive(pid));
    b.kill(&id, "KILL").ok();
    b.wait_status(&id, "stopped");
    b.delete(&id).ok();
    assert!(!alive(pid));
}

#[test]
fn create_leaves_created_box_with_live_pid_and_start_runs_it() {
    if !require_root("create_leaves_created_box_with_live_pid_and_start_runs_it") {
        return;
    }
    let mut b = Bundle::new("create");
    b.args(&["sleep", "1000"]);
    let id = b.id();
    let pidfile = b.path("create.pid");
    let bundle = b.bundle_path();
    b.raw(&[
        "create".as_ref(),
        "--pid-file".as_ref(),
        pidfile.as_os_str(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        id.as_ref(),
    ])
    .ok();
    let st = b.state(&id).expect("state of created box");
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], json!(id));
    assert!(st["ociVersion"].is_string(), "{st}");
    assert_eq!(
        fs::canonicalize(st["bundle"].as_str().expect("bundle")).expect("bundle path"),
        fs::canonicalize(&bundle).expect("bundle")
    );
    let pid = st["pid"].as_i64().expect("pid") as i32;
    assert!(pid > 0 && alive(pid), "{st}");
    let pid_from_file: i32 = fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(pid, pid_from_file);
    b.start(&id).ok();
    b.wait_status(&id, "running");
    assert_eq!(b.pid(&id), pid, "start keeps the same init pid");
    // Starting twice is an error.
    b.start(&id).fails();
}

#[test]
fn state_of_exited_box_is_stopped() {
    if !require_root("state_of_exited_box_is_stopped") {
        return;
    }
    let mut b = Bundle::new("stopped");
    b.args(&["true"]);
    let id = b.id();
    b.create(&id).ok();
    b.start(&id).ok();
    b.wait_status(&id, "stopped");
    b.delete(&id).ok();
    assert!(b.state(&id).is_none(), "deleted box still has state");
}

#[test]
fn kill_accepts_signal_names_and_numbers() {
    if !require_root("kill_accepts_signal_names_and_numbers") {
        return;
    }
    let mut b = Bundle::new("killforms");
    // pid 1 only gets signals it handles (except KILL): trap TERM.
    b.script("trap 'exit 0' TERM; while true; do sleep 0.1; done");
    for form in ["TERM", "SIGTERM", "15"] {
        let id = b.start_sleeper();
        b.kill(&id, form).ok();
        b.wait_status(&id, "stopped");
        b.delete(&id).ok();
    }
    b.args(&["sleep", "1000"]);
    for form in ["KILL", "SIGKILL", "9"] {
        let id = b.start_sleeper();
        b.kill(&id, form).ok();
        b.wait_status(&id, "stopped");
        b.delete(&id).ok();
    }
}

#[test]
fn kill_default_signal_is_sigterm() {
    if !require_root("kill_default_signal_is_sigterm") {
        return;
    }
    let mut b = Bundle::new("killdefault");
    b.script("trap 'exit 0' TERM; while true; do sleep 0.1; done");
    let id = b.start_sleeper();
    b.raw(&["kill", &id]).ok();
    b.wait_status(&id, "stopped");
}

#[test]
fn kill_rejects_unknown_signal() {
    if !require_root("kill_rejects_unknown_signal") {
        return;
    }
    let mut b = Bundle::new("killbad");
    let id = b.start_sleeper();
    b.kill(&id, "SIGNOPE").fails();
    assert_eq!(b.status(&id).as_deref(), Some("running"));
}

#[test]
fn kill_all_signals_every_process_of_the_box() {
    if !require_root("kill_all_signals_every_process_of_the_box") {
        return;
    }
    let mut b = Bundle::new("killall");
    b.script("sleep 1000 & sleep 1000 & wait");
    let id = b.start_sleeper();
    let pids: Vec<i64> = wait_for(Duration::from_secs(10), "three processes", || {
        let v = b.raw(&["ps", "--format", "json", &id]).ok().json();
        let p: Vec<i64> = v.as_array()?.iter().filter_map(|p| p.as_i64()).collect();
        (p.len() >= 3).then_some(p)
    });
    b.raw(&["kill", "--all", &id, "KILL"]).ok();
    b.wait_status(&id, "stopped");
    wait_for(Duration::from_secs(10), "all box processes gone", || {
        pids.iter().all(|p| !alive(*p as i32)).then_some(())
    });
}

#[test]
fn delete_refuses_running_box_without_force() {
    if !require_root("delete_refuses_running_box_without_force") {
        return;
    }
    let mut b = Bundle::new("delrunning");
    let id = b.start_sleeper();
    let pid = b.pid(&id);
    let out = b.delete(&id).fails();
    assert!(
        out.text().contains("running"),
        "message names the reason: {out}"
    );
    assert_eq!(b.status(&id).as_deref(), Some("running"));
    b.raw(&["delete", "--force", &id]).ok();
    assert!(b.state(&id).is_none());
    wait_for(Duration::from_secs(10), "init gone", || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn delete_force_removes_created_box() {
    if !require_root("delete_force_removes_created_box") {
        return;
    }
    let mut b = Bundle::new("delcreated");
    b.args(&["sleep", "1000"]);
    let id = b.id();
    b.create(&id).ok();
    let pid = b.pid(&id);
    b.raw(&["delete", "--force", &id]).ok();
    assert!(b.state(&id).is_none());
    assert!(!b.listed_ids().contains(&id));
    wait_for(Duration::from_secs(10), "init gone", || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn delete_of_unknown_id_fails() {
    if !require_root("delete_of_unknown_id_fails") {
        return;
    }
    let b = Bundle::new("delunknown");
    let out = b.delete("no-such-box-here").fails();
    assert!(
        out.text().contains("not exist") || out.text().contains("not found"),
        "{out}"
    );
    b.raw(&["state", "no-such-box-here"]).fails();
}

#[test]
fn create_with_duplicate_id_fails_and_keeps_the_first() {
    if !require_root("create_with_duplicate_id_fails_and_keeps_the_first") {
        return;
    }
    let mut b = Bundle::new("dupid");
    b.args(&["sleep", "1000"]);
    let id = b.id();
    b.create(&id).ok();
    let pid = b.pid(&id);
    let out = b.create(&id).fails();
    assert!(out.text().contains("exist"), "{out}");
    assert_eq!(b.status(&id).as_deref(), Some("created"));
    assert_eq!(b.pid(&id), pid);
}

#[test]
fn list_shows_boxes_as_table_and_json() {
    if !require_root("list_shows_boxes_as_table_and_json") {
        return;
    }
    let mut b = Bundle::new("list");
    let id = b.start_sleeper();
    let table = b.raw(&["list"]).ok();
    let header = table.stdout.lines().next().unwrap_or_default().to_string();
    for col in ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] {
        assert!(header.contains(col), "header lacks {col}: {table}");
    }
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id}: {table}"));
    assert!(row.contains("running"), "{row}");
    let quiet = b.raw(&["list", "-q"]).ok();
    assert_eq!(quiet.stdout.trim(), id);
    let v = b.raw(&["list", "--format", "json"]).ok().json();
    let entry = v
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == json!(id)))
        .unwrap_or_else(|| panic!("{id} not in {v}"));
    assert_eq!(entry["status"], "running");
    assert_eq!(entry["pid"].as_i64(), Some(b.pid(&id) as i64));
}

#[test]
fn ps_json_lists_box_pids() {
    if !require_root("ps_json_lists_box_pids") {
        return;
    }
    let mut b = Bundle::new("ps");
    let id = b.start_sleeper();
    let v = b.raw(&["ps", "--format", "json", &id]).ok().json();
    let pids: Vec<i64> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p.as_i64())
        .collect();
    assert!(pids.contains(&(b.pid(&id) as i64)), "{v}");
    let table = b.raw(&["ps", &id]).ok();
    assert!(table.stdout.contains("PID"), "{table}");
    assert!(table.stdout.contains("sleep"), "{table}");
}

#[test]
fn pause_freezes_and_resume_thaws() {
    if !require_root("pause_freezes_and_resume_thaws") {
        return;
    }
    let mut b = Bundle::new("pause");
    b.script("i=0; while true; do i=$((i+1)); echo $i > /tmp/tick; sleep 0.05; done");
    let id = b.start_sleeper();
    let tick = b.rootfs().join("tmp/tick");
    wait_for(Duration::from_secs(10), "ticks", || {
        tick.exists().then_some(())
    });
    b.raw(&["pause", &id]).ok();
    assert_eq!(b.status(&id).as_deref(), Some("paused"));
    let before = fs::read_to_string(&tick).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        fs::read_to_string(&tick).unwrap_or_default(),
        before,
        "box ran while paused"
    );
    b.raw(&["resume", &id]).ok();
    assert_eq!(b.status(&id).as_deref(), Some("running"));
    wait_for(Duration::from_secs(10), "ticks after resume", || {
        (fs::read_to_string(&tick).unwrap_or_default() != before).then_some(())
    });
}

#[test]
fn events_stats_prints_one_json_object() {
    if !require_root("events_stats_prints_one_json_object") {
        return;
    }
    let mut b = Bundle::new("events");
    let id = b.start_sleeper();
    let out = b.raw(&["events", "--stats", &id]).ok();
    let v = out.json();
    assert_eq!(v["type"], "stats", "{out}");
    assert_eq!(v["id"], json!(id), "{out}");
    assert!(v["data"].is_object(), "{out}");
}

#[test]
fn spec_writes_config_and_refuses_to_overwrite() {
    if !require_root("spec_writes_config_and_refuses_to_overwrite") {
        return;
    }
    let b = Bundle::new("spec");
    let dir = TempDir::new("specdir");
    let mut cmd = b.command(&["spec"]);
    cmd.current_dir(&dir.path);
    b.finish(cmd).ok();
    let text = fs::read_to_string(dir.path.join("config.json")).expect("config.json written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(v["ociVersion"].is_string());
    assert_eq!(v["root"]["path"], "rootfs");
    assert!(v["process"]["args"].is_array());
    let types: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for ns in ["pid", "mount", "ipc", "uts"] {
        assert!(
            types.contains(&ns),
            "default spec lacks {ns} namespace: {types:?}"
        );
    }
    assert!(
        !types.contains(&"user"),
        "rootful spec has no user namespace"
    );
    let mut again = b.command(&["spec"]);
    again.current_dir(&dir.path);
    let out = b.finish(again).fails();
    assert!(out.text().contains("exist"), "{out}");
    assert_eq!(
        fs::read_to_string(dir.path.join("config.json")).expect("still there"),
        text
    );
    // --bundle writes into that directory instead of the cwd.
    let other = TempDir::new("specbundle");
    b.raw(&["spec".as_ref(), "--bundle".as_ref(), other.path.as_os_str()])
        .ok();
    assert!(other.path.join("config.json").exists());
}

#[test]
fn spec_rootless_has_user_namespace_with_mappings() {
    if !require_root("spec_rootless_has_user_namespace_with_mappings") {
        return;
    }
    let b = Bundle::new("specrootless");
    let dir = TempDir::new("specrl");
    let mut cmd = b.command(&["spec", "--rootless"]);
    cmd.current_dir(&dir.path);
    b.finish(cmd).ok();
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path.join("config.json")).expect("written"))
            .expect("JSON");
    let ns = v["linux"]["namespaces"].as_array().expect("namespaces");
    assert!(ns.iter().any(|n| n["type"] == "user"), "{ns:?}");
    assert!(
        !ns.iter().any(|n| n["type"] == "network"),
        "rootless spec shares the host network"
    );
    for key in ["uidMappings", "gidMappings"] {
        let m = v["linux"][key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(m.len(), 1, "{key}: {m:?}");
        assert_eq!(m[0]["containerID"], 0);
        assert_eq!(m[0]["hostID"], 0, "hostID is the caller's id (root here)");
        assert_eq!(m[0]["size"], 1);
    }
}

#[test]
fn features_prints_json() {
    if !require_root("features_prints_json") {
        return;
    }
    let b = Bundle::new("features");
    let v = b.raw(&["features"]).ok().json();
    assert!(v["ociVersionMin"].is_string(), "{v}");
    assert!(v["ociVersionMax"].is_string(), "{v}");
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .expect("linux.namespaces")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    for want in ["pid", "mount", "user", "network", "uts", "ipc", "cgroup"] {
        assert!(ns.contains(&want), "features lacks {want}: {v}");
    }
    let hooks = v["hooks"].as_array().expect("hooks");
    assert!(hooks.iter().any(|h| h == "createRuntime"), "{v}");
    assert!(v["linux"]["capabilities"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == "CAP_SYS_ADMIN")));
}
