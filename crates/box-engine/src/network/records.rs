//! The records of networks and of boxes' places on them.

use std::net::Ipv4Addr;

use box_net::bridge::BridgeNet;
use box_net::subnet::{mac_for, mac_text, Subnet};
use rusqlite::Row;
use serde::Serialize;

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
    pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<NetworkRecord> {
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

    pub(super) fn bridge_net(&self) -> BridgeNet {
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
