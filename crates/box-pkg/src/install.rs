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
    write_atomically(root, INSTALLED, &installed::write(db))?;
    write_atomically(root, TRIGGERS, &installed::write_triggers(db))
}

/// The world of `root` (empty when there is none).
pub fn read_world(root: &Path) -> Result<Vec<Atom>> {
    match fs::read_to_string(root.join(WORLD)) {
        Ok(text) => installed::parse_world(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(PkgError::Io(format!("cannot read {WORLD}: {e}"))),
    }
}

fn write_atomically(root: &Path, rel: &str, text: &str) -> Result<()> {
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
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io(format!("cannot write {}", path.display())))
}

/// apk-tools' script store, relative to the root: a tar whose entries are named
/// `NAME-VERSION.CHECKSUM.SCRIPT` (`busybox-1.36.1-r5.Q1…=.post-install`).
pub const SCRIPTS: &str = "lib/apk/db/scripts.tar";

fn read_scripts(root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
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

fn write_scripts(root: &Path, scripts: &[(String, Vec<u8>)]) -> Result<()> {
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
    let path = root.join(SCRIPTS);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    }
    let tmp = path.with_extension("box-new");
    fs::write(&tmp, tar).map_err(io(format!("cannot write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io(format!("cannot write {}", path.display())))
}

/// The stored script `script` (`pre-deinstall`, …) of `pkg`, if any.
fn stored_script<'s>(
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

/// Runs one of a package's scripts inside the root: (package, script name such as
/// `.post-install`, its content).
pub type ScriptRunner<'a> = dyn Fn(&Package, &str, &[u8]) -> Result<()> + 'a;

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
    // apk-tools refuses a root without a world file: one exists before anything changes.
    if !root.join(WORLD).exists() {
        write_atomically(root, WORLD, &installed::write_world(&read_world(root)?))?;
    }
    for (pkg, apk) in checked {
        let upgrade = db.iter().any(|ip| ip.package.name == pkg.name);
        let (pre, post) = if upgrade {
            (".pre-upgrade", ".post-upgrade")
        } else {
            (".pre-install", ".post-install")
        };
        let script = |name: &str| apk.scripts.iter().find(|(n, _)| n == name);
        if let Some((name, body)) = script(pre) {
            run_script(pkg, name, body)?;
        }
        let extracted = extract(apk.data, root)?;
        // An upgrade: the old version's files that the new one no longer has go.
        let mut old_stem = None;
        if let Some(old) = db.iter().position(|ip| ip.package.name == pkg.name) {
            let old = db.remove(old);
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
        if let Some((name, body)) = script(post) {
            run_script(pkg, name, body)?;
        }
    }
    write_atomically(root, WORLD, &installed::write_world(world))
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
    for ip in &gone {
        if let Some(body) = stored_script(&stored, &ip.package, "pre-deinstall") {
            run_script(&ip.package, ".pre-deinstall", body)?;
        }
    }
    let owned: HashSet<&str> = kept
        .iter()
        .flat_map(|ip| ip.files.iter().map(|(p, _)| p.as_str()))
        .collect();
    write_installed(root, &kept)?;
    write_atomically(root, WORLD, &installed::write_world(world))?;
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
        if let Some(body) = stored_script(&stored, &ip.package, "post-deinstall") {
            run_script(&ip.package, ".post-deinstall", body)?;
        }
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build_apk, key};

    fn no_scripts(_: &Package, name: &str, _: &[u8]) -> Result<()> {
        panic!("no script expected, got {name}")
    }

    fn pkg(name: &str, version: &str, checksum: &str) -> Package {
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
    use crate::testing::{build_apk_with_scripts, key};
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
        let runner = |pkg: &Package, name: &str, body: &[u8]| -> Result<()> {
            // The files are in place for the post-install script only.
            let present = root.join("etc/s.conf").exists();
            seen.borrow_mut().push(format!(
                "{} {name} {} {present}",
                pkg.name,
                String::from_utf8_lossy(body)
            ));
            Ok(())
        };
        install(&root, &keys, &[(p.clone(), apk.clone())], &[], &runner).unwrap();
        assert_eq!(
            *seen.borrow(),
            ["s .pre-install pre false", "s .post-install post true"]
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
            ["s .pre-deinstall gone? true", "s .post-deinstall bye false"]
        );
        assert!(read_scripts(&root).unwrap().is_empty());
        // A second install of the same name is an upgrade: its scripts are the upgrade ones
        // (this package has none), and a failing script is an error.
        let failing = |_: &Package, name: &str, _: &[u8]| -> Result<()> {
            Err(PkgError::Io(format!("{name} exited with 1")))
        };
        fs::remove_dir_all(&root).unwrap();
        fs::create_dir_all(&root).unwrap();
        let e = install(&root, &keys, &[(p, apk)], &[], &failing).unwrap_err();
        assert!(e.to_string().contains(".pre-install exited with 1"), "{e}");
        assert!(!root.join("etc/s.conf").exists());
        let _ = fs::remove_dir_all(&root);
    }
}
