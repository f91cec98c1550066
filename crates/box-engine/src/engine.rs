//! `Engine`: the facade the CLI and the API use. It makes boxes (image → snapshot → OCI bundle
//! → record), finds, renames, removes, exports and diffs them. Starting and supervising a box
//! is the supervisor's job (see `supervisor`); lifecycle methods build on [`Engine::paths`],
//! [`Engine::db`], [`Engine::images`] and [`Engine::runtime`].

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use box_image::image::ImageStore;
use box_image::reference::Reference;
use box_image::snapshot::{Change, Snapshot};

use crate::db::{self, BoxDb, BoxRecord};
use crate::error::{EngineError, IoContext, Result};
use crate::oci;
use crate::paths::Paths;
use crate::spec::BoxSpec;

/// Orphaned per-box dirs (no record) younger than this are left alone: another process may be
/// in the middle of creating that box.
const ORPHAN_AGE: Duration = Duration::from_secs(120);

/// The engine over one data dir and run dir.
#[derive(Debug)]
pub struct Engine {
    paths: Paths,
    db: BoxDb,
    images: ImageStore,
}

impl Engine {
    /// Opens the engine: makes the data and run dirs, opens the image store and the boxes
    /// table, marks boxes whose supervisor died as exited, and removes per-box leftovers of
    /// creates that crashed before their record was written.
    pub fn open(paths: Paths) -> Result<Engine> {
        for dir in [&paths.data, &paths.run, &paths.boxes_dir()] {
            fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
        }
        let images = ImageStore::open(&paths.data, paths.rootless)?;
        let db = BoxDb::open(&paths.db_path())?;
        let repaired = db.repair()?;
        let engine = Engine { paths, db, images };
        // A dead supervisor could not withdraw its box's published ports or stop its pasta.
        for id in repaired {
            if let Ok(Some(rec)) = engine.db.get(&id) {
                crate::network::unwire(&engine.paths, &id, &rec.spec);
            }
        }
        engine.clean_orphans();
        Ok(engine)
    }

    /// The engine's directories.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The boxes table.
    pub fn db(&self) -> &BoxDb {
        &self.db
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// box-runtime over `<run>/runtime`.
    pub fn runtime(&self) -> Result<box_runtime::Runtime> {
        Ok(box_runtime::Runtime::new(self.paths.runtime_root())?)
    }

    /// Finds an image for a new box: `host` / `host:latest` is built on first use; any other
    /// name must be in the local store (pulling is the CLI's job).
    pub fn resolve_image(&self, name: &str) -> Result<box_image::db::ImageRecord> {
        match self.images.resolve(name) {
            Ok(rec) => Ok(rec),
            Err(box_image::error::ImageError::UnknownImage(_)) if is_host_image(name) => {
                Ok(box_image::host::build_host_image(
                    &self.images,
                    &box_image::host::HostImageOptions::default(),
                )?)
            }
            Err(box_image::error::ImageError::UnknownImage(_)) => {
                Err(EngineError::NoSuchImage(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes a box: resolves the image (or takes `--rootfs DIR`), creates its snapshot (not
    /// mounted: the supervisor mounts it in its own mount namespace), writes
    /// `<data>/boxes/<id>/` (config.json, hostname, hosts, resolv.conf), then records it in
    /// state `created`. On any failure everything made is removed again.
    pub fn create(&self, spec: BoxSpec) -> Result<BoxRecord> {
        spec.validate()?;
        if let Some(name) = &spec.name {
            if let Some(holder) = self.db.by_name(name)? {
                return Err(EngineError::NameInUse {
                    name: name.clone(),
                    short_id: holder.short_id().to_string(),
                });
            }
        }
        let id = db::new_id()?;
        let mut made = Made::new(&self.paths, &id);
        let record = self.create_parts(&spec, &id, &mut made)?;
        made.disarm();
        Ok(record)
    }

    fn create_parts(&self, spec: &BoxSpec, id: &str, made: &mut Made<'_>) -> Result<BoxRecord> {
        let (rootfs, etc_roots, image_config, image_id, image_name) = match &spec.rootfs {
            Some(dir) => {
                let dir = fs::canonicalize(dir)
                    .ctx(|| format!("cannot use --rootfs {}: it does not exist", dir.display()))?;
                if !dir.is_dir() {
                    return Err(EngineError::invalid(format!(
                        "--rootfs {} is not a directory",
                        dir.display()
                    )));
                }
                let name = dir.display().to_string();
                (dir.clone(), vec![dir], None, None, name)
            }
            None => {
                let image = self.resolve_image(&spec.image)?;
                let config = self.images.config_of(&image)?;
                let lowers = self.images.lower_dirs(&image);
                made.snapshot = true;
                let snap = Snapshot::create(&self.paths.data, id, &lowers, self.paths.rootless)?;
                let mut etc_roots = vec![snap.upper()];
                etc_roots.extend(lowers);
                (
                    snap.merged(),
                    etc_roots,
                    Some(config),
                    Some(image.id.to_string()),
                    spec.image.clone(),
                )
            }
        };
        // Named and anonymous volumes become bind mounts of their `_data` dirs; new ones
        // start with the image's content at their mount points.
        let volumes = self.resolve_volumes(spec)?;
        let result = self.create_with_volumes(
            &volumes,
            id,
            made,
            rootfs,
            etc_roots,
            image_config,
            image_id,
            image_name,
        );
        if result.is_err() {
            self.drop_volumes(&volumes.created);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn create_with_volumes(
        &self,
        volumes: &crate::volumes::ResolvedVolumes,
        id: &str,
        made: &mut Made<'_>,
        rootfs: std::path::PathBuf,
        etc_roots: Vec<std::path::PathBuf>,
        image_config: Option<oci_spec::image::ImageConfiguration>,
        image_id: Option<String>,
        image_name: String,
    ) -> Result<BoxRecord> {
        if made.snapshot && !volumes.created.is_empty() {
            let nocopy: Vec<String> = volumes
                .stored
                .mounts
                .iter()
                .filter(|m| m.options.iter().any(|o| o == "nocopy"))
                .map(|m| m.source.clone())
                .collect();
            let snap = Snapshot::open(&self.paths.data, id)?;
            self.copy_up_volumes(snap, &volumes.created, &nocopy)?;
        }
        let exposed: Vec<String> = image_config
            .as_ref()
            .and_then(|c| c.config().as_ref())
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default();
        let mut stored = volumes.stored.clone();
        self.allocate_network(&mut stored, id, &exposed)?;
        let mut spec = volumes.runtime.clone();
        spec.network = stored.network.clone();
        spec.ports = stored.ports.clone();
        let result = self.write_box(
            &spec,
            stored,
            id,
            made,
            &rootfs,
            &etc_roots,
            image_config,
            image_id,
            image_name,
        );
        if result.is_err() {
            let _ = self.release_network(id);
        }
        result
    }

    /// The box's files (config.json, /etc files) and its record.
    #[allow(clippy::too_many_arguments)]
    fn write_box(
        &self,
        spec: &BoxSpec,
        stored: BoxSpec,
        id: &str,
        made: &mut Made<'_>,
        rootfs: &Path,
        etc_roots: &[std::path::PathBuf],
        image_config: Option<oci_spec::image::ImageConfiguration>,
        image_id: Option<String>,
        image_name: String,
    ) -> Result<BoxRecord> {
        let box_dir = self.paths.box_dir(id);
        made.box_dir = true;
        fs::create_dir_all(&box_dir).ctx(|| format!("cannot create {}", box_dir.display()))?;
        let oci_spec = oci::build_spec(
            spec,
            image_config.as_ref(),
            rootfs,
            etc_roots,
            &self.paths,
            id,
        )?;
        let mut oci_spec = oci_spec;
        if let Some(netns) = oci::joined_network(&self.db, spec)? {
            oci::set_network_namespace(&mut oci_spec, &netns);
        }
        oci::write_etc_files(&self.paths, id, &oci::hostname_of(spec, id))?;
        oci::adopt_network_files(&self.paths, &self.db, id, spec)?;
        write_config(&self.paths.config_path(id), &oci_spec)?;
        let record = BoxRecord::new(
            id.to_string(),
            spec.name.clone().unwrap_or_default(),
            image_id,
            image_name,
            stored,
        );
        let record = self.db.insert(&record)?;
        if record.spec.network.bridge_network().is_some() {
            // Its own addresses, and its name in the hosts files of the boxes it shares a
            // user network with (best effort: the box is made).
            let _ = self.write_hosts(id);
            for ep in self.db.endpoints_of_box(id).unwrap_or_default() {
                let _ = self.refresh_hosts(&ep.network.id);
            }
        }
        Ok(record)
    }

    /// Boxes, newest first: all of them, or (`all == false`) the running and paused ones.
    pub fn list(&self, all: bool) -> Result<Vec<BoxRecord>> {
        let mut boxes = self.db.list()?;
        if !all {
            boxes.retain(|b| b.state.is_active());
        }
        Ok(boxes)
    }

    /// A box by full id, name, or unique id prefix.
    pub fn get(&self, name_or_id: &str) -> Result<BoxRecord> {
        self.db.find(name_or_id)
    }

    /// Renames a box; returns the updated record.
    pub fn rename(&self, name_or_id: &str, new_name: &str) -> Result<BoxRecord> {
        let rec = self.db.find(name_or_id)?;
        self.db.rename(&rec.id, new_name)?;
        self.db.find(&rec.id)
    }

    /// Removes a box: its processes (only with `force` when it runs: the supervisor and the
    /// box's processes are killed), its snapshot (unmounted), its dirs, then its record.
    /// Returns the record as it was.
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<BoxRecord> {
        let rec = self.db.find(name_or_id)?;
        let supervisor_alive = rec
            .supervisor_pid
            .is_some_and(|pid| db::process_alive(pid, rec.supervisor_start));
        if (rec.state.is_active() || supervisor_alive) && !force {
            return Err(EngineError::WrongState(format!(
                "box {} is {}: stop it first (box stop {}) or remove it anyway with box rm -f {}",
                rec.name,
                if rec.state.is_active() {
                    rec.state.as_str()
                } else {
                    "being started"
                },
                rec.name,
                rec.name
            )));
        }
        if supervisor_alive {
            if let Some(pid) = rec.supervisor_pid {
                // The supervisor goes first so that no restart policy brings the box back.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let runtime = self.runtime()?;
        match runtime.delete(&rec.id, true) {
            Ok(()) | Err(box_runtime::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        crate::network::unwire(&self.paths, &rec.id, &rec.spec);
        self.remove_files(&rec.id)?;
        self.release_network(&rec.id)?;
        self.db.delete(&rec.id)?;
        Ok(rec)
    }

    fn remove_files(&self, id: &str) -> Result<()> {
        if self.paths.snapshot_dir(id).exists() {
            Snapshot::open(&self.paths.data, id)?.remove()?;
        }
        for dir in [self.paths.box_dir(id), self.paths.box_run_dir(id)] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io_path("remove", &dir, e)),
            }
        }
        Ok(())
    }

    /// Writes the box's root file system as a tar to `writer` (`box export`). An image-based
    /// box's snapshot is mounted for this in a private mount namespace of a short-lived thread,
    /// so nothing is mounted in this process's namespace or the host's.
    pub fn export<W: Write>(&self, name_or_id: &str, writer: W) -> Result<W> {
        let rec = self.db.find(name_or_id)?;
        if let Some(dir) = &rec.spec.rootfs {
            return Ok(box_image::archive::export_dir(dir, writer)?);
        }
        let snap = Snapshot::open(&self.paths.data, &rec.id)?;
        tar_from_private_ns("the export", writer, move |out| export_snapshot(snap, out))
    }

    /// Writes an image's root file system, its layers merged, as a tar to `writer` (`box init
    /// --from IMAGE`). Several layers are merged by a read-only overlay mount in a private mount
    /// namespace of a short-lived thread (the kernel applies whiteouts and opaque directories).
    pub fn flatten_image<W: Write>(&self, image: &str, writer: W) -> Result<W> {
        let record = self.resolve_image(image)?;
        let lowers = self.images.lower_dirs(&record);
        if let [only] = lowers.as_slice() {
            return Ok(box_image::archive::export_dir(only, writer)?);
        }
        let rootless = self.paths.rootless;
        tar_from_private_ns("the image's files", writer, move |out| {
            export_layers(&lowers, rootless, out)
        })
    }

    /// What the box changed in its root file system relative to its image (`box diff`).
    pub fn diff(&self, name_or_id: &str) -> Result<Vec<Change>> {
        let rec = self.db.find(name_or_id)?;
        if rec.spec.rootfs.is_some() {
            return Err(EngineError::Unsupported(format!(
                "box {} runs a --rootfs directory, not an image: there is nothing to diff against",
                rec.name
            )));
        }
        Ok(Snapshot::open(&self.paths.data, &rec.id)?.diff()?)
    }

    /// Removes per-box dirs and snapshots without a record (a create that crashed before its
    /// record was written, a `--rm` supervisor killed after it removed the record), with their
    /// runtime state and cgroups, when older than [`ORPHAN_AGE`]. Best effort.
    fn clean_orphans(&self) {
        let Ok(known) = self.db.ids() else {
            return;
        };
        let known: std::collections::HashSet<String> = known.into_iter().collect();
        let old = |p: &Path| {
            fs::symlink_metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ORPHAN_AGE)
        };
        let is_box_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        for parent in [self.paths.boxes_dir(), self.paths.data.join("snapshots")] {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_box_id(&name) && !known.contains(&name) && old(&entry.path()) {
                    // Its runtime state and cgroups too (a `--rm` supervisor killed after it
                    // removed the record).
                    if let Ok(rt) = self.runtime() {
                        let _ = rt.delete(&name, true);
                    }
                    let _ = self.remove_files(&name);
                }
                // A snapshot being built when its create was killed.
                if name.strip_prefix(".tmp-").is_some_and(is_box_id) && old(&entry.path()) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

/// Whether an image name means the offline `host` image.
fn is_host_image(name: &str) -> bool {
    match Reference::parse(name) {
        Ok(r) => r.digest.is_none() && matches!(r.familiar().as_str(), "host" | "host:latest"),
        Err(_) => false,
    }
}

/// Writes a box's config.json (to a temporary name, then renamed into place).
pub(crate) fn write_config(path: &Path, spec: &oci_spec::runtime::Spec) -> Result<()> {
    let json = serde_json::to_vec(spec).map_err(|source| EngineError::Json {
        context: "cannot encode config.json".into(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, json).ctx(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("cannot write {}", path.display()))
}

/// Runs `work` on a thread of its own in a private mount namespace (its mounts are seen
/// nowhere else and go with the thread), copying the tar it writes into the pipe it is given
/// to `writer`.
fn tar_from_private_ns<W: Write>(
    what: &str,
    mut writer: W,
    work: impl FnOnce(fs::File) -> Result<()> + Send,
) -> Result<W> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EngineError::io(format!("cannot make a pipe for {what}"), e.into()))?;
    std::thread::scope(|scope| -> Result<W> {
        let worker = scope.spawn(move || {
            crate::volumes::private_mount_ns(what)?;
            work(fs::File::from(write_end))
        });
        let mut reader = fs::File::from(read_end);
        let copied = std::io::copy(&mut reader, &mut writer);
        drop(reader);
        worker.join().unwrap_or_else(|_| {
            Err(EngineError::WrongState(format!(
                "the thread for {what} panicked"
            )))
        })?;
        copied.map_err(|e| EngineError::io(format!("cannot write {what}"), e))?;
        Ok(writer)
    })
}

/// Writes the tar of `dir` into `out`, flushed.
fn export_dir_into(dir: &Path, out: fs::File) -> Result<()> {
    box_image::archive::export_dir(dir, std::io::BufWriter::new(out))
        .map_err(EngineError::from)
        .and_then(|mut w| {
            w.flush()
                .map_err(|e| EngineError::io("cannot write the tar", e))
        })
}

/// In a private mount namespace: the image's layers (`lowers`, top first) mounted as a
/// read-only overlay on a temporary directory, written as a tar into `out`.
fn export_layers(lowers: &[std::path::PathBuf], rootless: bool, out: fs::File) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let target = std::env::temp_dir().join(format!("box-flatten-{}", std::process::id()));
    fs::create_dir_all(&target).ctx(|| format!("cannot create {}", target.display()))?;
    let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let data = format!(
        "lowerdir={}{}",
        lowerdir.join(":"),
        if rootless { ",userxattr" } else { "" }
    );
    let mounted = mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
    .map_err(|e| EngineError::io("cannot mount the image's layers", std::io::Error::from(e)));
    let result = mounted.and_then(|()| export_dir_into(&target, out));
    let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
    let _ = fs::remove_dir(&target);
    result
}

/// In a private mount namespace: the box's snapshot mounted (unless it is already) and
/// written as a tar into `out`.
fn export_snapshot(mut snap: Snapshot, out: fs::File) -> Result<()> {
    let was_mounted = snap.is_mounted()?;
    snap.mount()?;
    let res = export_dir_into(&snap.merged(), out);
    if !was_mounted {
        let _ = snap.unmount();
    }
    res
}

/// What a create has made so far; removed on drop unless disarmed.
struct Made<'a> {
    paths: &'a Paths,
    id: String,
    snapshot: bool,
    box_dir: bool,
    armed: bool,
}

impl<'a> Made<'a> {
    fn new(paths: &'a Paths, id: &str) -> Made<'a> {
        Made {
            paths,
            id: id.to_string(),
            snapshot: false,
            box_dir: false,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.box_dir {
            let _ = fs::remove_dir_all(self.paths.box_dir(&self.id));
        }
        if self.snapshot {
            match Snapshot::open(&self.paths.data, &self.id) {
                Ok(s) => {
                    let _ = s.remove();
                }
                Err(_) => {
                    let _ = fs::remove_dir_all(self.paths.snapshot_dir(&self.id));
                    let _ = fs::remove_dir_all(
                        self.paths
                            .data
                            .join("snapshots")
                            .join(format!(".tmp-{}", self.id)),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_image_names() {
        assert!(is_host_image("host"));
        assert!(is_host_image("host:latest"));
        assert!(!is_host_image("host:1"));
        assert!(!is_host_image("busybox"));
        assert!(!is_host_image("example.com/host"));
    }
}
