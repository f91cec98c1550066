//! Test helpers: self-cleaning temp dirs, raw tar entries (the tar crate's Builder refuses the
//! evil paths these tests need), root checks.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory removed (with everything in it) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "box-image-test-{tag}-{}-{nanos}-{n}",
            std::process::id()
        ));
        fs::create_dir_all(&p).expect("mkdir temp");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chmod")
            .arg("-R")
            .arg("u+rwx")
            .arg(&self.0)
            .output();
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Whether the test runs as root; panics when it is not but BOX_REQUIRE_PRIVILEGED=1.
pub fn is_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("BOX_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{test} needs root and BOX_REQUIRE_PRIVILEGED=1");
        }
        eprintln!("skipping {test}: needs root");
    }
    root
}

/// One raw tar entry: path and link name written into the header verbatim (GNU long-name
/// records for longer ones).
pub struct Raw<'a> {
    pub path: &'a [u8],
    pub kind: tar::EntryType,
    pub link: &'a [u8],
    pub data: &'a [u8],
    pub mode: u32,
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    pub dev: (u32, u32),
}

impl<'a> Raw<'a> {
    pub fn file(path: &'a str, data: &'a [u8]) -> Raw<'a> {
        Raw {
            path: path.as_bytes(),
            kind: tar::EntryType::Regular,
            link: b"",
            data,
            mode: 0o644,
            mtime: 1_600_000_000,
            uid: 0,
            gid: 0,
            dev: (0, 0),
        }
    }
    pub fn dir(path: &'a str) -> Raw<'a> {
        Raw {
            kind: tar::EntryType::Directory,
            mode: 0o755,
            ..Raw::file(path, b"")
        }
    }
    pub fn symlink(path: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            kind: tar::EntryType::Symlink,
            link: target.as_bytes(),
            mode: 0o777,
            ..Raw::file(path, b"")
        }
    }
    pub fn hardlink(path: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            kind: tar::EntryType::Link,
            link: target.as_bytes(),
            ..Raw::file(path, b"")
        }
    }
    pub fn chardev(path: &'a str, major: u32, minor: u32) -> Raw<'a> {
        Raw {
            kind: tar::EntryType::Char,
            dev: (major, minor),
            mode: 0o666,
            ..Raw::file(path, b"")
        }
    }
}

fn long_name(out: &mut Vec<u8>, kind: u8, name: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(name.len() as u64 + 1);
    h.set_mode(0o644);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    let mut data = name.to_vec();
    data.push(0);
    pad(&mut data);
    out.extend_from_slice(&data);
}

fn pad(v: &mut Vec<u8>) {
    let rem = v.len() % 512;
    if rem != 0 {
        v.resize(v.len() + 512 - rem, 0);
    }
}

/// Appends one raw entry to `out`.
pub fn append(out: &mut Vec<u8>, e: &Raw<'_>) {
    if e.path.len() > 100 {
        long_name(out, b'L', e.path);
    }
    if e.link.len() > 100 {
        long_name(out, b'K', e.link);
    }
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = e.path.len().min(100);
        old.name[..n].copy_from_slice(&e.path[..n]);
        let l = e.link.len().min(100);
        old.linkname[..l].copy_from_slice(&e.link[..l]);
    }
    h.set_entry_type(e.kind);
    h.set_size(e.data.len() as u64);
    h.set_mode(e.mode);
    h.set_mtime(e.mtime);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(e.dev.0).expect("major");
        h.set_device_minor(e.dev.1).expect("minor");
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    let mut data = e.data.to_vec();
    pad(&mut data);
    out.extend_from_slice(&data);
}

/// A complete tar of raw entries, with the end-of-archive blocks and record padding.
pub fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        append(&mut out, e);
    }
    out.resize(out.len() + 1024, 0);
    let rem = out.len() % 10240;
    if rem != 0 {
        out.resize(out.len() + 10240 - rem, 0);
    }
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    box_image::digest::Digest::of_bytes(data).hex().to_string()
}
