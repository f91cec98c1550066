//! The last steps shared by a box's init and by processes exec'd into a box: user switch,
//! capabilities, no_new_privs, fd hygiene, the program lookup in the box's PATH, and execve.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Process;

use crate::error::{Context, Error, Result};

/// The PATH used when the box's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything execve needs, prepared before the final steps.
#[derive(Debug)]
pub struct ExecImage {
    /// Resolved program path.
    pub program: CString,
    /// argv.
    pub argv: Vec<CString>,
    /// envp.
    pub envp: Vec<CString>,
}

/// Resolves args[0] in the box (now the current root) and builds argv/envp.
/// A name without `/` is looked up in the process's PATH, as execvp would.
pub fn prepare_exec(process: &Process) -> Result<ExecImage> {
    let args = process.args().as_deref().unwrap_or(&[]);
    let Some(first) = args.first() else {
        return Err(Error::config("process.args must name a program"));
    };
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(process.user().uid())));
    }
    let program = if first.contains('/') {
        PathBuf::from(first)
    } else {
        lookup_in_path(first, &path_var).ok_or_else(|| {
            Error::Init(format!(
                "exec: {first:?}: executable file not found in $PATH ({path_var})"
            ))
        })?
    };
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| Error::config("process args and env must not contain NUL"))
    };
    Ok(ExecImage {
        program: cstr(program.as_os_str().as_bytes())?,
        argv: args
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<_>>()?,
        envp: env
            .iter()
            .map(|e| cstr(e.as_bytes()))
            .collect::<Result<_>>()?,
    })
}

/// The first executable regular file named `name` on `path_var`.
pub fn lookup_in_path(name: &str, path_var: &str) -> Option<PathBuf> {
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Home directory of `uid` from the box's /etc/passwd, "/" when unknown.
fn home_of(uid: u32) -> String {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return "/".into();
    };
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
        })
        .next()
        .unwrap_or_else(|| "/".into())
}

/// Switches to the process's user: supplementary groups, gid, uid (keeping permitted caps
/// for `capabilities::apply`), and the umask. `setgroups_allowed` is false in a user
/// namespace whose setgroups file says "deny".
pub fn switch_user(process: &Process, setgroups_allowed: bool) -> Result<()> {
    let user = process.user();
    let extra: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if setgroups_allowed {
        nix::unistd::setgroups(&extra).ctx(|| format!("cannot set additional gids {extra:?}"))?;
    } else if !extra.is_empty() {
        return Err(Error::config(
            "additionalGids need setgroups(2), which a rootless single-id mapping denies; map a gid range with newgidmap instead",
        ));
    }
    crate::capabilities::keep_across_user_switch()
        .map_err(|e| Error::Init(format!("cannot keep capabilities: {e}")))?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid)
        .ctx(|| format!("cannot switch to gid {gid} (is it mapped in the user namespace?)"))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid)
        .ctx(|| format!("cannot switch to uid {uid} (is it mapped in the user namespace?)"))?;
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

/// Applies the capability sets (none given: all dropped) and no_new_privileges.
pub fn apply_privileges(process: &Process) -> Result<()> {
    let caps = process.capabilities().clone().unwrap_or_else(|| {
        let none = oci_spec::runtime::Capabilities::new();
        oci_spec::runtime::LinuxCapabilitiesBuilder::default()
            .bounding(none.clone())
            .effective(none.clone())
            .permitted(none.clone())
            .inheritable(none.clone())
            .ambient(none)
            .build()
            .unwrap_or_default()
    });
    crate::capabilities::apply(&caps)
        .map_err(|e| Error::Init(format!("cannot apply capabilities: {e}")))?;
    if process.no_new_privileges() == Some(true) {
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes only integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "cannot set no_new_privs");
        }
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec, so nothing of the runtime leaks into the box.
pub fn cloexec_from(first: u32) -> Result<()> {
    // SAFETY: close_range only changes descriptor flags of this process.
    let rc = unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| "cannot mark descriptors close-on-exec");
    }
    Ok(())
}

/// Replaces the process with the box's program; returns only on failure. Signal state is
/// reset first: the runtime (as every Rust program) ignores SIGPIPE, and ignored signals
/// would survive execve.
pub fn exec(image: &ExecImage) -> Error {
    // SAFETY: resetting a disposition to SIG_DFL and clearing the mask affect only this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    let err = nix::unistd::execve(&image.program, &image.argv, &image.envp)
        .err()
        .unwrap_or(nix::errno::Errno::UnknownErrno);
    Error::Io {
        context: format!(
            "exec {:?} failed",
            OsStr::from_bytes(image.program.as_bytes())
        ),
        os: err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_finds_executables_only() {
        assert_eq!(
            lookup_in_path("sh", "/nonexistent:/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(lookup_in_path("passwd", "/etc"), None);
        assert_eq!(lookup_in_path("no-such-program-xyz", DEFAULT_PATH), None);
    }
}
