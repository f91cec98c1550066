//! Content digests: `sha256:<64 lowercase hex>` (the only algorithm Box writes or accepts), an
//! incremental hasher, and reader/writer adapters that hash what passes through them.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, Result};

/// A sha256 content digest. Displays as `sha256:<hex>`; serialises as that string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The algorithm prefix Box uses.
    pub const ALGORITHM: &'static str = "sha256";

    /// The digest of `data`.
    pub fn of_bytes(data: &[u8]) -> Digest {
        let mut d = Digester::new();
        d.update(data);
        d.finish()
    }

    /// A digest from its 64 lowercase hex digits (no `sha256:` prefix).
    pub fn from_hex(hex: &str) -> Result<Digest> {
        validate_hex(hex).map_err(|reason| ImageError::InvalidDigest {
            input: hex.to_string(),
            reason,
        })?;
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        Self::ALGORITHM
    }

    /// The first 12 hex digits (Docker's short id).
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// Converts oci-spec's digest type (which also allows other algorithms).
    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Digest> {
        d.to_string().parse()
    }

    /// Converts into oci-spec's digest type.
    pub fn to_oci(&self) -> Result<oci_spec::image::Digest> {
        oci_spec::image::Digest::from_str(&self.to_string()).map_err(|e| {
            ImageError::InvalidDigest {
                input: self.to_string(),
                reason: e.to_string(),
            }
        })
    }
}

fn validate_hex(hex: &str) -> std::result::Result<(), String> {
    if hex.len() != 64 {
        return Err(format!(
            "a sha256 digest has 64 hex digits, this one has {}",
            hex.len()
        ));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("a sha256 digest is lowercase hex (0-9, a-f)".to_string());
    }
    Ok(())
}

impl FromStr for Digest {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Digest> {
        let bad = |reason: String| ImageError::InvalidDigest {
            input: s.to_string(),
            reason,
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected sha256:<64 hex digits>".to_string()))?;
        if alg != Self::ALGORITHM {
            return Err(bad(format!(
                "algorithm {alg:?} is not supported (Box stores sha256 digests only)"
            )));
        }
        validate_hex(hex).map_err(bad)?;
        Ok(Digest {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256. Also a `Write` sink.
#[derive(Clone, Default)]
pub struct Digester {
    hasher: Sha256,
    len: u64,
}

impl Digester {
    /// A fresh hasher.
    pub fn new() -> Digester {
        Digester::default()
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        let out = self.hasher.finalize();
        let mut hex = String::with_capacity(64);
        for b in out.iter() {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Digest { hex }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Write for Digester {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            digester: Digester::new(),
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.digester.len()
    }

    /// The digest of what was read so far (the reader stays usable).
    pub fn digest(&self) -> Digest {
        self.digester.clone().finish()
    }

    /// Reads (and hashes) whatever is left, up to the end of the stream.
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }

    /// The inner reader, the digest and the byte count.
    pub fn finish(self) -> (R, Digest, u64) {
        let len = self.digester.len();
        (self.inner, self.digester.finish(), len)
    }

    /// The inner reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes every byte written through it.
pub struct HashingWriter<W> {
    inner: W,
    digester: Digester,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            digester: Digester::new(),
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.digester.len()
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        self.digester.clone().finish()
    }

    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.digester.len();
        (self.inner, self.digester.finish(), len)
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(Digest::of_bytes(b"").to_string(), EMPTY);
        let d: Digest = EMPTY.parse().expect("parse");
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn parse_rejects_other_algorithms_and_bad_hex() {
        for bad in [
            "sha512:abcd",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
        let e = "sha512:00".parse::<Digest>().expect_err("sha512");
        assert!(e.to_string().contains("sha256"), "{e}");
    }

    #[test]
    fn hashing_reader_and_writer_agree_with_of_bytes() {
        let data = b"hello box".repeat(1000);
        let mut r = HashingReader::new(&data[..]);
        let mut w = HashingWriter::new(Vec::new());
        io::copy(&mut r, &mut w).expect("copy");
        let (_, rd, rn) = r.finish();
        let (out, wd, wn) = w.finish();
        assert_eq!(rd, Digest::of_bytes(&data));
        assert_eq!(wd, rd);
        assert_eq!((rn, wn), (data.len() as u64, data.len() as u64));
        assert_eq!(out, data);
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::of_bytes(b"x");
        let j = serde_json::to_string(&d).expect("ser");
        let back: Digest = serde_json::from_str(&j).expect("de");
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"md5:00\"").is_err());
    }
}
