//! The installed database in apk-tools' own format (`/lib/apk/db/installed`), so that `apk
//! info` inside an Alpine root agrees with Box: one record per package with its index fields,
//! then its files — `F:dir` for each directory (a bare `F:` for the top one), `R:name` for each
//! file in the last `F:` directory, `Z:Q1…` the file's SHA-1 (base64) — and `/etc/apk/world`,
//! the requested atoms.

use std::fmt::Write as _;

use crate::atom::Atom;
use crate::index::Package;
use crate::Result;

/// Where the database lives, relative to the root.
pub const INSTALLED: &str = "lib/apk/db/installed";
/// Where the request lives, relative to the root.
pub const WORLD: &str = "etc/apk/world";

/// One installed package and the files it put in place (paths relative to the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    /// Its index record.
    pub package: Package,
    /// (path, `Q1` checksum) of each regular file or symlink, in install order.
    pub files: Vec<(String, String)>,
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
        field("D", &atoms(&p.depends));
        field("p", &atoms(&p.provides));
        field("i", &atoms(&p.install_if));
        if p.provider_priority > 0 {
            field("k", &p.provider_priority.to_string());
        }
        // Files grouped by directory (those at the top first: an `F:` line cannot go back
        // to the top), directories in the order they first appear.
        let split = |path: &str| -> (String, String) {
            match path.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n.to_string()),
                None => (String::new(), path.to_string()),
            }
        };
        let mut dirs: Vec<String> = vec![String::new()];
        for (path, _) in &ip.files {
            let d = split(path).0;
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        for d in &dirs {
            let mut first = true;
            for (path, sum) in ip.files.iter().filter(|(p, _)| split(p).0 == *d) {
                // apk-tools reads `R:` only under an `F:`: the top directory is a bare `F:`.
                if first {
                    let _ = writeln!(out, "F:{d}");
                }
                first = false;
                let _ = writeln!(out, "R:{}", split(path).1);
                if !sum.is_empty() {
                    let _ = writeln!(out, "Z:{sum}");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Reads a database written by apk-tools or by [`write`].
pub fn parse(text: &str) -> Result<Vec<InstalledPackage>> {
    let packages = crate::index::parse(text)?;
    let mut out = Vec::with_capacity(packages.len());
    let records = text.split("\n\n").filter(|r| !r.trim().is_empty());
    for (package, record) in packages.into_iter().zip(records) {
        let mut files: Vec<(String, String)> = Vec::new();
        let mut dir = String::new();
        for line in record.lines() {
            if let Some(d) = line.strip_prefix("F:") {
                dir = d.to_string();
            } else if let Some(name) = line.strip_prefix("R:") {
                let path = if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                };
                files.push((path, String::new()));
            } else if let Some(sum) = line.strip_prefix("Z:") {
                if let Some(last) = files.last_mut() {
                    last.1 = sum.to_string();
                }
            }
        }
        out.push(InstalledPackage { package, files });
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
            "C:Q1abc=\nP:hello\nV:1.0-r0\nA:x86_64\nS:10\nI:20\nT:says hello\nD:musl\np:cmd:hello=1.0-r0\n\n",
        )
        .unwrap();
        let db = vec![InstalledPackage {
            package: pkgs[0].clone(),
            files: vec![
                ("README".into(), String::new()),
                ("usr/bin/hello".into(), "Q1AAA=".into()),
                ("usr/bin/hi".into(), "Q1BBB=".into()),
                ("etc/hello.conf".into(), "Q1CCC=".into()),
            ],
        }];
        let text = write(&db);
        assert!(text.contains("P:hello\nV:1.0-r0\n"), "{text}");
        // A file at the top sits under a bare `F:` (apk-tools reads `R:` only under an `F:`).
        assert!(
            text.contains("p:cmd:hello=1.0-r0\nF:\nR:README\nF:usr/bin\n"),
            "{text}"
        );
        assert!(
            text.contains("F:usr/bin\nR:hello\nZ:Q1AAA=\nR:hi\nZ:Q1BBB=\nF:etc\nR:hello.conf\n"),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), db);
        let world = parse_world("busybox\ncurl>=8\n").unwrap();
        assert_eq!(write_world(&world), "busybox\ncurl>=8\n");
    }
}
