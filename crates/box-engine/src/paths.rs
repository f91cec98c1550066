//! Where the engine keeps things: the data dir (box.db, images, snapshots, per-box files) and the
//! run dir (box-runtime's state root, attach sockets, supervisor pid files), rootful or rootless.

use std::path::{Path, PathBuf};

/// The engine's directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Data: `/var/lib/box` (root) or `$XDG_DATA_HOME/box` (rootless).
    pub data: PathBuf,
    /// Runtime state: `/run/box` (root) or `$XDG_RUNTIME_DIR/box`, else `/tmp/box-$UID`.
    pub run: PathBuf,
    /// Whether Box runs without host root (snapshots use `userxattr`, no user namespace of
    /// the box's own).
    pub rootless: bool,
}

impl Paths {
    /// The default places for this process: rootless when
    /// [`box_runtime::idmap::running_rootless`] says so.
    pub fn detect() -> Paths {
        let rootless = box_runtime::idmap::running_rootless();
        if !rootless {
            return Paths {
                data: PathBuf::from("/var/lib/box"),
                run: PathBuf::from("/run/box"),
                rootless,
            };
        }
        Paths {
            data: rootless_data_dir(),
            run: rootless_run_dir(),
            rootless,
        }
    }

    /// Paths over a given data dir (tests, `--root`): the run dir is `<data>/run`; rootless as
    /// detected.
    pub fn with_data_dir(data: impl Into<PathBuf>) -> Paths {
        let data = data.into();
        Paths {
            run: data.join("run"),
            data,
            rootless: box_runtime::idmap::running_rootless(),
        }
    }

    /// Paths over given data and run dirs; rootless as detected.
    pub fn with_dirs(data: impl Into<PathBuf>, run: impl Into<PathBuf>) -> Paths {
        Paths {
            data: data.into(),
            run: run.into(),
            rootless: box_runtime::idmap::running_rootless(),
        }
    }

    /// The shared SQLite database: `<data>/box.db`.
    pub fn db_path(&self) -> PathBuf {
        self.data.join("box.db")
    }

    /// The parent of every box's dir: `<data>/boxes`.
    pub fn boxes_dir(&self) -> PathBuf {
        self.data.join("boxes")
    }

    /// A box's files (bundle config.json, log, hostname, hosts, resolv.conf): `<data>/boxes/<id>`.
    pub fn box_dir(&self, id: &str) -> PathBuf {
        self.boxes_dir().join(id)
    }

    /// A box's OCI bundle config: `<data>/boxes/<id>/config.json`.
    pub fn config_path(&self, id: &str) -> PathBuf {
        self.box_dir(id).join("config.json")
    }

    /// A box's log file: `<data>/boxes/<id>/ctr.log`.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.box_dir(id).join("ctr.log")
    }

    /// A box's runtime files (attach socket, supervisor pid): `<run>/boxes/<id>`.
    pub fn box_run_dir(&self, id: &str) -> PathBuf {
        self.run.join("boxes").join(id)
    }

    /// A box's attach socket: `<run>/boxes/<id>/attach.sock`.
    pub fn attach_socket(&self, id: &str) -> PathBuf {
        self.box_run_dir(id).join("attach.sock")
    }

    /// The attach socket of an exec session of box `id` whose process is host pid `pid`:
    /// `<run>/boxes/<id>/e<pid>.sock` (short: unix socket paths are limited to 107 bytes).
    pub fn exec_socket(&self, id: &str, pid: i32) -> PathBuf {
        self.box_run_dir(id).join(format!("e{pid}.sock"))
    }

    /// The log of an exec session: `<data>/boxes/<id>/exec-<pid>.log` (CRI format, as the
    /// box's own `ctr.log`).
    pub fn exec_log_path(&self, id: &str, pid: i32) -> PathBuf {
        self.box_dir(id).join(format!("exec-{pid}.log"))
    }

    /// The exit code of an ended exec session (a line of text, next to its log):
    /// `<data>/boxes/<id>/exec-<pid>.exit`.
    pub fn exec_exit_path(&self, id: &str, pid: i32) -> PathBuf {
        self.box_dir(id).join(format!("exec-{pid}.exit"))
    }

    /// box-runtime's state root: `<run>/runtime`.
    pub fn runtime_root(&self) -> PathBuf {
        self.run.join("runtime")
    }

    /// Where a box's snapshot lives (box-image's layout): `<data>/snapshots/<id>`.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.data.join("snapshots").join(id)
    }
}

fn home_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => PathBuf::from(format!("/tmp/box-home-{}", nix::unistd::getuid())),
    }
}

fn absolute_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn rootless_data_dir() -> PathBuf {
    absolute_env("XDG_DATA_HOME")
        .unwrap_or_else(|| home_dir().join(".local/share"))
        .join("box")
}

fn rootless_run_dir() -> PathBuf {
    match absolute_env("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_dir() => dir.join("box"),
        _ => PathBuf::from(format!("/tmp/box-{}", real_uid())),
    }
}

/// The user's uid on the host side: inside the CLI's user namespace `getuid()` is 0, so the
/// owner of the namespace (mapped to 0) is read from /proc/self/uid_map.
fn real_uid() -> u32 {
    let own = nix::unistd::getuid().as_raw();
    if let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") {
        for line in map.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [inside, outside, _count] = f.as_slice() {
                if inside.parse::<u32>().ok() == Some(own) {
                    if let Ok(host) = outside.parse::<u32>() {
                        return host;
                    }
                }
            }
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_box_paths_follow_the_layout() {
        let p = Paths::with_data_dir("/d");
        assert_eq!(p.run, PathBuf::from("/d/run"));
        assert_eq!(p.db_path(), PathBuf::from("/d/box.db"));
        assert_eq!(p.box_dir("ab"), PathBuf::from("/d/boxes/ab"));
        assert_eq!(
            p.config_path("ab"),
            PathBuf::from("/d/boxes/ab/config.json")
        );
        assert_eq!(p.log_path("ab"), PathBuf::from("/d/boxes/ab/ctr.log"));
        assert_eq!(p.box_run_dir("ab"), PathBuf::from("/d/run/boxes/ab"));
        assert_eq!(
            p.attach_socket("ab"),
            PathBuf::from("/d/run/boxes/ab/attach.sock")
        );
        assert_eq!(p.runtime_root(), PathBuf::from("/d/run/runtime"));
        assert_eq!(p.snapshot_dir("ab"), PathBuf::from("/d/snapshots/ab"));
    }
}
