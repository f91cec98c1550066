//! Volumes: directories Box owns, `<data>/volumes/<name>/_data`, recorded in the `volumes`
//! table of box.db, mounted into boxes by name (`-v NAME:/path`, `--mount type=volume`) or
//! anonymously (`-v /path`). A volume made for a box starts with the image's content at its
//! mount point (copy-up), as Docker's do. Volumes outlive boxes; `box rm -v` removes a box's
//! anonymous ones, `box volume prune` every unused one.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use box_image::snapshot::Snapshot;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::db::{self, BoxRecord};
use crate::engine::Engine;
use crate::error::{DbContext, EngineError, IoContext, Result};
use crate::spec::{validate_name, BoxSpec, MountKind, MountSpec};

/// One volume as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Unique name (64 hex digits for an anonymous volume).
    pub name: String,
    /// When it was made (ms since the epoch).
    pub created: i64,
    /// Made for one box by `-v /path` (removed with `box rm -v`).
    pub anonymous: bool,
    /// The directory mounted into boxes: `<data>/volumes/<name>/_data`.
    pub mountpoint: PathBuf,
}

/// A volume mount resolved for one box: the volume and whether this create made it.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedVolumes {
    /// The spec as stored (anonymous volumes' names filled in).
    pub stored: BoxSpec,
    /// The spec given to the OCI builder (volume mounts turned into bind mounts of `_data`).
    pub runtime: BoxSpec,
    /// Volumes this create made (to copy up into, and to remove again on failure).
    pub created: Vec<(String, String)>,
}

impl Engine {
    /// `<data>/volumes`.
    fn volumes_dir(&self) -> PathBuf {
        self.paths().data.join("volumes")
    }

    /// `<data>/volumes/<name>/_data`.
    pub fn volume_data_dir(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name).join("_data")
    }

    fn volume_record(&self, name: &str, created: i64, anonymous: bool) -> VolumeRecord {
        VolumeRecord {
            name: name.to_string(),
            created,
            anonymous,
            mountpoint: self.volume_data_dir(name),
        }
    }

    /// Makes a volume (`box volume create [NAME]`): a generated 64-hex name when `None`. An
    /// existing volume of that name is returned as it is (Docker's behaviour).
    pub fn volume_create(&self, name: Option<&str>) -> Result<VolumeRecord> {
        Ok(self.volume_create_inner(name, false)?.0)
    }

    /// Makes the volume (or finds it); returns it and whether it was made now.
    fn volume_create_inner(
        &self,
        name: Option<&str>,
        anonymous: bool,
    ) -> Result<(VolumeRecord, bool)> {
        let name = match name {
            Some(n) => {
                validate_name(n).map_err(|_| {
                    EngineError::invalid(format!(
                        "invalid volume name {n:?}: use letters, digits, '_', '.' and '-', \
                         starting with a letter or digit"
                    ))
                })?;
                n.to_string()
            }
            None => db::new_id()?,
        };
        if let Some(v) = self.volume_get_opt(&name)? {
            return Ok((v, false));
        }
        let data = self.volume_data_dir(&name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&data)
            .ctx(|| format!("cannot create {}", data.display()))?;
        let created = db::now_ms();
        let inserted = self
            .db()
            .conn()
            .execute(
                "INSERT OR IGNORE INTO volumes (name, created, anonymous) VALUES (?1, ?2, ?3)",
                params![name, created, i64::from(anonymous)],
            )
            .db_ctx(|| format!("cannot record volume {name}"))?;
        if inserted == 0 {
            // Another process made it at the same moment: use theirs.
            return Ok((self.volume_get(&name)?, false));
        }
        Ok((self.volume_record(&name, created, anonymous), true))
    }

    fn volume_get_opt(&self, name: &str) -> Result<Option<VolumeRecord>> {
        let row = self
            .db()
            .conn()
            .query_row(
                "SELECT created, anonymous FROM volumes WHERE name = ?1",
                [name],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? != 0)),
            )
            .optional()
            .db_ctx(|| format!("cannot look up volume {name}"))?;
        Ok(row.map(|(created, anon)| self.volume_record(name, created, anon)))
    }

    /// The volume called `name`.
    pub fn volume_get(&self, name: &str) -> Result<VolumeRecord> {
        self.volume_get_opt(name)?.ok_or_else(|| {
            EngineError::InvalidSpec(format!(
                "no such volume: {name} (see box volume ls, or make it with box volume create \
                 {name})"
            ))
        })
    }

    /// Every volume, by name.
    pub fn volume_list(&self) -> Result<Vec<VolumeRecord>> {
        let rows: Vec<(String, i64, bool)> = {
            let conn = self.db().conn();
            let mut stmt = conn
                .prepare("SELECT name, created, anonymous FROM volumes ORDER BY name")
                .db_ctx(|| "cannot list volumes".into())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)))
                .db_ctx(|| "cannot list volumes".into())?
                .collect::<rusqlite::Result<Vec<_>>>()
                .db_ctx(|| "cannot read volumes".into())?;
            rows
        };
        Ok(rows
            .into_iter()
            .map(|(n, c, a)| self.volume_record(&n, c, a))
            .collect())
    }

    /// The boxes (any state) whose spec mounts volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<BoxRecord>> {
        let mut boxes = self.db().list()?;
        boxes.retain(|b| uses_volume(&b.spec, name));
        Ok(boxes)
    }

    /// Removes a volume and its data. A volume that a box (running or not) mounts is refused
    /// unless `force`.
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<VolumeRecord> {
        let vol = self.volume_get(name)?;
        if !force {
            let users = self.volume_users(name)?;
            if let Some(b) = users.first() {
                return Err(EngineError::WrongState(format!(
                    "volume {name} is in use by box {} ({}): remove the box first, or remove \
                     the volume anyway with box volume rm -f {name}",
                    b.name,
                    b.short_id()
                )));
            }
        }
        self.db()
            .conn()
            .execute("DELETE FROM volumes WHERE name = ?1", [name])
            .db_ctx(|| format!("cannot remove volume {name}"))?;
        let dir = self.volumes_dir().join(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::io_path("remove", &dir, e)),
        }
        Ok(vol)
    }

    /// Removes every volume no box mounts; returns their names.
    pub fn volume_prune(&self) -> Result<Vec<String>> {
        let boxes = self.db().list()?;
        let mut removed = Vec::new();
        for v in self.volume_list()? {
            if boxes.iter().any(|b| uses_volume(&b.spec, &v.name)) {
                continue;
            }
            self.volume_remove(&v.name, true)?;
            removed.push(v.name);
        }
        Ok(removed)
    }

    /// Removes the anonymous volumes of `rec` (a box being removed: `box rm -v`) that no other
    /// box mounts; returns their names.
    pub fn remove_anonymous_volumes(&self, rec: &BoxRecord) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for m in &rec.spec.mounts {
            if m.kind != MountKind::Volume || m.source.is_empty() {
                continue;
            }
            let Some(v) = self.volume_get_opt(&m.source)? else {
                continue;
            };
            if !v.anonymous {
                continue;
            }
            let others = self.volume_users(&v.name)?;
            if others.iter().any(|b| b.id != rec.id) {
                continue;
            }
            self.volume_remove(&v.name, true)?;
            removed.push(v.name);
        }
        Ok(removed)
    }

    /// Resolves the volume mounts of a box being made: makes missing volumes (anonymous ones
    /// get a generated name) and turns each volume mount into a bind mount of its `_data` for
    /// the runtime.
    pub(crate) fn resolve_volumes(&self, spec: &BoxSpec) -> Result<ResolvedVolumes> {
        let mut stored = spec.clone();
        let mut runtime = spec.clone();
        let mut created = Vec::new();
        let result = (|| -> Result<()> {
            for (i, m) in spec.mounts.iter().enumerate() {
                if m.kind != MountKind::Volume {
                    continue;
                }
                let anonymous = m.source.is_empty();
                let (vol, made) =
                    self.volume_create_inner((!anonymous).then_some(m.source.as_str()), anonymous)?;
                if made {
                    created.push((vol.name.clone(), m.target.clone()));
                }
                stored.mounts[i].source = vol.name.clone();
                runtime.mounts[i] = MountSpec {
                    kind: MountKind::Bind,
                    source: vol.mountpoint.to_string_lossy().into_owned(),
                    target: m.target.clone(),
                    readonly: m.readonly,
                    options: m
                        .options
                        .iter()
                        .filter(|o| !matches!(o.as_str(), "nocopy" | "copy"))
                        .cloned()
                        .collect(),
                };
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.drop_volumes(&created);
            return Err(e);
        }
        Ok(ResolvedVolumes {
            stored,
            runtime,
            created,
        })
    }

    /// Removes volumes a failed create made (best effort).
    pub(crate) fn drop_volumes(&self, created: &[(String, String)]) {
        for (name, _) in created {
            let _ = self.volume_remove(name, true);
        }
    }

    /// Fills the new volumes in `created` (name, mount target) with what the image has at
    /// their targets: the snapshot is mounted for this in a private mount namespace of a
    /// short-lived thread. Targets are resolved inside the snapshot's root (symlinks in the
    /// image cannot lead out of it).
    pub(crate) fn copy_up_volumes(
        &self,
        snap: Snapshot,
        created: &[(String, String)],
        nocopy: &[String],
    ) -> Result<()> {
        let jobs: Vec<(PathBuf, String)> = created
            .iter()
            .filter(|(name, _)| !nocopy.contains(name))
            .map(|(name, target)| (self.volume_data_dir(name), target.clone()))
            .collect();
        if jobs.is_empty() {
            return Ok(());
        }
        std::thread::scope(|scope| {
            scope
                .spawn(move || copy_up_in_private_ns(snap, &jobs))
                .join()
                .unwrap_or_else(|_| {
                    Err(EngineError::WrongState(
                        "the volume copy-up thread panicked".into(),
                    ))
                })
        })
    }
}

/// Whether `spec` mounts the volume `name`.
fn uses_volume(spec: &BoxSpec, name: &str) -> bool {
    spec.mounts
        .iter()
        .any(|m| m.kind == MountKind::Volume && m.source == name)
}

/// Unshares the calling thread's mount namespace and makes every mount in it private, so that
/// what the thread mounts is seen nowhere else and goes away with it.
pub(crate) fn private_mount_ns(what: &str) -> Result<()> {
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS).map_err(|e| {
        EngineError::io(
            format!(
                "cannot make a private mount namespace for {what} (needs root, or box's user \
                 namespace when rootless)"
            ),
            std::io::Error::from(e),
        )
    })?;
    make_mounts_private().map_err(|e| {
        EngineError::io(
            format!("cannot make mounts private for {what}"),
            std::io::Error::from(e),
        )
    })
}

/// Makes every mount of the caller's (new) mount namespace private, recursively: nothing it
/// mounts or unmounts from now on propagates to the namespace it came from.
pub(crate) fn make_mounts_private() -> nix::Result<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

fn copy_up_in_private_ns(mut snap: Snapshot, jobs: &[(PathBuf, String)]) -> Result<()> {
    private_mount_ns("the volume copy-up")?;
    snap.mount()?;
    let res = (|| -> Result<()> {
        let merged = snap.merged();
        let root = fs::File::open(&merged).ctx(|| format!("cannot open {}", merged.display()))?;
        let root = OwnedFd::from(root);
        for (data, target) in jobs {
            let src = match box_runtime::rootfs::safe_path::open_in_root(
                root.as_fd(),
                Path::new(target),
                libc::O_RDONLY | libc::O_DIRECTORY,
            ) {
                Ok(fd) => fd,
                // Nothing (or not a directory) there in the image: the volume starts empty.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => {
                    return Err(EngineError::io(
                        format!("cannot open {target} in the image for the volume copy-up"),
                        e,
                    ))
                }
            };
            let src_path = PathBuf::from(format!("/proc/self/fd/{}", src.as_raw_fd()));
            let meta = fs::metadata(&src_path).ctx(|| format!("cannot read {target}"))?;
            copy_attrs(&meta, data)?;
            copy_tree(&src_path, data)
                .map_err(|e| EngineError::io(format!("cannot copy {target} into the volume"), e))?;
        }
        Ok(())
    })();
    let _ = snap.unmount();
    res
}

/// Copies the entries of directory `src` into directory `dst` (existing), keeping modes,
/// owners, symlinks (not followed), device nodes and fifos. Hard links become copies.
pub fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            match fs::create_dir(&to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from)?;
            let _ = fs::remove_file(&to);
            std::os::unix::fs::symlink(&target, &to)?;
        } else if ft.is_file() {
            let _ = fs::remove_file(&to);
            fs::copy(&from, &to)?;
        } else {
            use std::os::unix::ffi::OsStrExt;
            let c = CString::new(to.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: `c` is a valid NUL-terminated path; mknod only reads it.
            let rc = unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev() as libc::dev_t) };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        copy_attrs(&meta, &to).map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(())
}

/// Owner, mode (not for symlinks) and modification time of `meta` onto `to`.
fn copy_attrs(meta: &fs::Metadata, to: &Path) -> Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .ctx(|| format!("cannot set the owner of {}", to.display()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .ctx(|| format!("cannot set the mode of {}", to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_volume;

    #[test]
    fn uses_volume_matches_named_volume_mounts_only() {
        let mut s = BoxSpec::new("x", &[]);
        s.mounts.push(parse_volume("data:/d").unwrap());
        s.mounts.push(parse_volume("/host:/h").unwrap());
        assert!(uses_volume(&s, "data"));
        assert!(!uses_volume(&s, "host"));
        assert!(!uses_volume(&s, "/host"));
    }

    #[test]
    fn copy_tree_keeps_symlinks_and_modes() {
        let base = std::env::temp_dir().join(format!("box-vol-test-{}", std::process::id()));
        let src = base.join("src");
        let dst = base.join("dst");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(src.join("sub/f"), "hello").unwrap();
        fs::set_permissions(src.join("sub/f"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read_to_string(dst.join("sub/f")).unwrap(), "hello");
        let mode = fs::metadata(dst.join("sub/f")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            PathBuf::from("/etc/passwd")
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
