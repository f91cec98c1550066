//! Boxes' /etc/hosts: their own addresses, and the boxes they share a user network with.

use super::DEFAULT_NETWORK;
use crate::db::BoxDb;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::spec::NetworkMode;

impl Engine {
    /// Rewrites /etc/hosts of every box on a user network (name resolution between them).
    pub(crate) fn refresh_hosts(&self, network_id: &str) -> Result<()> {
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
