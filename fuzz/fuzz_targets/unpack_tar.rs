//! Feeds arbitrary bytes as a layer tar to the safe unpacker: it may refuse them, it must not
//! panic, and nothing may appear outside the destination.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use box_image::unpack::{unpack, UnpackOptions};
use libfuzzer_sys::fuzz_target;

fn sandbox() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("box-fuzz-unpack-{}-{n}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let sb = sandbox();
    let dest = sb.join("root");
    if fs::create_dir_all(&dest).is_err() {
        return;
    }
    let opts = UnpackOptions {
        rootless: true,
        ignore_ownership: true,
    };
    let _ = unpack(data, &dest, &opts);
    let outside: Vec<_> = fs::read_dir(&sb)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        outside,
        vec![std::ffi::OsString::from("root")],
        "unpack wrote outside its root"
    );
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+rwx")
        .arg(&sb)
        .output();
    let _ = fs::remove_dir_all(&sb);
});
