//! `terminal: true`: the runtime makes a pty for the box and sends its master over `--console-socket`
//! with SCM_RIGHTS, as runc does; the box sees a tty on stdio, and exec -t does the same.

mod support;

use std::fs;
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use support::*;

/// Listen on a console socket; the thread returns the first fd received over it.
fn console_socket(b: &Bundle) -> (PathBuf, JoinHandle<OwnedFd>) {
    let path = b.path("console.sock");
    let listener = UnixListener::bind(&path).expect("bind console socket");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("chmod socket");
    b.give(&path);
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let handle = std::thread::spawn(move || {
        // Never hang the suite: give up if the runtime does not connect in time.
        let stream = wait_for(
            Duration::from_secs(30),
            "runtime to connect to the console socket",
            || listener.accept().ok().map(|(s, _)| s),
        );
        stream.set_nonblocking(false).expect("blocking stream");
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("recvmsg on console socket");
        for cmsg in msg.cmsgs().expect("control messages") {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                let fd = *fds.first().expect("one fd");
                // SAFETY: the kernel just installed this fd for us; nothing else owns it.
                return unsafe { OwnedFd::from_raw_fd(fd) };
            }
        }
        panic!("no SCM_RIGHTS fd received on the console socket");
    });
    (path, handle)
}

/// Read the pty master until the slave side is gone (EIO) or `limit` passes.
fn read_master(master: OwnedFd, limit: Duration) -> String {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let mut file = fs::File::from(master);
    let mut out = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => break, // EIO: every slave fd is closed
        }
    }
    String::from_utf8_lossy(&out).replace('\r', "")
}

#[test]
fn terminal_master_arrives_over_console_socket() {
    if !require_root("terminal_master_arrives_over_console_socket") {
        return;
    }
    let mut b = Bundle::new("tty");
    b.set("/process/terminal", serde_json::json!(true));
    b.script("tty; test -t 0 && echo stdin-is-tty; test -t 1 && echo stdout-is-tty; stty size");
    let (sock, handle) = console_socket(&b);
    let id = b.id();
    let bundle = b.bundle_path();
    b.raw(&[
        "create".as_ref(),
        "--console-socket".as_ref(),
        sock.as_os_str(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        id.as_ref(),
    ])
    .ok();
    let master = handle.join().expect("console thread");
    b.start(&id).ok();
    let out = read_master(master, Duration::from_secs(15));
    assert!(out.contains("/dev/pts/0\n"), "{out:?}");
    assert!(out.contains("stdin-is-tty\nstdout-is-tty\n"), "{out:?}");
    b.wait_status(&id, "stopped");
}

#[test]
fn exec_tty_sends_a_new_master_over_console_socket() {
    if !require_root("exec_tty_sends_a_new_master_over_console_socket") {
        return;
    }
    let mut b = Bundle::new("exectty");
    let id = b.start_sleeper();
    let (sock, handle) = console_socket(&b);
    let mut cmd = b.command(&[
        "exec".as_ref(),
        "-t".as_ref(),
        "--detach".as_ref(), // runc: a console socket needs --detach for exec
        "--console-socket".as_ref(),
        sock.as_os_str(),
        id.as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        "tty; test -t 0 && echo exec-stdin-is-tty".as_ref(),
    ]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn exec");
    let master = match handle.join() {
        Ok(m) => m,
        Err(_) => {
            let st = wait_deadline(&mut child, Duration::from_secs(20), "exec -t");
            panic!("no console master received; exec exited {}", exit_code(st));
        }
    };
    let out = read_master(master, Duration::from_secs(15));
    let st = wait_deadline(&mut child, Duration::from_secs(20), "exec -t");
    assert_eq!(exit_code(st), 0);
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("exec-stdin-is-tty"), "{out:?}");
}

#[test]
fn terminal_without_console_socket_fails_on_create() {
    if !require_root("terminal_without_console_socket_fails_on_create") {
        return;
    }
    let mut b = Bundle::new("ttynosock");
    b.set("/process/terminal", serde_json::json!(true));
    let id = b.id();
    let out = b.create(&id).fails();
    assert!(out.text().contains("console"), "{out}");
    assert!(!b.listed_ids().contains(&id));
}

#[test]
fn run_without_console_socket_relays_the_pty_to_its_own_terminal() {
    if !require_root("run_without_console_socket_relays_the_pty_to_its_own_terminal") {
        return;
    }
    let mut b = Bundle::new("ttyrelay");
    b.set("/process/terminal", serde_json::json!(true));
    b.script("tty; test -t 0 && echo stdin-is-a-tty; exit 5");
    let id = b.id();
    b.write_config();
    // script(1) gives the runtime a terminal of its own, as a user's shell would.
    let cmdline = format!(
        "{} --root {} run --bundle {} {}",
        b.bin.display(),
        b.state_root().display(),
        b.bundle_path().display(),
        id
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/0"),
        "the box sees its own pty: {text:?}"
    );
    assert!(text.contains("stdin-is-a-tty"), "{text:?}");
    assert_eq!(
        out.status.code(),
        Some(5),
        "exit code crosses the relay: {text:?}"
    );
    assert!(b.state(&id).is_none(), "the box is deleted after it exits");
}
