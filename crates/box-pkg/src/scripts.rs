//! Package scripts: apk-tools' script store (`lib/apk/db/scripts.tar`, kept for a package's
//! removal), how a script is handed to the caller to run inside the root (with apk's arguments:
//! the new version, the old one on upgrades, the matched directories for a trigger), and
//! triggers: after a transaction, each installed package whose trigger globs match a directory
//! the transaction changed has its `.trigger` script run with those directories.

use std::fs;
use std::path::Path;

use crate::index::Package;
use crate::installed::InstalledPackage;
use crate::{PkgError, Result};

/// One script to run inside the root.
#[derive(Debug)]
pub struct Script<'s> {
    /// Whose it is.
    pub package: &'s Package,
    /// Which (`.pre-install`, `.post-upgrade`, `.trigger`, …).
    pub name: &'s str,
    /// Its content.
    pub body: &'s [u8],
    /// Its arguments, as apk-tools passes them.
    pub args: Vec<String>,
}

/// Runs a package's script inside the root.
pub type ScriptRunner<'a> = dyn Fn(&Script<'_>) -> Result<()> + 'a;

/// apk-tools' script store, relative to the root: a tar whose entries are named
/// `NAME-VERSION.CHECKSUM.SCRIPT` (`busybox-1.36.1-r5.Q1…=.post-install`).
pub const SCRIPTS: &str = "lib/apk/db/scripts.tar";

/// The scripts stored in `root`: (entry name, content).
pub(crate) fn read_scripts(root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let bytes = match fs::read(root.join(SCRIPTS)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PkgError::Io(format!("cannot read {SCRIPTS}: {e}"))),
    };
    let bad = |e: std::io::Error| PkgError::Io(format!("{SCRIPTS}: {e}"));
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut body).map_err(bad)?;
        out.push((name, body));
    }
    Ok(out)
}

/// Replaces the script store of `root` with `scripts`.
pub(crate) fn write_scripts(root: &Path, scripts: &[(String, Vec<u8>)]) -> Result<()> {
    let bad = |e: std::io::Error| PkgError::Io(format!("{SCRIPTS}: {e}"));
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in scripts {
        let mut h = tar::Header::new_gnu();
        // apk-tools reads only entries typed as regular files.
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(body.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, name, body.as_slice()).map_err(bad)?;
    }
    let tar = b.into_inner().map_err(bad)?;
    crate::install::write_atomically(root, SCRIPTS, tar)
}

/// The stored script `script` (`pre-deinstall`, …) of `pkg`, if any.
pub(crate) fn stored_script<'s>(
    scripts: &'s [(String, Vec<u8>)],
    pkg: &Package,
    script: &str,
) -> Option<&'s [u8]> {
    let prefix = format!("{}.", pkg.file_stem());
    let suffix = format!(".{script}");
    scripts
        .iter()
        .find(|(n, _)| n.starts_with(&prefix) && n.ends_with(&suffix))
        .map(|(_, b)| b.as_slice())
}

/// Whether `dir` (absolute, `/usr/bin`) matches the trigger glob `glob` as apk matches them
/// (fnmatch with FNM_PATHNAME: `*` and `?` do not cross a `/`).
fn trigger_matches(glob: &str, dir: &str) -> bool {
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..glob::MatchOptions::new()
    };
    glob::Pattern::new(glob).is_ok_and(|p| p.matches_with(dir, options))
}

/// Runs the `.trigger` script of every package of `db` whose trigger globs match one of
/// `changed` (directories relative to the root that the transaction put files in or took files
/// from), with the matching directories (absolute) as its arguments.
pub(crate) fn fire_triggers(
    root: &Path,
    db: &[InstalledPackage],
    changed: &[String],
    run_script: &ScriptRunner<'_>,
) -> Result<()> {
    let stored = read_scripts(root)?;
    for ip in db.iter().filter(|ip| !ip.triggers.is_empty()) {
        let Some(body) = stored_script(&stored, &ip.package, "trigger") else {
            continue;
        };
        let mut matched: Vec<String> = Vec::new();
        for dir in changed.iter().map(|d| format!("/{d}")) {
            let hit = ip
                .triggers
                .split_whitespace()
                .any(|g| trigger_matches(g, &dir));
            if hit && !matched.contains(&dir) {
                matched.push(dir);
            }
        }
        if !matched.is_empty() {
            run_script(&Script {
                package: &ip.package,
                name: ".trigger",
                body,
                args: matched,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_globs_match_like_fnmatch_with_pathname() {
        assert!(trigger_matches("/usr/bin", "/usr/bin"));
        assert!(trigger_matches("/lib/modules/*", "/lib/modules/6.1"));
        assert!(!trigger_matches(
            "/lib/modules/*",
            "/lib/modules/6.1/kernel"
        ));
        assert!(trigger_matches(
            "/usr/share/fonts/*",
            "/usr/share/fonts/misc"
        ));
        assert!(!trigger_matches("/usr/bin", "/usr/sbin"));
    }
}
