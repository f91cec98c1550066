//! `box commit` (a new image: the box's image layers plus one layer made from its snapshot's
//! upper dir, overlay whiteouts turned back into OCI `.wh.` entries) and `box container
//! prune` (remove every stopped box).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use box_image::digest::Digest;
use box_image::image::ImageStore;
use box_image::snapshot::{MountKind as SnapKind, Snapshot};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::db::{self, BoxRecord};
use crate::engine::Engine;
use crate::error::{EngineError, IoContext, Result};

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

impl Engine {
    /// Makes an image from a box (`box commit BOX [IMAGE[:TAG]]`): the box's image layers plus
    /// one layer with what the box changed, and the image's config with the box's Cmd,
    /// Entrypoint, Env, WorkingDir and User. Named `name` when given. Returns the image.
    pub fn commit(
        &self,
        name_or_id: &str,
        name: Option<&str>,
        comment: Option<&str>,
    ) -> Result<box_image::db::ImageRecord> {
        let rec = self.db().find(name_or_id)?;
        if rec.spec.rootfs.is_some() {
            return Err(EngineError::Unsupported(format!(
                "box {} runs a --rootfs directory, not an image: use box export, then box \
                 import",
                rec.name
            )));
        }
        let image_id = rec.image_id.clone().ok_or_else(|| {
            EngineError::WrongState(format!("box {} has no image recorded", rec.name))
        })?;
        let image = self.images().resolve(&image_id)?;
        let snap = Snapshot::open(&self.paths().data, &rec.id)?;
        if snap.kind() == Some(SnapKind::Copy) {
            return Err(EngineError::Unsupported(format!(
                "box {} has a copied (not overlay) snapshot: box commit needs overlay; use box \
                 export, then box import",
                rec.name
            )));
        }
        let _lease = self.images().lease()?;
        // The layer: a plain tar of the upper dir, written once to learn its digest.
        let tmp_dir = self.paths().data.join("tmp");
        fs::create_dir_all(&tmp_dir).ctx(|| format!("cannot create {}", tmp_dir.display()))?;
        let tmp = tmp_dir.join(format!("commit-{}.tar", rec.id));
        let result = (|| {
            let digest = write_layer(&snap.upper(), &tmp, self.paths().rootless)?;
            let parent = image.layers.last().map(|l| l.chain_id.clone());
            let file = fs::File::open(&tmp).ctx(|| format!("cannot read {}", tmp.display()))?;
            let layer_size = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.images().ingest_layer_stream(
                parent.as_ref(),
                file,
                &digest,
                LAYER_TAR,
                Some(&digest),
            )?;
            let config = commit_config(&image.config, &rec, &digest, comment)?;
            let config_digest = Digest::of_bytes(&config);
            let mut layers: Vec<Value> = image
                .layers
                .iter()
                .map(|l| {
                    json!({"mediaType": l.media_type, "digest": l.blob_digest.to_string(),
                           "size": l.size})
                })
                .collect();
            layers.push(json!({"mediaType": LAYER_TAR, "digest": digest.to_string(),
                               "size": layer_size}));
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(),
                           "size": config.len()},
                "layers": layers,
            });
            let manifest = serde_json::to_vec(&manifest).map_err(|source| EngineError::Json {
                context: "cannot encode the manifest".into(),
                source,
            })?;
            let names: Vec<String> = name.map(|n| vec![n.to_string()]).unwrap_or_default();
            Ok(commit_to(self.images(), &manifest, &config, &names)?)
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    /// Removes every box that is not running, paused or being started (`box container
    /// prune`); returns the removed records.
    pub fn prune_boxes(&self) -> Result<Vec<BoxRecord>> {
        let mut removed = Vec::new();
        for b in self.db().list()? {
            let alive = b
                .supervisor_pid
                .is_some_and(|pid| db::process_alive(pid, b.supervisor_start));
            if b.state.is_active() || alive {
                continue;
            }
            removed.push(self.remove(&b.id, false)?);
        }
        Ok(removed)
    }
}

fn commit_to(
    store: &ImageStore,
    manifest: &[u8],
    config: &[u8],
    names: &[String],
) -> box_image::error::Result<box_image::db::ImageRecord> {
    store.commit_image(manifest, config, names)
}

/// The image's config with the box's settings, the new diff id and a history entry.
fn commit_config(
    image_config: &str,
    rec: &BoxRecord,
    diff_id: &Digest,
    comment: Option<&str>,
) -> Result<Vec<u8>> {
    let json_err = |source| EngineError::Json {
        context: "cannot read the image's config".into(),
        source,
    };
    let mut v: Value = serde_json::from_str(image_config).map_err(json_err)?;
    let now = box_runtime::state::now_rfc3339();
    let cfg = &mut v["config"];
    if !cfg.is_object() {
        *cfg = json!({});
    }
    let s = &rec.spec;
    if let Some(cmd) = &s.cmd {
        cfg["Cmd"] = json!(cmd);
    }
    if let Some(ep) = &s.entrypoint {
        cfg["Entrypoint"] = json!(ep);
    }
    if !s.env.is_empty() {
        let image_env: Vec<String> = cfg["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        cfg["Env"] = json!(crate::oci::merge_env(&image_env, &s.env));
    }
    if let Some(w) = &s.workdir {
        cfg["WorkingDir"] = json!(w);
    }
    if let Some(u) = &s.user {
        cfg["User"] = json!(u);
    }
    v["created"] = json!(now);
    if !v["rootfs"].is_object() {
        v["rootfs"] = json!({"type": "layers", "diff_ids": []});
    }
    match v["rootfs"]["diff_ids"].as_array_mut() {
        Some(ids) => ids.push(json!(diff_id.to_string())),
        None => v["rootfs"]["diff_ids"] = json!([diff_id.to_string()]),
    }
    let mut entry = json!({"created": now, "created_by": format!("box commit {}", rec.name)});
    if let Some(c) = comment {
        entry["comment"] = json!(c);
    }
    match v["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => v["history"] = json!([entry]),
    }
    serde_json::to_vec(&v).map_err(|source| EngineError::Json {
        context: "cannot encode the new image's config".into(),
        source,
    })
}

/// Writes the upper dir `upper` as an OCI layer tar to `out`; returns its sha256.
fn write_layer(upper: &Path, out: &Path, rootless: bool) -> Result<Digest> {
    let file = fs::File::create(out).ctx(|| format!("cannot create {}", out.display()))?;
    let hashing = HashWriter {
        inner: io::BufWriter::new(file),
        hash: Sha256::new(),
    };
    let mut tar = tar::Builder::new(hashing);
    tar.follow_symlinks(false);
    let io_err = |e| EngineError::io(format!("cannot make a layer of {}", upper.display()), e);
    add_upper(&mut tar, upper, Path::new(""), rootless).map_err(io_err)?;
    let mut w = tar.into_inner().map_err(io_err)?;
    w.flush().map_err(io_err)?;
    let hex: String = w
        .hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Digest::from_hex(&hex)?)
}

/// Adds the entries below `upper/rel`: a whiteout (0/0 char device) becomes an empty
/// `.wh.NAME`, an opaque directory gets a `.wh..wh..opq` entry.
fn add_upper<W: Write>(
    tar: &mut tar::Builder<W>,
    upper: &Path,
    rel: &Path,
    rootless: bool,
) -> io::Result<()> {
    let dir = upper.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let full = entry.path();
        let rel_path = rel.join(&name);
        let meta = fs::symlink_metadata(&full)?;
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            let mut wh = std::ffi::OsString::from(".wh.");
            wh.push(&name);
            append_empty(tar, &rel.join(wh))?;
            continue;
        }
        if meta.is_dir() {
            tar.append_dir(&rel_path, &full)?;
            if is_opaque(&full, rootless) {
                append_empty(tar, &rel_path.join(".wh..wh..opq"))?;
            }
            add_upper(tar, upper, &rel_path, rootless)?;
        } else {
            tar.append_path_with_name(&full, &rel_path)?;
        }
    }
    Ok(())
}

fn append_empty<W: Write>(tar: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    tar.append_data(&mut h, path, io::empty())
}

/// Whether overlayfs marked directory `dir` opaque (`trusted.overlay.opaque`, or
/// `user.overlay.opaque` with `userxattr` when rootless).
fn is_opaque(dir: &Path, rootless: bool) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let names: &[&std::ffi::CStr] = if rootless {
        &[c"user.overlay.opaque", c"trusted.overlay.opaque"]
    } else {
        &[c"trusted.overlay.opaque", c"user.overlay.opaque"]
    };
    names.iter().any(|n| {
        let mut buf = [0u8; 4];
        // SAFETY: `c` and `n` are valid C strings and `buf` a writable buffer of the size
        // passed; lgetxattr writes at most that many bytes.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        len >= 1 && buf[0] == b'y'
    })
}

struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_names<R: std::io::Read>(r: R) -> Vec<String> {
        let mut a = tar::Archive::new(r);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn whiteouts_become_wh_entries() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let base = std::env::temp_dir().join(format!("box-commit-test-{}", std::process::id()));
        let upper = base.join("upper");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("opaque")).unwrap();
        fs::write(upper.join("etc/new"), "x").unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let c = std::ffi::CString::new(upper.join("opaque").into_os_string().into_encoded_bytes())
            .unwrap();
        // SAFETY: valid C strings and a one-byte value buffer of the size passed.
        let rc = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0);
        let out = base.join("layer.tar");
        let digest = write_layer(&upper, &out, false).unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(digest, Digest::of_bytes(&bytes));
        let names = tar_names(&bytes[..]);
        assert!(names.contains(&"etc/new".to_string()), "{names:?}");
        assert!(names.contains(&"etc/.wh.gone".to_string()), "{names:?}");
        assert!(
            names.contains(&"opaque/.wh..wh..opq".to_string()),
            "{names:?}"
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
