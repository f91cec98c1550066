//! Per-directory environments (IsoBox): a project directory's `.box/` holds a complete FHS tree
//! (`.box/rootfs`, built offline from the host's busybox or binaries, or from an image) and its
//! metadata (`.box/env.json`). `box enter` runs a login shell or one command in it
//! ([`enter`]); changes made inside stay in `.box/rootfs`. `box env export/import` move an
//! environment as a tar.

pub mod enter;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use box_image::host::{plan_host_tree, HostImageMode, HostImageOptions};
use box_image::unpack::{unpack, UnpackOptions};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, IoContext, Result};

/// The directory an environment lives in, inside the project directory.
pub const DIR: &str = ".box";
/// Its metadata file, inside [`DIR`].
pub const META: &str = "env.json";
/// Its root file system, inside [`DIR`].
pub const ROOTFS: &str = "rootfs";

/// What an environment was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "image")]
pub enum Source {
    /// The host's busybox and its applets.
    Busybox,
    /// The host's own programs and their shared libraries.
    System,
    /// An image of the store (flattened).
    Image(String),
}

/// `.box/env.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvMeta {
    /// The environment's name (the project directory's name): its hostname inside.
    pub name: String,
    /// What it was made from.
    pub source: Source,
    /// When (ms since the epoch).
    pub created: i64,
}

/// An environment on disk.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The project directory (the one holding `.box/`).
    pub project: PathBuf,
    /// Its metadata.
    pub meta: EnvMeta,
}

impl Environment {
    /// `<project>/.box`.
    pub fn dir(&self) -> PathBuf {
        self.project.join(DIR)
    }

    /// `<project>/.box/rootfs`.
    pub fn rootfs(&self) -> PathBuf {
        self.dir().join(ROOTFS)
    }

    /// The environment of `project` (no search upwards).
    pub fn open(project: &Path) -> Result<Environment> {
        let meta_path = project.join(DIR).join(META);
        let text = match fs::read(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(EngineError::WrongState(format!(
                    "{} has no environment (no {DIR}/{META}): make one with box init",
                    project.display()
                )))
            }
            Err(e) => return Err(EngineError::io_path("read", &meta_path, e)),
        };
        let meta: EnvMeta = serde_json::from_slice(&text).map_err(|source| EngineError::Json {
            context: format!("cannot read {}", meta_path.display()),
            source,
        })?;
        Ok(Environment {
            project: project.to_path_buf(),
            meta,
        })
    }

    /// The environment of `start` or of the nearest directory above it that has one.
    pub fn find(start: &Path) -> Result<Environment> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            if d.join(DIR).join(META).is_file() {
                return Environment::open(d);
            }
            dir = d.parent();
        }
        Err(EngineError::WrongState(format!(
            "no environment in {} or above it: make one with box init",
            start.display()
        )))
    }

    /// Bytes and files under `.box/rootfs` (symlinks not followed).
    pub fn usage(&self) -> (u64, u64) {
        fn walk(dir: &Path, acc: &mut (u64, u64)) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let Ok(md) = e.metadata() else { continue };
                acc.1 += 1;
                if md.is_dir() {
                    walk(&e.path(), acc);
                } else if md.is_file() {
                    acc.0 += md.len();
                }
            }
        }
        let mut acc = (0, 0);
        walk(&self.rootfs(), &mut acc);
        acc
    }
}

/// The name an environment of `project` gets: the directory's name, as a hostname allows.
fn env_name(project: &Path) -> String {
    let raw = project
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "box".to_string()
    } else {
        name
    }
}

/// Makes `<project>/.box` from `source`: the tree is built in `.box.tmp-<pid>` and renamed into
/// place, so a failed or interrupted init leaves no `.box`. `image_tar` gives an image's
/// flattened root file system as a tar (the engine flattens images; see
/// [`crate::engine::Engine::flatten_image`]).
pub fn init(
    project: &Path,
    source: Source,
    image_tar: Option<&mut dyn Read>,
) -> Result<Environment> {
    let project = fs::canonicalize(project)
        .ctx(|| format!("cannot use {} as a project directory", project.display()))?;
    let dir = project.join(DIR);
    if dir.exists() {
        return Err(EngineError::WrongState(format!(
            "{} is initialised already ({} exists): enter it with box enter, or remove it with \
             box env rm",
            project.display(),
            dir.display()
        )));
    }
    let tmp = project.join(format!("{DIR}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let result = build(&project, &tmp, &source, image_tar);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &dir).map_err(|e| {
        let _ = fs::remove_dir_all(&tmp);
        EngineError::io_path("create", &dir, e)
    })?;
    Environment::open(&project)
}

fn build(
    project: &Path,
    tmp: &Path,
    source: &Source,
    image_tar: Option<&mut dyn Read>,
) -> Result<()> {
    let rootfs = tmp.join(ROOTFS);
    fs::create_dir_all(&rootfs).ctx(|| format!("cannot create {}", rootfs.display()))?;
    let opts = UnpackOptions {
        rootless: box_runtime::idmap::running_rootless(),
        // The caller owns every file: root inside is the caller (rootless) or root.
        ignore_ownership: box_runtime::idmap::running_rootless(),
    };
    match (source, image_tar) {
        (Source::Image(_), Some(tar)) => {
            unpack(tar, &rootfs, &opts)?;
        }
        (Source::Image(name), None) => {
            return Err(EngineError::WrongState(format!(
                "image {name} was not flattened for the environment"
            )))
        }
        (Source::Busybox | Source::System, _) => {
            let mode = if *source == Source::Busybox {
                HostImageMode::Busybox
            } else {
                HostImageMode::Binaries
            };
            let host = HostImageOptions {
                mode,
                ..HostImageOptions::default()
            };
            if mode == HostImageMode::Busybox && box_image::host::find_busybox(&host).is_none() {
                return Err(EngineError::WrongState(
                    "no busybox on this host (apt-get install busybox-static), or use \
                     box init --mode system"
                        .into(),
                ));
            }
            let tree = plan_host_tree(&host)?;
            let tar = tree.write_tar(Vec::with_capacity(4 << 20))?;
            unpack(tar.as_slice(), &rootfs, &opts)?;
        }
    }
    for d in ["proc", "sys", "dev", "tmp", "root", "work", "etc"] {
        let p = rootfs.join(d);
        if !p.exists() {
            fs::create_dir_all(&p).ctx(|| format!("cannot create {}", p.display()))?;
        }
    }
    let meta = EnvMeta {
        name: env_name(project),
        source: source.clone(),
        created: crate::db::now_ms(),
    };
    let p = tmp.join(META);
    let json = serde_json::to_vec_pretty(&meta).map_err(|source| EngineError::Json {
        context: "cannot encode the environment's metadata".into(),
        source,
    })?;
    fs::write(&p, json).ctx(|| format!("cannot write {}", p.display()))
}

/// `box env rm`: removes `.box/` (renamed away first, so a half-removed environment is never
/// entered).
pub fn remove(env: &Environment) -> Result<()> {
    let dir = env.dir();
    let doomed = env
        .project
        .join(format!("{DIR}.removing-{}", std::process::id()));
    fs::rename(&dir, &doomed).map_err(|e| EngineError::io_path("remove", &dir, e))?;
    fs::remove_dir_all(&doomed).map_err(|e| EngineError::io_path("remove", &doomed, e))
}

/// `box env export`: the environment (`env.json` and `rootfs/`) as a tar on `writer`.
pub fn export<W: Write>(env: &Environment, writer: W) -> Result<W> {
    Ok(box_image::archive::export_dir(&env.dir(), writer)?)
}

/// `box env import`: makes `<project>/.box` from a tar that `export` wrote.
pub fn import<R: Read>(project: &Path, reader: R) -> Result<Environment> {
    let project = fs::canonicalize(project)
        .ctx(|| format!("cannot use {} as a project directory", project.display()))?;
    let dir = project.join(DIR);
    if dir.exists() {
        return Err(EngineError::WrongState(format!(
            "{} has an environment already: remove it first (box env rm)",
            project.display()
        )));
    }
    let tmp = project.join(format!("{DIR}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let result = (|| -> Result<()> {
        fs::create_dir_all(&tmp).ctx(|| format!("cannot create {}", tmp.display()))?;
        let opts = UnpackOptions {
            rootless: box_runtime::idmap::running_rootless(),
            ignore_ownership: box_runtime::idmap::running_rootless(),
        };
        unpack(reader, &tmp, &opts)?;
        if !tmp.join(META).is_file() || !tmp.join(ROOTFS).is_dir() {
            return Err(EngineError::invalid(
                "not an environment export: no env.json and rootfs/ at its top (make one with \
                 box env export)",
            ));
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &dir).map_err(|e| EngineError::io_path("create", &dir, e))?;
    Environment::open(&project)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_directory() {
        assert_eq!(env_name(Path::new("/src/my_app")), "my-app");
        assert_eq!(env_name(Path::new("/src/web-1")), "web-1");
        assert_eq!(env_name(Path::new("/")), "box");
    }

    #[test]
    fn metadata_round_trips() {
        let m = EnvMeta {
            name: "x".into(),
            source: Source::Image("alpine:3.19".into()),
            created: 5,
        };
        let back: EnvMeta = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
