//! Box's security defaults as data, in one place: the default seccomp profile, capabilities and
//! masked/read-only paths.
//!
//! # The default seccomp profile (`default_seccomp.json`)
//!
//! The file is close to OCI `linux.seccomp` JSON, with three differences so that one file serves
//! every box:
//!
//! ```text
//! {
//!   "comment": "…",                          free text, ignored (allowed on every object)
//!   "defaultAction": "SCMP_ACT_ERRNO",        as in OCI
//!   "defaultErrnoRet": 1,                     as in OCI
//!   "architectures": {                        keyed by the host architecture as Rust names it
//!     "x86_64": ["SCMP_ARCH_X86_64", …]        (std::env::consts::ARCH); other hosts: native only
//!   },
//!   "rules": [{                               OCI "syscalls" entries, plus:
//!     "names": […], "action": "…", "errnoRet": n, "args": [ OCI conditions ],
//!     "ifAnyCap": ["CAP_SYS_ADMIN"],          rule kept only if the box has at least one of these
//!     "unlessAnyCap": ["CAP_SYS_ADMIN"]       rule kept only if the box has none of these
//!   }]
//! }
//! ```
//!
//! Capabilities are those of the box's bounding set, with or without the `CAP_` prefix. Unknown
//! fields are rejected, so a typo in a key fails the unit test rather than silently widening or
//! narrowing the policy.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSyscall};
use serde::Deserialize;

/// The embedded default seccomp policy (schema in this module's documentation).
const DEFAULT_SECCOMP_JSON: &str = include_str!("default_seccomp.json");

/// Docker's 14 default capabilities, the bounding (and effective, permitted) set of a box unless
/// configured otherwise.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths inside the box hidden from it (a file gets /dev/null bind-mounted over it, a directory
/// an empty read-only tmpfs): they leak host information or expose kernel interfaces.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths inside the box remounted read-only: kernel tunables and triggers a box must not change.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The policy file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyFile {
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: BTreeMap<String, Vec<Arch>>,
    rules: Vec<PolicyRule>,
}

/// One rule of the policy file: an OCI syscall entry plus capability conditions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyRule {
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    if_any_cap: Vec<String>,
    #[serde(default)]
    unless_any_cap: Vec<String>,
}

impl PolicyRule {
    /// Whether the rule applies to a box with these (normalised) capabilities.
    fn applies(&self, caps: &[String]) -> bool {
        let has = |wanted: &String| caps.iter().any(|c| *c == normalise_cap(wanted));
        (self.if_any_cap.is_empty() || self.if_any_cap.iter().any(has))
            && !self.unless_any_cap.iter().any(has)
    }

    /// The OCI syscall entry.
    fn to_oci(&self) -> LinuxSyscall {
        let mut syscall = LinuxSyscall::default();
        syscall.set_names(self.names.clone());
        syscall.set_action(self.action);
        syscall.set_errno_ret(self.errno_ret);
        if !self.args.is_empty() {
            syscall.set_args(Some(self.args.clone()));
        }
        syscall
    }
}

/// `sys_admin`, `SYS_ADMIN` and `CAP_SYS_ADMIN` all become `CAP_SYS_ADMIN`.
fn normalise_cap(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Parses the embedded policy.
fn parse_policy(json: &str) -> Result<PolicyFile, serde_json::Error> {
    serde_json::from_str(json)
}

/// The embedded policy, parsed once per process.
fn embedded_policy() -> &'static PolicyFile {
    static POLICY: OnceLock<PolicyFile> = OnceLock::new();
    POLICY.get_or_init(|| {
        // The file is compiled in and a unit test parses it, so this cannot fail at run time.
        parse_policy(DEFAULT_SECCOMP_JSON).expect("embedded policy/default_seccomp.json is valid")
    })
}

/// The default profile for a box with these bounding caps (names with or without `CAP_`).
pub fn default_seccomp(capabilities: &[String]) -> LinuxSeccomp {
    profile_for(embedded_policy(), capabilities, std::env::consts::ARCH)
}

/// Builds the OCI profile from a policy for the given capabilities and host architecture.
fn profile_for(policy: &PolicyFile, capabilities: &[String], host_arch: &str) -> LinuxSeccomp {
    let caps: Vec<String> = capabilities.iter().map(|c| normalise_cap(c)).collect();
    let syscalls: Vec<LinuxSyscall> = policy
        .rules
        .iter()
        .filter(|rule| rule.applies(&caps))
        .map(PolicyRule::to_oci)
        .collect();
    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(policy.default_action);
    seccomp.set_default_errno_ret(policy.default_errno_ret);
    if let Some(arches) = policy.architectures.get(host_arch) {
        seccomp.set_architectures(Some(arches.clone()));
    }
    seccomp.set_syscalls(Some(syscalls));
    seccomp
}

#[cfg(test)]
mod tests {
    use nix::sys::wait::WaitStatus;

    use super::*;
    use crate::seccomp::{self, forked};

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn rule_names(profile: &LinuxSeccomp) -> Vec<String> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn compiled(profile: &LinuxSeccomp) -> seccomp::SeccompProgram {
        match seccomp::compile(profile) {
            Ok(p) => p,
            Err(e) => panic!("default profile does not compile: {e}"),
        }
    }

    #[test]
    fn default_policy_parses_and_compiles() {
        if let Err(e) = parse_policy(DEFAULT_SECCOMP_JSON) {
            panic!("default_seccomp.json: {e}");
        }
        let profile = default_seccomp(&caps(DEFAULT_CAPABILITIES));
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(1));
        assert!(compiled(&profile).len() > 100);
        let all: Vec<String> = crate::capabilities::all_names();
        compiled(&default_seccomp(&all));
        compiled(&default_seccomp(&[]));
    }

    #[test]
    fn policy_rejects_unknown_keys() {
        let json = r#"{"defaultAction":"SCMP_ACT_ERRNO","rules":[
            {"names":["mount"],"action":"SCMP_ACT_ALLOW","ifCaps":["CAP_SYS_ADMIN"]}]}"#;
        assert!(parse_policy(json).is_err());
    }

    #[test]
    fn admin_syscalls_only_with_cap_sys_admin() {
        let plain = rule_names(&default_seccomp(&caps(DEFAULT_CAPABILITIES)));
        let mut with_admin = caps(DEFAULT_CAPABILITIES);
        with_admin.push("sys_admin".into());
        let admin = rule_names(&default_seccomp(&with_admin));
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "bpf",
            "perf_event_open",
        ] {
            assert!(
                !plain.iter().any(|n| n == name),
                "{name} allowed without CAP_SYS_ADMIN"
            );
            assert!(
                admin.iter().any(|n| n == name),
                "{name} missing with CAP_SYS_ADMIN"
            );
        }
        for name in [
            "read",
            "openat",
            "execve",
            "exit_group",
            "clone",
            "futex",
            "rt_sigreturn",
        ] {
            assert!(
                plain.iter().any(|n| n == name),
                "{name} not allowed by default"
            );
        }
        assert!(!plain.iter().any(|n| n == "ptrace"));
        assert!(
            plain.iter().any(|n| n == "chroot"),
            "DEFAULT_CAPABILITIES has CAP_SYS_CHROOT"
        );
    }

    #[test]
    fn clone_without_cap_sys_admin_carries_the_namespace_mask() {
        let profile = default_seccomp(&caps(DEFAULT_CAPABILITIES));
        let clone_rules: Vec<&LinuxSyscall> = profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == "clone"))
            .collect();
        assert_eq!(clone_rules.len(), 1);
        let args = clone_rules[0].args().clone().unwrap_or_default();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].value(), 0x7e02_0000);
        assert_eq!(args[0].value_two(), Some(0));
    }

    #[test]
    fn host_architecture_selects_compat_arches() {
        let policy = embedded_policy();
        let x86 = profile_for(policy, &[], "x86_64");
        assert!(x86
            .architectures()
            .iter()
            .flatten()
            .any(|a| *a == Arch::ScmpArchX86));
        let other = profile_for(policy, &[], "riscv64");
        assert!(other.architectures().is_none());
    }

    /// Loads the default profile for `box_caps` in a child and probes what it allows.
    fn probe_default_policy(box_caps: &[String]) -> WaitStatus {
        let program = compiled(&default_seccomp(box_caps));
        forked::run(|| {
            if !forked::set_no_new_privs() {
                return 90;
            }
            if program.load().is_err() {
                return 91;
            }
            // Ordinary calls work.
            // SAFETY: getpid has no arguments and no side effects.
            if unsafe { libc::syscall(libc::SYS_getpid) } <= 0 {
                return 10;
            }
            // Querying the persona is allowed; setting an unlisted one is not.
            // SAFETY: personality(0xffffffff) only reads the persona.
            if unsafe { libc::personality(0xffff_ffff) } == -1 {
                return 11;
            }
            // SAFETY: ADDR_NO_RANDOMIZE is refused by the filter before reaching the kernel.
            let rc = unsafe { libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong) };
            if rc != -1 || forked::errno() != libc::EPERM {
                return 12;
            }
            // clone3 answers ENOSYS so that libc falls back to clone.
            // SAFETY: clone3 with a null argument never creates a process.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
            let clone3 = if rc == -1 { forked::errno() } else { 0 };
            // clone with CLONE_NEWUSER: refused by the filter (EPERM) without CAP_SYS_ADMIN.
            // SAFETY: were it to succeed, the child gets its own copy of the address space and
            // exits at once.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            if rc == 0 {
                // SAFETY: the new child leaves immediately.
                unsafe { libc::_exit(0) };
            }
            let clone_ns = if rc == -1 { forked::errno() } else { 0 };
            // unshare(0) is a no-op the kernel allows anyone: only the filter can refuse it.
            // SAFETY: unshare(0) changes nothing.
            let unshare = if unsafe { libc::unshare(0) } == -1 {
                forked::errno()
            } else {
                0
            };
            match (clone3, clone_ns, unshare) {
                (libc::ENOSYS, libc::EPERM, libc::EPERM) => 20, // no CAP_SYS_ADMIN
                (c3, _, 0) if c3 != libc::ENOSYS && c3 != libc::EPERM => 21, // CAP_SYS_ADMIN
                _ => 30,
            }
        })
    }

    #[test]
    fn default_policy_loaded_denies_namespaces_without_cap_sys_admin() {
        let status = probe_default_policy(&caps(DEFAULT_CAPABILITIES));
        assert!(
            matches!(status, WaitStatus::Exited(_, 20)),
            "expected code 20 (clone3 ENOSYS, clone(CLONE_NEWUSER) EPERM, unshare EPERM), got {status:?}"
        );
    }

    #[test]
    fn default_policy_loaded_allows_namespaces_with_cap_sys_admin() {
        let mut with_admin = caps(DEFAULT_CAPABILITIES);
        with_admin.push("CAP_SYS_ADMIN".into());
        let status = probe_default_policy(&with_admin);
        assert!(
            matches!(status, WaitStatus::Exited(_, 21)),
            "expected code 21 (clone3 reaches the kernel, unshare(0) succeeds), got {status:?}"
        );
    }

    #[test]
    fn masked_and_readonly_paths_are_absolute_and_distinct() {
        for p in MASKED_PATHS.iter().chain(READONLY_PATHS) {
            assert!(p.starts_with("/proc/") || p.starts_with("/sys/"), "{p}");
        }
        assert!(!MASKED_PATHS.iter().any(|p| READONLY_PATHS.contains(p)));
        assert_eq!(DEFAULT_CAPABILITIES.len(), 14);
    }
}
