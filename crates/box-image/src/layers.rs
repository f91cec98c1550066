//! The layer store: each layer unpacked once into `layers/<chain-hex>/`, as its own overlay
//! lower directory. A layer is unpacked into `layers/.tmp-<unique>/` (flocked while in use) and
//! renamed into place only when complete; a racing unpack of the same layer loses the rename
//! and discards its copy. `open` removes `.tmp-*` leftovers of dead processes.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::content::{lock_exclusive, remove_tree, remove_unlocked_entries, unique_name};
use crate::db::LayerRecord;
use crate::digest::{Digest, Digester};
use crate::error::{ImageError, IoContext, Result};
use crate::unpack::{unpack, UnpackOptions, UnpackStats};

const TMP_PREFIX: &str = ".tmp-";

/// Unpacked layers under one directory (normally `<data>/layers`).
#[derive(Clone, Debug)]
pub struct LayerStore {
    dir: PathBuf,
}

/// The chain id of a layer: its diff id for a bottom layer, else
/// `sha256("<parent chain id> <diff id>")` (OCI image spec).
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => {
            let mut d = Digester::new();
            d.update(p.to_string().as_bytes());
            d.update(b" ");
            d.update(diff_id.to_string().as_bytes());
            d.finish()
        }
    }
}

/// The chain ids of a stack of diff ids, bottom first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let c = chain_id(out.last(), d);
        out.push(c);
    }
    out
}

impl LayerStore {
    /// Opens (creating) the store at `dir`, removing unpacks that died half-way.
    pub fn open(dir: &Path) -> Result<LayerStore> {
        fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
        remove_unlocked_entries(dir, |n| n.starts_with(TMP_PREFIX))?;
        Ok(LayerStore {
            dir: dir.to_path_buf(),
        })
    }

    /// Same as the free function [`chain_id`].
    pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        chain_id(parent, diff_id)
    }

    /// Where the layer `chain_id` lives (whether or not it exists).
    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex())
    }

    /// Whether the layer is unpacked.
    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.path(chain_id).is_dir()
    }

    /// Unpacks `reader` (an uncompressed tar) into a fresh temporary directory. Nothing is
    /// visible under its chain id until [`PendingLayer::publish`].
    pub fn unpack_pending<R: Read>(&self, reader: R, opts: &UnpackOptions) -> Result<PendingLayer> {
        let tmp = self.dir.join(unique_name(".tmp"));
        fs::create_dir(&tmp).ctx(|| format!("cannot create {}", tmp.display()))?;
        let mut pending = PendingLayer {
            tmp,
            lock: None,
            stats: None,
            dir: self.dir.clone(),
        };
        let lock =
            File::open(&pending.tmp).ctx(|| format!("cannot open {}", pending.tmp.display()))?;
        lock_exclusive(&lock).ctx(|| format!("cannot lock {}", pending.tmp.display()))?;
        pending.lock = Some(lock);
        // Overlay lower dirs must be searchable; a "./" tar entry may set it differently.
        fs::set_permissions(&pending.tmp, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("cannot chmod {}", pending.tmp.display()))?;
        pending.stats = Some(unpack(reader, &pending.tmp, opts)?);
        Ok(pending)
    }

    /// Unpacks a layer once: when `expected_diff_id` is given and the layer exists, returns it
    /// without reading `reader`; otherwise unpacks, checks the diff id, and publishes.
    pub fn ensure<R: Read>(
        &self,
        parent: Option<&Digest>,
        expected_diff_id: Option<&Digest>,
        reader: R,
        opts: &UnpackOptions,
    ) -> Result<LayerRecord> {
        if let Some(diff) = expected_diff_id {
            let cid = chain_id(parent, diff);
            if self.exists(&cid) {
                return Ok(LayerRecord {
                    chain_id: cid,
                    diff_id: diff.clone(),
                    parent: parent.cloned(),
                    size: 0,
                });
            }
        }
        let pending = self.unpack_pending(reader, opts)?;
        pending.verify_diff_id(expected_diff_id)?;
        pending.publish(parent)
    }

    /// Removes a layer directory (renamed aside first, so it disappears at once).
    pub fn remove(&self, chain_id: &Digest) -> Result<()> {
        let path = self.path(chain_id);
        let aside = self.dir.join(unique_name(".tmp-rm"));
        match fs::rename(&path, &aside) {
            Ok(()) => remove_tree(&aside).ctx(|| format!("cannot remove {}", aside.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io_path("remove layer", &path, e)),
        }
    }

    /// Chain ids of every unpacked layer.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).ctx(|| format!("cannot list {}", self.dir.display()))? {
            let e = e.ctx(|| format!("cannot list {}", self.dir.display()))?;
            if let Some(d) = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A layer unpacked into a temporary directory, not yet visible. Dropping it removes it.
pub struct PendingLayer {
    tmp: PathBuf,
    lock: Option<File>,
    stats: Option<UnpackStats>,
    dir: PathBuf,
}

impl PendingLayer {
    /// What the unpack did (diff id included).
    pub fn stats(&self) -> Option<&UnpackStats> {
        self.stats.as_ref()
    }

    /// The diff id of the unpacked tar.
    pub fn diff_id(&self) -> Result<&Digest> {
        self.stats
            .as_ref()
            .map(|s| &s.diff_id)
            .ok_or_else(|| ImageError::Tar("layer was not unpacked".to_string()))
    }

    /// Fails with a digest mismatch when `expected` is given and differs from the diff id.
    pub fn verify_diff_id(&self, expected: Option<&Digest>) -> Result<()> {
        let actual = self.diff_id()?;
        match expected {
            Some(e) if e != actual => Err(ImageError::DigestMismatch {
                what: "layer diff id (uncompressed tar vs the config's rootfs.diff_ids)"
                    .to_string(),
                expected: e.clone(),
                actual: actual.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Renames the layer into `layers/<chain-hex>`; when another unpack got there first, ours
    /// is discarded and theirs kept (same content by construction).
    pub fn publish(mut self, parent: Option<&Digest>) -> Result<LayerRecord> {
        let diff_id = self.diff_id()?.clone();
        let size = self.stats.as_ref().map_or(0, |s| s.tar_size);
        let cid = chain_id(parent, &diff_id);
        let target = self.dir.join(cid.hex());
        match fs::rename(&self.tmp, &target) {
            Ok(()) => {
                if let Ok(d) = File::open(&self.dir) {
                    // Durability of the new name; unpacked files themselves are not fsynced
                    // (a crash before the DB row is written leaves a layer `prune` removes).
                    let _ = d.sync_all();
                }
                self.tmp = PathBuf::new();
            }
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST))
                    && target.is_dir() => {}
            Err(e) => {
                return Err(ImageError::io(
                    format!("cannot move layer into {}", target.display()),
                    e,
                ))
            }
        }
        Ok(LayerRecord {
            chain_id: cid,
            diff_id,
            parent: parent.cloned(),
            size,
        })
    }
}

impl Drop for PendingLayer {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = remove_tree(&self.tmp);
        }
        self.lock.take();
    }
}
