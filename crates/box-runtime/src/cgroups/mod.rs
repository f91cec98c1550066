//! Cgroups of a box: v1 or v2 (chosen at run time), nested under the caller's own cgroup.
//! INTERFACE PLACEHOLDER — being written by the cgroups helper; signatures are the contract.

use std::path::Path;

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

/// Errors from cgroup setup and control.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Any failure, with what failed and why.
    #[error("{0}")]
    Other(String),
}

/// Usage figures of a box's cgroup (runc `events --stats` shape).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CgroupStats {}

/// The cgroup (v1: one directory per hierarchy; v2: one directory) of one box.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cgroup {}

impl Cgroup {
    /// Decides where the box's cgroup lives (absolute `cgroups_path` under the hierarchy roots,
    /// relative under the caller's own cgroup, none: `<own cgroup>/box/<id>`); touches nothing.
    pub fn for_box(_cgroups_path: Option<&Path>, _id: &str) -> Result<Cgroup, CgroupError> {
        todo!()
    }
    /// Creates the directories and applies `resources`.
    pub fn create(
        &mut self,
        _resources: Option<&LinuxResources>,
        _rootless: bool,
    ) -> Result<(), CgroupError> {
        todo!()
    }
    /// Whether the box really has a cgroup (false for rootless without delegation).
    pub fn is_enabled(&self) -> bool {
        todo!()
    }
    /// Moves `pid` into the box's cgroup.
    pub fn add_process(&self, _pid: i32) -> Result<(), CgroupError> {
        todo!()
    }
    /// Applies new limits to a live box.
    pub fn update(&self, _resources: &LinuxResources) -> Result<(), CgroupError> {
        todo!()
    }
    /// Freezes every process of the box.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        todo!()
    }
    /// Thaws the box.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        todo!()
    }
    /// Whether the box is frozen.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        todo!()
    }
    /// Pids of every process in the box's cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        todo!()
    }
    /// Sends `sig` to every process of the box.
    pub fn signal_all(&self, _sig: Signal) -> Result<(), CgroupError> {
        todo!()
    }
    /// Current usage.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        todo!()
    }
    /// Removes the box's cgroup directories (they must be empty of processes).
    pub fn destroy(&self) -> Result<(), CgroupError> {
        todo!()
    }
}
