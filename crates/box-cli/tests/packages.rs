//! `box pkg` against a local APK repository this test builds (real .apk files with signed
//! control members, an APKINDEX signed with a key made here) and serves on 127.0.0.1: install
//! with dependencies, upgrade, removal, a package file that is not the indexed one, and an
//! index signed by an unknown key.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use box_pkg::testing::{build_apk, build_apk_with_scripts, key, signed_index};
use support::*;

/// A tiny HTTP/1.0 server on 127.0.0.1 serving `files` (path → body), 404 otherwise.
struct Server {
    port: u16,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let served = files.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                        break;
                    }
                }
                let body = served.lock().unwrap().get(&path).cloned();
                let mut out = stream;
                let _ = match body {
                    Some(b) => out
                        .write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", b.len())
                                .as_bytes(),
                        )
                        .and_then(|()| out.write_all(&b)),
                    None => out.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                };
            }
        });
        Server { port, files }
    }

    fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), body);
    }
}

/// One package of the test repository: name, version, files, dependencies.
struct Apk {
    name: &'static str,
    version: &'static str,
    files: &'static [(&'static str, &'static [u8])],
    depends: &'static str,
}

const LIB: Apk = Apk {
    name: "libgreet",
    version: "1.0-r0",
    files: &[("usr/lib/libgreet.txt", b"lib\n")],
    depends: "",
};
const GREET_1: Apk = Apk {
    name: "greet",
    version: "1.0-r0",
    files: &[("usr/bin/greet", b"#!/bin/sh\necho hello from greet\n")],
    depends: "libgreet",
};
const GREET_2: Apk = Apk {
    name: "greet",
    version: "2.0-r0",
    files: &[("usr/bin/greet", b"#!/bin/sh\necho hello again\n")],
    depends: "libgreet",
};
const EXTRA: Apk = Apk {
    name: "extra",
    version: "1-r0",
    files: &[("usr/bin/extra", b"y")],
    depends: "",
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

    let (private, keys) = key();
    let server = Server::start();
    let repo = format!("http://127.0.0.1:{}/alpine/main", server.port);
    let arch = std::env::consts::ARCH;
    std::fs::create_dir_all(rootfs.join("etc/apk/keys")).unwrap();
    std::fs::write(rootfs.join("etc/apk/keys").join(&keys[0].0), &keys[0].1).unwrap();
    std::fs::write(rootfs.join("etc/apk/repositories"), format!("{repo}\n")).unwrap();
    let publish = |apks: &[&Apk]| {
        let mut text = String::new();
        for Apk {
            name,
            version,
            files,
            depends: deps,
        } in apks
        {
            // greet's post-install script leaves a mark inside the environment.
            let scripts: &[(&str, &[u8])] = if *name == "greet" {
                &[(
                    ".post-install",
                    b"#!/bin/sh\necho \"$(id -u) $(hostname)\" > /root/greet-installed\n",
                )]
            } else {
                &[]
            };
            let (bytes, checksum) = build_apk_with_scripts(&private, name, version, files, scripts);
            server.put(&format!("/alpine/main/{arch}/{name}-{version}.apk"), bytes);
            text += &format!("C:{checksum}\nP:{name}\nV:{version}\nA:{arch}\nT:{name} for tests\n");
            if !deps.is_empty() {
                text += &format!("D:{deps}\n");
            }
            text += "\n";
        }
        server.put(
            &format!("/alpine/main/{arch}/APKINDEX.tar.gz"),
            signed_index(&private, &text),
        );
    };
    publish(&[&GREET_1, &LIB]);

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
        "0 proj\n"
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
    publish(&[&GREET_2, &LIB]);
    d.ok_in(&proj, &["pkg", "update"]);
    assert_eq!(
        d.ok_in(&proj, &["pkg", "add", "greet"]),
        "installed greet-2.0-r0\n"
    );
    assert!(std::fs::read_to_string(rootfs.join("usr/bin/greet"))
        .unwrap()
        .contains("again"));

    // A package file that is not the one the index names: refused, nothing changed.
    let (other, _) = build_apk(&private, "extra", "1-r0", &[("usr/bin/extra", b"x")]);
    publish(&[&GREET_2, &LIB, &EXTRA]);
    server.put(&format!("/alpine/main/{arch}/extra-1-r0.apk"), other);
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
    let (whole, _) = build_apk(&private, EXTRA.name, EXTRA.version, EXTRA.files);
    server.put(
        &format!("/alpine/main/{arch}/extra-1-r0.apk"),
        whole[..whole.len() / 2].to_vec(),
    );
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

    // An index signed by a key the environment does not trust: refused; the cached index stays.
    let (stranger, _) = key();
    server.put(
        &format!("/alpine/main/{arch}/APKINDEX.tar.gz"),
        signed_index(&stranger, "P:evil\nV:1\n\n"),
    );
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
