//! Layer and tarball compression: chosen from a media type or sniffed from magic bytes, and
//! undone as a stream (gzip with multi-member support, zstd, xz).

use std::io::{self, BufRead, BufReader, Read};

use crate::error::{ImageError, Result};

/// OCI layer, uncompressed.
pub const MEDIA_TYPE_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer, gzip (deprecated but still seen).
pub const MEDIA_TYPE_OCI_FOREIGN_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// Docker schema 2 layer (gzip).
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker schema 2 foreign layer (gzip).
pub const MEDIA_TYPE_DOCKER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker's uncompressed layer (docker save of some versions).
pub const MEDIA_TYPE_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// How a stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// Zstandard.
    Zstd,
    /// xz (LZMA2).
    Xz,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// Bytes `sniff` wants to see (the longest magic).
pub const SNIFF_LEN: usize = 6;

impl Compression {
    /// The compression a layer media type announces. Unknown media types are an error, so a
    /// non-layer blob is never unpacked by mistake.
    pub fn from_media_type(media_type: &str) -> Result<Compression> {
        // Media types may carry parameters (`; charset=…`) in the wild; ignore them.
        let mt = media_type.split(';').next().unwrap_or("").trim();
        match mt {
            MEDIA_TYPE_OCI_LAYER_TAR | MEDIA_TYPE_DOCKER_LAYER_TAR => Ok(Compression::None),
            MEDIA_TYPE_OCI_LAYER_GZIP
            | MEDIA_TYPE_OCI_FOREIGN_GZIP
            | MEDIA_TYPE_DOCKER_LAYER_GZIP
            | MEDIA_TYPE_DOCKER_FOREIGN_GZIP => Ok(Compression::Gzip),
            MEDIA_TYPE_OCI_LAYER_ZSTD
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }
            "application/vnd.oci.image.layer.v1.tar+xz" => Ok(Compression::Xz),
            _ => Err(ImageError::UnsupportedMediaType {
                what: "layer".to_string(),
                media_type: media_type.to_string(),
            }),
        }
    }

    /// The OCI layer media type for this compression (xz has no OCI type: `+xz` is used).
    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_OCI_LAYER_TAR,
            Compression::Gzip => MEDIA_TYPE_OCI_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_OCI_LAYER_ZSTD,
            Compression::Xz => "application/vnd.oci.image.layer.v1.tar+xz",
        }
    }

    /// The compression whose magic bytes start `head` (`None` when no magic matches).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else if head.starts_with(XZ_MAGIC) {
            Compression::Xz
        } else {
            Compression::None
        }
    }

    /// A reader of the decompressed stream.
    pub fn decompress(self, reader: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
        self.decompress_borrowed(reader)
    }

    /// As `decompress`, for readers that borrow (a tee into a blob writer, a `&mut` reader).
    pub fn decompress_borrowed<'a, R: Read + Send + 'a>(
        self,
        reader: R,
    ) -> Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => {
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader)))
            }
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(reader)
                    .map_err(|e| ImageError::io("cannot start a zstd decoder", e))?,
            ),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader)),
        })
    }
}

/// Sniffs the compression of `reader` without losing bytes and returns it with a reader of the
/// decompressed stream (for rootfs tarballs and archives whose compression is not announced).
pub fn decompress_sniffed(
    reader: Box<dyn Read + Send>,
) -> Result<(Compression, Box<dyn Read + Send>)> {
    let mut buf = BufReader::with_capacity(64 * 1024, reader);
    let head = fill_at_least(&mut buf, SNIFF_LEN)
        .map_err(|e| ImageError::io("cannot read the start of the stream", e))?;
    let c = Compression::sniff(&head);
    Ok((c, c.decompress(Box::new(buf))?))
}

/// Peeks up to `n` bytes (fewer at end of stream) without consuming them.
fn fill_at_least<R: Read>(buf: &mut BufReader<R>, n: usize) -> io::Result<Vec<u8>> {
    // BufReader::fill_buf returns what one read gave; a short first read is rare but legal, so
    // fall back to whatever came (the magics are tiny, one read of a file or socket has them).
    let avail = buf.fill_buf()?;
    Ok(avail[..avail.len().min(n)].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(c: Compression, data: &[u8]) -> Vec<u8> {
        let compressed = match c {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).expect("gz");
                e.finish().expect("gz")
            }
            Compression::Zstd => zstd::encode_all(data, 1).expect("zstd"),
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).expect("xz");
                e.finish().expect("xz")
            }
        };
        assert_eq!(Compression::sniff(&compressed), c);
        let (sniffed, mut r) =
            decompress_sniffed(Box::new(io::Cursor::new(compressed.clone()))).expect("sniffed");
        assert_eq!(sniffed, c);
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        out
    }

    #[test]
    fn every_compression_round_trips_and_is_sniffed() {
        let data = b"layer bytes ".repeat(5000);
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
        ] {
            assert_eq!(roundtrip(c, &data), data, "{c:?}");
        }
    }

    #[test]
    fn multi_member_gzip_is_read_to_the_end() {
        let mut all = Vec::new();
        for part in [b"first ".as_slice(), b"second"] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).expect("gz");
            all.extend(e.finish().expect("gz"));
        }
        let mut r = Compression::Gzip
            .decompress(Box::new(io::Cursor::new(all)))
            .expect("dec");
        let mut s = String::new();
        r.read_to_string(&mut s).expect("read");
        assert_eq!(s, "first second");
    }

    #[test]
    fn media_types_map_to_compression() {
        assert_eq!(
            Compression::from_media_type(MEDIA_TYPE_OCI_LAYER_GZIP).ok(),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(MEDIA_TYPE_OCI_LAYER_ZSTD).ok(),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type(MEDIA_TYPE_DOCKER_LAYER_GZIP).ok(),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(MEDIA_TYPE_OCI_LAYER_TAR).ok(),
            Some(Compression::None)
        );
        let e = Compression::from_media_type("application/vnd.oci.image.config.v1+json")
            .expect_err("config is no layer");
        assert!(e.to_string().contains("unsupported media type"), "{e}");
    }
}
