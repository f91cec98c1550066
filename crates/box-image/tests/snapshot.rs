//! Snapshot tests: overlay mounts (rootful, in a user namespace, with lowerdir past a page),
//! the copy fallback, diff, and that unmount + remove leave nothing behind.

mod imgsupport;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use box_image::snapshot::{Change, ChangeKind, MountKind, Snapshot};
use imgsupport::{mounts_under, require_root, whiteout, write, TempDir};

fn change(kind: ChangeKind, path: &str) -> Change {
    Change {
        kind,
        path: PathBuf::from(path),
    }
}

/// Two layers: bottom has /etc/a, /etc/b, /dir/x, /keep; top changes /etc/a and deletes /dir/x.
fn two_layers(tmp: &TempDir, with_whiteout: bool) -> Vec<PathBuf> {
    let bottom = tmp.join("layers/bottom");
    let top = tmp.join("layers/top");
    write(&bottom, "etc/a", "a-bottom");
    write(&bottom, "etc/b", "b-bottom");
    write(&bottom, "dir/x", "x");
    write(&bottom, "keep", "keep");
    write(&top, "etc/a", "a-top");
    if with_whiteout {
        whiteout(&top, "dir/x");
    }
    vec![top, bottom]
}

#[test]
fn snapshot_overlay_shows_layers_writes_upper_and_diffs() {
    if !require_root("snapshot_overlay_shows_layers_writes_upper_and_diffs") {
        return;
    }
    let tmp = TempDir::new("snap-overlay");
    let lowers = two_layers(&tmp, true);
    let data = tmp.join("data");
    let mut snap = Snapshot::create(&data, "box1", &lowers, false).unwrap();
    assert_eq!(snap.mount().unwrap(), MountKind::Overlay);
    assert!(snap.is_mounted().unwrap());
    let merged = snap.merged();
    assert_eq!(fs::read_to_string(merged.join("etc/a")).unwrap(), "a-top");
    assert_eq!(
        fs::read_to_string(merged.join("etc/b")).unwrap(),
        "b-bottom"
    );
    assert!(
        !merged.join("dir/x").exists(),
        "whiteout in the top layer hides dir/x"
    );

    fs::write(merged.join("new"), "n").unwrap();
    fs::write(merged.join("etc/b"), "b-box").unwrap();
    fs::remove_file(merged.join("keep")).unwrap();
    assert_eq!(fs::read_to_string(snap.upper().join("new")).unwrap(), "n");
    assert_eq!(
        fs::read_to_string(lowers[1].join("etc/b")).unwrap(),
        "b-bottom"
    );

    let diff = snap.diff().unwrap();
    assert_eq!(
        diff,
        vec![
            change(ChangeKind::Changed, "/etc"),
            change(ChangeKind::Changed, "/etc/b"),
            change(ChangeKind::Deleted, "/keep"),
            change(ChangeKind::Added, "/new"),
        ]
    );

    // Reopened from disk (as the engine does after a restart) it is the same snapshot.
    let again = Snapshot::open(&data, "box1").unwrap();
    assert_eq!(again.lowers(), lowers.as_slice());
    assert!(again.is_mounted().unwrap());

    snap.unmount().unwrap();
    assert!(!snap.is_mounted().unwrap());
    let root = snap.root().to_path_buf();
    snap.remove().unwrap();
    assert!(!root.exists());
    assert!(mounts_under(tmp.path()).is_empty(), "nothing left mounted");
}

#[test]
fn volatile_snapshot_mounts_with_the_option_and_is_removed_whole() {
    if !require_root("volatile_snapshot_mounts_with_the_option_and_is_removed_whole") {
        return;
    }
    let tmp = TempDir::new("snap-volatile");
    let lowers = two_layers(&tmp, false);
    let data = tmp.join("data");
    let mut snap = Snapshot::create(&data, "box1", &lowers, false).unwrap();
    snap.set_volatile(true);
    assert!(snap.mount_options().data.ends_with(",volatile"));
    assert_eq!(snap.mount().unwrap(), MountKind::Overlay);
    let merged = snap.merged();
    let options = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(merged.to_str().unwrap()))
        .map(str::to_string)
        .expect("merged is in mountinfo");
    assert!(options.contains("volatile"), "not volatile: {options}");
    fs::write(merged.join("new"), "n").unwrap();
    assert_eq!(fs::read_to_string(snap.upper().join("new")).unwrap(), "n");
    let root = data.join("snapshots/box1");
    snap.remove().unwrap();
    assert!(!root.exists());
    assert!(mounts_under(tmp.path()).is_empty());
}

#[test]
fn snapshot_copy_fallback_applies_whiteouts_and_diffs() {
    if !require_root("snapshot_copy_fallback_applies_whiteouts_and_diffs") {
        return;
    }
    let tmp = TempDir::new("snap-copy");
    let lowers = two_layers(&tmp, true);
    let data = tmp.join("data");
    let mut snap = Snapshot::create(&data, "box2", &lowers, false).unwrap();
    snap.force_copy(true).unwrap();
    assert_eq!(snap.mount().unwrap(), MountKind::Copy);
    assert!(!snap.is_mounted().unwrap(), "a copy is not a mount");
    let merged = snap.merged();
    assert_eq!(fs::read_to_string(merged.join("etc/a")).unwrap(), "a-top");
    assert_eq!(
        fs::read_to_string(merged.join("etc/b")).unwrap(),
        "b-bottom"
    );
    assert!(!merged.join("dir/x").exists());
    assert!(
        snap.diff().unwrap().is_empty(),
        "a fresh copy has no changes"
    );

    fs::write(merged.join("new"), "n").unwrap();
    fs::write(merged.join("etc/b"), "b-box, longer").unwrap();
    fs::remove_file(merged.join("keep")).unwrap();
    assert_eq!(
        snap.diff().unwrap(),
        vec![
            change(ChangeKind::Changed, "/etc/b"),
            change(ChangeKind::Deleted, "/keep"),
            change(ChangeKind::Added, "/new"),
        ]
    );
    // Mounting again keeps the copy (and the box's changes).
    assert_eq!(snap.mount().unwrap(), MountKind::Copy);
    assert!(merged.join("new").exists());
    let root = snap.root().to_path_buf();
    snap.remove().unwrap();
    assert!(!root.exists());
}

#[test]
fn snapshot_lowerdir_longer_than_a_page_still_mounts() {
    if !require_root("snapshot_lowerdir_longer_than_a_page_still_mounts") {
        return;
    }
    let tmp = TempDir::new("snap-long");
    let base = tmp.join(format!("layers-{}", "x".repeat(100)));
    let mut lowers = Vec::new();
    for i in 0..60 {
        let l = base.join(format!("{i:064}"));
        write(&l, &format!("f{i}"), &i.to_string());
        lowers.push(l);
    }
    lowers.reverse();
    let data = tmp.join("data");
    let mut snap = Snapshot::create(&data, "long", &lowers, false).unwrap();
    let opts = snap.mount_options();
    assert!(
        opts.lower_base.is_some(),
        "absolute lowers would not fit a page"
    );
    assert!(opts.data.len() < 4096 || opts.lower_base.is_some());
    assert_eq!(snap.mount().unwrap(), MountKind::Overlay);
    assert_eq!(fs::read_to_string(snap.merged().join("f0")).unwrap(), "0");
    assert_eq!(fs::read_to_string(snap.merged().join("f59")).unwrap(), "59");
    snap.remove().unwrap();
    assert!(mounts_under(tmp.path()).is_empty());
}

const USERNS_CHILD_ENV: &str = "BOX_TEST_SNAPSHOT_USERNS_DATA";

/// Runs inside `unshare -Urm` (re-executed by the rootless test): mounts the snapshot with
/// the library's own code and writes through it. Does nothing in a normal test run.
#[test]
fn userns_child_mounts_snapshot() {
    let Ok(data) = std::env::var(USERNS_CHILD_ENV) else {
        return;
    };
    let mut snap = Snapshot::open(Path::new(&data), "rootless").unwrap();
    assert_eq!(snap.mount().unwrap(), MountKind::Overlay);
    let merged = snap.merged();
    assert_eq!(fs::read_to_string(merged.join("etc/a")).unwrap(), "a-top");
    fs::write(merged.join("from-userns"), "u").unwrap();
    fs::remove_file(merged.join("keep")).unwrap();
    snap.unmount().unwrap();
}

#[test]
fn snapshot_rootless_overlay_mounts_in_user_namespace() {
    if Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("snapshot_rootless_overlay_mounts_in_user_namespace: skipped (no unshare)");
        return;
    }
    let tmp = TempDir::new("snap-userns");
    let lowers = two_layers(&tmp, false);
    let data = tmp.join("data");
    let snap = Snapshot::create(&data, "rootless", &lowers, true).unwrap();
    assert!(snap.mount_options().data.ends_with(",userxattr"));

    // The runtime's way: mount_options() used inside the box's user + mount namespace.
    let opts = snap.mount_options();
    let out = Command::new("unshare")
        .args([
            "-Urm",
            "sh",
            "-c",
            "mount -t overlay overlay -o \"$1\" \"$2\" && cat \"$2/etc/b\"",
            "sh",
        ])
        .arg(&opts.data)
        .arg(snap.merged())
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if std::env::var("BOX_REQUIRE_PRIVILEGED").as_deref() != Ok("1")
            && (err.contains("Operation not permitted") || err.contains("unshare failed"))
        {
            eprintln!("snapshot_rootless_overlay_mounts_in_user_namespace: skipped ({err})");
            return;
        }
        panic!("overlay in a user namespace failed: {err}");
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b-bottom");

    // The library's own mount(), run in a user namespace (a child of the test binary).
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .arg("-Urm")
        .arg(exe)
        .args([
            "--exact",
            "userns_child_mounts_snapshot",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(USERNS_CHILD_ENV, &data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(snap.upper().join("from-userns")).unwrap(),
        "u"
    );
    let diff = snap.diff().unwrap();
    assert!(
        diff.contains(&change(ChangeKind::Added, "/from-userns")),
        "{diff:?}"
    );
    assert!(
        diff.contains(&change(ChangeKind::Deleted, "/keep")),
        "{diff:?}"
    );
    assert!(
        !snap.is_mounted().unwrap(),
        "the user namespace's mount died with it"
    );
    snap.remove().unwrap();
    assert!(mounts_under(tmp.path()).is_empty());
}

#[test]
fn snapshot_rejects_bad_ids_and_missing_layers() {
    let tmp = TempDir::new("snap-bad");
    let lowers = two_layers(&tmp, false);
    let data = tmp.join("data");
    assert!(Snapshot::create(&data, "../evil", &lowers, false).is_err());
    assert!(Snapshot::create(&data, "", &lowers, false).is_err());
    assert!(Snapshot::create(&data, "ok", &[tmp.join("nope")], false).is_err());
    assert!(Snapshot::create(&data, "ok", &[], false).is_err());
    let s = Snapshot::create(&data, "ok", &lowers, false).unwrap();
    assert!(
        Snapshot::create(&data, "ok", &lowers, false).is_err(),
        "ids are unique"
    );
    s.remove().unwrap();
}
