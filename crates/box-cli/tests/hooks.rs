//! OCI hooks as root: prestart, createRuntime, createContainer, startContainer, poststart and
//! poststop run in order, at the right step, with the state JSON on stdin; timeouts and failures
//! fail the create and leave nothing behind.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Bundle with every hook appending its name to /hooks/log (shared with the box by a bind mount) and
/// saving its stdin as /hooks/<name>.json.
fn hooked_bundle() -> Bundle {
    let mut b = Bundle::new("hooks");
    let dir = b.path("hooks");
    fs::create_dir_all(&dir).expect("mkdir hooks");
    // $2 is the host log dir; inside the box (or its mount namespace) it is the bind mount /hooks.
    let script = "#!/bin/sh\nd=\"$2\"; [ -d \"$d\" ] || d=/hooks\n\
                  echo \"$1\" >> \"$d/log\"\ncat > \"$d/$1.json\"\n";
    let host_script = b.path("hook.sh");
    fs::write(&host_script, script).expect("host hook");
    sh(&format!("chmod 0755 '{}'", host_script.display()));
    b.rootfs_file("hook.sh", script, true);
    b.add_mount(json!({
        "destination": "/hooks", "type": "bind", "source": dir, "options": ["rbind", "rw"]
    }));
    let mut hooks = serde_json::Map::new();
    for name in HOOKS {
        // startContainer's path resolves in the box (the rootfs copy); every other hook's path,
        // createContainer's included, resolves in the runtime namespace (OCI runtime spec).
        let path = match *name {
            "startContainer" => "/hook.sh".to_string(),
            _ => host_script.display().to_string(),
        };
        let arg_dir = dir.display().to_string();
        hooks.insert(
            (*name).to_string(),
            json!([{ "path": path, "args": ["hook.sh", name, arg_dir], "timeout": 10 }]),
        );
    }
    b.set("/hooks", Value::Object(hooks));
    b
}

fn log(b: &Bundle) -> Vec<String> {
    read_lines(b.path("hooks/log"))
}

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    if !require_root("hooks_run_in_order_with_state_on_stdin") {
        return;
    }
    let mut b = hooked_bundle();
    b.args(&["true"]);
    let id = b.id();
    b.create(&id).ok();
    assert_eq!(log(&b), ["prestart", "createRuntime", "createContainer"]);
    b.start(&id).ok();
    b.wait_status(&id, "stopped");
    assert_eq!(
        log(&b),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart"
        ]
    );
    b.delete(&id).ok();
    assert_eq!(log(&b), HOOKS);
    for name in HOOKS {
        let text = fs::read_to_string(b.path(&format!("hooks/{name}.json")))
            .unwrap_or_else(|e| panic!("{name} got no stdin: {e}"));
        let state: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} stdin: {e}: {text}"));
        assert_eq!(state["id"], json!(id), "{name}: {state}");
        assert!(state["ociVersion"].is_string(), "{name}: {state}");
        assert!(state["bundle"].is_string(), "{name}: {state}");
    }
    let cr: Value = serde_json::from_str(
        &fs::read_to_string(b.path("hooks/createRuntime.json")).expect("createRuntime.json"),
    )
    .expect("json");
    assert_eq!(cr["status"], "creating", "{cr}");
    assert!(cr["pid"].as_i64().is_some_and(|p| p > 0), "{cr}");
}

#[test]
fn hook_exceeding_its_timeout_fails_create() {
    if !require_root("hook_exceeding_its_timeout_fails_create") {
        return;
    }
    let mut b = Bundle::new("hooktimeout");
    b.set(
        "/hooks",
        json!({ "createRuntime": [{ "path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1 }] }),
    );
    let id = b.id();
    let start = Instant::now();
    let out = b.create(&id).fails();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "timeout not honoured: {out}"
    );
    assert!(
        out.text().contains("timeout") || out.text().contains("timed out"),
        "{out}"
    );
    assert!(
        !b.listed_ids().contains(&id),
        "failed create left state behind"
    );
}

#[test]
fn failing_hook_fails_create_and_leaves_nothing() {
    if !require_root("failing_hook_fails_create_and_leaves_nothing") {
        return;
    }
    let mut b = Bundle::new("hookfail");
    b.set(
        "/hooks",
        json!({ "createRuntime": [{ "path": "/bin/false", "args": ["false"] }] }),
    );
    b.args(&["sleep", "1000"]);
    let id = b.id();
    b.create(&id).fails();
    assert!(!b.listed_ids().contains(&id));
    assert!(b.state(&id).is_none());
}
