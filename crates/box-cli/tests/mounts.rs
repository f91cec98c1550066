//! Mounts from config.json, as root: tmpfs with options, bind mounts read-only and read-write, file
//! binds, missing destinations, noexec, and mount targets that are symlinks resolved inside the rootfs.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use serde_json::json;
use support::*;

#[test]
fn tmpfs_mount_with_options() {
    if !require_root("tmpfs_mount_with_options") {
        return;
    }
    let mut b = Bundle::new("tmpfs");
    b.add_mount(json!({
        "destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=1m", "mode=1777"]
    }));
    b.script(
        "grep ' /mnt/t ' /proc/self/mounts; stat -c %a /mnt/t; echo hi > /mnt/t/f && cat /mnt/t/f",
    );
    let out = b.run_once().ok().stdout;
    let line = out.lines().next().unwrap_or_default();
    assert!(line.starts_with("tmpfs /mnt/t tmpfs "), "{out}");
    for opt in ["nosuid", "nodev", "size=1024k"] {
        assert!(line.contains(opt), "{opt} missing: {out}");
    }
    assert!(out.contains("\n1777\nhi\n"), "{out}");
    assert!(
        !b.rootfs().join("mnt/t/f").exists(),
        "write went to the rootfs, not the tmpfs"
    );
}

#[test]
fn noexec_mount_refuses_execution() {
    if !require_root("noexec_mount_refuses_execution") {
        return;
    }
    let mut b = Bundle::new("noexec");
    b.add_mount(json!({
        "destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs", "options": ["noexec"]
    }));
    b.script("cp /bin/busybox /mnt/x/bb && /mnt/x/bb true && echo ran; exit 0");
    let out = b.run_once().ok();
    assert!(!out.stdout.contains("ran"), "{out}");
    assert!(out.stderr.contains("denied"), "{out}");
}

#[test]
fn bind_mount_read_only_rejects_writes() {
    if !require_root("bind_mount_read_only_rejects_writes") {
        return;
    }
    let mut b = Bundle::new("bindro");
    let src = b.path("shared-ro");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("hello"), "from-host\n").expect("write");
    b.add_mount(json!({
        "destination": "/mnt/ro", "type": "bind", "source": src, "options": ["rbind", "ro"]
    }));
    b.script("cat /mnt/ro/hello; touch /mnt/ro/new && echo wrote; exit 0");
    let out = b.run_once().ok();
    assert_eq!(out.stdout, "from-host\n", "{out}");
    assert!(out.text().contains("read-only"), "{out}");
    assert!(!src.join("new").exists());
}

#[test]
fn bind_mount_read_write_shares_with_host() {
    if !require_root("bind_mount_read_write_shares_with_host") {
        return;
    }
    let mut b = Bundle::new("bindrw");
    let src = b.path("shared-rw");
    fs::create_dir_all(&src).expect("mkdir");
    let file_src = b.path("single-file");
    fs::write(&file_src, "file-content\n").expect("write");
    b.add_mount(json!({
        "destination": "/data", "type": "bind", "source": src, "options": ["rbind", "rw"]
    }));
    b.add_mount(json!({
        "destination": "/etc/single", "type": "none", "source": file_src, "options": ["bind", "ro"]
    }));
    b.script("echo from-box > /data/out; cat /etc/single");
    let out = b.run_once().ok();
    assert_eq!(out.stdout, "file-content\n", "{out}");
    assert_eq!(
        fs::read_to_string(src.join("out")).expect("box wrote"),
        "from-box\n"
    );
}

#[test]
fn missing_mount_destination_is_created_in_the_rootfs() {
    if !require_root("missing_mount_destination_is_created_in_the_rootfs") {
        return;
    }
    let mut b = Bundle::new("mkdest");
    b.add_mount(json!({
        "destination": "/new/deep/dir", "type": "tmpfs", "source": "tmpfs", "options": []
    }));
    b.script("grep -c ' /new/deep/dir tmpfs ' /proc/self/mounts");
    assert_eq!(b.run_once().ok().stdout, "1\n");
}

#[test]
fn symlinked_mount_target_stays_inside_the_rootfs() {
    if !require_root("symlinked_mount_target_stays_inside_the_rootfs") {
        return;
    }
    let mut b = Bundle::new("symtarget");
    // A host directory that a naive runtime would mount over by following the symlink on the host.
    let outside = b.path("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    fs::write(outside.join("host-file"), "host\n").expect("write");
    symlink(&outside, b.rootfs().join("mnt/link")).expect("symlink");
    let src = b.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("marker"), "bound\n").expect("write");
    b.add_mount(json!({
        "destination": "/mnt/link", "type": "bind", "source": src, "options": ["rbind", "ro"]
    }));
    b.script("cat /mnt/link/marker; sleep 1000");
    let id = b.start_sleeper();
    let out_dir = outside.display().to_string();
    let mounted_outside = fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(out_dir.as_str()));
    assert!(
        !mounted_outside,
        "bind mount escaped to the host path {out_dir}"
    );
    assert!(outside.join("host-file").exists());
    b.kill(&id, "KILL").ok();
    b.wait_status(&id, "stopped");
    wait_for(Duration::from_secs(5), "no host mount", || {
        (!fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .contains(&out_dir))
        .then_some(())
    });
}

#[test]
fn proc_dev_and_shm_are_mounted() {
    if !require_root("proc_dev_and_shm_are_mounted") {
        return;
    }
    let mut b = Bundle::new("stdmounts");
    b.script("awk '{print $2, $3}' /proc/self/mounts");
    let out = b.run_once().ok().stdout;
    for want in [
        "/ ",
        "/proc proc",
        "/dev tmpfs",
        "/dev/pts devpts",
        "/dev/shm tmpfs",
        "/dev/mqueue mqueue",
        "/sys sysfs",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(want)),
            "{want} not mounted:\n{out}"
        );
    }
    // No host mounts leak in (e.g. the host's /tmp or /work).
    assert!(!out.lines().any(|l| l.starts_with("/work")), "{out}");
}

#[test]
fn rootfs_and_mount_propagation_are_applied() {
    if !require_root("rootfs_and_mount_propagation_are_applied") {
        return;
    }
    let mut b = Bundle::new("propagation");
    b.set("/linux/rootfsPropagation", json!("shared"));
    b.add_mount(
        json!({ "destination": "/data1", "type": "tmpfs", "source": "tmpfs",
        "options": ["shared"] }),
    );
    b.add_mount(
        json!({ "destination": "/data2", "type": "tmpfs", "source": "tmpfs",
        "options": ["private"] }),
    );
    // mountinfo: field 5 is the mount point; optional fields up to "-" name the peer group.
    b.script("awk '$5==\"/\" || $5==\"/data1\" || $5==\"/data2\" {tag=\"private\"; for (i=7; $i!=\"-\"; i++) if ($i ~ /^shared:/) tag=\"shared\"; print $5, tag}' /proc/self/mountinfo");
    let out = b.run_once().ok().stdout;
    for want in ["/ shared", "/data1 shared", "/data2 private"] {
        assert!(out.lines().any(|l| l == want), "{want}:\n{out}");
    }
}
