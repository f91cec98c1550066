//! The `networks` and `endpoints` tables: queries, and addresses given out in one transaction.

use std::net::Ipv4Addr;

use rusqlite::{params, OptionalExtension};

use super::{EndpointRecord, NetworkRecord};
use crate::db::BoxDb;
use crate::error::{DbContext, EngineError, Result};

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

    pub(super) fn insert_network(&self, n: &NetworkRecord) -> Result<()> {
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

    pub(super) fn delete_network(&self, id: &str) -> Result<()> {
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
    pub(super) fn add_endpoint(
        &self,
        box_id: &str,
        network: &NetworkRecord,
    ) -> Result<EndpointRecord> {
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

    pub(super) fn remove_endpoint(&self, box_id: &str, network_id: &str) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM endpoints WHERE box_id = ?1 AND network_id = ?2",
                params![box_id, network_id],
            )
            .db_ctx(|| "cannot remove the box from the network".into())?;
        Ok(())
    }
}
