//! Putting packages into a root and taking them out again. A transaction first checks every
//! package file (signature, the index's control checksum, the data hash), so a damaged or
//! truncated download, or an entry that would leave the root, stops it before anything
//! changes; then each package's data is extracted and the installed database replaced
//! (written aside and renamed) after it, so the database only ever names whole packages; the
//! world file comes last.

use std::collections::HashSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::apk::read_apk;
use crate::atom::Atom;
use crate::index::Package;
use crate::installed::{self, InstalledPackage, INSTALLED, TRIGGERS, WORLD};
use crate::scripts::{read_scripts, stored_script, write_scripts, Script, ScriptRunner};
use crate::{PkgError, Result};

fn io(what: String) -> impl FnOnce(std::io::Error) -> PkgError {
    move |e| PkgError::Io(format!("{what}: {e}"))
}

fn q1(bytes: &[u8]) -> String {
    format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(bytes))
    )
}

/// A path inside the root as the package wrote it: relative, no `..`, no `.` parts.
fn clean(raw: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// What extracting a package put in place.
#[derive(Debug, Default)]
pub struct Extracted {
    /// (path, `Q1` checksum) of each file, hard link and symlink, in order.
    pub files: Vec<(String, String)>,
    /// Each directory the package ships, with its apk ACL when not root's 0755.
    pub dirs: Vec<(String, Option<String>)>,
    /// The apk ACL (`uid:gid:mode`) of each file that is not root's 0644.
    pub file_acls: Vec<(String, String)>,
}

/// apk's ACL text of an entry: `uid:gid:mode` (mode in octal), `None` when it is `default`.
fn acl(header: &tar::Header, default: u32) -> Option<String> {
    let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
    let mode = header.mode().unwrap_or(default) & 0o7777;
    (uid != 0 || gid != 0 || mode != default).then(|| format!("{uid}:{gid}:{mode:o}"))
}

/// Extracts a package's data member into `root`: files, hard links and symlinks with their `Q1`
/// checksums, directories and permissions as apk records them. Entries named `.keep_*` are
/// skipped, as apk skips them.
pub fn extract(data: &[u8], root: &Path) -> Result<Extracted> {
    let mut out = Extracted::default();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(data));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| PkgError::BadPackage(format!("data: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| PkgError::BadPackage(format!("data entry: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| PkgError::BadPackage(format!("data entry path: {e}")))?
            .into_owned();
        let Some(path) = clean(&raw) else {
            return Err(PkgError::BadPackage(format!(
                "entry {} would leave the root",
                raw.display()
            )));
        };
        if path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(".keep_"))
        {
            continue;
        }
        let kind = entry.header().entry_type();
        let link = entry
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned());
        let header = entry.header().clone();
        // unpack_in refuses paths that leave `root`, through `..` or through symlinks.
        let inside = entry
            .unpack_in(root)
            .map_err(io(format!("cannot extract {path}")))?;
        if !inside {
            return Err(PkgError::BadPackage(format!(
                "entry {path} would leave the root"
            )));
        }
        // A hard link is recorded as the file it names, with that file's checksum (as apk does).
        if kind.is_file() || kind.is_hard_link() {
            let content = fs::read(root.join(&path)).map_err(io(format!("cannot read {path}")))?;
            if let Some(a) = acl(&header, 0o644) {
                out.file_acls.push((path.clone(), a));
            }
            out.files.push((path, q1(&content)));
        } else if kind.is_symlink() {
            out.files
                .push((path, q1(link.unwrap_or_default().as_bytes())));
        } else if kind.is_dir() {
            out.dirs.push((path, acl(&header, 0o755)));
        }
    }
    Ok(out)
}

/// Removes `files` (paths under `root`) except those in `keep` (owned by another package),
/// then the directories they leave empty.
pub fn remove_files(root: &Path, files: &[(String, String)], keep: &HashSet<&str>) -> Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (path, _) in files {
        if keep.contains(path.as_str()) || clean(Path::new(path)).is_none() {
            continue;
        }
        let full = root.join(path);
        match fs::remove_file(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PkgError::Io(format!("cannot remove {path}: {e}"))),
        }
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.push(root.join(p));
            parent = p.parent();
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        // Only empty ones go; anything else stays.
        let _ = fs::remove_dir(d);
    }
    Ok(())
}

/// The installed database of `root` (empty when there is none), with the packages' triggers.
pub fn read_installed(root: &Path) -> Result<Vec<InstalledPackage>> {
    let read = |rel: &str| match fs::read_to_string(root.join(rel)) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(PkgError::Io(format!("cannot read {rel}: {e}"))),
    };
    let mut db = installed::parse(&read(INSTALLED)?)?;
    installed::parse_triggers(&mut db, &read(TRIGGERS)?);
    Ok(db)
}

/// Writes the installed database of `root` and its triggers file.
fn write_installed(root: &Path, db: &[InstalledPackage]) -> Result<()> {
    write_atomically(root, INSTALLED, installed::write(db))?;
    write_atomically(root, TRIGGERS, installed::write_triggers(db))
}

/// The world of `root` (empty when there is none).
pub fn read_world(root: &Path) -> Result<Vec<Atom>> {
    match fs::read_to_string(root.join(WORLD)) {
        Ok(text) => installed::parse_world(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(PkgError::Io(format!("cannot read {WORLD}: {e}"))),
    }
}

/// Replaces the file `rel` of `root` with `bytes`: written aside under a fresh name, then
/// renamed over it.
pub(crate) fn write_atomically(root: &Path, rel: &str, bytes: impl AsRef<[u8]>) -> Result<()> {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    }
    let tmp = path.with_extension("box-new");
    // Whatever is left at the temporary name (a file, or a symlink planted there) goes first:
    // the new file is made, never opened through a link.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(PkgError::Io(format!(
                "cannot remove {}: {e}",
                tmp.display()
            )))
        }
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    std::io::Write::write_all(&mut file, bytes.as_ref())
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io(format!("cannot write {}", path.display())))
}

/// Installs `packages` (dependencies first, each with its downloaded file) into `root` and
/// records `world`. Every file is checked before anything is extracted: its signature against
/// `keys`, its control checksum against the index's, its data against its hash. A package's
/// `.pre-install` (`.pre-upgrade`) runs through `run_script` before its files go in place,
/// its `.post-install` (`.post-upgrade`) after; a failing script stops the transaction there.
pub fn install(
    root: &Path,
    keys: &[(String, String)],
    packages: &[(Package, Vec<u8>)],
    world: &[Atom],
    run_script: &ScriptRunner<'_>,
) -> Result<()> {
    let mut checked = Vec::with_capacity(packages.len());
    for (pkg, bytes) in packages {
        let apk = read_apk(bytes, Some(keys)).map_err(|e| match e {
            PkgError::BadPackage(why) => {
                PkgError::BadPackage(format!("{}: {why}", pkg.file_stem()))
            }
            PkgError::Untrusted(why) => PkgError::Untrusted(format!("{}: {why}", pkg.file_stem())),
            e => e,
        })?;
        if !pkg.checksum.is_empty() && apk.checksum != pkg.checksum {
            return Err(PkgError::BadPackage(format!(
                "{}: the file is not the one the index names (checksum {} instead of {})",
                pkg.file_stem(),
                apk.checksum,
                pkg.checksum
            )));
        }
        check_paths(apk.data).map_err(|e| match e {
            PkgError::BadPackage(why) => {
                PkgError::BadPackage(format!("{}: {why}", pkg.file_stem()))
            }
            e => e,
        })?;
        checked.push((pkg, apk));
    }
    let mut db = read_installed(root)?;
    let mut changed: Vec<String> = Vec::new();
    // apk-tools refuses a root without a world file: one exists before anything changes.
    if !root.join(WORLD).exists() {
        write_atomically(root, WORLD, installed::write_world(&read_world(root)?))?;
    }
    for (pkg, apk) in checked {
        let old_version = db
            .iter()
            .find(|ip| ip.package.name == pkg.name)
            .map(|ip| ip.package.version.to_string());
        let (pre, post) = if old_version.is_some() {
            (".pre-upgrade", ".post-upgrade")
        } else {
            (".pre-install", ".post-install")
        };
        // apk's arguments: the new version, then the old one on an upgrade.
        let args: Vec<String> = std::iter::once(pkg.version.to_string())
            .chain(old_version.clone())
            .collect();
        let run = |wanted: &str| -> Result<()> {
            match apk.scripts.iter().find(|(n, _)| n == wanted) {
                Some((name, body)) => run_script(&Script {
                    package: pkg,
                    name,
                    body,
                    args: args.clone(),
                }),
                None => Ok(()),
            }
        };
        run(pre)?;
        let extracted = extract(apk.data, root)?;
        changed.extend(extracted.files.iter().map(|(p, _)| parent_dir(p)));
        // An upgrade: the old version's files that the new one no longer has go.
        let mut old_stem = None;
        if let Some(old) = db.iter().position(|ip| ip.package.name == pkg.name) {
            let old = db.remove(old);
            changed.extend(old.files.iter().map(|(p, _)| parent_dir(p)));
            let new: HashSet<&str> = extracted.files.iter().map(|(p, _)| p.as_str()).collect();
            remove_files(root, &old.files, &new)?;
            old_stem = Some(format!("{}.", old.package.file_stem()));
        }
        // `.PKGINFO` keys, all values of a repeated one in a list.
        let info = |key: &str| {
            apk.pkginfo
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        db.push(InstalledPackage {
            package: pkg.clone(),
            files: extracted.files,
            dirs: extracted.dirs,
            file_acls: extracted.file_acls,
            replaces: info("replaces"),
            replaces_priority: info("replaces_priority"),
            triggers: info("triggers"),
        });
        // After each package: the database never names files that are not in place.
        write_installed(root, &db)?;
        // Its scripts are kept (apk's way) for its removal; an older version's go.
        let mut stored = read_scripts(root)?;
        let had = stored.len();
        if let Some(old) = &old_stem {
            stored.retain(|(n, _)| !n.starts_with(old.as_str()));
        }
        for (script, body) in &apk.scripts {
            stored.push((
                format!(
                    "{}.{}.{}",
                    pkg.file_stem(),
                    apk.checksum,
                    script.trim_start_matches('.')
                ),
                body.clone(),
            ));
        }
        if stored.len() != had || !apk.scripts.is_empty() {
            write_scripts(root, &stored)?;
        }
        run(post)?;
    }
    write_atomically(root, WORLD, installed::write_world(world))?;
    crate::scripts::fire_triggers(root, &db, &changed, run_script)
}

/// The directory of a path relative to the root (empty for the top).
fn parent_dir(path: &str) -> String {
    path.rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}

/// Refuses a data member with an entry that would leave the root (before anything of it is
/// extracted).
fn check_paths(data: &[u8]) -> Result<()> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(data));
    let entries = archive
        .entries()
        .map_err(|e| PkgError::BadPackage(format!("data: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| PkgError::BadPackage(format!("data entry: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| PkgError::BadPackage(format!("data entry path: {e}")))?;
        if clean(&raw).is_none() {
            return Err(PkgError::BadPackage(format!(
                "entry {} would leave the root",
                raw.display()
            )));
        }
    }
    Ok(())
}

/// Removes the installed packages named `names` (their files, unless another package owns
/// them) and records `world`; each one's stored `pre-deinstall` script runs before its files
/// go, `post-deinstall` after.
pub fn uninstall(
    root: &Path,
    names: &[String],
    world: &[Atom],
    run_script: &ScriptRunner<'_>,
) -> Result<()> {
    let db = read_installed(root)?;
    let (gone, kept): (Vec<_>, Vec<_>) = db
        .into_iter()
        .partition(|ip| names.contains(&ip.package.name));
    let mut stored = read_scripts(root)?;
    // apk's argument for removal scripts: the old version.
    let deinstall = |ip: &InstalledPackage, script: &str| -> Result<()> {
        match stored_script(&stored, &ip.package, script) {
            Some(body) => run_script(&Script {
                package: &ip.package,
                name: &format!(".{script}"),
                body,
                args: vec![ip.package.version.to_string()],
            }),
            None => Ok(()),
        }
    };
    for ip in &gone {
        deinstall(ip, "pre-deinstall")?;
    }
    let owned: HashSet<&str> = kept
        .iter()
        .flat_map(|ip| ip.files.iter().map(|(p, _)| p.as_str()))
        .collect();
    write_installed(root, &kept)?;
    write_atomically(root, WORLD, installed::write_world(world))?;
    let kept_dirs: HashSet<&str> = kept
        .iter()
        .flat_map(|ip| ip.dirs.iter().map(|(d, _)| d.as_str()))
        .collect();
    for ip in &gone {
        remove_files(root, &ip.files, &owned)?;
        // The directories it shipped go too when empty and no other package has them.
        let mut dirs: Vec<&str> = ip.dirs.iter().map(|(d, _)| d.as_str()).collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        for d in dirs.into_iter().filter(|d| !kept_dirs.contains(d)) {
            if clean(Path::new(d)).is_some() {
                let _ = fs::remove_dir(root.join(d));
            }
        }
        deinstall(ip, "post-deinstall")?;
    }
    let before = stored.len();
    stored.retain(|(n, _)| {
        !gone
            .iter()
            .any(|ip| n.starts_with(&format!("{}.", ip.package.file_stem())))
    });
    if stored.len() != before {
        write_scripts(root, &stored)?;
    }
    let changed: Vec<String> = gone
        .iter()
        .flat_map(|ip| ip.files.iter().map(|(p, _)| parent_dir(p)))
        .collect();
    crate::scripts::fire_triggers(root, &kept, &changed, run_script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build_apk, key};

    fn no_scripts(s: &Script<'_>) -> Result<()> {
        panic!("no script expected, got {}", s.name)
    }

    pub(super) fn pkg(name: &str, version: &str, checksum: &str) -> Package {
        let mut p = crate::index::parse(&format!("P:{name}\nV:{version}\n\n")).unwrap()[0].clone();
        p.checksum = checksum.to_string();
        p
    }

    #[test]
    fn installs_upgrades_and_removes() {
        let (private, keys) = key();
        let root = std::env::temp_dir().join(format!("box-pkg-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let (v1, c1) = build_apk(
            &private,
            "hello",
            "1.0-r0",
            &[("usr/bin/hello", b"v1"), ("usr/share/hello/old", b"old")],
        );
        let (lib, cl) = build_apk(&private, "libhi", "1-r0", &[("usr/lib/libhi.so", b"lib")]);
        let world: Vec<Atom> = crate::atom::parse_list("hello").unwrap();
        install(
            &root,
            &keys,
            &[
                (pkg("libhi", "1-r0", &cl), lib),
                (pkg("hello", "1.0-r0", &c1), v1),
            ],
            &world,
            &no_scripts,
        )
        .unwrap();
        assert_eq!(fs::read(root.join("usr/bin/hello")).unwrap(), b"v1");
        let db = read_installed(&root).unwrap();
        assert_eq!(db.len(), 2);
        assert_eq!(db[1].files[0].0, "usr/bin/hello");
        assert_eq!(read_world(&root).unwrap(), world);

        // Upgrade: new content, the file the new version dropped is gone.
        let (v2, c2) = build_apk(&private, "hello", "2.0-r0", &[("usr/bin/hello", b"v2")]);
        install(
            &root,
            &keys,
            &[(pkg("hello", "2.0-r0", &c2), v2)],
            &world,
            &no_scripts,
        )
        .unwrap();
        assert_eq!(fs::read(root.join("usr/bin/hello")).unwrap(), b"v2");
        assert!(!root.join("usr/share/hello").exists());
        let db = read_installed(&root).unwrap();
        assert_eq!(db.len(), 2);
        assert_eq!(db[1].package.version.as_str(), "2.0-r0");

        // A truncated download, a file that is not the indexed one: refused, nothing changed.
        let (v3, c3) = build_apk(&private, "hello", "3.0-r0", &[("usr/bin/hello", b"v3")]);
        let before = fs::read_to_string(root.join(INSTALLED)).unwrap();
        let cut = v3[..v3.len() / 2].to_vec();
        assert!(install(
            &root,
            &keys,
            &[(pkg("hello", "3.0-r0", &c3), cut)],
            &world,
            &no_scripts
        )
        .is_err());
        let e = install(
            &root,
            &keys,
            &[(pkg("hello", "3.0-r0", "Q1other="), v3)],
            &world,
            &no_scripts,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not the one the index names"), "{e}");
        assert_eq!(fs::read_to_string(root.join(INSTALLED)).unwrap(), before);
        assert_eq!(fs::read(root.join("usr/bin/hello")).unwrap(), b"v2");

        // Removal takes exactly the package's files.
        uninstall(&root, &["hello".to_string()], &[], &no_scripts).unwrap();
        assert!(!root.join("usr/bin/hello").exists());
        assert!(root.join("usr/lib/libhi.so").exists());
        assert_eq!(read_installed(&root).unwrap().len(), 1);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn entries_leaving_the_root_are_refused() {
        let (private, keys) = key();
        let root = std::env::temp_dir().join(format!("box-pkg-escape-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let (evil, c) = build_apk(&private, "evil", "1-r0", &[("../escaped", b"x")]);
        let e = install(
            &root,
            &keys,
            &[(pkg("evil", "1-r0", &c), evil)],
            &[],
            &no_scripts,
        )
        .unwrap_err();
        assert!(e.to_string().contains("leave the root"), "{e}");
        assert!(!root.parent().unwrap().join("escaped").exists());
        assert!(!root.join(INSTALLED).exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_hard_link_is_recorded_as_the_file_it_names() {
        let root = std::env::temp_dir().join(format!("box-pkg-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "usr/bin/one", &b"hello"[..]).unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Link);
        l.set_size(0);
        b.append_link(&mut l, "usr/bin/two", "usr/bin/one").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
        let got = extract(&gz.finish().unwrap(), &root).unwrap();
        let files = &got.files;
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[1].0, "usr/bin/two");
        assert_eq!(files[0].1, files[1].1);
        // 0755 is not a file's default (0644): apk records it.
        assert_eq!(
            got.file_acls[0],
            ("usr/bin/one".to_string(), "0:0:755".into())
        );
        assert_eq!(fs::read(root.join("usr/bin/two")).unwrap(), b"hello");
        let _ = fs::remove_dir_all(&root);
    }
}

#[cfg(test)]
mod script_tests {
    use super::*;
    use crate::scripts::SCRIPTS;
    use crate::testing::{build_apk_with_info, build_apk_with_scripts, key};
    use std::cell::RefCell;

    #[test]
    fn scripts_run_around_the_files_and_a_failure_stops() {
        let (private, keys) = key();
        let root = std::env::temp_dir().join(format!("box-pkg-scripts-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let mut p = crate::index::parse("P:s\nV:1-r0\n\n").unwrap()[0].clone();
        let (apk, c) = build_apk_with_scripts(
            &private,
            "s",
            "1-r0",
            &[("etc/s.conf", b"x")],
            &[
                (".pre-install", b"pre"),
                (".post-install", b"post"),
                (".pre-deinstall", b"gone?"),
                (".post-deinstall", b"bye"),
            ],
        );
        p.checksum = c;
        let seen = RefCell::new(Vec::new());
        let runner = |s: &Script<'_>| -> Result<()> {
            // The files are in place for the post-install script only.
            let present = root.join("etc/s.conf").exists();
            seen.borrow_mut().push(format!(
                "{} {} {} {present} {:?}",
                s.package.name,
                s.name,
                String::from_utf8_lossy(s.body),
                s.args
            ));
            Ok(())
        };
        install(&root, &keys, &[(p.clone(), apk.clone())], &[], &runner).unwrap();
        assert_eq!(
            *seen.borrow(),
            [
                "s .pre-install pre false [\"1-r0\"]",
                "s .post-install post true [\"1-r0\"]"
            ]
        );
        // Kept for the removal, run around it.
        let stored = read_scripts(&root).unwrap();
        assert_eq!(stored.len(), 4, "{stored:?}");
        // Typed as regular files: apk-tools skips any other entry of scripts.tar.
        let tar = fs::read(root.join(SCRIPTS)).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        for e in archive.entries().unwrap() {
            assert_eq!(e.unwrap().header().entry_type(), tar::EntryType::Regular);
        }
        // A world file exists (apk-tools refuses a root without one).
        assert!(root.join(WORLD).exists());
        seen.borrow_mut().clear();
        uninstall(&root, &["s".to_string()], &[], &runner).unwrap();
        assert_eq!(
            *seen.borrow(),
            [
                "s .pre-deinstall gone? true [\"1-r0\"]",
                "s .post-deinstall bye false [\"1-r0\"]"
            ]
        );
        assert!(read_scripts(&root).unwrap().is_empty());
        // A second install of the same name is an upgrade: its scripts are the upgrade ones
        // (this package has none), and a failing script is an error.
        let failing = |s: &Script<'_>| -> Result<()> {
            Err(PkgError::Io(format!("{} exited with 1", s.name)))
        };
        fs::remove_dir_all(&root).unwrap();
        fs::create_dir_all(&root).unwrap();
        let e = install(&root, &keys, &[(p, apk)], &[], &failing).unwrap_err();
        assert!(e.to_string().contains(".pre-install exited with 1"), "{e}");
        assert!(!root.join("etc/s.conf").exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn upgrades_get_both_versions_and_triggers_fire_on_the_directories_they_watch() {
        let (private, keys) = key();
        let root = std::env::temp_dir().join(format!("box-pkg-trig-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let package = |name: &str, version: &str, c: String| super::tests::pkg(name, version, &c);
        // A package that watches /usr/bin and the directories right below /lib/modules.
        let (watcher, c) = build_apk_with_info(
            &private,
            "watcher",
            "1-r0",
            &[("etc/watcher", b"w")],
            &[(".trigger", b"relink")],
            "triggers = /usr/bin /lib/modules/*\n",
        );
        let watcher = (package("watcher", "1-r0", c), watcher);
        let (tool1, c1) = build_apk_with_scripts(
            &private,
            "tool",
            "1-r0",
            &[
                ("usr/bin/tool", b"1"),
                ("lib/modules/6.1/kernel/m.ko", b"m"),
            ],
            &[(".post-upgrade", b"up")],
        );
        let (tool2, c2) = build_apk_with_scripts(
            &private,
            "tool",
            "2-r0",
            &[("usr/bin/tool", b"2"), ("lib/modules/6.2/m.ko", b"m")],
            &[(".post-upgrade", b"up")],
        );
        let seen = RefCell::new(Vec::new());
        let runner = |s: &Script<'_>| -> Result<()> {
            seen.borrow_mut()
                .push(format!("{} {} {:?}", s.package.name, s.name, s.args));
            Ok(())
        };
        install(&root, &keys, &[watcher], &[], &runner).unwrap();
        // Only /etc changed: nothing the watcher watches.
        assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
        install(
            &root,
            &keys,
            &[(package("tool", "1-r0", c1), tool1)],
            &[],
            &runner,
        )
        .unwrap();
        assert_eq!(
            *seen.borrow(),
            ["watcher .trigger [\"/usr/bin\"]"],
            "lib/modules/6.1/kernel is deeper than /lib/modules/* reaches"
        );
        seen.borrow_mut().clear();
        install(
            &root,
            &keys,
            &[(package("tool", "2-r0", c2), tool2)],
            &[],
            &runner,
        )
        .unwrap();
        assert_eq!(
            *seen.borrow(),
            [
                "tool .post-upgrade [\"2-r0\", \"1-r0\"]",
                "watcher .trigger [\"/usr/bin\", \"/lib/modules/6.2\"]"
            ]
        );
        let _ = fs::remove_dir_all(&root);
    }
}
