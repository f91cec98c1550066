//! Test helpers: keys made at test time, signed members, whole package files.

use std::io::Write;

use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::Pkcs1v15Sign;
/// The signing key type of the builders here.
pub use rsa::RsaPrivateKey;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A gzip member holding a tar of `files` (with end-of-archive blocks: apk tolerates both).
pub fn member(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // Raw names: a test may need one that leaves the root.
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A fresh 1024-bit key (small: debug builds make it fast) and the trusted-keys list with it.
pub fn key() -> (RsaPrivateKey, Vec<(String, String)>) {
    let mut rng = rand_core::OsRng;
    let private = RsaPrivateKey::new(&mut rng, 1024).unwrap();
    let pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (private, vec![("test.rsa.pub".to_string(), pem)])
}

/// The signature member over `signed` (SHA-256 or SHA-1).
pub fn signed(private: &RsaPrivateKey, signed: &[u8], sha256: bool) -> Vec<u8> {
    let (name, sig) = if sha256 {
        (
            ".SIGN.RSA256.test.rsa.pub",
            private
                .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(signed))
                .unwrap(),
        )
    } else {
        (
            ".SIGN.RSA.test.rsa.pub",
            private
                .sign(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(signed))
                .unwrap(),
        )
    };
    member(&[(name, &sig)])
}

/// A signed package `name-version` holding `files`; with its control checksum.
pub fn build_apk(
    private: &RsaPrivateKey,
    name: &str,
    version: &str,
    files: &[(&str, &[u8])],
) -> (Vec<u8>, String) {
    build_apk_with_scripts(private, name, version, files, &[])
}

/// [`build_apk`] with scripts in the control member (`.post-install`, …).
pub fn build_apk_with_scripts(
    private: &RsaPrivateKey,
    name: &str,
    version: &str,
    files: &[(&str, &[u8])],
    scripts: &[(&str, &[u8])],
) -> (Vec<u8>, String) {
    build_apk_with_info(private, name, version, files, scripts, "")
}

/// [`build_apk_with_scripts`] with more `.PKGINFO` lines (`triggers = /usr/bin`, …).
pub fn build_apk_with_info(
    private: &RsaPrivateKey,
    name: &str,
    version: &str,
    files: &[(&str, &[u8])],
    scripts: &[(&str, &[u8])],
    more_info: &str,
) -> (Vec<u8>, String) {
    let data = member(files);
    let hash: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let info = format!(
        "pkgname = {name}\npkgver = {version}\narch = x86_64\ndatahash = {hash}\n{more_info}"
    );
    let mut control_files: Vec<(&str, &[u8])> = vec![(".PKGINFO", info.as_bytes())];
    control_files.extend_from_slice(scripts);
    let control = member(&control_files);
    let checksum = crate::apk::control_checksum(&control);
    let mut apk = signed(private, &control, false);
    apk.extend_from_slice(&control);
    apk.extend_from_slice(&data);
    (apk, checksum)
}

/// A signed `APKINDEX.tar.gz` holding the index text `text`.
pub fn signed_index(private: &RsaPrivateKey, text: &str) -> Vec<u8> {
    let inner = member(&[("APKINDEX", text.as_bytes())]);
    let mut file = signed(private, &inner, false);
    file.extend_from_slice(&inner);
    file
}
