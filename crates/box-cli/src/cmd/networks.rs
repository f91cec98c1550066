//! `box network create/ls/inspect/rm/connect/disconnect`, `box port`, and the network part of
//! `box inspect`.

use anyhow::{bail, Result};
use box_engine::db::BoxRecord;
use box_engine::engine::Engine;
use box_engine::network::NetworkView;
use serde_json::{json, Map, Value};

use super::cli::{Format, NetworkCommand};

/// Runs one `box network …` subcommand.
pub fn network(engine: &Engine, cmd: NetworkCommand) -> Result<()> {
    match cmd {
        NetworkCommand::Create { subnet, name } => {
            let n = engine.network_create(&name, subnet.as_deref())?;
            println!("{}", n.id);
        }
        NetworkCommand::Ls { quiet, format } => list(engine, quiet, format)?,
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(describe(&engine.network_inspect(n)?));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Rm { names } => {
            let mut failed = Vec::new();
            for n in &names {
                match engine.network_remove(n) {
                    Ok(rec) => println!("{}", rec.name),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if !failed.is_empty() {
                bail!("{}", failed.join("; "));
            }
        }
        NetworkCommand::Connect { network, r#box } => {
            engine.network_connect(&network, &r#box)?;
        }
        NetworkCommand::Disconnect { network, r#box } => {
            engine.network_disconnect(&network, &r#box)?;
        }
    }
    Ok(())
}

fn list(engine: &Engine, quiet: bool, format: Format) -> Result<()> {
    let nets = engine.network_list()?;
    if quiet {
        for n in &nets {
            println!("{}", n.name);
        }
        return Ok(());
    }
    if format == Format::Json {
        let v: Vec<Value> = nets
            .iter()
            .map(|n| engine.network_inspect(&n.id).map(|v| describe(&v)))
            .collect::<std::result::Result<_, _>>()?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut rows = vec![vec![
        "NETWORK ID".to_string(),
        "NAME".to_string(),
        "DRIVER".to_string(),
        "SUBNET".to_string(),
        "BRIDGE".to_string(),
    ]];
    for n in &nets {
        rows.push(vec![
            n.id[..12].to_string(),
            n.name.clone(),
            "bridge".to_string(),
            n.subnet.to_string(),
            n.bridge.clone(),
        ]);
    }
    crate::table::print(&rows, 3)?;
    Ok(())
}

/// docker's `network inspect` fields.
fn describe(v: &NetworkView) -> Value {
    let mut boxes = Map::new();
    for (name, ep) in &v.boxes {
        boxes.insert(
            ep.box_id.clone(),
            json!({
                "Name": name,
                "IPv4Address": format!("{}/{}", ep.ip, v.network.subnet.prefix),
                "MacAddress": ep.mac(),
                "Interface": ep.box_if(),
            }),
        );
    }
    json!({
        "Name": v.network.name,
        "Id": v.network.id,
        "Created": v.network.created,
        "Driver": "bridge",
        "Scope": "local",
        "IPAM": {"Config": [{"Subnet": v.network.subnet.to_string(), "Gateway": v.gateway.to_string()}]},
        "Options": {"com.docker.network.bridge.name": v.network.bridge},
        "Containers": boxes,
    })
}

/// `box port BOX`: its published ports, docker's way (`80/tcp -> 0.0.0.0:8080`).
pub fn port(engine: &Engine, name: &str) -> Result<()> {
    let rec = engine.get(name)?;
    for p in &rec.spec.ports {
        println!("{p}");
    }
    Ok(())
}

/// The `NetworkSettings` of `box inspect`.
pub fn settings(engine: &Engine, rec: &BoxRecord) -> Value {
    let mut ports = Map::new();
    for p in &rec.spec.ports {
        let key = format!("{}/{}", p.box_port, p.proto);
        let host_ip = p
            .host_ip
            .map(|ip| ip.to_string())
            .unwrap_or("0.0.0.0".into());
        let entry = json!({"HostIp": host_ip, "HostPort": p.host_port.to_string()});
        match ports.get_mut(&key) {
            Some(Value::Array(list)) => list.push(entry),
            _ => {
                ports.insert(key, json!([entry]));
            }
        }
    }
    let mut networks = Map::new();
    let eps = engine.db().endpoints_of_box(&rec.id).unwrap_or_default();
    for ep in &eps {
        networks.insert(
            ep.network.name.clone(),
            json!({
                "NetworkID": ep.network.id,
                "IPAddress": ep.ip.to_string(),
                "IPPrefixLen": ep.network.subnet.prefix,
                "Gateway": ep.network.subnet.gateway().to_string(),
                "MacAddress": ep.mac(),
                "Interface": ep.box_if(),
            }),
        );
    }
    let first = eps.first();
    json!({
        "NetworkMode": rec.spec.network.to_string(),
        "IPAddress": first.map(|e| e.ip.to_string()).unwrap_or_default(),
        "Gateway": first.map(|e| e.network.subnet.gateway().to_string()).unwrap_or_default(),
        "MacAddress": first.map(|e| e.mac()).unwrap_or_default(),
        "Ports": ports,
        "Networks": networks,
    })
}
