//! box.toml end to end: `box up` (idempotent), `box down`, and `box run` with no image.
mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use support::*;

/// A data dir with a short path (attach sockets live below it: unix socket paths are short).
struct Data(PathBuf);

impl Data {
    fn new() -> Data {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = PathBuf::from(format!(
            "/tmp/bxp{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        Data(p)
    }

    fn boxc(&self, args: &[&str]) -> Output {
        self.boxc_in(&std::env::temp_dir(), args)
    }

    /// `box` run in directory `dir` (where box.toml is looked for).
    fn boxc_in(&self, dir: &std::path::Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_box"))
            .current_dir(dir)
            .arg("--root")
            .arg(&self.0)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run box")
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(&std::env::temp_dir(), args)
    }

    fn ok_in(&self, dir: &std::path::Path, args: &[&str]) -> String {
        let out = self.boxc_in(dir, args);
        assert!(
            out.status.success(),
            "box {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let ids = self.boxc(&["ps", "-a", "-q"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.boxc(&["rm", "-f", id]);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn up_down_and_run_from_box_toml() {
    if !require_root("up_down_and_run_from_box_toml") {
        return;
    }
    let d = Data::new();
    let proj = d.0.with_extension("proj");
    let _ = std::fs::remove_dir_all(&proj);
    std::fs::create_dir_all(proj.join("data")).unwrap();
    std::fs::write(proj.join("data/in"), "mounted").unwrap();
    std::fs::write(
        proj.join("box.toml"),
        r#"
image = "host"
command = "sleep 60"
name = "projbox"
env = { GREETING = "hello" }
mounts = ["./data:/data:ro"]
ports = ["8080:80"]
memory = "100m"
cpus = 1
pids_limit = 64
workdir = "/data"
"#,
    )
    .unwrap();
    let out = d.ok_in(&proj, &["up"]);
    assert!(out.contains("projbox started"), "{out}");
    let out = d.ok_in(&proj, &["up"]);
    assert!(out.contains("already running"), "{out}");
    let got = d.ok(&["exec", "projbox", "sh", "-c", "echo $GREETING; pwd; cat in"]);
    assert_eq!(got, "hello\n/data\nmounted");
    let inspect = d.ok(&["inspect", "projbox"]);
    assert!(inspect.contains("\"HostPort\": \"8080\""), "{inspect}");
    assert!(inspect.contains("104857600"), "{inspect}");
    let out = d.ok_in(&proj, &["down", "-t", "1"]);
    assert!(out.contains("projbox removed"), "{out}");
    assert!(!d.boxc(&["inspect", "projbox"]).status.success());

    // `box run` with no image takes the file; flags still apply on top.
    std::fs::write(
        proj.join("box.toml"),
        "image = \"host\"\ncommand = [\"sh\", \"-c\", \"echo $GREETING$X\"]\nenv = [\"GREETING=hi\"]\n",
    )
    .unwrap();
    let out = d.ok_in(&proj, &["run", "--rm", "-e", "X=!"]);
    assert_eq!(out, "hi!\n");
    // `box run IMAGE CMD` still ignores the file.
    assert_eq!(
        d.ok_in(&proj, &["run", "--rm", "host", "echo", "plain"]),
        "plain\n"
    );
    // No file, no image: a clear error.
    let out = d.boxc(&["run", "--rm"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no box.toml"));
    std::fs::remove_dir_all(&proj).unwrap();
}
