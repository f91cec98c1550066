//! Image metadata in SQLite (`<data>/box.db`, shared with the rest of Box): images, their names,
//! their layers, and the unpacked layers themselves. Multi-row writes are transactions; inserts of
//! content-addressed rows are `INSERT OR IGNORE`, so racing pulls agree.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::digest::Digest;
use crate::error::{DbContext, ImageError, Result};

/// The schema version this build writes (component `image` of table `schema_versions`).
pub const SCHEMA_VERSION: i64 = 1;

const COMPONENT: &str = "image";

/// Migrations: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE images (
    id                  TEXT PRIMARY KEY,   -- config digest
    manifest_digest     TEXT NOT NULL,
    manifest_media_type TEXT NOT NULL,
    created             TEXT,               -- from the config, RFC 3339
    added               INTEGER NOT NULL,   -- unix seconds when stored here
    size                INTEGER NOT NULL,   -- sum of compressed layer sizes + config
    os                  TEXT NOT NULL,
    architecture        TEXT NOT NULL,
    config              TEXT NOT NULL       -- the config JSON, verbatim
);
CREATE TABLE names (
    name     TEXT PRIMARY KEY,              -- canonical reference, e.g. docker.io/library/busybox:latest
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE INDEX names_image ON names(image_id);
CREATE TABLE image_layers (
    image_id    TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,           -- 0 = bottom layer
    chain_id    TEXT NOT NULL,
    diff_id     TEXT NOT NULL,
    blob_digest TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL,           -- compressed blob size
    PRIMARY KEY (image_id, idx)
);
CREATE INDEX image_layers_chain ON image_layers(chain_id);
CREATE TABLE layers (
    chain_id TEXT PRIMARY KEY,
    diff_id  TEXT NOT NULL,
    parent   TEXT,                          -- parent chain id, NULL for a bottom layer
    size     INTEGER NOT NULL               -- uncompressed tar size
);
"#];

/// One image as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// The image id: the config digest.
    pub id: Digest,
    /// The manifest's digest (what a registry serves it by).
    pub manifest_digest: Digest,
    /// The manifest's media type (OCI or Docker schema 2).
    pub manifest_media_type: String,
    /// `created` from the config, when present.
    pub created: Option<String>,
    /// Unix seconds when this image was stored here.
    pub added: i64,
    /// Compressed layers plus config, in bytes.
    pub size: u64,
    /// The config's `os`.
    pub os: String,
    /// The config's `architecture`.
    pub architecture: String,
    /// The config JSON, verbatim.
    pub config: String,
    /// Names (canonical references) pointing at this image, sorted.
    pub names: Vec<String>,
    /// Layers, bottom first.
    pub layers: Vec<ImageLayer>,
}

impl ImageRecord {
    /// Docker's short id: the first 12 hex digits of the id.
    pub fn short_id(&self) -> &str {
        self.id.short()
    }
}

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayer {
    /// Chain id of the layer stack up to this one (names `layers/<hex>`).
    pub chain_id: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Digest of the blob as distributed (compressed).
    pub blob_digest: Digest,
    /// The blob's media type.
    pub media_type: String,
    /// The blob's size in bytes.
    pub size: u64,
}

/// One unpacked layer in `layers/<chain-hex>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRecord {
    /// Chain id (the directory name).
    pub chain_id: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Chain id of the layer below, `None` for a bottom layer.
    pub parent: Option<Digest>,
    /// Uncompressed tar size in bytes.
    pub size: u64,
}

/// The metadata database. Safe to share between threads (one connection behind a mutex);
/// several processes coordinate through SQLite's locks (WAL, 10 s busy timeout).
pub struct ImageDb {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for ImageDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageDb").field("path", &self.path).finish()
    }
}

fn digest_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Digest> {
    let s: String = row.get(i)?;
    s.parse().map_err(|e: ImageError| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn opt_digest_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<Digest>> {
    let s: Option<String> = row.get(i)?;
    s.map(|s| {
        s.parse().map_err(|e: ImageError| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

fn u64_col(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(i)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const IMAGE_COLS: &str =
    "id, manifest_digest, manifest_media_type, created, added, size, os, architecture, config";

fn image_row(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        id: digest_col(row, 0)?,
        manifest_digest: digest_col(row, 1)?,
        manifest_media_type: row.get(2)?,
        created: row.get(3)?,
        added: row.get(4)?,
        size: u64_col(row, 5)?,
        os: row.get(6)?,
        architecture: row.get(7)?,
        config: row.get(8)?,
        names: Vec::new(),
        layers: Vec::new(),
    })
}

/// Opens Box's SQLite database (shared by the image store and the engine): WAL, a 10 s busy
/// timeout, synchronous=NORMAL, foreign keys. Switching a fresh file to WAL can answer "busy"
/// without waiting (another process is creating it at the same moment), so that step retries.
pub fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mode: rusqlite::Result<String> =
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0));
        let result = match mode {
            Ok(m) if m.eq_ignore_ascii_case("wal") => Ok(()),
            Ok(_) => conn.pragma_update(None, "journal_mode", "WAL"),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Every `box` command is a short process: a checkpoint when its connection closes would
    // make each one pay fsyncs, and delete the WAL so the next one re-creates it (more
    // fsyncs). So the WAL stays, but short: the first connection of a process rebuilds the
    // WAL index by reading every frame written since the last checkpoint (4 MB with SQLite's
    // default of 1000 pages, a few ms per command), so checkpoint every 64 pages (a fsync every
    // few commands) and truncate the file past 1 MiB.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    conn.pragma_update(None, "wal_autocheckpoint", 64)?;
    conn.pragma_update(None, "journal_size_limit", 1 << 20)?;
    Ok(conn)
}

/// What [`migrate_component`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    /// The component's tables are at the latest version.
    Current,
    /// The file was written by a newer Box: its version for the component.
    TooNew(i64),
}

/// Brings one component's tables (image store, engine, …) to the newest of `migrations` (one
/// SQL batch per version, in order), inside one immediate transaction, recording the version in
/// the shared `schema_versions` table.
pub fn migrate_component(
    conn: &mut Connection,
    component: &str,
    migrations: &[&str],
) -> rusqlite::Result<Migration> {
    let latest = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    )?;
    let current: i64 = tx
        .query_row(
            "SELECT version FROM schema_versions WHERE component = ?1",
            [component],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    if current > latest {
        return Ok(Migration::TooNew(current));
    }
    for sql in migrations
        .iter()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.execute_batch(sql)?;
    }
    tx.execute(
        "INSERT INTO schema_versions (component, version) VALUES (?1, ?2)
         ON CONFLICT(component) DO UPDATE SET version = excluded.version",
        params![component, latest],
    )?;
    tx.commit()?;
    Ok(Migration::Current)
}

impl ImageDb {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<ImageDb> {
        let ctx = || format!("cannot open {}", path.display());
        let conn = open_connection(path).db_ctx(ctx)?;
        let db = ImageDb {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        db.migrate()?;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent; keep going.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn();
        match migrate_component(&mut conn, COMPONENT, MIGRATIONS)
            .db_ctx(|| "cannot migrate the image schema".into())?
        {
            Migration::Current => Ok(()),
            Migration::TooNew(found) => Err(ImageError::DbTooNew {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            }),
        }
    }

    /// Records an unpacked layer (ignored when already known).
    pub fn put_layer(&self, layer: &LayerRecord) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO layers (chain_id, diff_id, parent, size) VALUES (?1, ?2, ?3, ?4)",
                params![
                    layer.chain_id.to_string(),
                    layer.diff_id.to_string(),
                    layer.parent.as_ref().map(|p| p.to_string()),
                    to_i64(layer.size)
                ],
            )
            .db_ctx(|| format!("cannot record layer {}", layer.chain_id))?;
        Ok(())
    }

    /// The layer with this chain id.
    pub fn get_layer(&self, chain_id: &Digest) -> Result<Option<LayerRecord>> {
        self.conn()
            .query_row(
                "SELECT chain_id, diff_id, parent, size FROM layers WHERE chain_id = ?1",
                [chain_id.to_string()],
                layer_row,
            )
            .optional()
            .db_ctx(|| format!("cannot read layer {chain_id}"))
    }

    /// Every recorded layer.
    pub fn list_layers(&self) -> Result<Vec<LayerRecord>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT chain_id, diff_id, parent, size FROM layers ORDER BY chain_id")
            .db_ctx(|| "cannot list layers".into())?;
        let rows = st
            .query_map([], layer_row)
            .db_ctx(|| "cannot list layers".into())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .db_ctx(|| "cannot list layers".into())
    }

    /// Forgets a layer row.
    pub fn remove_layer(&self, chain_id: &Digest) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM layers WHERE chain_id = ?1",
                [chain_id.to_string()],
            )
            .db_ctx(|| format!("cannot remove layer {chain_id}"))?;
        Ok(())
    }

    /// Stores an image (ignored when its id is known) and points `names` at it, taking them
    /// from any image that had them, all in one transaction. Returns the ids of images that
    /// lost a name this way.
    pub fn put_image(&self, image: &ImageRecord, names: &[String]) -> Result<Vec<Digest>> {
        let mut conn = self.conn();
        let ctx = || format!("cannot store image {}", image.id);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .db_ctx(ctx)?;
        let inserted = tx
            .execute(
                &format!("INSERT OR IGNORE INTO images ({IMAGE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    image.id.to_string(),
                    image.manifest_digest.to_string(),
                    image.manifest_media_type,
                    image.created,
                    image.added,
                    to_i64(image.size),
                    image.os,
                    image.architecture,
                    image.config
                ],
            )
            .db_ctx(ctx)?;
        if inserted > 0 {
            for (i, l) in image.layers.iter().enumerate() {
                tx.execute(
                    "INSERT OR IGNORE INTO image_layers (image_id, idx, chain_id, diff_id, blob_digest, media_type, size)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        image.id.to_string(),
                        i64::try_from(i).unwrap_or(i64::MAX),
                        l.chain_id.to_string(),
                        l.diff_id.to_string(),
                        l.blob_digest.to_string(),
                        l.media_type,
                        to_i64(l.size)
                    ],
                )
                .db_ctx(ctx)?;
            }
        }
        let mut displaced = Vec::new();
        for name in names {
            let old = set_name_tx(&tx, name, &image.id)?;
            if let Some(old) = old.filter(|o| o != &image.id) {
                displaced.push(old);
            }
        }
        tx.commit().db_ctx(ctx)?;
        Ok(displaced)
    }

    /// The image with this id, with names and layers.
    pub fn get_image(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        let conn = self.conn();
        let img = conn
            .query_row(
                &format!("SELECT {IMAGE_COLS} FROM images WHERE id = ?1"),
                [id.to_string()],
                image_row,
            )
            .optional()
            .db_ctx(|| format!("cannot read image {id}"))?;
        match img {
            Some(mut img) => {
                fill_image(&conn, &mut img)?;
                Ok(Some(img))
            }
            None => Ok(None),
        }
    }

    /// Every image, newest first, with names and layers.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&format!(
                "SELECT {IMAGE_COLS} FROM images ORDER BY added DESC, id"
            ))
            .db_ctx(|| "cannot list images".into())?;
        let mut images = st
            .query_map([], image_row)
            .db_ctx(|| "cannot list images".into())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db_ctx(|| "cannot list images".into())?;
        for img in &mut images {
            fill_image(&conn, img)?;
        }
        Ok(images)
    }

    /// The image a name points at.
    pub fn image_id_by_name(&self, name: &str) -> Result<Option<Digest>> {
        self.conn()
            .query_row("SELECT image_id FROM names WHERE name = ?1", [name], |r| {
                digest_col(r, 0)
            })
            .optional()
            .db_ctx(|| format!("cannot look up name {name}"))
    }

    /// Ids of images whose hex id starts with `hex_prefix` (lowercase hex).
    pub fn image_ids_by_prefix(&self, hex_prefix: &str) -> Result<Vec<Digest>> {
        let conn = self.conn();
        let pattern = format!("sha256:{}%", hex_prefix.replace(['%', '_'], ""));
        let mut st = conn
            .prepare("SELECT id FROM images WHERE id LIKE ?1 ORDER BY id")
            .db_ctx(|| "cannot search image ids".into())?;
        let rows = st
            .query_map([pattern], |r| digest_col(r, 0))
            .db_ctx(|| "cannot search image ids".into())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .db_ctx(|| "cannot search image ids".into())
    }

    /// Points `name` at image `id`; returns the image it pointed at before, if any.
    pub fn set_name(&self, name: &str, id: &Digest) -> Result<Option<Digest>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .db_ctx(|| format!("cannot tag {name}"))?;
        let old = set_name_tx(&tx, name, id)?;
        tx.commit().db_ctx(|| format!("cannot tag {name}"))?;
        Ok(old)
    }

    /// Removes a name; returns whether it existed.
    pub fn remove_name(&self, name: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM names WHERE name = ?1", [name])
            .db_ctx(|| format!("cannot untag {name}"))?;
        Ok(n > 0)
    }

    /// Deletes an image row with its names and layer list (not the blobs or layer dirs).
    pub fn delete_image(&self, id: &Digest) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM images WHERE id = ?1", [id.to_string()])
            .db_ctx(|| format!("cannot delete image {id}"))?;
        Ok(n > 0)
    }

    /// Blobs some image needs: configs, manifests and layer blobs.
    pub fn referenced_blobs(&self) -> Result<HashSet<Digest>> {
        self.digest_set(
            "SELECT id FROM images UNION SELECT manifest_digest FROM images
             UNION SELECT blob_digest FROM image_layers",
        )
    }

    /// Chain ids some image needs.
    pub fn referenced_chain_ids(&self) -> Result<HashSet<Digest>> {
        self.digest_set("SELECT DISTINCT chain_id FROM image_layers")
    }

    fn digest_set(&self, sql: &str) -> Result<HashSet<Digest>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(sql)
            .db_ctx(|| "cannot list references".into())?;
        let rows = st
            .query_map([], |r| digest_col(r, 0))
            .db_ctx(|| "cannot list references".into())?;
        rows.collect::<rusqlite::Result<HashSet<_>>>()
            .db_ctx(|| "cannot list references".into())
    }
}

fn layer_row(row: &Row<'_>) -> rusqlite::Result<LayerRecord> {
    Ok(LayerRecord {
        chain_id: digest_col(row, 0)?,
        diff_id: digest_col(row, 1)?,
        parent: opt_digest_col(row, 2)?,
        size: u64_col(row, 3)?,
    })
}

fn set_name_tx(tx: &rusqlite::Transaction<'_>, name: &str, id: &Digest) -> Result<Option<Digest>> {
    let ctx = || format!("cannot tag {name}");
    let old = tx
        .query_row("SELECT image_id FROM names WHERE name = ?1", [name], |r| {
            digest_col(r, 0)
        })
        .optional()
        .db_ctx(ctx)?;
    tx.execute(
        "INSERT INTO names (name, image_id) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
        params![name, id.to_string()],
    )
    .db_ctx(ctx)?;
    Ok(old)
}

fn fill_image(conn: &Connection, img: &mut ImageRecord) -> Result<()> {
    let ctx = || format!("cannot read image {}", img.id);
    let mut st = conn
        .prepare_cached("SELECT name FROM names WHERE image_id = ?1 ORDER BY name")
        .db_ctx(ctx)?;
    img.names = st
        .query_map([img.id.to_string()], |r| r.get(0))
        .db_ctx(ctx)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .db_ctx(ctx)?;
    let mut st = conn
        .prepare_cached(
            "SELECT chain_id, diff_id, blob_digest, media_type, size FROM image_layers
             WHERE image_id = ?1 ORDER BY idx",
        )
        .db_ctx(ctx)?;
    img.layers = st
        .query_map([img.id.to_string()], |r| {
            Ok(ImageLayer {
                chain_id: digest_col(r, 0)?,
                diff_id: digest_col(r, 1)?,
                blob_digest: digest_col(r, 2)?,
                media_type: r.get(3)?,
                size: u64_col(r, 4)?,
            })
        })
        .db_ctx(ctx)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db_ctx(ctx)?;
    Ok(())
}
