//! box-engine: boxes people use. A record per box in the shared SQLite database, OCI specs made
//! from images and docker-style options, a small supervisor process per box that owns its I/O
//! and records how it ended, and logs. See docs/engine.md.

pub mod chroot;
pub mod commit;
pub mod config;
pub mod db;
pub mod engine;
pub mod environment;
pub mod error;
pub mod files;
pub mod logs;
pub mod network;
pub mod oci;
pub mod paths;
pub mod spec;
pub mod supervisor;
pub mod volumes;
