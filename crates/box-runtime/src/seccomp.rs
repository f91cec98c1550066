//! Seccomp: the OCI `linux.seccomp` section compiled to a BPF program, loaded in the box's init.
//! INTERFACE PLACEHOLDER — being written by the seccomp helper; signatures are the contract.

use oci_spec::runtime::LinuxSeccomp;

/// Errors from compiling or loading a seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// Any failure, with what failed and why.
    #[error("{0}")]
    Other(String),
}

/// A compiled filter, ready to load.
#[derive(Debug)]
pub struct SeccompProgram {}

/// Compiles the OCI seccomp section (in the runtime process, before the box's init is cloned).
pub fn compile(_spec: &LinuxSeccomp) -> Result<SeccompProgram, SeccompError> {
    todo!()
}

impl SeccompProgram {
    /// Loads the filter into the calling process (in the init, right before execve).
    pub fn load(&self) -> Result<(), SeccompError> {
        todo!()
    }
}
