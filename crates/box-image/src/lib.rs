//! box-image: where images live and how they arrive. A content-addressed blob store verified on
//! write, layers unpacked once per chain id, metadata in SQLite, an OCI distribution client,
//! docker-archive / OCI-layout import and export, overlay snapshots, and the offline `host` image.
//! See docs/image.md for how the parts fit.

pub mod archive;
pub mod compression;
pub mod content;
pub mod db;
pub mod digest;
pub mod error;
pub mod host;
pub mod image;
pub mod layers;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod unpack;
