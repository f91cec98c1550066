//! cgroup v2 device control: the OCI device rules compiled by hand into a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program, loaded and attached with `bpf(2)`.
//!
//! Rules are first reduced the way the v1 devices controller applies them in order (an `a` rule
//! resets the default and clears the exceptions; a rule that agrees with the default removes
//! matching exceptions; one that disagrees adds one), so v1 and v2 boxes behave alike. The program
//! checks the exceptions and returns the opposite of the default on a match, the default otherwise.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;

/// `BPF_DEVCG_ACC_MKNOD` / `READ` / `WRITE`.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// `BPF_DEVCG_DEV_BLOCK` / `CHAR`.
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;

// eBPF opcodes used by the generator.
/// `BPF_LDX | BPF_MEM | BPF_W`: `dst = *(u32 *)(src + off)`.
pub const LDX_MEM_W: u8 = 0x61;
/// `BPF_ALU | BPF_AND | BPF_K`: `dst32 &= imm`.
pub const AND32_IMM: u8 = 0x54;
/// `BPF_ALU | BPF_RSH | BPF_K`: `dst32 >>= imm`.
pub const RSH32_IMM: u8 = 0x74;
/// `BPF_ALU | BPF_MOV | BPF_X`: `dst32 = src32`.
pub const MOV32_REG: u8 = 0xbc;
/// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
pub const MOV64_IMM: u8 = 0xb7;
/// `BPF_JMP | BPF_JNE | BPF_K`: `if dst != imm goto +off`.
pub const JNE_IMM: u8 = 0x55;
/// `BPF_JMP | BPF_EXIT`.
pub const EXIT: u8 = 0x95;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register.
    pub dst: u8,
    /// Source register.
    pub src: u8,
    /// Jump or memory offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }
    /// The 8-byte little-endian encoding the kernel reads (x86_64, aarch64).
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.dst & 0x0f) | ((self.src & 0x0f) << 4);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// A reduced device rule: `None` major/minor is a wildcard; `dev_type` is `DEV_BLOCK`/`DEV_CHAR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    /// Device type (block or char).
    pub dev_type: u32,
    /// Major, or any.
    pub major: Option<u32>,
    /// Minor, or any.
    pub minor: Option<u32>,
    /// Access bits (`ACC_*`).
    pub access: u32,
}

/// The effective device policy: a default and the exceptions to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    /// Whether devices not matched by an exception are allowed.
    pub default_allow: bool,
    /// Devices for which the answer is `!default_allow`.
    pub exceptions: Vec<Exception>,
}

fn parse_access(access: Option<&String>) -> Result<u32, CgroupError> {
    let Some(a) = access else {
        return Ok(ACC_ALL);
    };
    let mut bits = 0;
    for c in a.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(CgroupError::InvalidResource {
                    what: "device rule".into(),
                    why: format!("access {a:?} may only contain r, w and m"),
                })
            }
        };
    }
    Ok(bits)
}

fn dev_number(n: Option<i64>, what: &str) -> Result<Option<u32>, CgroupError> {
    match n {
        None | Some(-1) => Ok(None),
        Some(v) if (0..=i64::from(i32::MAX)).contains(&v) => Ok(u32::try_from(v).ok()),
        Some(v) => Err(CgroupError::InvalidResource {
            what: "device rule".into(),
            why: format!("{what} number {v} is out of range"),
        }),
    }
}

/// Applies the OCI rules in order, like the v1 devices controller, starting from allow-all (what
/// a new cgroup inherits from the root).
pub fn reduce_rules(rules: &[LinuxDeviceCgroup]) -> Result<DevicePolicy, CgroupError> {
    let mut p = DevicePolicy {
        default_allow: true,
        exceptions: Vec::new(),
    };
    for rule in rules {
        let access = parse_access(rule.access().as_ref())?;
        let dev_type = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => {
                p.default_allow = rule.allow();
                p.exceptions.clear();
                continue;
            }
            LinuxDeviceType::B => DEV_BLOCK,
            LinuxDeviceType::C | LinuxDeviceType::U => DEV_CHAR,
            // FIFOs are not device nodes: the device controller never sees them.
            LinuxDeviceType::P => continue,
        };
        let major = dev_number(rule.major(), "major")?;
        let minor = dev_number(rule.minor(), "minor")?;
        let same = |e: &Exception| e.dev_type == dev_type && e.major == major && e.minor == minor;
        if rule.allow() == p.default_allow {
            for e in p.exceptions.iter_mut().filter(|e| same(e)) {
                e.access &= !access;
            }
            p.exceptions.retain(|e| e.access != 0);
        } else if let Some(e) = p.exceptions.iter_mut().find(|e| same(e)) {
            e.access |= access;
        } else if access != 0 {
            p.exceptions.push(Exception {
                dev_type,
                major,
                minor,
                access,
            });
        }
    }
    Ok(p)
}

fn imm(v: u32) -> i32 {
    // Device numbers and masks were range-checked to fit; never reached with larger values.
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Generates the program for `policy`.
///
/// Registers after the prologue: r2 = device type, r3 = requested access, r4 = major, r5 = minor
/// (from `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`).
pub fn generate(policy: &DevicePolicy) -> Vec<Insn> {
    let mut prog = vec![
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(AND32_IMM, 2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, 3, 1, 0, 0),
        Insn::new(RSH32_IMM, 3, 0, 0, 16),
        Insn::new(LDX_MEM_W, 4, 1, 4, 0),
        Insn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];
    let on_match = i32::from(!policy.default_allow);
    for e in &policy.exceptions {
        // Each check jumps past the rest of this block when it does not match.
        let mut checks: Vec<Vec<Insn>> = vec![vec![Insn::new(JNE_IMM, 2, 0, 0, imm(e.dev_type))]];
        if e.access != ACC_ALL {
            // Match only when every requested bit is in the rule: (req & ~rule) == 0.
            checks.push(vec![
                Insn::new(MOV32_REG, 1, 3, 0, 0),
                Insn::new(AND32_IMM, 1, 0, 0, imm(!e.access & ACC_ALL)),
                Insn::new(JNE_IMM, 1, 0, 0, 0),
            ]);
        }
        if let Some(major) = e.major {
            checks.push(vec![Insn::new(JNE_IMM, 4, 0, 0, imm(major))]);
        }
        if let Some(minor) = e.minor {
            checks.push(vec![Insn::new(JNE_IMM, 5, 0, 0, imm(minor))]);
        }
        let mut block: Vec<Insn> = checks.into_iter().flatten().collect();
        block.push(Insn::new(MOV64_IMM, 0, 0, 0, on_match));
        block.push(Insn::new(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if insn.code == JNE_IMM {
                // Blocks are a handful of instructions: the offset always fits.
                insn.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
            }
        }
        prog.extend(block);
    }
    prog.push(Insn::new(
        MOV64_IMM,
        0,
        0,
        0,
        i32::from(policy.default_allow),
    ));
    prog.push(Insn::new(EXIT, 0, 0, 0, 0));
    prog
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, padded with zeroes.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    pad: [u64; 8],
}

/// The `BPF_PROG_ATTACH`/`DETACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: [u32; 11],
}

/// The `BPF_PROG_QUERY` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: [u32; 11],
}

/// The `BPF_PROG_GET_FD_BY_ID` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    pad: [u32; 13],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a live, initialised, `repr(C)` bpf_attr prefix of exactly
    // `size_of::<T>()` bytes (zero padded), which is what bpf(2) reads and may write back.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned_fd(r: i64) -> Result<OwnedFd, std::io::Error> {
    let fd = i32::try_from(r).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: bpf(2) returned this new fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads `insns` as a cgroup device program; returns its fd.
pub fn load(insns: &[Insn]) -> Result<OwnedFd, CgroupError> {
    let bytes: Vec<u8> = insns.iter().flat_map(Insn::encode).collect();
    // Device programs call no GPL-only helpers, so the project's own licence is accepted.
    let license = CString::new("Apache-2.0").map_err(|_| CgroupError::Bpf {
        action: "load device program".into(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
        log: String::new(),
    })?;
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
        insns: bytes.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).unwrap_or(0),
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    attr.prog_name[..8].copy_from_slice(b"box_devs");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => owned_fd(fd).map_err(|source| CgroupError::Bpf {
            action: "load device program".into(),
            source,
            log: String::new(),
        }),
        Err(source) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(CgroupError::Bpf {
                action: "load device program".into(),
                source,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

fn open_dir(dir: &Path) -> Result<OwnedFd, CgroupError> {
    let f = std::fs::File::open(dir).map_err(|source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(OwnedFd::from(f))
}

/// Ids of the device programs attached directly to `dir`.
fn query(dir_fd: &OwnedFd) -> Result<Vec<u32>, CgroupError> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: u32::try_from(dir_fd.as_raw_fd()).unwrap_or(u32::MAX),
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: u32::try_from(ids.len()).unwrap_or(0),
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).map_err(|source| CgroupError::Bpf {
        action: "query attached device programs".into(),
        source,
        log: String::new(),
    })?;
    ids.truncate(usize::try_from(attr.prog_cnt).unwrap_or(0).min(64));
    Ok(ids)
}

/// Replaces the device programs attached to the cgroup `dir` with one built from `rules`:
/// the new one is attached first (so there is no moment without a policy), then the old detached.
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let insns = generate(&reduce_rules(rules)?);
    let prog = load(&insns)?;
    let dir_fd = open_dir(dir)?;
    let old = query(&dir_fd)?;
    let mut attr = AttachAttr {
        target_fd: u32::try_from(dir_fd.as_raw_fd()).unwrap_or(u32::MAX),
        attach_bpf_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| CgroupError::Bpf {
        action: format!("attach device program to {}", dir.display()),
        source,
        log: String::new(),
    })?;
    for id in old {
        let mut get = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let old_fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut get)
            .and_then(owned_fd)
            .map_err(|source| CgroupError::Bpf {
                action: format!("open old device program {id}"),
                source,
                log: String::new(),
            })?;
        let mut detach = AttachAttr {
            target_fd: u32::try_from(dir_fd.as_raw_fd()).unwrap_or(u32::MAX),
            attach_bpf_fd: u32::try_from(old_fd.as_raw_fd()).unwrap_or(u32::MAX),
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut detach).map_err(|source| CgroupError::Bpf {
            action: format!("detach old device program {id} from {}", dir.display()),
            source,
            log: String::new(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("valid rule")
    }

    const PROLOGUE: [Insn; 6] = [
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(AND32_IMM, 2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, 3, 1, 0, 0),
        Insn::new(RSH32_IMM, 3, 0, 0, 16),
        Insn::new(LDX_MEM_W, 4, 1, 4, 0),
        Insn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];

    fn with_prologue(rest: &[Insn]) -> Vec<Insn> {
        PROLOGUE.iter().chain(rest).copied().collect()
    }

    #[test]
    fn no_rules_and_allow_all_compile_to_return_one() {
        let expected = with_prologue(&[
            Insn::new(MOV64_IMM, 0, 0, 0, 1),
            Insn::new(EXIT, 0, 0, 0, 0),
        ]);
        assert_eq!(generate(&reduce_rules(&[]).expect("ok")), expected);
        let allow_all = [rule(true, LinuxDeviceType::A, None, None, "rwm")];
        assert_eq!(generate(&reduce_rules(&allow_all).expect("ok")), expected);
    }

    #[test]
    fn deny_all_compiles_to_return_zero() {
        let rules = [rule(false, LinuxDeviceType::A, None, None, "rwm")];
        assert_eq!(
            generate(&reduce_rules(&rules).expect("ok")),
            with_prologue(&[
                Insn::new(MOV64_IMM, 0, 0, 0, 0),
                Insn::new(EXIT, 0, 0, 0, 0)
            ])
        );
    }

    #[test]
    fn deny_all_then_allow_char_1_3_rwm_checks_type_major_minor() {
        let rules = [
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
        ];
        assert_eq!(
            generate(&reduce_rules(&rules).expect("ok")),
            with_prologue(&[
                Insn::new(JNE_IMM, 2, 0, 4, 2),
                Insn::new(JNE_IMM, 4, 0, 3, 1),
                Insn::new(JNE_IMM, 5, 0, 2, 3),
                Insn::new(MOV64_IMM, 0, 0, 0, 1),
                Insn::new(EXIT, 0, 0, 0, 0),
                Insn::new(MOV64_IMM, 0, 0, 0, 0),
                Insn::new(EXIT, 0, 0, 0, 0),
            ])
        );
    }

    #[test]
    fn block_rule_with_wildcard_minor_and_partial_access_checks_access_bits() {
        let rules = [
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::B, Some(8), None, "r"),
        ];
        assert_eq!(
            generate(&reduce_rules(&rules).expect("ok")),
            with_prologue(&[
                Insn::new(JNE_IMM, 2, 0, 6, 1),
                Insn::new(MOV32_REG, 1, 3, 0, 0),
                Insn::new(AND32_IMM, 1, 0, 0, 5), // ~r & rwm = w|m
                Insn::new(JNE_IMM, 1, 0, 3, 0),
                Insn::new(JNE_IMM, 4, 0, 2, 8),
                Insn::new(MOV64_IMM, 0, 0, 0, 1),
                Insn::new(EXIT, 0, 0, 0, 0),
                Insn::new(MOV64_IMM, 0, 0, 0, 0),
                Insn::new(EXIT, 0, 0, 0, 0),
            ])
        );
    }

    #[test]
    fn allow_all_then_deny_dev_null_returns_zero_on_match() {
        let rules = [
            rule(true, LinuxDeviceType::A, None, None, "rwm"),
            rule(false, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
        ];
        let p = reduce_rules(&rules).expect("ok");
        assert!(p.default_allow);
        let prog = generate(&p);
        assert_eq!(prog[prog.len() - 4], Insn::new(MOV64_IMM, 0, 0, 0, 0));
        assert_eq!(prog[prog.len() - 2], Insn::new(MOV64_IMM, 0, 0, 0, 1));
    }

    #[test]
    fn later_rules_override_earlier_ones_like_v1() {
        let rules = [
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
            rule(false, LinuxDeviceType::C, Some(1), Some(3), "w"),
            rule(true, LinuxDeviceType::C, Some(1), Some(5), "rw"),
            rule(true, LinuxDeviceType::C, Some(1), Some(5), "m"),
        ];
        let p = reduce_rules(&rules).expect("ok");
        assert!(!p.default_allow);
        assert_eq!(
            p.exceptions,
            vec![
                Exception {
                    dev_type: DEV_CHAR,
                    major: Some(1),
                    minor: Some(3),
                    access: ACC_READ | ACC_MKNOD
                },
                Exception {
                    dev_type: DEV_CHAR,
                    major: Some(1),
                    minor: Some(5),
                    access: ACC_ALL
                },
            ]
        );
        // A later "a" rule wipes everything before it.
        let mut more = rules.to_vec();
        more.push(rule(true, LinuxDeviceType::A, None, None, "rwm"));
        assert_eq!(
            reduce_rules(&more).expect("ok"),
            DevicePolicy {
                default_allow: true,
                exceptions: vec![]
            }
        );
    }

    #[test]
    fn bad_access_and_out_of_range_numbers_are_rejected() {
        assert!(reduce_rules(&[rule(true, LinuxDeviceType::C, Some(1), Some(3), "rx")]).is_err());
        assert!(
            reduce_rules(&[rule(true, LinuxDeviceType::C, Some(1 << 40), Some(3), "r")]).is_err()
        );
    }

    #[test]
    fn instructions_encode_registers_in_nibbles_little_endian() {
        assert_eq!(
            Insn::new(LDX_MEM_W, 4, 1, 4, 0).encode(),
            [0x61, 0x14, 4, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Insn::new(JNE_IMM, 5, 0, 2, 259).encode(),
            [0x55, 0x05, 2, 0, 3, 1, 0, 0]
        );
    }
}
