//! The OCI distribution client: pulls (manifests, indexes and platform choice, parallel layer
//! downloads streamed into the store, resumed with `Range`), pushes, and registry authentication
//! (bearer tokens, Basic, Box's and Docker's credential files).

mod auth;
mod client;
pub mod credentials;
pub mod manifest;
mod pull;
mod push;

use std::path::PathBuf;
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::reference::Reference;

pub use auth::Challenge;
pub use credentials::Credentials;
pub use manifest::{Descriptor, ImageIndex, ImageManifest, ManifestDocument, Platform};

/// What can go wrong talking to a registry. Each message says what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached (unknown host, refused connection, TLS failure).
    #[error("cannot reach registry {registry}: {reason} (check the name; for a registry without valid TLS use --tls-verify=false)")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The innermost cause.
        reason: String,
    },
    /// The registry wants credentials, or refused the ones given.
    #[error("{}", unauthorized_message(.registry, *.had_credentials))]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// Whether credentials were sent (then they were refused).
        had_credentials: bool,
    },
    /// The registry refused the operation for these credentials (403).
    #[error("registry {registry} denied access: {detail}")]
    Denied {
        /// The registry host.
        registry: String,
        /// The registry's own explanation.
        detail: String,
    },
    /// No manifest for the reference.
    #[error("image {reference} not found in the registry")]
    ManifestUnknown {
        /// The reference as the user wrote it (normalised).
        reference: String,
    },
    /// A blob the manifest names is missing from the registry.
    #[error("blob {digest} of {repository} not found in the registry")]
    BlobUnknown {
        /// The repository.
        repository: String,
        /// The missing blob.
        digest: String,
    },
    /// Content did not match its digest; nothing of it was stored.
    #[error("digest mismatch for {what}: expected {expected}, got {actual} (nothing was stored)")]
    DigestMismatch {
        /// What was being checked.
        what: String,
        /// The digest that was promised.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A manifest or index Box cannot use.
    #[error("bad manifest: {reason}")]
    BadManifest {
        /// Why.
        reason: String,
    },
    /// A `--platform` value that is not `os/arch[/variant]`.
    #[error("bad platform {platform:?}: expected os/arch[/variant], e.g. linux/arm64")]
    BadPlatform {
        /// The value given.
        platform: String,
    },
    /// The index has no manifest for the wanted platform.
    #[error("image {reference} has no manifest for {wanted} (available: {available})")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index lists.
        available: String,
    },
    /// Any other HTTP-level failure.
    #[error("registry request {url} failed: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// The status and the registry's message, or the transport error.
        reason: String,
    },
    /// The credentials file could not be read or written.
    #[error("credentials file {}: {reason}", .path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn unauthorized_message(registry: &str, had_credentials: bool) -> String {
    if had_credentials {
        format!("registry {registry} refused the credentials (run `box login {registry}` again)")
    } else {
        format!("registry {registry} requires authentication (run `box login {registry}`)")
    }
}

/// How a [`RegistryClient`] talks to registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Verify TLS certificates (default). Off (`--tls-verify=false`): invalid certificates are
    /// accepted and a registry that does not speak HTTPS is spoken to in plain HTTP.
    pub tls_verify: bool,
    /// Credentials to use instead of looking them up in the credentials files.
    pub credentials: Option<Credentials>,
    /// Layers downloaded at once (at least 1).
    pub max_concurrent_downloads: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            credentials: None,
            max_concurrent_downloads: 3,
        }
    }
}

impl From<RegistryError> for ImageError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Unauthorized {
                registry,
                had_credentials,
            } => ImageError::Unauthorized {
                reason: if had_credentials {
                    "the credentials were refused".into()
                } else {
                    "authentication required".into()
                },
                registry,
            },
            RegistryError::DigestMismatch {
                what,
                expected,
                actual,
            } => match (expected.parse(), actual.parse()) {
                (Ok(expected), Ok(actual)) => ImageError::DigestMismatch {
                    what,
                    expected,
                    actual,
                },
                _ => ImageError::Registry(format!(
                    "digest mismatch for {what}: expected {expected}, got {actual}"
                )),
            },
            other => ImageError::Registry(other.to_string()),
        }
    }
}

/// Told how a pull goes; the CLI draws progress bars from it. Calls come from several threads.
pub trait PullProgress: Send + Sync {
    /// `done` of `total` bytes of the blob `digest` have arrived.
    fn on_layer(&self, digest: &Digest, done: u64, total: u64);
    /// The blob is complete: downloaded and stored, or (`already_present`) skipped.
    fn on_layer_done(&self, digest: &Digest, already_present: bool) {
        let _ = (digest, already_present);
    }
}

/// Progress that is not reported.
pub struct NoProgress;

impl PullProgress for NoProgress {
    fn on_layer(&self, _digest: &Digest, _done: u64, _total: u64) {}
}

/// An image manifest found for a reference (through its index when it has one).
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// Its exact bytes as served (their digest is `digest`).
    pub bytes: Vec<u8>,
    /// The manifest's digest.
    pub digest: Digest,
    /// Its media type (OCI or Docker schema 2).
    pub media_type: String,
    /// The index it was chosen from, when the reference named an index.
    pub index_digest: Option<Digest>,
}

/// A client for OCI distribution registries. Cheap to clone; clones share connections and the
/// token cache. Async (tokio); [`BlockingRegistryClient`] wraps it for synchronous callers.
#[derive(Clone)]
pub struct RegistryClient {
    transport: Arc<client::Transport>,
}

fn parse_digest(s: &str) -> Result<Digest> {
    s.parse()
}

impl RegistryClient {
    /// A client with `options`.
    pub fn new(options: RegistryOptions) -> Result<Self> {
        Ok(RegistryClient {
            transport: Arc::new(client::Transport::new(options)?),
        })
    }

    /// The options the client was made with.
    pub fn options(&self) -> &RegistryOptions {
        self.transport.options()
    }

    /// Checks that `registry` answers `GET /v2/` with the configured (or stored) credentials:
    /// what `box login` does before it saves them.
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        let resp = self
            .transport
            .send(registry, "", "/v2/", &|c, url| c.get(url))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(RegistryError::Http {
                url: format!("{registry}/v2/"),
                reason: format!("registry answered {}", resp.status()),
            }
            .into())
        }
    }

    /// Finds the image manifest for `reference`: by tag or digest, through an index to the
    /// manifest for `platform`; every manifest's digest checked.
    pub async fn resolve(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedManifest> {
        let display = reference.familiar();
        let expected = reference.digest.as_ref().map(|d| d.to_string());
        let fetched = self
            .transport
            .get_manifest(
                &reference.registry,
                &reference.repository,
                &reference.manifest_reference(),
                expected.as_deref(),
                &display,
            )
            .await?;
        let (fetched, index_digest) = match fetched.document {
            ManifestDocument::Image(_) => (fetched, None),
            ManifestDocument::Index(ref index) => {
                let Some(desc) = platform.select(index) else {
                    let available: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                        .collect();
                    return Err(RegistryError::NoMatchingPlatform {
                        reference: display,
                        wanted: platform.to_string(),
                        available: available.join(", "),
                    }
                    .into());
                };
                let index_digest = parse_digest(&fetched.digest)?;
                let inner = self
                    .transport
                    .get_manifest(
                        &reference.registry,
                        &reference.repository,
                        &desc.digest,
                        Some(&desc.digest),
                        &display,
                    )
                    .await?;
                (inner, Some(index_digest))
            }
        };
        let ManifestDocument::Image(manifest) = fetched.document else {
            return Err(RegistryError::BadManifest {
                reason: format!("the index of {display} points at another index"),
            }
            .into());
        };
        let media_type = manifest.effective_media_type().to_string();
        Ok(ResolvedManifest {
            digest: parse_digest(&fetched.digest)?,
            bytes: fetched.bytes,
            manifest,
            media_type,
            index_digest,
        })
    }

    /// Fetches a small blob (an image config) and checks its digest.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>> {
        if descriptor.size > manifest::MAX_MANIFEST_SIZE as u64 * 4 {
            return Err(RegistryError::BadManifest {
                reason: format!("config blob of {} bytes is too large", descriptor.size),
            }
            .into());
        }
        Ok(self
            .transport
            .get_blob_bytes(
                &reference.registry,
                &reference.repository,
                &descriptor.digest,
                descriptor.size,
            )
            .await?)
    }

    /// Uploads one blob unless the registry has it already; returns whether it was uploaded.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        data: Vec<u8>,
    ) -> Result<bool> {
        let d = digest.to_string();
        if self
            .transport
            .blob_exists(&reference.registry, &reference.repository, &d)
            .await?
        {
            return Ok(false);
        }
        let size = data.len() as u64;
        let data = bytes::Bytes::from(data);
        self.transport
            .upload_blob(
                &reference.registry,
                &reference.repository,
                &d,
                &|| reqwest::Body::from(data.clone()),
                size,
            )
            .await?;
        Ok(true)
    }

    /// Uploads a manifest (or index) under the reference's tag (or digest).
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        Ok(self
            .transport
            .put_manifest(
                &reference.registry,
                &reference.repository,
                &reference.manifest_reference(),
                media_type,
                bytes,
            )
            .await?)
    }
}

/// A [`RegistryClient`] with its own tokio runtime, for synchronous callers (the CLI).
pub struct BlockingRegistryClient {
    inner: RegistryClient,
    runtime: tokio::runtime::Runtime,
}

impl BlockingRegistryClient {
    /// A client with `options` and a small multi-thread runtime.
    pub fn new(options: RegistryOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("box-registry")
            .enable_all()
            .build()
            .map_err(|e| ImageError::io("cannot start the download runtime", e))?;
        Ok(BlockingRegistryClient {
            inner: RegistryClient::new(options)?,
            runtime,
        })
    }

    /// The async client inside.
    pub fn client(&self) -> &RegistryClient {
        &self.inner
    }

    /// Runs a future on the client's runtime (for calls this wrapper does not mirror).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// See [`RegistryClient::check_login`].
    pub fn check_login(&self, registry: &str) -> Result<()> {
        self.runtime.block_on(self.inner.check_login(registry))
    }

    /// Pulls `reference` into `store`; see [`RegistryClient::pull_with`].
    pub fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        store: &crate::image::ImageStore,
        progress: &dyn PullProgress,
    ) -> Result<crate::db::ImageRecord> {
        self.inner
            .pull_with(self.runtime.handle(), reference, platform, store, progress)
    }

    /// Pushes `image` to `target`; see [`RegistryClient::push_with`].
    pub fn push(
        &self,
        store: &crate::image::ImageStore,
        image: &crate::db::ImageRecord,
        target: &Reference,
        progress: &dyn PullProgress,
    ) -> Result<()> {
        self.inner
            .push_with(self.runtime.handle(), store, image, target, progress)
    }

    /// See [`RegistryClient::resolve`].
    pub fn resolve(&self, reference: &Reference, platform: &Platform) -> Result<ResolvedManifest> {
        self.runtime
            .block_on(self.inner.resolve(reference, platform))
    }
}
