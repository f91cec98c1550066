//! The supervisor for real (root): a busybox box logging both streams and exiting 3, restarts,
//! --rm, an attach client, detaching from the spawner, and repair after the supervisor dies.
//!
//! The "re-exec the test binary" pattern: box-cli's `box` binary is not reachable from here, so
//! [`spawn`] runs this test binary again with `BOX_TEST_SUPERVISE=<id>` and only the test
//! `supervise_entry`, which then calls `supervisor::run` (it never returns). libtest's main
//! thread sits idle in a channel receive meanwhile, so the runtime's clone is safe.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use box_engine::db::{new_id, BoxDb, BoxRecord, BoxState};
use box_engine::paths::Paths;
use box_engine::spec::{BoxSpec, RestartPolicy};
use box_engine::supervisor::{self, FRAME_EXIT, FRAME_STDERR, FRAME_STDOUT};

const ENTRY_ENV: &str = "BOX_TEST_SUPERVISE";

/// Not a test: the supervisor's body when this binary is re-executed by [`spawn`].
#[test]
fn supervise_entry() {
    if let Ok(id) = std::env::var(ENTRY_ENV) {
        let Some(paths) = supervisor::paths_from_env() else {
            std::process::exit(2);
        };
        supervisor::run(&paths, &id);
    }
}

fn privileged(name: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("BOX_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{name} needs root (BOX_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("skipping {name}: needs root");
    false
}

struct Fixture {
    dir: PathBuf,
    paths: Paths,
    db: BoxDb,
    rootfs: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "s{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
        ));
        let rootfs = dir.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("rootfs dirs");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox");
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("sh link");
        // Socket paths must stay under 108 bytes: a short run dir.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let run = PathBuf::from(format!("/tmp/bs{}-{n}", std::process::id()));
        let paths = Paths::with_dirs(dir.join("data"), run);
        std::fs::create_dir_all(&paths.data).expect("data dir");
        let db = BoxDb::open(&paths.db_path()).expect("db");
        Fixture {
            dir,
            paths,
            db,
            rootfs,
        }
    }

    /// A box (no snapshot: `--rootfs` style) running `script` in busybox sh.
    fn make_box(&self, script: &str, edit: impl FnOnce(&mut BoxSpec)) -> String {
        let id = new_id().expect("id");
        let mut spec = BoxSpec::new("rootfs", &["/bin/sh", "-c", script]);
        spec.rootfs = Some(self.rootfs.clone());
        edit(&mut spec);
        self.db
            .insert(&BoxRecord::new(
                id.clone(),
                String::new(),
                None,
                "rootfs".into(),
                spec,
            ))
            .expect("insert");
        let mut config = box_runtime::spec::default_spec(false);
        config["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
        config["process"]["terminal"] = serde_json::json!(false);
        config["root"] = serde_json::json!({"path": self.rootfs, "readonly": false});
        let bdir = self.paths.box_dir(&id);
        std::fs::create_dir_all(&bdir).expect("box dir");
        std::fs::write(
            self.paths.config_path(&id),
            serde_json::to_vec(&config).expect("json"),
        )
        .expect("config.json");
        id
    }

    fn spawn(&self, id: &str) -> i32 {
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = Command::new(exe);
        cmd.args([
            "supervise_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENTRY_ENV, id);
        supervisor::spawn_command(cmd, &self.paths, id).expect("supervisor started")
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.paths.log_path(id)).unwrap_or_default()
    }

    fn assert_runtime_clean(&self) {
        let root = self.paths.runtime_root();
        let left: Vec<_> = std::fs::read_dir(&root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "runtime state left: {left:?}");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let rt = box_runtime::Runtime::new(self.paths.runtime_root());
        if let (Ok(rt), Ok(list)) = (&rt, self.db.list()) {
            for r in list {
                let _ = rt.delete(&r.id, true);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.paths.run);
    }
}

#[test]
fn box_output_is_logged_per_stream_and_exit_3_recorded() {
    if !privileged("box_output_is_logged_per_stream_and_exit_3_recorded") {
        return;
    }
    let f = Fixture::new("exit3");
    let id = f.make_box("echo to-out; echo to-err >&2; exit 3", |_| {});
    let sup = f.spawn(&id);
    assert!(sup > 0);
    assert_eq!(supervisor::wait_exit(&f.paths, &id).expect("wait"), 3);
    let rec = f.db.get(&id).expect("db").expect("record");
    assert_eq!(rec.state, BoxState::Exited);
    assert_eq!(rec.exit_code, Some(3));
    assert!(rec.finished_at.is_some() && rec.started_at.is_some());
    assert!(!rec.oom_killed);
    let log = f.log(&id);
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F to-out")),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" stderr F to-err")),
        "{log}"
    );
    for l in &lines {
        let rec = box_engine::logs::parse_record(l.as_bytes()).expect("a CRI record");
        assert!(rec.time <= SystemTime::now());
    }
    wait_gone(sup);
    f.assert_runtime_clean();
    assert!(!f.paths.attach_socket(&id).exists());
}

#[test]
fn supervisor_is_detached_from_its_spawner() {
    if !privileged("supervisor_is_detached_from_its_spawner") {
        return;
    }
    let f = Fixture::new("detach");
    let id = f.make_box("sleep 30", |_| {});
    let sup = f.spawn(&id);
    let stat = std::fs::read_to_string(format!("/proc/{sup}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 2..].split(' ').collect();
    let (ppid, sid): (i32, i32) = (
        fields[1].parse().expect("ppid"),
        fields[3].parse().expect("sid"),
    );
    assert_ne!(ppid, std::process::id() as i32, "still our child");
    assert_eq!(sid, sup, "not a session leader");
    let rec = f.db.get(&id).expect("db").expect("record");
    assert_eq!(rec.state, BoxState::Running);
    assert_eq!(rec.supervisor_pid, Some(sup));
    supervisor::request_stop(&f.paths, &id).expect("stop marker");
    let pid = rec.pid.expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill box");
    assert_eq!(supervisor::wait_exit(&f.paths, &id).expect("wait"), 137);
    wait_gone(sup);
    f.assert_runtime_clean();
}

#[test]
fn killed_supervisor_leaves_a_record_repair_marks_exited() {
    if !privileged("killed_supervisor_leaves_a_record_repair_marks_exited") {
        return;
    }
    let f = Fixture::new("repair");
    let id = f.make_box("sleep 30", |_| {});
    let sup = f.spawn(&id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill supervisor");
    wait_gone(sup);
    assert_eq!(
        f.db.get(&id).expect("db").expect("record").state,
        BoxState::Running
    );
    assert_eq!(f.db.repair().expect("repair"), vec![id.clone()]);
    let rec = f.db.get(&id).expect("db").expect("record");
    assert_eq!(rec.state, BoxState::Exited);
    assert_eq!(rec.error.as_deref(), Some("supervisor died"));
    // The orphaned box is the runtime's to remove (box rm does this).
    box_runtime::Runtime::new(f.paths.runtime_root())
        .expect("runtime")
        .delete(&id, true)
        .expect("delete");
    f.assert_runtime_clean();
}

#[test]
fn on_failure_2_restarts_twice_then_stops() {
    if !privileged("on_failure_2_restarts_twice_then_stops") {
        return;
    }
    let f = Fixture::new("restart");
    let id = f.make_box("echo run; exit 1", |s| {
        s.restart = RestartPolicy::OnFailure(Some(2))
    });
    let t0 = Instant::now();
    f.spawn(&id);
    assert_eq!(supervisor::wait_exit(&f.paths, &id).expect("wait"), 1);
    let rec = f.db.get(&id).expect("db").expect("record");
    assert_eq!(rec.restart_count, 2);
    assert_eq!(f.log(&id).matches("stdout F run").count(), 3);
    // Back-off: 100 ms then 200 ms.
    assert!(t0.elapsed() >= Duration::from_millis(300));
    f.assert_runtime_clean();
}

#[test]
fn auto_remove_deletes_the_box_after_it_exits() {
    if !privileged("auto_remove_deletes_the_box_after_it_exits") {
        return;
    }
    let f = Fixture::new("rm");
    let id = f.make_box("exit 0", |s| s.auto_remove = true);
    let sup = f.spawn(&id);
    wait_gone(sup);
    assert!(f.db.get(&id).expect("db").is_none());
    assert!(!f.paths.box_dir(&id).exists());
    assert!(!f.paths.box_run_dir(&id).exists());
    f.assert_runtime_clean();
}

#[test]
fn attach_clients_receive_the_output_and_the_stdin_holder_feeds_the_box() {
    if !privileged("attach_clients_receive_the_output_and_the_stdin_holder_feeds_the_box") {
        return;
    }
    let f = Fixture::new("attach");
    let id = f.make_box("read line; echo got-$line; echo bye >&2; exit 5", |s| {
        s.stdin_open = true
    });
    f.spawn(&id);
    let mut watcher = supervisor::connect_attach(&f.paths, &id, b'r').expect("watcher");
    let mut holder = supervisor::connect_attach(&f.paths, &id, b'o').expect("holder");
    use std::io::Write;
    holder.write_all(b"hello\n").expect("stdin");
    for s in [&mut watcher, &mut holder] {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
        while let Some((stream, data)) = supervisor::read_frame(s).expect("frame") {
            match stream {
                FRAME_STDOUT => out.extend_from_slice(&data),
                FRAME_STDERR => err.extend_from_slice(&data),
                FRAME_EXIT => code = Some(i32::from_be_bytes(data[..4].try_into().expect("4"))),
                other => panic!("unexpected stream {other}"),
            }
        }
        assert_eq!(String::from_utf8_lossy(&out), "got-hello\n");
        assert_eq!(String::from_utf8_lossy(&err), "bye\n");
        assert_eq!(code, Some(5));
    }
    assert_eq!(supervisor::wait_exit(&f.paths, &id).expect("wait"), 5);
    f.assert_runtime_clean();
}

fn wait_gone(pid: i32) {
    let end = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
        // Not our child: it is reaped by whoever adopted it.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
