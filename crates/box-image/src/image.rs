//! The image store facade every caller uses: blobs, unpacked layers and metadata under one data
//! directory, with the orderings that keep a crash or a racing pull harmless (files first, DB
//! rows after; verified before visible).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::compression::Compression;
use crate::content::{lock_exclusive, BlobWriter, ContentStore};
use crate::db::{ImageDb, ImageLayer, ImageRecord, LayerRecord};
use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::layers::{chain_ids, LayerStore};
use crate::reference::Reference;
use crate::unpack::UnpackOptions;

/// OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema 2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 image config.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Parses an image manifest (OCI or Docker schema 2; they share the JSON shape).
pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest> {
    let m: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::invalid_document("image manifest", e))?;
    if m.schema_version() != 2 {
        return Err(ImageError::invalid_document(
            "image manifest",
            format!("schemaVersion {} (only 2 is supported)", m.schema_version()),
        ));
    }
    Ok(m)
}

/// Parses an image index or Docker manifest list.
pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex> {
    let i: ImageIndex = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::invalid_document("image index", e))?;
    if i.schema_version() != 2 {
        return Err(ImageError::invalid_document(
            "image index",
            format!("schemaVersion {} (only 2 is supported)", i.schema_version()),
        ));
    }
    Ok(i)
}

/// Parses an image config (OCI or Docker).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::invalid_document("image config", e))
}

/// The config's `rootfs.diff_ids`, parsed.
pub fn config_diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse())
        .collect()
}

/// What `remove` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveOutcome {
    /// Names removed.
    pub untagged: Vec<String>,
    /// The image deleted, when its last name went (or it was removed by id).
    pub deleted: Option<Digest>,
}

/// What `prune` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Dangling (nameless) images deleted.
    pub images: Vec<Digest>,
    /// Blobs removed from the content store.
    pub blobs: u64,
    /// Unpacked layers removed.
    pub layers: u64,
    /// Bytes of blobs freed.
    pub blob_bytes: u64,
}

/// A shared hold on the store that keeps `prune` and `remove`'s garbage collection waiting
/// (take one for a whole pull or load: its blobs and layers have no image row until the end).
pub struct StoreLease {
    _lock: File,
}

/// Blobs, layers and image metadata under one data directory.
#[derive(Debug)]
pub struct ImageStore {
    data_dir: PathBuf,
    rootless: bool,
    content: ContentStore,
    layers: LayerStore,
    db: ImageDb,
}

impl ImageStore {
    /// Opens (creating) the store in `data_dir`: `box.db`, `blobs/`, `ingest/`, `layers/`;
    /// leftovers of crashed writers are removed.
    pub fn open(data_dir: &Path, rootless: bool) -> Result<ImageStore> {
        fs::create_dir_all(data_dir).ctx(|| format!("cannot create {}", data_dir.display()))?;
        let content = ContentStore::open(data_dir)?;
        let layers = LayerStore::open(&data_dir.join("layers"))?;
        let db = ImageDb::open(&data_dir.join("box.db"))?;
        Ok(ImageStore {
            data_dir: data_dir.to_path_buf(),
            rootless,
            content,
            layers,
            db,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the store runs rootless.
    pub fn rootless(&self) -> bool {
        self.rootless
    }

    /// The blob store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The unpacked layers.
    pub fn layers(&self) -> &LayerStore {
        &self.layers
    }

    /// The metadata database.
    pub fn db(&self) -> &ImageDb {
        &self.db
    }

    /// Unpack options matching this store.
    pub fn unpack_options(&self) -> UnpackOptions {
        UnpackOptions {
            rootless: self.rootless,
            ignore_ownership: false,
        }
    }

    fn lock(&self, exclusive: bool) -> Result<File> {
        let p = self.data_dir.join("image.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx(|| format!("cannot open {}", p.display()))?;
        if exclusive {
            lock_exclusive(&f).ctx(|| format!("cannot lock {}", p.display()))?;
        } else {
            // SAFETY: flock on a descriptor we own.
            let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_SH) };
            if rc < 0 {
                return Err(ImageError::io_path("lock", &p, io::Error::last_os_error()));
            }
        }
        Ok(f)
    }

    /// Takes a shared lease (see [`StoreLease`]). Do not call `prune` or `remove` in the same
    /// process while holding one: they wait for every lease.
    pub fn lease(&self) -> Result<StoreLease> {
        Ok(StoreLease {
            _lock: self.lock(false)?,
        })
    }

    /// Whether a layer with this chain id is unpacked and recorded.
    pub fn has_layer(&self, chain_id: &Digest) -> Result<bool> {
        Ok(self.layers.exists(chain_id) && self.db.get_layer(chain_id)?.is_some())
    }

    /// Stores a blob read from `reader`, verified against `digest`.
    pub fn ingest_blob<R: Read>(&self, mut reader: R, digest: &Digest) -> Result<u64> {
        let mut w = self.content.writer(Some(digest))?;
        io::copy(&mut reader, &mut w).ctx(|| format!("cannot store blob {digest}"))?;
        Ok(w.commit()?.1)
    }

    /// Streams one layer blob: the compressed bytes go into the content store while they are
    /// decompressed and unpacked. The blob digest is checked at the end, and the diff id against
    /// `expected_diff_id` (the config's `rootfs.diff_ids[i]`) when given; on any mismatch nothing
    /// is stored. `parent` is the chain id of the layer below (None for the bottom layer).
    /// When the layer and blob are both present already, returns at once without reading.
    pub fn ingest_layer_stream<R: Read + Send>(
        &self,
        parent: Option<&Digest>,
        reader: R,
        blob_digest: &Digest,
        media_type: &str,
        expected_diff_id: Option<&Digest>,
    ) -> Result<LayerRecord> {
        let compression = Compression::from_media_type(media_type)?;
        if let Some(diff) = expected_diff_id {
            let cid = LayerStore::chain_id(parent, diff);
            if self.content.has(blob_digest) && self.layers.exists(&cid) {
                if let Some(rec) = self.db.get_layer(&cid)? {
                    return Ok(rec);
                }
            }
        }
        let mut writer = self.content.writer(Some(blob_digest))?;
        let mut source = reader;
        let pending = {
            let tee = Tee {
                inner: &mut source,
                out: &mut writer,
            };
            let tar = compression.decompress_borrowed(tee)?;
            self.layers.unpack_pending(tar, &self.unpack_options())?
        };
        // The decompressor may stop before the end (trailing padding): the blob digest needs all.
        io::copy(&mut source, &mut writer)
            .ctx(|| format!("cannot read the rest of layer blob {blob_digest}"))?;
        writer.commit()?;
        pending.verify_diff_id(expected_diff_id)?;
        let rec = pending.publish(parent)?;
        self.db.put_layer(&rec)?;
        Ok(rec)
    }

    /// Records an image from its manifest and config (both stored as blobs, verified), naming it
    /// `names` (references, normalised). Every layer must have been ingested. Returns the record.
    pub fn commit_image(
        &self,
        manifest_bytes: &[u8],
        config_bytes: &[u8],
        names: &[String],
    ) -> Result<ImageRecord> {
        let manifest = parse_manifest(manifest_bytes)?;
        let manifest_media_type = manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_string());
        let config_digest = Digest::from_oci(manifest.config().digest())?;
        let config = parse_config(config_bytes)?;
        let diff_ids = config_diff_ids(&config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::invalid_document(
                "image",
                format!(
                    "the manifest lists {} layers but the config's rootfs.diff_ids has {}",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            ));
        }
        let names = names
            .iter()
            .map(|n| Reference::parse(n).map(|r| r.to_string()))
            .collect::<Result<Vec<_>>>()?;
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::with_capacity(diff_ids.len());
        let mut size = config_bytes.len() as u64;
        for ((desc, diff_id), chain_id) in manifest.layers().iter().zip(&diff_ids).zip(&chains) {
            let blob_digest = Digest::from_oci(desc.digest())?;
            if self.db.get_layer(chain_id)?.is_none() || !self.layers.exists(chain_id) {
                return Err(ImageError::invalid_document(
                    "image",
                    format!("layer {blob_digest} (chain {chain_id}) was not ingested; pull or load the image again"),
                ));
            }
            if !self.content.has(&blob_digest) {
                return Err(ImageError::invalid_document(
                    "image",
                    format!("layer blob {blob_digest} is not in the content store; pull or load the image again"),
                ));
            }
            size += desc.size();
            layers.push(ImageLayer {
                chain_id: chain_id.clone(),
                diff_id: diff_id.clone(),
                blob_digest,
                media_type: desc.media_type().to_string(),
                size: desc.size(),
            });
        }
        // Blobs before rows: the config must hash to the manifest's config digest.
        self.content
            .write_blob(config_bytes, Some(&config_digest))?;
        let manifest_digest = self.content.write_blob(manifest_bytes, None)?;
        let added = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(0);
        let record = ImageRecord {
            id: config_digest.clone(),
            manifest_digest,
            manifest_media_type,
            created: config.created().clone(),
            added,
            size,
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            config: String::from_utf8_lossy(config_bytes).into_owned(),
            names: Vec::new(),
            layers,
        };
        self.db.put_image(&record, &names)?;
        self.db
            .get_image(&config_digest)?
            .ok_or_else(|| ImageError::UnknownImage(config_digest.to_string()))
    }

    /// Finds an image by name (`busybox`, `docker.io/library/busybox:latest`, `x@sha256:…`),
    /// full id (`sha256:…` or 64 hex) or unique id prefix, in that order.
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageRecord> {
        let id = self.resolve_id(name_or_id)?;
        self.db
            .get_image(&id)?
            .ok_or_else(|| ImageError::UnknownImage(name_or_id.to_string()))
    }

    fn resolve_id(&self, s: &str) -> Result<Digest> {
        if let Ok(d) = s.parse::<Digest>() {
            return match self.db.get_image(&d)? {
                Some(_) => Ok(d),
                None => Err(ImageError::UnknownImage(s.to_string())),
            };
        }
        if let Ok(r) = Reference::parse(s) {
            if let Some(pinned) = &r.digest {
                let by_manifest = self
                    .db
                    .list_images()?
                    .into_iter()
                    .find(|i| &i.manifest_digest == pinned || &i.id == pinned);
                if let Some(i) = by_manifest {
                    return Ok(i.id);
                }
            } else if let Some(id) = self.db.image_id_by_name(&r.to_string())? {
                return Ok(id);
            }
        }
        let is_hex = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex {
            let ids = self.db.image_ids_by_prefix(s)?;
            return match ids.len() {
                0 => Err(ImageError::UnknownImage(s.to_string())),
                1 => Ok(ids
                    .into_iter()
                    .next()
                    .ok_or_else(|| ImageError::UnknownImage(s.to_string()))?),
                count => Err(ImageError::AmbiguousImage {
                    prefix: s.to_string(),
                    count,
                }),
            };
        }
        // A malformed reference that is no id either: say what is wrong with it.
        Reference::parse(s)?;
        Err(ImageError::UnknownImage(s.to_string()))
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        self.db.list_images()
    }

    /// Names image `source` (name or id) also `target` (a reference without digest).
    pub fn tag(&self, source: &str, target: &str) -> Result<ImageRecord> {
        let id = self.resolve_id(source)?;
        let r = Reference::parse(target)?;
        if r.digest.is_some() {
            return Err(ImageError::InvalidReference {
                input: target.to_string(),
                reason: "a tag target cannot carry a digest".to_string(),
            });
        }
        self.db.set_name(&r.to_string(), &id)?;
        self.db
            .get_image(&id)?
            .ok_or_else(|| ImageError::UnknownImage(source.to_string()))
    }

    /// Removes a name, or an image. By name: the name goes, and the image with it when no name
    /// remains. By id: the image and all its names go; with several names only with `force`.
    /// Blobs and layers no other image uses are deleted too. Boxes using the image are the
    /// engine's to check before calling this.
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<RemoveOutcome> {
        let mut out = RemoveOutcome::default();
        let by_name = Reference::parse(name_or_id)
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.to_string())
            .and_then(|n| {
                self.db
                    .image_id_by_name(&n)
                    .ok()
                    .flatten()
                    .map(|id| (n, id))
            });
        let id = match by_name {
            Some((name, id)) => {
                self.db.remove_name(&name)?;
                out.untagged.push(name);
                id
            }
            None => {
                let img = self.resolve(name_or_id)?;
                if img.names.len() > 1 && !force {
                    return Err(ImageError::Conflict(format!(
                        "image {} is referenced by several names ({}); remove them by name or use --force",
                        img.short_id(),
                        img.names.join(", ")
                    )));
                }
                for n in &img.names {
                    self.db.remove_name(n)?;
                    out.untagged.push(n.clone());
                }
                img.id
            }
        };
        let remaining = self.db.get_image(&id)?.map(|i| i.names.len()).unwrap_or(0);
        if remaining == 0 && self.db.delete_image(&id)? {
            out.deleted = Some(id);
            self.collect_garbage(&mut PruneReport::default())?;
        }
        Ok(out)
    }

    /// Deletes dangling images (no names), then every blob and layer no image references.
    pub fn prune(&self) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for img in self.db.list_images()? {
            if img.names.is_empty() && self.db.delete_image(&img.id)? {
                report.images.push(img.id);
            }
        }
        self.collect_garbage(&mut report)?;
        Ok(report)
    }

    fn collect_garbage(&self, report: &mut PruneReport) -> Result<()> {
        let _lock = self.lock(true)?;
        let blobs = self.db.referenced_blobs()?;
        for d in self.content.list()? {
            if !blobs.contains(&d) {
                report.blob_bytes += self.content.size(&d).unwrap_or(0);
                self.content.delete(&d)?;
                report.blobs += 1;
            }
        }
        let chains = self.db.referenced_chain_ids()?;
        let mut on_disk = self.layers.list()?;
        for rec in self.db.list_layers()? {
            if !on_disk.contains(&rec.chain_id) {
                on_disk.push(rec.chain_id);
            }
        }
        for c in on_disk {
            if !chains.contains(&c) {
                // Row first: a crash in between leaves a directory `prune` finds again.
                self.db.remove_layer(&c)?;
                self.layers.remove(&c)?;
                report.layers += 1;
            }
        }
        Ok(())
    }

    /// The image's layer directories, top layer first (overlay's `lowerdir` order).
    pub fn lower_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .map(|l| self.layers.path(&l.chain_id))
            .collect()
    }

    /// The parsed config of a stored image.
    pub fn config_of(&self, image: &ImageRecord) -> Result<ImageConfiguration> {
        parse_config(image.config.as_bytes())
    }

    /// The stored manifest bytes of an image.
    pub fn manifest_of(&self, image: &ImageRecord) -> Result<Vec<u8>> {
        self.content.read_to_vec(&image.manifest_digest)
    }
}

/// Copies everything read from `inner` into `out` as it passes.
struct Tee<'a, R> {
    inner: &'a mut R,
    out: &'a mut BlobWriter,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_schema2_documents_parse() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,
              "digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2,
              "digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]}"#;
        let m = parse_manifest(m).expect("docker manifest");
        assert_eq!(
            m.layers()[0].media_type().to_string(),
            crate::compression::MEDIA_TYPE_DOCKER_LAYER_GZIP
        );
        let l = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,
              "digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
              "platform":{"architecture":"amd64","os":"linux"}}]}"#;
        parse_index(l).expect("docker list");
        let c = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=b"]},"container_config":{},
            "docker_version":"20.10","rootfs":{"type":"layers","diff_ids":[]}}"#;
        parse_config(c).expect("docker config");
        assert!(parse_manifest(b"{}").is_err());
        assert!(parse_manifest(br#"{"schemaVersion":1,"config":{},"layers":[]}"#).is_err());
    }
}
