//! The OCI spec the engine makes really runs: written to a bundle over a busybox-static rootfs
//! and run by box-runtime as root, with the user, env, workdir, hostname and mounts it asked.

mod engsupport;

use std::fs;

use box_engine::oci::{build_spec, write_etc_files};
use box_engine::paths::Paths;
use box_engine::spec::BoxSpec;
use engsupport::{busybox_rootfs, is_root, mounts_under, TempDir};

#[test]
fn generated_spec_runs_under_box_runtime() {
    if !is_root("generated_spec_runs_under_box_runtime") {
        return;
    }
    let dir = TempDir::new("oci-run");
    let root = busybox_rootfs(dir.path());
    let out = dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let paths = Paths::with_data_dir(dir.path().join("data"));
    let id = format!("{:064x}", std::process::id());
    fs::create_dir_all(paths.box_dir(&id)).unwrap();

    let mut s = BoxSpec::new(
        "",
        &["sh", "-c", "echo \"$(id -u):$(id -g) $GREETING $(pwd) $(hostname) $(cat /etc/hostname)\" > /out/result; echo scratch > /scratch/f && cat /scratch/f >> /out/result"],
    );
    s.user = Some("bob".into());
    s.env = vec!["GREETING=hello".into()];
    s.workdir = Some("/tmp".into());
    s.hostname = Some("boxhost".into());
    s.mounts
        .push(box_engine::spec::parse_volume(&format!("{}:/out", out.display())).unwrap());
    s.mounts
        .push(box_engine::spec::parse_tmpfs("/scratch:mode=1777").unwrap());
    s.rootfs = Some(root.clone());
    let spec = build_spec(&s, None, &root, std::slice::from_ref(&root), &paths, &id).unwrap();
    write_etc_files(&paths, &id, "boxhost").unwrap();
    fs::write(
        paths.config_path(&id),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();

    let runtime = box_runtime::Runtime::new(paths.runtime_root()).unwrap();
    let opts = box_runtime::CreateOptions {
        bundle: paths.box_dir(&id),
        ..Default::default()
    };
    let outcome = runtime.run(&id, &opts, false).unwrap();
    assert_eq!(outcome, box_runtime::RunOutcome::Exited(0));
    let text = fs::read_to_string(out.join("result")).unwrap();
    assert_eq!(text, "1000:1000 hello /tmp boxhost boxhost\nscratch\n");
    assert!(mounts_under(dir.path()).is_empty());
}

#[test]
fn exit_code_of_the_box_comes_back() {
    if !is_root("exit_code_of_the_box_comes_back") {
        return;
    }
    let dir = TempDir::new("oci-exit");
    let root = busybox_rootfs(dir.path());
    let paths = Paths::with_data_dir(dir.path().join("data"));
    let id = format!("e{:063x}", std::process::id());
    fs::create_dir_all(paths.box_dir(&id)).unwrap();
    let mut s = BoxSpec::new("", &["sh", "-c", "exit 7"]);
    s.rootfs = Some(root.clone());
    s.read_only = true;
    s.memory = Some(64 << 20);
    s.pids_limit = Some(20);
    let spec = build_spec(&s, None, &root, std::slice::from_ref(&root), &paths, &id).unwrap();
    write_etc_files(&paths, &id, &id[..12]).unwrap();
    fs::write(paths.config_path(&id), serde_json::to_vec(&spec).unwrap()).unwrap();
    let runtime = box_runtime::Runtime::new(paths.runtime_root()).unwrap();
    let opts = box_runtime::CreateOptions {
        bundle: paths.box_dir(&id),
        ..Default::default()
    };
    assert_eq!(
        runtime.run(&id, &opts, false).unwrap(),
        box_runtime::RunOutcome::Exited(7)
    );
}
