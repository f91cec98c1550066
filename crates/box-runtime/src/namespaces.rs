//! Which namespaces a box gets: created at clone, created later in the init (cgroup after the
//! cgroup is joined, time after its offsets are known), or joined from a path (setns).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Context, Error, Result};

/// The namespace work of one box, decided once before clone.
#[derive(Debug, Default)]
pub struct NamespacePlan {
    /// Flags passed to clone(2).
    pub clone_flags: libc::c_int,
    /// Namespaces the init creates with unshare(2) after the handshake.
    pub unshare_later: libc::c_int,
    /// Namespaces to join by path in the init (user first, mount last).
    pub join: Vec<(libc::c_int, PathBuf)>,
    /// Namespaces the runtime joins by path just for the clone of the init, when the box gets
    /// a new user namespace: once in it, the init would have no rights over namespaces the
    /// host's user namespace owns (network, IPC, UTS, cgroup, time), as runc joins them first.
    pub join_before_clone: Vec<(libc::c_int, PathBuf)>,
    /// A pid namespace to join: the runtime process joins it before clone, so the init is born there.
    pub join_pid: Option<PathBuf>,
    /// Whether the box gets a new user namespace.
    pub new_user: bool,
    /// Whether the box has a mount namespace of its own (new or joined).
    pub own_mount: bool,
    /// Whether the box gets a new network namespace.
    pub new_net: bool,
    /// Whether the box gets a new time namespace.
    pub new_time: bool,
    /// Whether the box gets a new cgroup namespace.
    pub new_cgroup: bool,
    /// Whether the box gets a new UTS namespace (hostname may be set only then).
    pub own_uts: bool,
}

/// The clone flag of a namespace type.
pub fn clone_flag(typ: LinuxNamespaceType) -> libc::c_int {
    match typ {
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

/// The /proc/PID/ns entry name of a clone flag.
pub fn proc_name(flag: libc::c_int) -> &'static str {
    match flag {
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWNET => "net",
        libc::CLONE_NEWCGROUP => "cgroup",
        _ => "time",
    }
}

/// Order in which namespaces are joined: user first (it grants the rights for the others), mount last.
fn join_rank(flag: libc::c_int) -> u8 {
    match flag {
        libc::CLONE_NEWUSER => 0,
        libc::CLONE_NEWNS => 9,
        _ => 5,
    }
}

impl NamespacePlan {
    /// Plans the namespaces of `namespaces` (config.json's linux.namespaces).
    pub fn new(namespaces: &[LinuxNamespace]) -> Result<Self> {
        let mut plan = NamespacePlan::default();
        let mut seen = 0;
        for ns in namespaces {
            let flag = clone_flag(ns.typ());
            if seen & flag != 0 {
                return Err(Error::config(format!(
                    "namespace {:?} is listed twice",
                    ns.typ()
                )));
            }
            seen |= flag;
            match ns.path() {
                Some(path) => {
                    if flag == libc::CLONE_NEWPID {
                        plan.join_pid = Some(path.clone());
                    } else {
                        plan.join.push((flag, path.clone()));
                    }
                }
                None => match flag {
                    libc::CLONE_NEWCGROUP => {
                        plan.unshare_later |= flag;
                        plan.new_cgroup = true;
                    }
                    libc::CLONE_NEWTIME => {
                        plan.unshare_later |= flag;
                        plan.new_time = true;
                    }
                    _ => plan.clone_flags |= flag,
                },
            }
        }
        plan.join.sort_by_key(|(f, _)| join_rank(*f));
        plan.new_user = plan.clone_flags & libc::CLONE_NEWUSER != 0;
        if plan.new_user {
            let (before, in_init): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.join)
                .into_iter()
                .partition(|(f, _)| *f != libc::CLONE_NEWNS);
            plan.join_before_clone = before;
            plan.join = in_init;
        }
        plan.new_net = plan.clone_flags & libc::CLONE_NEWNET != 0;
        plan.own_mount = seen & libc::CLONE_NEWNS != 0;
        plan.own_uts = seen & libc::CLONE_NEWUTS != 0;
        // Joining a user namespace: the box's other new namespaces must be owned by it,
        // so they are created after the join.
        if plan.join.iter().any(|(f, _)| *f == libc::CLONE_NEWUSER) {
            let later = plan.clone_flags & !(libc::CLONE_NEWPID);
            plan.clone_flags &= !later;
            plan.unshare_later |= later;
        }
        Ok(plan)
    }
}

/// Runs `f` (the clone of the init) with the calling thread in the namespaces `joins`, then
/// takes the thread back to the ones it had. The process must be single-threaded (as for the
/// clone itself); mount namespaces are not joined here.
pub fn joined_for<T>(joins: &[(libc::c_int, PathBuf)], f: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut own = Vec::new();
    for (flag, _) in joins {
        let path = format!("/proc/thread-self/ns/{}", proc_name(*flag));
        let file = File::open(&path).ctx(|| format!("cannot open {path}"))?;
        own.push((*flag, file));
    }
    let joined = joins
        .iter()
        .try_for_each(|(flag, path)| join_path(*flag, path));
    let result = joined.and_then(|()| f());
    for (flag, file) in &own {
        nix::sched::setns(file.as_fd(), CloneFlags::from_bits_retain(*flag)).ctx(|| {
            format!(
                "cannot return to the runtime's own {} namespace",
                proc_name(*flag)
            )
        })?;
    }
    result
}

/// Opens a namespace file and joins it (setns); `flag` checks it is the expected kind.
pub fn join_path(flag: libc::c_int, path: &std::path::Path) -> Result<()> {
    let f = File::open(path).ctx(|| format!("cannot open namespace {}", path.display()))?;
    nix::sched::setns(f.as_fd(), CloneFlags::from_bits_retain(flag)).ctx(|| {
        format!(
            "cannot join {} namespace {}",
            proc_name(flag),
            path.display()
        )
    })
}

/// Brings the loopback interface of this process's (new) network namespace up, as crun does: a
/// box without other networking still reaches its own 127.0.0.1.
pub fn loopback_up() -> Result<()> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| "cannot open a socket to bring the loopback interface up");
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let ctl = |op: libc::c_ulong, req: &mut libc::ifreq| {
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own, on our socket.
        if unsafe { libc::ioctl(sock.as_raw_fd(), op as _, req as *mut libc::ifreq) } < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    ctl(libc::SIOCGIFFLAGS, &mut req).ctx(|| "cannot read the loopback interface's flags")?;
    // SAFETY: after SIOCGIFFLAGS the flags member is the one the kernel filled in.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ctl(libc::SIOCSIFFLAGS, &mut req).ctx(|| "cannot bring the loopback interface up")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn ns(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut b = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().expect("namespace")
    }

    #[test]
    fn cgroup_and_time_are_created_after_the_handshake() {
        let plan = NamespacePlan::new(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Cgroup, None),
            ns(LinuxNamespaceType::Time, None),
        ])
        .expect("plan");
        assert_eq!(plan.clone_flags, libc::CLONE_NEWPID | libc::CLONE_NEWNS);
        assert_eq!(
            plan.unshare_later,
            libc::CLONE_NEWCGROUP | libc::CLONE_NEWTIME
        );
        assert!(plan.own_mount && plan.new_time && plan.new_cgroup);
    }

    #[test]
    fn joined_user_namespace_owns_the_new_ones() {
        let plan = NamespacePlan::new(&[
            ns(LinuxNamespaceType::Network, None),
            ns(LinuxNamespaceType::Mount, Some("/proc/1/ns/mnt")),
            ns(LinuxNamespaceType::User, Some("/proc/1/ns/user")),
            ns(LinuxNamespaceType::Pid, Some("/proc/1/ns/pid")),
        ])
        .expect("plan");
        assert_eq!(plan.clone_flags, 0);
        assert_eq!(plan.unshare_later, libc::CLONE_NEWNET);
        assert_eq!(plan.join[0].0, libc::CLONE_NEWUSER);
        assert_eq!(plan.join[1].0, libc::CLONE_NEWNS);
        assert!(plan.join_pid.is_some());
    }

    #[test]
    fn a_new_user_namespace_has_the_others_joined_before_the_clone() {
        let plan = NamespacePlan::new(&[
            ns(LinuxNamespaceType::User, None),
            ns(LinuxNamespaceType::Network, Some("/proc/1/ns/net")),
            ns(LinuxNamespaceType::Ipc, Some("/proc/1/ns/ipc")),
            ns(LinuxNamespaceType::Mount, None),
        ])
        .expect("plan");
        assert_eq!(plan.clone_flags, libc::CLONE_NEWUSER | libc::CLONE_NEWNS);
        let before: Vec<_> = plan.join_before_clone.iter().map(|(f, _)| *f).collect();
        assert_eq!(before, [libc::CLONE_NEWNET, libc::CLONE_NEWIPC]);
        assert!(plan.join.is_empty());
    }

    #[test]
    fn duplicate_namespace_is_an_error() {
        let err = NamespacePlan::new(&[
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Uts, None),
        ])
        .expect_err("duplicate");
        assert!(err.to_string().contains("twice"));
    }
}
