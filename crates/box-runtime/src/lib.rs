//! box-runtime: an OCI runtime-spec bundle (config.json + rootfs) to a running box:
//! namespaces, rootfs, cgroups, seccomp, capabilities. Synchronous; no images, no database.

pub mod cgroups;
pub mod seccomp;
