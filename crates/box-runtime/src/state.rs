//! Where boxes are recorded: `<root>/<id>/state.json` (written atomically) and the exec fifo
//! that holds a created box's init until `start`. The OCI status is derived, never stored stale.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};

/// The OCI lifecycle status of a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created (state written, init not yet confirmed).
    Creating,
    /// Created; the init waits for `start`.
    Created,
    /// The user process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The init has exited.
    Stopped,
}

impl Status {
    /// The lowercase name used by the OCI state and runc.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What the runtime remembers about one box between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoxRecord {
    /// The box id.
    pub id: String,
    /// Host pid of the box's init.
    pub pid: i32,
    /// The init's start time in clock ticks since boot (guards against pid reuse).
    pub pid_start_time: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Uid of the user that created the box.
    pub owner: u32,
    /// Whether the box was created without root on the host.
    pub rootless: bool,
    /// The box's cgroup, when it has one.
    pub cgroup: Option<Cgroup>,
    /// The config.json the box was created from.
    pub config: Spec,
}

/// The directory that holds every box's state.
#[derive(Debug, Clone)]
pub struct StateRoot {
    dir: PathBuf,
}

const STATE_FILE: &str = "state.json";
/// Name of the fifo a created box's init waits on.
pub const EXEC_FIFO: &str = "exec.fifo";

impl StateRoot {
    /// The default root: /run/box-runc for root; $XDG_RUNTIME_DIR/box-runc (or /tmp/box-runc-UID)
    /// otherwise — also for uid 0 of a user namespace run by a normal user (rootless podman),
    /// as runc decides it.
    pub fn default_dir() -> PathBuf {
        let uid = nix::unistd::geteuid().as_raw();
        let userns_of_a_user = crate::idmap::in_user_namespace()
            && std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| !d.is_empty())
            && std::env::var("USER").map_or(true, |u| u != "root");
        if uid == 0 && !userns_of_a_user {
            return PathBuf::from("/run/box-runc");
        }
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("box-runc"),
            _ => PathBuf::from(format!("/tmp/box-runc-{uid}")),
        }
    }

    /// Opens (and creates, mode 0700) a state root.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .ctx(|| format!("cannot create state root {}", dir.display()))?;
        }
        Ok(StateRoot { dir })
    }

    /// The state root's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where compiled seccomp filters are cached.
    pub fn seccomp_cache_dir(&self) -> PathBuf {
        self.dir.join(".seccomp-cache")
    }

    /// The directory of box `id`.
    pub fn box_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Claims `id` by creating its directory; fails if it exists.
    pub fn claim(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        let dir = self.box_dir(id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Exists(id.to_string()))
            }
            Err(e) => Err(e).ctx(|| format!("cannot create {}", dir.display())),
        }
    }

    /// Writes a box's record atomically.
    pub fn save(&self, record: &BoxRecord) -> Result<()> {
        let dir = self.box_dir(&record.id);
        let tmp = dir.join(".state.json.tmp");
        let data = serde_json::to_vec(record).map_err(|e| Error::Init(e.to_string()))?;
        let mut f = fs::File::create(&tmp).ctx(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&data)
            .ctx(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, dir.join(STATE_FILE)).ctx(|| "cannot save the box state")?;
        Ok(())
    }

    /// Loads a box's record.
    pub fn load(&self, id: &str) -> Result<BoxRecord> {
        validate_id(id)?;
        let path = self.box_dir(id).join(STATE_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(e).ctx(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_slice(&data).map_err(|e| Error::Config {
            what: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Ids of every recorded box, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let entries =
            fs::read_dir(&self.dir).ctx(|| format!("cannot list {}", self.dir.display()))?;
        for entry in entries.flatten() {
            if entry.path().join(STATE_FILE).is_file() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Removes every trace of box `id` from the state root.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.box_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("cannot remove {}", dir.display())),
        }
    }
}

use std::os::unix::fs::DirBuilderExt;

/// Rejects ids that could escape the state root or confuse tools.
pub fn validate_id(id: &str) -> Result<()> {
    // A leading dot is reserved for the runtime's own entries (e.g. the seccomp cache).
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.+:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Config {
            what: "container id".into(),
            why: format!("{id:?}: use letters, digits and _ - . + : only"),
        })
    }
}

/// The fields of /proc/PID/stat from field 3 (state) on: the comm field before them may hold
/// spaces and parentheses, so they are taken after the last ')'.
pub fn stat_fields_from_state(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().map(String::from).collect())
}

/// The start time (field 22 of /proc/PID/stat) of a live process, `None` if it is gone or a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let fields = stat_fields_from_state(pid)?;
    if matches!(fields.first()?.as_str(), "Z" | "X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl BoxRecord {
    /// Whether the recorded init is still the same live process.
    pub fn init_alive(&self) -> bool {
        self.pid > 0 && process_start_time(self.pid) == Some(self.pid_start_time)
    }

    /// The current status, derived from the process, the exec fifo and the freezer.
    pub fn status(&self, root: &StateRoot) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if root.box_dir(&self.id).join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if let Some(cg) = &self.cgroup {
            if cg.is_enabled() && cg.is_frozen().unwrap_or(false) {
                return Status::Paused;
            }
        }
        Status::Running
    }

    /// The OCI state document (`state` command, and hooks' stdin).
    pub fn oci_state(&self, status: Status) -> serde_json::Value {
        let annotations: HashMap<String, String> =
            self.config.annotations().clone().unwrap_or_default();
        let mut v = serde_json::json!({
            "ociVersion": self.config.version(),
            "id": self.id,
            "status": status.as_str(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
        });
        if status != Status::Stopped {
            v["pid"] = self.pid.into();
        } else {
            v["pid"] = 0.into();
        }
        if !annotations.is_empty() {
            v["annotations"] = serde_json::to_value(annotations).unwrap_or_default();
        }
        v
    }
}

impl BoxRecord {
    /// The name of the user who created the box (its uid when unnamed), as `state` and `list`
    /// show it. Not part of the hooks' state: a user database lookup costs time on every start.
    pub fn owner_name(&self) -> String {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.owner))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| self.owner.to_string())
    }
}

/// Now as RFC 3339 UTC with nanoseconds, e.g. `2026-11-23T07:53:03.123456789Z`.
pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_nanos())
}

/// Formats seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64, nanos: u32) -> String {
    let whole = rfc3339_seconds(secs);
    format!("{}.{nanos:09}Z", &whole[..whole.len() - 1])
}

/// Formats whole seconds since the epoch as RFC 3339 UTC without a fraction
/// (`2024-01-02T03:04:05Z`), the form image configs use.
pub fn rfc3339_seconds(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_seconds_formats_known_dates() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_seconds(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn ids_that_escape_or_confuse_are_rejected() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["abc", "box-1", "a.b_c+d:e", "0123456789abcdef"] {
            assert!(validate_id(good).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_795_420_383, 0), "2026-11-23T07:53:03.000000000Z");
    }

    #[test]
    fn start_time_of_self_is_known_and_of_a_dead_pid_is_none() {
        let me = std::process::id() as i32;
        assert!(process_start_time(me).is_some());
        assert!(process_start_time(i32::MAX).is_none());
    }
}
