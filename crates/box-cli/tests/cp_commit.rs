//! `box cp` both ways (a running and a stopped box; symlinks inside the box never lead to the
//! host), `box commit` then running the new image, and `box container prune`.
mod support;

use std::path::PathBuf;

use support::*;

type Data = BoxData;

#[test]
fn cp_both_ways_stays_inside_the_box() {
    if !require_root("cp_both_ways_stays_inside_the_box") {
        return;
    }
    let d = Data::new("c");
    let host = d.0.with_extension("host");
    let _ = std::fs::remove_dir_all(&host);
    std::fs::create_dir_all(host.join("out")).unwrap();
    d.ok(&["run", "-d", "--name", "r", "host", "sleep", "60"]);
    d.ok(&[
        "exec",
        "r",
        "sh",
        "-c",
        "mkdir -p /d/sub && echo hi > /d/sub/f && ln -s / /d/esc && ln -s /etc /etclink",
    ]);
    // Out of a running box: the directory recursively, the symlink kept as a symlink.
    let out = host.join("out");
    d.ok(&["cp", "r:/d", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("d/sub/f")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("d/esc")).unwrap(),
        PathBuf::from("/")
    );
    // Into it through a symlink pointing to /: lands in the box's /tmp, not the host's.
    let marker = format!("box-cp-marker-{}", std::process::id());
    let src = host.join(&marker);
    std::fs::write(&src, "from host").unwrap();
    d.ok(&["cp", src.to_str().unwrap(), "r:/d/esc/tmp/"]);
    assert!(
        !PathBuf::from("/tmp").join(&marker).exists(),
        "escaped to the host"
    );
    let inside = d.ok(&["exec", "r", "cat", &format!("/tmp/{marker}")]);
    assert_eq!(inside, "from host");
    d.ok(&["cp", src.to_str().unwrap(), "r:/etclink/copied"]);
    assert!(
        !PathBuf::from("/etc/copied").exists(),
        "escaped to the host's /etc"
    );
    assert_eq!(d.ok(&["exec", "r", "cat", "/etc/copied"]), "from host");
    // Reading through the symlink also stays inside.
    d.ok(&[
        "cp",
        "r:/d/esc/etc/copied",
        host.join("back").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("back")).unwrap(),
        "from host"
    );

    // A stopped box: its snapshot is mounted privately for the copy.
    d.ok(&["stop", "-t", "1", "r"]);
    d.ok(&["cp", src.to_str().unwrap(), "r:/stopped.txt"]);
    d.ok(&["cp", "r:/stopped.txt", host.join("again").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.join("again")).unwrap(),
        "from host"
    );
    // A tar on stdout.
    let tar = d.boxc(&["cp", "r:/d/sub", "-"]);
    assert!(tar.status.success());
    let mut a = tar::Archive::new(&tar.stdout[..]);
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "sub/f"), "{names:?}");
    // Errors say what is wrong.
    let bad = d.boxc(&["cp", "r:/nope", host.to_str().unwrap()]);
    assert!(!bad.status.success());
    let bad = d.boxc(&["cp", "/a", "/b"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BOX:PATH"));
    std::fs::remove_dir_all(&host).unwrap();
}

#[test]
fn commit_then_run_the_new_image_and_prune_stopped_boxes() {
    if !require_root("commit_then_run_the_new_image_and_prune_stopped_boxes") {
        return;
    }
    let d = Data::new("c");
    d.ok(&[
        "run",
        "--name",
        "c",
        "-e",
        "GREETING=hello",
        "-w",
        "/work",
        "host",
        "sh",
        "-c",
        "mkdir -p /work && echo committed > /work/file && rm /etc/hostname.orig 2>/dev/null; \
         rm -f /etc/profile; true",
    ]);
    let id = d.ok(&["commit", "-m", "test", "c", "committed:v1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let out = d.ok(&[
        "run",
        "--rm",
        "committed:v1",
        "sh",
        "-c",
        "cat file; echo $GREETING; pwd; test -e /etc/profile && echo still || echo gone",
    ]);
    assert_eq!(out, "committed\nhello\n/work\ngone\n");
    let images = d.ok(&["images"]);
    assert!(images.contains("committed"), "{images}");

    // container prune: stopped boxes go, running ones stay.
    d.ok(&["run", "-d", "--name", "up", "host", "sleep", "60"]);
    d.ok(&["create", "--name", "made", "host", "true"]);
    let out = d.ok(&["container", "prune", "-f"]);
    assert!(out.contains("Total removed boxes: 2"), "{out}");
    let left = d.ok(&["ps", "-a", "--format", "json"]);
    assert!(
        left.contains("\"up\"") && !left.contains("\"made\""),
        "{left}"
    );
}
