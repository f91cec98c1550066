//! Compiled seccomp filters cached by content: compiling a full profile with libseccomp costs
//! 10–20 ms, more than the rest of a box's start, and engines pass the same profile every time.
//! The cache lives in the state root (mode 0700, owned by the caller); a missing or damaged
//! entry just means compiling again.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest, Sha256};

use crate::seccomp::{compile, SeccompError, SeccompProgram};

/// Bumped whenever the compiler's output for the same input may change.
const FORMAT: &[u8] = b"box-seccomp-cache-v2\0";

/// The cache entry path for `spec` under `dir`.
pub fn entry_path(dir: &Path, spec: &LinuxSeccomp) -> PathBuf {
    let mut h = Sha256::new();
    h.update(FORMAT);
    h.update(std::env::consts::ARCH.as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(serde_json::to_vec(spec).unwrap_or_default());
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(hex)
}

/// Compiles `spec`, or loads the program compiled earlier from the same profile.
pub fn compile_cached(spec: &LinuxSeccomp, dir: &Path) -> Result<SeccompProgram, SeccompError> {
    let path = entry_path(dir, spec);
    if let Some(p) = read_entry(&path) {
        return Ok(p);
    }
    let program = compile(spec)?;
    write_entry(dir, &path, &program);
    Ok(program)
}

fn read_entry(path: &Path) -> Option<SeccompProgram> {
    let data = fs::read(path).ok()?;
    let (flags, bpf) = data.split_at_checked(std::mem::size_of::<libc::c_ulong>())?;
    let flags = libc::c_ulong::from_le_bytes(flags.try_into().ok()?);
    SeccompProgram::from_bpf_bytes(bpf, flags).ok()
}

/// Best effort: a cache that cannot be written only costs the next start a compile.
fn write_entry(dir: &Path, path: &Path, program: &SeccompProgram) {
    if fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .is_err()
    {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut data = program.flags().to_le_bytes().to_vec();
    data.extend_from_slice(&program.bpf_bytes());
    let written = fs::File::create(&tmp).and_then(|mut f| f.write_all(&data));
    if written.is_err() || fs::rename(&tmp, path).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(errno_syscall: &str) -> LinuxSeccomp {
        serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": [errno_syscall], "action": "SCMP_ACT_ERRNO"}]
        }))
        .expect("profile")
    }

    #[test]
    fn second_compile_comes_from_the_cache_and_matches() {
        let dir = std::env::temp_dir().join(format!("box-seccomp-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let spec = profile("getcwd");
        let first = compile_cached(&spec, &dir).expect("compile");
        let path = entry_path(&dir, &spec);
        assert!(path.is_file(), "entry written");
        let second = compile_cached(&spec, &dir).expect("cached");
        assert_eq!(first.bpf_bytes(), second.bpf_bytes());
        assert_ne!(
            entry_path(&dir, &profile("mkdir")),
            path,
            "key follows content"
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn damaged_entry_is_recompiled() {
        let dir = std::env::temp_dir().join(format!("box-seccomp-bad-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        let spec = profile("getcwd");
        fs::write(entry_path(&dir, &spec), b"garbage").expect("write");
        let p = compile_cached(&spec, &dir).expect("recompiled");
        assert_eq!(p.bpf_bytes(), compile(&spec).expect("compile").bpf_bytes());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
