//! OCI hooks: programs run at fixed points of a box's life with its state JSON on stdin,
//! each killed when it outlives its timeout.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

use crate::error::{Error, Result};

/// The points of a box's life that have hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    /// Runtime namespace, after the box's namespaces exist (deprecated alias of createRuntime).
    Prestart,
    /// Runtime namespace, after the box's namespaces exist, before pivot_root.
    CreateRuntime,
    /// Box's namespaces, before pivot_root.
    CreateContainer,
    /// Box's namespaces, after start, before the user program.
    StartContainer,
    /// Runtime namespace, after the user program started.
    Poststart,
    /// Runtime namespace, after the box is deleted.
    Poststop,
}

/// The hooks configured for `point`.
pub fn hooks_at(hooks: Option<&Hooks>, point: HookPoint) -> &[Hook] {
    let Some(h) = hooks else { return &[] };
    let list = match point {
        HookPoint::Prestart => h.prestart(),
        HookPoint::CreateRuntime => h.create_runtime(),
        HookPoint::CreateContainer => h.create_container(),
        HookPoint::StartContainer => h.start_container(),
        HookPoint::Poststart => h.poststart(),
        HookPoint::Poststop => h.poststop(),
    };
    list.as_deref().unwrap_or(&[])
}

/// Runs every hook of `point` in order; the first failure stops the rest.
pub fn run_hooks(hooks: Option<&Hooks>, point: HookPoint, state: &serde_json::Value) -> Result<()> {
    let list = hooks_at(hooks, point);
    if list.is_empty() {
        return Ok(());
    }
    let state = serde_json::to_vec(state).unwrap_or_default();
    for hook in list {
        run_one(hook, point, &state)?;
    }
    Ok(())
}

fn run_one(hook: &Hook, point: HookPoint, state: &[u8]) -> Result<()> {
    let path = hook.path();
    let fail = |why: String| Error::Hook(format!("{point:?} hook {}: {why}", path.display()));
    let mut cmd = Command::new(path);
    if let Some(args) = hook.args() {
        if let Some(first) = args.first() {
            cmd.arg0(first);
        }
        cmd.args(args.iter().skip(1));
    }
    cmd.env_clear();
    for kv in hook.env().as_deref().unwrap_or(&[]) {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores its stdin may close it early: not an error.
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t.unsigned_abs()));
    let mut pause = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(fail(format!("exited with {status}"))),
            Ok(None) => {}
            Err(e) => return Err(fail(format!("cannot wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or_default()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{HookBuilder, HooksBuilder};

    fn hook(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default().path("/bin/sh").args(vec![
            "sh".into(),
            "-c".into(),
            script.into(),
        ]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().expect("hook")
    }

    #[test]
    fn hook_gets_state_on_stdin() {
        let out = std::env::temp_dir().join(format!("box-hook-{}", std::process::id()));
        let hooks = HooksBuilder::default()
            .poststart(vec![hook(&format!("cat > {}", out.display()), None)])
            .build()
            .expect("hooks");
        run_hooks(
            Some(&hooks),
            HookPoint::Poststart,
            &serde_json::json!({"id": "hooked"}),
        )
        .expect("hook runs");
        let got = std::fs::read_to_string(&out).expect("hook output");
        assert!(got.contains("\"hooked\""), "{got}");
        std::fs::remove_file(&out).expect("cleanup");
    }

    #[test]
    fn failing_and_slow_hooks_are_errors() {
        let hooks = HooksBuilder::default()
            .prestart(vec![hook("exit 3", None)])
            .poststop(vec![hook("sleep 5", Some(1))])
            .build()
            .expect("hooks");
        let e = run_hooks(Some(&hooks), HookPoint::Prestart, &serde_json::json!({}))
            .expect_err("exit 3");
        assert!(e.to_string().contains("exit status: 3"), "{e}");
        let started = Instant::now();
        let e = run_hooks(Some(&hooks), HookPoint::Poststop, &serde_json::json!({}))
            .expect_err("timeout");
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
