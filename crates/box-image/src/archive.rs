//! archive: images in and out of tar files. `box load` / `box save` (docker-archive and OCI
//! image layout, both ways), `box import` (a rootfs tarball becomes a one-layer image) and
//! `box export` (a flat tar of a directory tree, never following a symlink out).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::compression::{Compression, MEDIA_TYPE_OCI_LAYER_TAR};
use crate::db::ImageRecord;
use crate::digest::{Digest, HashingWriter};
use crate::error::{ImageError, IoContext, Result};
use crate::image::{
    config_diff_ids, parse_config, parse_index, parse_manifest, ImageStore, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::reference::Reference;

/// Annotation naming an image in an OCI layout's index.json.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation with the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Files of an archive kept in memory while it is read (JSON documents are small).
const SMALL_FILE_MAX: u64 = 16 << 20;

/// The tar layout `box save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveFormat {
    /// `docker save`'s: manifest.json, repositories, configs and uncompressed layer tars.
    #[default]
    DockerArchive,
    /// An OCI image layout: oci-layout, index.json, blobs/sha256/… (blobs as stored).
    OciLayout,
}

/// One image of a docker-archive's manifest.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// What the reader kept of an archive: small files in memory, every regular file's digest
/// (its content went to the content store), symlinks.
#[derive(Default)]
struct ArchiveFiles {
    small: HashMap<String, Vec<u8>>,
    digests: HashMap<String, Digest>,
    links: HashMap<String, String>,
}

impl ArchiveFiles {
    /// The digest of the file at `path`, through symlinks (docker-archive dedupes layers so).
    fn digest(&self, path: &str) -> Result<Digest> {
        let mut p = normalize(path);
        for _ in 0..16 {
            if let Some(d) = self.digests.get(&p) {
                return Ok(d.clone());
            }
            match self.links.get(&p) {
                Some(target) => {
                    let base = Path::new(&p).parent().unwrap_or(Path::new(""));
                    p = normalize(&base.join(target).to_string_lossy());
                }
                None => break,
            }
        }
        Err(ImageError::Archive(format!(
            "image archive: {path} is referenced but not in the archive"
        )))
    }
}

/// Lexically normalizes an archive path: no leading `./` or `/`, `..` applied.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Loads every image of a docker-archive or OCI-layout tar (plain or compressed) into
/// `store`. Blobs are verified by digest, layers unpacked, and images named after their
/// RepoTags / ref.name annotations.
pub fn load<R: Read + Send>(reader: R, store: &ImageStore) -> Result<Vec<ImageRecord>> {
    let _lease = store.lease()?;
    let mut input = BufReader::with_capacity(256 * 1024, reader);
    let head = input
        .fill_buf()
        .ctx(|| "cannot read the image archive".to_string())?;
    let tar = Compression::sniff(head).decompress_borrowed(input)?;
    let files = read_archive(tar, store)?;
    if let Some(manifest) = files.small.get("manifest.json") {
        load_docker(manifest, &files, store)
    } else if let Some(index) = files.small.get("index.json") {
        load_oci(index, &files, store)
    } else {
        Err(ImageError::Archive(
            "not an image archive: neither manifest.json (docker-archive) nor index.json (OCI layout) found; for a rootfs tarball use box import".to_string(),
        ))
    }
}

fn read_archive(tar: Box<dyn Read + Send + '_>, store: &ImageStore) -> Result<ArchiveFiles> {
    let mut files = ArchiveFiles::default();
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| ImageError::Tar(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::Tar(e.to_string()))?;
        let path = normalize(
            &entry
                .path()
                .map_err(|e| ImageError::Tar(e.to_string()))?
                .to_string_lossy(),
        );
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                let target = target.to_string_lossy().into_owned();
                // Hard link names are archive-relative; symlinks relative to their directory.
                let target = if kind.is_hard_link() {
                    let depth = path.matches('/').count();
                    format!("{}{}", "../".repeat(depth), target)
                } else {
                    target
                };
                files.links.insert(path, target);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        // OCI blobs are named by their digest: verified while they are stored.
        let expected = blob_name_digest(&path);
        let mut writer = store.content().writer(expected.as_ref())?;
        let size = entry.size();
        let mut keep = Vec::new();
        if size <= SMALL_FILE_MAX {
            let mut tee = TeeWriter {
                a: &mut writer,
                b: &mut keep,
            };
            io::copy(&mut entry, &mut tee)
                .ctx(|| format!("cannot read {path} from the archive"))?;
        } else {
            io::copy(&mut entry, &mut writer)
                .ctx(|| format!("cannot read {path} from the archive"))?;
        }
        let (digest, _) = writer.commit()?;
        if size <= SMALL_FILE_MAX {
            files.small.insert(path.clone(), keep);
        }
        files.digests.insert(path, digest);
    }
    Ok(files)
}

/// `blobs/sha256/<hex>` → the digest its name announces.
fn blob_name_digest(path: &str) -> Option<Digest> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    Digest::from_hex(hex).ok()
}

struct TeeWriter<'a, A, B> {
    a: &'a mut A,
    b: &'a mut B,
}

impl<A: Write, B: Write> Write for TeeWriter<'_, A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.a.write(buf)?;
        self.b.write_all(&buf[..n])?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.a.flush()?;
        self.b.flush()
    }
}

/// The media type of a stored layer blob, from its first bytes.
fn sniff_layer_media_type(store: &ImageStore, digest: &Digest) -> Result<&'static str> {
    let mut f = store.content().open_blob(digest)?;
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io(format!("cannot read blob {digest}"), e)),
        }
    }
    Ok(Compression::sniff(&head[..n]).oci_layer_media_type())
}

/// Ingests the layers `(blob digest, media type)` bottom-up, checking each against the
/// config's diff ids.
fn ingest_layers(
    store: &ImageStore,
    layers: &[(Digest, String)],
    diff_ids: &[Digest],
) -> Result<()> {
    if layers.len() != diff_ids.len() {
        return Err(ImageError::invalid_document(
            "image",
            format!(
                "{} layers but the config's rootfs.diff_ids has {}",
                layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut parent: Option<Digest> = None;
    for ((blob, media_type), diff_id) in layers.iter().zip(diff_ids) {
        let f = store.content().open_blob(blob)?;
        let rec = store.ingest_layer_stream(
            parent.as_ref(),
            BufReader::with_capacity(256 * 1024, f),
            blob,
            media_type,
            Some(diff_id),
        )?;
        parent = Some(rec.chain_id);
    }
    Ok(())
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

fn load_docker(
    manifest: &[u8],
    files: &ArchiveFiles,
    store: &ImageStore,
) -> Result<Vec<ImageRecord>> {
    let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(manifest)
        .map_err(|e| ImageError::invalid_document("docker-archive manifest.json", e))?;
    let mut out = Vec::new();
    for entry in entries {
        let config_digest = files.digest(&entry.config)?;
        let config = store.content().read_to_vec(&config_digest)?;
        let diff_ids = config_diff_ids(&parse_config(&config)?)?;
        let mut layers = Vec::new();
        for l in &entry.layers {
            let d = files.digest(l)?;
            let mt = sniff_layer_media_type(store, &d)?;
            layers.push((d, mt.to_string()));
        }
        ingest_layers(store, &layers, &diff_ids)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": descriptor(MEDIA_TYPE_OCI_CONFIG, &config_digest, config.len() as u64),
            "layers": layers.iter().map(|(d, mt)| {
                Ok(descriptor(mt, d, store.content().size(d)?))
            }).collect::<Result<Vec<_>>>()?,
        });
        let manifest = serde_json::to_vec(&manifest)
            .map_err(|e| ImageError::Archive(format!("cannot encode a manifest: {e}")))?;
        let names = entry.repo_tags.unwrap_or_default();
        out.push(store.commit_image(&manifest, &config, &names)?);
    }
    Ok(out)
}

/// The name an OCI index entry gives its image, if any.
fn oci_entry_name(annotations: Option<&HashMap<String, String>>) -> Option<String> {
    let a = annotations?;
    if let Some(n) = a.get(ANNOTATION_CONTAINERD_NAME) {
        return Some(n.clone());
    }
    // ref.name is often a bare tag ("latest"): only a full reference names an image.
    a.get(ANNOTATION_REF_NAME)
        .filter(|n| n.contains(':') || n.contains('/'))
        .cloned()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn load_oci(index: &[u8], files: &ArchiveFiles, store: &ImageStore) -> Result<Vec<ImageRecord>> {
    if let Some(layout) = files.small.get("oci-layout") {
        let v: Value = serde_json::from_slice(layout)
            .map_err(|e| ImageError::invalid_document("oci-layout", e))?;
        if v.get("imageLayoutVersion").and_then(Value::as_str) != Some("1.0.0") {
            return Err(ImageError::invalid_document(
                "oci-layout",
                "imageLayoutVersion is not 1.0.0",
            ));
        }
    }
    let index = parse_index(index)?;
    let mut out = Vec::new();
    for desc in index.manifests() {
        let name = oci_entry_name(desc.annotations().as_ref());
        let digest = Digest::from_oci(desc.digest())?;
        let manifest_digest = select_manifest(store, &digest, desc.media_type().to_string())?;
        let manifest_bytes = store.content().read_to_vec(&manifest_digest)?;
        let manifest = parse_manifest(&manifest_bytes)?;
        let config_digest = Digest::from_oci(manifest.config().digest())?;
        let config = store.content().read_to_vec(&config_digest)?;
        let diff_ids = config_diff_ids(&parse_config(&config)?)?;
        let layers = manifest
            .layers()
            .iter()
            .map(|l| Ok((Digest::from_oci(l.digest())?, l.media_type().to_string())))
            .collect::<Result<Vec<_>>>()?;
        for (d, _) in &layers {
            if !store.content().has(d) {
                return Err(ImageError::Archive(format!(
                    "OCI layout: layer blob {d} is not in the archive"
                )));
            }
        }
        ingest_layers(store, &layers, &diff_ids)?;
        let names: Vec<String> = name.into_iter().collect();
        out.push(store.commit_image(&manifest_bytes, &config, &names)?);
    }
    Ok(out)
}

/// Follows nested indexes to the manifest for this host's platform.
fn select_manifest(store: &ImageStore, digest: &Digest, media_type: String) -> Result<Digest> {
    let mut digest = digest.clone();
    let mut media_type = media_type;
    for _ in 0..4 {
        let is_index = media_type.contains("index") || media_type.contains("manifest.list");
        if !is_index {
            return Ok(digest);
        }
        let bytes = store.content().read_to_vec(&digest)?;
        let index = parse_index(&bytes)?;
        let pick = index
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
                })
            })
            .or_else(|| index.manifests().first())
            .ok_or_else(|| ImageError::invalid_document("index", "it lists no manifests"))?;
        digest = Digest::from_oci(pick.digest())?;
        media_type = pick.media_type().to_string();
    }
    Err(ImageError::invalid_document(
        "index",
        "indexes nested too deeply",
    ))
}

/// Writes the images named `names` (names or ids) to `writer` as a docker-archive or an OCI
/// layout tar. Returns the writer.
pub fn save<W: Write>(
    store: &ImageStore,
    names: &[String],
    format: SaveFormat,
    writer: W,
) -> Result<W> {
    let mut images: Vec<(ImageRecord, Vec<String>)> = Vec::new();
    for n in names {
        let img = store.resolve(n)?;
        // Saved by name: that name only (as docker does); by id: every name it has.
        let by_name = Reference::parse(n)
            .ok()
            .filter(|r| r.digest.is_none() && img.names.contains(&r.to_string()))
            .map(|r| vec![r.to_string()]);
        let tags = by_name.unwrap_or_else(|| img.names.clone());
        match images.iter_mut().find(|(i, _)| i.id == img.id) {
            Some((_, t)) => t.extend(tags),
            None => images.push((img, tags)),
        }
    }
    let mut tar = tar::Builder::new(writer);
    let mut written: HashSet<Digest> = HashSet::new();
    append_dir(&mut tar, "blobs")?;
    append_dir(&mut tar, "blobs/sha256")?;
    match format {
        SaveFormat::DockerArchive => save_docker(store, &images, &mut tar, &mut written)?,
        SaveFormat::OciLayout => save_oci(store, &images, &mut tar, &mut written)?,
    }
    tar.into_inner()
        .map_err(|e| ImageError::io("cannot finish the image archive", e))
}

fn header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let mut h = header(0, 0o755);
    h.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut h, path, io::empty())
        .map_err(|e| ImageError::io(format!("cannot write {path} to the archive"), e))
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    let mut h = header(data.len() as u64, 0o644);
    tar.append_data(&mut h, path, data)
        .map_err(|e| ImageError::io(format!("cannot write {path} to the archive"), e))
}

fn append_blob<W: Write>(
    store: &ImageStore,
    tar: &mut tar::Builder<W>,
    digest: &Digest,
    written: &mut HashSet<Digest>,
) -> Result<()> {
    if !written.insert(digest.clone()) {
        return Ok(());
    }
    let path = format!("blobs/sha256/{}", digest.hex());
    let size = store.content().size(digest)?;
    let f = store.content().open_blob(digest)?;
    let mut h = header(size, 0o644);
    tar.append_data(&mut h, &path, f.take(size))
        .map_err(|e| ImageError::io(format!("cannot write {path} to the archive"), e))
}

fn save_docker<W: Write>(
    store: &ImageStore,
    images: &[(ImageRecord, Vec<String>)],
    tar: &mut tar::Builder<W>,
    written: &mut HashSet<Digest>,
) -> Result<()> {
    let mut manifest = Vec::new();
    let mut repositories: serde_json::Map<String, Value> = serde_json::Map::new();
    for (img, tags) in images {
        append_blob(store, tar, &img.id, written)?;
        let mut layer_paths = Vec::new();
        for layer in &img.layers {
            // docker-archive layers are the uncompressed diffs, named by diff id.
            let path = format!("blobs/sha256/{}", layer.diff_id.hex());
            layer_paths.push(path.clone());
            if !written.insert(layer.diff_id.clone()) {
                continue;
            }
            let compression = Compression::from_media_type(&layer.media_type)?;
            if compression == Compression::None {
                written.remove(&layer.diff_id);
                append_blob(store, tar, &layer.blob_digest, written)?;
                continue;
            }
            // The tar header needs the size first: decompress into an unnamed temp file.
            let blob = store.content().open_blob(&layer.blob_digest)?;
            let mut plain =
                compression.decompress(Box::new(BufReader::with_capacity(256 * 1024, blob)))?;
            let mut tmp = HashingWriter::new(anonymous_file(store.data_dir())?);
            let size = io::copy(&mut plain, &mut tmp)
                .ctx(|| format!("cannot decompress layer {}", layer.blob_digest))?;
            let (mut file, digest, _) = tmp.finish();
            if digest != layer.diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!("stored layer {}", layer.blob_digest),
                    expected: layer.diff_id.clone(),
                    actual: digest,
                });
            }
            file.seek(SeekFrom::Start(0))
                .ctx(|| "cannot rewind a temporary file".to_string())?;
            let mut h = header(size, 0o644);
            tar.append_data(&mut h, &path, BufReader::new(file).take(size))
                .map_err(|e| ImageError::io(format!("cannot write {path} to the archive"), e))?;
        }
        manifest.push(DockerArchiveEntry {
            config: format!("blobs/sha256/{}", img.id.hex()),
            repo_tags: Some(tags.iter().map(|t| familiar(t)).collect()),
            layers: layer_paths,
        });
        for t in tags {
            let short = familiar(t);
            if let Some((repo, tag)) = short.rsplit_once(':') {
                if let Value::Object(m) = repositories
                    .entry(repo.to_string())
                    .or_insert_with(|| Value::Object(Default::default()))
                {
                    m.insert(tag.to_string(), Value::String(img.id.hex().to_string()));
                }
            }
        }
    }
    let manifest = serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::Archive(format!("cannot encode manifest.json: {e}")))?;
    append_bytes(tar, "manifest.json", &manifest)?;
    let repositories = serde_json::to_vec(&repositories)
        .map_err(|e| ImageError::Archive(format!("cannot encode repositories: {e}")))?;
    append_bytes(tar, "repositories", &repositories)
}

/// `docker.io/library/busybox:latest` → `busybox:latest` (the form docker writes in archives).
fn familiar(name: &str) -> String {
    let short = name.strip_prefix("docker.io/").unwrap_or(name);
    short.strip_prefix("library/").unwrap_or(short).to_string()
}

fn save_oci<W: Write>(
    store: &ImageStore,
    images: &[(ImageRecord, Vec<String>)],
    tar: &mut tar::Builder<W>,
    written: &mut HashSet<Digest>,
) -> Result<()> {
    let mut manifests = Vec::new();
    for (img, tags) in images {
        append_blob(store, tar, &img.id, written)?;
        for layer in &img.layers {
            append_blob(store, tar, &layer.blob_digest, written)?;
        }
        append_blob(store, tar, &img.manifest_digest, written)?;
        let size = store.content().size(&img.manifest_digest)?;
        let media_type = if img.manifest_media_type.is_empty() {
            MEDIA_TYPE_OCI_MANIFEST.to_string()
        } else {
            img.manifest_media_type.clone()
        };
        if tags.is_empty() {
            manifests.push(descriptor(&media_type, &img.manifest_digest, size));
        }
        for t in tags {
            let mut d = descriptor(&media_type, &img.manifest_digest, size);
            d["annotations"] = json!({ANNOTATION_REF_NAME: t, ANNOTATION_CONTAINERD_NAME: t});
            manifests.push(d);
        }
    }
    let index =
        json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": manifests});
    let index = serde_json::to_vec(&index)
        .map_err(|e| ImageError::Archive(format!("cannot encode index.json: {e}")))?;
    append_bytes(tar, "index.json", &index)?;
    append_bytes(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
}

/// An unnamed read-write file in `dir` (O_TMPFILE; a created-and-unlinked file where the file
/// system lacks it): nothing is left behind whatever happens.
fn anonymous_file(dir: &Path) -> Result<File> {
    let tmp = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir);
    match tmp {
        Ok(f) => Ok(f),
        Err(_) => {
            let n = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = dir.join(format!(".box-tmp-{}-{n}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .ctx(|| format!("cannot create a temporary file in {}", dir.display()))?;
            let _ = std::fs::remove_file(&p);
            Ok(f)
        }
    }
}

/// Fields of a generated image config (import and the host image).
#[derive(Debug, Clone, Default)]
pub(crate) struct GeneratedConfig {
    /// RFC 3339 creation time.
    pub created: String,
    /// What made the layer, for the history.
    pub created_by: String,
    /// The default command.
    pub cmd: Option<Vec<String>>,
}

/// Records a one-layer image whose layer blob is already ingested: writes a config (os linux,
/// this host's architecture) and an OCI manifest, and commits them under `names`.
pub(crate) fn commit_one_layer(
    store: &ImageStore,
    layer: &crate::db::LayerRecord,
    blob: &Digest,
    media_type: &str,
    gen: &GeneratedConfig,
    names: &[String],
) -> Result<ImageRecord> {
    let mut cfg = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    });
    if let Some(cmd) = &gen.cmd {
        cfg["Cmd"] = json!(cmd);
    }
    let config = json!({
        "created": gen.created,
        "architecture": host_arch(),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        "history": [{"created": gen.created, "created_by": gen.created_by}],
    });
    let config = serde_json::to_vec(&config)
        .map_err(|e| ImageError::Archive(format!("cannot encode an image config: {e}")))?;
    let config_digest = Digest::of_bytes(&config);
    let blob_size = store.content().size(blob)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": descriptor(MEDIA_TYPE_OCI_CONFIG, &config_digest, config.len() as u64),
        "layers": [descriptor(media_type, blob, blob_size)],
    });
    let manifest = serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::Archive(format!("cannot encode a manifest: {e}")))?;
    store.commit_image(&manifest, &config, names)
}

/// Imports a rootfs tarball (plain, gzip, zstd or xz, told apart by magic bytes) as a
/// one-layer image named `name`. Gzip and zstd tarballs are stored as they are; xz ones are
/// stored decompressed (OCI has no xz layers). The config runs /bin/sh when the tree has one.
pub fn import_rootfs<R: Read + Send>(
    reader: R,
    name: &str,
    store: &ImageStore,
) -> Result<ImageRecord> {
    let name = Reference::parse(name)?.to_string();
    let _lease = store.lease()?;
    let mut input = BufReader::with_capacity(256 * 1024, reader);
    let head = input
        .fill_buf()
        .ctx(|| "cannot read the rootfs tarball".to_string())?;
    let compression = Compression::sniff(head);
    let mut tmp = HashingWriter::new(anonymous_file(store.data_dir())?);
    let media_type = if compression == Compression::Xz {
        let mut plain = compression.decompress_borrowed(input)?;
        io::copy(&mut plain, &mut tmp)
            .ctx(|| "cannot decompress the rootfs tarball".to_string())?;
        MEDIA_TYPE_OCI_LAYER_TAR
    } else {
        io::copy(&mut input, &mut tmp).ctx(|| "cannot read the rootfs tarball".to_string())?;
        compression.oci_layer_media_type()
    };
    let (mut file, blob, _) = tmp.finish();
    file.seek(SeekFrom::Start(0))
        .ctx(|| "cannot rewind a temporary file".to_string())?;
    let layer = store.ingest_layer_stream(
        None,
        BufReader::with_capacity(256 * 1024, file),
        &blob,
        media_type,
        None,
    )?;
    let has_sh =
        std::fs::symlink_metadata(store.layers().path(&layer.chain_id).join("bin/sh")).is_ok();
    let gen = GeneratedConfig {
        created: box_runtime::state::now_rfc3339(),
        created_by: "box import".to_string(),
        cmd: has_sh.then(|| vec!["/bin/sh".to_string()]),
    };
    commit_one_layer(store, &layer, &blob, media_type, &gen, &[name])
}

/// Writes `dir` as a flat tar (`box export`): ownership, modes, mtimes, xattrs, hard links and
/// device nodes kept; symlinks stored as symlinks and never followed (each entry is opened
/// relative to its parent directory's descriptor with O_NOFOLLOW, so a tree changing while it
/// is read cannot lead outside it). Returns the writer.
pub fn export_dir<W: Write>(dir: &Path, writer: W) -> Result<W> {
    let root = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::io_path("open", dir, e.into()))?;
    let mut tar = tar::Builder::new(writer);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    export_walk(&root, Path::new(""), dir, &mut tar, &mut links)?;
    tar.into_inner()
        .map_err(|e| ImageError::io("cannot finish the export tar", e))
}

fn export_err(base: &Path, rel: &Path, e: impl Into<io::Error>) -> ImageError {
    ImageError::io_path("export", &base.join(rel), e.into())
}

fn export_walk<W: Write>(
    dirfd: &OwnedFd,
    rel: &Path,
    base: &Path,
    tar: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let names: BTreeSet<Vec<u8>> = {
        let dup = nix::unistd::dup(dirfd).map_err(|e| export_err(base, rel, e))?;
        let mut d = nix::dir::Dir::from_fd(dup).map_err(|e| export_err(base, rel, e))?;
        let mut names = BTreeSet::new();
        for e in d.iter() {
            let e = e.map_err(|e| export_err(base, rel, e))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.insert(n.to_vec());
            }
        }
        names
    };
    for name in names {
        let rel_path = rel.join(OsStr::from_bytes(&name));
        let cname = CString::new(name.clone())
            .map_err(|_| export_err(base, &rel_path, io::Error::from_raw_os_error(libc::EINVAL)))?;
        let st = nix::sys::stat::fstatat(dirfd, cname.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| export_err(base, &rel_path, e))?;
        let fmt = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
        let mut h = stat_header(&st);
        match fmt {
            SFlag::S_IFDIR => {
                let fd = nix::fcntl::openat(
                    dirfd,
                    cname.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| export_err(base, &rel_path, e))?;
                append_xattrs(tar, &fd, &rel_path, base)?;
                h.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut h, &rel_path, io::empty())
                    .map_err(|e| export_err(base, &rel_path, e))?;
                export_walk(&fd, &rel_path, base, tar, links)?;
            }
            SFlag::S_IFREG => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = links.get(&key) {
                        h.set_entry_type(tar::EntryType::Link);
                        h.set_size(0);
                        tar.append_link(&mut h, &rel_path, first)
                            .map_err(|e| export_err(base, &rel_path, e))?;
                        continue;
                    }
                    links.insert(key, rel_path.clone());
                }
                let fd = nix::fcntl::openat(
                    dirfd,
                    cname.as_c_str(),
                    OFlag::O_RDONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_NOCTTY
                        | OFlag::O_NONBLOCK
                        | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| export_err(base, &rel_path, e))?;
                // The entry must still be the file we stat'ed (not swapped for a FIFO or device).
                let st2 = nix::sys::stat::fstat(&fd).map_err(|e| export_err(base, &rel_path, e))?;
                if st2.st_ino != st.st_ino || st2.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(export_err(
                        base,
                        &rel_path,
                        io::Error::other("changed while being exported"),
                    ));
                }
                append_xattrs(tar, &fd, &rel_path, base)?;
                let size = u64::try_from(st2.st_size).unwrap_or(0);
                h.set_size(size);
                h.set_entry_type(tar::EntryType::Regular);
                let file = File::from(fd);
                let reader = ExactLen {
                    inner: file.take(size),
                    left: size,
                };
                tar.append_data(&mut h, &rel_path, reader)
                    .map_err(|e| export_err(base, &rel_path, e))?;
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(dirfd, cname.as_c_str())
                    .map_err(|e| export_err(base, &rel_path, e))?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, &rel_path, Path::new(&target))
                    .map_err(|e| export_err(base, &rel_path, e))?;
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                h.set_entry_type(match fmt {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                h.set_size(0);
                if fmt != SFlag::S_IFIFO {
                    let major = libc::major(st.st_rdev);
                    let minor = libc::minor(st.st_rdev);
                    h.set_device_major(major)
                        .map_err(|e| export_err(base, &rel_path, e))?;
                    h.set_device_minor(minor)
                        .map_err(|e| export_err(base, &rel_path, e))?;
                }
                tar.append_data(&mut h, &rel_path, io::empty())
                    .map_err(|e| export_err(base, &rel_path, e))?;
            }
            // Sockets have no place in a tar.
            _ => {}
        }
    }
    Ok(())
}

fn stat_header(st: &FileStat) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    h
}

/// Reads exactly `left` bytes, failing if the file shrank (a short entry corrupts the tar).
struct ExactLen<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being exported",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes the xattrs of `fd` as a PAX header (`SCHILY.xattr.<name>`) for the next entry.
fn append_xattrs<W: Write>(
    tar: &mut tar::Builder<W>,
    fd: &OwnedFd,
    rel: &Path,
    base: &Path,
) -> Result<()> {
    let attrs = fd_xattrs(fd).map_err(|e| export_err(base, rel, e))?;
    if attrs.is_empty() {
        return Ok(());
    }
    let keys: Vec<(String, Vec<u8>)> = attrs
        .into_iter()
        .map(|(n, v)| (format!("SCHILY.xattr.{n}"), v))
        .collect();
    tar.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        .map_err(|e| export_err(base, rel, e))
}

fn fd_xattrs(fd: &OwnedFd) -> io::Result<Vec<(String, Vec<u8>)>> {
    let raw = fd.as_fd().as_raw_fd();
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: raw is an open fd; buf is writable for buf.len() bytes.
        let rc = unsafe { libc::flistxattr(raw, buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            break usize::try_from(rc).unwrap_or(0);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in buf[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CStr::from_bytes_with_nul(&[name, b"\0"].concat()).map(CStr::to_owned)
        else {
            continue;
        };
        let mut val = vec![0u8; 256];
        loop {
            // SAFETY: raw is open; cname is NUL-terminated; val is writable for val.len() bytes.
            let rc =
                unsafe { libc::fgetxattr(raw, cname.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
            if rc >= 0 {
                val.truncate(usize::try_from(rc).unwrap_or(0));
                out.push((String::from_utf8_lossy(name).into_owned(), val));
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if val.len() < 1 << 20 => val.resize(val.len() * 4, 0),
                Some(libc::ENODATA) => break,
                _ => return Err(e),
            }
        }
    }
    Ok(out)
}
