//! The content store: `blobs/sha256/<hex>`, each blob verified against its digest before it is
//! renamed into place from `ingest/`. Writers hold an flock on their ingest file, so `open`
//! removes only the leftovers of writers that died.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::{Digest, Digester};
use crate::error::{ImageError, IoContext, Result};

/// The blob store under one directory (normally `<data>`).
#[derive(Clone, Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens (creating) the store at `dir` (`dir/blobs/sha256`, `dir/ingest`) and removes ingest
    /// files no live writer holds.
    pub fn open(dir: &Path) -> Result<ContentStore> {
        let store = ContentStore {
            blobs: dir.join("blobs").join("sha256"),
            ingest: dir.join("ingest"),
        };
        for d in [&store.blobs, &store.ingest] {
            fs::create_dir_all(d).ctx(|| format!("cannot create {}", d.display()))?;
        }
        store.clean_ingest()?;
        Ok(store)
    }

    /// Removes ingest files whose writer is gone (their flock is free).
    pub fn clean_ingest(&self) -> Result<usize> {
        remove_unlocked_entries(&self.ingest, |_| true)
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob is stored.
    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The blob's size in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let p = self.path(digest);
        Ok(fs::metadata(&p)
            .map_err(|e| not_found_or(e, digest, &p))?
            .len())
    }

    /// A writer for a new blob. With `expected`, `commit` refuses content of another digest.
    pub fn writer(&self, expected: Option<&Digest>) -> Result<BlobWriter> {
        let path = self.ingest.join(unique_name("blob"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx(|| format!("cannot create ingest file {}", path.display()))?;
        lock_exclusive(&file).ctx(|| format!("cannot lock {}", path.display()))?;
        Ok(BlobWriter {
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            path,
            blobs: self.blobs.clone(),
            digester: Digester::new(),
            expected: expected.cloned(),
        })
    }

    /// Stores `data` (verified against `expected` when given); returns its digest.
    pub fn write_blob(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let mut w = self.writer(expected)?;
        w.write_all(data)
            .ctx(|| "cannot write blob to the ingest directory".to_string())?;
        Ok(w.commit()?.0)
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.path(digest);
        File::open(&p).map_err(|e| not_found_or(e, digest, &p))
    }

    /// Reads a whole blob (manifests, configs), checking its digest again on the way.
    pub fn read_to_vec(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut buf)
            .ctx(|| format!("cannot read blob {digest}"))?;
        let actual = Digest::of_bytes(&buf);
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!(
                    "stored blob {} (remove it and pull again)",
                    self.path(digest).display()
                ),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// Removes a blob; absent is fine.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let p = self.path(digest);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io_path("remove blob", &p, e))
            }
            _ => Ok(()),
        }
    }

    /// Every stored blob's digest (files with other names are ignored).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in
            fs::read_dir(&self.blobs).ctx(|| format!("cannot list {}", self.blobs.display()))?
        {
            let entry = entry.ctx(|| format!("cannot list {}", self.blobs.display()))?;
            if let Some(d) = entry
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

fn not_found_or(e: io::Error, digest: &Digest, p: &Path) -> ImageError {
    if e.kind() == io::ErrorKind::NotFound {
        ImageError::io(
            format!("blob {digest} is not in the content store (pull the image again)"),
            e,
        )
    } else {
        ImageError::io_path("open blob", p, e)
    }
}

/// A blob being written into `ingest/`. `commit` verifies and publishes it; dropping it
/// without commit removes the partial file.
pub struct BlobWriter {
    file: Option<io::BufWriter<File>>,
    path: PathBuf,
    blobs: PathBuf,
    digester: Digester,
    expected: Option<Digest>,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.digester.len()
    }

    /// Flushes and fsyncs the data, checks the digest, and renames the file to
    /// `blobs/sha256/<hex>`. A mismatch removes the file and stores nothing.
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        let size = self.digester.len();
        let actual = std::mem::take(&mut self.digester).finish();
        if let Some(expected) = &self.expected {
            if &actual != expected {
                // Drop removes the ingest file.
                return Err(ImageError::DigestMismatch {
                    what: "blob".to_string(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let writer = self.file.take().ok_or_else(|| {
            ImageError::io(
                "blob writer already finished",
                io::Error::from(io::ErrorKind::Other),
            )
        })?;
        let file = writer
            .into_inner()
            .map_err(|e| ImageError::io_path("write", &self.path, e.into_error()))?;
        file.sync_all()
            .ctx(|| format!("cannot fsync {}", self.path.display()))?;
        let target = self.blobs.join(actual.hex());
        // Renaming over an identical blob (a concurrent writer of the same content) is harmless.
        fs::rename(&self.path, &target)
            .ctx(|| format!("cannot move blob into {}", target.display()))?;
        if let Ok(dir) = File::open(&self.blobs) {
            // Durability of the new name; failure only risks losing the blob on power loss.
            let _ = dir.sync_all();
        }
        drop(file);
        self.path = PathBuf::new();
        Ok((actual, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = f.write(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A name no other process or thread of this machine uses at the same time:
/// `<prefix>-<pid>-<nanos>-<counter>`.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// Takes an exclusive flock, without waiting.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Takes an exclusive flock, waiting for it.
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes entries of `dir` (files or directory trees) chosen by `select` whose flock nobody
/// holds: the leftovers of writers that crashed. Returns how many went.
pub(crate) fn remove_unlocked_entries(dir: &Path, select: impl Fn(&str) -> bool) -> Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ImageError::io_path("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.ctx(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(&select) {
            continue;
        }
        let path = entry.path();
        let Ok(f) = File::open(&path) else { continue };
        if !try_lock_exclusive(&f).unwrap_or(false) {
            continue; // a live writer
        }
        let res = if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            remove_tree(&path)
        } else {
            fs::remove_file(&path)
        };
        res.ctx(|| format!("cannot remove stale {}", path.display()))?;
        removed += 1;
    }
    Ok(removed)
}

/// Removes a directory tree, first making directories writable (layers may hold 0555 dirs).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_dirs_writable(path);
            fs::remove_dir_all(path)
        }
    }
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            make_dirs_writable(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("x"), unique_name("x"));
    }
}
