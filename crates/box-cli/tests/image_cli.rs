//! The `box` image commands end to end: the offline host image, import, save/load round trips,
//! tag/rmi/prune, push to and pull from a local registry (Debian's docker-registry on 127.0.0.1),
//! and clear errors that leave nothing half-stored.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn box_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_box"))
}

/// `box --root <data> ARGS…`, returning the whole output.
fn boxc(data: &Path, args: &[&str]) -> Output {
    Command::new(box_bin())
        .arg("--root")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run box")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "box failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(data: &Path) -> String {
    ok(&boxc(data, &["images"]))
}

/// A busybox-static rootfs as a gzip tarball.
fn busybox_tarball(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    make_busybox_rootfs(&rootfs);
    let tarball = dir.join("rootfs.tar.gz");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-czf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    tarball
}

/// Debian's docker-registry on a free loopback port; killed by pid on drop.
struct Registry {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = TempDir::new("imgcli-registry");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path.join("storage").display()
            ),
        )
        .expect("config");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn host_image_is_made_offline_and_listed() {
    if !require_root("host_image_is_made_offline_and_listed") {
        return;
    }
    let t = TempDir::new("imgcli-host");
    let data = t.path.join("data");
    let id = ok(&boxc(&data, &["pull", "host"]));
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let list = listed(&data);
    assert!(list.contains("host") && list.contains("latest"), "{list}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&boxc(&data, &["image", "inspect", "host"]))).expect("JSON");
    assert_eq!(inspect[0]["Id"], id.trim());
    let lowers = inspect[0]["GraphDriver"]["Data"]["LowerDirs"]
        .as_array()
        .expect("lower dirs")
        .clone();
    let top = PathBuf::from(lowers[0].as_str().expect("path"));
    assert!(top.join("bin/sh").exists(), "the layer holds a shell");
}

#[test]
fn import_save_load_tag_rmi_and_prune_round_trip() {
    if !require_root("import_save_load_tag_rmi_and_prune_round_trip") {
        return;
    }
    let t = TempDir::new("imgcli-archive");
    let data = t.path.join("data");
    let tarball = busybox_tarball(&t.path);
    let id = ok(&boxc(
        &data,
        &["import", tarball.to_str().expect("utf8"), "bb:1"],
    ));
    ok(&boxc(&data, &["tag", "bb:1", "bb:2"]));
    let list = listed(&data);
    assert!(list.contains(" 1 ") || list.contains("bb     1"), "{list}");
    for format in ["docker-archive", "oci-archive"] {
        let archive = t.path.join(format!("{format}.tar"));
        ok(&boxc(
            &data,
            &[
                "save",
                "--format",
                format,
                "-o",
                archive.to_str().expect("utf8"),
                "bb:1",
            ],
        ));
        let other = t.path.join(format!("data-{format}"));
        ok(&boxc(
            &other,
            &["load", "-i", archive.to_str().expect("utf8")],
        ));
        let json: serde_json::Value =
            serde_json::from_str(&ok(&boxc(&other, &["images", "--format", "json"])))
                .expect("JSON");
        assert_eq!(
            json[0]["Id"],
            id.trim(),
            "{format}: the same image id after load"
        );
    }
    // Untag one name, then the other: the image goes with its last name.
    let out = ok(&boxc(&data, &["rmi", "bb:2"]));
    assert!(out.contains("Untagged"), "{out}");
    assert!(listed(&data).contains("bb"));
    let out = ok(&boxc(&data, &["rmi", "bb:1"]));
    assert!(out.contains("Deleted"), "{out}");
    ok(&boxc(&data, &["image", "prune"]));
    let blobs = std::fs::read_dir(data.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "prune removed every unreferenced blob");
}

#[test]
fn push_then_pull_through_a_local_registry() {
    if !require_root("push_then_pull_through_a_local_registry") {
        return;
    }
    let reg = Registry::start();
    let t = TempDir::new("imgcli-push");
    let data = t.path.join("data");
    let tarball = busybox_tarball(&t.path);
    let name = format!("{}/box/busybox:v1", reg.addr);
    let id = ok(&boxc(
        &data,
        &["import", tarball.to_str().expect("utf8"), &name],
    ));
    ok(&boxc(&data, &["push", "--tls-verify=false", &name]));
    let other = t.path.join("pulled");
    let pulled = ok(&boxc(&other, &["pull", "--tls-verify=false", "-q", &name]));
    assert_eq!(
        pulled.trim(),
        id.trim(),
        "same image id through the registry"
    );
    let again = ok(&boxc(&other, &["pull", "--tls-verify=false", "-q", &name]));
    assert_eq!(again.trim(), id.trim(), "a second pull is a no-op");
}

#[test]
fn unknown_images_and_bad_references_fail_clearly() {
    if !require_root("unknown_images_and_bad_references_fail_clearly") {
        return;
    }
    let reg = Registry::start();
    let t = TempDir::new("imgcli-errors");
    let data = t.path.join("data");
    let out = boxc(&data, &["image", "inspect", "nope:1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{out:?}"
    );
    let out = boxc(&data, &["pull", "Not A Reference!"]);
    assert!(!out.status.success());
    let missing = format!("{}/box/missing:v1", reg.addr);
    let out = boxc(&data, &["pull", "--tls-verify=false", &missing]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing"), "the error names the image: {err}");
    assert_eq!(listed(&data).lines().count(), 1, "nothing half-stored");
    let ingest = std::fs::read_dir(data.join("ingest"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(ingest, 0, "no partial blobs");
}

/// `box` as the unprivileged test user, with its own HOME and data dir.
fn boxc_as_user(user: &TestUser, bin: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            &user.uid.to_string(),
            "--regid",
            &user.gid.to_string(),
        ])
        .arg("--init-groups")
        .arg("env")
        .arg("-i")
        .arg(format!("HOME={}", home.display()))
        .arg(format!("USER={}", user.name))
        .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run box as the test user")
}

#[test]
fn rootless_import_and_pull_shift_ownership_into_the_subuid_range() {
    if !require_root("rootless_import_and_pull_shift_ownership_into_the_subuid_range") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let user = test_user();
    let reg = Registry::start();
    let t = TempDir::new("imgcli-rootless");
    // The user's copy of the binary, home and data live in a dir the user owns.
    let home = t.path.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let bin = t.path.join("box");
    std::fs::copy(box_bin(), &bin).expect("copy box");
    // A rootfs tarball with a file owned by uid 1000 inside the image.
    let rootfs = t.path.join("rootfs");
    make_busybox_rootfs(&rootfs);
    std::fs::create_dir_all(rootfs.join("home/u")).expect("mkdir");
    std::fs::write(rootfs.join("home/u/f"), "mine\n").expect("write");
    std::os::unix::fs::chown(rootfs.join("home/u/f"), Some(1000), Some(1000)).expect("chown");
    let tarball = t.path.join("rootfs.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "-cf"])
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar")
        .success());
    let st = Command::new("chown")
        .args(["-R", &format!("{}:{}", user.uid, user.gid)])
        .arg(&t.path)
        .status()
        .expect("chown");
    assert!(st.success());
    let name = format!("{}/box/rootless:v1", reg.addr);
    let out = boxc_as_user(
        &user,
        &bin,
        &home,
        &["import", tarball.to_str().expect("utf8"), &name],
    );
    ok(&out);
    let data = home.join(".local/share/box");
    let owner_of = |rel: &str| {
        std::fs::read_dir(data.join("layers"))
            .expect("layers")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(rel))
            .find(|p| p.exists())
            .map(|p| std::fs::metadata(p).expect("stat").uid())
    };
    assert_eq!(
        owner_of("home/u/f"),
        Some(user.subuid_start + 999),
        "uid 1000 shifted"
    );
    assert_eq!(
        owner_of("bin/busybox"),
        Some(user.uid),
        "root in the image is the user"
    );
    // Push it, drop it, pull it back: still shifted, still the same image.
    ok(&boxc_as_user(
        &user,
        &bin,
        &home,
        &["push", "--tls-verify=false", &name],
    ));
    ok(&boxc_as_user(&user, &bin, &home, &["rmi", &name]));
    ok(&boxc_as_user(&user, &bin, &home, &["image", "prune"]));
    assert_eq!(owner_of("home/u/f"), None, "prune removed the layer");
    ok(&boxc_as_user(
        &user,
        &bin,
        &home,
        &["pull", "--tls-verify=false", "-q", &name],
    ));
    assert_eq!(owner_of("home/u/f"), Some(user.subuid_start + 999));
}
