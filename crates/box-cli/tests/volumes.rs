//! `box volume` end to end on the offline host image: create/ls/inspect/rm/prune, a new volume
//! starting with the image's content, data outliving the box, `rm -v` for anonymous volumes,
//! and `--mount` for volumes and read-only binds.

mod support;

use std::path::PathBuf;

use support::*;

type Data = BoxData;

#[test]
fn volume_lifecycle_copy_up_and_data_outliving_the_box() {
    if !require_root("volume_lifecycle_copy_up_and_data_outliving_the_box") {
        return;
    }
    let d = Data::new("v");
    assert_eq!(d.ok(&["volume", "create", "vol1"]).trim(), "vol1");
    let generated = d.ok(&["volume", "create"]).trim().to_string();
    assert_eq!(generated.len(), 64, "{generated}");
    let ls = d.ok(&["volume", "ls", "-q"]);
    assert!(
        ls.lines().any(|l| l == "vol1") && ls.contains(&generated),
        "{ls}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["volume", "ls", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(2));

    // A new named volume mounted at /etc starts with the image's /etc.
    let out = d.ok(&[
        "run",
        "--name",
        "w",
        "-v",
        "etcvol:/etc",
        "host",
        "sh",
        "-c",
        "cat /etc/passwd >/dev/null && echo kept > /etc/mine && echo ok",
    ]);
    assert_eq!(out.trim(), "ok");
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["volume", "inspect", "etcvol"])).unwrap();
    let mp = PathBuf::from(inspect[0]["Mountpoint"].as_str().unwrap());
    assert!(
        mp.join("passwd").exists(),
        "copy-up missing in {}",
        mp.display()
    );
    assert_eq!(inspect[0]["UsedBy"][0], "w");

    // In use: refused without -f.
    let out = d.boxc(&["volume", "rm", "etcvol"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by box w"));

    // The data outlives the box, and a later box sees it (no second copy-up over it).
    d.ok(&["rm", "w"]);
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        "etcvol:/etc",
        "host",
        "cat",
        "/etc/mine",
    ]);
    assert_eq!(out.trim(), "kept");
    let out = d.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=etcvol,target=/x,readonly",
        "host",
        "sh",
        "-c",
        "cat /x/mine; echo no > /x/mine || echo refused",
    ]);
    assert!(out.contains("kept") && out.contains("refused"), "{out}");

    // rm, prune.
    assert_eq!(d.ok(&["volume", "rm", "vol1"]).trim(), "vol1");
    assert!(!d.boxc(&["volume", "inspect", "vol1"]).status.success());
    let pruned = d.ok(&["volume", "prune", "-f"]);
    assert!(
        pruned.contains("etcvol") && pruned.contains(&generated),
        "{pruned}"
    );
    assert!(!mp.exists());
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "");
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_force_removes_used_ones() {
    if !require_root("anonymous_volumes_go_with_rm_v_and_force_removes_used_ones") {
        return;
    }
    let d = Data::new("v");
    d.ok(&[
        "run",
        "--name",
        "a",
        "-v",
        "/data",
        "host",
        "sh",
        "-c",
        "echo hi > /data/f",
    ]);
    let names = d.ok(&["volume", "ls", "-q"]);
    assert_eq!(names.lines().count(), 1, "{names}");
    d.ok(&["rm", "-v", "a"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "");

    d.ok(&["run", "--name", "b", "-v", "named:/data", "host", "true"]);
    d.ok(&["rm", "-v", "b"]);
    assert_eq!(
        d.ok(&["volume", "ls", "-q"]).trim(),
        "named",
        "named volumes stay"
    );
    d.ok(&["create", "--name", "c", "-v", "named:/data", "host", "true"]);
    assert!(!d.boxc(&["volume", "rm", "named"]).status.success());
    d.ok(&["volume", "rm", "-f", "named"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "");
}

#[test]
fn mount_flag_binds_read_only() {
    if !require_root("mount_flag_binds_read_only") {
        return;
    }
    let d = Data::new("v");
    let host = d.0.with_extension("bind");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "from host").unwrap();
    let spec = format!(
        "type=bind,source={},target=/b,readonly,bind-propagation=rprivate",
        host.display()
    );
    let out = d.ok(&[
        "run",
        "--rm",
        "--mount",
        &spec,
        "host",
        "sh",
        "-c",
        "cat /b/f; echo x > /b/g 2>/dev/null || echo refused",
    ]);
    assert!(
        out.contains("from host") && out.contains("refused"),
        "{out}"
    );
    assert!(!host.join("g").exists());
    let bad = d.boxc(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,target=/b",
        "host",
        "true",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("needs source"));
    std::fs::remove_dir_all(&host).unwrap();
}
