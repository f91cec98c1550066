//! A box's network at each start and end: veth pairs and published ports on bridges, or its
//! pasta/slirp4netns helper.

use std::os::fd::BorrowedFd;

use box_net::bridge::{self, Endpoint};
use box_net::rootless::{self, Helper};

use super::EndpointRecord;
use crate::db::BoxDb;
use crate::error::Result;
use crate::paths::Paths;
use crate::spec::{BoxSpec, NetworkMode};

pub(super) fn attach(
    ep: &EndpointRecord,
    netns: BorrowedFd<'_>,
    others: &[String],
) -> box_net::Result<()> {
    bridge::attach(
        &ep.network.bridge_net(),
        &Endpoint {
            host_if: ep.host_if(),
            box_if: ep.box_if(),
            ip: ep.ip,
            default_route: ep.index == 0,
        },
        netns,
        others,
    )
}

/// The file holding the pid of a box's pasta or slirp4netns.
fn helper_pid_file(paths: &Paths, id: &str) -> std::path::PathBuf {
    paths.box_run_dir(id).join("net.pid")
}

/// Between create and start (the supervisor, every start): connects the box whose network
/// namespace is `netns` to its networks and publishes its ports.
pub fn wire(
    paths: &Paths,
    db: &BoxDb,
    id: &str,
    spec: &BoxSpec,
    netns: BorrowedFd<'_>,
) -> Result<()> {
    let helper = match spec.network {
        NetworkMode::Pasta => Some(Helper::Pasta),
        NetworkMode::Slirp4netns => Some(Helper::Slirp4netns),
        NetworkMode::Bridge(_) => None,
        _ => return Ok(()),
    };
    if let Some(helper) = helper {
        rootless::start(helper, netns, &spec.ports, &helper_pid_file(paths, id))?;
        return Ok(());
    }
    let eps = db.endpoints_of_box(id)?;
    let networks = db.networks()?;
    for ep in &eps {
        let others: Vec<String> = networks
            .iter()
            .filter(|n| n.id != ep.network.id)
            .map(|n| n.bridge.clone())
            .collect();
        attach(ep, netns, &others)?;
    }
    if let Some(first) = eps.first() {
        box_net::firewall::add_ports(first.ip, &spec.ports)?;
    }
    Ok(())
}

/// After the box ended (or its supervisor was found dead, or rm): withdraws its published
/// ports and stops its pasta/slirp4netns. Its veth pairs went with its network namespace.
pub fn unwire(paths: &Paths, id: &str, spec: &BoxSpec) {
    match spec.network {
        NetworkMode::Bridge(_) if !spec.ports.is_empty() => {
            box_net::firewall::remove_ports(&spec.ports)
        }
        NetworkMode::Pasta | NetworkMode::Slirp4netns => {
            rootless::stop_recorded(&helper_pid_file(paths, id))
        }
        _ => {}
    }
}
