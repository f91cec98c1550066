//! The OCI distribution client: pulls (manifests, indexes and platform choice, parallel layer
//! downloads streamed into the store, resumed with `Range`), pushes, and registry authentication
//! (bearer tokens, Basic, Box's and Docker's credential files).

mod auth;
mod client;
pub mod credentials;
pub mod manifest;

use std::path::PathBuf;

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
