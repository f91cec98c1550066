//! `box volume create/ls/inspect/rm/prune`, and `box rm -v`'s removal of anonymous volumes.

use anyhow::{bail, Result};
use box_engine::engine::Engine;
use box_engine::volumes::VolumeRecord;
use serde_json::{json, Value};

use super::cli::{Format, VolumeCommand};

/// Runs one `box volume …` subcommand.
pub fn volume(engine: &Engine, cmd: VolumeCommand) -> Result<()> {
    match cmd {
        VolumeCommand::Create { name } => {
            let v = engine.volume_create(name.as_deref())?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls { quiet, format } => list(engine, quiet, format)?,
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for n in &names {
                match engine.volume_get(n) {
                    Ok(v) => out.push(describe(engine, &v)?),
                    Err(e) => missing.push(e.to_string()),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            if !missing.is_empty() {
                bail!("{}", missing.join("; "));
            }
        }
        VolumeCommand::Rm { force, names } => {
            let mut failed = Vec::new();
            for n in &names {
                match engine.volume_remove(n, force) {
                    Ok(v) => println!("{}", v.name),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if !failed.is_empty() {
                bail!("{}", failed.join("; "));
            }
        }
        VolumeCommand::Prune { force: _ } => {
            let removed = engine.volume_prune()?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &removed {
                    println!("{n}");
                }
            }
            println!("Total reclaimed volumes: {}", removed.len());
        }
    }
    Ok(())
}

fn list(engine: &Engine, quiet: bool, format: Format) -> Result<()> {
    let vols = engine.volume_list()?;
    if quiet {
        for v in &vols {
            println!("{}", v.name);
        }
        return Ok(());
    }
    if format == Format::Json {
        let v: Vec<Value> = vols
            .iter()
            .map(|v| describe(engine, v))
            .collect::<Result<_>>()?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
    for v in &vols {
        rows.push(vec!["local".to_string(), v.name.clone()]);
    }
    crate::table::print(&rows, 5)?;
    Ok(())
}

/// Docker's `volume inspect` fields, plus the boxes that mount it.
fn describe(engine: &Engine, v: &VolumeRecord) -> Result<Value> {
    let users: Vec<String> = engine
        .volume_users(&v.name)?
        .into_iter()
        .map(|b| b.name)
        .collect();
    Ok(json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.created,
        "Anonymous": v.anonymous,
        "Scope": "local",
        "UsedBy": users,
    }))
}
