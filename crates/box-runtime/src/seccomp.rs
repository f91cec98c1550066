//! Seccomp: the OCI `linux.seccomp` section compiled to a BPF program, loaded in the box's init.
//!
//! The work is split so that the box's init does almost nothing: [`compile`] runs in the runtime
//! process (libseccomp builds the filter and exports it as classic BPF), and
//! [`SeccompProgram::load`] is one `seccomp(2)` system call on an already built program, safe to call
//! in a freshly forked or cloned child (it does not allocate).

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

/// The largest argument index a system call has (arguments 0 to 5).
const MAX_SYSCALL_ARGS: usize = 6;

/// Errors from compiling or loading a seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile asks for `SCMP_ACT_NOTIFY`, which needs a seccomp agent Box does not provide.
    #[error(
        "seccomp action SCMP_ACT_NOTIFY (used {context}) is not supported by Box: it needs a \
         seccomp agent listening on a socket; use SCMP_ACT_ERRNO or SCMP_ACT_KILL_PROCESS instead"
    )]
    NotifyUnsupported {
        /// Where the action appeared (`as defaultAction` or `for syscall "…"`).
        context: String,
    },
    /// An architecture name the installed libseccomp cannot build filters for.
    #[error(
        "seccomp architecture {arch} is not supported by the installed libseccomp; remove it from \
         linux.seccomp.architectures"
    )]
    UnsupportedArch {
        /// The OCI name, e.g. `SCMP_ARCH_LOONGARCH64`.
        arch: String,
    },
    /// A filter flag Box cannot apply.
    #[error(
        "seccomp filter flag {flag} is not supported: {why}; remove it from linux.seccomp.flags"
    )]
    UnsupportedFlag {
        /// The OCI flag name.
        flag: String,
        /// Why it cannot be used.
        why: &'static str,
    },
    /// An argument condition that cannot be expressed.
    #[error(
        "invalid seccomp argument condition for syscall \"{syscall}\": {why}; fix \
         linux.seccomp.syscalls[].args in config.json"
    )]
    InvalidArg {
        /// The system call the rule is for.
        syscall: String,
        /// What is wrong with the condition.
        why: String,
    },
    /// An `errnoRet` value out of range for the action.
    #[error(
        "seccomp errnoRet {value} (used {context}) is out of range: it must be between 0 and 65535"
    )]
    InvalidErrno {
        /// The errno value given.
        value: u32,
        /// Where it was used.
        context: String,
    },
    /// libseccomp refused an operation while the filter was being built or exported.
    #[error("building the seccomp filter failed while {what}: {source}")]
    Libseccomp {
        /// What was being done, e.g. `adding the rule for syscall "read"`.
        what: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Reading the exported BPF program back failed.
    #[error("reading back the exported seccomp BPF program failed while {what}: {source}")]
    Export {
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the filter at load time.
    #[error(
        "loading the seccomp filter into the kernel failed ({call}): {}{}",
        std::io::Error::from_raw_os_error(*errno),
        load_hint(*errno)
    )]
    Load {
        /// Which call failed: `seccomp(SECCOMP_SET_MODE_FILTER)` or `prctl(PR_SET_SECCOMP)`.
        call: &'static str,
        /// The raw errno (kept raw so that building this error does not allocate).
        errno: i32,
    },
}

/// Explains the usual cause of a load failure.
fn load_hint(errno: i32) -> &'static str {
    match errno {
        libc::EACCES => {
            " (the process needs no_new_privs set or CAP_SYS_ADMIN to load a seccomp filter)"
        }
        libc::EINVAL => " (the kernel does not support one of the filter flags or the program)",
        libc::ENOMEM => " (too many or too large seccomp filters are loaded already)",
        _ => "",
    }
}

/// A compiled filter, ready to load: classic BPF instructions and the `seccomp(2)` flags.
#[derive(Debug, Clone)]
pub struct SeccompProgram {
    instructions: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl SeccompProgram {
    /// Loads the filter into the calling thread (in the box's init, right before execve).
    ///
    /// Uses `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`, or `prctl(PR_SET_SECCOMP)` when there
    /// are no flags (older kernels). Does not allocate. The caller must have set no_new_privs or hold
    /// CAP_SYS_ADMIN.
    pub fn load(&self) -> Result<(), SeccompError> {
        let Ok(len) = libc::c_ushort::try_from(self.instructions.len()) else {
            // compile() refuses programs this long; kept for a SeccompProgram built any other way.
            return Err(SeccompError::Load {
                call: "seccomp(SECCOMP_SET_MODE_FILTER)",
                errno: libc::E2BIG,
            });
        };
        let prog = libc::sock_fprog {
            len,
            // The kernel only reads the program; the cast from *const is required by the ABI type.
            filter: self.instructions.as_ptr().cast_mut(),
        };
        if self.flags == 0 {
            // SAFETY: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) reads `prog` and the
            // `len` instructions it points to, both alive for the duration of the call.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                return Err(SeccompError::Load {
                    call: "prctl(PR_SET_SECCOMP)",
                    errno: last_errno(),
                });
            }
        } else {
            // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog) reads `prog` and the `len`
            // instructions it points to, both alive for the duration of the call.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    self.flags,
                    &prog as *const libc::sock_fprog,
                )
            };
            // With SECCOMP_FILTER_FLAG_TSYNC a positive return is the id of a thread that could not
            // be synchronised.
            if rc != 0 {
                let errno = if rc > 0 { libc::ESRCH } else { last_errno() };
                return Err(SeccompError::Load {
                    call: "seccomp(SECCOMP_SET_MODE_FILTER)",
                    errno,
                });
            }
        }
        Ok(())
    }

    /// The program in the kernel's format (8 bytes per instruction, native byte order), so a
    /// caller can cache it: compiling a large profile takes libseccomp milliseconds.
    pub fn bpf_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.instructions.len() * 8);
        for insn in &self.instructions {
            bytes.extend_from_slice(&insn.code.to_ne_bytes());
            bytes.push(insn.jt);
            bytes.push(insn.jf);
            bytes.extend_from_slice(&insn.k.to_ne_bytes());
        }
        bytes
    }

    /// Rebuilds a program from [`SeccompProgram::bpf_bytes`] and [`SeccompProgram::flags`] (e.g.
    /// read back from a cache). The kernel still verifies the program when it is loaded.
    pub fn from_bpf_bytes(bytes: &[u8], flags: libc::c_ulong) -> Result<Self, SeccompError> {
        let known = libc::SECCOMP_FILTER_FLAG_TSYNC
            | libc::SECCOMP_FILTER_FLAG_LOG
            | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        if flags & !known != 0 {
            return Err(SeccompError::UnsupportedFlag {
                flag: format!("{:#x}", flags & !known),
                why: "Box only loads filters with the TSYNC, LOG and SPEC_ALLOW flags",
            });
        }
        Ok(SeccompProgram {
            instructions: decode_bpf(bytes)?,
            flags,
        })
    }

    /// Number of BPF instructions in the program.
    pub fn len(&self) -> usize {
        self.instructions.len()
    }

    /// Whether the program has no instructions (never true for a compiled program).
    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }

    /// The `seccomp(2)` filter flags (`SECCOMP_FILTER_FLAG_*`) the program is loaded with.
    pub fn flags(&self) -> libc::c_ulong {
        self.flags
    }
}

/// The calling thread's errno, without allocating.
fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// Compiles the OCI seccomp section (in the runtime process, before the box's init is cloned).
///
/// Syscall names this libseccomp does not know are skipped, like runc does; rules whose action
/// equals the default action are skipped (libseccomp refuses them).
pub fn compile(spec: &LinuxSeccomp) -> Result<SeccompProgram, SeccompError> {
    let default_action = to_scmp_action(spec.default_action(), spec.default_errno_ret(), || {
        "as defaultAction".to_string()
    })?;
    let flags = filter_flags(spec.flags().as_deref().unwrap_or_default())?;

    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(|source| SeccompError::Libseccomp {
            what: "creating the filter".into(),
            source,
        })?;
    // A binary tree over the syscall numbers instead of a linear chain: each system call in the
    // box is decided in ~log2(n) comparisons, and the kernel's load, which emulates the filter
    // for every syscall number to cache the always-allowed ones, takes a third of the time
    // (0.56 ms instead of 1.57 ms for the default profile here). Needs libseccomp 2.5; older
    // ones keep the linear chain.
    let _ = ctx.set_ctl_optimize(2);
    for arch in spec.architectures().as_deref().unwrap_or_default() {
        let scmp_arch = to_scmp_arch(*arch)?;
        let present =
            ctx.is_arch_present(scmp_arch)
                .map_err(|source| SeccompError::Libseccomp {
                    what: format!("checking architecture {}", arch_name(*arch)),
                    source,
                })?;
        if !present {
            ctx.add_arch(scmp_arch)
                .map_err(|source| SeccompError::Libseccomp {
                    what: format!("adding architecture {}", arch_name(*arch)),
                    source,
                })?;
        }
    }

    for rule in spec.syscalls().as_deref().unwrap_or_default() {
        add_rule(&mut ctx, rule, default_action)?;
    }

    let bpf = export_bpf(&ctx)?;
    Ok(SeccompProgram {
        instructions: bpf,
        flags,
    })
}

/// Adds one OCI syscall rule (all its names) to the filter.
fn add_rule(
    ctx: &mut ScmpFilterContext,
    rule: &LinuxSyscall,
    default_action: ScmpAction,
) -> Result<(), SeccompError> {
    let first_name = rule.names().first().map(String::as_str).unwrap_or("");
    let action = to_scmp_action(rule.action(), rule.errno_ret(), || {
        format!("for syscall \"{first_name}\"")
    })?;
    if action == default_action {
        return Ok(());
    }
    let args = rule.args().as_deref().unwrap_or_default();
    let condition_sets = condition_sets(first_name, args)?;

    for name in rule.names() {
        // Unknown to this libseccomp (or to every architecture): skipped, like runc.
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            continue;
        };
        for conditions in &condition_sets {
            let result = if conditions.is_empty() {
                ctx.add_rule(action, syscall)
            } else {
                ctx.add_rule_conditional(action, syscall, conditions)
            };
            result.map_err(|source| SeccompError::Libseccomp {
                what: format!("adding the rule for syscall \"{name}\""),
                source,
            })?;
        }
    }
    Ok(())
}

/// Turns the OCI argument conditions into one or more sets of libseccomp conditions, one rule per
/// set. libseccomp refuses two comparisons of the same argument in one rule; like runc, a rule
/// with several conditions on one argument becomes one rule per condition (the rule then matches
/// when any of its conditions does).
fn condition_sets(
    syscall: &str,
    args: &[LinuxSeccompArg],
) -> Result<Vec<Vec<ScmpArgCompare>>, SeccompError> {
    let mut per_index = [0usize; MAX_SYSCALL_ARGS];
    let mut conditions = Vec::with_capacity(args.len());
    for arg in args {
        let index = arg.index();
        let Some(count) = per_index.get_mut(index) else {
            return Err(SeccompError::InvalidArg {
                syscall: syscall.to_string(),
                why: format!(
                    "argument index {index} is out of range (a system call has arguments 0 to {})",
                    MAX_SYSCALL_ARGS - 1
                ),
            });
        };
        *count += 1;
        let op = match arg.op() {
            LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
            LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
            LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
            LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
            LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
            LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
            LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(arg.value()),
        };
        // For SCMP_CMP_MASKED_EQ, `value` is the mask and `valueTwo` the value compared with.
        let datum = match arg.op() {
            LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
            _ => arg.value(),
        };
        // `index` < MAX_SYSCALL_ARGS (checked above), so it fits.
        let index = u32::try_from(index).unwrap_or(0);
        conditions.push(ScmpArgCompare::new(index, op, datum));
    }
    if per_index.iter().any(|&n| n > 1) {
        Ok(conditions.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conditions])
    }
}

/// Maps an OCI action (and its errnoRet) to libseccomp's.
fn to_scmp_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    context: impl Fn() -> String,
) -> Result<ScmpAction, SeccompError> {
    let errno = |value: Option<u32>| -> Result<u16, SeccompError> {
        match value {
            None => Ok(u16::try_from(libc::EPERM).unwrap_or(1)),
            Some(v) => u16::try_from(v).map_err(|_| SeccompError::InvalidErrno {
                value: v,
                context: context(),
            }),
        }
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(errno(errno_ret)?)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno(errno_ret)?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::NotifyUnsupported { context: context() })
        }
    })
}

/// Maps the OCI filter flags to `SECCOMP_FILTER_FLAG_*` bits.
fn filter_flags(flags: &[LinuxSeccompFilterFlag]) -> Result<libc::c_ulong, SeccompError> {
    let mut bits: libc::c_ulong = 0;
    for flag in flags {
        bits |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::UnsupportedFlag {
                    flag: "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV".into(),
                    why: "it only applies to SCMP_ACT_NOTIFY, which Box does not support",
                })
            }
        };
    }
    Ok(bits)
}

/// One row of the architecture table: OCI name, OCI value, libseccomp value.
struct ArchEntry {
    name: &'static str,
    oci: Arch,
    scmp: ScmpArch,
}

/// Every architecture Box accepts in `linux.seccomp.architectures`.
const ARCHES: &[ArchEntry] = &[
    ArchEntry {
        name: "SCMP_ARCH_NATIVE",
        oci: Arch::ScmpArchNative,
        scmp: ScmpArch::Native,
    },
    ArchEntry {
        name: "SCMP_ARCH_X86",
        oci: Arch::ScmpArchX86,
        scmp: ScmpArch::X86,
    },
    ArchEntry {
        name: "SCMP_ARCH_X86_64",
        oci: Arch::ScmpArchX86_64,
        scmp: ScmpArch::X8664,
    },
    ArchEntry {
        name: "SCMP_ARCH_X32",
        oci: Arch::ScmpArchX32,
        scmp: ScmpArch::X32,
    },
    ArchEntry {
        name: "SCMP_ARCH_ARM",
        oci: Arch::ScmpArchArm,
        scmp: ScmpArch::Arm,
    },
    ArchEntry {
        name: "SCMP_ARCH_AARCH64",
        oci: Arch::ScmpArchAarch64,
        scmp: ScmpArch::Aarch64,
    },
    ArchEntry {
        name: "SCMP_ARCH_MIPS",
        oci: Arch::ScmpArchMips,
        scmp: ScmpArch::Mips,
    },
    ArchEntry {
        name: "SCMP_ARCH_MIPS64",
        oci: Arch::ScmpArchMips64,
        scmp: ScmpArch::Mips64,
    },
    ArchEntry {
        name: "SCMP_ARCH_MIPS64N32",
        oci: Arch::ScmpArchMips64n32,
        scmp: ScmpArch::Mips64N32,
    },
    ArchEntry {
        name: "SCMP_ARCH_MIPSEL",
        oci: Arch::ScmpArchMipsel,
        scmp: ScmpArch::Mipsel,
    },
    ArchEntry {
        name: "SCMP_ARCH_MIPSEL64",
        oci: Arch::ScmpArchMipsel64,
        scmp: ScmpArch::Mipsel64,
    },
    ArchEntry {
        name: "SCMP_ARCH_MIPSEL64N32",
        oci: Arch::ScmpArchMipsel64n32,
        scmp: ScmpArch::Mipsel64N32,
    },
    ArchEntry {
        name: "SCMP_ARCH_PPC",
        oci: Arch::ScmpArchPpc,
        scmp: ScmpArch::Ppc,
    },
    ArchEntry {
        name: "SCMP_ARCH_PPC64",
        oci: Arch::ScmpArchPpc64,
        scmp: ScmpArch::Ppc64,
    },
    ArchEntry {
        name: "SCMP_ARCH_PPC64LE",
        oci: Arch::ScmpArchPpc64le,
        scmp: ScmpArch::Ppc64Le,
    },
    ArchEntry {
        name: "SCMP_ARCH_S390",
        oci: Arch::ScmpArchS390,
        scmp: ScmpArch::S390,
    },
    ArchEntry {
        name: "SCMP_ARCH_S390X",
        oci: Arch::ScmpArchS390x,
        scmp: ScmpArch::S390X,
    },
    ArchEntry {
        name: "SCMP_ARCH_PARISC",
        oci: Arch::ScmpArchParisc,
        scmp: ScmpArch::Parisc,
    },
    ArchEntry {
        name: "SCMP_ARCH_PARISC64",
        oci: Arch::ScmpArchParisc64,
        scmp: ScmpArch::Parisc64,
    },
    ArchEntry {
        name: "SCMP_ARCH_RISCV64",
        oci: Arch::ScmpArchRiscv64,
        scmp: ScmpArch::Riscv64,
    },
];

/// Architectures named in OCI but unknown to libseccomp 2.5 (the version Box builds against).
const UNSUPPORTED_ARCHES: &[(Arch, &str)] = &[
    (Arch::ScmpArchLoongarch64, "SCMP_ARCH_LOONGARCH64"),
    (Arch::ScmpArchM68k, "SCMP_ARCH_M68K"),
    (Arch::ScmpArchSh, "SCMP_ARCH_SH"),
    (Arch::ScmpArchSheb, "SCMP_ARCH_SHEB"),
];

/// The OCI name of an architecture.
fn arch_name(arch: Arch) -> &'static str {
    ARCHES
        .iter()
        .find(|e| e.oci == arch)
        .map(|e| e.name)
        .or_else(|| {
            UNSUPPORTED_ARCHES
                .iter()
                .find(|(a, _)| *a == arch)
                .map(|(_, n)| *n)
        })
        .unwrap_or("SCMP_ARCH_UNKNOWN")
}

/// Maps an OCI architecture to libseccomp's, or explains why it cannot.
fn to_scmp_arch(arch: Arch) -> Result<ScmpArch, SeccompError> {
    ARCHES
        .iter()
        .find(|e| e.oci == arch)
        .map(|e| e.scmp)
        .ok_or_else(|| SeccompError::UnsupportedArch {
            arch: arch_name(arch).to_string(),
        })
}

/// Exports the filter as BPF through a memfd (libseccomp 2.5 has no in-memory export).
fn export_bpf(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"box-seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(SeccompError::Export {
            what: "creating a memfd",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    ctx.export_bpf(&fd)
        .map_err(|source| SeccompError::Libseccomp {
            what: "exporting the BPF program".into(),
            source,
        })?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|source| SeccompError::Export {
            what: "reading the memfd",
            source,
        })?;
    decode_bpf(&bytes)
}

/// Splits exported bytes into `sock_filter` instructions (native byte order, 8 bytes each).
fn decode_bpf(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % INSN != 0 {
        return Err(SeccompError::Export {
            what: "checking the program size",
            source: std::io::Error::other(format!(
                "{} bytes is not a whole number of {INSN}-byte BPF instructions",
                bytes.len()
            )),
        });
    }
    if bytes.len() / INSN > usize::from(u16::MAX) {
        return Err(SeccompError::Export {
            what: "checking the program size",
            source: std::io::Error::other(format!(
                "{} instructions is more than a seccomp program may hold; shorten the profile",
                bytes.len() / INSN
            )),
        });
    }
    Ok(bytes
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// The seccomp actions Box supports (for `box-runc features`).
pub fn supported_actions() -> &'static [&'static str] {
    &[
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_TRAP",
    ]
}

/// The argument comparison operators Box supports (for `box-runc features`).
pub fn supported_operators() -> &'static [&'static str] {
    &[
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_LE",
        "SCMP_CMP_LT",
        "SCMP_CMP_MASKED_EQ",
        "SCMP_CMP_NE",
    ]
}

/// The architectures Box accepts in `linux.seccomp.architectures` (for `box-runc features`).
pub fn supported_archs() -> &'static [&'static str] {
    &[
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_MIPSEL64N32",
        "SCMP_ARCH_NATIVE",
        "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_S390",
        "SCMP_ARCH_S390X",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
    ]
}

/// The filter flags Box supports (for `box-runc features`).
pub fn supported_flags() -> &'static [&'static str] {
    &[
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_TSYNC",
    ]
}

/// Runs code in a forked child for tests that change process-wide security state.
///
/// Shared by the seccomp, capabilities and rlimits tests. The test harness is multi-threaded, so
/// the child should stick to system calls (glibc keeps malloc usable after fork, but other locks,
/// such as stdout's, may be held by a thread that no longer exists).
#[cfg(test)]
pub(crate) mod forked {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    /// Forks, runs `child` in the child and exits with its return value; returns how it ended.
    pub(crate) fn run(child: impl FnOnce() -> i32) -> WaitStatus {
        // SAFETY: the child only runs `child` (system calls, by the contract above) and then
        // _exit, never returning into the test harness.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let code =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
                // SAFETY: _exit ends the child immediately without running the parent's atexit
                // handlers or flushing its buffers.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
                Ok(status) => status,
                Err(e) => panic!("waitpid failed: {e}"),
            },
            Err(e) => panic!("fork failed: {e}"),
        }
    }

    /// The calling thread's errno.
    pub(crate) fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Sets no_new_privs so that an unprivileged process may load a seccomp filter.
    pub(crate) fn set_no_new_privs() -> bool {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) takes integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use oci_spec::runtime::LinuxSeccomp;

    use super::forked::{errno, run, set_no_new_privs};
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        match serde_json::from_str(json) {
            Ok(p) => p,
            Err(e) => panic!("bad test profile: {e}\n{json}"),
        }
    }

    fn compiled(json: &str) -> SeccompProgram {
        match compile(&profile(json)) {
            Ok(p) => p,
            Err(e) => panic!("compile failed: {e}"),
        }
    }

    /// Loads `program` in a forked child with no_new_privs, then runs `after` there.
    fn load_then(program: &SeccompProgram, after: impl FnOnce() -> i32) -> WaitStatus {
        run(|| {
            if !set_no_new_privs() {
                return 90;
            }
            if program.load().is_err() {
                return 91;
            }
            after()
        })
    }

    fn exited(status: WaitStatus, code: i32) {
        assert!(
            matches!(status, WaitStatus::Exited(_, c) if c == code),
            "expected exit code {code}, got {status:?}"
        );
    }

    #[test]
    fn compile_allow_default_with_one_errno_rule() {
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        );
        assert!(!p.is_empty());
        assert_eq!(p.flags(), 0);
    }

    #[test]
    fn compile_kill_default_with_allowlist_and_flags() {
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS",
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_AARCH64"],
                "flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert_eq!(
            p.flags(),
            libc::SECCOMP_FILTER_FLAG_TSYNC | libc::SECCOMP_FILTER_FLAG_LOG
        );
        let native_only = compiled(
            r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS",
                "syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert!(p.len() > native_only.len(), "extra architectures add code");
    }

    #[test]
    fn compile_skips_unknown_syscall_names() {
        let with_unknown = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO",
                "syscalls":[{"names":["read","no_such_syscall_box"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let without = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO",
                "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert_eq!(
            format!("{:?}", with_unknown.instructions),
            format!("{:?}", without.instructions)
        );
    }

    #[test]
    fn compile_skips_rules_with_the_default_action() {
        // libseccomp refuses a rule whose action is the default action; it must be skipped.
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
                "syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO"},
                            {"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert!(!p.is_empty());
    }

    #[test]
    fn compile_accepts_conditions_incl_two_on_one_argument() {
        compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[
                    {"index":0,"value":8,"op":"SCMP_CMP_NE"},
                    {"index":0,"value":0,"op":"SCMP_CMP_NE"}]},
                {"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[
                    {"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                {"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[
                    {"index":0,"value":40,"op":"SCMP_CMP_EQ"},
                    {"index":1,"value":3,"op":"SCMP_CMP_GE"},
                    {"index":2,"value":9,"op":"SCMP_CMP_LT"}]}]}"#,
        );
    }

    #[test]
    fn compile_rejects_notify() {
        let err = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        ))
        .err();
        assert!(
            matches!(&err, Some(SeccompError::NotifyUnsupported { context }) if context.contains("mkdir")),
            "{err:?}"
        );
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("not supported"), "{msg}");
        assert!(compile(&profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#)).is_err());
    }

    #[test]
    fn compile_rejects_bad_errno_and_arg_index() {
        let err = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#,
        ));
        assert!(matches!(
            err,
            Err(SeccompError::InvalidErrno { value: 70000, .. })
        ));
        let err = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],
                "action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
        ));
        assert!(
            matches!(err, Err(SeccompError::InvalidArg { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn compile_rejects_wait_killable_recv_and_unsupported_arch() {
        let err = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}"#,
        ));
        assert!(
            matches!(err, Err(SeccompError::UnsupportedFlag { .. })),
            "{err:?}"
        );
        let err = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_M68K"]}"#,
        ));
        assert!(
            matches!(&err, Err(SeccompError::UnsupportedArch { arch }) if arch == "SCMP_ARCH_M68K"),
            "{err:?}"
        );
    }

    #[test]
    fn supported_lists_match_the_tables() {
        let mut from_table: Vec<&str> = ARCHES.iter().map(|e| e.name).collect();
        from_table.sort_unstable();
        assert_eq!(from_table, supported_archs());
        for action in supported_actions() {
            let json = format!(r#"{{"defaultAction":"{action}"}}"#);
            assert!(compile(&profile(&json)).is_ok(), "{action}");
        }
        for flag in supported_flags() {
            let json = format!(r#"{{"defaultAction":"SCMP_ACT_ALLOW","flags":["{flag}"]}}"#);
            assert!(compile(&profile(&json)).is_ok(), "{flag}");
        }
        for op in supported_operators() {
            let json = format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["read"],
                    "action":"SCMP_ACT_ERRNO","args":[{{"index":0,"value":1,"op":"{op}"}}]}}]}}"#
            );
            assert!(compile(&profile(&json)).is_ok(), "{op}");
        }
    }

    #[test]
    fn bpf_bytes_round_trip() {
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        );
        let bytes = p.bpf_bytes();
        assert_eq!(bytes.len(), p.len() * 8);
        let back = match SeccompProgram::from_bpf_bytes(&bytes, p.flags()) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(back.bpf_bytes(), bytes);
        assert_eq!(back.flags(), p.flags());
        assert!(SeccompProgram::from_bpf_bytes(&bytes[1..], 0).is_err());
        assert!(SeccompProgram::from_bpf_bytes(&bytes, 1 << 20).is_err());
        let status = load_then(&back, || {
            let mut buf = [0u8; 256];
            // SAFETY: getcwd writes at most buf.len() bytes into buf.
            let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
            if rc == -1 && errno() == libc::EACCES {
                0
            } else {
                1
            }
        });
        exited(status, 0);
    }

    #[test]
    fn load_errno_rule_makes_getcwd_fail_with_eacces() {
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        );
        let status = load_then(&p, || {
            let mut buf = [0u8; 256];
            // SAFETY: getcwd writes at most buf.len() bytes into buf.
            let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
            match (rc, errno()) {
                (-1, libc::EACCES) => 0,
                (-1, _) => 2,
                _ => 1,
            }
        });
        exited(status, 0);
    }

    #[test]
    fn load_with_tsync_flag_uses_seccomp_syscall() {
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC"],
                "syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        );
        let status = load_then(&p, || {
            let mut buf = [0u8; 256];
            // SAFETY: getcwd writes at most buf.len() bytes into buf.
            let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
            if rc == -1 && errno() == libc::EACCES {
                0
            } else {
                1
            }
        });
        exited(status, 0);
    }

    /// close(fd) on fds that are not open: the kernel says EBADF, the filter says something else.
    fn close_errno(fd: i32) -> i32 {
        // SAFETY: closing a descriptor number that is not open has no effect but EBADF.
        let rc = unsafe { libc::syscall(libc::SYS_close, fd) };
        if rc == 0 {
            0
        } else {
            errno()
        }
    }

    #[test]
    fn load_argument_condition_matches_only_its_value() {
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["close"],
                "action":"SCMP_ACT_ERRNO","errnoRet":31,
                "args":[{"index":0,"value":1000,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let status = load_then(&p, || match (close_errno(1000), close_errno(1001)) {
            (libc::EMLINK, libc::EBADF) => 0,
            (libc::EMLINK, _) => 2,
            _ => 1,
        });
        exited(status, 0);
    }

    #[test]
    fn load_two_conditions_on_one_argument_match_either_value() {
        // Split as runc does: one rule per condition, so either value matches.
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["close"],
                "action":"SCMP_ACT_ERRNO","errnoRet":31,
                "args":[{"index":0,"value":1000,"op":"SCMP_CMP_EQ"},
                        {"index":0,"value":1002,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let status = load_then(&p, || {
            match (close_errno(1000), close_errno(1001), close_errno(1002)) {
                (libc::EMLINK, libc::EBADF, libc::EMLINK) => 0,
                _ => 1,
            }
        });
        exited(status, 0);
    }

    #[test]
    fn load_masked_eq_condition_tests_the_masked_bits() {
        // ERRNO when (arg0 & 0xff00) == 0x0300.
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["close"],
                "action":"SCMP_ACT_ERRNO","errnoRet":31,
                "args":[{"index":0,"value":65280,"valueTwo":768,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        );
        let status = load_then(&p, || match (close_errno(0x3ff), close_errno(0x4ff)) {
            (libc::EMLINK, libc::EBADF) => 0,
            _ => 1,
        });
        exited(status, 0);
    }

    #[test]
    fn load_kill_process_rule_kills_with_sigsys() {
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        );
        let status = load_then(&p, || {
            // SAFETY: getppid has no arguments and no side effects.
            unsafe { libc::syscall(libc::SYS_getppid) };
            0
        });
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "expected death by SIGSYS, got {status:?}"
        );
    }

    #[test]
    fn load_trap_log_and_trace_actions_behave_as_the_kernel_defines_them() {
        // trap: the process gets SIGSYS (no handler here, so it dies of it).
        let trap = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_TRAP"}]}"#,
        );
        let status = load_then(&trap, || {
            // SAFETY: getppid has no arguments and no side effects.
            unsafe { libc::syscall(libc::SYS_getppid) };
            0
        });
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "trap: expected SIGSYS, got {status:?}"
        );
        // log: the call is allowed (and logged).
        let log = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_LOG"}]}"#,
        );
        let status = load_then(&log, || {
            // SAFETY: getppid has no arguments and no side effects.
            let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
            i32::from(ppid <= 0)
        });
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "log: got {status:?}"
        );
        // trace with no tracer attached: the call fails with ENOSYS.
        let trace = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_TRACE"}]}"#,
        );
        let status = load_then(&trace, || {
            // SAFETY: getppid has no arguments and no side effects.
            let rc = unsafe { libc::syscall(libc::SYS_getppid) };
            i32::from(!(rc == -1 && errno() == libc::ENOSYS))
        });
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "trace: got {status:?}"
        );
    }

    #[test]
    fn load_kill_default_allows_only_the_allowlist() {
        let json = r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS",
            "syscalls":[{"names":["getpid","exit","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#;
        let p = compiled(json);
        let allowed = load_then(&p, || {
            // SAFETY: getpid has no arguments and no side effects.
            let pid = unsafe { libc::syscall(libc::SYS_getpid) };
            if pid > 0 {
                0
            } else {
                1
            }
        });
        exited(allowed, 0);
        let denied = load_then(&p, || {
            // SAFETY: getuid has no arguments and no side effects.
            unsafe { libc::syscall(libc::SYS_getuid) };
            0
        });
        assert!(
            matches!(denied, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "expected death by SIGSYS, got {denied:?}"
        );
    }

    #[test]
    fn load_without_no_new_privs_or_cap_sys_admin_fails_clearly() {
        let p = compiled(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
        // As root, the child gives up CAP_SYS_ADMIN first (with it the load succeeds).
        let status = run(|| {
            if caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_ADMIN,
            )
            .is_err()
            {
                return 2;
            }
            match p.load() {
                Err(SeccompError::Load {
                    errno: libc::EACCES,
                    ..
                }) => 0,
                _ => 1,
            }
        });
        exited(status, 0);
        let msg = SeccompError::Load {
            call: "seccomp(SECCOMP_SET_MODE_FILTER)",
            errno: libc::EACCES,
        }
        .to_string();
        assert!(msg.contains("no_new_privs"), "{msg}");
    }
}
