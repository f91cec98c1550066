//! Engine: create → list → get → rename → remove, names, the host image, failures that leave
//! nothing behind, export, diff, and a created box that really runs (as root).

mod engsupport;

use std::fs;
use std::io::Read;
use std::path::Path;

use box_engine::db::{BoxState, StateChange};
use box_engine::engine::Engine;
use box_engine::error::EngineError;
use box_engine::spec::BoxSpec;
use box_image::snapshot::ChangeKind;
use engsupport::{busybox_rootfs, engine, is_root, mounts_under, TempDir};

fn dir_entries(p: &Path) -> Vec<String> {
    match fs::read_dir(p) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn named(image: &str, name: &str, cmd: &[&str]) -> BoxSpec {
    let mut s = BoxSpec::new(image, cmd);
    s.name = Some(name.to_string());
    s
}

#[test]
fn create_list_get_rename_remove() {
    let (_dir, eng) = engine("crud");
    let rec = eng.create(named("host", "web", &["echo", "hi"])).unwrap();
    assert_eq!(rec.state, BoxState::Created);
    assert_eq!(rec.name, "web");
    assert_eq!(rec.id.len(), 64);
    assert!(eng.paths().config_path(&rec.id).is_file());
    assert!(eng.paths().box_dir(&rec.id).join("hosts").is_file());
    assert!(eng.paths().snapshot_dir(&rec.id).is_dir());

    // Created boxes are listed with -a only.
    assert!(eng.list(false).unwrap().is_empty());
    assert_eq!(eng.list(true).unwrap().len(), 1);

    assert_eq!(eng.get("web").unwrap().id, rec.id);
    assert_eq!(eng.get(&rec.id[..12]).unwrap().name, "web");
    assert_eq!(eng.get(&rec.id).unwrap().name, "web");

    let renamed = eng.rename("web", "api").unwrap();
    assert_eq!(renamed.name, "api");
    assert!(matches!(eng.get("web"), Err(EngineError::NoSuchBox(_))));

    eng.remove("api", false).unwrap();
    assert!(matches!(eng.get("api"), Err(EngineError::NoSuchBox(_))));
    assert!(!eng.paths().box_dir(&rec.id).exists());
    assert!(!eng.paths().snapshot_dir(&rec.id).exists());
    assert!(eng.list(true).unwrap().is_empty());
}

#[test]
fn names_conflict_and_are_generated() {
    let (_dir, eng) = engine("names");
    let a = eng.create(named("host", "web", &["true"])).unwrap();
    let e = eng.create(named("host", "web", &["true"])).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, EngineError::NameInUse { .. }), "{msg}");
    assert!(
        msg.contains(a.short_id()) && msg.contains("box rm web"),
        "{msg}"
    );
    let b = eng.create(BoxSpec::new("host", &["true"])).unwrap();
    assert!(b.name.contains('_'), "generated name {}", b.name);
    let e = eng.rename(&b.id, "web").unwrap_err();
    assert!(matches!(e, EngineError::NameInUse { .. }), "{e}");
    assert_eq!(eng.list(true).unwrap().len(), 2);
}

#[test]
fn create_from_host_builds_it_once() {
    let (_dir, eng) = engine("host");
    assert!(eng.images().list().unwrap().is_empty());
    eng.create(BoxSpec::new("host", &["true"])).unwrap();
    let images = eng.images().list().unwrap();
    assert_eq!(images.len(), 1);
    eng.create(BoxSpec::new("host:latest", &["true"])).unwrap();
    assert_eq!(eng.images().list().unwrap().len(), 1);
}

#[test]
fn unknown_image_fails_clearly_and_leaves_nothing() {
    let (_dir, eng) = engine("unknown");
    let e = eng
        .create(named("nosuchimage:1", "ghost", &["true"]))
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, EngineError::NoSuchImage(_)), "{msg}");
    assert!(msg.contains("box pull nosuchimage:1"), "{msg}");
    assert!(eng.list(true).unwrap().is_empty());
    assert!(dir_entries(&eng.paths().boxes_dir()).is_empty());
    assert!(dir_entries(&eng.paths().data.join("snapshots")).is_empty());
}

#[test]
fn failed_spec_after_snapshot_is_undone() {
    let (_dir, eng) = engine("undo");
    let mut s = named("host", "bad", &["true"]);
    s.mounts
        .push(box_engine::spec::parse_volume("/definitely/not/here:/x").unwrap());
    let e = eng.create(s).unwrap_err();
    assert!(e.to_string().contains("/definitely/not/here"), "{e}");
    assert!(eng.list(true).unwrap().is_empty());
    assert!(dir_entries(&eng.paths().boxes_dir()).is_empty());
    assert!(dir_entries(&eng.paths().data.join("snapshots")).is_empty());
}

#[test]
fn remove_refuses_a_running_box_unless_forced() {
    let (_dir, eng) = engine("rm-running");
    let rec = eng.create(named("host", "busy", &["true"])).unwrap();
    // A stand-in supervisor: a child we own, recorded as the box's supervisor.
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    eng.db()
        .update_state(
            &rec.id,
            &StateChange::Running {
                pid,
                supervisor_pid: pid,
                supervisor_start: box_engine::db::process_start_time(pid),
                started_at: box_engine::db::now_ms(),
            },
        )
        .unwrap();
    let e = eng.remove("busy", false).unwrap_err();
    assert!(e.to_string().contains("box rm -f busy"), "{e}");
    assert!(eng.get("busy").is_ok());
    eng.remove("busy", true).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the supervisor was killed");
    assert!(eng.get("busy").is_err());
    assert!(!eng.paths().box_dir(&rec.id).exists());
}

#[test]
fn reopen_repairs_a_box_whose_supervisor_died() {
    let dir = TempDir::new("repair");
    let paths = box_engine::paths::Paths::with_data_dir(dir.path().join("data"));
    let id = {
        let eng = Engine::open(paths.clone()).unwrap();
        let rec = eng.create(named("host", "orphan", &["true"])).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        eng.db()
            .update_state(
                &rec.id,
                &StateChange::Running {
                    pid,
                    supervisor_pid: pid,
                    supervisor_start: Some(1),
                    started_at: box_engine::db::now_ms(),
                },
            )
            .unwrap();
        rec.id
    };
    let eng = Engine::open(paths).unwrap();
    let rec = eng.get(&id).unwrap();
    assert_eq!(rec.state, BoxState::Exited);
    assert_eq!(rec.error.as_deref(), Some("supervisor died"));
    eng.remove(&id, false).unwrap();
}

#[test]
fn diff_shows_what_the_box_added() {
    let (_dir, eng) = engine("diff");
    let rec = eng.create(named("host", "d", &["true"])).unwrap();
    let upper = eng.paths().snapshot_dir(&rec.id).join("upper");
    fs::write(upper.join("hello.txt"), "hi").unwrap();
    let changes = eng.diff("d").unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.kind == ChangeKind::Added && c.path == Path::new("/hello.txt")),
        "{changes:?}"
    );
}

#[test]
fn export_contains_the_image_shell() {
    if !is_root("export_contains_the_image_shell") {
        return;
    }
    let (dir, eng) = engine("export");
    let rec = eng.create(named("host", "x", &["true"])).unwrap();
    let before = mounts_under(dir.path());
    let tar_bytes = eng.export("x", Vec::new()).unwrap();
    assert_eq!(
        mounts_under(dir.path()),
        before,
        "nothing left mounted here"
    );
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        names.push(entry.path().unwrap().to_string_lossy().into_owned());
    }
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./").trim_end_matches('/') == "bin/sh"),
        "bin/sh missing from {} entries: {:?}",
        names.len(),
        names.iter().take(20).collect::<Vec<_>>()
    );
    eng.remove(&rec.id, false).unwrap();
}

#[test]
fn export_of_a_rootfs_box_reads_the_dir() {
    let dir = TempDir::new("export-rootfs");
    let root = busybox_rootfs(dir.path());
    let eng = Engine::open(box_engine::paths::Paths::with_data_dir(
        dir.path().join("data"),
    ))
    .unwrap();
    let mut s = named("", "r", &["true"]);
    s.rootfs = Some(root);
    eng.create(s).unwrap();
    let mut tar_bytes = Vec::new();
    eng.export("r", &mut tar_bytes).unwrap();
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let found = archive.entries().unwrap().any(|e| {
        e.map(|e| {
            e.path()
                .map(|p| p.ends_with("bin/busybox"))
                .unwrap_or(false)
        })
        .unwrap_or(false)
    });
    assert!(found);
    assert!(eng.diff("r").is_err());
}

#[test]
fn created_image_box_runs_as_root() {
    if !is_root("created_image_box_runs_as_root") {
        return;
    }
    let (dir, eng) = engine("run");
    let out = dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let mut s = named(
        "host",
        "runner",
        &["sh", "-c", "echo hello-from-box $(hostname) > /out/result"],
    );
    s.mounts
        .push(box_engine::spec::parse_volume(&format!("{}:/out", out.display())).unwrap());
    let rec = eng.create(s).unwrap();
    // The supervisor's part: mount the snapshot, run the bundle.
    let mut snap = box_image::snapshot::Snapshot::open(&eng.paths().data, &rec.id).unwrap();
    snap.mount().unwrap();
    let runtime = eng.runtime().unwrap();
    let opts = box_runtime::CreateOptions {
        bundle: eng.paths().box_dir(&rec.id),
        ..Default::default()
    };
    let outcome = runtime.run(&rec.id, &opts, false);
    snap.unmount().unwrap();
    assert_eq!(outcome.unwrap(), box_runtime::RunOutcome::Exited(0));
    let mut text = String::new();
    fs::File::open(out.join("result"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text.trim(), format!("hello-from-box {}", &rec.id[..12]));
    eng.remove("runner", false).unwrap();
    assert!(mounts_under(dir.path()).is_empty());
}
