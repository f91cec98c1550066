//! The crate's error type: every failure says what failed, why, and (where there is one) what to do.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Result of every fallible box-image operation.
pub type Result<T> = std::result::Result<T, ImageError>;

/// What went wrong in box-image. Messages are complete sentences for the CLI edge to print.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file-system operation failed; `context` names the operation and the path.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `cannot create /var/lib/box/blobs`.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A digest string is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// The text given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// Content did not hash to the digest it was announced with.
    #[error("{what}: digest mismatch (expected {expected}, got {actual}); the data is corrupt or was tampered with, nothing was stored")]
    DigestMismatch {
        /// What was checked, e.g. `blob` or `layer diff id`.
        what: String,
        /// The announced digest.
        expected: Digest,
        /// The digest of what actually arrived.
        actual: Digest,
    },
    /// An image reference does not follow the docker/OCI grammar.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference {
        /// The text given.
        input: String,
        /// Why it was refused, with the expected form.
        reason: String,
    },
    /// No local image has this name, id or short id.
    #[error("image {0:?} not known locally (pull it first: box pull {0})")]
    UnknownImage(String),
    /// A short id prefix matches more than one image.
    #[error(
        "image id prefix {prefix:?} is ambiguous: it matches {count} images (give more digits)"
    )]
    AmbiguousImage {
        /// The prefix given.
        prefix: String,
        /// How many images it matches.
        count: usize,
    },
    /// The operation would break something and needs `--force` or a narrower target.
    #[error("{0}")]
    Conflict(String),
    /// A media type Box cannot handle.
    #[error("unsupported media type {media_type:?} for {what} (Box handles OCI and Docker schema 2 images with tar, gzip, zstd or xz layers)")]
    UnsupportedMediaType {
        /// What carried the media type (a layer, a manifest).
        what: String,
        /// The media type.
        media_type: String,
    },
    /// A manifest, index or config is not valid JSON of the expected shape.
    #[error("invalid {what}: {reason}")]
    InvalidDocument {
        /// `manifest`, `index`, `image config`.
        what: String,
        /// The parser's complaint or the missing field.
        reason: String,
    },
    /// A tar entry tried to leave its layer or is otherwise refused.
    #[error("refusing layer entry {path:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as written in the tar.
        path: String,
        /// What it tried to do.
        reason: String,
    },
    /// A tar stream could not be read.
    #[error("corrupt layer tar: {0}")]
    Tar(String),
    /// The metadata database failed.
    #[error("image database: {context}: {source}")]
    Db {
        /// What was being done.
        context: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer Box.
    #[error("image database {path}: schema version {found} is newer than this Box understands ({supported}); upgrade box")]
    DbTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// Talking to a registry failed (used by `registry`).
    #[error("{0}")]
    Registry(String),
    /// A registry refused our credentials or wants some (used by `registry`).
    #[error("registry {registry} refused access: {reason} (log in first: box login {registry})")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What it said.
        reason: String,
    },
    /// An image archive (docker-archive / OCI layout) is malformed (used by `archive`).
    #[error("{0}")]
    Archive(String),
    /// A snapshot could not be made, mounted or removed (used by `snapshot`).
    #[error("{0}")]
    Snapshot(String),
    /// The host image could not be built (used by `host`).
    #[error("{0}")]
    Host(String),
}

impl ImageError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }

    /// An I/O error about `path`: "cannot {action} {path}".
    pub fn io_path(action: &str, path: &Path, source: io::Error) -> Self {
        ImageError::Io {
            context: format!("cannot {action} {}", path.display()),
            source,
        }
    }

    /// A database error with what was being done.
    pub fn db(context: impl Into<String>, source: rusqlite::Error) -> Self {
        ImageError::Db {
            context: context.into(),
            source,
        }
    }

    /// A document (manifest, index, config) that does not parse or lacks something.
    pub fn invalid_document(what: impl Into<String>, reason: impl ToString) -> Self {
        ImageError::InvalidDocument {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// An unsafe tar entry.
    pub fn unsafe_entry(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::UnsafeEntry {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Adds context to `io::Result`s: `fs::read(p).ctx(|| format!("cannot read {}", p.display()))?`.
pub trait IoContext<T> {
    /// Wraps the error with the message `f` builds (only called on error).
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| ImageError::Io {
            context: f(),
            source,
        })
    }
}

/// Adds context to `rusqlite::Result`s.
pub trait DbContext<T> {
    /// Wraps the error with the message `f` builds (only called on error).
    fn db_ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn db_ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| ImageError::Db {
            context: f(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_image_message_says_what_to_do() {
        let e = ImageError::UnknownImage("foo".into());
        assert_eq!(
            e.to_string(),
            "image \"foo\" not known locally (pull it first: box pull foo)"
        );
    }
}
