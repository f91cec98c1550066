//! Manifests and indexes as registries serve them (OCI and Docker schema 2), and platform choice.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::RegistryError;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header for manifest requests: every kind Box understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest Box accepts (the distribution spec's suggested limit).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// A content descriptor (OCI `descriptor`; Docker's is the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the content is.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// For index entries: the platform the manifest is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// 2 for both formats.
    pub schema_version: u32,
    /// The manifest's media type when it states it (Docker always does, OCI may).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layer blobs, base first.
    pub layers: Vec<Descriptor>,
}

/// An image index / manifest list: one manifest per platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// 2 for both formats.
    pub schema_version: u32,
    /// The index's media type when it states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The per-platform manifests.
    pub manifests: Vec<Descriptor>,
}

/// A manifest document as fetched: an index or an image manifest.
#[derive(Debug, Clone)]
pub enum ManifestDocument {
    /// A multi-platform index or Docker manifest list.
    Index(ImageIndex),
    /// A single image manifest.
    Image(ImageManifest),
}

impl ManifestDocument {
    /// Parses a manifest, using `content_type` (the response's `Content-Type`) and the
    /// document's own `mediaType`, and falling back to its shape.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, RegistryError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            schema_version: Option<u32>,
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
        }
        let bad = |reason: String| RegistryError::BadManifest { reason };
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if probe.schema_version == Some(1) {
            return Err(bad(
                "Docker schema 1 manifests are not supported (re-push the image with a current client)"
                    .into(),
            ));
        }
        let ct = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
        let kind = probe.media_type.or(ct);
        let is_index = match kind.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
            Some(other) => return Err(bad(format!("unsupported manifest media type {other}"))),
            None => probe.manifests.is_some(),
        };
        if is_index {
            serde_json::from_slice(bytes)
                .map(ManifestDocument::Index)
                .map_err(|e| bad(format!("bad index: {e}")))
        } else {
            serde_json::from_slice(bytes)
                .map(ManifestDocument::Image)
                .map_err(|e| bad(format!("bad image manifest: {e}")))
        }
    }
}

impl ImageManifest {
    /// The manifest's media type: as stated, else Docker's when the config is Docker's, else OCI.
    pub fn effective_media_type(&self) -> &str {
        match self.media_type.as_deref() {
            Some(m) => m,
            None if self.config.media_type == DOCKER_CONFIG => DOCKER_MANIFEST,
            None => OCI_MANIFEST,
        }
    }
}

/// An OS / architecture / variant triple (`linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// CPU architecture in Go's names (`amd64`, `arm64`, `arm`, `ppc64le`, `s390x`, `riscv64`).
    #[serde(default)]
    pub architecture: String,
    /// CPU variant (`v7`, `v8`), when it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine: `linux/<arch>` with Rust's arch names mapped to Go's.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        let variant = match arch {
            "arm" => Some("v7".to_string()),
            _ => None,
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant,
        }
    }

    /// Whether an index entry's platform satisfies this wanted platform. A wanted platform
    /// without a variant takes any variant; `arm64` treats a missing variant as `v8`.
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        let norm = |v: &Option<String>| match (self.architecture.as_str(), v.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        match &self.variant {
            None => true,
            Some(_) => norm(&self.variant) == norm(&candidate.variant),
        }
    }

    /// Picks the manifest for this platform from an index (the first match, in index order).
    pub fn select<'a>(&self, index: &'a ImageIndex) -> Option<&'a Descriptor> {
        index
            .manifests
            .iter()
            .filter(|d| d.media_type != "application/vnd.in-toto+json")
            .find(|d| d.platform.as_ref().is_some_and(|p| self.matches(p)))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = RegistryError;

    /// Parses `os/arch[/variant]` (or just `arch`, meaning linux).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || RegistryError::BadPlatform {
            platform: s.to_string(),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(variant.to_string())),
            _ => return Err(bad()),
        };
        let arch = match arch {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{arch}"),
            size: 1,
            platform: Some(Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn platform_selection_picks_arch_and_variant() {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![
                desc("arm", Some("v6")),
                desc("arm", Some("v7")),
                desc("amd64", None),
                desc("arm64", None),
            ],
        };
        let pick = |s: &str| {
            s.parse::<Platform>()
                .unwrap()
                .select(&index)
                .map(|d| d.digest.clone())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("sha256:amd64"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("sha256:arm"));
        assert_eq!(
            index.manifests[1]
                .platform
                .as_ref()
                .unwrap()
                .variant
                .as_deref(),
            Some("v7")
        );
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some("sha256:arm64"));
        assert_eq!(pick("aarch64").as_deref(), Some("sha256:arm64"));
        assert_eq!(pick("linux/s390x"), None);
        assert!("linux//x".parse::<Platform>().is_err());
    }

    #[test]
    fn manifest_kind_from_shape_and_media_type() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            ManifestDocument::parse(idx, None).unwrap(),
            ManifestDocument::Index(_)
        ));
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:00","size":1},"layers":[]}"#;
        match ManifestDocument::parse(m, Some(OCI_INDEX)).unwrap() {
            ManifestDocument::Image(m) => assert_eq!(m.effective_media_type(), DOCKER_MANIFEST),
            _ => panic!("expected an image manifest"),
        }
        assert!(ManifestDocument::parse(br#"{"schemaVersion":1}"#, None).is_err());
    }
}
