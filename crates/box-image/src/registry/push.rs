//! Pushing a stored image: layer blobs (skipped where the registry has them), the config, then
//! the manifest exactly as stored (OCI or Docker schema 2), so its digest does not change.

use super::{PullProgress, RegistryClient, RegistryError};
use crate::db::ImageRecord;
use crate::error::{ImageError, Result};
use crate::image::ImageStore;
use crate::reference::Reference;

impl RegistryClient {
    /// Pushes `image` from `store` to `target` (its tag, or `latest`). Blocking like
    /// [`RegistryClient::pull_with`]; `progress` hears of each blob.
    pub fn push_with(
        &self,
        runtime: &tokio::runtime::Handle,
        store: &ImageStore,
        image: &ImageRecord,
        target: &Reference,
        progress: &dyn PullProgress,
    ) -> Result<()> {
        let target = if target.tag.is_none() && target.digest.is_none() {
            target.with_tag("latest")?
        } else {
            target.clone()
        };
        for layer in &image.layers {
            let path = store.content().path(&layer.blob_digest);
            let size = std::fs::metadata(&path)
                .map_err(|e| ImageError::io_path("read layer blob", &path, e))?
                .len();
            let uploaded = runtime.block_on(async {
                let d = layer.blob_digest.to_string();
                if self
                    .transport
                    .blob_exists(&target.registry, &target.repository, &d)
                    .await?
                {
                    return Ok::<bool, RegistryError>(false);
                }
                let open = || match std::fs::File::open(&path) {
                    Ok(f) => reqwest::Body::from(tokio::fs::File::from_std(f)),
                    // Sends nothing: the registry then refuses the digest, and says so.
                    Err(_) => reqwest::Body::from(Vec::new()),
                };
                self.transport
                    .upload_blob(&target.registry, &target.repository, &d, &open, size)
                    .await?;
                Ok(true)
            })?;
            progress.on_layer(&layer.blob_digest, size, size);
            progress.on_layer_done(&layer.blob_digest, !uploaded);
        }
        let config = store.content().read_to_vec(&image.id)?;
        runtime.block_on(self.push_blob(&target, &image.id, config))?;
        let manifest = store.manifest_of(image)?;
        runtime.block_on(self.push_manifest(&target, &image.manifest_media_type, &manifest))
    }
}
