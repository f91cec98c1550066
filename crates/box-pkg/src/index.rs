//! The text of an APKINDEX (and of `/lib/apk/db/installed`, which uses the same records):
//! records separated by blank lines, one `X:value` field per line. Fields kept: `C` (control
//! checksum), `P` name, `V` version, `A` arch, `S` size, `I` installed size, `T` description,
//! `U` url, `L` license, `o` origin, `m` maintainer, `t` build time, `c` commit, `D`
//! dependencies, `p` provides, `i` install_if, `k` provider priority; others are ignored, as apk
//! ignores fields it does not know.

use crate::atom::{parse_list, Atom};
use crate::version::Version;
use crate::{PkgError, Result};

/// One package of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// `P:`
    pub name: String,
    /// `V:`
    pub version: Version,
    /// `A:`
    pub arch: String,
    /// `C:`: `Q1` + base64 of the SHA-1 of the package's control segment.
    pub checksum: String,
    /// `S:`: size of the .apk file.
    pub size: u64,
    /// `I:`: installed size.
    pub installed_size: u64,
    /// `T:`
    pub description: String,
    /// `U:`
    pub url: String,
    /// `L:`
    pub license: String,
    /// `o:`
    pub origin: String,
    /// `m:`: the maintainer.
    pub maintainer: String,
    /// `t:`: build time (seconds since the epoch).
    pub build_time: String,
    /// `c:`: the source commit.
    pub commit: String,
    /// `D:`
    pub depends: Vec<Atom>,
    /// `p:`: names it provides (with a version after `=`, or none).
    pub provides: Vec<Atom>,
    /// `i:`: installed automatically once all of these are.
    pub install_if: Vec<Atom>,
    /// `k:`: preference among providers of one name.
    pub provider_priority: u32,
}

impl Package {
    /// `NAME-VERSION`, the name apk gives the package's file (`NAME-VERSION.apk`).
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// Parses an index's text into its packages.
pub fn parse(text: &str) -> Result<Vec<Package>> {
    let mut packages = Vec::new();
    for (n, record) in text.split("\n\n").enumerate() {
        if record.trim().is_empty() {
            continue;
        }
        packages
            .push(parse_record(record).map_err(|why| PkgError::BadIndex { record: n + 1, why })?);
    }
    Ok(packages)
}

fn parse_record(record: &str) -> std::result::Result<Package, String> {
    let mut name = None;
    let mut version = None;
    let mut p = Package {
        name: String::new(),
        version: "0".parse().map_err(|e: PkgError| e.to_string())?,
        arch: String::new(),
        checksum: String::new(),
        size: 0,
        installed_size: 0,
        description: String::new(),
        url: String::new(),
        license: String::new(),
        origin: String::new(),
        maintainer: String::new(),
        build_time: String::new(),
        commit: String::new(),
        depends: Vec::new(),
        provides: Vec::new(),
        install_if: Vec::new(),
        provider_priority: 0,
    };
    for line in record.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(':')
            .filter(|(k, _)| k.len() == 1)
            .ok_or_else(|| format!("line {line:?} is not KEY:VALUE"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{key}:{v} is not a number"))
        };
        match key {
            "P" => name = Some(value.to_string()),
            "V" => version = Some(value.parse::<Version>().map_err(|e| e.to_string())?),
            "A" => p.arch = value.to_string(),
            "C" => p.checksum = value.to_string(),
            "S" => p.size = number(value)?,
            "I" => p.installed_size = number(value)?,
            "T" => p.description = value.to_string(),
            "U" => p.url = value.to_string(),
            "L" => p.license = value.to_string(),
            "o" => p.origin = value.to_string(),
            "m" => p.maintainer = value.to_string(),
            "t" => p.build_time = value.to_string(),
            "c" => p.commit = value.to_string(),
            "D" => p.depends = parse_list(value).map_err(|e| e.to_string())?,
            "p" => p.provides = parse_list(value).map_err(|e| e.to_string())?,
            "i" => p.install_if = parse_list(value).map_err(|e| e.to_string())?,
            "k" => p.provider_priority = number(value)? as u32,
            _ => {}
        }
    }
    p.name = name.filter(|n| !n.is_empty()).ok_or("no P: (name)")?;
    p.version = version.ok_or("no V: (version)")?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "C:Q1abc=\nP:busybox\nV:1.36.1-r5\nA:x86_64\nS:500000\nI:900000\n\
T:Size optimized toolbox\nU:https://busybox.net/\nL:GPL-2.0-only\no:busybox\n\
D:so:libc.musl-x86_64.so.1\np:cmd:busybox=1.36.1-r5 cmd:sh=1.36.1-r5\n\n\
C:Q1def=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nS:400000\nI:600000\nT:the C library\n\
p:so:libc.musl-x86_64.so.1=1\nk:10\nZ:unknown field\n\n";

    #[test]
    fn parses_records() {
        let pkgs = parse(INDEX).unwrap();
        assert_eq!(pkgs.len(), 2);
        assert_eq!(pkgs[0].name, "busybox");
        assert_eq!(pkgs[0].file_stem(), "busybox-1.36.1-r5");
        assert_eq!(pkgs[0].depends[0].name, "so:libc.musl-x86_64.so.1");
        assert_eq!(pkgs[0].provides.len(), 2);
        assert_eq!(pkgs[1].provider_priority, 10);
        assert_eq!(pkgs[1].size, 400000);
    }

    #[test]
    fn rejects_broken_records() {
        for bad in [
            "P:x\n",
            "V:1\n",
            "P:x\nV:1\nS:big\n",
            "P:x\nV:one\n",
            "P:x\nV:1\nno colon\n",
            "P:x\nV:1\nD:a>=\n",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(e, PkgError::BadIndex { record: 1, .. }),
                "{bad:?}: {e}"
            );
        }
    }
}
