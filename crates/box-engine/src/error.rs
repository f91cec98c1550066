//! The engine's error type: every failure says what failed, why, and (where there is one) what
//! to do. The CLI prints these messages as they are.

use std::io;
use std::path::Path;

/// What went wrong in box-engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file-system or system-call operation failed; `context` names the operation and path.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `cannot create /var/lib/box/boxes/3f2a…`.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A database operation failed.
    #[error("{context}: {source}")]
    Db {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// No box matches the name or id.
    #[error("no such box: {0:?} (box ps -a lists them)")]
    NoSuchBox(String),
    /// An id prefix matches more than one box.
    #[error("box id prefix {prefix:?} matches {count} boxes (give more of the id, or the name)")]
    AmbiguousBox {
        /// The prefix given.
        prefix: String,
        /// How many boxes it matched.
        count: usize,
    },
    /// The name is taken.
    #[error(
        "box name {name:?} is already in use by {short_id} (remove it with box rm {name}, or pick another --name)"
    )]
    NameInUse {
        /// The name asked for.
        name: String,
        /// The short id of the box that has it.
        short_id: String,
    },
    /// The name is not a valid box name.
    #[error("invalid box name {name:?}: {why}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The image is not in the local store.
    #[error("no such image: {0:?} (pull it first with box pull {0}, or list local ones with box images)")]
    NoSuchImage(String),
    /// The box is in a state the operation cannot handle.
    #[error("{0}")]
    WrongState(String),
    /// A user-given option (flag, spec field) is invalid.
    #[error("{0}")]
    InvalidSpec(String),
    /// Something not built yet, said plainly.
    #[error("{0}")]
    Unsupported(String),
    /// From box-image (store, snapshots, host image, archives).
    #[error(transparent)]
    Image(#[from] box_image::error::ImageError),
    /// From box-runtime (creating, killing, deleting the box's processes).
    #[error(transparent)]
    Runtime(#[from] box_runtime::Error),
    /// From box-net (bridges, veth pairs, the firewall, pasta/slirp4netns).
    #[error(transparent)]
    Net(#[from] box_net::NetError),
    /// The stored spec of a box could not be read back.
    #[error("{context}: {source}")]
    Json {
        /// What was being read or written.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// An I/O error with a context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }

    /// An I/O error on a path: `cannot <action> <path>: <error>`.
    pub fn io_path(action: &str, path: &Path, source: io::Error) -> Self {
        EngineError::Io {
            context: format!("cannot {action} {}", path.display()),
            source,
        }
    }

    /// A database error with a context.
    pub fn db(context: impl Into<String>, source: rusqlite::Error) -> Self {
        EngineError::Db {
            context: context.into(),
            source,
        }
    }

    /// An invalid user option.
    pub fn invalid(why: impl Into<String>) -> Self {
        EngineError::InvalidSpec(why.into())
    }
}

impl From<rusqlite::Error> for EngineError {
    fn from(source: rusqlite::Error) -> Self {
        EngineError::Db {
            context: "box database error".into(),
            source,
        }
    }
}

/// Adds a context to an `io::Result`.
pub trait IoContext<T> {
    /// Maps the error to [`EngineError::Io`] with the context made by `f`.
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| EngineError::Io {
            context: f(),
            source,
        })
    }
}

/// Adds a context to a `rusqlite::Result`.
pub trait DbContext<T> {
    /// Maps the error to [`EngineError::Db`] with the context made by `f`.
    fn db_ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn db_ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| EngineError::Db {
            context: f(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = EngineError::NoSuchBox("web".into());
        assert_eq!(e.to_string(), "no such box: \"web\" (box ps -a lists them)");
        let e = EngineError::NameInUse {
            name: "web".into(),
            short_id: "3f2a00000000".into(),
        };
        assert!(e.to_string().contains("box rm web"), "{e}");
        let e = EngineError::NoSuchImage("alpine".into());
        assert!(e.to_string().contains("box pull alpine"), "{e}");
    }
}
