//! The runtime's error type: what failed and why, in words a runc driver (podman, containerd) understands.

use std::fmt::Display;

use crate::cgroups::CgroupError;
use crate::seccomp::SeccompError;

/// Everything that can go wrong while making or controlling a box.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{context}: {os}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error (shown in the message; deliberately not named `source`, which
        /// thiserror would chain and print a second time).
        os: std::io::Error,
    },
    /// config.json (or process.json) is unusable.
    #[error("invalid {what}: {why}")]
    Config {
        /// Which document.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// No box with this id under the state root.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// A box with this id exists already.
    #[error("container with id {0:?} already exists")]
    Exists(String),
    /// The operation does not fit the box's current status.
    #[error("{0}")]
    WrongState(String),
    /// The box's init process reported a failure while setting the box up.
    #[error("{0}")]
    Init(String),
    /// A hook failed or timed out.
    #[error("{0}")]
    Hook(String),
    /// Something the runtime does not support (yet), said plainly.
    #[error("{0}")]
    Unsupported(String),
    /// Cgroup setup or control failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Seccomp compile or load failed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// Short for `Result<T, Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds "what was being done" to OS errors.
pub trait Context<T> {
    /// Wraps the error with a context message computed lazily.
    fn ctx<C: Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx<C: Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|os| Error::Io {
            context: context().to_string(),
            os,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn ctx<C: Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|errno| Error::Io {
            context: context().to_string(),
            os: std::io::Error::from(errno),
        })
    }
}

impl Error {
    /// A config error for `config.json`.
    pub fn config(why: impl Into<String>) -> Self {
        Error::Config {
            what: "config.json".into(),
            why: why.into(),
        }
    }
}
