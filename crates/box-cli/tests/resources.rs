//! Cgroup limits as root (the v1 hierarchy on this machine): memory OOM-kills a hog, pids stops a fork
//! bomb, cpu settings land in the box's cgroup, `update` changes limits of a running box, and the box's
//! cgroup nests under the caller's own.

mod support;

use std::fs;
use std::path::PathBuf;

use serde_json::json;
use support::*;

/// Host path of a v1 controller file for the box whose init is `pid`.
fn host_cgroup_file(pid: i32, controller: &str, file: &str) -> PathBuf {
    let path = cgroup_of(&pid.to_string(), controller)
        .unwrap_or_else(|| panic!("no {controller} line in /proc/{pid}/cgroup"));
    PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}/{file}"))
}

fn read_trim(path: &PathBuf) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

const MIB: u64 = 1024 * 1024;

#[test]
fn memory_limit_oom_kills_a_hog_and_spares_the_host() {
    if !require_root("memory_limit_oom_kills_a_hog_and_spares_the_host") {
        return;
    }
    let mut b = Bundle::new("oom");
    b.set(
        "/linux/resources/memory",
        json!({ "limit": 32 * MIB, "swap": 32 * MIB }),
    );
    b.script("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived");
    let out = b.run_once();
    assert!(
        !out.stdout.contains("survived"),
        "the hog was not stopped: {out}"
    );
    assert_eq!(
        out.code, 137,
        "init killed by the OOM killer (SIGKILL): {out}"
    );
    // The host (this test process and a fresh command) is fine.
    assert_eq!(sh("echo host-ok"), "host-ok\n");
}

#[test]
fn pids_limit_stops_a_fork_bomb_and_spares_the_host() {
    if !require_root("pids_limit_stops_a_fork_bomb_and_spares_the_host") {
        return;
    }
    let mut b = Bundle::new("forkbomb");
    b.set("/linux/resources/pids", json!({ "limit": 10 }));
    b.script("for i in $(seq 50); do sleep 5 & done; echo all-forked");
    let out = b.run_once();
    assert!(!out.stdout.contains("all-forked"), "{out}");
    assert!(
        out.text().contains("fork") || out.text().contains("resource temporarily unavailable"),
        "{out}"
    );
    assert_eq!(sh("echo host-ok"), "host-ok\n");
}

#[test]
fn cpu_and_pids_settings_land_in_the_box_cgroup() {
    if !require_root("cpu_and_pids_settings_land_in_the_box_cgroup") {
        return;
    }
    let mut b = Bundle::new("cpu");
    b.set(
        "/linux/resources/cpu",
        json!({ "shares": 512, "quota": 50000, "period": 100000 }),
    );
    b.set("/linux/resources/pids", json!({ "limit": 42 }));
    let id = b.start_sleeper();
    let pid = b.pid(&id);
    assert_eq!(
        read_trim(&host_cgroup_file(pid, "cpu", "cpu.shares")),
        "512"
    );
    assert_eq!(
        read_trim(&host_cgroup_file(pid, "cpu", "cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(
        read_trim(&host_cgroup_file(pid, "cpu", "cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(read_trim(&host_cgroup_file(pid, "pids", "pids.max")), "42");
}

#[test]
fn update_changes_pids_limit_of_a_running_box() {
    if !require_root("update_changes_pids_limit_of_a_running_box") {
        return;
    }
    let mut b = Bundle::new("updpids");
    b.set("/linux/resources/pids", json!({ "limit": 100 }));
    let id = b.start_sleeper();
    let file = host_cgroup_file(b.pid(&id), "pids", "pids.max");
    assert_eq!(read_trim(&file), "100");
    b.raw(&["update", "--pids-limit", "20", &id]).ok();
    assert_eq!(read_trim(&file), "20");
}

#[test]
fn update_changes_memory_limit_of_a_running_box() {
    if !require_root("update_changes_memory_limit_of_a_running_box") {
        return;
    }
    let mut b = Bundle::new("updmem");
    b.set("/linux/resources/memory", json!({ "limit": 128 * MIB }));
    let id = b.start_sleeper();
    let file = host_cgroup_file(b.pid(&id), "memory", "memory.limit_in_bytes");
    assert_eq!(read_trim(&file), (128 * MIB).to_string());
    b.raw(&["update", "--memory", "64M", "--memory-swap", "64M", &id])
        .ok();
    assert_eq!(read_trim(&file), (64 * MIB).to_string());
    // Also readable from inside the box (cgroup namespace: the box's cgroup is its root).
    let inside = b
        .exec(&id, &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
        .ok();
    assert_eq!(inside.stdout.trim(), (64 * MIB).to_string());
}

#[test]
fn update_resources_from_json_file() {
    if !require_root("update_resources_from_json_file") {
        return;
    }
    let mut b = Bundle::new("updjson");
    let id = b.start_sleeper();
    let res = b.path("resources.json");
    fs::write(&res, json!({ "pids": { "limit": 33 } }).to_string()).expect("write");
    b.raw(&[
        "update".as_ref(),
        "-r".as_ref(),
        res.as_os_str(),
        id.as_ref(),
    ])
    .ok();
    assert_eq!(
        read_trim(&host_cgroup_file(b.pid(&id), "pids", "pids.max")),
        "33"
    );
}

#[test]
fn box_cgroup_nests_under_the_callers_own() {
    if !require_root("box_cgroup_nests_under_the_callers_own") {
        return;
    }
    let mut b = Bundle::new("nesting");
    b.set("/linux/resources/memory", json!({ "limit": 256 * MIB }));
    b.set("/linux/resources/pids", json!({ "limit": 100 }));
    let id = b.start_sleeper();
    let pid = b.pid(&id).to_string();
    let me = std::process::id().to_string();
    for controller in ["memory", "pids"] {
        let own = cgroup_of(&me, controller).expect("own cgroup");
        let boxed = cgroup_of(&pid, controller).expect("box cgroup");
        let prefix = if own.ends_with('/') {
            own.clone()
        } else {
            format!("{own}/")
        };
        assert!(
            boxed.starts_with(&prefix),
            "{controller}: box cgroup {boxed} is not below the caller's {own}"
        );
    }
    // Every process of the box, exec'd ones included, stays there.
    let out = b.exec(&id, &["cat", "/proc/self/cgroup"]).ok();
    assert!(out.stdout.contains("memory:"), "{out}");
}

#[test]
fn cgroups_are_removed_on_delete() {
    if !require_root("cgroups_are_removed_on_delete") {
        return;
    }
    let mut b = Bundle::new("cgclean");
    b.set("/linux/resources/pids", json!({ "limit": 100 }));
    let id = b.start_sleeper();
    let dir = host_cgroup_file(b.pid(&id), "pids", "");
    assert!(dir.exists());
    b.raw(&["delete", "--force", &id]).ok();
    assert!(!dir.exists(), "{} left behind", dir.display());
}
