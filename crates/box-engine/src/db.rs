//! The `boxes` table in `<data>/box.db` (the database box-image uses too): one row per box,
//! lookups by id, id prefix or name, state changes, and the repair of boxes whose supervisor
//! died.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::error::{DbContext, EngineError, Result};
use crate::spec::{BoxSpec, RestartPolicy};

/// The schema version this build writes (component `engine` of table `schema_versions`).
pub const SCHEMA_VERSION: i64 = 4;

const COMPONENT: &str = "engine";

/// The error [`BoxDb::repair`] records for a box whose supervisor died (a crash, a reboot).
pub const SUPERVISOR_DIED: &str = "supervisor died";

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE boxes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image_id TEXT,
        image_name TEXT NOT NULL,
        created INTEGER NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        pid INTEGER,
        supervisor_pid INTEGER,
        supervisor_start INTEGER,
        exit_code INTEGER,
        oom_killed INTEGER NOT NULL DEFAULT 0,
        started_at INTEGER,
        finished_at INTEGER,
        restart_count INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );",
    // 2: named and anonymous volumes (see `volumes`).
    "CREATE TABLE volumes (
        name TEXT PRIMARY KEY,
        created INTEGER NOT NULL,
        anonymous INTEGER NOT NULL DEFAULT 0
    );",
    // 3: whether the user stopped the box (`unless-stopped` leaves it down at boot).
    "ALTER TABLE boxes ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;",
    // 4: bridge networks and the boxes' addresses on them (see `network`).
    "CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        bridge TEXT NOT NULL UNIQUE,
        subnet TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE endpoints (
        box_id TEXT NOT NULL,
        network_id TEXT NOT NULL,
        ip TEXT NOT NULL,
        idx INTEGER NOT NULL,
        PRIMARY KEY (box_id, network_id),
        UNIQUE (network_id, ip)
    );",
];

const COLUMNS: &str = "id, name, image_id, image_name, created, spec, state, pid, supervisor_pid, \
     supervisor_start, exit_code, oom_killed, started_at, finished_at, restart_count, error, stopped";

/// Where a box is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxState {
    /// Made, never started (or its supervisor has not started it yet).
    Created,
    /// Its main process runs.
    Running,
    /// Frozen.
    Paused,
    /// Its main process ended and its supervisor starts it again after a back-off (restart
    /// policy).
    Restarting,
    /// Its main process ended (or its supervisor died).
    Exited,
    /// Could not be cleaned up; only removal is left.
    Dead,
}

impl BoxState {
    /// The lowercase name stored in the database and shown by `box ps`.
    pub fn as_str(self) -> &'static str {
        match self {
            BoxState::Created => "created",
            BoxState::Running => "running",
            BoxState::Paused => "paused",
            BoxState::Restarting => "restarting",
            BoxState::Exited => "exited",
            BoxState::Dead => "dead",
        }
    }

    /// Whether the box is up: its processes run or are frozen, or its supervisor is about to
    /// start them again (restarting). An active box has a supervisor that records its end.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            BoxState::Running | BoxState::Paused | BoxState::Restarting
        )
    }
}

impl fmt::Display for BoxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BoxState {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "created" => BoxState::Created,
            "running" => BoxState::Running,
            "paused" => BoxState::Paused,
            "restarting" => BoxState::Restarting,
            "exited" => BoxState::Exited,
            "dead" => BoxState::Dead,
            other => {
                return Err(EngineError::invalid(format!(
                    "unknown box state {other:?} in the database"
                )))
            }
        })
    }
}

/// One box as stored. Times are Unix time in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxRecord {
    /// 64 lowercase hex digits.
    pub id: String,
    /// Unique name (generated `adjective_noun` when none was given).
    pub name: String,
    /// The image's id (`sha256:…`); `None` for a `--rootfs DIR` box.
    pub image_id: Option<String>,
    /// The image as the user named it (or the rootfs dir for `--rootfs`).
    pub image_name: String,
    /// When the box was created (ms since the epoch).
    pub created: i64,
    /// What the user asked.
    pub spec: BoxSpec,
    /// Current state.
    pub state: BoxState,
    /// The box's init pid (host view) while running.
    pub pid: Option<i32>,
    /// The supervisor's pid while it lives.
    pub supervisor_pid: Option<i32>,
    /// The supervisor's start time (field 22 of /proc/<pid>/stat) to tell pid reuse apart.
    pub supervisor_start: Option<u64>,
    /// The main process's exit code (128+n for signal n) once exited.
    pub exit_code: Option<i32>,
    /// Whether the kernel OOM-killed it.
    pub oom_killed: bool,
    /// When it last started (ms).
    pub started_at: Option<i64>,
    /// When it last ended (ms).
    pub finished_at: Option<i64>,
    /// How often the restart policy restarted it.
    pub restart_count: u32,
    /// Why it failed, when the engine or supervisor knows.
    pub error: Option<String>,
    /// The user stopped it (stop, kill, close) since it last started: a box with restart
    /// policy `unless-stopped` stays down at boot.
    pub stopped: bool,
}

impl BoxRecord {
    /// A record for a new box (state `created`; `name` empty = generate one on insert).
    pub fn new(
        id: String,
        name: String,
        image_id: Option<String>,
        image_name: String,
        spec: BoxSpec,
    ) -> BoxRecord {
        BoxRecord {
            id,
            name,
            image_id,
            image_name,
            created: now_ms(),
            spec,
            state: BoxState::Created,
            pid: None,
            supervisor_pid: None,
            supervisor_start: None,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            restart_count: 0,
            error: None,
            stopped: false,
        }
    }

    /// Whether the box comes back when the machine starts (`box system boot`): it is down and
    /// its restart policy says so: `always`; `unless-stopped` unless the user stopped it;
    /// `on-failure` when it did not end by itself (its supervisor died with the machine)
    /// and the user did not stop it.
    pub fn restarts_at_boot(&self) -> bool {
        if self.state != BoxState::Exited {
            return false;
        }
        match self.spec.restart {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !self.stopped,
            RestartPolicy::OnFailure(_) => {
                !self.stopped && self.error.as_deref() == Some(SUPERVISOR_DIED)
            }
        }
    }

    /// The first 12 hex digits of the id.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<BoxRecord> {
        let spec_json: String = row.get(5)?;
        let spec: BoxSpec = serde_json::from_str(&spec_json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
        })?;
        let state: String = row.get(6)?;
        let state = state.parse::<BoxState>().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e))
        })?;
        let start: Option<i64> = row.get(9)?;
        let restarts: i64 = row.get(14)?;
        Ok(BoxRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            image_id: row.get(2)?,
            image_name: row.get(3)?,
            created: row.get(4)?,
            spec,
            state,
            pid: row.get(7)?,
            supervisor_pid: row.get(8)?,
            supervisor_start: start.and_then(|s| u64::try_from(s).ok()),
            exit_code: row.get(10)?,
            oom_killed: row.get::<_, i64>(11)? != 0,
            started_at: row.get(12)?,
            finished_at: row.get(13)?,
            restart_count: u32::try_from(restarts).unwrap_or(0),
            error: row.get(15)?,
            stopped: row.get::<_, i64>(16)? != 0,
        })
    }
}

/// A change of a box's state.
#[derive(Debug, Clone, PartialEq)]
pub enum StateChange {
    /// Back to `created` (pid, supervisor and exit fields cleared).
    Created,
    /// The main process runs: its pid, the supervisor's pid and start time, when it started.
    Running {
        /// The box's init pid.
        pid: i32,
        /// The supervisor's pid.
        supervisor_pid: i32,
        /// The supervisor's start time (see [`process_start_time`]).
        supervisor_start: Option<u64>,
        /// When (ms); [`now_ms`] usually.
        started_at: i64,
    },
    /// The main process ended; the supervisor starts it again after a back-off (pid cleared).
    Restarting {
        /// How it ended (shell-style code).
        exit_code: i32,
        /// OOM-killed.
        oom_killed: bool,
        /// When (ms).
        finished_at: i64,
    },
    /// Frozen.
    Paused,
    /// Thawed.
    Unpaused,
    /// Ended (pid and supervisor cleared).
    Exited {
        /// Shell-style code.
        exit_code: i32,
        /// OOM-killed.
        oom_killed: bool,
        /// When (ms).
        finished_at: i64,
        /// Why, when something went wrong.
        error: Option<String>,
    },
    /// Beyond repair; only removal is left.
    Dead {
        /// Why.
        error: String,
    },
}

/// The `boxes` table.
#[derive(Debug)]
pub struct BoxDb {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl BoxDb {
    /// Opens (creating and migrating) the database at `path` (WAL, busy timeout 10 s).
    pub fn open(path: &Path) -> Result<BoxDb> {
        let ctx = || format!("cannot open {}", path.display());
        let conn = box_image::db::open_connection(path).db_ctx(ctx)?;
        let db = BoxDb {
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

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent; keep going.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn();
        match box_image::db::migrate_component(&mut conn, COMPONENT, MIGRATIONS)
            .db_ctx(|| "cannot migrate the engine schema".into())?
        {
            box_image::db::Migration::Current => Ok(()),
            box_image::db::Migration::TooNew(found) => Err(EngineError::WrongState(format!(
                "{} has engine schema version {found}, newer than this box supports \
                 ({SCHEMA_VERSION}): upgrade box",
                self.path.display()
            ))),
        }
    }

    /// Inserts a new box. An empty `name` gets a generated `adjective_noun` one (with a number
    /// appended when all are taken). A taken name fails with [`EngineError::NameInUse`].
    /// Returns the record as stored.
    pub fn insert(&self, record: &BoxRecord) -> Result<BoxRecord> {
        let mut rec = record.clone();
        let spec = serde_json::to_string(&rec.spec).map_err(|source| EngineError::Json {
            context: "cannot encode the box spec".into(),
            source,
        })?;
        let generate = rec.name.is_empty();
        for attempt in 0..64u32 {
            if generate {
                rec.name = generate_name(attempt)?;
            }
            let res = self.conn().execute(
                &format!(
                    "INSERT INTO boxes ({COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
                ),
                params![
                    rec.id,
                    rec.name,
                    rec.image_id,
                    rec.image_name,
                    rec.created,
                    spec,
                    rec.state.as_str(),
                    rec.pid,
                    rec.supervisor_pid,
                    rec.supervisor_start.and_then(|s| i64::try_from(s).ok()),
                    rec.exit_code,
                    i64::from(rec.oom_killed),
                    rec.started_at,
                    rec.finished_at,
                    i64::from(rec.restart_count),
                    rec.error,
                    i64::from(rec.stopped),
                ],
            );
            match res {
                Ok(_) => return Ok(rec),
                Err(e) if is_unique_violation(&e) => {
                    if let Some(holder) = self.by_name(&rec.name)? {
                        if generate {
                            continue;
                        }
                        return Err(EngineError::NameInUse {
                            name: rec.name.clone(),
                            short_id: holder.short_id().to_string(),
                        });
                    }
                    // The id collided (64 random hex digits: practically never).
                    return Err(EngineError::WrongState(format!(
                        "box id {} exists already",
                        rec.id
                    )));
                }
                Err(e) => {
                    return Err(EngineError::db(
                        format!("cannot record box {}", rec.short_id()),
                        e,
                    ))
                }
            }
        }
        Err(EngineError::WrongState(
            "cannot generate a free box name: give one with --name".into(),
        ))
    }

    /// The box with this full id.
    pub fn get(&self, id: &str) -> Result<Option<BoxRecord>> {
        self.query_one(&format!("SELECT {COLUMNS} FROM boxes WHERE id = ?1"), id)
    }

    /// The box with this name.
    pub fn by_name(&self, name: &str) -> Result<Option<BoxRecord>> {
        self.query_one(
            &format!("SELECT {COLUMNS} FROM boxes WHERE name = ?1"),
            name,
        )
    }

    /// Finds a box as Docker does: full id, then name, then unique id prefix.
    pub fn find(&self, name_or_id: &str) -> Result<BoxRecord> {
        if name_or_id.is_empty() {
            return Err(EngineError::NoSuchBox(String::new()));
        }
        if let Some(r) = self.get(name_or_id)? {
            return Ok(r);
        }
        if let Some(r) = self.by_name(name_or_id)? {
            return Ok(r);
        }
        let is_hex = name_or_id.len() < 64
            && name_or_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex {
            let conn = self.conn();
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM boxes WHERE substr(id, 1, ?2) = ?1 LIMIT 2"
                ))
                .db_ctx(|| "cannot look up boxes".into())?;
            let found: Vec<BoxRecord> = stmt
                .query_map(
                    params![name_or_id, name_or_id.len() as i64],
                    BoxRecord::from_row,
                )
                .db_ctx(|| "cannot look up boxes".into())?
                .collect::<rusqlite::Result<_>>()
                .db_ctx(|| "cannot read boxes".into())?;
            let count = found.len();
            let mut it = found.into_iter();
            return match (it.next(), count) {
                (Some(r), 1) => Ok(r),
                (None, _) => Err(EngineError::NoSuchBox(name_or_id.to_string())),
                _ => {
                    let n: i64 = conn
                        .query_row(
                            "SELECT COUNT(*) FROM boxes WHERE substr(id, 1, ?2) = ?1",
                            params![name_or_id, name_or_id.len() as i64],
                            |r| r.get(0),
                        )
                        .db_ctx(|| "cannot count boxes".into())?;
                    Err(EngineError::AmbiguousBox {
                        prefix: name_or_id.to_string(),
                        count: usize::try_from(n).unwrap_or(count),
                    })
                }
            };
        }
        Err(EngineError::NoSuchBox(name_or_id.to_string()))
    }

    /// Every box, newest first.
    pub fn list(&self) -> Result<Vec<BoxRecord>> {
        self.records("ORDER BY created DESC, id")
    }

    /// The records `SELECT … FROM boxes <rest>` returns.
    fn records(&self, rest: &str) -> Result<Vec<BoxRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {COLUMNS} FROM boxes {rest}"))
            .db_ctx(|| "cannot list boxes".into())?;
        let rows = stmt
            .query_map([], BoxRecord::from_row)
            .db_ctx(|| "cannot list boxes".into())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db_ctx(|| "cannot read boxes".into())?;
        Ok(rows)
    }

    /// The ids of every box (no record decoded: cheap whatever the number of boxes).
    pub fn ids(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id FROM boxes")
            .db_ctx(|| "cannot list boxes".into())?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .db_ctx(|| "cannot list boxes".into())?
            .collect::<rusqlite::Result<Vec<String>>>()
            .db_ctx(|| "cannot read boxes".into())?;
        Ok(rows)
    }

    /// Boxes that have, or may have, a supervisor (running, paused, restarting, or created with
    /// one recorded): what [`BoxDb::repair`] looks at. Ended boxes are not decoded, so every
    /// command's repair pass costs the same however many boxes have ended.
    fn watched(&self) -> Result<Vec<BoxRecord>> {
        self.records(
            "WHERE state IN ('running', 'paused', 'restarting') \
             OR (state = 'created' AND supervisor_pid IS NOT NULL)",
        )
    }

    /// Applies a state change to box `id`.
    pub fn update_state(&self, id: &str, change: &StateChange) -> Result<()> {
        let conn = self.conn();
        let ctx = || format!("cannot update the state of box {id}");
        let n = match change {
            StateChange::Created => conn.execute(
                "UPDATE boxes SET state = 'created', pid = NULL, supervisor_pid = NULL, \
                 supervisor_start = NULL, exit_code = NULL, oom_killed = 0, error = NULL \
                 WHERE id = ?1",
                params![id],
            ),
            StateChange::Running {
                pid,
                supervisor_pid,
                supervisor_start,
                started_at,
            } => conn.execute(
                "UPDATE boxes SET state = 'running', pid = ?2, supervisor_pid = ?3, \
                 supervisor_start = ?4, started_at = ?5, exit_code = NULL, oom_killed = 0, \
                 error = NULL, stopped = 0 WHERE id = ?1",
                params![
                    id,
                    pid,
                    supervisor_pid,
                    supervisor_start.and_then(|s| i64::try_from(s).ok()),
                    started_at
                ],
            ),
            StateChange::Restarting {
                exit_code,
                oom_killed,
                finished_at,
            } => conn.execute(
                "UPDATE boxes SET state = 'restarting', pid = NULL, exit_code = ?2, \
                 oom_killed = ?3, finished_at = ?4 WHERE id = ?1",
                params![id, exit_code, i64::from(*oom_killed), finished_at],
            ),
            StateChange::Paused => conn.execute(
                "UPDATE boxes SET state = 'paused' WHERE id = ?1",
                params![id],
            ),
            StateChange::Unpaused => conn.execute(
                "UPDATE boxes SET state = 'running' WHERE id = ?1 AND state = 'paused'",
                params![id],
            ),
            StateChange::Exited {
                exit_code,
                oom_killed,
                finished_at,
                error,
            } => conn.execute(
                "UPDATE boxes SET state = 'exited', pid = NULL, supervisor_pid = NULL, \
                 supervisor_start = NULL, exit_code = ?2, oom_killed = ?3, finished_at = ?4, \
                 error = ?5 WHERE id = ?1",
                params![id, exit_code, i64::from(*oom_killed), finished_at, error],
            ),
            StateChange::Dead { error } => conn.execute(
                "UPDATE boxes SET state = 'dead', pid = NULL, supervisor_pid = NULL, \
                 supervisor_start = NULL, error = ?2 WHERE id = ?1",
                params![id, error],
            ),
        }
        .db_ctx(ctx)?;
        if n == 0 && !matches!(change, StateChange::Unpaused) {
            return Err(EngineError::NoSuchBox(id.to_string()));
        }
        Ok(())
    }

    /// Records the supervisor of box `id` (before the box runs: the state stays as it is).
    pub fn set_supervisor(&self, id: &str, pid: i32, start: Option<u64>) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE boxes SET supervisor_pid = ?2, supervisor_start = ?3 WHERE id = ?1",
                params![id, pid, start.and_then(|s| i64::try_from(s).ok())],
            )
            .db_ctx(|| format!("cannot record the supervisor of box {id}"))?;
        if n == 0 {
            return Err(EngineError::NoSuchBox(id.to_string()));
        }
        Ok(())
    }

    /// Records that the user stopped box `id` (see [`BoxRecord::stopped`]); cleared when it
    /// runs again.
    pub fn mark_stopped(&self, id: &str) -> Result<()> {
        self.conn()
            .execute("UPDATE boxes SET stopped = 1 WHERE id = ?1", params![id])
            .db_ctx(|| format!("cannot record that box {id} was stopped"))?;
        Ok(())
    }

    /// Adds one to the restart count of box `id`; returns the new count.
    pub fn increment_restart_count(&self, id: &str) -> Result<u32> {
        let conn = self.conn();
        conn.execute(
            "UPDATE boxes SET restart_count = restart_count + 1 WHERE id = ?1",
            params![id],
        )
        .db_ctx(|| format!("cannot count a restart of box {id}"))?;
        let n: Option<i64> = conn
            .query_row(
                "SELECT restart_count FROM boxes WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .db_ctx(|| format!("cannot read the restart count of box {id}"))?;
        match n {
            Some(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
            None => Err(EngineError::NoSuchBox(id.to_string())),
        }
    }

    /// Renames box `id` (the new name must be valid and free).
    pub fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        crate::spec::validate_name(new_name)?;
        let res = self.conn().execute(
            "UPDATE boxes SET name = ?2 WHERE id = ?1",
            params![id, new_name],
        );
        match res {
            Ok(0) => Err(EngineError::NoSuchBox(id.to_string())),
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                let short_id = self
                    .by_name(new_name)?
                    .map(|r| r.short_id().to_string())
                    .unwrap_or_default();
                Err(EngineError::NameInUse {
                    name: new_name.to_string(),
                    short_id,
                })
            }
            Err(e) => Err(EngineError::db(format!("cannot rename box {id}"), e)),
        }
    }

    /// Deletes the row of box `id` (no error when it is gone already).
    pub fn delete(&self, id: &str) -> Result<()> {
        let ctx = || format!("cannot delete box {id}");
        let mut conn = self.conn();
        let tx = conn.transaction().db_ctx(ctx)?;
        // Its addresses go with it.
        tx.execute("DELETE FROM endpoints WHERE box_id = ?1", params![id])
            .db_ctx(ctx)?;
        tx.execute("DELETE FROM boxes WHERE id = ?1", params![id])
            .db_ctx(ctx)?;
        tx.commit().db_ctx(ctx)?;
        Ok(())
    }

    /// Marks boxes whose supervisor is gone: a `running`/`paused`/`restarting` box (or a `created` one with
    /// a recorded supervisor) whose supervisor pid is dead or now belongs to another process
    /// becomes `exited` with the error "supervisor died". Returns the ids repaired.
    pub fn repair(&self) -> Result<Vec<String>> {
        let mut repaired = Vec::new();
        for rec in self.watched()? {
            let alive = rec
                .supervisor_pid
                .is_some_and(|pid| process_alive(pid, rec.supervisor_start));
            if alive {
                continue;
            }
            // Only the state this pass saw is changed: a supervisor that just wrote its own
            // final state wins.
            let n = self
                .conn()
                .execute(
                    "UPDATE boxes SET state = 'exited', pid = NULL, supervisor_pid = NULL, \
                     supervisor_start = NULL, finished_at = COALESCE(finished_at, ?3), \
                     error = ?5 \
                     WHERE id = ?1 AND state = ?2 AND supervisor_pid IS ?4",
                    params![
                        rec.id,
                        rec.state.as_str(),
                        now_ms(),
                        rec.supervisor_pid,
                        SUPERVISOR_DIED
                    ],
                )
                .db_ctx(|| format!("cannot repair box {}", rec.id))?;
            if n > 0 {
                repaired.push(rec.id);
            }
        }
        Ok(repaired)
    }

    fn query_one(&self, sql: &str, arg: &str) -> Result<Option<BoxRecord>> {
        self.conn()
            .query_row(sql, params![arg], BoxRecord::from_row)
            .optional()
            .db_ctx(|| "cannot look up a box".into())
    }
}

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new box id: 64 hex digits from /dev/urandom.
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| EngineError::io("cannot open /dev/urandom", e))?;
    f.read_exact(buf)
        .map_err(|e| EngineError::io("cannot read /dev/urandom", e))
}

const ADJECTIVES: &[&str] = &[
    "admiring", "bold", "brave", "calm", "clever", "cool", "dazzling", "eager", "elegant", "epic",
    "fervent", "friendly", "gallant", "gentle", "happy", "hopeful", "jolly", "keen", "kind",
    "lucid", "merry", "modest", "nifty", "noble", "peaceful", "quirky", "relaxed", "serene",
    "sharp", "stoic", "sweet", "tender", "trusting", "upbeat", "vibrant", "wizardly", "youthful",
    "zealous",
];

const NOUNS: &[&str] = &[
    "babbage", "bohr", "curie", "darwin", "dijkstra", "einstein", "euler", "fermat", "feynman",
    "galileo", "gauss", "goodall", "hopper", "hypatia", "kepler", "knuth", "lamarr", "lovelace",
    "meitner", "newton", "noether", "pascal", "pike", "ritchie", "shannon", "thompson", "turing",
    "wozniak", "yalow",
];

/// A docker-style random name (`happy_turing`); after the first tries a number is appended.
pub fn generate_name(attempt: u32) -> Result<String> {
    let mut b = [0u8; 4];
    random_bytes(&mut b)?;
    let a = ADJECTIVES[usize::from(b[0]) % ADJECTIVES.len()];
    let n = NOUNS[usize::from(b[1]) % NOUNS.len()];
    if attempt < 8 {
        Ok(format!("{a}_{n}"))
    } else {
        Ok(format!(
            "{a}_{n}{}",
            u16::from_le_bytes([b[2], b[3]]) % 1000
        ))
    }
}

/// The start time of process `pid` (field 22 of /proc/<pid>/stat, clock ticks after boot).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); field 22 is index 19 from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` lives (not a zombie) and, when `start` is given, is the same process
/// that had that start time.
pub fn process_alive(pid: i32, start: Option<u64>) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return false;
    }
    match start {
        None => true,
        Some(s) => process_start_time(pid) == Some(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(tag: &str) -> (PathBuf, BoxDb) {
        let dir = std::env::temp_dir().join(format!(
            "box-engine-db-{tag}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = BoxDb::open(&dir.join("box.db")).unwrap();
        (dir, db)
    }

    fn rec(name: &str) -> BoxRecord {
        BoxRecord::new(
            new_id().unwrap(),
            name.into(),
            Some("sha256:00".into()),
            "busybox".into(),
            BoxSpec::new("busybox", &["true"]),
        )
    }

    #[test]
    fn boot_brings_back_what_the_restart_policy_says() {
        let (dir, db) = temp_db("boot");
        let down = |policy: &str, stopped: bool, error: Option<&str>| {
            let mut r = rec("");
            r.spec.restart = policy.parse().unwrap();
            r.state = BoxState::Exited;
            r.stopped = stopped;
            r.error = error.map(String::from);
            r
        };
        assert!(down("always", false, None).restarts_at_boot());
        assert!(down("always", true, None).restarts_at_boot());
        assert!(down("unless-stopped", false, None).restarts_at_boot());
        assert!(!down("unless-stopped", true, None).restarts_at_boot());
        assert!(down("on-failure", false, Some(SUPERVISOR_DIED)).restarts_at_boot());
        assert!(!down("on-failure", false, None).restarts_at_boot());
        assert!(!down("on-failure", true, Some(SUPERVISOR_DIED)).restarts_at_boot());
        assert!(!down("no", false, Some(SUPERVISOR_DIED)).restarts_at_boot());
        let mut created = down("always", false, None);
        created.state = BoxState::Created;
        assert!(!created.restarts_at_boot());

        // The flag is stored, and cleared when the box runs again.
        let a = db.insert(&rec("flagged")).unwrap();
        db.mark_stopped(&a.id).unwrap();
        assert!(db.get(&a.id).unwrap().unwrap().stopped);
        db.update_state(
            &a.id,
            &StateChange::Running {
                pid: 1,
                supervisor_pid: 1,
                supervisor_start: None,
                started_at: now_ms(),
            },
        )
        .unwrap();
        assert!(!db.get(&a.id).unwrap().unwrap().stopped);
        db.update_state(
            &a.id,
            &StateChange::Restarting {
                exit_code: 3,
                oom_killed: false,
                finished_at: now_ms(),
            },
        )
        .unwrap();
        let r = db.get(&a.id).unwrap().unwrap();
        assert_eq!(
            (r.state, r.pid, r.exit_code),
            (BoxState::Restarting, None, Some(3))
        );
        assert!(r.state.is_active());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn insert_find_rename_delete() {
        let (dir, db) = temp_db("crud");
        let a = db.insert(&rec("web")).unwrap();
        assert_eq!(db.find("web").unwrap().id, a.id);
        assert_eq!(db.find(&a.id).unwrap().name, "web");
        assert_eq!(db.find(&a.id[..8]).unwrap().name, "web");
        assert_eq!(db.find(&a.id).unwrap(), a);
        let e = db.insert(&rec("web")).unwrap_err();
        assert!(matches!(e, EngineError::NameInUse { .. }), "{e}");
        let b = db.insert(&rec("")).unwrap();
        assert!(b.name.contains('_'), "{}", b.name);
        assert!(matches!(
            db.rename(&b.id, "web").unwrap_err(),
            EngineError::NameInUse { .. }
        ));
        db.rename(&b.id, "api").unwrap();
        assert_eq!(db.find("api").unwrap().id, b.id);
        assert_eq!(db.list().unwrap().len(), 2);
        db.delete(&a.id).unwrap();
        assert!(matches!(
            db.find("web").unwrap_err(),
            EngineError::NoSuchBox(_)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ambiguous_prefix_is_refused() {
        let (dir, db) = temp_db("prefix");
        let mut a = rec("a");
        a.id = format!("ab{}", "0".repeat(62));
        let mut b = rec("b");
        b.id = format!("ab{}", "1".repeat(62));
        db.insert(&a).unwrap();
        db.insert(&b).unwrap();
        assert!(matches!(
            db.find("ab").unwrap_err(),
            EngineError::AmbiguousBox { count: 2, .. }
        ));
        assert_eq!(db.find("ab0").unwrap().name, "a");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn state_changes_and_repair() {
        let (dir, db) = temp_db("state");
        let a = db.insert(&rec("alive")).unwrap();
        let d = db.insert(&rec("dead")).unwrap();
        let me = std::process::id() as i32;
        db.update_state(
            &a.id,
            &StateChange::Running {
                pid: me,
                supervisor_pid: me,
                supervisor_start: process_start_time(me),
                started_at: now_ms(),
            },
        )
        .unwrap();
        // A pid that cannot exist (above pid_max's largest value).
        db.update_state(
            &d.id,
            &StateChange::Running {
                pid: 1,
                supervisor_pid: 4_194_305,
                supervisor_start: None,
                started_at: now_ms(),
            },
        )
        .unwrap();
        assert_eq!(db.repair().unwrap(), vec![d.id.clone()]);
        let d2 = db.find(&d.id).unwrap();
        assert_eq!(d2.state, BoxState::Exited);
        assert_eq!(d2.error.as_deref(), Some("supervisor died"));
        assert_eq!(d2.pid, None);
        assert_eq!(db.find(&a.id).unwrap().state, BoxState::Running);
        // Pid reuse: same pid, another start time.
        db.update_state(
            &a.id,
            &StateChange::Running {
                pid: me,
                supervisor_pid: me,
                supervisor_start: process_start_time(me).map(|s| s + 1),
                started_at: now_ms(),
            },
        )
        .unwrap();
        assert_eq!(db.repair().unwrap(), vec![a.id.clone()]);
        db.update_state(
            &a.id,
            &StateChange::Exited {
                exit_code: 3,
                oom_killed: true,
                finished_at: 5,
                error: None,
            },
        )
        .unwrap();
        let a2 = db.find(&a.id).unwrap();
        assert_eq!(
            (a2.exit_code, a2.oom_killed, a2.finished_at),
            (Some(3), true, Some(5))
        );
        assert_eq!(db.increment_restart_count(&a.id).unwrap(), 1);
        assert!(db.update_state("nope", &StateChange::Paused).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shares_the_file_with_other_components() {
        let (dir, db) = temp_db("shared");
        drop(db);
        let db = BoxDb::open(&dir.join("box.db")).unwrap();
        let v: i64 = db
            .conn()
            .query_row(
                "SELECT version FROM schema_versions WHERE component = 'engine'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ids_are_64_hex() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_id().unwrap());
    }
}
