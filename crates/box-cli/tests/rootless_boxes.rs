//! Rootless boxes: `box` run as the test user `boxtest` (through setpriv, with its own HOME and
//! XDG_RUNTIME_DIR): run --rm in the foreground, run -d + logs + exec + exec -d + rm -f, and the ownership
//! on the host of files made in a box (root in the box is the user, other ids come from the user's
//! subordinate range).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

/// The user's world: a short dir (attach sockets live below XDG_RUNTIME_DIR) owned by the user,
/// with its copy of `box`, its HOME (`h`, data in `h/.local/share/box`) and XDG_RUNTIME_DIR
/// (`x`). Drop removes every box as the user, kills what is left of them (as root, by pid: only
/// processes naming this dir) and removes the dir.
struct UserBox {
    user: TestUser,
    dir: PathBuf,
}

impl UserBox {
    fn new() -> UserBox {
        static N: AtomicUsize = AtomicUsize::new(0);
        let user = test_user();
        let dir = PathBuf::from(format!(
            "/tmp/bxr{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["h", "x"] {
            std::fs::create_dir_all(dir.join(d)).expect("mkdir");
        }
        let bin = dir.join("box");
        std::fs::copy(env!("CARGO_BIN_EXE_box"), &bin).expect("copy box");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        sh(&format!(
            "chown -R {}:{} '{d}' && chmod 0755 '{d}' && chmod 0700 '{d}/x'",
            user.uid,
            user.gid,
            d = dir.display()
        ));
        UserBox { user, dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("h/.local/share/box")
    }

    fn boxc(&self, args: &[&str]) -> Output {
        let u = &self.user;
        Command::new("setpriv")
            .args(["--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string()])
            .arg("--init-groups")
            .arg("env")
            .arg("-i")
            .arg(format!("HOME={}", self.dir.join("h").display()))
            .arg(format!("USER={}", u.name))
            .arg(format!("LOGNAME={}", u.name))
            .arg(format!("XDG_RUNTIME_DIR={}", self.dir.join("x").display()))
            .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .arg(self.dir.join("box"))
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run box as the test user")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.boxc(args);
        assert!(
            out.status.success(),
            "box {args:?} as {} failed ({:?}): {}\n{}",
            self.user.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Processes (not this one) whose command line or environment names this dir.
    fn processes(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let d = self.dir.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .filter(|&pid| pid != me)
                    .filter(|pid| {
                        ["cmdline", "environ"].iter().any(|f| {
                            std::fs::read(format!("/proc/{pid}/{f}"))
                                .map(|b| String::from_utf8_lossy(&b).contains(&d))
                                .unwrap_or(false)
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for UserBox {
    fn drop(&mut self) {
        let ids = self.boxc(&["ps", "-a", "-q"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.boxc(&["rm", "-f", id.trim()]);
        }
        for _ in 0..50 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: a process naming this test's own dir (a supervisor or box CLI of
                // this test), signalled by pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(
                "grep -F \" $1\" /proc/self/mountinfo | awk '{print $5}' | sort -r | \
                 while read -r m; do umount -l \"$m\"; done",
            )
            .arg("sh")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn owner(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .uid()
}

#[test]
fn rootless_run_rm_is_root_in_the_box_with_its_hostname() {
    if !require_root("rootless_run_rm_is_root_in_the_box_with_its_hostname") {
        return;
    }
    let u = UserBox::new();
    let out = u.ok(&["run", "--rm", "host", "sh", "-c", "id -u; hostname"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], "0", "root in the box: {out}");
    assert!(!lines[1].is_empty(), "a hostname: {out}");
    assert_ne!(
        lines[1],
        sh("hostname").trim(),
        "the box's own hostname, not the host's"
    );
    assert_eq!(u.ok(&["ps", "-a", "-q"]), "", "--rm left nothing");
}

#[test]
fn rootless_detached_box_logs_execs_is_removed_and_owns_files_in_the_subuid_range() {
    if !require_root(
        "rootless_detached_box_logs_execs_is_removed_and_owns_files_in_the_subuid_range",
    ) {
        return;
    }
    let u = UserBox::new();
    let id = u.ok(&[
        "run",
        "-d",
        "--name",
        "rl",
        "host",
        "sh",
        "-c",
        "touch /by-root && touch /by-1000 && chown 1000:1000 /by-1000 && echo hello; \
         while true; do sleep 1; done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "prints the full id: {id}");
    assert!(u.ok(&["ps"]).contains("rl"));
    let logs = wait_for(Duration::from_secs(10), "the first log line", || {
        let l = u.ok(&["logs", "rl"]);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(logs, "hello\n");
    // On the host: the box's changes are in its snapshot's upper dir.
    let upper = u.data().join("snapshots").join(&id).join("upper");
    assert_eq!(
        owner(&upper.join("by-root")),
        u.user.uid,
        "root in the box is the user on the host"
    );
    assert_eq!(
        owner(&upper.join("by-1000")),
        u.user.subuid_start + 999,
        "uid 1000 in the box is subuid start + 999 on the host"
    );
    assert_eq!(u.ok(&["exec", "rl", "id", "-u"]), "0\n", "root in the box");
    // An exec'd process writes to the box's root like the box's own processes do.
    let out = u.ok(&[
        "exec",
        "rl",
        "sh",
        "-c",
        "touch /by-exec && chown 1000:1000 /by-exec && echo made",
    ]);
    assert_eq!(out, "made\n");
    assert_eq!(
        owner(&upper.join("by-exec")),
        u.user.subuid_start + 999,
        "made by exec, chowned to 1000"
    );
    let out = u.boxc(&["exec", "rl", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "exec's exit code");
    // exec -d: back at once, printing nothing, the caller's pipes left alone (output() reads
    // them to their ends); the process runs on, detached.
    let start = Instant::now();
    let out = u.boxc(&["exec", "-d", "rl", "sh", "-c", DETACHED_EXEC_SCRIPT]);
    let took = start.elapsed();
    assert!(out.status.success(), "exec -d failed: {out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    assert!(
        took < Duration::from_millis(800),
        "returned after {took:?}: the detached process (sleep 1) held the caller's pipes"
    );
    let got = wait_for(Duration::from_secs(10), "the detached process", || {
        let t =
            String::from_utf8_lossy(&u.boxc(&["exec", "rl", "cat", "/tmp/x"]).stdout).into_owned();
        t.ends_with("hi\n").then_some(t)
    });
    assert_eq!(got, DETACHED_EXEC_LEAVES);
    let inspect: serde_json::Value =
        serde_json::from_str(&u.ok(&["inspect", "rl"])).expect("inspect JSON");
    let sup = inspect[0]["State"]["SupervisorPid"]
        .as_i64()
        .expect("supervisor pid") as i32;
    let init = inspect[0]["State"]["Pid"].as_i64().expect("pid") as i32;
    assert!(alive(sup) && alive(init));
    u.ok(&["rm", "-f", "rl"]);
    assert_eq!(u.ok(&["ps", "-a", "-q"]), "");
    wait_for(
        Duration::from_secs(15),
        "the box's processes to end",
        || (!alive(sup) && !alive(init)).then_some(()),
    );
    assert!(
        !u.data().join("snapshots").join(&id).exists(),
        "the snapshot is removed"
    );
    assert!(
        !u.data().join("boxes").join(&id).exists(),
        "the box dir is removed"
    );
}
