//! box-runtime: an OCI runtime-spec bundle (config.json + rootfs) to a running box:
//! namespaces, rootfs, cgroups, seccomp, capabilities. Synchronous; no images, no database.
//!
//! The entry point is [`Runtime`]: `create`/`start`/`run`/`exec`/`kill`/`delete`/… against a
//! state root. `create` clones an init into the box's namespaces (see [`init`]); the init
//! reports back over a socketpair ([`sync`]) and waits on an exec fifo until `start`.

pub mod capabilities;
pub mod cgroups;
pub mod console;
pub mod create;
pub mod error;
pub mod exe_protect;
pub mod exec;
pub mod hooks;
pub mod idmap;
pub mod init;
pub mod lifecycle;
pub mod namespaces;
pub mod policy;
pub mod process;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod seccomp_cache;
pub mod signals;
pub mod spec;
pub mod state;
pub mod sync;

pub use create::CreateOptions;
pub use error::{Error, Result};
pub use exec::ExecOptions;
pub use lifecycle::{RunOutcome, Runtime};
pub use state::{BoxRecord, Status};
