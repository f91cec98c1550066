//! Per-directory environments as root: `box init` (host busybox, host system, an image with
//! several layers), `box enter` (isolation, exit codes, --network none, --mount-project,
//! persistence), `box env status/export/import/rm`, and the errors.

mod support;

use std::path::Path;

use support::*;

fn fails_in(d: &BoxData, dir: &Path, args: &[&str]) -> String {
    let out = d.boxc_in(dir, args);
    assert!(!out.status.success(), "box {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_enter_export_import_and_remove() {
    if !require_root("init_enter_export_import_and_remove") {
        return;
    }
    let d = BoxData::new("env");
    let top = TempDir::new("envproj");
    let proj = top.path.join("my_proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("notes.txt"), "project file\n").unwrap();

    // Not initialised yet: said clearly.
    let err = fails_in(&d, &proj, &["enter", "--", "true"]);
    assert!(err.contains("box init"), "{err}");
    d.ok_in(&proj, &["init"]);
    assert!(proj.join(".box/env.json").is_file() && proj.join(".box/rootfs/bin/busybox").is_file());
    let err = fails_in(&d, &proj, &["init"]);
    assert!(err.contains("initialised already"), "{err}");

    // Root inside, its own pid, IPC, UTS and mount namespaces, the host's network, the
    // project's files out of sight; a subdirectory finds the environment above it.
    std::fs::create_dir_all(proj.join("sub")).unwrap();
    let script = "id -u; hostname; echo $$; for n in ipc uts mnt net; do readlink \
                  /proc/self/ns/$n; done; ls /work | wc -l; echo $HOME $PATH";
    let out = d.ok_in(&proj.join("sub"), &["enter", "--", "sh", "-c", script]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert_eq!(lines[1], "my-proj", "{out}");
    assert_eq!(lines[2], "2", "pid 1 is the environment's own init: {out}");
    assert_ne!(lines[3], own_ns("ipc"), "{out}");
    assert_ne!(lines[4], own_ns("uts"), "{out}");
    assert_ne!(lines[5], own_ns("mnt"), "{out}");
    assert_eq!(lines[6], own_ns("net"), "{out}");
    assert_eq!(lines[7].trim(), "0", "{out}");
    assert_eq!(
        lines[8],
        "/root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );

    // Exit codes come back; --mount-project binds the project at /work and starts there.
    let out = d.boxc_in(&proj, &["enter", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = d.boxc_in(&proj, &["enter", "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    let out = d.ok_in(
        &proj,
        &[
            "enter",
            "--mount-project",
            "--",
            "sh",
            "-c",
            "pwd; cat notes.txt",
        ],
    );
    assert_eq!(out, "/work\nproject file\n");
    // --network none: only loopback.
    let out = d.ok_in(
        &proj,
        &[
            "enter",
            "--network",
            "none",
            "--",
            "sh",
            "-c",
            "ls /sys/class/net; readlink /proc/self/ns/net",
        ],
    );
    assert!(!out.contains(&own_ns("net")), "{out}");
    let out = d.ok_in(
        &proj,
        &["enter", "--network", "none", "--", "cat", "/proc/net/dev"],
    );
    assert_eq!(net_dev_interfaces(&out), ["lo"], "{out}");
    assert!(!fails_in(&d, &proj, &["enter", "--network", "bridge", "--", "true"]).is_empty());

    // Changes persist in .box; export and import carry them to another directory.
    d.ok_in(
        &proj,
        &["enter", "--", "sh", "-c", "echo kept > /root/state"],
    );
    assert_eq!(
        d.ok_in(&proj, &["enter", "--", "cat", "/root/state"]),
        "kept\n"
    );
    let status: serde_json::Value =
        serde_json::from_str(&d.ok_in(&proj, &["env", "status", "--format", "json"])).unwrap();
    assert_eq!(status["Name"], "my-proj");
    assert!(status["Size"].as_u64().unwrap() > 1_000_000, "{status}");
    let tar = top.path.join("env.tar");
    d.ok_in(&proj, &["env", "export", "-o", tar.to_str().unwrap()]);
    let other = top.path.join("other");
    std::fs::create_dir_all(&other).unwrap();
    d.ok_in(&other, &["env", "import", "-i", tar.to_str().unwrap()]);
    assert_eq!(
        d.ok_in(&other, &["enter", "--", "cat", "/root/state"]),
        "kept\n"
    );
    let err = fails_in(&d, &other, &["env", "import", "-i", tar.to_str().unwrap()]);
    assert!(err.contains("already"), "{err}");
    // A tar that is not an export is refused and leaves nothing.
    let third = top.path.join("third");
    std::fs::create_dir_all(third.join("x")).unwrap();
    let bogus = top.path.join("bogus.tar");
    sh(&format!(
        "tar -C {} -cf {} x",
        third.display(),
        bogus.display()
    ));
    std::fs::remove_dir(third.join("x")).unwrap();
    let err = fails_in(
        &d,
        &third,
        &["env", "import", "-i", bogus.to_str().unwrap()],
    );
    assert!(err.contains("not an environment export"), "{err}");
    assert_eq!(std::fs::read_dir(&third).unwrap().count(), 0);

    // rm: gone.
    d.ok_in(&other, &["env", "rm"]);
    assert!(!other.join(".box").exists());
}

#[test]
fn init_from_the_host_system_and_from_an_image() {
    if !require_root("init_from_the_host_system_and_from_an_image") {
        return;
    }
    let d = BoxData::new("envi");
    let top = TempDir::new("envimg");
    // --mode system: the host's own programs (bash among them) and their libraries.
    let sys = top.path.join("sys");
    std::fs::create_dir_all(&sys).unwrap();
    d.ok_in(&sys, &["init", "--mode", "system"]);
    let out = d.ok_in(
        &sys,
        &["enter", "--", "bash", "-c", "echo bash $BASH_VERSION"],
    );
    assert!(out.starts_with("bash 5"), "{out}");

    // An image of two layers: the upper one's file is there, the file it deleted is not.
    d.ok(&[
        "run",
        "--name",
        "layered",
        "--network",
        "none",
        "host",
        "sh",
        "-c",
        "echo upper > /etc/upper; rm /etc/profile",
    ]);
    d.ok(&["commit", "layered", "layered:1"]);
    let img = top.path.join("img");
    std::fs::create_dir_all(&img).unwrap();
    d.ok_in(&img, &["init", "--from", "layered:1"]);
    let out = d.ok_in(
        &img,
        &[
            "enter",
            "--",
            "sh",
            "-c",
            "cat /etc/upper; ls /etc/profile 2>&1 || true",
        ],
    );
    assert!(
        out.starts_with("upper\n") && out.contains("No such file"),
        "{out}"
    );
    let status = d.ok_in(&img, &["env", "status"]);
    assert!(status.contains("image layered:1"), "{status}");

    // An unknown image: a clear error and no .box left behind.
    let none = top.path.join("none");
    std::fs::create_dir_all(&none).unwrap();
    let err = fails_in(&d, &none, &["init", "--from", "no-such-image:9"]);
    assert!(err.contains("no-such-image"), "{err}");
    assert_eq!(std::fs::read_dir(&none).unwrap().count(), 0);
}

#[test]
fn interactive_enter_greets_and_runs_a_login_shell() {
    if !require_root("interactive_enter_greets_and_runs_a_login_shell") {
        return;
    }
    let d = BoxData::new("envt");
    let top = TempDir::new("envtty");
    let proj = top.path.join("shellproj");
    std::fs::create_dir_all(&proj).unwrap();
    d.ok_in(&proj, &["init"]);
    // `script` gives box a terminal: the welcome line, then a login shell (profile read) that
    // takes commands from it and whose exit code comes back.
    let enter = format!(
        "{} --root {} enter",
        env!("CARGO_BIN_EXE_box"),
        d.0.display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &enter, "/dev/null"])
        .current_dir(&proj)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"echo \"env=$BOX_ENV login=$0\"; exit 5\n")
            .unwrap();
    }
    let status = wait_deadline(&mut child, std::time::Duration::from_secs(30), "box enter");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(exit_code(status), 5, "{out}");
    assert!(out.contains("entering environment shellproj"), "{out}");
    assert!(
        out.contains("env=shellproj login=-sh") || out.contains("env=shellproj login=/bin/sh"),
        "{out}"
    );
}
