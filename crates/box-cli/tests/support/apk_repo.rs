//! A local APK repository for `box pkg` tests: real .apk files with signed control members and
//! an APKINDEX signed with a key made here, served over HTTP/1.0 on 127.0.0.1.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use box_pkg::testing::{build_apk_with_scripts, key, signed_index, RsaPrivateKey};

/// One package: name, version, files, dependencies, scripts.
pub struct Apk {
    pub name: &'static str,
    pub version: &'static str,
    pub files: &'static [(&'static str, &'static [u8])],
    pub depends: &'static str,
    pub scripts: &'static [(&'static str, &'static [u8])],
}

/// A dependency of [`GREET_1`].
pub const LIB: Apk = Apk {
    name: "libgreet",
    version: "1.0-r0",
    files: &[("usr/lib/libgreet.txt", b"lib\n")],
    depends: "",
    scripts: &[],
};
/// The post-install script of `greet`: leaves `uid hostname $1` (the new version, as apk passes
/// it) in /root/greet-installed.
pub const GREET_MARK: (&str, &[u8]) = (
    ".post-install",
    b"#!/bin/sh\necho \"$(id -u) $(hostname) $1\" > /root/greet-installed\n",
);
/// A program that needs [`LIB`].
pub const GREET_1: Apk = Apk {
    name: "greet",
    version: "1.0-r0",
    files: &[("usr/bin/greet", b"#!/bin/sh\necho hello from greet\n")],
    depends: "libgreet",
    scripts: &[GREET_MARK],
};
/// Its upgrade.
pub const GREET_2: Apk = Apk {
    name: "greet",
    version: "2.0-r0",
    files: &[("usr/bin/greet", b"#!/bin/sh\necho hello again\n")],
    depends: "libgreet",
    scripts: &[GREET_MARK],
};
/// A package nothing needs.
pub const EXTRA: Apk = Apk {
    name: "extra",
    version: "1-r0",
    files: &[("usr/bin/extra", b"y")],
    depends: "",
    scripts: &[],
};

/// The repository: its server's files and its signing key.
pub struct ApkRepo {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// The key packages and the index are signed with.
    pub private: RsaPrivateKey,
    /// Its public half: (file name, PEM).
    pub public: (String, String),
    /// The repository's URL (`http://127.0.0.1:PORT/alpine/main`).
    pub url: String,
}

/// The machine's architecture in apk's words.
pub fn arch() -> &'static str {
    std::env::consts::ARCH
}

impl ApkRepo {
    /// A fresh key and an empty repository served on 127.0.0.1 (a thread that lives as long
    /// as the test process).
    pub fn start() -> ApkRepo {
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
        let (private, mut keys) = key();
        ApkRepo {
            files,
            private,
            public: keys.remove(0),
            url: format!("http://127.0.0.1:{port}/alpine/main"),
        }
    }

    /// Serves `body` at `path` (under the server's root).
    pub fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), body);
    }

    /// Serves `body` as the package file `NAME-VERSION.apk`.
    pub fn put_package(&self, file: &str, body: Vec<u8>) {
        self.put(&format!("/alpine/main/{}/{file}", arch()), body);
    }

    /// Serves `body` as the index.
    pub fn put_index(&self, body: Vec<u8>) {
        self.put(&format!("/alpine/main/{}/APKINDEX.tar.gz", arch()), body);
    }

    /// Builds and serves `apks` and a signed index naming exactly them.
    pub fn publish(&self, apks: &[&Apk]) {
        let mut text = String::new();
        for apk in apks {
            let (bytes, checksum) = build_apk_with_scripts(
                &self.private,
                apk.name,
                apk.version,
                apk.files,
                apk.scripts,
            );
            self.put_package(&format!("{}-{}.apk", apk.name, apk.version), bytes);
            text += &format!(
                "C:{checksum}\nP:{}\nV:{}\nA:{}\nT:{} for tests\n",
                apk.name,
                apk.version,
                arch(),
                apk.name
            );
            if !apk.depends.is_empty() {
                text += &format!("D:{}\n", apk.depends);
            }
            text += "\n";
        }
        self.put_index(signed_index(&self.private, &text));
    }

    /// The /etc/apk/repositories line and the trusted key, as files to put in a root.
    pub fn config_files(&self) -> [(String, String); 2] {
        [
            ("etc/apk/repositories".into(), format!("{}\n", self.url)),
            (
                format!("etc/apk/keys/{}", self.public.0),
                self.public.1.clone(),
            ),
        ]
    }

    /// Writes [`ApkRepo::config_files`] into `rootfs` (a directory on the host).
    pub fn trust_in(&self, rootfs: &Path) {
        for (rel, text) in self.config_files() {
            let path = rootfs.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }
}
