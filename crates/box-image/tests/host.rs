//! Host image tests: busybox and binaries modes, stored as an ordinary image whose layer has
//! the expected files; the tree runs a shell under chroot; build time in busybox mode.

mod imgsupport;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use box_image::host::{
    build_host_image, find_busybox, plan_host_tree, HostImageMode, HostImageOptions, HostNode,
};
use box_image::image::ImageStore;
use imgsupport::{require_root, TempDir};

fn layer_dir(store: &ImageStore, name: &str) -> PathBuf {
    let img = store.resolve(name).unwrap();
    let dirs = store.lower_dirs(&img);
    assert_eq!(dirs.len(), 1, "the host image has one layer");
    dirs.into_iter().next().unwrap()
}

#[test]
fn host_image_busybox_mode_has_shell_links_tmp_and_etc() {
    let opts = HostImageOptions::default();
    if find_busybox(&opts).is_none() {
        eprintln!("host_image_busybox_mode: skipped (no busybox on this host)");
        return;
    }
    let tmp = TempDir::new("host-bb");
    let store = ImageStore::open(&tmp.join("data"), false).unwrap();
    let img = build_host_image(&store, &opts).unwrap();
    assert!(
        img.names.iter().any(|n| n.ends_with("host:latest")),
        "{:?}",
        img.names
    );
    let root = layer_dir(&store, "host:latest");
    let sh = fs::symlink_metadata(root.join("bin/sh")).unwrap();
    assert!(sh.file_type().is_symlink());
    assert!(fs::read_link(root.join("bin/sh"))
        .unwrap()
        .ends_with("busybox"));
    assert!(root.join("bin/busybox").is_file());
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(root.join("var/tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0:"));
    for f in [
        "group",
        "hosts",
        "resolv.conf",
        "profile",
        "bash.bashrc",
        "ld.so.conf",
        "nsswitch.conf",
        "os-release",
    ] {
        assert!(root.join("etc").join(f).is_file(), "/etc/{f}");
    }
    for d in [
        "proc", "sys", "dev", "run", "root", "home", "usr/bin", "usr/sbin", "opt", "mnt", "srv",
    ] {
        assert!(root.join(d).is_dir(), "/{d}");
    }
    // Applet links beyond /bin (busybox --list-full puts some in /usr/bin, /sbin).
    assert!(root.join("bin/ls").exists() || root.join("usr/bin/ls").exists());

    // Built again, the same host gives the same image.
    let again = build_host_image(&store, &opts).unwrap();
    assert_eq!(again.id, img.id, "deterministic layer and config");

    if require_root("host_image_busybox_mode (chroot part)") {
        let out = Command::new("chroot")
            .arg(&root)
            .args(["/bin/sh", "-c", "echo hi from $(ls /etc/os-release)"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "hi from /etc/os-release"
        );
    }
}

#[test]
fn host_image_binaries_mode_has_shell_libc_and_interpreter() {
    let opts = HostImageOptions {
        mode: HostImageMode::Binaries,
        name: "host-bin:latest".to_string(),
        ..HostImageOptions::default()
    };
    let tree = plan_host_tree(&opts).unwrap();
    assert_eq!(tree.mode, HostImageMode::Binaries);
    let tmp = TempDir::new("host-bin");
    let store = ImageStore::open(&tmp.join("data"), false).unwrap();
    build_host_image(&store, &opts).unwrap();
    let root = layer_dir(&store, "host-bin:latest");

    // A shell is there, reachable at /bin (merged-usr hosts: /bin is a symlink to usr/bin).
    let shell = ["bin/sh", "bin/bash"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| fs::symlink_metadata(p).is_ok());
    let shell = shell.expect("/bin/sh or /bin/bash in the layer");
    // The host's shell's interpreter (PT_INTERP) and libc are in the layer.
    let host_shell = fs::canonicalize("/bin/sh").unwrap();
    let bytes = fs::read(&host_shell).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    if let Some(interp) = elf.interpreter {
        let p = root.join(interp.trim_start_matches('/'));
        assert!(
            fs::symlink_metadata(&p).is_ok(),
            "interpreter {interp} in the layer"
        );
        // Resolved inside the layer: the chain of links ends at a real file.
        assert!(
            resolve_in(&root, Path::new(interp)).is_file(),
            "interpreter resolves in the layer"
        );
        let host_interp = fs::symlink_metadata(interp).unwrap();
        if host_interp.file_type().is_symlink() {
            assert!(
                fs::symlink_metadata(&p).unwrap().file_type().is_symlink(),
                "symlinks stay symlinks"
            );
        }
    }
    let libc_found = walk(&root).into_iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
    });
    assert!(libc_found, "libc in the layer");
    if require_root("host_image_binaries_mode (chroot part)") {
        let sh = Path::new("/").join(shell.strip_prefix(&root).unwrap());
        let out = Command::new("chroot")
            .arg(&root)
            .arg(&sh)
            .args(["-c", "ls / >/dev/null && echo ok"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    }
}

/// Resolves `path` inside `root` following symlinks as the kernel would under chroot.
fn resolve_in(root: &Path, path: &Path) -> PathBuf {
    let mut cur = PathBuf::from("/");
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == Path::new("/") {
            cur = PathBuf::from("/");
            continue;
        }
        if c == Path::new("..") {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let host = root.join(next.strip_prefix("/").unwrap());
        match fs::read_link(&host) {
            Ok(t) => {
                hops += 1;
                assert!(hops < 40);
                if t.is_absolute() {
                    cur = PathBuf::from("/");
                }
                for part in t.components().rev() {
                    pending.push(PathBuf::from(part.as_os_str()));
                }
            }
            Err(_) => cur = next,
        }
    }
    root.join(cur.strip_prefix("/").unwrap())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if fs::symlink_metadata(&p)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn host_tree_plan_is_deterministic_tar() {
    let opts = HostImageOptions::default();
    if find_busybox(&opts).is_none() {
        return;
    }
    let tree = plan_host_tree(&opts).unwrap();
    assert_eq!(
        tree.get("/bin/sh"),
        Some(&HostNode::Symlink {
            target: PathBuf::from("busybox")
        })
    );
    assert_eq!(tree.get("tmp"), Some(&HostNode::Dir { mode: 0o1777 }));
    let a = tree.write_tar(Vec::new()).unwrap();
    let b = plan_host_tree(&opts)
        .unwrap()
        .write_tar(Vec::new())
        .unwrap();
    assert_eq!(a, b);
}

/// Time to make the host image in busybox mode (target < 300 ms in a release build:
/// `cargo test --release -p box-image --test host -- --nocapture host_image_busybox_build_time`).
#[test]
fn host_image_busybox_build_time() {
    let opts = HostImageOptions::default();
    if find_busybox(&opts).is_none() {
        return;
    }
    let tmp = TempDir::new("host-time");
    let mut times = Vec::new();
    for i in 0..5 {
        // A fresh store each time: the whole path (plan, tar, ingest + unpack, commit).
        let store = ImageStore::open(&tmp.join(format!("data{i}")), false).unwrap();
        let t = Instant::now();
        build_host_image(&store, &opts).unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "host image (busybox mode), 5 fresh stores: min {:?} median {:?} max {:?}",
        times[0], times[2], times[4]
    );
    if !cfg!(debug_assertions) {
        assert!(
            times[2].as_millis() < 300,
            "median {:?} over the 300 ms target",
            times[2]
        );
    }
}
