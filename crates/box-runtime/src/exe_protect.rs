//! CVE-2019-5736: a box must never get a writable handle on the runtime binary through
//! /proc/PID/exe. Before making or entering a box, the runtime re-executes itself from a sealed
//! memfd copy, so the only executable a box could reach is immutable and never on disk.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Context, Error, Result};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Whether this process already runs from a sealed memfd.
pub fn running_sealed() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS on a descriptor we own; non-memfd files answer EINVAL.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Re-executes the current program (same argv and environment) from a sealed memfd copy,
/// unless it already runs from one. Returns only on failure.
pub fn reexec_sealed() -> Result<()> {
    if running_sealed() {
        return Ok(());
    }
    let exe = File::open("/proc/self/exe").ctx(|| "cannot open /proc/self/exe")?;
    let name = c"box-runc";
    // SAFETY: memfd_create with a valid C string and flags.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
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
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).unwrap_or_default()
        })
        .collect();
    let err = nix::unistd::fexecve(&memfd, &argv, &envp)
        .err()
        .unwrap_or(nix::errno::Errno::UnknownErrno);
    Err(Error::Io {
        context: "cannot re-execute the runtime from its sealed copy".into(),
        source: err.into(),
    })
}
