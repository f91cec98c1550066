//! Capabilities: the OCI `process.capabilities` sets applied to the box's init before execve.
//!
//! Order matters and is fixed here: [`keep_across_user_switch`] before the uid changes, then
//! [`apply`] after it: bounding set first, then inheritable, effective and permitted, then ambient.

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// Errors from changing the process's capabilities.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// `prctl(PR_SET_KEEPCAPS)` failed.
    #[error("keeping capabilities across the user switch (prctl PR_SET_KEEPCAPS) failed: {0}")]
    KeepCaps(#[source] std::io::Error),
    /// Dropping a capability from the bounding set failed.
    #[error(
        "dropping {cap} (number {index}) from the bounding set failed: {source} (dropping from the bounding set \
         needs CAP_SETPCAP in the permitted set of the process that applies capabilities)"
    )]
    DropBounding {
        /// The capability, e.g. `CAP_SYS_ADMIN` (`CAP_UNKNOWN` for one newer than Box).
        cap: &'static str,
        /// Its number.
        index: u8,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Setting the effective, permitted or inheritable set failed.
    #[error(
        "setting the {set} capability set to [{wanted}] failed: {source} ({hint}; check \
         process.capabilities in config.json)"
    )]
    SetSet {
        /// Which set: `effective`, `permitted` or `inheritable`.
        set: &'static str,
        /// The requested capabilities, comma-separated.
        wanted: String,
        /// Why it usually fails.
        hint: &'static str,
        /// The underlying error.
        #[source]
        source: caps::errors::CapsError,
    },
    /// Raising an ambient capability failed.
    #[error(
        "raising ambient capability {cap} failed: {source} (an ambient capability must also be \
         in the permitted and inheritable sets, and the kernel must support ambient capabilities)"
    )]
    RaiseAmbient {
        /// The capability.
        cap: &'static str,
        /// The underlying error.
        #[source]
        source: caps::errors::CapsError,
    },
    /// Clearing the ambient set failed.
    #[error("clearing the ambient capability set failed: {0}")]
    ClearAmbient(#[source] caps::errors::CapsError),
    /// Reading the current capabilities failed.
    #[error("reading the current {set} capability set failed: {source}")]
    Read {
        /// Which set.
        set: &'static str,
        /// The underlying error.
        #[source]
        source: caps::errors::CapsError,
    },
}

/// Call before switching uid away from 0 so permitted caps survive setresuid.
///
/// Sets `PR_SET_KEEPCAPS`; the kernel clears it again at execve.
pub fn keep_across_user_switch() -> Result<(), CapsError> {
    // SAFETY: prctl(PR_SET_KEEPCAPS, 1) takes integer arguments only and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(CapsError::KeepCaps(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// After the user switch: drop every capability not in `bounding` from the bounding set, then set
/// effective, permitted, inheritable exactly, then raise ambient. Works whether the uid is 0 or
/// not.
///
/// A missing set in `caps` means the empty set. Capabilities the running kernel does not know
/// (above `/proc/sys/kernel/cap_last_cap`) are skipped without error, like runc.
pub fn apply(caps: &LinuxCapabilities) -> Result<(), CapsError> {
    let known = kernel_caps();
    let wanted = |set: &Option<Capabilities>| -> CapsHashSet {
        set.iter()
            .flatten()
            .map(|c| to_caps(*c))
            .filter(|c| known.contains(c))
            .collect()
    };
    let bounding = wanted(caps.bounding());
    let effective = wanted(caps.effective());
    let permitted = wanted(caps.permitted());
    let inheritable = wanted(caps.inheritable());
    let ambient = wanted(caps.ambient());

    // After setresuid away from 0 the effective set is empty; raise it to the permitted set so
    // that CAP_SETPCAP (needed for the bounding set and a wider inheritable set) is in effect.
    let current_permitted =
        caps::read(None, CapSet::Permitted).map_err(|source| CapsError::Read {
            set: "permitted",
            source,
        })?;
    caps::set(None, CapSet::Effective, &current_permitted).map_err(|source| CapsError::SetSet {
        set: "effective",
        wanted: names(&current_permitted),
        hint: "raising the effective set to the permitted set",
        source,
    })?;

    drop_bounding_except(&bounding)?;

    caps::set(None, CapSet::Inheritable, &inheritable).map_err(|source| CapsError::SetSet {
        set: "inheritable",
        wanted: names(&inheritable),
        hint: "an inheritable capability must be in the bounding set, or in the permitted set \
               when CAP_SETPCAP is not held",
        source,
    })?;
    caps::set(None, CapSet::Effective, &effective).map_err(|source| CapsError::SetSet {
        set: "effective",
        wanted: names(&effective),
        hint: "an effective capability must also be in the permitted set",
        source,
    })?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|source| CapsError::SetSet {
        set: "permitted",
        wanted: names(&permitted),
        hint: "the permitted set can only shrink, and must contain every effective capability",
        source,
    })?;

    // Ambient: exactly the requested set. A kernel without ambient capabilities (before 4.3) fails
    // the clear; that only matters when something has to be raised, which then reports it.
    if let Err(source) = caps::clear(None, CapSet::Ambient) {
        if caps::runtime::ambient_set_supported().is_ok() {
            return Err(CapsError::ClearAmbient(source));
        }
    }
    for cap in &ambient {
        caps::raise(None, CapSet::Ambient, *cap).map_err(|source| CapsError::RaiseAmbient {
            cap: cap_name(*cap),
            source,
        })?;
    }
    Ok(())
}

/// Drops from the bounding set every capability not in `keep`, by number, so that a capability
/// newer than the caps crate (unknown by name) is dropped too.
fn drop_bounding_except(keep: &CapsHashSet) -> Result<(), CapsError> {
    let keep_mask: u64 = keep.iter().fold(0, |mask, c| mask | c.bitmask());
    for index in 0u8..64 {
        // SAFETY: prctl(PR_CAPBSET_READ, n) takes integers only; it answers 1 (in the set), 0 (not
        // in it) or -1 with EINVAL past the kernel's last capability.
        let present =
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(index), 0, 0, 0) };
        if present < 0 {
            break;
        }
        // Already dropped (e.g. by a parent): nothing to do, and no CAP_SETPCAP needed.
        if present == 0 || keep_mask & (1u64 << index) != 0 {
            continue;
        }
        // SAFETY: prctl(PR_CAPBSET_DROP, n) takes integers only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(index), 0, 0, 0) };
        if rc != 0 {
            return Err(CapsError::DropBounding {
                cap: caps::all()
                    .into_iter()
                    .find(|c| c.index() == index)
                    .map_or("CAP_UNKNOWN", cap_name),
                index,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Every capability the running kernel knows ("CAP_…"), for `features`.
pub fn all_names() -> Vec<String> {
    let mut known: Vec<Cap> = kernel_caps().into_iter().collect();
    known.sort_by_key(|c| c.index());
    known.into_iter().map(|c| cap_name(c).to_string()).collect()
}

/// The capabilities the running kernel supports (those `PR_CAPBSET_READ` accepts), which is
/// exactly 0..=`/proc/sys/kernel/cap_last_cap` and needs no /proc.
fn kernel_caps() -> CapsHashSet {
    caps::runtime::thread_all_supported()
}

/// The canonical name of a capability, e.g. `CAP_CHOWN`.
fn cap_name(cap: Cap) -> &'static str {
    // Display for caps::Capability writes exactly these names; a static table avoids allocating.
    match cap {
        Cap::CAP_CHOWN => "CAP_CHOWN",
        Cap::CAP_DAC_OVERRIDE => "CAP_DAC_OVERRIDE",
        Cap::CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH",
        Cap::CAP_FOWNER => "CAP_FOWNER",
        Cap::CAP_FSETID => "CAP_FSETID",
        Cap::CAP_KILL => "CAP_KILL",
        Cap::CAP_SETGID => "CAP_SETGID",
        Cap::CAP_SETUID => "CAP_SETUID",
        Cap::CAP_SETPCAP => "CAP_SETPCAP",
        Cap::CAP_LINUX_IMMUTABLE => "CAP_LINUX_IMMUTABLE",
        Cap::CAP_NET_BIND_SERVICE => "CAP_NET_BIND_SERVICE",
        Cap::CAP_NET_BROADCAST => "CAP_NET_BROADCAST",
        Cap::CAP_NET_ADMIN => "CAP_NET_ADMIN",
        Cap::CAP_NET_RAW => "CAP_NET_RAW",
        Cap::CAP_IPC_LOCK => "CAP_IPC_LOCK",
        Cap::CAP_IPC_OWNER => "CAP_IPC_OWNER",
        Cap::CAP_SYS_MODULE => "CAP_SYS_MODULE",
        Cap::CAP_SYS_RAWIO => "CAP_SYS_RAWIO",
        Cap::CAP_SYS_CHROOT => "CAP_SYS_CHROOT",
        Cap::CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        Cap::CAP_SYS_PACCT => "CAP_SYS_PACCT",
        Cap::CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        Cap::CAP_SYS_BOOT => "CAP_SYS_BOOT",
        Cap::CAP_SYS_NICE => "CAP_SYS_NICE",
        Cap::CAP_SYS_RESOURCE => "CAP_SYS_RESOURCE",
        Cap::CAP_SYS_TIME => "CAP_SYS_TIME",
        Cap::CAP_SYS_TTY_CONFIG => "CAP_SYS_TTY_CONFIG",
        Cap::CAP_MKNOD => "CAP_MKNOD",
        Cap::CAP_LEASE => "CAP_LEASE",
        Cap::CAP_AUDIT_WRITE => "CAP_AUDIT_WRITE",
        Cap::CAP_AUDIT_CONTROL => "CAP_AUDIT_CONTROL",
        Cap::CAP_SETFCAP => "CAP_SETFCAP",
        Cap::CAP_MAC_OVERRIDE => "CAP_MAC_OVERRIDE",
        Cap::CAP_MAC_ADMIN => "CAP_MAC_ADMIN",
        Cap::CAP_SYSLOG => "CAP_SYSLOG",
        Cap::CAP_WAKE_ALARM => "CAP_WAKE_ALARM",
        Cap::CAP_BLOCK_SUSPEND => "CAP_BLOCK_SUSPEND",
        Cap::CAP_AUDIT_READ => "CAP_AUDIT_READ",
        Cap::CAP_PERFMON => "CAP_PERFMON",
        Cap::CAP_BPF => "CAP_BPF",
        Cap::CAP_CHECKPOINT_RESTORE => "CAP_CHECKPOINT_RESTORE",
        // caps::Capability is non-exhaustive: a newer caps crate may know more.
        _ => "CAP_UNKNOWN",
    }
}

/// Comma-separated names of a set, sorted by capability number (for error messages).
fn names(set: &CapsHashSet) -> String {
    let mut list: Vec<Cap> = set.iter().copied().collect();
    list.sort_by_key(|c| c.index());
    list.iter()
        .map(|c| cap_name(*c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Maps oci-spec's capability to the caps crate's.
///
/// oci-spec refuses unknown capability names when config.json is parsed, so every capability that
/// reaches here has a number; whether the running kernel knows it is checked separately.
fn to_caps(cap: Capability) -> Cap {
    match cap {
        Capability::AuditControl => Cap::CAP_AUDIT_CONTROL,
        Capability::AuditRead => Cap::CAP_AUDIT_READ,
        Capability::AuditWrite => Cap::CAP_AUDIT_WRITE,
        Capability::BlockSuspend => Cap::CAP_BLOCK_SUSPEND,
        Capability::Bpf => Cap::CAP_BPF,
        Capability::CheckpointRestore => Cap::CAP_CHECKPOINT_RESTORE,
        Capability::Chown => Cap::CAP_CHOWN,
        Capability::DacOverride => Cap::CAP_DAC_OVERRIDE,
        Capability::DacReadSearch => Cap::CAP_DAC_READ_SEARCH,
        Capability::Fowner => Cap::CAP_FOWNER,
        Capability::Fsetid => Cap::CAP_FSETID,
        Capability::IpcLock => Cap::CAP_IPC_LOCK,
        Capability::IpcOwner => Cap::CAP_IPC_OWNER,
        Capability::Kill => Cap::CAP_KILL,
        Capability::Lease => Cap::CAP_LEASE,
        Capability::LinuxImmutable => Cap::CAP_LINUX_IMMUTABLE,
        Capability::MacAdmin => Cap::CAP_MAC_ADMIN,
        Capability::MacOverride => Cap::CAP_MAC_OVERRIDE,
        Capability::Mknod => Cap::CAP_MKNOD,
        Capability::NetAdmin => Cap::CAP_NET_ADMIN,
        Capability::NetBindService => Cap::CAP_NET_BIND_SERVICE,
        Capability::NetBroadcast => Cap::CAP_NET_BROADCAST,
        Capability::NetRaw => Cap::CAP_NET_RAW,
        Capability::Perfmon => Cap::CAP_PERFMON,
        Capability::Setgid => Cap::CAP_SETGID,
        Capability::Setfcap => Cap::CAP_SETFCAP,
        Capability::Setpcap => Cap::CAP_SETPCAP,
        Capability::Setuid => Cap::CAP_SETUID,
        Capability::SysAdmin => Cap::CAP_SYS_ADMIN,
        Capability::SysBoot => Cap::CAP_SYS_BOOT,
        Capability::SysChroot => Cap::CAP_SYS_CHROOT,
        Capability::SysModule => Cap::CAP_SYS_MODULE,
        Capability::SysNice => Cap::CAP_SYS_NICE,
        Capability::SysPacct => Cap::CAP_SYS_PACCT,
        Capability::SysPtrace => Cap::CAP_SYS_PTRACE,
        Capability::SysRawio => Cap::CAP_SYS_RAWIO,
        Capability::SysResource => Cap::CAP_SYS_RESOURCE,
        Capability::SysTime => Cap::CAP_SYS_TIME,
        Capability::SysTtyConfig => Cap::CAP_SYS_TTY_CONFIG,
        Capability::Syslog => Cap::CAP_SYSLOG,
        Capability::WakeAlarm => Cap::CAP_WAKE_ALARM,
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::wait::WaitStatus;
    use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

    use super::*;
    use crate::seccomp::forked;

    /// True when the test may run: root. Not root: skip, or panic when BOX_REQUIRE_PRIVILEGED=1.
    fn privileged(test: &str) -> bool {
        // SAFETY: geteuid cannot fail and touches no memory.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var("BOX_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{test} needs root and BOX_REQUIRE_PRIVILEGED=1 is set");
        }
        eprintln!("skipping {test}: needs root");
        false
    }

    fn set(caps: &[Capability]) -> Option<Capabilities> {
        Some(caps.iter().copied().collect())
    }

    fn spec(
        bounding: &[Capability],
        eff_perm: &[Capability],
        inheritable: &[Capability],
        ambient: &[Capability],
    ) -> LinuxCapabilities {
        let mut c = LinuxCapabilities::default();
        c.set_bounding(set(bounding));
        c.set_effective(set(eff_perm));
        c.set_permitted(set(eff_perm));
        c.set_inheritable(set(inheritable));
        c.set_ambient(set(ambient));
        c
    }

    /// Reads one `CapXxx:` mask from /proc/self/status with plain system calls (forked child).
    fn status_mask(field: &[u8]) -> Option<u64> {
        let mut buf = [0u8; 8192];
        // SAFETY: the path is NUL-terminated; open returns a new fd or -1.
        let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return None;
        }
        let mut len = 0usize;
        while let Some(rest) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
            // SAFETY: read writes at most rest.len() bytes into rest.
            let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
            if n <= 0 {
                break;
            }
            len += usize::try_from(n).ok()?;
        }
        // SAFETY: fd was opened above and is closed once.
        unsafe { libc::close(fd) };
        let text = buf.get(..len)?;
        let line = text.split(|&b| b == b'\n').find(|l| l.starts_with(field))?;
        let hex = line.get(field.len()..)?;
        let mut value = 0u64;
        for &b in hex.iter().filter(|b| !b.is_ascii_whitespace()) {
            let digit = (b as char).to_digit(16)?;
            value = value.checked_mul(16)?.checked_add(u64::from(digit))?;
        }
        Some(value)
    }

    /// Exit code 0 when each listed status field equals its mask, else 10 + the field's index.
    fn check_masks(expected: &[(&[u8], u64)]) -> i32 {
        for (i, (field, mask)) in expected.iter().enumerate() {
            if status_mask(field) != Some(*mask) {
                return 10 + i32::try_from(i).unwrap_or(50);
            }
        }
        0
    }

    const KILL_CHOWN: u64 = (1 << 5) | (1 << 0);

    fn exited(status: WaitStatus, code: i32, what: &str) {
        assert!(
            matches!(status, WaitStatus::Exited(_, c) if c == code),
            "{what}: expected exit code {code}, got {status:?} (1x = CapBnd, CapEff, CapPrm, \
             CapInh, CapAmb mismatch in that order)"
        );
    }

    #[test]
    fn apply_as_root_leaves_exactly_the_requested_sets() {
        if !privileged("apply_as_root_leaves_exactly_the_requested_sets") {
            return;
        }
        let caps = spec(
            &[Capability::Kill, Capability::Chown],
            &[Capability::Kill, Capability::Chown],
            &[],
            &[],
        );
        let status = forked::run(|| {
            if apply(&caps).is_err() {
                return 1;
            }
            check_masks(&[
                (b"CapBnd:", KILL_CHOWN),
                (b"CapEff:", KILL_CHOWN),
                (b"CapPrm:", KILL_CHOWN),
                (b"CapInh:", 0),
                (b"CapAmb:", 0),
            ])
        });
        exited(status, 0, "apply as root");
    }

    #[test]
    fn apply_after_user_switch_keeps_requested_caps_including_ambient() {
        if !privileged("apply_after_user_switch_keeps_requested_caps_including_ambient") {
            return;
        }
        let both = [Capability::Kill, Capability::Chown];
        let caps = spec(&both, &both, &both, &both);
        let status = forked::run(|| {
            if keep_across_user_switch().is_err() {
                return 1;
            }
            // SAFETY: setresuid takes integers only.
            if unsafe { libc::setresuid(1000, 1000, 1000) } != 0 {
                return 2;
            }
            // The user switch emptied the effective set.
            if status_mask(b"CapEff:") != Some(0) {
                return 3;
            }
            if apply(&caps).is_err() {
                return 4;
            }
            // SAFETY: getuid cannot fail.
            if unsafe { libc::getuid() } != 1000 {
                return 5;
            }
            check_masks(&[
                (b"CapBnd:", KILL_CHOWN),
                (b"CapEff:", KILL_CHOWN),
                (b"CapPrm:", KILL_CHOWN),
                (b"CapInh:", KILL_CHOWN),
                (b"CapAmb:", KILL_CHOWN),
            ])
        });
        exited(status, 0, "apply after setresuid(1000)");
    }

    #[test]
    fn apply_refuses_to_regain_dropped_caps_and_bad_ambient() {
        if !privileged("apply_refuses_to_regain_dropped_caps_and_bad_ambient") {
            return;
        }
        let only_kill = spec(&[Capability::Kill], &[Capability::Kill], &[], &[]);
        let regain = spec(&[Capability::Kill], &[Capability::Chown], &[], &[]);
        let ambient_without_inheritable = spec(
            &[Capability::Kill],
            &[Capability::Kill],
            &[],
            &[Capability::Kill],
        );
        let status = forked::run(|| {
            if apply(&only_kill).is_err() {
                return 1;
            }
            if !matches!(
                apply(&regain),
                Err(CapsError::SetSet {
                    set: "effective",
                    ..
                })
            ) {
                return 2;
            }
            match apply(&ambient_without_inheritable) {
                Err(CapsError::RaiseAmbient {
                    cap: "CAP_KILL", ..
                }) => 0,
                _ => 3,
            }
        });
        exited(status, 0, "refusals");
    }

    #[test]
    fn all_names_lists_every_kernel_capability() {
        let names = all_names();
        let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        // The caps crate knows capabilities up to 40 (CAP_CHECKPOINT_RESTORE).
        assert_eq!(names.len(), last.min(40) + 1, "{names:?}");
        assert_eq!(names.first().map(String::as_str), Some("CAP_CHOWN"));
        assert!(names
            .iter()
            .all(|n| n.starts_with("CAP_") && n != "CAP_UNKNOWN"));
    }

    #[test]
    fn every_oci_capability_maps_to_its_namesake() {
        for name in crate::policy::DEFAULT_CAPABILITIES {
            let oci: Capability = match serde_json::from_str(&format!("\"{name}\"")) {
                Ok(c) => c,
                Err(e) => panic!("{name}: {e}"),
            };
            assert_eq!(cap_name(to_caps(oci)), *name);
        }
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let err = CapsError::RaiseAmbient {
            cap: "CAP_KILL",
            source: caps::errors::CapsError::from("EPERM"),
        };
        assert!(err.to_string().contains("permitted and inheritable"));
    }
}
