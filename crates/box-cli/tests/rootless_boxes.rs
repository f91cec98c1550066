//! Rootless boxes: `box` run as the test user `boxtest` (through setpriv, with its own HOME and
//! XDG_RUNTIME_DIR): run --rm in the foreground, run -d + logs + exec + exec -d + rm -f, and the ownership
//! on the host of files made in a box (root in the box is the user, other ids come from the user's
//! subordinate range); then every other engine command rootless: stop/start/restart/kill/wait/
//! rename/inspect/ps (--filter)/container prune, boxes running as uid 1000 (signalled from their
//! own user namespace), pause refused without a cgroup, top/stats/show, logs --tail/-t, attach,
//! cp both ways (symlinks resolved inside the box), diff/commit/export, volumes and read-only
//! binds, and the Akuma verbs.

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

    /// `box ARGS…` as the user, not yet run (stdin, stdout and stderr still to choose).
    fn cmd(&self, args: &[&str]) -> Command {
        let u = &self.user;
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string()])
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
            .current_dir(&self.dir);
        c
    }

    /// Runs `box ARGS…` as the user with no stdin, its output read to its ends; a command
    /// still running after `COMMAND_TIMEOUT` (a hang) is killed and fails the test.
    fn boxc(&self, args: &[&str]) -> Output {
        use std::io::Read;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run box as the test user");
        let read = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut b = Vec::new();
                let _ = r.read_to_end(&mut b);
                b
            })
        };
        let out = read(Box::new(child.stdout.take().expect("stdout")));
        let err = read(Box::new(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().expect("wait");
                // In a drop guard during a failure, a second panic would abort.
                assert!(
                    std::thread::panicking(),
                    "box {args:?} as {} still ran after {COMMAND_TIMEOUT:?}",
                    self.user.name
                );
                break status;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }
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

    /// Runs `box ARGS…`, asserting that it fails; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.boxc(args);
        assert!(
            !out.status.success(),
            "box {args:?} as {} should fail: {}",
            self.user.name,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `box inspect NAME`'s one object.
    fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect JSON");
        v[0].clone()
    }

    /// A dir of the user's own below this world (bind mount sources, cp targets).
    fn user_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        sh(&format!(
            "chown {}:{} '{}'",
            self.user.uid,
            self.user.gid,
            d.display()
        ));
        d
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

/// Waits (10 s at most) until `box logs NAME` holds `want`; returns the logs.
fn wait_logs(u: &UserBox, name: &str, want: &str) -> String {
    wait_for(Duration::from_secs(10), want, || {
        let l = u.ok(&["logs", name]);
        l.contains(want).then_some(l)
    })
}

/// The box's init pid, from `inspect`.
fn init_pid(u: &UserBox, name: &str) -> i32 {
    u.inspect(name)["State"]["Pid"].as_i64().expect("pid") as i32
}

/// `box CMD…` as the user, its stdout collected by a thread while it runs; killed (SIGKILL, by
/// its pid: setpriv and env exec, so that is `box` itself) and reaped when dropped.
struct Client {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Client {
    fn spawn(u: &UserBox, args: &[&str]) -> Client {
        let mut child = u
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn box as the test user");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stdout.take().expect("stdout");
        let o = std::sync::Arc::clone(&out);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Client { child, out }
    }

    fn out(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits (15 s at most) for the client to end; its exit code.
    fn wait(&mut self) -> Option<i32> {
        let status = wait_deadline(&mut self.child, Duration::from_secs(15), "box client");
        // Let the reader take the last bytes.
        std::thread::sleep(Duration::from_millis(100));
        status.code()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A box's init that reports SIGUSR1 and goes on, and exits 3 on SIGTERM.
const TRAPPING: &str = "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 3' TERM; \
                        echo started; while true; do sleep 0.1; done";

#[test]
fn rootless_stop_start_restart_kill_wait_rename_inspect_ps_prune() {
    if !require_root("rootless_stop_start_restart_kill_wait_rename_inspect_ps_prune") {
        return;
    }
    let u = UserBox::new();
    let id = u.ok(&["run", "-d", "--name", "lc", "host", "sh", "-c", TRAPPING]);
    let id = id.trim().to_string();
    wait_logs(&u, "lc", "started\n");

    // inspect: the record's fields.
    let j = u.inspect("lc");
    assert_eq!(j["Id"], id.as_str(), "{j}");
    assert_eq!(j["Name"], "lc", "{j}");
    assert_eq!(j["Image"], "host", "{j}");
    assert_eq!(j["State"]["Status"], "running", "{j}");
    assert_eq!(j["State"]["Running"], true, "{j}");
    assert_eq!(j["Config"]["cmd"][0], "sh", "{j}");
    let pid1 = init_pid(&u, "lc");
    assert!(alive(pid1), "the init lives: {j}");

    // ps: running boxes only, -a all of them, -q short ids.
    let idle = u.ok(&["create", "--name", "idle", "host", "true"]);
    let idle = &idle.trim()[..12];
    assert_eq!(u.ok(&["ps", "-q"]), format!("{}\n", &id[..12]));
    let all = u.ok(&["ps", "-a", "-q"]);
    assert_eq!(all.lines().count(), 2, "{all}");
    assert!(all.lines().any(|l| l == &id[..12]), "{all}");
    let table = u.ok(&["ps", "-a"]);
    assert!(
        table.contains("Up since") && table.contains("created"),
        "{table}"
    );

    // kill -s USR1: delivered to the init, which goes on.
    assert_eq!(u.ok(&["kill", "-s", "USR1", "lc"]), "lc\n");
    wait_logs(&u, "lc", "got-usr1\n");
    assert_eq!(u.inspect("lc")["State"]["Status"], "running");

    // stop -t: SIGTERM, which the init traps (exit 3) long before the grace ends.
    let t = Instant::now();
    assert_eq!(u.ok(&["stop", "-t", "20", "lc"]), "lc\n");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let j = u.inspect("lc");
    assert_eq!(j["State"]["Status"], "exited", "{j}");
    assert_eq!(j["State"]["ExitCode"], 3, "{j}");
    assert!(u.ok(&["logs", "lc"]).contains("got-term\n"));
    assert_eq!(u.ok(&["wait", "lc"]), "3\n");
    assert!(u.ok(&["ps", "-a"]).contains("Exited (3)"));

    // ps --filter: by status, name, id prefix and exit code; one key's values are
    // alternatives, different keys must all match.
    let ps_q = |filters: &[&str]| {
        let mut args = vec!["ps", "-a", "-q"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        u.ok(&args)
    };
    let lc = format!("{}\n", &id[..12]);
    assert_eq!(ps_q(&["status=exited"]), lc);
    assert_eq!(ps_q(&["status=created"]), format!("{idle}\n"));
    assert_eq!(
        ps_q(&["status=exited", "status=created"]).lines().count(),
        2
    );
    assert_eq!(ps_q(&["name=dl", "status=created"]), format!("{idle}\n"));
    assert_eq!(ps_q(&["name=dl", "status=exited"]), "");
    assert_eq!(ps_q(&["exited=3"]), lc);
    assert_eq!(ps_q(&["exited=0"]), "");
    assert_eq!(ps_q(&[&format!("id={}", &id[..6])]), lc);
    assert_eq!(
        u.ok(&["ps", "-q", "--filter", "status=exited"]),
        "",
        "-a not given"
    );
    let err = u.fails(&["ps", "--filter", "colour=red"]);
    assert!(err.contains("unknown key colour"), "{err}");
    assert!(!alive(pid1), "the init is gone");

    // start: the same box again, a new init.
    assert_eq!(u.ok(&["start", "lc"]), "lc\n");
    assert_eq!(u.inspect("lc")["State"]["Status"], "running");
    let pid2 = init_pid(&u, "lc");
    assert_ne!(pid2, pid1);
    wait_for(Duration::from_secs(10), "the second start", || {
        (u.ok(&["logs", "lc"]).matches("started\n").count() == 2).then_some(())
    });
    assert!(u.fails(&["start", "lc"]).contains("already running"));

    // restart -t: stopped as by stop, started again.
    assert_eq!(u.ok(&["restart", "-t", "20", "lc"]), "lc\n");
    assert_eq!(u.inspect("lc")["State"]["Status"], "running");
    let pid3 = init_pid(&u, "lc");
    assert!(pid3 != pid2 && !alive(pid2) && alive(pid3));
    assert_eq!(u.ok(&["logs", "lc"]).matches("got-term\n").count(), 2);

    // kill -s KILL: 128 + 9.
    assert_eq!(u.ok(&["kill", "-s", "KILL", "lc"]), "lc\n");
    assert_eq!(u.ok(&["wait", "lc"]), "137\n");
    assert!(u.fails(&["kill", "lc"]).contains("not running"));

    // stop -t 1 of a box that ignores SIGTERM (an init without a handler): SIGKILL after 1 s.
    u.ok(&[
        "run",
        "-d",
        "--name",
        "deaf",
        "host",
        "sh",
        "-c",
        "echo up; exec sleep 1000",
    ]);
    wait_logs(&u, "deaf", "up\n");
    let t = Instant::now();
    assert_eq!(u.ok(&["stop", "-t", "1", "deaf"]), "deaf\n");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(u.ok(&["wait", "deaf"]), "137\n");

    // rename: the new name finds it, the old one no longer; a taken name is refused.
    assert_eq!(u.ok(&["rename", "lc", "lc2"]), "");
    assert_eq!(u.inspect("lc2")["Id"], id.as_str());
    assert!(u.fails(&["inspect", "lc"]).contains("lc"));
    assert!(!u.fails(&["rename", "lc2", "deaf"]).is_empty());

    // container prune: every box that is not running (lc2, deaf, idle), not the running one.
    u.ok(&["run", "-d", "--name", "up", "host", "sleep", "1000"]);
    let out = u.ok(&["container", "prune", "-f"]);
    assert!(out.contains("Total removed boxes: 3"), "{out}");
    assert!(out.contains(&id), "{out}");
    let left = u.ok(&["ps", "-a", "--format", "json"]);
    let left: serde_json::Value = serde_json::from_str(&left).expect("ps JSON");
    let names: Vec<&str> = left
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|b| b["Name"].as_str())
        .collect();
    assert_eq!(names, ["up"]);
    u.ok(&["rm", "-f", "up"]);
    assert_eq!(u.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn rootless_pause_is_refused_without_a_cgroup_and_top_stats_show_see_the_box() {
    if !require_root("rootless_pause_is_refused_without_a_cgroup_and_top_stats_show_see_the_box") {
        return;
    }
    let u = UserBox::new();
    u.ok(&[
        "run",
        "-d",
        "--name",
        "pz",
        "host",
        "sh",
        "-c",
        "sleep 4321 & i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done",
    ]);
    let ticks = |u: &UserBox| u.ok(&["logs", "pz"]).lines().count();
    wait_for(Duration::from_secs(10), "ticks", || {
        (ticks(&u) > 2).then_some(())
    });

    // Rootless boxes get no cgroup here (no delegation): no freezer, so pause must say why
    // and leave the box running.
    let err = u.fails(&["pause", "pz"]);
    assert!(
        err.contains("has no cgroup") && err.contains("rootless"),
        "pause's error: {err}"
    );
    assert_eq!(u.inspect("pz")["State"]["Status"], "running");
    let before = ticks(&u);
    wait_for(
        Duration::from_secs(10),
        "ticks after the refused pause",
        || (ticks(&u) > before + 2).then_some(()),
    );
    let err = u.fails(&["unpause", "pz"]);
    assert!(err.contains("not paused"), "unpause's error: {err}");

    // top: the box's processes (found through its pid namespace, seen from the box's own user
    // namespace: not only its init), not the host's others.
    let pid = init_pid(&u, "pz");
    let child = wait_for(Duration::from_secs(10), "the box's sleep 4321", || {
        pids_running(&["sleep", "4321"]).first().copied()
    });
    let top = u.ok(&["top", "pz"]);
    let mut lines = top.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .unwrap_or_else(|| panic!("no PID column: {top}"));
    let pids: Vec<i32> = lines
        .filter_map(|l| l.split_whitespace().nth(col)?.parse().ok())
        .collect();
    assert!(pids.contains(&pid), "the init {pid}: {top}");
    assert!(pids.contains(&child), "the init's child {child}: {top}");
    assert!(!pids.contains(&(std::process::id() as i32)), "{top}");
    assert!(top.contains("tick"), "{top}");
    let top = u.ok(&["top", "pz", "-eo", "pid,comm"]);
    assert!(top.lines().skip(1).any(|l| l.ends_with("sh")), "{top}");

    // stats --no-stream: one row for the box (from /proc: there is no cgroup to read), its
    // processes counted.
    let stats = u.ok(&["stats", "--no-stream", "pz"]);
    let mut lines = stats.lines();
    assert!(lines.next().unwrap_or("").contains("CPU %"), "{stats}");
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(row.get(1), Some(&"pz"), "{stats}");
    assert!(
        row.iter().any(|c| c.ends_with("MiB") || c.ends_with("KiB")),
        "{stats}"
    );
    let procs: u32 = row.last().and_then(|p| p.parse().ok()).unwrap_or(0);
    assert!(procs >= 2, "the init and its sleep at least: {stats}");
    // Without names (every running box), from a user namespace that is not the box's: the same.
    let all = u.ok(&["stats", "--no-stream"]);
    let row: Vec<&str> = all
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("pz"))
        .unwrap_or_else(|| panic!("no row for pz: {all}"))
        .split_whitespace()
        .collect();
    let procs: u32 = row.last().and_then(|p| p.parse().ok()).unwrap_or(0);
    assert!(procs >= 2, "the init and its sleep at least: {all}");

    // show: state and member pids.
    let show = u.ok(&["show", "pz"]);
    assert!(
        show.contains("State:     running") && show.contains("Pids:"),
        "{show}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&u.ok(&["show", "--format", "json", "pz"])).expect("JSON");
    let members = j["Pids"].as_array().expect("pids");
    assert!(
        members.contains(&pid.into()) && members.contains(&child.into()),
        "{j}"
    );
    assert!(j["Usage"]["MemoryBytes"].as_u64().unwrap_or(0) > 0, "{j}");
    assert_eq!(u.ok(&["close", "pz"]), "pz\n");
    wait_for(
        Duration::from_secs(10),
        "the box's processes to die",
        || (!alive(pid) && !alive(child)).then_some(()),
    );
    assert_eq!(u.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn rootless_logs_tail_and_timestamps_and_attach_watches_until_killed() {
    if !require_root("rootless_logs_tail_and_timestamps_and_attach_watches_until_killed") {
        return;
    }
    let u = UserBox::new();
    // Five lines, then ticks once /go exists.
    u.ok(&[
        "run",
        "-d",
        "--name",
        "lg",
        "host",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line $i; done; while [ ! -e /go ]; do sleep 0.1; done; \
         i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done",
    ]);
    wait_logs(&u, "lg", "line 5\n");
    assert_eq!(u.ok(&["logs", "--tail", "2", "lg"]), "line 4\nline 5\n");
    let stamped = u.ok(&["logs", "-t", "lg"]);
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 5, "{stamped}");
    let year = sh("date -u +%Y");
    for (i, l) in lines.iter().enumerate() {
        let (time, text) = l.split_once(' ').unwrap_or_else(|| panic!("{l}"));
        assert_eq!(text, format!("line {}", i + 1), "{stamped}");
        assert!(
            time.starts_with(year.trim()) && time.contains('T') && time.ends_with('Z'),
            "an RFC 3339 time: {stamped}"
        );
    }
    let last = u.ok(&["logs", "--tail", "1", "-t", "lg"]);
    assert!(
        last.ends_with(" line 5\n") && last.lines().count() == 1,
        "{last}"
    );

    // attach (watching only): sees the ticks that start after it connected.
    let mut client = Client::spawn(&u, &["attach", "--no-stdin", "lg"]);
    std::thread::sleep(Duration::from_millis(300));
    u.ok(&["exec", "lg", "touch", "/go"]);
    wait_for(Duration::from_secs(15), "ticks through attach", || {
        client.out().contains("tick 3\n").then_some(())
    });
    assert!(!client.out().contains("line 1"), "{}", client.out());
    // Killing the client detaches it: the box runs on.
    client.child.kill().expect("kill the attach client");
    let _ = client.child.wait();
    let ticks = u.ok(&["logs", "lg"]).matches("tick").count();
    wait_for(
        Duration::from_secs(10),
        "ticks after the client died",
        || (u.ok(&["logs", "lg"]).matches("tick").count() > ticks + 2).then_some(()),
    );
    assert_eq!(u.inspect("lg")["State"]["Status"], "running");

    // attach to an ended box: its recorded output, and its exit code.
    u.ok(&["kill", "lg"]);
    assert_eq!(u.ok(&["wait", "lg"]), "137\n");
    let mut ended = Client::spawn(&u, &["attach", "lg"]);
    assert_eq!(ended.wait(), Some(137));
    assert!(
        ended.out().starts_with("line 1\n") && ended.out().contains("tick 3\n"),
        "{}",
        ended.out()
    );
}

#[test]
fn rootless_cp_both_ways_stays_inside_the_box_then_diff_commit_export() {
    if !require_root("rootless_cp_both_ways_stays_inside_the_box_then_diff_commit_export") {
        return;
    }
    let u = UserBox::new();
    let host = u.user_dir("hostside");
    let out = u.user_dir("hostside/out");
    u.ok(&[
        "run",
        "-d",
        "--name",
        "cp",
        "host",
        "sh",
        "-c",
        "mkdir -p /d/sub && echo hi > /d/sub/f && ln -s / /d/esc && ln -s /etc /etclink && \
         rm /etc/os-release && echo ready; exec sleep 1000",
    ]);
    wait_logs(&u, "cp", "ready\n");

    // Out of the running box: a tree, its symlinks kept as symlinks, owned by the user.
    u.ok(&["cp", "cp:/d", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("d/sub/f")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("d/esc")).unwrap(),
        PathBuf::from("/")
    );
    assert_eq!(owner(&out.join("d/sub/f")), u.user.uid);

    // Into it through its symlinks to / and /etc: resolved inside the box, never the host's.
    let marker = format!("box-rl-cp-{}", std::process::id());
    let src = host.join(&marker);
    std::fs::write(&src, "from host").unwrap();
    sh(&format!("chown {} '{}'", u.user.uid, src.display()));
    u.ok(&["cp", src.to_str().unwrap(), "cp:/d/esc/tmp/"]);
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "escaped to the host's /tmp"
    );
    assert_eq!(
        u.ok(&["exec", "cp", "cat", &format!("/tmp/{marker}")]),
        "from host"
    );
    u.ok(&[
        "cp",
        src.to_str().unwrap(),
        &format!("cp:/etclink/{marker}"),
    ]);
    assert!(
        !Path::new("/etc").join(&marker).exists(),
        "escaped to the host's /etc"
    );
    assert_eq!(
        u.ok(&["exec", "cp", "cat", &format!("/etc/{marker}")]),
        "from host"
    );
    // Out of it through the symlink to /: the box's /etc, not the host's.
    let back = host.join("back");
    u.ok(&[
        "cp",
        &format!("cp:/d/esc/etc/{marker}"),
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "from host");
    let passwd = host.join("passwd");
    u.ok(&["cp", "cp:/d/esc/etc/passwd", passwd.to_str().unwrap()]);
    assert_ne!(
        std::fs::read_to_string(&passwd).unwrap(),
        std::fs::read_to_string("/etc/passwd").unwrap(),
        "the box's /etc/passwd, not the host's"
    );

    // diff: what the box added and deleted.
    let diff = u.ok(&["diff", "cp"]);
    for want in [
        "A /d".to_string(),
        "A /d/sub/f".to_string(),
        format!("A /etc/{marker}"),
        "D /etc/os-release".to_string(),
    ] {
        assert!(diff.lines().any(|l| l == want), "{want}: {diff}");
    }

    // Stopped: cp both ways still works (the snapshot mounted for the copy).
    u.ok(&["kill", "cp"]);
    assert_eq!(u.ok(&["wait", "cp"]), "137\n");
    u.ok(&["cp", src.to_str().unwrap(), "cp:/stopped.txt"]);
    let again = host.join("again");
    u.ok(&["cp", "cp:/stopped.txt", again.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&again).unwrap(), "from host");

    // commit: an image of the changes, which runs.
    let img = u.ok(&["commit", "-m", "rootless", "cp", "committed:v1"]);
    assert!(img.trim().starts_with("sha256:"), "{img}");
    let out = u.ok(&[
        "run",
        "--rm",
        "committed:v1",
        "sh",
        "-c",
        "cat /d/sub/f /stopped.txt; echo; test -e /etc/os-release && echo still || echo gone",
    ]);
    assert_eq!(out, "hi\nfrom host\ngone\n");

    // export: the whole file system as a tar, to a file and to stdout.
    let tar_path = host.join("fs.tar");
    u.ok(&["export", "-o", tar_path.to_str().unwrap(), "cp"]);
    let entries = |bytes: &[u8]| -> Vec<String> {
        tar::Archive::new(bytes)
            .entries()
            .expect("a tar")
            .map(|e| {
                let p = e.expect("entry").path().expect("path").into_owned();
                p.to_string_lossy().trim_start_matches("./").to_string()
            })
            .collect()
    };
    let names = entries(&std::fs::read(&tar_path).unwrap());
    for want in ["d/sub/f", "stopped.txt", "etc/passwd"] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }
    assert!(!names.iter().any(|n| n == "etc/os-release"), "{names:?}");
    let piped = u.boxc(&["export", "cp"]);
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(entries(&piped.stdout).len(), names.len());
    u.ok(&["rm", "cp"]);
}

#[test]
fn rootless_named_volume_and_read_only_bind_mount() {
    if !require_root("rootless_named_volume_and_read_only_bind_mount") {
        return;
    }
    let u = UserBox::new();
    let src = u.user_dir("bind");
    std::fs::write(src.join("host.txt"), "from the host\n").unwrap();
    assert_eq!(u.ok(&["volume", "create", "vol1"]), "vol1\n");
    assert_eq!(u.ok(&["volume", "ls", "-q"]), "vol1\n");
    let table = u.ok(&["volume", "ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("local") && l.ends_with("vol1")),
        "{table}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&u.ok(&["volume", "inspect", "vol1"])).expect("JSON");
    assert_eq!(v[0]["Name"], "vol1", "{v}");
    let mountpoint = PathBuf::from(v[0]["Mountpoint"].as_str().expect("mountpoint"));
    assert_eq!(mountpoint, u.data().join("volumes/vol1/_data"), "{v}");

    let bind = format!("{}:/ro:ro", src.display());
    let out = u.ok(&[
        "run",
        "--rm",
        "-v",
        "vol1:/data",
        "-v",
        &bind,
        "host",
        "sh",
        "-c",
        "echo kept > /data/f && chown 1000:1000 /data/f && cat /ro/host.txt && \
         (echo x > /ro/new) 2>/dev/null && echo wrote || echo read-only",
    ]);
    assert_eq!(out, "from the host\nread-only\n");
    assert!(!src.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("f")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        owner(&mountpoint.join("f")),
        u.user.subuid_start + 999,
        "uid 1000 in the box is subuid start + 999 on the host"
    );

    // In use: rm refused; the next box sees the data.
    u.ok(&[
        "run",
        "-d",
        "--name",
        "vu",
        "-v",
        "vol1:/data",
        "host",
        "sh",
        "-c",
        "cat /data/f; exec sleep 1000",
    ]);
    wait_logs(&u, "vu", "kept\n");
    let v: serde_json::Value =
        serde_json::from_str(&u.ok(&["volume", "inspect", "vol1"])).expect("JSON");
    assert_eq!(v[0]["UsedBy"], serde_json::json!(["vu"]), "{v}");
    let err = u.fails(&["volume", "rm", "vol1"]);
    assert!(err.contains("vu"), "names the user: {err}");
    u.ok(&["rm", "-f", "vu"]);
    assert_eq!(u.ok(&["volume", "rm", "vol1"]), "vol1\n");
    assert_eq!(u.ok(&["volume", "ls", "-q"]), "");
    assert!(!mountpoint.exists());
    assert_eq!(
        std::fs::read_to_string(src.join("host.txt")).unwrap(),
        "from the host\n"
    );
}

/// Host pids whose command line is exactly `args`.
fn pids_running(args: &[&str]) -> Vec<i32> {
    let want = args.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c == want.as_bytes())
                .then_some(pid)
        })
        .collect()
}

#[test]
fn rootless_akuma_open_use_peek_show_close() {
    if !require_root("rootless_akuma_open_use_peek_show_close") {
        return;
    }
    let u = UserBox::new();
    let id = u.ok(&["open", "-d", "a1", "sh", "-c", "echo up; exec sleep 1000"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    wait_logs(&u, "a1", "up\n");
    let out = u.boxc(&["use", "a1", "sh", "-c", "echo in-box; id -u; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-box\n0\n");
    // In the box's pid namespace: its pid 1 is the box's init, not the host's.
    let out = u.ok(&["use", "a1", "cat", "/proc/1/cmdline"]);
    assert_eq!(out, "sleep\u{0}1000\u{0}", "use ran in the box");

    // use -d: a process that outlives the command, a member of the box.
    let sleep_arg = format!("{}", 5000 + std::process::id() % 1000);
    u.ok(&["use", "-d", "a1", "sleep", &sleep_arg]);
    let used = wait_for(Duration::from_secs(10), "the used sleep", || {
        pids_running(&["sleep", &sleep_arg]).first().copied()
    });
    let show = u.ok(&["show", "a1"]);
    for want in ["Name:      a1", "State:     running", "Uptime:", "Pids:"] {
        assert!(show.contains(want), "{want}: {show}");
    }
    let j: serde_json::Value =
        serde_json::from_str(&u.ok(&["show", "--format", "json", "a1"])).expect("JSON");
    let main = j["Pid"].as_i64().expect("pid") as i32;
    let pids = j["Pids"].as_array().expect("pids");
    assert!(
        pids.contains(&main.into()) && pids.contains(&used.into()),
        "{j}"
    );

    // peek at an ended box: its output and exit code.
    u.ok(&["open", "-d", "a2", "sh", "-c", "echo peeked; exit 4"]);
    assert_eq!(u.ok(&["wait", "a2"]), "4\n");
    let mut peek = Client::spawn(&u, &["peek", "a2"]);
    assert_eq!(peek.wait(), Some(4));
    assert_eq!(peek.out(), "peeked\n");

    // close: every process of the box dies (the used one too), the box is removed.
    assert_eq!(u.ok(&["close", "a1", "a2"]), "a1\na2\n");
    wait_for(
        Duration::from_secs(10),
        "the box's processes to die",
        || (!alive(main) && !alive(used)).then_some(()),
    );

    // open --tmp: removed at its end.
    let out = u.boxc(&["open", "--tmp", "t1", "sh", "-c", "echo tmp; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tmp\n");
    assert_eq!(u.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn rootless_boxes_running_as_another_user_are_stopped_killed_restarted_and_removed() {
    if !require_root(
        "rootless_boxes_running_as_another_user_are_stopped_killed_restarted_and_removed",
    ) {
        return;
    }
    // uid 1000 in the box is not the user on the host: only from the box's own user namespace
    // may its processes be signalled, so each box is acted on from its own.
    let u = UserBox::new();
    for n in ["n1", "n2", "n3", "n4"] {
        u.ok(&[
            "run",
            "-d",
            "--name",
            n,
            "-u",
            "1000",
            "host",
            "sh",
            "-c",
            "echo up; exec sleep 1000",
        ]);
    }
    for n in ["n1", "n2", "n3", "n4"] {
        wait_logs(&u, n, "up\n");
    }
    let pids: Vec<i32> = ["n1", "n2", "n3", "n4"]
        .iter()
        .map(|n| init_pid(&u, n))
        .collect();
    assert_eq!(
        owner(Path::new(&format!("/proc/{}", pids[0]))),
        u.user.subuid_start + 999
    );

    // Two at once (each from its own namespace); sleep as pid 1 ignores SIGTERM: SIGKILL.
    let t = Instant::now();
    assert_eq!(u.ok(&["stop", "-t", "1", "n1", "n2"]), "n1\nn2\n");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(u.ok(&["wait", "n1", "n2"]), "137\n137\n");
    assert_eq!(u.ok(&["kill", "-s", "KILL", "n3"]), "n3\n");
    assert_eq!(u.ok(&["wait", "n3"]), "137\n");
    assert_eq!(u.ok(&["restart", "-t", "1", "n4"]), "n4\n");
    let again = init_pid(&u, "n4");
    assert!(again != pids[3] && alive(again), "restarted");
    u.ok(&["rm", "-f", "n4", "n1"]);
    u.ok(&["rm", "n2", "n3"]);
    assert_eq!(u.ok(&["ps", "-a", "-q"]), "");
    wait_for(
        Duration::from_secs(10),
        "the boxes' processes to die",
        || {
            pids.iter()
                .chain([&again])
                .all(|p| !alive(*p))
                .then_some(())
        },
    );
}

#[test]
fn rootless_up_and_down_of_a_project_box_running_as_another_user() {
    if !require_root("rootless_up_and_down_of_a_project_box_running_as_another_user") {
        return;
    }
    let u = UserBox::new();
    let proj = u.user_dir("proj");
    let file = proj.join("box.toml");
    std::fs::write(
        &file,
        "image = \"host\"\nname = \"pj\"\nuser = \"1000\"\n\
         command = [\"sh\", \"-c\", \"id -u; exec sleep 1000\"]\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    assert!(u.ok(&["up", "-f", f]).starts_with("box pj started"));
    assert_eq!(wait_logs(&u, "pj", "1000\n"), "1000\n");
    let pid = init_pid(&u, "pj");
    assert!(u
        .ok(&["up", "-f", f])
        .starts_with("box pj is already running"));
    let t = Instant::now();
    assert_eq!(u.ok(&["down", "-f", f, "-t", "1"]), "pj\nbox pj removed\n");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(u.ok(&["ps", "-a", "-q"]), "");
    wait_for(Duration::from_secs(10), "the box's init to die", || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn rootless_network_modes_none_and_host() {
    if !require_root("rootless_network_modes_none_and_host") {
        return;
    }
    let u = UserBox::new();
    let host_ns = own_ns("net");
    // none: a namespace of its own (owned by the box's user namespace) with only a loopback
    // interface, up (/proc/net: rootless, /sys is the host's, bound in).
    let script = format!(
        "readlink /proc/self/ns/net; sed 1,2d /proc/net/dev | cut -d: -f1 | tr -d ' '; \
         (while true; do echo hi | nc -l -p 8124; done &); {}",
        loopback_fetch(8124)
    );
    let out = u.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "host",
        "sh",
        "-c",
        &script,
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines.first(), Some(&host_ns.as_str()), "{out}");
    assert_eq!(&lines[1..], ["lo", "hi"], "{out}");
    // host: the host's namespace.
    let out = u.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "host",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(out.trim(), host_ns, "{out}");
}

#[test]
fn rootless_pasta_and_slirp4netns_publish_ports_and_stop_with_the_box() {
    if !require_root("rootless_pasta_and_slirp4netns_publish_ports_and_stop_with_the_box") {
        return;
    }
    let u = UserBox::new();
    let httpd = "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && \
                 exec httpd -f -p 80 -h /www";
    // pasta is the rootless default; slirp4netns the fallback, chosen by name here.
    for (name, mode) in [("viapasta", None), ("viaslirp", Some("slirp4netns"))] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let publish = format!("{port}:80");
        let mut args = vec!["run", "-d", "--name", name, "-p", &publish];
        if let Some(m) = mode {
            args.extend(["--network", m]);
        }
        args.extend(["host", "sh", "-c", httpd]);
        u.ok(&args);
        let info = u.inspect(name);
        let want_mode = mode.unwrap_or("pasta");
        assert_eq!(info["NetworkSettings"]["NetworkMode"], want_mode, "{info}");
        assert_eq!(
            u.ok(&["port", name]).trim(),
            format!("80/tcp -> 0.0.0.0:{port}")
        );
        // The box has an interface besides lo and a default route.
        let route = u.ok(&["exec", name, "cat", "/proc/net/route"]);
        assert!(
            route
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some("00000000")),
            "{route}"
        );
        let body = http_get(&format!("127.0.0.1:{port}"))
            .unwrap_or_else(|| panic!("{want_mode}: nothing answered on {port}"));
        assert!(body.starts_with("hello from"), "{body}");
        // The helper runs while the box does and is gone with it (no process naming the
        // test's dir is left after rm).
        let helpers = || {
            u.processes()
                .into_iter()
                .filter(|pid| {
                    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"));
                    let argv0 = cmdline.unwrap_or_default();
                    let argv0 = argv0.split('\0').next().unwrap_or("").rsplit('/').next();
                    matches!(
                        argv0,
                        Some("pasta" | "passt" | "passt.avx2" | "slirp4netns")
                    )
                })
                .count()
        };
        assert_eq!(helpers(), 1, "{want_mode}: one helper while the box runs");
        u.ok(&["rm", "-f", name]);
        wait_for(Duration::from_secs(10), "the helper to end", || {
            (helpers() == 0).then_some(())
        });
        assert!(
            http_get_once(&format!("127.0.0.1:{port}")).is_none(),
            "{port} still answers"
        );
    }
}

/// One `GET /` attempt (no retries).
fn http_get_once(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    (!reply.is_empty()).then_some(reply)
}

#[test]
fn rootless_environment_init_enter_export_import() {
    if !require_root("rootless_environment_init_enter_export_import") {
        return;
    }
    let u = UserBox::new();
    // The user's project directory is the test dir (box runs there); -C names others.
    let proj = u.dir.join("proj");
    let other = u.dir.join("other");
    sh(&format!(
        "mkdir -p {p} {o} && chown {uid}:{gid} {p} {o}",
        p = proj.display(),
        o = other.display(),
        uid = u.user.uid,
        gid = u.user.gid
    ));
    let p = proj.to_str().unwrap();
    u.ok(&["init", "-C", p]);
    // The files belong to the user outside and to root inside; root inside is the user.
    assert_eq!(owner(&proj.join(".box/rootfs/bin/busybox")), u.user.uid);
    let out = u.ok(&[
        "enter",
        "-C",
        p,
        "--",
        "sh",
        "-c",
        "id -u; stat -c %u /bin/busybox; cat /proc/self/uid_map; hostname; echo kept > /root/s",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert_eq!(lines[1], "0", "{out}");
    let map: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(map, ["0", &u.user.uid.to_string(), "1"], "{out}");
    assert_eq!(lines[3], "proj", "{out}");
    assert_eq!(owner(&proj.join(".box/rootfs/root/s")), u.user.uid);
    let code = u
        .boxc(&["enter", "-C", p, "--", "sh", "-c", "exit 3"])
        .status
        .code();
    assert_eq!(code, Some(3));
    // Round trip through a tar, then rm.
    let tar = u.dir.join("env.tar");
    u.ok(&["env", "export", "-C", p, "-o", tar.to_str().unwrap()]);
    let o = other.to_str().unwrap();
    u.ok(&["env", "import", "-C", o, "-i", tar.to_str().unwrap()]);
    assert_eq!(u.ok(&["enter", "-C", o, "--", "cat", "/root/s"]), "kept\n");
    u.ok(&["env", "rm", "-C", o]);
    assert!(!other.join(".box").exists());
    let err = u.fails(&["enter", "-C", o, "--", "true"]);
    assert!(err.contains("box init"), "{err}");
}

#[test]
fn rootless_pkg_in_an_environment_and_in_a_running_box() {
    if !require_root("rootless_pkg_in_an_environment_and_in_a_running_box") {
        return;
    }
    use support::apk_repo::*;
    let u = UserBox::new();
    let repo = ApkRepo::start();
    repo.publish(&[&GREET_1, &LIB]);
    let own = |p: &Path| {
        sh(&format!(
            "chown -R {}:{} '{}'",
            u.user.uid,
            u.user.gid,
            p.display()
        ))
    };

    // An environment: the files are the user's outside, root's inside; the post-install
    // script ran inside (root, the environment's hostname).
    let proj = u.dir.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    own(&proj);
    let p = proj.to_str().unwrap();
    u.ok(&["init", "-C", p]);
    let rootfs = proj.join(".box/rootfs");
    repo.trust_in(&rootfs);
    own(&rootfs.join("etc/apk"));
    assert_eq!(
        u.ok(&["pkg", "-C", p, "add", "greet"]),
        "installed libgreet-1.0-r0\ninstalled greet-1.0-r0\n"
    );
    assert_eq!(owner(&rootfs.join("usr/bin/greet")), u.user.uid);
    assert_eq!(
        u.ok(&["enter", "-C", p, "--", "sh", "/usr/bin/greet"]),
        "hello from greet\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("root/greet-installed")).unwrap(),
        "0 proj 1.0-r0\n"
    );
    assert_eq!(u.ok(&["pkg", "-C", p, "del", "greet"]).lines().count(), 2);
    assert!(!rootfs.join("usr/bin/greet").exists());

    // A running box.
    u.ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--hostname",
        "pkgbox",
        "host",
        "sleep",
        "600",
    ]);
    for (rel, text) in repo.config_files() {
        let (dir, file) = rel.rsplit_once('/').unwrap();
        u.ok(&["exec", "b", "mkdir", "-p", &format!("/{dir}")]);
        let host = u.dir.join(file);
        std::fs::write(&host, text).unwrap();
        own(&host);
        u.ok(&["cp", host.to_str().unwrap(), &format!("b:/{dir}/")]);
    }
    assert_eq!(
        u.ok(&["pkg", "--box", "b", "add", "greet"]),
        "installed libgreet-1.0-r0\ninstalled greet-1.0-r0\n"
    );
    assert_eq!(
        u.ok(&["exec", "b", "cat", "/root/greet-installed"]),
        "0 pkgbox 1.0-r0\n"
    );
    assert_eq!(
        u.ok(&[
            "exec",
            "b",
            "sh",
            "-c",
            "sh /usr/bin/greet; stat -c %u /usr/bin/greet"
        ]),
        "hello from greet\n0\n"
    );
}
