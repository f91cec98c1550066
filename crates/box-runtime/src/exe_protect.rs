//! CVE-2019-5736: a box must never get a writable handle on the runtime binary through
//! /proc/PID/exe (e.g. by exec'ing `#!/proc/self/exe`). Before making or entering a box the
//! runtime makes sure the binary it runs from cannot be written through that link:
//! - already immutable (`chattr +i`, as scripts/install.sh installs it), on a read-only mount,
//!   or not writable by the caller (rootless): nothing to do;
//! - root: re-execute through a read-only bind mount of itself in a private mount namespace
//!   (cheap: no copy; a write through the exe link then fails with EROFS);
//! - otherwise: re-execute from a sealed memfd copy.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::error::{Context, Error, Result};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Whether a write through /proc/self/exe is already impossible.
pub fn exe_is_protected() -> bool {
    if statvfs("/proc/self/exe").is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY)) {
        return true;
    }
    if running_sealed() || exe_is_immutable() {
        return true;
    }
    // A binary the caller cannot write (rootless, or root of a user namespace facing a
    // host-owned file) stays unwritable from any box it makes.
    // SAFETY: access(2) with a valid C string.
    unsafe { libc::access(c"/proc/self/exe".as_ptr(), libc::W_OK) != 0 }
}

/// Whether the binary carries the immutable attribute: nobody, root included, can open it for
/// writing without first clearing it, which needs CAP_LINUX_IMMUTABLE (never granted to boxes
/// by default).
pub fn exe_is_immutable() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`, which lives on our stack.
    let rc = unsafe { libc::ioctl(exe.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    const FS_IMMUTABLE_FL: libc::c_long = 0x0000_0010;
    rc == 0 && flags & FS_IMMUTABLE_FL != 0
}

/// Whether this process runs from a sealed memfd.
pub fn running_sealed() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS on a descriptor we own; non-memfd files answer EINVAL.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Makes sure the running binary is protected, re-executing (same argv and environment)
/// when it is not. Returns only when protected, or with the reason it could not be.
pub fn protect_self() -> Result<()> {
    if exe_is_protected() {
        return Ok(());
    }
    if !crate::idmap::running_rootless() {
        reexec_read_only()
    } else {
        reexec_sealed()
    }
}

fn argv_envp() -> (Vec<CString>, Vec<CString>) {
    let argv = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let envp = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).unwrap_or_default()
        })
        .collect();
    (argv, envp)
}

fn reexec_read_only() -> Result<()> {
    let exe: PathBuf = std::fs::read_link("/proc/self/exe").ctx(|| "cannot read /proc/self/exe")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .ctx(|| "cannot make a private mount namespace to protect the runtime binary")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| "cannot make / a slave mount")?;
    mount(
        Some(&exe),
        &exe,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("cannot bind {} to itself", exe.display()))?;
    mount(
        None::<&str>,
        &exe,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .ctx(|| format!("cannot make {} read-only", exe.display()))?;
    let (argv, envp) = argv_envp();
    let path = CString::new(exe.as_os_str().as_bytes()).unwrap_or_default();
    let err = nix::unistd::execve(&path, &argv, &envp)
        .err()
        .unwrap_or(nix::errno::Errno::UnknownErrno);
    Err(Error::Io {
        context: format!(
            "cannot re-execute {} read-only",
            OsStr::from_bytes(path.as_bytes()).to_string_lossy()
        ),
        os: err.into(),
    })
}

/// Re-executes from a sealed memfd copy of the binary.
pub fn reexec_sealed() -> Result<()> {
    let exe = File::open("/proc/self/exe").ctx(|| "cannot open /proc/self/exe")?;
    // SAFETY: memfd_create with a valid C string and flags.
    let fd = unsafe {
        libc::memfd_create(
            c"box-runc".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| "cannot create a memfd for the runtime copy");
    }
    // SAFETY: memfd_create returned a fresh descriptor we own.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let size = exe.metadata().ctx(|| "cannot stat /proc/self/exe")?.len();
    let mut copied: u64 = 0;
    while copied < size {
        // SAFETY: sendfile between two descriptors we own; offsets are the files' own.
        let n = unsafe {
            libc::sendfile(
                memfd.as_raw_fd(),
                exe.as_raw_fd(),
                std::ptr::null_mut(),
                (size - copied) as usize,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error())
                .ctx(|| "cannot copy the runtime into a memfd");
        }
        if n == 0 {
            break;
        }
        copied += n as u64;
    }
    // SAFETY: F_ADD_SEALS on our memfd with valid seal flags.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "cannot seal the runtime copy");
    }
    let (argv, envp) = argv_envp();
    let err = nix::unistd::fexecve(&memfd, &argv, &envp)
        .err()
        .unwrap_or(nix::errno::Errno::UnknownErrno);
    Err(Error::Io {
        context: "cannot re-execute the runtime from its sealed copy".into(),
        os: err.into(),
    })
}
