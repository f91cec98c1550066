//! Rootless `box`: before doing anything with the store, the process moves into a user namespace
//! where it is root and the user's subordinate ids are mapped (as rootless podman does), so
//! image layers keep their owners (shifted into the subuid range) and overlay whiteouts can be
//! made. Done first thing in `main`, while the process is still single-threaded.

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use box_runtime::idmap;
use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};

fn mapping(inside: u32, outside: u32, size: u32) -> Result<LinuxIdMapping> {
    Ok(LinuxIdMappingBuilder::default()
        .container_id(inside)
        .host_id(outside)
        .size(size)
        .build()?)
}

/// Enters the user namespace (when running without host root and not already in one).
/// Without subordinate ids for the user, stays put: files then keep the user's own ids.
pub fn enter_if_rootless() -> Result<()> {
    if !idmap::running_rootless() || idmap::in_user_namespace() {
        return Ok(());
    }
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let (Some(subuid), Some(subgid)) = (
        idmap::subordinate_range("/etc/subuid", &name, uid.as_raw()),
        idmap::subordinate_range("/etc/subgid", &name, gid.as_raw()),
    ) else {
        return Ok(());
    };
    let uids = [
        mapping(0, uid.as_raw(), 1)?,
        mapping(1, subuid.0, subuid.1)?,
    ];
    let gids = [
        mapping(0, gid.as_raw(), 1)?,
        mapping(1, subgid.0, subgid.1)?,
    ];
    // The maps of a namespace must be written from outside it: a child that stays behind
    // writes ours (through newuidmap/newgidmap) once we have unshared.
    let (ready_r, ready_w) = nix::unistd::pipe().context("cannot make a pipe")?;
    let me = nix::unistd::getpid().as_raw();
    // SAFETY: the process is single-threaded here (start of main), so fork is safe; the child
    // only reads a pipe, runs the id-map helpers and exits.
    match unsafe { nix::unistd::fork() }.context("cannot fork the id-map writer")? {
        nix::unistd::ForkResult::Child => {
            drop(ready_w);
            let mut byte = [0u8; 1];
            let code = match nix::unistd::read(ready_r.as_fd(), &mut byte) {
                Ok(1) => match idmap::write_maps(me, &uids, &gids) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("box: {e}");
                        1
                    }
                },
                _ => 1,
            };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_r);
            let unshared = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).context(
                "cannot create a user namespace (are unprivileged user namespaces enabled?)",
            );
            let _ = nix::unistd::write(&ready_w, if unshared.is_ok() { b"1" } else { b"" });
            drop(ready_w);
            let status =
                nix::sys::wait::waitpid(child, None).context("cannot wait for newuidmap")?;
            unshared?;
            if !matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)) {
                bail!("cannot map the user's subordinate ids (check /etc/subuid and /etc/subgid, and that uidmap is installed)");
            }
            let root_g = nix::unistd::Gid::from_raw(0);
            let root_u = nix::unistd::Uid::from_raw(0);
            nix::unistd::setresgid(root_g, root_g, root_g)
                .context("cannot become gid 0 in the user namespace")?;
            nix::unistd::setresuid(root_u, root_u, root_u)
                .context("cannot become uid 0 in the user namespace")?;
            Ok(())
        }
    }
}

/// Joins the user namespace of `pid` (a box's supervisor) instead of making a new one, so a
/// process started now (exec) shares the box's namespace and ids. Rootless and single-threaded
/// callers only; a no-op when already in a user namespace or running as host root.
pub fn join_of(pid: i32) -> Result<()> {
    if !idmap::running_rootless() || idmap::in_user_namespace() {
        return Ok(());
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .with_context(|| format!("cannot open the user namespace of process {pid}"))?;
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWUSER)
        .context("cannot join the box's user namespace")?;
    let root_g = nix::unistd::Gid::from_raw(0);
    let root_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g).context("cannot become gid 0")?;
    nix::unistd::setresuid(root_u, root_u, root_u).context("cannot become uid 0")?;
    Ok(())
}
