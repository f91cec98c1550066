//! Bridge networks on the host: the bridge itself (with the gateway address, routed to by the
//! host, NATed out by [`crate::firewall`]) and a veth pair per box and network, its box end
//! moved into the box's network namespace and configured there.

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use crate::netlink::Netlink;
use crate::subnet::{mac_for, Subnet};
use crate::{firewall, NetError, Result};

/// A bridge network as the host sees it.
#[derive(Debug, Clone)]
pub struct BridgeNet {
    /// The bridge interface (`box0`, `bx-…`).
    pub bridge: String,
    /// Its subnet; the bridge holds the gateway address.
    pub subnet: Subnet,
}

/// One box's place on a bridge network.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The host end of the veth pair.
    pub host_if: String,
    /// The interface name inside the box (`eth0`, `eth1`…).
    pub box_if: String,
    /// The box's address.
    pub ip: Ipv4Addr,
    /// Whether the box's default route goes through this network's gateway.
    pub default_route: bool,
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| NetError::io(&format!("cannot write {path}"), e))
}

/// Makes the bridge and its firewall entries unless the bridge exists (it is then assumed
/// complete; `others` are the bridges of the other networks, isolated from this one).
/// Returns the bridge's link index.
pub fn ensure_bridge(net: &BridgeNet, others: &[String]) -> Result<u32> {
    let mut nl = Netlink::open()?;
    if let Some(index) = nl.link_index(&net.bridge)? {
        return Ok(index);
    }
    // A subnet the host reaches through another interface already (podman's default network
    // is 10.88.0.0/16 too) would make the boxes unreachable: refuse it.
    for (index, ip, prefix) in nl.ipv4_addresses()? {
        let shorter = prefix.min(net.subnet.prefix);
        let mask = u32::MAX.checked_shl(32 - u32::from(shorter)).unwrap_or(0);
        let overlaps = prefix > 0 && u32::from(ip) & mask == u32::from(net.subnet.addr) & mask;
        // The bridge itself, made by another process since our look above, is no clash.
        if overlaps && link_name(index) != net.bridge {
            return Err(NetError::Other(format!(
                "cannot make bridge {} for {}: the host has {ip}/{prefix} on {} already (another \
                 bridge, e.g. podman's, uses that range): choose another subnet ([network] subnet \
                 in box.toml, or box network create --subnet)",
                net.bridge,
                net.subnet,
                link_name(index)
            )));
        }
    }
    match nl.add_bridge(&net.bridge) {
        Ok(()) => {}
        // Another process made it between our look and our create.
        Err(NetError::Netlink { errno, .. }) if errno == libc::EEXIST => {}
        Err(e) => return Err(e),
    }
    let index = nl
        .link_index(&net.bridge)?
        .ok_or_else(|| NetError::Other(format!("bridge {} vanished", net.bridge)))?;
    match nl.add_address(index, net.subnet.gateway(), net.subnet.prefix) {
        Ok(()) => {}
        Err(NetError::Netlink { errno, .. }) if errno == libc::EEXIST => {}
        Err(e) => return Err(e),
    }
    nl.set_up(index)?;
    // Published ports are reached from the host's loopback too: DNAT of 127.0.0.1 to a box
    // needs the kernel to route loopback sources out of the bridge.
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge),
        "1",
    )?;
    // Boxes reach beyond the host through NAT (as docker and podman set it).
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    firewall::add_network(&net.bridge, net.subnet, others)?;
    Ok(index)
}

/// The name of link `index` (its number when it has none).
fn link_name(index: u32) -> String {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes (NUL included) into `buf`.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return format!("link {index}");
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Deletes the bridge (its box ends go with the boxes) and its firewall entries.
pub fn remove_bridge(net: &BridgeNet, others: &[String]) -> Result<()> {
    let mut nl = Netlink::open()?;
    if let Some(index) = nl.link_index(&net.bridge)? {
        nl.delete_link(index)?;
    }
    firewall::remove_network(&net.bridge, net.subnet, others);
    Ok(())
}

/// Connects the box whose network namespace is `netns` to the network: a veth pair, its host
/// end on the bridge, its box end named, addressed and routed in the box.
pub fn attach(
    net: &BridgeNet,
    ep: &Endpoint,
    netns: BorrowedFd<'_>,
    others: &[String],
) -> Result<()> {
    let master = ensure_bridge(net, others)?;
    let mut host = Netlink::open()?;
    // A leftover of a box whose namespace outlived its supervisor.
    if let Some(stale) = host.link_index(&ep.host_if)? {
        host.delete_link(stale)?;
    }
    host.add_veth(&ep.host_if, master, &ep.box_if, mac_for(ep.ip), netns)?;
    let host_index = host
        .link_index(&ep.host_if)?
        .ok_or_else(|| NetError::Other(format!("veth {} vanished", ep.host_if)))?;
    host.set_up(host_index)?;
    let mut inside = Netlink::open_in(netns)?;
    let index = inside
        .link_index(&ep.box_if)?
        .ok_or_else(|| NetError::Other(format!("{} did not arrive in the box", ep.box_if)))?;
    inside.add_address(index, ep.ip, net.subnet.prefix)?;
    inside.set_up(index)?;
    if ep.default_route {
        inside.add_default_route(index, net.subnet.gateway())?;
    }
    Ok(())
}

/// Disconnects a box: deletes the host end of its veth pair (the box end goes with it).
pub fn detach(host_if: &str) -> Result<()> {
    let mut nl = Netlink::open()?;
    if let Some(index) = nl.link_index(host_if)? {
        nl.delete_link(index)?;
    }
    Ok(())
}

/// Whether a link with this name exists in the host's namespace.
pub fn link_exists(name: &str) -> Result<bool> {
    Ok(Netlink::open()?.link_index(name)?.is_some())
}
