//! Namespace and root options beyond the defaults: joining another box's namespaces by path, a
//! user namespace for a rootful box, time namespace offsets, personality, `--no-pivot`, and the
//! `--log` file engines read errors from.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;

use serde_json::json;
use support::*;

#[test]
fn namespaces_given_by_path_are_joined() {
    if !require_root("namespaces_given_by_path_are_joined") {
        return;
    }
    let mut a = Bundle::new("nsjoin-a");
    let id = a.start_sleeper();
    let pid = a.pid(&id);
    let mut b = Bundle::new("nsjoin-b");
    for (kind, proc) in [("network", "net"), ("uts", "uts"), ("ipc", "ipc")] {
        b.namespace(kind, Some(&format!("/proc/{pid}/ns/{proc}")));
    }
    b.set("/hostname", json!(null));
    b.script("for n in net uts ipc mnt; do readlink /proc/self/ns/$n; done");
    let out = b.run_once().ok().stdout;
    let seen: Vec<&str> = out.lines().collect();
    for (i, proc) in ["net", "uts", "ipc"].iter().enumerate() {
        let want = fs::read_link(format!("/proc/{pid}/ns/{proc}")).expect("ns of box a");
        assert_eq!(seen.get(i).copied(), want.to_str(), "{proc}: {out}");
    }
    // The mount namespace was not given by path: it is the second box's own.
    let a_mnt = fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("mnt of box a");
    assert_ne!(seen.get(3).copied(), a_mnt.to_str(), "{out}");
}

/// Gives `b` a new user namespace mapping its root to host ids `base`.. (65536 of them), and
/// its rootfs to that root, as with any user-namespaced box.
fn map_root_to(b: &mut Bundle, base: u32) {
    b.namespace("user", None);
    for key in ["/linux/uidMappings", "/linux/gidMappings"] {
        b.set(
            key,
            json!([{ "containerID": 0, "hostID": base, "size": 65536 }]),
        );
    }
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{base}:{base}")])
        .arg(b.rootfs())
        .status()
        .expect("chown");
    assert!(status.success());
}

#[test]
fn a_box_with_a_new_user_namespace_joins_the_hosts_namespaces_by_path() {
    if !require_root("a_box_with_a_new_user_namespace_joins_the_hosts_namespaces_by_path") {
        return;
    }
    const BASE: u32 = 310_000;
    let mut a = Bundle::new("nsjoin-host");
    let id = a.start_sleeper();
    let pid = a.pid(&id);
    let mut b = Bundle::new("nsjoin-userns");
    map_root_to(&mut b, BASE);
    for (kind, proc) in [("network", "net"), ("ipc", "ipc")] {
        b.namespace(kind, Some(&format!("/proc/{pid}/ns/{proc}")));
    }
    // An mqueue file system belongs to its IPC namespace's owner (the host's user namespace
    // here): the box's root may not mount it, as with runc.
    let mounts: Vec<serde_json::Value> = b
        .get("/mounts")
        .expect("mounts")
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] != "mqueue")
        .cloned()
        .collect();
    b.set("/mounts", json!(mounts));
    b.script("for n in net ipc user; do readlink /proc/self/ns/$n; done");
    let out = b.run_once().ok().stdout;
    let seen: Vec<&str> = out.lines().collect();
    for (i, proc) in ["net", "ipc"].iter().enumerate() {
        let want = fs::read_link(format!("/proc/{pid}/ns/{proc}")).expect("ns of box a");
        assert_eq!(seen.get(i).copied(), want.to_str(), "{proc}: {out}");
    }
    let host_user = fs::read_link("/proc/self/ns/user").expect("own user ns");
    assert_ne!(seen.get(2).copied(), host_user.to_str(), "{out}");
}

#[test]
fn rootful_box_with_a_user_namespace_maps_root_to_a_host_range() {
    if !require_root("rootful_box_with_a_user_namespace_maps_root_to_a_host_range") {
        return;
    }
    const BASE: u32 = 300_000;
    let mut b = Bundle::new("userns");
    map_root_to(&mut b, BASE);
    b.script("id -u; id -g; cat /proc/self/uid_map; touch /tmp/made-inside");
    let out = b.run_once().ok().stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"0"), "{out}");
    assert_eq!(lines.get(1), Some(&"0"), "{out}");
    assert!(
        out.contains(&BASE.to_string()),
        "uid_map names the host range: {out}"
    );
    let meta = fs::metadata(b.rootfs().join("tmp/made-inside")).expect("file made in the box");
    assert_eq!(meta.uid(), BASE, "root in the box is {BASE} on the host");
}

#[test]
fn time_namespace_offsets_shift_the_boot_clock() {
    if !require_root("time_namespace_offsets_shift_the_boot_clock") {
        return;
    }
    if !std::path::Path::new("/proc/self/ns/time").exists() {
        // Never silently: the kernel lacks time namespaces, so the box must refuse clearly.
        let mut b = Bundle::new("timens-missing");
        b.namespace("time", None);
        let out = b.run_once().fails();
        assert!(out.stderr.contains("time namespace"), "{out}");
        return;
    }
    let mut b = Bundle::new("timens");
    b.namespace("time", None);
    b.set(
        "/linux/timeOffsets",
        json!({ "boottime": { "secs": 86400000, "nanosecs": 0 } }),
    );
    b.script("cut -d. -f1 /proc/uptime; readlink /proc/self/ns/time");
    let out = b.run_once().ok().stdout;
    let uptime: u64 = out
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        uptime >= 86_400_000,
        "boot clock shifted by 1000 days: {out}"
    );
    let host = fs::read_link("/proc/self/ns/time").expect("host time ns");
    assert_ne!(out.lines().nth(1), host.to_str(), "{out}");
}

#[test]
fn personality_linux32_reports_a_32_bit_machine() {
    if !require_root("personality_linux32_reports_a_32_bit_machine") {
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        skip(
            "personality_linux32_reports_a_32_bit_machine",
            "LINUX32 is checked on x86_64 only",
        );
        return;
    }
    let mut b = Bundle::new("persona");
    b.set("/linux/personality", json!({ "domain": "LINUX32" }));
    b.args(&["uname", "-m"]);
    assert_eq!(b.run_once().ok().stdout.trim(), "i686");
}

#[test]
fn no_pivot_uses_chroot_and_still_hides_the_host() {
    if !require_root("no_pivot_uses_chroot_and_still_hides_the_host") {
        return;
    }
    let mut b = Bundle::new("nopivot");
    b.rootfs_file("marker", "inside\n", false);
    b.script("cat /marker; ls /proc/1/root/marker && echo root-is-rootfs");
    let id = b.id();
    let bundle = b.bundle_path();
    let out = b
        .raw(&[
            "run".as_ref(),
            "--no-pivot".as_ref(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
            id.as_ref(),
        ])
        .ok();
    assert!(out.stdout.starts_with("inside\n"), "{out}");
    assert!(out.stdout.contains("root-is-rootfs"), "{out}");
}

#[test]
fn errors_go_to_the_log_file_as_json() {
    if !require_root("errors_go_to_the_log_file_as_json") {
        return;
    }
    let mut b = Bundle::new("logjson");
    b.args(&["no-such-program-anywhere"]);
    let log = b.path("runtime.log");
    let id = b.id();
    let bundle = b.bundle_path();
    let out = b.raw(&[
        "--log".as_ref(),
        log.as_os_str(),
        "--log-format".as_ref(),
        "json".as_ref(),
        "create".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        id.as_ref(),
    ]);
    assert!(
        !out.success(),
        "create of a missing program must fail: {out}"
    );
    let text = fs::read_to_string(&log).expect("log written");
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a line")).expect("JSON line");
    assert_eq!(last["level"], "error", "{text}");
    assert!(
        last["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-program-anywhere")),
        "{text}"
    );
    assert!(last["time"].is_string(), "{text}");
    assert!(b.state(&id).is_none(), "nothing left behind");
}

#[test]
fn a_cgroup_namespace_makes_the_box_cgroup_its_root() {
    if !require_root("a_cgroup_namespace_makes_the_box_cgroup_its_root") {
        return;
    }
    let mut b = Bundle::new("cgroupns");
    b.namespace("cgroup", None);
    b.script("readlink /proc/self/ns/cgroup; cat /proc/self/cgroup");
    let out = b.run_once().ok().stdout;
    let mut lines = out.lines();
    let host = fs::read_link("/proc/self/ns/cgroup").expect("own cgroup ns");
    assert_ne!(lines.next(), host.to_str(), "{out}");
    // Every hierarchy's path starts at the box's own cgroup.
    let paths: Vec<&str> = lines.collect();
    assert!(!paths.is_empty(), "{out}");
    assert!(paths.iter().all(|l| l.ends_with(":/")), "{out}");
    // Outside, the same box cgroup has a real path.
    let own = fs::read_to_string("/proc/self/cgroup").expect("own cgroups");
    assert!(own.lines().any(|l| !l.ends_with(":/")), "{own}");
}
