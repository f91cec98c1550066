//! Networks in the engine: the `networks` and `endpoints` tables (which bridge networks exist
//! and which box holds which address on which), `box network …`, addresses and published ports
//! given out when a box is made, the box's /etc/hosts, and the wiring of a box's network each
//! time it starts (called by its supervisor between create and start) and its unwiring after.
//!
//! Addresses live as long as the box (kept across restarts, freed by rm). The kernel side —
//! bridge, veth pairs, nftables elements, pasta/slirp4netns — follows the records: a veth pair
//! lives in the box's network namespace and goes with it; published ports and user-mode
//! helpers are withdrawn when the box ends, when its supervisor is found dead, or by rm.

mod hosts;
mod records;
mod store;
mod wiring;

use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use box_net::bridge;
use box_net::ports::{self, PortMapping, Proto};
use box_net::rootless::{self, Helper};
use box_net::subnet::Subnet;
use rusqlite::params;
use serde::Serialize;

use crate::db::{new_id, now_ms, BoxDb};
use crate::engine::Engine;
use crate::error::{DbContext, EngineError, Result};
use crate::spec::{valid_network_name, BoxSpec, NetworkMode};

pub use hosts::hosts_text;
pub use records::{EndpointRecord, NetworkRecord};
pub use wiring::{unwire, wire};

/// The name of the default bridge network.
pub const DEFAULT_NETWORK: &str = "bridge";

/// Names `box network create` refuses (network modes).
const RESERVED: &[&str] = &[
    DEFAULT_NETWORK,
    "none",
    "host",
    "default",
    "pasta",
    "slirp4netns",
];

/// The other networks' bridges (each network is isolated from them).
fn other_bridges(db: &BoxDb, except: &NetworkRecord) -> Result<Vec<String>> {
    Ok(db
        .networks()?
        .into_iter()
        .filter(|n| n.id != except.id)
        .map(|n| n.bridge)
        .collect())
}

/// What `box network inspect` shows of a network: it and the boxes on it.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkView {
    /// The network.
    pub network: NetworkRecord,
    /// Its gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// (box name, endpoint) of each box on it.
    pub boxes: Vec<(String, EndpointRecord)>,
}

impl Engine {
    /// The mode a box gets when it names none: the settings' `[network] default`, else `bridge`
    /// as root and pasta (slirp4netns where passt is missing) rootless.
    pub fn default_network_mode(&self) -> Result<NetworkMode> {
        let config = crate::config::load(self.paths().rootless)?;
        if let Some(mode) = config.network.default {
            let parsed: NetworkMode = mode.parse()?;
            if parsed != NetworkMode::Default {
                return Ok(parsed);
            }
        }
        if !self.paths().rootless {
            return Ok(NetworkMode::Bridge(DEFAULT_NETWORK.into()));
        }
        match rootless::default_helper() {
            Some(Helper::Pasta) => Ok(NetworkMode::Pasta),
            Some(Helper::Slirp4netns) => Ok(NetworkMode::Slirp4netns),
            None => Err(EngineError::Unsupported(
                "rootless boxes get their network from pasta or slirp4netns, and neither is \
                 installed (apt-get install passt), or run with --network none"
                    .into(),
            )),
        }
    }

    /// The default bridge network, recorded on first use from the settings.
    fn default_network(&self) -> Result<NetworkRecord> {
        if let Some(n) = self.db().network(DEFAULT_NETWORK)? {
            return Ok(n);
        }
        let config = crate::config::load(self.paths().rootless)?;
        let subnet: Subnet = config
            .network
            .subnet
            .parse()
            .map_err(|e: String| EngineError::invalid(format!("[network] subnet: {e}")))?;
        let rec = NetworkRecord {
            id: new_id()?,
            name: DEFAULT_NETWORK.into(),
            bridge: config.network.bridge.clone(),
            subnet,
            created: now_ms(),
        };
        match self.db().insert_network(&rec) {
            Ok(()) => Ok(rec),
            // Another process recorded it first.
            Err(_) => self
                .db()
                .network(DEFAULT_NETWORK)?
                .ok_or_else(|| EngineError::WrongState("cannot record the default network".into())),
        }
    }

    /// A network by name or id (`bridge` is recorded on first use).
    pub fn network(&self, name_or_id: &str) -> Result<NetworkRecord> {
        if name_or_id == DEFAULT_NETWORK {
            return self.default_network();
        }
        self.db().network(name_or_id)?.ok_or_else(|| {
            EngineError::invalid(format!(
                "no such network: {name_or_id:?} (box network ls lists them; box network create \
                 {name_or_id} makes it)"
            ))
        })
    }

    fn require_root_for_bridges(&self) -> Result<()> {
        if self.paths().rootless {
            return Err(EngineError::Unsupported(
                "bridge networks need root: rootless boxes use --network pasta (the default) or \
                 slirp4netns"
                    .into(),
            ));
        }
        Ok(())
    }

    /// `box network create NAME [--subnet CIDR]`: records the network and makes its bridge.
    pub fn network_create(&self, name: &str, subnet: Option<&str>) -> Result<NetworkRecord> {
        self.require_root_for_bridges()?;
        if !valid_network_name(name) {
            return Err(EngineError::invalid(format!(
                "invalid network name {name:?}: letters, digits and _ . - (starting with a \
                 letter or digit)"
            )));
        }
        if RESERVED.contains(&name) {
            return Err(EngineError::invalid(format!(
                "{name:?} is a network mode and cannot name a network"
            )));
        }
        let mut existing = self.db().networks()?;
        if !existing.iter().any(|n| n.name == DEFAULT_NETWORK) {
            existing.push(self.default_network()?);
        }
        let subnet = match subnet {
            Some(text) => {
                let s: Subnet = text.parse().map_err(EngineError::invalid)?;
                if let Some(n) = existing.iter().find(|n| n.subnet.overlaps(&s)) {
                    return Err(EngineError::invalid(format!(
                        "subnet {s} overlaps network {} ({})",
                        n.name, n.subnet
                    )));
                }
                s
            }
            None => (0..=255u8)
                .map(|i| Subnet {
                    addr: Ipv4Addr::new(10, 89, i, 0),
                    prefix: 24,
                })
                .find(|s| !existing.iter().any(|n| n.subnet.overlaps(s)))
                .ok_or_else(|| {
                    EngineError::WrongState(
                        "no free 10.89.N.0/24 subnet left: give one with --subnet".into(),
                    )
                })?,
        };
        let id = new_id()?;
        let rec = NetworkRecord {
            bridge: format!("bx-{}", &id[..8]),
            id,
            name: name.to_string(),
            subnet,
            created: now_ms(),
        };
        self.db().insert_network(&rec)?;
        let others = other_bridges(self.db(), &rec)?;
        if let Err(e) = bridge::ensure_bridge(&rec.bridge_net(), &others) {
            let _ = bridge::remove_bridge(&rec.bridge_net(), &others);
            let _ = self.db().delete_network(&rec.id);
            return Err(e.into());
        }
        Ok(rec)
    }

    /// `box network ls`.
    pub fn network_list(&self) -> Result<Vec<NetworkRecord>> {
        self.db().networks()
    }

    /// `box network inspect`.
    pub fn network_inspect(&self, name_or_id: &str) -> Result<NetworkView> {
        let network = self.network(name_or_id)?;
        let mut boxes = Vec::new();
        for ep in self.db().endpoints_of_network(&network.id)? {
            let name = self
                .db()
                .get(&ep.box_id)?
                .map(|r| r.name)
                .unwrap_or_default();
            boxes.push((name, ep));
        }
        Ok(NetworkView {
            gateway: network.subnet.gateway(),
            network,
            boxes,
        })
    }

    /// `box network rm`: refuses a network boxes are on and the default network.
    pub fn network_remove(&self, name_or_id: &str) -> Result<NetworkRecord> {
        let network = self.network(name_or_id)?;
        if network.name == DEFAULT_NETWORK {
            return Err(EngineError::invalid(
                "the default network cannot be removed (box system reset removes everything)",
            ));
        }
        let on = self.db().endpoints_of_network(&network.id)?;
        if !on.is_empty() {
            let names: Vec<String> = on
                .iter()
                .filter_map(|ep| self.db().get(&ep.box_id).ok().flatten().map(|r| r.name))
                .collect();
            return Err(EngineError::WrongState(format!(
                "network {} is in use by {} (remove them or box network disconnect {} BOX)",
                network.name,
                names.join(", "),
                network.name
            )));
        }
        self.drop_network(&network)?;
        Ok(network)
    }

    /// Removes a network's bridge, firewall entries and record.
    fn drop_network(&self, network: &NetworkRecord) -> Result<()> {
        let others = other_bridges(self.db(), network)?;
        bridge::remove_bridge(&network.bridge_net(), &others)?;
        self.db().delete_network(&network.id)
    }

    /// Removes every network (`box system reset`, after every box is gone).
    pub fn remove_all_networks(&self) -> Result<()> {
        for n in self.db().networks()? {
            self.drop_network(&n)?;
        }
        Ok(())
    }

    /// `box network connect NETWORK BOX`: a further interface; at once when the box runs.
    pub fn network_connect(&self, network: &str, box_name: &str) -> Result<EndpointRecord> {
        self.require_root_for_bridges()?;
        let rec = self.get(box_name)?;
        if rec.spec.network.bridge_network().is_none() {
            return Err(EngineError::invalid(format!(
                "box {} runs with --network {}: only boxes on bridge networks can join more",
                rec.name, rec.spec.network
            )));
        }
        let network = self.network(network)?;
        let ep = self.db().add_endpoint(&rec.id, &network)?;
        if let (true, Some(pid)) = (rec.state.is_active(), rec.pid) {
            let result = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .map_err(|e| EngineError::io("cannot open the box's network namespace", e))
                .and_then(|ns| {
                    let others = other_bridges(self.db(), &network)?;
                    Ok(wiring::attach(&ep, ns.as_fd(), &others)?)
                });
            if let Err(e) = result {
                let _ = self.db().remove_endpoint(&rec.id, &network.id);
                return Err(e);
            }
        }
        self.refresh_hosts(&network.id)?;
        Ok(ep)
    }

    /// `box network disconnect NETWORK BOX`.
    pub fn network_disconnect(&self, network: &str, box_name: &str) -> Result<()> {
        let rec = self.get(box_name)?;
        let network = self.network(network)?;
        let eps = self.db().endpoints_of_box(&rec.id)?;
        let Some(ep) = eps.iter().find(|e| e.network.id == network.id) else {
            return Err(EngineError::invalid(format!(
                "box {} is not on network {}",
                rec.name, network.name
            )));
        };
        if rec.state.is_active() {
            if ep.index == 0 && !rec.spec.ports.is_empty() {
                box_net::firewall::remove_ports(&rec.spec.ports);
            }
            bridge::detach(&ep.host_if())?;
        }
        self.db().remove_endpoint(&rec.id, &network.id)?;
        self.refresh_hosts(&network.id)?;
        self.write_hosts(&rec.id)
    }

    /// At create: the configured default mode for `Default`, an address on the box's bridge
    /// network, free host ports for `-p BOXPORT` and `-P`, and no port another box has.
    pub(crate) fn allocate_network(
        &self,
        spec: &mut BoxSpec,
        id: &str,
        exposed: &[String],
    ) -> Result<()> {
        if spec.network == NetworkMode::Default {
            spec.network = self.default_network_mode()?;
        }
        match &spec.network {
            NetworkMode::Bridge(_) => self.require_root_for_bridges()?,
            NetworkMode::Host | NetworkMode::None | NetworkMode::Container(_)
                if !spec.ports.is_empty() || spec.publish_all =>
            {
                return Err(EngineError::invalid(format!(
                    "ports cannot be published with --network {}: use a bridge network (root) \
                     or pasta/slirp4netns",
                    spec.network
                )))
            }
            _ => {}
        }
        if spec.publish_all {
            for e in exposed {
                let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
                let (Ok(box_port), Ok(proto)) = (port.parse::<u16>(), proto.parse::<Proto>())
                else {
                    continue;
                };
                if !spec
                    .ports
                    .iter()
                    .any(|p| p.box_port == box_port && p.proto == proto)
                {
                    spec.ports.push(PortMapping {
                        host_ip: None,
                        host_port: 0,
                        box_port,
                        proto,
                    });
                }
            }
        }
        let taken: Vec<PortMapping> = if spec.ports.is_empty() {
            Vec::new()
        } else {
            self.db()
                .list()?
                .into_iter()
                .flat_map(|r| r.spec.ports)
                .collect()
        };
        for i in 0..spec.ports.len() {
            let p = spec.ports[i];
            let mut chosen = p;
            if p.host_port == 0 {
                chosen.host_port = ports::free_port(p.host_ip, p.proto).map_err(|e| {
                    EngineError::io(format!("cannot find a free host port for {p}"), e)
                })?;
            }
            if let Some(other) = taken
                .iter()
                .chain(&spec.ports[..i])
                .find(|t| t.clashes_with(&chosen))
            {
                return Err(EngineError::invalid(format!(
                    "host port {}/{} is published already ({other}): choose another",
                    chosen.host_port, chosen.proto
                )));
            }
            spec.ports[i] = chosen;
        }
        if let Some(name) = spec.network.bridge_network() {
            let network = self.network(name)?;
            self.db().add_endpoint(id, &network)?;
        }
        Ok(())
    }

    /// Gives back what [`Engine::allocate_network`] took for box `id` (a failed create, rm)
    /// and rewrites the hosts files of the boxes that shared a network with it.
    pub(crate) fn release_network(&self, id: &str) -> Result<()> {
        let eps = self.db().endpoints_of_box(id)?;
        self.db()
            .conn()
            .execute("DELETE FROM endpoints WHERE box_id = ?1", params![id])
            .db_ctx(|| "cannot free the box's addresses".into())?;
        for ep in eps {
            self.refresh_hosts(&ep.network.id)?;
        }
        Ok(())
    }
}
