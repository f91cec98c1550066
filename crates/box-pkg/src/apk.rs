//! The apk v2 file formats: a package (`NAME-VERSION.apk`) and a signed index
//! (`APKINDEX.tar.gz`) are gzip members laid end to end — a signature (a tar holding
//! `.SIGN.RSA.<key>.rsa.pub` or `.SIGN.RSA256.<key>.rsa.pub`: an RSA PKCS#1 v1.5 signature of
//! the next member's compressed bytes), then the signed member (a package's control tar with
//! `.PKGINFO` and its scripts; an index's tar with `APKINDEX`), then, for a package, the data
//! tar whose SHA-256 `.PKGINFO` names (`datahash`). An index's `C:` is `Q1` + base64 of the
//! SHA-1 of the package's compressed control member.

use std::io::Read;

use base64::Engine as _;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::index::Package;
use crate::{PkgError, Result};

fn bad(what: impl Into<String>) -> PkgError {
    PkgError::BadPackage(what.into())
}

/// Splits a file into its gzip members (each with its header and trailer), in order.
pub fn gzip_members(bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let mut members = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut decoder = flate2::bufread::GzDecoder::new(rest);
        std::io::copy(&mut decoder, &mut std::io::sink())
            .map_err(|e| bad(format!("gzip member {}: {e}", members.len() + 1)))?;
        let after = decoder.into_inner();
        let used = rest.len() - after.len();
        if used == 0 {
            return Err(bad("an empty gzip member"));
        }
        members.push(&rest[..used]);
        rest = after;
    }
    Ok(members)
}

/// The regular files of a gzip member's tar (name, content); end-of-archive blocks optional.
pub fn tar_files(member: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(member));
    for entry in archive.entries().map_err(|e| bad(format!("tar: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("tar entry: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("tar entry {name}: {e}")))?;
        out.push((name, data));
    }
    Ok(out)
}

/// A signature member: which key, which digest, the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The key's file name in /etc/apk/keys (`alpine-devel@…-6165ee59.rsa.pub`).
    pub key_name: String,
    /// SHA-256 (`.SIGN.RSA256.`) rather than SHA-1 (`.SIGN.RSA.`).
    pub sha256: bool,
    /// The RSA signature.
    pub bytes: Vec<u8>,
}

/// Reads a signature member (none when the member holds no `.SIGN.` file).
pub fn signature(member: &[u8]) -> Result<Option<Signature>> {
    for (name, bytes) in tar_files(member)? {
        if let Some(key) = name.strip_prefix(".SIGN.RSA256.") {
            return Ok(Some(Signature {
                key_name: key.to_string(),
                sha256: true,
                bytes,
            }));
        }
        if let Some(key) = name.strip_prefix(".SIGN.RSA.") {
            return Ok(Some(Signature {
                key_name: key.to_string(),
                sha256: false,
                bytes,
            }));
        }
    }
    Ok(None)
}

/// Checks `sig` over `signed` with the key of that name among `keys` (name, PEM public key).
pub fn verify(sig: &Signature, signed: &[u8], keys: &[(String, String)]) -> Result<()> {
    let Some((_, pem)) = keys.iter().find(|(name, _)| *name == sig.key_name) else {
        return Err(PkgError::Untrusted(format!(
            "signed with key {}, which is not among the trusted keys (/etc/apk/keys)",
            sig.key_name
        )));
    };
    let key = RsaPublicKey::from_public_key_pem(pem)
        .map_err(|e| PkgError::Untrusted(format!("key {}: {e}", sig.key_name)))?;
    let ok = if sig.sha256 {
        key.verify(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(signed),
            &sig.bytes,
        )
    } else {
        key.verify(
            Pkcs1v15Sign::new::<Sha1>(),
            &Sha1::digest(signed),
            &sig.bytes,
        )
    };
    ok.map_err(|_| PkgError::Untrusted(format!("bad signature (key {})", sig.key_name)))
}

/// `Q1` + base64 of the SHA-1 of a compressed control member: the index's `C:`.
pub fn control_checksum(control: &[u8]) -> String {
    format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(control))
    )
}

/// A package file taken apart and checked: signature (when `keys` is given), control member,
/// `.PKGINFO`, scripts, and the data member against its `datahash`.
#[derive(Debug, Clone)]
pub struct ApkFile<'a> {
    /// The control member's checksum (`C:` of the index).
    pub checksum: String,
    /// `.PKGINFO` as `key = value` pairs, in order.
    pub pkginfo: Vec<(String, String)>,
    /// The scripts (`.pre-install`, `.post-install`, …).
    pub scripts: Vec<(String, Vec<u8>)>,
    /// The data member (a gzip'd tar of the files).
    pub data: &'a [u8],
}

impl ApkFile<'_> {
    /// The first value of `key` in `.PKGINFO`.
    pub fn info(&self, key: &str) -> Option<&str> {
        self.pkginfo
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a package file; with `keys`, its signature must verify. The data member is checked
/// against `.PKGINFO`'s `datahash`.
pub fn read_apk<'a>(bytes: &'a [u8], keys: Option<&[(String, String)]>) -> Result<ApkFile<'a>> {
    let members = gzip_members(bytes)?;
    let (sig, control, data) = match members.as_slice() {
        [sig, control, data] => (Some(*sig), *control, *data),
        [control, data] => (None, *control, *data),
        _ => return Err(bad(format!("{} gzip members, expected 3", members.len()))),
    };
    if let Some(keys) = keys {
        let signature = match sig {
            Some(member) => signature(member)?,
            None => None,
        }
        .ok_or_else(|| PkgError::Untrusted("the package is not signed".into()))?;
        verify(&signature, control, keys)?;
    }
    let mut pkginfo = Vec::new();
    let mut scripts = Vec::new();
    for (name, content) in tar_files(control)? {
        if name == ".PKGINFO" {
            for line in String::from_utf8_lossy(&content).lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some((k, v)) = line.split_once(" = ") {
                    pkginfo.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        } else if name.starts_with('.') {
            scripts.push((name, content));
        }
    }
    if pkginfo.is_empty() {
        return Err(bad("no .PKGINFO in the control member"));
    }
    let apk = ApkFile {
        checksum: control_checksum(control),
        pkginfo,
        scripts,
        data,
    };
    if let Some(want) = apk.info("datahash") {
        let have: String = Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if have != want {
            return Err(bad(format!(
                "data does not match its hash (datahash {want}, got {have}): the download is \
                 damaged"
            )));
        }
    }
    Ok(apk)
}

/// Reads a signed `APKINDEX.tar.gz`: the signature must verify with `keys`, then its packages.
pub fn read_index(bytes: &[u8], keys: &[(String, String)]) -> Result<Vec<Package>> {
    let members = gzip_members(bytes)?;
    let [sig, index] = members.as_slice() else {
        return Err(bad(format!(
            "APKINDEX: {} gzip members, expected 2",
            members.len()
        )));
    };
    let signature =
        signature(sig)?.ok_or_else(|| PkgError::Untrusted("the index is not signed".into()))?;
    verify(&signature, index, keys)?;
    let text = tar_files(index)?
        .into_iter()
        .find(|(n, _)| n == "APKINDEX")
        .map(|(_, t)| String::from_utf8_lossy(&t).into_owned())
        .ok_or_else(|| bad("no APKINDEX file in the index"))?;
    crate::index::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{key, member, signed};

    fn package(private: &rsa::RsaPrivateKey, sha256: bool, tamper_data: bool) -> (Vec<u8>, String) {
        let mut data = member(&[("usr/bin/hello", b"#!/bin/sh\necho hello\n")]);
        let hash: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let info = format!("pkgname = hello\npkgver = 1.0-r0\narch = x86_64\ndatahash = {hash}\n");
        let control = member(&[
            (".PKGINFO", info.as_bytes()),
            (".post-install", b"#!/bin/sh\n"),
        ]);
        let checksum = control_checksum(&control);
        if tamper_data {
            data = member(&[("usr/bin/hello", b"#!/bin/sh\necho evil\n")]);
        }
        let mut apk = signed(private, &control, sha256);
        apk.extend_from_slice(&control);
        apk.extend_from_slice(&data);
        (apk, checksum)
    }
    #[test]
    fn reads_and_verifies_packages() {
        let (private, keys) = key();
        for sha256 in [false, true] {
            let (apk, checksum) = package(&private, sha256, false);
            let file = read_apk(&apk, Some(&keys)).unwrap();
            assert_eq!(file.info("pkgname"), Some("hello"));
            assert_eq!(file.checksum, checksum);
            assert_eq!(file.scripts.len(), 1);
            let files = tar_files(file.data).unwrap();
            assert_eq!(files[0].0, "usr/bin/hello");
        }
        // Tampered data, an unknown key, a corrupt signature: refused.
        let (apk, _) = package(&private, false, true);
        assert!(matches!(
            read_apk(&apk, Some(&keys)),
            Err(PkgError::BadPackage(_))
        ));
        let (apk, _) = package(&private, false, false);
        let other = vec![("other.rsa.pub".to_string(), keys[0].1.clone())];
        assert!(matches!(
            read_apk(&apk, Some(&other)),
            Err(PkgError::Untrusted(_))
        ));
        let (other_private, _) = key();
        let (forged, _) = package(&other_private, false, false);
        assert!(matches!(
            read_apk(&forged, Some(&keys)),
            Err(PkgError::Untrusted(_))
        ));
        // Cut short: refused.
        assert!(read_apk(&apk[..apk.len() / 2], Some(&keys)).is_err());
    }

    #[test]
    fn reads_signed_indexes() {
        let (private, keys) = key();
        let text = "P:hello\nV:1.0-r0\nA:x86_64\nC:Q1x=\n\n";
        let index = member(&[("DESCRIPTION", b"test"), ("APKINDEX", text.as_bytes())]);
        let mut file = signed(&private, &index, false);
        file.extend_from_slice(&index);
        let pkgs = read_index(&file, &keys).unwrap();
        assert_eq!(pkgs[0].name, "hello");
        // One byte of the index changed: the signature no longer holds.
        let mut bad_index = index.clone();
        let at = bad_index.len() - 9;
        bad_index[at] ^= 1;
        let mut tampered = signed(&private, &index, false);
        tampered.extend_from_slice(&bad_index);
        assert!(read_index(&tampered, &keys).is_err());
    }
}
