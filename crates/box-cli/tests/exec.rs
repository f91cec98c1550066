//! `exec` into a running box, as root: output and exit code, --env/--cwd/--user, --process JSON,
//! --detach with --pid-file, and that exec'd processes join the box's namespaces and cgroup.

mod support;

use std::fs;
use std::time::Duration;

use serde_json::json;
use support::*;

#[test]
fn exec_returns_output_and_exit_code() {
    if !require_root("exec_returns_output_and_exit_code") {
        return;
    }
    let mut b = Bundle::new("execcode");
    let id = b.start_sleeper();
    let out = b.exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.code, 3, "{out}");
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.contains("err"));
    b.exec(&id, &["true"]).ok();
}

#[test]
fn exec_env_cwd_and_user_flags_apply() {
    if !require_root("exec_env_cwd_and_user_flags_apply") {
        return;
    }
    let mut b = Bundle::new("execflags");
    b.set("/process/user/gid", json!(7));
    let id = b.start_sleeper();
    let out = b
        .raw(&[
            "exec",
            "--env",
            "BOX_E=val",
            "--cwd",
            "/tmp",
            "--user",
            "1000:1000",
            &id,
            "sh",
            "-c",
            "echo $BOX_E; pwd; id -u; id -g",
        ])
        .ok();
    assert_eq!(out.stdout, "val\n/tmp\n1000\n1000\n");
    // A uid alone keeps the box's gid, as with runc.
    let out = b
        .raw(&["exec", "--user", "1000", &id, "sh", "-c", "id -u; id -g"])
        .ok();
    assert_eq!(out.stdout, "1000\n7\n");
}

#[test]
fn exec_process_json() {
    if !require_root("exec_process_json") {
        return;
    }
    let mut b = Bundle::new("execjson");
    let id = b.start_sleeper();
    let process = b.path("process.json");
    fs::write(
        &process,
        json!({
            "terminal": false,
            "user": { "uid": 1000, "gid": 1000 },
            "args": ["sh", "-c", "echo $FROM_JSON; pwd; id -u"],
            "env": ["PATH=/bin", "FROM_JSON=yes"],
            "cwd": "/home/user"
        })
        .to_string(),
    )
    .expect("write process.json");
    let out = b
        .raw(&[
            "exec".as_ref(),
            "--process".as_ref(),
            process.as_os_str(),
            id.as_ref(),
        ])
        .ok();
    assert_eq!(out.stdout, "yes\n/home/user\n1000\n");
}

#[test]
fn exec_detach_writes_pid_file() {
    if !require_root("exec_detach_writes_pid_file") {
        return;
    }
    let mut b = Bundle::new("execdetach");
    let id = b.start_sleeper();
    let pidfile = b.path("exec.pid");
    b.raw(&[
        "exec".as_ref(),
        "--detach".as_ref(),
        "--pid-file".as_ref(),
        pidfile.as_os_str(),
        id.as_ref(),
        "sleep".as_ref(),
        "999".as_ref(),
    ])
    .ok();
    let pid: i32 = fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("number");
    assert!(alive(pid));
    let ps = b.raw(&["ps", "--format", "json", &id]).ok().json();
    assert!(
        ps.as_array()
            .expect("array")
            .iter()
            .any(|p| p.as_i64() == Some(pid as i64)),
        "exec'd pid {pid} not in ps: {ps}"
    );
    b.raw(&["delete", "--force", &id]).ok();
    wait_for(Duration::from_secs(10), "exec'd process gone", || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn exec_joins_the_box_namespaces_and_cgroup() {
    if !require_root("exec_joins_the_box_namespaces_and_cgroup") {
        return;
    }
    let mut b = Bundle::new("execns");
    b.set("/hostname", json!("exechost"));
    let id = b.start_sleeper();
    let init = b.pid(&id);
    let out = b
        .exec(
            &id,
            &[
                "sh", "-c",
                "hostname; echo $$; for n in pid mnt uts ipc net; do readlink /proc/self/ns/$n; done; \
                 test \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" && echo same-cgroup",
            ],
        )
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "exechost");
    assert_ne!(lines[1], "1", "exec'd process is not init");
    for (i, n) in ["pid", "mnt", "uts", "ipc", "net"].iter().enumerate() {
        let want = fs::read_link(format!("/proc/{init}/ns/{n}")).expect("init ns");
        assert_eq!(
            lines[2 + i],
            want.display().to_string(),
            "{n} namespace differs"
        );
    }
    assert_eq!(lines[7], "same-cgroup", "{out}");
}

#[test]
fn exec_into_a_stopped_box_fails() {
    if !require_root("exec_into_a_stopped_box_fails") {
        return;
    }
    let mut b = Bundle::new("execstopped");
    b.args(&["true"]);
    let id = b.id();
    b.create(&id).ok();
    b.start(&id).ok();
    b.wait_status(&id, "stopped");
    b.exec(&id, &["true"]).fails();
}

#[test]
fn exec_of_a_missing_command_fails() {
    if !require_root("exec_of_a_missing_command_fails") {
        return;
    }
    let mut b = Bundle::new("execmissing");
    let id = b.start_sleeper();
    let out = b.exec(&id, &["no-such-command"]).fails();
    assert!(out.text().contains("no-such-command"), "{out}");
    assert_eq!(b.status(&id).as_deref(), Some("running"));
}
