//! `box attach` / `box peek` end to end on the host image: two watchers at once, stdin taken
//! over, detach keys typed on a real terminal (through `script`), post-mortem peek.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

type Data = BoxData;

/// A child whose stdout (and stderr) are collected by threads, readable while it runs.
struct Watched {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Watched {
    fn spawn(mut cmd: Command, stdin: Stdio) -> Watched {
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn box");
        let collect = |r: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(String::new()));
            let b = Arc::clone(&buf);
            std::thread::spawn(move || {
                let mut r = BufReader::new(r);
                let mut line = Vec::new();
                while let Ok(n) = r.read_until(b'\n', &mut line) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
            });
            buf
        };
        let out = collect(Box::new(child.stdout.take().expect("stdout")));
        let err = collect(Box::new(child.stderr.take().expect("stderr")));
        Watched { child, out, err }
    }

    fn out(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn err(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    fn wait_out(&self, what: &str) {
        wait_for(Duration::from_secs(15), what, || {
            self.out().contains(what).then_some(())
        });
    }

    /// Waits for the exit (killing it after `limit`) and returns the code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Let the collector threads take the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                return s.code();
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "box did not end in {limit:?}; out: {} err: {}",
                    self.out(),
                    self.err()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How many clients the box's supervisor serves: its attach socket's connections, counted
/// from /proc/net/unix (the listener counts as one).
fn attach_connections(d: &Data, name: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", name])).expect("JSON");
    let id = v[0]["Id"].as_str().expect("id").to_string();
    let sock = format!("/boxes/{id}/attach.sock");
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(&sock))
        .count()
}

#[test]
fn two_watchers_see_the_same_output_and_exit_code() {
    if !require_root("two_watchers_see_the_same_output_and_exit_code") {
        return;
    }
    let d = Data::new("a");
    d.ok(&[
        "open",
        "-d",
        "w",
        "sh",
        "-c",
        "while [ ! -e /go ]; do sleep 0.05; done; echo hello-watchers; echo to-stderr >&2; exit 7",
    ]);
    let a = Watched::spawn(d.cmd(&["attach", "--no-stdin", "w"]), Stdio::null());
    let b = Watched::spawn(d.cmd(&["peek", "w"]), Stdio::null());
    let mut watchers = [a, b];
    // The listener plus both clients are connected before the box speaks.
    wait_for(Duration::from_secs(10), "two attach clients", || {
        (attach_connections(&d, "w") >= 3).then_some(())
    });
    // Connected is not yet registered: the supervisor reads each hello in its next poll round.
    std::thread::sleep(Duration::from_millis(300));
    d.ok(&["use", "w", "sh", "-c", ": > /go"]);
    for w in &mut watchers {
        assert_eq!(w.wait(Duration::from_secs(15)), Some(7), "{}", w.err());
        assert_eq!(w.out(), "hello-watchers\n");
        assert!(w.err().contains("to-stderr"), "{}", w.err());
    }
}

#[test]
fn takeover_moves_stdin_and_drops_the_previous_holder() {
    if !require_root("takeover_moves_stdin_and_drops_the_previous_holder") {
        return;
    }
    let d = Data::new("a");
    d.ok(&[
        "open",
        "-d",
        "-i",
        "t",
        "sh",
        "-c",
        "while read l; do echo got:$l; done",
    ]);
    let mut a = Watched::spawn(d.cmd(&["attach", "t"]), Stdio::piped());
    let mut a_in = a.child.stdin.take().expect("stdin");
    wait_for(Duration::from_secs(10), "the first client", || {
        (attach_connections(&d, "t") >= 2).then_some(())
    });
    a_in.write_all(b"one\n").unwrap();
    a_in.flush().unwrap();
    a.wait_out("got:one");

    let mut b = Watched::spawn(d.cmd(&["attach", "--takeover", "t"]), Stdio::piped());
    let mut b_in = b.child.stdin.take().expect("stdin");
    assert_eq!(a.wait(Duration::from_secs(10)), Some(0), "{}", a.err());
    assert!(a.err().contains("took its stdin over"), "{}", a.err());
    b_in.write_all(b"two\n").unwrap();
    b_in.flush().unwrap();
    b.wait_out("got:two");
    assert!(!a.out().contains("got:two"), "the old holder is gone");
    d.ok(&["close", "t"]);
    assert_eq!(b.wait(Duration::from_secs(10)), Some(137), "{}", b.err());
    drop(a_in);
    drop(b_in);
}

#[test]
fn detach_keys_on_a_terminal_leave_the_box_running() {
    if !require_root("detach_keys_on_a_terminal_leave_the_box_running") {
        return;
    }
    if Command::new("script").arg("--version").output().is_err() {
        skip(
            "detach_keys_on_a_terminal_leave_the_box_running",
            "needs script(1) (util-linux)",
        );
        return;
    }
    let d = Data::new("a");
    d.ok(&["open", "-d", "-i", "-t", "k", "sh"]);
    // `script` gives `box attach` a terminal on its stdin: raw mode and detach keys apply.
    let attach = format!(
        "{} --root {} attach k",
        env!("CARGO_BIN_EXE_box"),
        d.0.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &attach, "/dev/null"]);
    let mut s = Watched::spawn(cmd, Stdio::piped());
    let mut input = s.child.stdin.take().expect("stdin");
    wait_for(Duration::from_secs(10), "the attach client", || {
        (attach_connections(&d, "k") >= 2).then_some(())
    });
    input.write_all(b"echo marker-$((40+2))\r").unwrap();
    input.flush().unwrap();
    s.wait_out("marker-42");
    input.write_all(b"\x10\x11").unwrap();
    input.flush().unwrap();
    assert_eq!(s.wait(Duration::from_secs(10)), Some(0), "{}", s.out());
    let show = d.ok(&["show", "k"]);
    assert!(show.contains("State:     running"), "{show}");
    // The box still answers a new client.
    d.ok(&["close", "k"]);
    drop(input);
}

#[test]
fn peek_after_the_end_shows_output_and_exit_code() {
    if !require_root("peek_after_the_end_shows_output_and_exit_code") {
        return;
    }
    let d = Data::new("a");
    let out = d.boxc(&[
        "open",
        "pm",
        "sh",
        "-c",
        "echo out-line; echo err-line >&2; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    for verb in ["peek", "attach"] {
        let out = d.boxc(&[verb, "pm"]);
        assert_eq!(out.status.code(), Some(5), "{verb}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stdout, "out-line\n", "{verb}");
        assert!(stderr.contains("err-line"), "{verb}: {stderr}");
        assert!(stderr.contains("exited with code 5"), "{verb}: {stderr}");
    }
}

#[test]
fn detach_keys_are_checked() {
    if !require_root("detach_keys_are_checked") {
        return;
    }
    let d = Data::new("a");
    let out = d.boxc(&["attach", "--detach-keys", "ctrl-1", "nobox"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("detach-keys"));
}

#[test]
fn the_box_terminal_follows_the_client_terminal_size() {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    if !require_root("the_box_terminal_follows_the_client_terminal_size") {
        return;
    }
    let d = Data::new("a");
    d.ok(&["open", "-d", "-i", "-t", "rz", "sh"]);
    let size = |rows: u16, cols: u16| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // `box attach` on a terminal of its own (controlling terminal of a new session), 24x80.
    let pty = nix::pty::openpty(Some(&size(24, 80)), None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_box"));
    cmd.arg("--root").arg(&d.0).args(["attach", "rz"]);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and TIOCSCTTY are async-signal-safe; the child then executes box.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn box attach");
    let master = std::fs::File::from(pty.master);
    let out = Arc::new(Mutex::new(String::new()));
    let mut reader = master.try_clone().unwrap();
    let o = Arc::clone(&out);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            o.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_out = |needle: &str| {
        wait_for(Duration::from_secs(10), needle, || {
            out.lock().unwrap().contains(needle).then_some(())
        })
    };
    // The box's own client, the attach client and its size channel.
    wait_for(Duration::from_secs(10), "the attach client", || {
        (attach_connections(&d, "rz") >= 3).then_some(())
    });
    let mut input = &master;
    input.write_all(b"stty size\r").unwrap();
    wait_out("24 80");
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; the kernel sends SIGWINCH to
    // the terminal's foreground process group (box attach).
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size(33, 111)) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.lock().unwrap().contains("33 111") {
        assert!(
            Instant::now() < deadline,
            "the box never saw 33x111: {}",
            out.lock().unwrap()
        );
        input.write_all(b"stty size\r").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    input.write_all(b"\x10\x11").unwrap();
    let status = wait_for(Duration::from_secs(10), "box attach to detach", || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{}", out.lock().unwrap());
    d.ok(&["close", "rz"]);
}
