//! Networks in the engine: the `networks` and `endpoints` tables (which bridge networks exist
//! and which box holds which address on which), `box network …`, addresses and published ports
//! given out when a box is made, the box's /etc/hosts, and the wiring of a box's network each
//! time it starts (called by its supervisor between create and start) and its unwiring after.
//!
//! Addresses live as long as the box (kept across restarts, freed by rm). The kernel side —
//! bridge, veth pairs, nftables elements, pasta/slirp4netns — follows the records: a veth pair
//! lives in the box's network namespace and goes with it; published ports and user-mode
//! helpers are withdrawn when the box ends, when its supervisor is found dead, or by rm.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use box_net::bridge::{self, BridgeNet, Endpoint};
use box_net::ports::{self, PortMapping, Proto};
use box_net::rootless::{self, Helper};
use box_net::subnet::{mac_for, mac_text, Subnet};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use crate::db::{new_id, now_ms, BoxDb};
use crate::engine::Engine;
use crate::error::{DbContext, EngineError, Result};
use crate::paths::Paths;
use crate::spec::{valid_network_name, BoxSpec, NetworkMode};

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

/// A bridge network.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkRecord {
    /// 64 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its bridge interface on the host.
    pub bridge: String,
    /// Its subnet (the bridge holds the first address, the gateway).
    #[serde(serialize_with = "as_text")]
    pub subnet: Subnet,
    /// When it was made (ms since the epoch).
    pub created: i64,
}

fn as_text<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl NetworkRecord {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<NetworkRecord> {
        let subnet: String = row.get(3)?;
        Ok(NetworkRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            bridge: row.get(2)?,
            subnet: subnet.parse().map_err(|e: String| {
                rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
            })?,
            created: row.get(4)?,
        })
    }

    fn bridge_net(&self) -> BridgeNet {
        BridgeNet {
            bridge: self.bridge.clone(),
            subnet: self.subnet,
        }
    }
}

/// A box's place on a network.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointRecord {
    /// The box.
    pub box_id: String,
    /// The network.
    pub network: NetworkRecord,
    /// The box's address on it.
    pub ip: Ipv4Addr,
    /// Which of the box's interfaces (`eth<index>`); 0 carries the default route.
    pub index: u32,
}

impl EndpointRecord {
    /// The interface name inside the box.
    pub fn box_if(&self) -> String {
        format!("eth{}", self.index)
    }

    /// The host end of the box's veth pair.
    pub fn host_if(&self) -> String {
        format!(
            "vb{}{}",
            &self.box_id[..8.min(self.box_id.len())],
            self.index
        )
    }

    /// The box's hardware address on this network.
    pub fn mac(&self) -> String {
        mac_text(mac_for(self.ip))
    }
}

const NETWORK_COLUMNS: &str = "n.id, n.name, n.bridge, n.subnet, n.created";

impl BoxDb {
    /// Every bridge network, oldest first.
    pub fn networks(&self) -> Result<Vec<NetworkRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {NETWORK_COLUMNS} FROM networks n ORDER BY n.created"
            ))
            .db_ctx(|| "cannot list networks".into())?;
        let rows = stmt
            .query_map([], NetworkRecord::from_row)
            .db_ctx(|| "cannot list networks".into())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .db_ctx(|| "cannot list networks".into())
    }

    /// The network with this name, full id or unique id prefix.
    pub fn network(&self, name_or_id: &str) -> Result<Option<NetworkRecord>> {
        let all = self.networks()?;
        if let Some(n) = all
            .iter()
            .find(|n| n.name == name_or_id || n.id == name_or_id)
        {
            return Ok(Some(n.clone()));
        }
        let mut by_prefix = all
            .into_iter()
            .filter(|n| name_or_id.len() >= 3 && n.id.starts_with(name_or_id));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(n), None) => Ok(Some(n)),
            _ => Ok(None),
        }
    }

    fn insert_network(&self, n: &NetworkRecord) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO networks (id, name, bridge, subnet, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![n.id, n.name, n.bridge, n.subnet.to_string(), n.created],
            )
            .map(drop)
            .map_err(|e| match crate::db::is_unique_violation(&e) {
                true => EngineError::invalid(format!("a network named {:?} exists already", n.name)),
                false => EngineError::db(format!("cannot record network {}", n.name), e),
            })
    }

    fn delete_network(&self, id: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM networks WHERE id = ?1", params![id])
            .db_ctx(|| format!("cannot delete network {id}"))?;
        Ok(())
    }

    fn endpoints_where(&self, clause: &str, arg: &str) -> Result<Vec<EndpointRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {NETWORK_COLUMNS}, e.box_id, e.ip, e.idx FROM endpoints e \
                 JOIN networks n ON n.id = e.network_id WHERE {clause} ORDER BY e.idx"
            ))
            .db_ctx(|| "cannot list endpoints".into())?;
        let rows = stmt
            .query_map(params![arg], |row| {
                let ip: String = row.get(6)?;
                Ok(EndpointRecord {
                    network: NetworkRecord::from_row(row)?,
                    box_id: row.get(5)?,
                    ip: ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
                    index: row.get(7)?,
                })
            })
            .db_ctx(|| "cannot list endpoints".into())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .db_ctx(|| "cannot list endpoints".into())
    }

    /// The box's places on networks, `eth0` first.
    pub fn endpoints_of_box(&self, box_id: &str) -> Result<Vec<EndpointRecord>> {
        self.endpoints_where("e.box_id = ?1", box_id)
    }

    /// The boxes on a network.
    pub fn endpoints_of_network(&self, network_id: &str) -> Result<Vec<EndpointRecord>> {
        self.endpoints_where("e.network_id = ?1", network_id)
    }

    /// Gives box `box_id` the lowest free address on `network` and its next interface, in one
    /// transaction (two boxes never get one address).
    fn add_endpoint(&self, box_id: &str, network: &NetworkRecord) -> Result<EndpointRecord> {
        let mut conn = self.conn();
        let ctx = || format!("cannot give the box an address on network {}", network.name);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .db_ctx(ctx)?;
        let exists: Option<String> = tx
            .query_row(
                "SELECT ip FROM endpoints WHERE box_id = ?1 AND network_id = ?2",
                params![box_id, network.id],
                |r| r.get(0),
            )
            .optional()
            .db_ctx(ctx)?;
        if exists.is_some() {
            return Err(EngineError::WrongState(format!(
                "the box is on network {} already",
                network.name
            )));
        }
        let used: Vec<Ipv4Addr> = {
            let mut stmt = tx
                .prepare("SELECT ip FROM endpoints WHERE network_id = ?1")
                .db_ctx(ctx)?;
            let rows = stmt
                .query_map(params![network.id], |r| r.get::<_, String>(0))
                .db_ctx(ctx)?;
            rows.filter_map(|r| r.ok()?.parse().ok()).collect()
        };
        let ip = network.subnet.next_free(&used).ok_or_else(|| {
            EngineError::WrongState(format!(
                "network {} ({}) has no free address left",
                network.name, network.subnet
            ))
        })?;
        let index: u32 = tx
            .query_row(
                "SELECT COALESCE(MAX(idx) + 1, 0) FROM endpoints WHERE box_id = ?1",
                params![box_id],
                |r| r.get(0),
            )
            .db_ctx(ctx)?;
        tx.execute(
            "INSERT INTO endpoints (box_id, network_id, ip, idx) VALUES (?1, ?2, ?3, ?4)",
            params![box_id, network.id, ip.to_string(), index],
        )
        .db_ctx(ctx)?;
        tx.commit().db_ctx(ctx)?;
        Ok(EndpointRecord {
            box_id: box_id.to_string(),
            network: network.clone(),
            ip,
            index,
        })
    }

    fn remove_endpoint(&self, box_id: &str, network_id: &str) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM endpoints WHERE box_id = ?1 AND network_id = ?2",
                params![box_id, network_id],
            )
            .db_ctx(|| "cannot remove the box from the network".into())?;
        Ok(())
    }
}

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
                    Ok(attach(&ep, ns.as_fd(), &others)?)
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

    /// Rewrites /etc/hosts of every box on a user network (name resolution between them).
    fn refresh_hosts(&self, network_id: &str) -> Result<()> {
        for ep in self.db().endpoints_of_network(network_id)? {
            if ep.network.name != DEFAULT_NETWORK {
                self.write_hosts(&ep.box_id)?;
            }
        }
        Ok(())
    }

    /// Writes box `id`'s hosts file: localhost, its own name on each of its addresses, and the
    /// boxes sharing a user network with it (by name and short id). The file keeps its inode
    /// (the box sees it through a bind mount).
    pub(crate) fn write_hosts(&self, id: &str) -> Result<()> {
        let Some(rec) = self.db().get(id)? else {
            return Ok(());
        };
        if matches!(
            rec.spec.network,
            NetworkMode::Host | NetworkMode::Container(_)
        ) {
            return Ok(());
        }
        let hostname = crate::oci::hostname_of(&rec.spec, id);
        let text = hosts_text(self.db(), id, &rec.name, &hostname)?;
        let path = self.paths().box_dir(id).join("hosts");
        std::fs::write(&path, text).map_err(|e| EngineError::io_path("write", &path, e))
    }
}

/// The hosts file of box `id`.
pub fn hosts_text(db: &BoxDb, id: &str, name: &str, hostname: &str) -> Result<String> {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let own = db.endpoints_of_box(id)?;
    if own.is_empty() {
        text += &format!("127.0.1.1\t{hostname}\n");
    }
    for ep in &own {
        text += &format!("{}\t{hostname} {name}\n", ep.ip);
    }
    for ep in own.iter().filter(|e| e.network.name != DEFAULT_NETWORK) {
        for peer in db.endpoints_of_network(&ep.network.id)? {
            if peer.box_id == id {
                continue;
            }
            if let Some(r) = db.get(&peer.box_id)? {
                let short = &peer.box_id[..12.min(peer.box_id.len())];
                text += &format!("{}\t{} {short}\n", peer.ip, r.name);
            }
        }
    }
    Ok(text)
}

fn attach(
    ep: &EndpointRecord,
    netns: std::os::fd::BorrowedFd<'_>,
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
    netns: std::os::fd::BorrowedFd<'_>,
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
