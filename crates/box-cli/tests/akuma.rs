//! The Akuma verbs (open, use, peek, close, show, grab) and the lifecycle verbs (restart,
//! pause/unpause, top, stats, port), end to end on the host image; completion scripts and man
//! pages.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

type Data = BoxData;

/// `box show --format json NAME`.
fn show_json(d: &Data, name: &str) -> serde_json::Value {
    serde_json::from_str(&d.ok(&["show", "--format", "json", name])).expect("JSON")
}

/// Host pids whose command line is exactly `args`.
fn pids_running(args: &[&str]) -> Vec<i32> {
    let want = args.join("\0") + "\0";
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn open_use_show_grab_and_close() {
    if !require_root("open_use_show_grab_and_close") {
        return;
    }
    let d = Data::new("k");
    let id = d.ok(&["open", "-d", "a1", "sh", "-c", "echo up; sleep 1000"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let out = d.boxc(&["use", "a1", "sh", "-c", "echo in-box; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-box\n");

    let show = d.ok(&["show", "a1"]);
    for want in [
        "Name:      a1",
        "State:     running",
        "Uptime:",
        "Pids:",
        "Memory:",
    ] {
        assert!(show.contains(want), "{want}: {show}");
    }
    let j = show_json(&d, "a1");
    let main_pid = j["Pid"].as_i64().expect("pid") as i32;
    assert!(
        j["Pids"]
            .as_array()
            .expect("pids")
            .contains(&main_pid.into()),
        "{j}"
    );
    assert!(j["Usage"]["MemoryBytes"].as_u64().is_some(), "{j}");
    assert!(j["Usage"]["Pids"].as_u64().unwrap_or(0) >= 1, "{j}");
    assert!(j["UptimeSeconds"].as_i64().is_some(), "{j}");

    // A detached session is supervised: `use -d` prints its pid, `grab` takes it over (its
    // stdin and output, then its exit code), and its output is logged.
    let session = d.ok(&[
        "use",
        "-d",
        "-i",
        "a1",
        "sh",
        "-c",
        "echo started; while read l; do [ \"$l\" = quit ] && break; echo got-$l; done; exit 7",
    ]);
    let session_pid: i32 = session.trim().parse().expect("use -d prints the pid");
    let mut grab = d
        .cmd(&["grab", "a1", &session_pid.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("grab the session");
    grab.stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\nquit\n")
        .unwrap();
    let status = wait_deadline(&mut grab, Duration::from_secs(10), "grab of the session");
    let mut stdout = String::new();
    grab.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(status.code(), Some(7), "the session's exit code");
    assert_eq!(stdout, "got-hello\n");
    let log = std::fs::read_to_string(
        d.0.join("boxes")
            .join(id.trim())
            .join(format!("exec-{session_pid}.log")),
    )
    .expect("the session's log");
    assert!(
        log.contains("stdout F started") && log.contains("stdout F got-hello"),
        "{log}"
    );
    assert!(!alive(session_pid));
    // Once ended, grab shows the session post mortem: its whole output and its exit code.
    let out = d.boxc(&["grab", "a1", &session_pid.to_string()]);
    assert_eq!(out.status.code(), Some(7), "the ended session's exit code");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\ngot-hello\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exited with code 7"),
        "{out:?}"
    );

    // A process that is neither the primary nor a session cannot be grabbed: said clearly.
    let mut other = d
        .cmd(&["use", "a1", "sleep", "987"])
        .stdin(Stdio::null())
        .spawn()
        .expect("use");
    let exec_pid = wait_for(Duration::from_secs(10), "the exec'd sleep", || {
        pids_running(&["sleep", "987"]).first().copied()
    });
    let out = d.boxc(&["grab", "a1", &exec_pid.to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither its primary process nor a detached session"),
        "{err}"
    );
    let out = d.boxc(&["grab", "a1", "999999999"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no process"));

    // grab (primary) follows the box until close kills it.
    let mut grab = d
        .cmd(&["grab", "a1", &main_pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("grab");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(grab.try_wait().expect("try_wait"), None, "grab stays");
    assert_eq!(d.ok(&["close", "a1"]), "a1\n");
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = grab.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < end, "grab did not end with the box");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(137));
    assert!(!alive(exec_pid), "close killed the exec'd process too");
    let _ = other.wait();
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "close removed the box");
}

#[test]
fn open_tmp_with_a_directory_root_is_removed_at_the_end() {
    if !require_root("open_tmp_with_a_directory_root_is_removed_at_the_end") {
        return;
    }
    let d = Data::new("k");
    // A root directory: the host image's files, exported from a box.
    d.ok(&["create", "--name", "src", "host", "true"]);
    let tar = d.0.join("root.tar");
    d.ok(&["export", "-o", tar.to_str().unwrap(), "src"]);
    d.ok(&["rm", "src"]);
    let root = d.0.join("rootdir");
    std::fs::create_dir_all(&root).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .status()
        .expect("tar");
    assert!(st.success());
    std::fs::write(root.join("marker"), "from-the-directory\n").unwrap();
    let out = d.boxc(&[
        "open",
        "--tmp",
        "--directory",
        root.to_str().unwrap(),
        "t1",
        "cat",
        "/marker",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-the-directory\n");
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "--tmp removed the box");
    assert!(root.join("marker").exists(), "the directory itself stays");
}

#[test]
fn close_kills_a_process_that_double_forked_away() {
    if !require_root("close_kills_a_process_that_double_forked_away") {
        return;
    }
    let d = Data::new("k");
    d.ok(&[
        "open",
        "-d",
        "c1",
        "sh",
        "-c",
        "sh -c 'setsid sleep 4321 </dev/null >/dev/null 2>&1 &'; exec sleep 1000",
    ]);
    let pid = wait_for(Duration::from_secs(10), "the double-forked sleep", || {
        pids_running(&["sleep", "4321"]).first().copied()
    });
    let j = show_json(&d, "c1");
    assert!(
        j["Pids"].as_array().expect("pids").contains(&pid.into()),
        "a member: {j}"
    );
    d.ok(&["close", "c1"]);
    wait_for(
        Duration::from_secs(10),
        "the forked-away sleep to die",
        || (!alive(pid)).then_some(()),
    );
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
}

fn log_lines(d: &Data, name: &str) -> usize {
    d.ok(&["logs", name]).lines().count()
}

#[test]
fn restart_pause_unpause_top_stats_port() {
    if !require_root("restart_pause_unpause_top_stats_port") {
        return;
    }
    let d = Data::new("k");
    d.ok(&[
        "open",
        "-d",
        "p1",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done",
    ]);
    wait_for(Duration::from_secs(10), "ticks", || {
        (log_lines(&d, "p1") > 2).then_some(())
    });

    // pause: state and a stopped counter.
    assert_eq!(d.ok(&["pause", "p1"]), "p1\n");
    assert_eq!(show_json(&d, "p1")["State"], "paused");
    assert!(d.ok(&["ps"]).contains("paused"));
    std::thread::sleep(Duration::from_millis(300));
    let frozen = log_lines(&d, "p1");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(log_lines(&d, "p1"), frozen, "no ticks while paused");
    assert!(!d.boxc(&["pause", "p1"]).status.success(), "already paused");
    assert_eq!(d.ok(&["unpause", "p1"]), "p1\n");
    assert_eq!(show_json(&d, "p1")["State"], "running");
    wait_for(Duration::from_secs(5), "ticks after unpause", || {
        (log_lines(&d, "p1") > frozen + 2).then_some(())
    });

    // top: the box's processes only.
    let top = d.ok(&["top", "p1"]);
    assert!(top.lines().next().unwrap_or("").contains("PID"), "{top}");
    assert!(top.contains("tick"), "{top}");
    assert!(!top.contains("cargo"), "only the box's processes: {top}");
    let top = d.ok(&["top", "p1", "-eo", "pid,comm"]);
    assert!(top.lines().skip(1).any(|l| l.ends_with("sh")), "{top}");

    // stats --no-stream: one line with usage.
    let stats = d.ok(&["stats", "--no-stream", "p1"]);
    let mut lines = stats.lines();
    assert!(lines.next().unwrap_or("").contains("CPU %"), "{stats}");
    let row = lines.next().unwrap_or("");
    assert!(
        row.contains("p1") && row.contains('%') && row.contains("iB"),
        "{stats}"
    );
    assert!(d.ok(&["stats", "--no-stream"]).contains("p1"));

    // port: nothing to publish yet.
    assert_eq!(d.ok(&["port", "p1"]), "");

    // restart: a new main process, the box running again.
    let before = show_json(&d, "p1")["Pid"].as_i64();
    assert_eq!(d.ok(&["restart", "-t", "1", "p1"]), "p1\n");
    let after = show_json(&d, "p1");
    assert_eq!(after["State"], "running");
    assert_ne!(after["Pid"].as_i64(), before, "a new main process");
    wait_for(
        Duration::from_secs(10),
        "the restarted box's first tick",
        || {
            d.ok(&["logs", "p1"])
                .lines()
                .filter(|l| *l == "tick 1")
                .nth(1)
                .map(|_| ())
        },
    );
    d.ok(&["close", "p1"]);
}

#[test]
fn completion_scripts_mention_run() {
    let run = |shell: &str| {
        Command::new(env!("CARGO_BIN_EXE_box"))
            .args(["completion", shell])
            .output()
            .expect("box completion")
    };
    for shell in ["bash", "zsh", "fish"] {
        let out = run(shell);
        assert!(out.status.success(), "{shell}");
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(out.len() > 100, "{shell}: {out}");
        assert!(out.contains("run"), "{shell}");
        assert!(out.contains("peek"), "{shell}");
    }
    assert!(!run("tcsh").status.success());
}

#[test]
fn man_pages_are_written() {
    let dir = std::env::temp_dir().join(format!("box-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_box"))
        .arg("man")
        .arg(&dir)
        .output()
        .expect("box man");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert!(page("box.1").contains(".TH box"), "{}", page("box.1"));
    assert!(
        page("box-run.1").contains("box\\-run"),
        "{}",
        page("box-run.1")
    );
    assert!(page("box-open.1").contains("directory"));
    assert!(!page("box-image-ls.1").is_empty());
    assert!(
        !Path::new(&dir.join("box-__supervise.1")).exists(),
        "hidden"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
