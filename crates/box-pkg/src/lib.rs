//! Alpine packages for Box (`box pkg`): the pieces of an APK client that need no network or
//! disk, each with one job — apk version ordering ([`version`]), dependency atoms such as
//! `so:libc.musl-x86_64.so.1` or `busybox>=1.36` ([`atom`]), the text of an APKINDEX
//! ([`index`]), the choice of the packages that satisfy a request ([`resolve`]), and signed
//! package and index files ([`apk`]).

pub mod apk;
pub mod atom;
pub mod fetch;
pub mod index;
pub mod install;
pub mod installed;
pub mod manager;
pub mod resolve;
pub mod scripts;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod version;

/// What went wrong reading or resolving packages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkgError {
    /// A version string apk would not accept.
    #[error("bad version {0:?}")]
    BadVersion(String),
    /// A dependency atom apk would not accept.
    #[error("bad dependency {0:?}")]
    BadAtom(String),
    /// A malformed APKINDEX record.
    #[error("bad APKINDEX record {record}: {why}")]
    BadIndex {
        /// Which record (1-based).
        record: usize,
        /// What is wrong with it.
        why: String,
    },
    /// Nothing satisfies a dependency.
    #[error("{0}")]
    Unsatisfiable(String),
    /// A package or index file that is damaged or not in apk's format.
    #[error("bad package file: {0}")]
    BadPackage(String),
    /// A repository or file that cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// Reading or writing the root failed.
    #[error("{0}")]
    Io(String),
    /// A signature that is missing, made with an unknown key, or wrong.
    #[error("untrusted: {0}")]
    Untrusted(String),
}

/// This crate's results.
pub type Result<T> = std::result::Result<T, PkgError>;
