//! Archive tests: docker-archive and OCI-layout round trips between fresh stores, rootfs
//! imports (gzip, xz) made from busybox-static, and `export_dir` keeping symlinks as symlinks.

mod imgsupport;

use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use box_image::archive::{export_dir, import_rootfs, load, save, SaveFormat};
use box_image::digest::Digest;
use box_image::image::ImageStore;
use imgsupport::{is_root, TempDir};

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut h, path, std::io::empty()).unwrap();
}

fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, path, target).unwrap();
}

/// A docker-archive with one two-layer image: the top layer changes etc/a and whites out dir/x.
fn docker_archive() -> (Vec<u8>, Vec<Digest>) {
    let mut l1 = tar::Builder::new(Vec::new());
    dir(&mut l1, "etc");
    file(&mut l1, "etc/a", b"a1", 0o644);
    dir(&mut l1, "dir");
    file(&mut l1, "dir/x", b"x", 0o600);
    file(&mut l1, "dir/y", b"y", 0o755);
    let l1 = l1.into_inner().unwrap();
    let mut l2 = tar::Builder::new(Vec::new());
    dir(&mut l2, "etc");
    file(&mut l2, "etc/a", b"a2", 0o644);
    dir(&mut l2, "dir");
    file(&mut l2, "dir/.wh.x", b"", 0o644);
    symlink(&mut l2, "etc/link", "/etc/a");
    let l2 = l2.into_inner().unwrap();
    let d1 = Digest::of_bytes(&l1);
    let d2 = Digest::of_bytes(&l2);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [d1.to_string(), d2.to_string()]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cd = Digest::of_bytes(&config);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", cd.hex()),
        "RepoTags": ["test/multi:1"],
        "Layers": [format!("{}/layer.tar", d1.hex()), format!("{}/layer.tar", d2.hex())],
    }]);
    let mut a = tar::Builder::new(Vec::new());
    file(&mut a, &format!("{}.json", cd.hex()), &config, 0o644);
    file(&mut a, &format!("{}/layer.tar", d1.hex()), &l1, 0o644);
    file(&mut a, &format!("{}/layer.tar", d2.hex()), &l2, 0o644);
    file(
        &mut a,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
        0o644,
    );
    (a.into_inner().unwrap(), vec![d1, d2])
}

fn check_multi_files(store: &ImageStore, name: &str) {
    let img = store.resolve(name).unwrap();
    let lowers = store.lower_dirs(&img);
    assert_eq!(lowers.len(), 2);
    assert_eq!(fs::read_to_string(lowers[0].join("etc/a")).unwrap(), "a2");
    assert_eq!(fs::read_to_string(lowers[1].join("etc/a")).unwrap(), "a1");
    assert_eq!(
        fs::read_link(lowers[0].join("etc/link")).unwrap(),
        PathBuf::from("/etc/a")
    );
    assert_eq!(
        fs::metadata(lowers[1].join("dir/y"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    // The whiteout is in overlay form in the top layer.
    assert!(
        fs::symlink_metadata(lowers[0].join("dir/x")).is_ok(),
        "whiteout of dir/x in the top layer"
    );
}

#[test]
fn load_save_round_trips_docker_archive_and_oci_layout() {
    let tmp = TempDir::new("arch-rt");
    let (archive, diff_ids) = docker_archive();
    let s1 = ImageStore::open(&tmp.join("s1"), !is_root()).unwrap();
    let loaded = load(Cursor::new(archive), &s1).unwrap();
    assert_eq!(loaded.len(), 1);
    let img = &loaded[0];
    assert_eq!(img.names, vec!["docker.io/test/multi:1".to_string()]);
    assert_eq!(
        img.layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect::<Vec<_>>(),
        diff_ids
    );
    check_multi_files(&s1, "test/multi:1");

    // docker-archive out of s1, into a fresh s2: same image id (config digest) and files.
    let saved = save(
        &s1,
        &["test/multi:1".to_string()],
        SaveFormat::DockerArchive,
        Vec::new(),
    )
    .unwrap();
    let names = tar_names(&saved);
    assert!(
        names.contains(&"manifest.json".to_string()) && names.contains(&"repositories".to_string()),
        "{names:?}"
    );
    let s2 = ImageStore::open(&tmp.join("s2"), !is_root()).unwrap();
    let again = load(Cursor::new(saved), &s2).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, img.id);
    assert_eq!(again[0].names, img.names);
    check_multi_files(&s2, "test/multi:1");

    // OCI layout out of s2, into s3: same id, same manifest digest, files.
    let oci = save(
        &s2,
        &["test/multi:1".to_string()],
        SaveFormat::OciLayout,
        Vec::new(),
    )
    .unwrap();
    let names = tar_names(&oci);
    assert!(
        names.contains(&"oci-layout".to_string()) && names.contains(&"index.json".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&format!("blobs/sha256/{}", again[0].manifest_digest.hex())));
    let s3 = ImageStore::open(&tmp.join("s3"), !is_root()).unwrap();
    let third = load(Cursor::new(oci), &s3).unwrap();
    assert_eq!(third[0].id, img.id);
    assert_eq!(third[0].manifest_digest, again[0].manifest_digest);
    assert_eq!(third[0].names, img.names);
    check_multi_files(&s3, "test/multi:1");

    // And the OCI layout again from s3 is byte-identical (deterministic save).
    let oci2 = save(
        &s3,
        &["test/multi:1".to_string()],
        SaveFormat::OciLayout,
        Vec::new(),
    )
    .unwrap();
    let oci1 = save(
        &s2,
        &["test/multi:1".to_string()],
        SaveFormat::OciLayout,
        Vec::new(),
    )
    .unwrap();
    assert_eq!(oci1, oci2);
}

#[test]
fn load_rejects_a_blob_that_does_not_match_its_name() {
    let tmp = TempDir::new("arch-bad");
    let wrong = Digest::of_bytes(b"something else");
    let mut a = tar::Builder::new(Vec::new());
    file(
        &mut a,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    file(
        &mut a,
        &format!("blobs/sha256/{}", wrong.hex()),
        b"tampered",
        0o644,
    );
    file(
        &mut a,
        "index.json",
        br#"{"schemaVersion":2,"manifests":[]}"#,
        0o644,
    );
    let store = ImageStore::open(&tmp.join("s"), !is_root()).unwrap();
    let err = load(Cursor::new(a.into_inner().unwrap()), &store).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(!store.content().has(&wrong));
}

fn tar_names(data: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(data);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A rootfs tarball made from the host's busybox-static: bin/busybox, bin/sh → busybox, etc.
fn busybox_rootfs() -> Option<Vec<u8>> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())?;
    let bytes = fs::read(bb).ok()?;
    let mut b = tar::Builder::new(Vec::new());
    dir(&mut b, "bin");
    file(&mut b, "bin/busybox", &bytes, 0o755);
    symlink(&mut b, "bin/sh", "busybox");
    dir(&mut b, "etc");
    file(&mut b, "etc/hostname", b"imported\n", 0o644);
    Some(b.into_inner().unwrap())
}

#[test]
fn import_rootfs_gzip_and_xz_make_one_layer_images() {
    let Some(plain) = busybox_rootfs() else {
        eprintln!("import_rootfs: skipped (no busybox)");
        return;
    };
    let diff_id = Digest::of_bytes(&plain);
    let tmp = TempDir::new("arch-import");
    let store = ImageStore::open(&tmp.join("s"), !is_root()).unwrap();

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let img = import_rootfs(Cursor::new(gz.clone()), "imported/gz:1", &store).unwrap();
    assert_eq!(img.layers.len(), 1);
    assert_eq!(
        img.layers[0].diff_id, diff_id,
        "diff id is the digest of the uncompressed tar"
    );
    assert_eq!(
        img.layers[0].blob_digest,
        Digest::of_bytes(&gz),
        "gzip stored as it came"
    );
    assert!(img.layers[0].media_type.ends_with("tar+gzip"));
    let cfg: serde_json::Value = serde_json::from_str(&img.config).unwrap();
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(cfg["os"], "linux");
    let root = &store.lower_dirs(&img)[0];
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    assert_eq!(
        fs::metadata(root.join("bin/busybox")).unwrap().len(),
        fs::metadata("/bin/busybox").unwrap().len()
    );

    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&plain).unwrap();
    let xz = xz.finish().unwrap();
    let img2 = import_rootfs(Cursor::new(xz), "imported/xz:1", &store).unwrap();
    assert_eq!(img2.layers[0].diff_id, diff_id);
    assert_eq!(
        img2.layers[0].blob_digest, diff_id,
        "xz is stored as a plain tar"
    );
    assert_eq!(
        img2.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_ne!(
        img2.id, img.id,
        "two imports are two images, even of one tree in the same second"
    );
    assert_eq!(store.resolve("imported/xz:1").unwrap().id, img2.id);
    assert_eq!(
        fs::read_to_string(store.lower_dirs(&img2)[0].join("etc/hostname")).unwrap(),
        "imported\n"
    );

    // A tree without /bin/sh gets no default command.
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "hello", b"hi", 0o644);
    let img3 = import_rootfs(
        Cursor::new(b.into_inner().unwrap()),
        "imported/nosh",
        &store,
    )
    .unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&img3.config).unwrap();
    assert!(cfg["config"].get("Cmd").is_none());
}

#[test]
fn export_dir_keeps_symlinks_out_as_symlinks_and_metadata() {
    let tmp = TempDir::new("arch-export");
    let root = tmp.join("tree");
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::write(root.join("sub/file"), "content").unwrap();
    fs::set_permissions(root.join("sub/file"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::hard_link(root.join("sub/file"), root.join("zz-hard")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../..", root.join("sub/up")).unwrap();
    fs::write(tmp.join("outside"), "secret").unwrap();
    std::os::unix::fs::symlink(tmp.path(), root.join("sub/deeper/outdir")).unwrap();
    let c = std::ffi::CString::new(root.join("sub/file").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings and a 3-byte value.
    let xattr_set = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.box".as_ptr(),
            b"yes".as_ptr().cast(),
            3,
            0,
        )
    } == 0;

    let out = export_dir(&root, Vec::new()).unwrap();
    let mut a = tar::Archive::new(out.as_slice());
    let mut seen = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let kind = e.header().entry_type();
        match path.as_str() {
            "escape" => {
                assert!(kind.is_symlink());
                assert_eq!(
                    e.link_name().unwrap().unwrap().to_string_lossy(),
                    "/etc/passwd"
                );
                assert_eq!(e.header().size().unwrap(), 0);
            }
            "sub/up" => assert!(kind.is_symlink()),
            "sub/deeper/outdir" => assert!(kind.is_symlink(), "a symlinked dir is not descended"),
            "sub/file" => {
                assert!(kind.is_file());
                assert_eq!(e.header().mode().unwrap() & 0o7777, 0o640);
                let meta = fs::metadata(root.join("sub/file")).unwrap();
                assert_eq!(e.header().uid().unwrap(), u64::from(meta.uid()));
                assert_eq!(e.header().mtime().unwrap(), meta.mtime() as u64);
                if xattr_set {
                    let x: Vec<_> = e
                        .pax_extensions()
                        .unwrap()
                        .expect("a pax header with the xattr")
                        .map(|ext| ext.unwrap())
                        .filter(|ext| ext.key().unwrap() == "SCHILY.xattr.user.box")
                        .map(|ext| ext.value_bytes().to_vec())
                        .collect();
                    assert_eq!(x, vec![b"yes".to_vec()]);
                }
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert_eq!(s, "content");
            }
            "zz-hard" => {
                assert!(
                    kind == tar::EntryType::Link,
                    "second name of a file is a hard link"
                );
                assert_eq!(
                    e.link_name().unwrap().unwrap().to_string_lossy(),
                    "sub/file"
                );
            }
            _ => {}
        }
        seen.push(path);
    }
    assert!(
        !seen
            .iter()
            .any(|p| p.contains("outside") || p.starts_with("sub/deeper/outdir/")),
        "{seen:?}"
    );
    // The hard link pair: one file, one link entry.
    assert!(seen.contains(&"zz-hard".to_string()) && seen.contains(&"sub/file".to_string()));
    let out = export_dir(&root, Vec::new()).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("secret"));
}
