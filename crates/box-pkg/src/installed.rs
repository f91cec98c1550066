//! The installed database in apk-tools' own format (`/lib/apk/db/installed`), so that `apk
//! info` inside an Alpine root agrees with Box: one record per package with its index fields,
//! (`r:`/`q:` replaces from `.PKGINFO` too), then its files — `F:dir` for each directory (a
//! bare `F:` for the top one; `M:uid:gid:mode` when not root's 0755), `R:name` for each file in
//! the last `F:` directory (`a:uid:gid:mode` when not root's 0644), `Z:Q1…` the file's SHA-1
//! (base64); `lib/apk/db/triggers` (a package's checksum and trigger globs) and
//! `/etc/apk/world`, the requested atoms.

use std::fmt::Write as _;

use crate::atom::Atom;
use crate::index::Package;
use crate::Result;

/// Where the database lives, relative to the root.
pub const INSTALLED: &str = "lib/apk/db/installed";
/// Where the request lives, relative to the root.
pub const WORLD: &str = "etc/apk/world";

/// Package triggers, relative to the root: one line per package, its `C:` checksum and the
/// directory globs it watches.
pub const TRIGGERS: &str = "lib/apk/db/triggers";

/// One installed package and the files it put in place (paths relative to the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    /// Its index record.
    pub package: Package,
    /// (path, `Q1` checksum) of each regular file, hard link or symlink, in install order.
    pub files: Vec<(String, String)>,
    /// The directories it ships, with apk's ACL (`uid:gid:mode`, `M:`) when not root's 0755.
    pub dirs: Vec<(String, Option<String>)>,
    /// apk's ACL (`a:`) of each file that is not root's 0644.
    pub file_acls: Vec<(String, String)>,
    /// `r:`: the packages whose files it may overwrite (`.PKGINFO`'s `replaces`).
    pub replaces: String,
    /// `q:`: `.PKGINFO`'s `replaces_priority`.
    pub replaces_priority: String,
    /// The directory globs of its trigger script (kept in [`TRIGGERS`]).
    pub triggers: String,
}

impl InstalledPackage {
    /// `package` with nothing recorded yet.
    pub fn new(package: Package) -> InstalledPackage {
        InstalledPackage {
            package,
            files: Vec::new(),
            dirs: Vec::new(),
            file_acls: Vec::new(),
            replaces: String::new(),
            replaces_priority: String::new(),
            triggers: String::new(),
        }
    }
}

fn atoms(list: &[Atom]) -> String {
    list.iter()
        .map(Atom::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The database text for `packages`.
pub fn write(packages: &[InstalledPackage]) -> String {
    let mut out = String::new();
    for ip in packages {
        let p = &ip.package;
        let mut field = |k: &str, v: &str| {
            if !v.is_empty() {
                let _ = writeln!(out, "{k}:{v}");
            }
        };
        field("C", &p.checksum);
        field("P", &p.name);
        field("V", p.version.as_str());
        field("A", &p.arch);
        field("S", &p.size.to_string());
        field("I", &p.installed_size.to_string());
        field("T", &p.description);
        field("U", &p.url);
        field("L", &p.license);
        field("o", &p.origin);
        field("m", &p.maintainer);
        field("t", &p.build_time);
        field("c", &p.commit);
        if p.provider_priority > 0 {
            field("k", &p.provider_priority.to_string());
        }
        field("D", &atoms(&p.depends));
        field("p", &atoms(&p.provides));
        field("i", &atoms(&p.install_if));
        field("r", &ip.replaces);
        field("q", &ip.replaces_priority);
        // Files grouped by directory (those at the top first: an `F:` line cannot go back
        // to the top), directories in the order they first appear, those the package ships
        // with their ACL; apk-tools reads `R:` only under an `F:`, a bare one for the top.
        let split = |path: &str| -> (String, String) {
            match path.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n.to_string()),
                None => (String::new(), path.to_string()),
            }
        };
        let mut dirs: Vec<String> = vec![String::new()];
        let file_dirs = ip.files.iter().map(|(p, _)| split(p).0);
        for d in ip.dirs.iter().map(|(d, _)| d.clone()).chain(file_dirs) {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        for d in &dirs {
            let files: Vec<_> = ip.files.iter().filter(|(p, _)| split(p).0 == *d).collect();
            let shipped = ip.dirs.iter().find(|(name, _)| name == d);
            if files.is_empty() && shipped.is_none() {
                continue;
            }
            let _ = writeln!(out, "F:{d}");
            if let Some((_, Some(acl))) = shipped {
                let _ = writeln!(out, "M:{acl}");
            }
            for (path, sum) in files {
                let _ = writeln!(out, "R:{}", split(path).1);
                if let Some((_, acl)) = ip.file_acls.iter().find(|(p, _)| p == path) {
                    let _ = writeln!(out, "a:{acl}");
                }
                if !sum.is_empty() {
                    let _ = writeln!(out, "Z:{sum}");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The triggers file for `packages` (one line for each package that has triggers).
pub fn write_triggers(packages: &[InstalledPackage]) -> String {
    packages
        .iter()
        .filter(|ip| !ip.triggers.is_empty())
        .map(|ip| format!("{} {}\n", ip.package.checksum, ip.triggers))
        .collect()
}

/// Gives each package of `db` its triggers from a triggers file's `text`.
pub fn parse_triggers(db: &mut [InstalledPackage], text: &str) {
    for line in text.lines() {
        if let Some((checksum, globs)) = line.split_once(' ') {
            if let Some(ip) = db.iter_mut().find(|ip| ip.package.checksum == checksum) {
                ip.triggers = globs.trim().to_string();
            }
        }
    }
}

/// Reads a database written by apk-tools or by [`write`].
pub fn parse(text: &str) -> Result<Vec<InstalledPackage>> {
    let packages = crate::index::parse(text)?;
    let mut out = Vec::with_capacity(packages.len());
    let records = text.split("\n\n").filter(|r| !r.trim().is_empty());
    for (package, record) in packages.into_iter().zip(records) {
        let mut ip = InstalledPackage::new(package);
        let mut dir = String::new();
        for line in record.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key {
                "F" => {
                    dir = value.to_string();
                    if !dir.is_empty() {
                        ip.dirs.push((dir.clone(), None));
                    }
                }
                "M" => {
                    if let Some(last) = ip.dirs.last_mut().filter(|(d, _)| *d == dir) {
                        last.1 = Some(value.to_string());
                    }
                }
                "R" => {
                    let path = if dir.is_empty() {
                        value.to_string()
                    } else {
                        format!("{dir}/{value}")
                    };
                    ip.files.push((path, String::new()));
                }
                "a" => {
                    if let Some((path, _)) = ip.files.last() {
                        ip.file_acls.push((path.clone(), value.to_string()));
                    }
                }
                "Z" => {
                    if let Some(last) = ip.files.last_mut() {
                        last.1 = value.to_string();
                    }
                }
                "r" => ip.replaces = value.to_string(),
                "q" => ip.replaces_priority = value.to_string(),
                _ => {}
            }
        }
        out.push(ip);
    }
    Ok(out)
}

/// `/etc/apk/world`: one atom per line.
pub fn write_world(world: &[Atom]) -> String {
    let mut lines: Vec<String> = world.iter().map(Atom::to_string).collect();
    lines.sort();
    lines.dedup();
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Reads `/etc/apk/world`.
pub fn parse_world(text: &str) -> Result<Vec<Atom>> {
    crate::atom::parse_list(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_apk_format() {
        let pkgs = crate::index::parse(
            "C:Q1abc=\nP:hello\nV:1.0-r0\nA:x86_64\nS:10\nI:20\nT:says hello\nm:Ann <a@b>\nt:1700000000\nc:abc123\nD:musl\np:cmd:hello=1.0-r0\n\n",
        )
        .unwrap();
        let mut ip = InstalledPackage::new(pkgs[0].clone());
        ip.files = vec![
            ("README".into(), String::new()),
            ("usr/bin/hello".into(), "Q1AAA=".into()),
            ("usr/bin/hi".into(), "Q1BBB=".into()),
            ("etc/hello.conf".into(), "Q1CCC=".into()),
        ];
        ip.dirs = vec![
            ("usr".into(), None),
            ("usr/bin".into(), None),
            ("var/lib/hello".into(), Some("100:101:700".into())),
        ];
        ip.file_acls = vec![("usr/bin/hello".into(), "0:0:755".into())];
        ip.replaces = "hello-old".into();
        let db = vec![ip];
        let text = write(&db);
        assert!(text.contains("P:hello\nV:1.0-r0\n"), "{text}");
        assert!(
            text.contains("T:says hello\nm:Ann <a@b>\nt:1700000000\nc:abc123\nD:musl\n"),
            "{text}"
        );
        // A file at the top sits under a bare `F:` (apk-tools reads `R:` only under an `F:`).
        assert!(
            text.contains("r:hello-old\nF:\nR:README\nF:usr\n"),
            "{text}"
        );
        assert!(
            text.contains("F:usr/bin\nR:hello\na:0:0:755\nZ:Q1AAA=\nR:hi\nZ:Q1BBB=\n"),
            "{text}"
        );
        assert!(
            text.contains("r:hello-old\nF:\nR:README\nF:usr\nF:usr/bin\n"),
            "{text}"
        );
        assert!(
            text.contains("F:var/lib/hello\nM:100:101:700\nF:etc\nR:hello.conf\n"),
            "{text}"
        );
        let mut back = parse(&text).unwrap();
        // Directories of files are recorded as shipped ones once read back, as apk lists them.
        back[0].dirs.retain(|(d, _)| d != "etc");
        assert_eq!(back, db);
        // Triggers live in their own file, by checksum.
        let mut with = db.clone();
        with[0].triggers = "/usr/lib/hello/*".into();
        let triggers = write_triggers(&with);
        assert_eq!(triggers, "Q1abc= /usr/lib/hello/*\n");
        parse_triggers(&mut back, &triggers);
        assert_eq!(back, with);
        let world = parse_world("busybox\ncurl>=8\n").unwrap();
        assert_eq!(write_world(&world), "busybox\ncurl>=8\n");
    }
}
