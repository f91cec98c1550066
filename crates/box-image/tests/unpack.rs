//! The unpack rules, against crafted tars: nothing escapes the destination, overlay forms are
//! made, metadata is kept, and the diff id is the sha256 of the tar bytes.

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use box_image::error::ImageError;
use box_image::unpack::{unpack, UnpackOptions, UnpackStats};
use support::{is_root, raw_tar, sha256_hex, Raw, TempDir};

fn rootful() -> UnpackOptions {
    UnpackOptions {
        rootless: false,
        ignore_ownership: false,
    }
}

fn rootless() -> UnpackOptions {
    UnpackOptions {
        rootless: true,
        ignore_ownership: false,
    }
}

/// Unpacks into `<tmp>/root`, returning the result and the sandbox (whose other entries must
/// stay untouched).
fn run(tar: &[u8], opts: &UnpackOptions) -> (TempDir, Result<UnpackStats, ImageError>) {
    let t = TempDir::new("unpack");
    fs::create_dir(t.path().join("root")).expect("mkdir");
    let r = unpack(tar, &t.path().join("root"), opts);
    (t, r)
}

/// Everything under the sandbox but outside `root`.
fn outside(t: &TempDir) -> Vec<String> {
    fs::read_dir(t.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "root")
        .collect()
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let cp = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("c path");
    let cn = std::ffi::CString::new(name).expect("c name");
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

#[test]
fn unpack_rejects_dotdot_traversal() {
    let tar = raw_tar(&[
        Raw::file("../../etc/passwd", b"evil"),
        Raw::file("../escaped", b"x"),
    ]);
    let (t, r) = run(&tar, &rootless());
    let e = r.expect_err("traversal must fail");
    assert!(matches!(e, ImageError::UnsafeEntry { .. }), "{e}");
    assert!(e.to_string().contains(".."), "{e}");
    assert!(outside(&t).is_empty(), "{:?}", outside(&t));
    assert_eq!(fs::read_dir(t.path().join("root")).expect("ls").count(), 0);
}

#[test]
fn unpack_contains_absolute_paths() {
    let tar = raw_tar(&[Raw::file("/abs/path", b"inside")]);
    let (t, r) = run(&tar, &rootless());
    r.expect("absolute paths are contained");
    assert_eq!(
        fs::read(t.path().join("root/abs/path")).expect("read"),
        b"inside"
    );
    assert!(outside(&t).is_empty());
}

#[test]
fn unpack_keeps_symlink_to_root_from_leading_out() {
    let marker = format!("box-unpack-escape-{}", std::process::id());
    let path = format!("a/tmp/{marker}");
    let tar = raw_tar(&[Raw::symlink("a", "/"), Raw::file(&path, b"x")]);
    let (t, r) = run(&tar, &rootless());
    r.expect("contained");
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "wrote to the host's /tmp"
    );
    assert_eq!(
        fs::read(t.path().join("root/tmp").join(&marker)).expect("inside"),
        b"x"
    );
    assert_eq!(
        fs::read_link(t.path().join("root/a")).expect("link"),
        Path::new("/")
    );
}

#[test]
fn unpack_keeps_dotdot_symlink_chains_inside() {
    let tar = raw_tar(&[
        Raw::symlink("l1", ".."),
        Raw::dir("d"),
        Raw::symlink("d/l2", "../l1/../.."),
        Raw::file("d/l2/l1/escaped", b"x"),
        Raw::file("l1/l1/also", b"y"),
    ]);
    let (t, r) = run(&tar, &rootless());
    r.expect("contained");
    assert!(outside(&t).is_empty(), "{:?}", outside(&t));
    assert_eq!(
        fs::read(t.path().join("root/escaped")).expect("inside"),
        b"x"
    );
    assert_eq!(fs::read(t.path().join("root/also")).expect("inside"), b"y");
}

#[test]
fn unpack_rejects_hardlink_to_host_file() {
    let before = fs::symlink_metadata("/etc/passwd")
        .expect("host passwd")
        .nlink();
    for link in ["/etc/passwd", "../../../etc/passwd"] {
        let tar = raw_tar(&[Raw::hardlink("pw", link)]);
        let (t, r) = run(&tar, &rootful());
        assert!(r.is_err(), "hardlink to {link} accepted");
        assert!(!t.path().join("root/pw").exists());
    }
    assert_eq!(
        fs::symlink_metadata("/etc/passwd").expect("host").nlink(),
        before
    );
}

#[test]
fn unpack_rejects_hardlink_through_symlink_out() {
    let tar = raw_tar(&[Raw::symlink("s", "/etc"), Raw::hardlink("h", "s/passwd")]);
    let (t, r) = run(&tar, &rootful());
    let e = r.expect_err("must fail");
    assert!(e.to_string().contains("hardlink"), "{e}");
    assert!(!t.path().join("root/h").exists());
    // A hardlink to an earlier file of the layer is fine, through a symlink inside too.
    let tar = raw_tar(&[
        Raw::file("d/f", b"data"),
        Raw::symlink("s", "/d"),
        Raw::hardlink("h", "s/f"),
    ]);
    let (t, r) = run(&tar, &rootful());
    r.expect("inside hardlink");
    let a = fs::metadata(t.path().join("root/d/f")).expect("f");
    let b = fs::metadata(t.path().join("root/h")).expect("h");
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn unpack_skips_device_nodes_when_rootless() {
    let tar = raw_tar(&[
        Raw::chardev("dev/sda", 8, 0),
        Raw {
            kind: tar::EntryType::Fifo,
            ..Raw::file("fifo", b"")
        },
    ]);
    let (t, r) = run(&tar, &rootless());
    let stats = r.expect("unpack");
    assert_eq!(stats.devices_skipped, 1);
    assert!(!t.path().join("root/dev/sda").exists());
    assert!(fs::symlink_metadata(t.path().join("root/fifo"))
        .expect("fifo")
        .file_type()
        .is_fifo());
}

#[test]
fn unpack_makes_device_nodes_as_root() {
    if !is_root("unpack_makes_device_nodes_as_root") {
        return;
    }
    let tar = raw_tar(&[Raw::chardev("null", 1, 3)]);
    let (t, r) = run(&tar, &rootful());
    r.expect("unpack");
    let m = fs::symlink_metadata(t.path().join("root/null")).expect("node");
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), libc::makedev(1, 3));
}

#[test]
fn unpack_refuses_huge_names_without_panicking() {
    let long_component = "x".repeat(300);
    let tar = raw_tar(&[Raw::file(&long_component, b"x")]);
    let (_t, r) = run(&tar, &rootless());
    assert!(r.is_err());
    let long_path = "abcdefgh/".repeat(600) + "f";
    let tar = raw_tar(&[Raw::file(&long_path, b"x")]);
    let (_t, r) = run(&tar, &rootless());
    assert!(r.is_err());
    // Long but legal (GNU long-name records): fine.
    let ok_path = "d123456789/".repeat(20) + "file";
    let tar = raw_tar(&[Raw::file(&ok_path, b"deep")]);
    let (t, r) = run(&tar, &rootless());
    r.expect("long legal path");
    assert_eq!(
        fs::read(t.path().join("root").join(&ok_path)).expect("read"),
        b"deep"
    );
}

#[test]
fn unpack_turns_whiteouts_into_overlay_form() {
    if !is_root("unpack_turns_whiteouts_into_overlay_form") {
        return;
    }
    let tar = raw_tar(&[
        Raw::dir("etc"),
        Raw::file("etc/.wh.gone", b""),
        Raw::dir("opq"),
        Raw::file("opq/.wh..wh..opq", b""),
        Raw::file("opq/kept", b"k"),
    ]);
    let (t, r) = run(&tar, &rootful());
    let stats = r.expect("unpack");
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (1, 1));
    let m = fs::symlink_metadata(t.path().join("root/etc/gone")).expect("whiteout");
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert!(!t.path().join("root/etc/.wh.gone").exists());
    assert_eq!(
        getxattr(&t.path().join("root/opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!t.path().join("root/opq/.wh..wh..opq").exists());
    assert_eq!(
        fs::read(t.path().join("root/opq/kept")).expect("kept"),
        b"k"
    );
}

#[test]
fn unpack_marks_opaque_dirs_with_user_xattr_when_rootless() {
    let tar = raw_tar(&[Raw::dir("opq"), Raw::file("opq/.wh..wh..opq", b"")]);
    let (t, r) = run(&tar, &rootless());
    r.expect("unpack");
    assert_eq!(
        getxattr(&t.path().join("root/opq"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        getxattr(&t.path().join("root/opq"), "trusted.overlay.opaque"),
        None
    );
}

#[test]
fn unpack_rejects_malformed_whiteouts() {
    for bad in ["d/.wh..", "d/.wh."] {
        let tar = raw_tar(&[Raw::file(bad, b"")]);
        let (_t, r) = run(&tar, &rootless());
        assert!(r.is_err(), "{bad} accepted");
    }
}

fn pax_tar(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().expect("tar")
}

fn header(kind: tar::EntryType, mode: u32, mtime: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_size(size);
    h.set_uid(1234);
    h.set_gid(4321);
    h
}

#[test]
fn unpack_keeps_modes_mtimes_and_xattrs() {
    let tar = pax_tar(|b| {
        let mut h = header(tar::EntryType::Directory, 0o750, 1_111_111_111, 0);
        b.append_data(&mut h, "dir", &[][..]).expect("dir");
        b.append_pax_extensions([
            ("SCHILY.xattr.user.box", &b"yes"[..]),
            ("SCHILY.xattr.security.selinux", &b"system_u:object_r:x"[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
            ("mtime", &b"1234567890.25"[..]),
        ])
        .expect("pax");
        let mut h = header(tar::EntryType::Regular, 0o4755, 0, 4);
        b.append_data(&mut h, "dir/prog", &b"\x7fELF"[..])
            .expect("file");
        let mut h = header(tar::EntryType::Symlink, 0o777, 1_000_000_000, 0);
        b.append_link(&mut h, "dir/link", "prog").expect("link");
    });
    let root = is_root("unpack_keeps_modes_mtimes_and_xattrs(ownership part)");
    let opts = if root { rootful() } else { rootless() };
    let (t, r) = run(&tar, &opts);
    let stats = r.expect("unpack");
    let prog = t.path().join("root/dir/prog");
    let m = fs::symlink_metadata(&prog).expect("prog");
    assert_eq!(m.mtime(), 1_234_567_890);
    assert_eq!(m.mtime_nsec(), 250_000_000);
    assert_eq!(getxattr(&prog, "user.box").as_deref(), Some(&b"yes"[..]));
    assert_eq!(getxattr(&prog, "trusted.overlay.redirect"), None);
    assert_eq!(
        getxattr(&prog, "security.selinux")
            .as_deref()
            .filter(|v| v.starts_with(b"system_u:object_r:x")),
        None
    );
    assert!(stats.xattrs_skipped >= 2);
    let dir = fs::symlink_metadata(t.path().join("root/dir")).expect("dir");
    assert_eq!(dir.permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        dir.mtime(),
        1_111_111_111,
        "directory mtime set after its contents"
    );
    let link = fs::symlink_metadata(t.path().join("root/dir/link")).expect("link");
    assert_eq!(link.mtime(), 1_000_000_000);
    if root {
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o4755,
            "setuid kept as root"
        );
        assert_eq!((m.uid(), m.gid()), (1234, 4321));
        assert_eq!((link.uid(), link.gid()), (1234, 4321));
    } else {
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
    }
}

#[test]
fn diff_id_is_sha256_of_the_whole_tar() {
    let tar = raw_tar(&[Raw::dir("a"), Raw::file("a/b", &[7u8; 5000])]);
    assert_eq!(tar.len() % 10240, 0, "record padding present");
    let (_t, r) = run(&tar, &rootless());
    let stats = r.expect("unpack");
    assert_eq!(stats.diff_id.hex(), sha256_hex(&tar));
    assert_eq!(stats.tar_size, tar.len() as u64);
    // Trailing garbage after the end-of-archive blocks still counts, as for sha256sum.
    let mut extra = tar.clone();
    extra.extend_from_slice(&[0u8; 4096]);
    let (_t, r) = run(&extra, &rootless());
    assert_eq!(r.expect("unpack").diff_id.hex(), sha256_hex(&extra));
}

#[test]
fn later_entries_replace_earlier_ones_without_following_symlinks() {
    let victim = TempDir::new("victim");
    let target = victim.path().join("target");
    fs::write(&target, b"host data").expect("write");
    let link_target = target.to_string_lossy().into_owned();
    let tar = raw_tar(&[
        Raw::symlink("f", &link_target),
        Raw::file("f", b"layer data"),
    ]);
    let (t, r) = run(&tar, &rootless());
    r.expect("unpack");
    assert_eq!(fs::read(&target).expect("host"), b"host data");
    assert_eq!(fs::read(t.path().join("root/f")).expect("f"), b"layer data");
    let _ = fs::set_permissions(&target, fs::Permissions::from_mode(0o644));
}
