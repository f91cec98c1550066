//! Rootless boxes: the runtime runs as the unprivileged user `boxtest` (created by the harness with
//! subuid/subgid ranges) on `spec --rootless` bundles.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::*;

#[test]
fn rootless_run_propagates_exit_codes() {
    if !require_root("rootless_run_propagates_exit_codes") {
        return;
    }
    let mut b = Bundle::rootless("rlexit");
    for (args, want) in [
        (vec!["true"], 0),
        (vec!["false"], 1),
        (vec!["sh", "-c", "echo hi; exit 7"], 7),
    ] {
        b.args(&args);
        let out = b.run_once();
        assert_eq!(out.code, want, "{args:?}: {out}");
    }
}

#[test]
fn rootless_box_is_root_inside_with_hostname() {
    if !require_root("rootless_box_is_root_inside_with_hostname") {
        return;
    }
    let mut b = Bundle::rootless("rlid");
    b.set("/hostname", json!("rootlessbox"));
    b.script("id -u; id -g; hostname; cat /proc/self/uid_map");
    let out = b.run_once().ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..3], ["0", "0", "rootlessbox"], "{out}");
    let user = test_user();
    let map: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(map, ["0", &user.uid.to_string(), "1"], "{out}");
}

#[test]
fn rootless_lifecycle_create_start_state_delete() {
    if !require_root("rootless_lifecycle_create_start_state_delete") {
        return;
    }
    let mut b = Bundle::rootless("rllife");
    b.args(&["sleep", "1000"]);
    let id = b.id();
    b.create(&id).ok();
    assert_eq!(b.status(&id).as_deref(), Some("created"));
    let pid = b.pid(&id);
    assert!(alive(pid));
    let owner = fs::metadata(format!("/proc/{pid}"))
        .expect("proc entry")
        .uid();
    assert_eq!(
        owner,
        test_user().uid,
        "box init runs as the rootless user on the host"
    );
    b.start(&id).ok();
    assert_eq!(b.status(&id).as_deref(), Some("running"));
    assert!(b.listed_ids().contains(&id));
    b.delete(&id).fails();
    b.kill(&id, "KILL").ok();
    b.wait_status(&id, "stopped");
    b.delete(&id).ok();
    assert!(b.state(&id).is_none());
    assert!(!alive(pid));
}

#[test]
fn rootless_readonly_rootfs_rejects_writes() {
    if !require_root("rootless_readonly_rootfs_rejects_writes") {
        return;
    }
    let mut b = Bundle::rootless("rlro");
    b.set("/root/readonly", json!(true));
    b.script("touch /newfile && echo wrote");
    let out = b.run_once();
    assert_ne!(out.code, 0, "{out}");
    assert!(out.text().contains("read-only"), "{out}");
    assert!(!b.rootfs().join("newfile").exists());
}

#[test]
fn rootless_exec_runs_in_the_box() {
    if !require_root("rootless_exec_runs_in_the_box") {
        return;
    }
    let mut b = Bundle::rootless("rlexec");
    b.set("/hostname", json!("rlexec"));
    let id = b.start_sleeper();
    let out = b.exec(&id, &["sh", "-c", "hostname; id -u; exit 4"]);
    assert_eq!(out.code, 4, "{out}");
    assert_eq!(out.stdout, "rlexec\n0\n");
}

#[test]
fn rootless_multi_range_mapping_uses_newuidmap() {
    if !require_root("rootless_multi_range_mapping_uses_newuidmap") {
        return;
    }
    let user = test_user();
    let mut b = Bundle::rootless("rlmulti");
    b.set(
        "/linux/uidMappings",
        json!([
            { "containerID": 0, "hostID": user.uid, "size": 1 },
            { "containerID": 1, "hostID": user.subuid_start, "size": 65536 }
        ]),
    );
    b.set(
        "/linux/gidMappings",
        json!([
            { "containerID": 0, "hostID": user.gid, "size": 1 },
            { "containerID": 1, "hostID": user.subgid_start, "size": 65536 }
        ]),
    );
    b.caps(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    b.script("wc -l < /proc/self/uid_map; wc -l < /proc/self/gid_map; touch /tmp/f && chown 1000:1000 /tmp/f && stat -c '%u:%g' /tmp/f");
    let out = b.run_once().ok();
    assert_eq!(out.stdout, "2\n2\n1000:1000\n", "{out}");
    let meta = fs::metadata(b.rootfs().join("tmp/f")).expect("file made in the box");
    assert_eq!(meta.uid(), user.subuid_start + 999);
    assert_eq!(meta.gid(), user.subgid_start + 999);
}

#[test]
fn rootless_cannot_see_or_touch_the_host() {
    if !require_root("rootless_cannot_see_or_touch_the_host") {
        return;
    }
    let mut b = Bundle::rootless("rlhost");
    // Root inside the box is the unprivileged user outside: host-owned files stay unwritable.
    let host_file = b.path("root-owned");
    fs::write(&host_file, "host\n").expect("write");
    b.add_mount(json!({
        "destination": "/mnt/h", "type": "bind", "source": host_file, "options": ["bind"]
    }));
    b.script("echo pwned > /mnt/h && echo wrote; exit 0");
    let out = b.run_once().ok();
    assert!(!out.stdout.contains("wrote"), "{out}");
    assert_eq!(fs::read_to_string(&host_file).expect("read"), "host\n");
}

#[test]
fn rootless_box_uses_a_delegated_cgroup_for_its_limits() {
    if !require_root("rootless_box_uses_a_delegated_cgroup_for_its_limits") {
        return;
    }
    let Some(own) = cgroup_of("self", "pids") else {
        // A cgroup v2-only host: delegation is a subtree chown there, covered by unit tests.
        skip(
            "rootless_box_uses_a_delegated_cgroup_for_its_limits",
            "no cgroup v1 pids hierarchy",
        );
        return;
    };
    let user = test_user();
    let mut b = Bundle::rootless("rldeleg");
    // Delegate a cgroup below our own to the test user, as a session manager would.
    let name = format!("boxtest-deleg-{}", std::process::id());
    let parent = Path::new("/sys/fs/cgroup/pids")
        .join(own.trim_start_matches('/'))
        .join(&name);
    fs::create_dir(&parent).expect("mkdir delegated cgroup");
    struct Rmdir(std::path::PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _cleanup = Rmdir(parent.clone());
    for p in [
        parent.clone(),
        parent.join("cgroup.procs"),
        parent.join("tasks"),
    ] {
        std::os::unix::fs::chown(&p, Some(user.uid), Some(user.gid)).expect("chown delegation");
    }
    let id = b.id();
    b.set("/linux/cgroupsPath", json!(format!("{name}/{id}")));
    b.set("/linux/resources", json!({ "pids": { "limit": 23 } }));
    b.script("cat /sys/fs/cgroup/pids/pids.max");
    let out = b.run(&id).ok();
    assert_eq!(out.stdout.trim(), "23", "the limit reached the box: {out}");
    assert!(
        !parent.join(&id).exists(),
        "the box's cgroup is removed when it is deleted"
    );
}

#[test]
fn rootless_kill_all_without_a_cgroup_reaches_every_process_of_the_box() {
    if !require_root("rootless_kill_all_without_a_cgroup_reaches_every_process_of_the_box") {
        return;
    }
    let mut b = Bundle::rootless("rlkillall");
    // A box's init has no handler for USR1, so the kernel keeps it from the init (pid 1 of
    // its namespace); the other process dies of it.
    b.script("sleep 1000 & exec sleep 1001");
    let id = b.start_sleeper();
    let pids = || -> Vec<i32> {
        let out = b.raw(&["ps", "--format", "json", &id]).ok();
        serde_json::from_str(&out.stdout).expect("ps json")
    };
    wait_for(Duration::from_secs(5), "the box's second process", || {
        (pids().len() >= 2).then_some(())
    });
    let init = b.pid(&id);
    let other = *pids()
        .iter()
        .find(|p| **p != init)
        .expect("a second process");
    b.raw(&["kill", "--all", &id, "USR1"]).ok();
    let gone = |pid: i32| match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    };
    wait_for(Duration::from_secs(5), "the second process to die", || {
        gone(other).then_some(())
    });
    assert_eq!(b.status(&id).as_deref(), Some("running"));
    b.raw(&["kill", "--all", &id, "KILL"]).ok();
    b.wait_status(&id, "stopped");
}
