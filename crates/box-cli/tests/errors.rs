//! Failures a caller must be able to tell apart: missing or invalid config.json, a missing rootfs,
//! args[0] not found. Each exits non-zero, names the problem, and leaves no state behind.

mod support;

use std::fs;
use std::os::unix::fs::symlink;

use serde_json::json;
use support::*;

/// `create --bundle DIR ID` against an arbitrary directory.
fn create_in(b: &Bundle, dir: &std::path::Path, id: &str) -> Outcome {
    b.raw(&[
        "create".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ])
}

#[test]
fn missing_config_json_is_reported() {
    if !require_root("missing_config_json_is_reported") {
        return;
    }
    let b = Bundle::new("noconfig");
    let empty = b.path("empty-bundle");
    fs::create_dir_all(empty.join("rootfs")).expect("mkdir");
    let id = b.id();
    let out = create_in(&b, &empty, &id).fails();
    assert!(out.text().contains("config.json"), "{out}");
    assert!(!b.listed_ids().contains(&id));
}

#[test]
fn invalid_config_json_is_reported() {
    if !require_root("invalid_config_json_is_reported") {
        return;
    }
    let b = Bundle::new("badjson");
    let bad = b.path("bad-bundle");
    fs::create_dir_all(&bad).expect("mkdir");
    symlink(b.rootfs(), bad.join("rootfs")).expect("symlink rootfs");
    fs::write(
        bad.join("config.json"),
        "{ \"ociVersion\": \"1.0.2\", \"process\": ",
    )
    .expect("write");
    let id = b.id();
    let out = create_in(&b, &bad, &id).fails();
    assert!(
        out.text().contains("json") || out.text().contains("config"),
        "{out}"
    );
    assert!(!b.listed_ids().contains(&id));
}

#[test]
fn missing_rootfs_is_reported() {
    if !require_root("missing_rootfs_is_reported") {
        return;
    }
    let mut b = Bundle::new("norootfs");
    b.set("/root/path", json!("no-such-rootfs"));
    let id = b.id();
    let out = b.create(&id).fails();
    assert!(out.text().contains("no-such-rootfs"), "{out}");
    assert!(!b.listed_ids().contains(&id));
}

#[test]
fn run_of_missing_executable_fails_and_leaves_nothing() {
    if !require_root("run_of_missing_executable_fails_and_leaves_nothing") {
        return;
    }
    let mut b = Bundle::new("noexe");
    b.args(&["no-such-binary"]);
    let id = b.id();
    let out = b.run(&id);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.text().contains("no-such-binary"), "{out}");
    assert!(!b.listed_ids().contains(&id));
    // create checks too, before start.
    let id = b.id();
    let out = b.create(&id).fails();
    assert!(out.text().contains("no-such-binary"), "{out}");
    assert!(!b.listed_ids().contains(&id));
}

#[test]
fn start_of_unknown_box_fails() {
    if !require_root("start_of_unknown_box_fails") {
        return;
    }
    let b = Bundle::new("startunknown");
    let out = b.start("no-such-box").fails();
    assert!(
        out.text().contains("no-such-box") || out.text().contains("not exist"),
        "{out}"
    );
    b.kill("no-such-box", "KILL").fails();
}

#[test]
fn invalid_container_id_is_rejected() {
    if !require_root("invalid_container_id_is_rejected") {
        return;
    }
    let b = Bundle::new("badid");
    for bad in ["../escape", "a/b"] {
        create_in(&b, &b.bundle_path(), bad).fails();
    }
    assert!(!b.state_root().join("..").join("escape").exists());
}

#[test]
fn systemd_cgroup_flag_is_a_clear_error_or_works() {
    if !require_root("systemd_cgroup_flag_is_a_clear_error_or_works") {
        return;
    }
    // Box does not support systemd cgroups: the flag must fail with a message saying so, and leave
    // nothing behind (runc instead talks to systemd, absent here, so it fails too).
    let b = Bundle::new("systemdcg");
    let id = b.id();
    let bundle = b.bundle_path();
    let out = b.raw(&[
        "--systemd-cgroup".as_ref(),
        "run".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        id.as_ref(),
    ]);
    assert_ne!(out.code, 0, "{out}");
    if !is_peer_runtime() {
        assert!(out.text().contains("not supported"), "{out}");
    }
    assert!(!b.listed_ids().contains(&id));
}
