//! Resource limits: the OCI `process.rlimits` list applied with prlimit in the box's init.

use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

/// Errors from applying resource limits.
#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    /// The same limit appears twice in the configuration.
    #[error(
        "{name} is listed more than once in process.rlimits; keep one entry per type in \
         config.json"
    )]
    Duplicate {
        /// The limit, e.g. `RLIMIT_NOFILE`.
        name: &'static str,
    },
    /// The soft limit is above the hard limit.
    #[error(
        "cannot set {name} to soft={soft} hard={hard}: the soft limit must not exceed the hard \
         limit (fix process.rlimits in config.json)"
    )]
    SoftAboveHard {
        /// The limit.
        name: &'static str,
        /// Requested soft limit.
        soft: u64,
        /// Requested hard limit.
        hard: u64,
    },
    /// Raising the hard limit needs CAP_SYS_RESOURCE, which the process lacks.
    #[error(
        "cannot set {name} to soft={soft} hard={hard}: the current hard limit is {current_hard} \
         and raising it needs CAP_SYS_RESOURCE (lower \"hard\" in config.json's process.rlimits)"
    )]
    RaiseHardLimit {
        /// The limit.
        name: &'static str,
        /// Requested soft limit.
        soft: u64,
        /// Requested hard limit.
        hard: u64,
        /// The hard limit in force.
        current_hard: u64,
    },
    /// The kernel refused the limit for another reason.
    #[error("cannot set {name} to soft={soft} hard={hard}: {source}")]
    Set {
        /// The limit.
        name: &'static str,
        /// Requested soft limit.
        soft: u64,
        /// Requested hard limit.
        hard: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Sets every limit (prlimit on the calling process), in the box's init.
///
/// The list is checked first (no duplicated type, soft ≤ hard), so a bad configuration changes
/// nothing. Allocates only to report an error.
pub fn apply(rlimits: &[PosixRlimit]) -> Result<(), RlimitError> {
    let mut seen: u32 = 0;
    for rlimit in rlimits {
        let (bit, name) = (1u32 << (resource(rlimit.typ()) & 31), name(rlimit.typ()));
        if seen & bit != 0 {
            return Err(RlimitError::Duplicate { name });
        }
        seen |= bit;
        if rlimit.soft() > rlimit.hard() {
            return Err(RlimitError::SoftAboveHard {
                name,
                soft: rlimit.soft(),
                hard: rlimit.hard(),
            });
        }
    }
    for rlimit in rlimits {
        set(rlimit.typ(), rlimit.soft(), rlimit.hard())?;
    }
    Ok(())
}

/// Sets one limit, explaining the usual EPERM.
fn set(typ: PosixRlimitType, soft: u64, hard: u64) -> Result<(), RlimitError> {
    let res = resource(typ);
    let new = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit64 on pid 0 (the caller) reads `new`, valid for the call; old_limit is null.
    let rc = unsafe { libc::prlimit64(0, res, &new, std::ptr::null_mut()) };
    if rc == 0 {
        return Ok(());
    }
    let source = std::io::Error::last_os_error();
    let name = name(typ);
    if source.raw_os_error() == Some(libc::EPERM) {
        let mut current = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 on pid 0 with a null new_limit writes the current limit to `current`.
        let rc = unsafe { libc::prlimit64(0, res, std::ptr::null(), &mut current) };
        if rc == 0 && hard > current.rlim_max {
            return Err(RlimitError::RaiseHardLimit {
                name,
                soft,
                hard,
                current_hard: current.rlim_max,
            });
        }
    }
    Err(RlimitError::Set {
        name,
        soft,
        hard,
        source,
    })
}

/// The kernel's resource number for an OCI limit type.
fn resource(typ: PosixRlimitType) -> libc::__rlimit_resource_t {
    match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// The OCI name of a limit type, e.g. `RLIMIT_NOFILE`.
pub fn name(typ: PosixRlimitType) -> &'static str {
    match typ {
        PosixRlimitType::RlimitCpu => "RLIMIT_CPU",
        PosixRlimitType::RlimitFsize => "RLIMIT_FSIZE",
        PosixRlimitType::RlimitData => "RLIMIT_DATA",
        PosixRlimitType::RlimitStack => "RLIMIT_STACK",
        PosixRlimitType::RlimitCore => "RLIMIT_CORE",
        PosixRlimitType::RlimitRss => "RLIMIT_RSS",
        PosixRlimitType::RlimitNproc => "RLIMIT_NPROC",
        PosixRlimitType::RlimitNofile => "RLIMIT_NOFILE",
        PosixRlimitType::RlimitMemlock => "RLIMIT_MEMLOCK",
        PosixRlimitType::RlimitAs => "RLIMIT_AS",
        PosixRlimitType::RlimitLocks => "RLIMIT_LOCKS",
        PosixRlimitType::RlimitSigpending => "RLIMIT_SIGPENDING",
        PosixRlimitType::RlimitMsgqueue => "RLIMIT_MSGQUEUE",
        PosixRlimitType::RlimitNice => "RLIMIT_NICE",
        PosixRlimitType::RlimitRtprio => "RLIMIT_RTPRIO",
        PosixRlimitType::RlimitRttime => "RLIMIT_RTTIME",
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::wait::WaitStatus;
    use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};

    use super::*;
    use crate::seccomp::forked;

    fn limit(typ: PosixRlimitType, soft: u64, hard: u64) -> PosixRlimit {
        match PosixRlimitBuilder::default()
            .typ(typ)
            .soft(soft)
            .hard(hard)
            .build()
        {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }

    fn current(res: libc::__rlimit_resource_t) -> libc::rlimit64 {
        let mut cur = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 with a null new limit only writes the current one into `cur`.
        unsafe { libc::prlimit64(0, res, std::ptr::null(), &mut cur) };
        cur
    }

    fn exited(status: WaitStatus, code: i32) {
        assert!(
            matches!(status, WaitStatus::Exited(_, c) if c == code),
            "expected exit code {code}, got {status:?}"
        );
    }

    #[test]
    fn apply_lowers_nofile() {
        let limits = [limit(PosixRlimitType::RlimitNofile, 64, 128)];
        let status = forked::run(|| {
            if apply(&limits).is_err() {
                return 1;
            }
            let now = current(libc::RLIMIT_NOFILE);
            if (now.rlim_cur, now.rlim_max) == (64, 128) {
                0
            } else {
                2
            }
        });
        exited(status, 0);
    }

    #[test]
    fn raising_the_hard_limit_without_cap_sys_resource_says_so() {
        let hard_now = current(libc::RLIMIT_NOFILE).rlim_max;
        if hard_now == libc::RLIM64_INFINITY {
            return; // nothing above an infinite hard limit
        }
        let wanted = hard_now.saturating_add(1024);
        let limits = [limit(PosixRlimitType::RlimitNofile, 64, wanted)];
        let has_sys_resource = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap_or(false);
        // Run in a child so that a success does not change the test process's limits.
        let status = forked::run(|| match apply(&limits) {
            Ok(()) => 0,
            Err(e @ RlimitError::RaiseHardLimit { .. }) => {
                let text = e.to_string();
                let wanted_text = format!("the current hard limit is {hard_now} and raising it");
                if text.contains(&wanted_text) && text.contains("needs CAP_SYS_RESOURCE") {
                    1
                } else {
                    3
                }
            }
            Err(_) => 2,
        });
        if has_sys_resource {
            exited(status, 0);
        } else {
            exited(status, 1);
        }
    }

    #[test]
    fn duplicated_types_and_soft_above_hard_are_refused_before_any_change() {
        let core_before = current(libc::RLIMIT_CORE);
        let dup = [
            limit(PosixRlimitType::RlimitCore, 0, 1),
            limit(PosixRlimitType::RlimitNofile, 64, 64),
            limit(PosixRlimitType::RlimitNofile, 32, 32),
        ];
        assert!(matches!(
            apply(&dup),
            Err(RlimitError::Duplicate {
                name: "RLIMIT_NOFILE"
            })
        ));
        let inverted = [limit(PosixRlimitType::RlimitNofile, 100, 10)];
        assert!(matches!(
            apply(&inverted),
            Err(RlimitError::SoftAboveHard {
                soft: 100,
                hard: 10,
                ..
            })
        ));
        // Nothing was applied: the core limit listed first is unchanged in this process.
        let core_after = current(libc::RLIMIT_CORE);
        assert_eq!(
            (core_before.rlim_cur, core_before.rlim_max),
            (core_after.rlim_cur, core_after.rlim_max)
        );
    }

    #[test]
    fn every_type_maps_to_a_distinct_resource() {
        let all = [
            PosixRlimitType::RlimitCpu,
            PosixRlimitType::RlimitFsize,
            PosixRlimitType::RlimitData,
            PosixRlimitType::RlimitStack,
            PosixRlimitType::RlimitCore,
            PosixRlimitType::RlimitRss,
            PosixRlimitType::RlimitNproc,
            PosixRlimitType::RlimitNofile,
            PosixRlimitType::RlimitMemlock,
            PosixRlimitType::RlimitAs,
            PosixRlimitType::RlimitLocks,
            PosixRlimitType::RlimitSigpending,
            PosixRlimitType::RlimitMsgqueue,
            PosixRlimitType::RlimitNice,
            PosixRlimitType::RlimitRtprio,
            PosixRlimitType::RlimitRttime,
        ];
        let mut seen = std::collections::HashSet::new();
        for t in all {
            assert!(seen.insert(resource(t)), "{}", name(t));
            assert_eq!(name(t), t.to_string());
        }
    }
}
