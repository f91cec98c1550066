//! `box pkg` against a local APK repository this test builds (real .apk files with signed
//! control members, an APKINDEX signed with a key made here) and serves on 127.0.0.1: in an
//! environment, install with dependencies, upgrade, removal, a package file that is not the
//! indexed one, a download cut half-way, an unknown package, a conflict, an unreachable
//! repository and an index signed by an unknown key; in a running and a stopped box, the same
//! work confined to the box's root (links it planted do not reach the host).

mod support;

use box_pkg::testing::{build_apk, key, signed_index};
use support::apk_repo::*;
use support::*;

/// A package that cannot live beside greet.
const RIVAL: Apk = Apk {
    name: "rival",
    version: "1-r0",
    files: &[("usr/bin/rival", b"r")],
    depends: "!greet",
    scripts: &[],
};

#[test]
fn pkg_add_upgrade_del_from_a_local_repository() {
    if !require_root("pkg_add_upgrade_del_from_a_local_repository") {
        return;
    }
    let d = BoxData::new("pkg");
    let top = TempDir::new("pkgproj");
    let proj = top.path.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    d.ok_in(&proj, &["init"]);
    let rootfs = proj.join(".box/rootfs");

    let repo = ApkRepo::start();
    repo.trust_in(&rootfs);
    repo.publish(&[&GREET_1, &LIB]);

    // Install with the dependency; the program runs inside; apk's database names both.
    assert!(d.ok_in(&proj, &["pkg", "update"]).contains("2 packages"));
    let out = d.ok_in(&proj, &["pkg", "add", "greet"]);
    assert_eq!(out, "installed libgreet-1.0-r0\ninstalled greet-1.0-r0\n");
    std::fs::set_permissions(
        rootfs.join("usr/bin/greet"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert_eq!(
        d.ok_in(&proj, &["enter", "--", "greet"]),
        "hello from greet\n"
    );
    // Its post-install script ran inside (root, the environment's hostname) and is gone.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("root/greet-installed")).unwrap(),
        "0 proj 1.0-r0\n"
    );
    assert!(!rootfs.join("tmp/.box-pkg-greet.post-install").exists());
    let db = std::fs::read_to_string(rootfs.join("lib/apk/db/installed")).unwrap();
    assert!(
        db.contains("P:greet\nV:1.0-r0\n") && db.contains("F:usr/bin\nR:greet\nZ:Q1"),
        "{db}"
    );
    assert_eq!(
        d.ok_in(&proj, &["pkg", "list"]),
        "libgreet-1.0-r0\ngreet-1.0-r0\n"
    );
    assert!(d
        .ok_in(&proj, &["pkg", "info", "greet"])
        .contains("depends: libgreet"));

    // An upgrade.
    repo.publish(&[&GREET_2, &LIB]);
    d.ok_in(&proj, &["pkg", "update"]);
    assert_eq!(
        d.ok_in(&proj, &["pkg", "add", "greet"]),
        "installed greet-2.0-r0\n"
    );
    assert!(std::fs::read_to_string(rootfs.join("usr/bin/greet"))
        .unwrap()
        .contains("again"));

    // A package file that is not the one the index names: refused, nothing changed.
    let (other, _) = build_apk(&repo.private, "extra", "1-r0", &[("usr/bin/extra", b"x")]);
    repo.publish(&[&GREET_2, &LIB, &EXTRA]);
    repo.put_package("extra-1-r0.apk", other);
    d.ok_in(&proj, &["pkg", "update"]);
    let before = std::fs::read_to_string(rootfs.join("lib/apk/db/installed")).unwrap();
    let out = d.boxc_in(&proj, &["pkg", "add", "extra"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not the one the index names"),
        "{err}"
    );
    assert!(!rootfs.join("usr/bin/extra").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("lib/apk/db/installed")).unwrap(),
        before
    );
    // A download cut half-way: refused, nothing changed.
    let (whole, _) = build_apk(&repo.private, EXTRA.name, EXTRA.version, EXTRA.files);
    repo.put_package("extra-1-r0.apk", whole[..whole.len() / 2].to_vec());
    let out = d.boxc_in(&proj, &["pkg", "add", "extra"]);
    assert!(!out.status.success());
    assert!(!rootfs.join("usr/bin/extra").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("lib/apk/db/installed")).unwrap(),
        before
    );
    // An unknown package.
    let out = d.boxc_in(&proj, &["pkg", "add", "no-such-package"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing provides no-such-package"));
    // A package that conflicts with an installed one: refused, nothing changed.
    repo.publish(&[&GREET_2, &LIB, &RIVAL]);
    d.ok_in(&proj, &["pkg", "update"]);
    let out = d.boxc_in(&proj, &["pkg", "add", "rival"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("conflicts"), "{err}");
    assert!(!rootfs.join("usr/bin/rival").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("lib/apk/db/installed")).unwrap(),
        before
    );
    // An unreachable repository: a clear error, nothing changed.
    let repositories = rootfs.join("etc/apk/repositories");
    let kept = std::fs::read_to_string(&repositories).unwrap();
    std::fs::write(&repositories, "http://127.0.0.1:1/alpine/main\n").unwrap();
    let out = d.boxc_in(&proj, &["pkg", "update"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot fetch http://127.0.0.1:1/"),
        "{err}"
    );
    std::fs::write(&repositories, kept).unwrap();

    // An index signed by a key the environment does not trust: refused; the cached index stays.
    let (stranger, _) = key();
    repo.put_index(signed_index(&stranger, "P:evil\nV:1\n\n"));
    let out = d.boxc_in(&proj, &["pkg", "update"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad signature"),
        "{err}"
    );
    assert!(d
        .ok_in(&proj, &["pkg", "search", "greet"])
        .starts_with("greet-2.0-r0"));

    // del: greet and the library only it needed go, with their files.
    let out = d.ok_in(&proj, &["pkg", "del", "greet"]);
    assert!(
        out.contains("removed greet-2.0-r0") && out.contains("removed libgreet-1.0-r0"),
        "{out}"
    );
    assert!(!rootfs.join("usr/bin/greet").exists());
    assert!(!rootfs.join("usr/lib/libgreet.txt").exists());
    assert_eq!(d.ok_in(&proj, &["pkg", "list"]), "");
}

/// Writes `text` at `path` inside box `name` (through `box cp` of a one-file tar).
fn put_in_box(d: &BoxData, name: &str, path: &str, text: &str) {
    let (dir, file) = path.rsplit_once('/').unwrap();
    d.ok(&["exec", name, "mkdir", "-p", dir]);
    let tmp = TempDir::new("pkgput");
    let host = tmp.path.join(file);
    std::fs::write(&host, text).unwrap();
    d.ok(&["cp", host.to_str().unwrap(), &format!("{name}:{dir}/")]);
}

#[test]
fn pkg_in_a_running_and_a_stopped_box_stays_inside_it() {
    if !require_root("pkg_in_a_running_and_a_stopped_box_stays_inside_it") {
        return;
    }
    let d = BoxData::new("pkgb");
    let repo = ApkRepo::start();
    repo.publish(&[&GREET_1, &LIB]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--hostname",
        "pkgbox",
        "host",
        "sleep",
        "600",
    ]);
    for (rel, text) in repo.config_files() {
        put_in_box(&d, "b", &format!("/{rel}"), &text);
    }
    // The box plants a link to a host file where box pkg writes its database; the host file
    // must stay as it is (the package manager works confined to the box's root).
    let victim_dir = TempDir::new("pkgvictim");
    let victim = victim_dir.path.join("victim");
    std::fs::write(&victim, "host data\n").unwrap();
    d.ok(&[
        "exec",
        "b",
        "sh",
        "-c",
        &format!(
            "mkdir -p /lib/apk/db && ln -s {v} /lib/apk/db/installed.box-new && ln -s {v} /etc/apk/world.box-new",
            v = victim.display()
        ),
    ]);

    // Running: installed from the host side, the post-install script ran inside the box (its
    // hostname, root), and the program works there.
    let out = d.ok(&["pkg", "--box", "b", "add", "greet"]);
    assert_eq!(out, "installed libgreet-1.0-r0\ninstalled greet-1.0-r0\n");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host data\n");
    assert_eq!(
        d.ok(&["exec", "b", "cat", "/root/greet-installed"]),
        "0 pkgbox 1.0-r0\n"
    );
    assert_eq!(
        d.ok(&["exec", "b", "sh", "/usr/bin/greet"]),
        "hello from greet\n"
    );
    assert_eq!(
        d.ok(&["pkg", "--box", "b", "list"]),
        "libgreet-1.0-r0\ngreet-1.0-r0\n"
    );
    let db = d.ok(&["exec", "b", "cat", "/lib/apk/db/installed"]);
    assert!(db.contains("P:greet\nV:1.0-r0\n"), "{db}");

    // Stopped: removal and an upgrade work on the box's own layer; the script runs confined
    // to the box's root; the box sees it all when it starts again.
    d.ok(&["stop", "-t", "1", "b"]);
    let out = d.ok(&["pkg", "--box", "b", "del", "greet"]);
    assert!(
        out.contains("removed greet-1.0-r0") && out.contains("removed libgreet-1.0-r0"),
        "{out}"
    );
    repo.publish(&[&GREET_2, &LIB]);
    d.ok(&["pkg", "--box", "b", "update"]);
    assert_eq!(
        d.ok(&["pkg", "--box", "b", "add", "greet"]),
        "installed libgreet-1.0-r0\ninstalled greet-2.0-r0\n"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host data\n");
    d.ok(&["start", "b"]);
    assert_eq!(
        d.ok(&["exec", "b", "sh", "/usr/bin/greet"]),
        "hello again\n"
    );
    // Under the chroot of the stopped box: root, the host's hostname, the new version.
    let mark = d.ok(&["exec", "b", "cat", "/root/greet-installed"]);
    assert!(
        mark.starts_with("0 ") && mark.ends_with(" 2.0-r0\n"),
        "{mark}"
    );
    assert_eq!(d.ok(&["exec", "b", "cat", "/etc/apk/world"]), "greet\n");

    // A box that does not exist.
    let out = d.boxc(&["pkg", "--box", "nosuch", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nosuch"), "{err}");
}
