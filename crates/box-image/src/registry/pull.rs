//! Pulling an image into an [`ImageStore`]: every layer streams from the network straight into
//! `ImageStore::ingest_layer_stream` (stored, decompressed and unpacked while it downloads;
//! digests checked at the end). Chain ids come from the config's diff ids, so the layers are
//! independent of each other and unpack in parallel, a few at a time; the image row is written
//! only when every layer is in.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::manifest::Descriptor;
use super::{Platform, PullProgress, RegistryClient, RegistryError};
use crate::db::ImageRecord;
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::image::{config_diff_ids, parse_config, ImageStore};
use crate::layers::chain_ids;
use crate::reference::Reference;

/// Chunks buffered between a download and its unpacker (backpressure beyond that).
const CHANNEL_CHUNKS: usize = 64;

/// The blocking side of a layer download: reads the chunks the download task sends.
struct ChannelReader<'a> {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    done: u64,
    total: u64,
    digest: &'a Digest,
    progress: &'a dyn PullProgress,
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) => self.current = chunk,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        self.done += n as u64;
        self.progress.on_layer(self.digest, self.done, self.total);
        Ok(n)
    }
}

struct LayerJob {
    descriptor: Descriptor,
    blob: Digest,
    parent: Option<Digest>,
    diff_id: Digest,
}

impl RegistryClient {
    /// Pulls `reference` (for `platform` when it names an index) into `store` and names it
    /// `reference`. Layers and blobs already present are skipped; up to
    /// `max_concurrent_downloads` layers download and unpack at once. Blocking: call it from a
    /// thread outside the runtime behind `runtime` (async callers: `spawn_blocking`).
    pub fn pull_with(
        &self,
        runtime: &tokio::runtime::Handle,
        reference: &Reference,
        platform: &Platform,
        store: &ImageStore,
        progress: &dyn PullProgress,
    ) -> Result<ImageRecord> {
        let _lease = store.lease()?;
        let resolved = runtime.block_on(self.resolve(reference, platform))?;
        let manifest = &resolved.manifest;
        let config_digest: Digest = manifest.config.digest.parse()?;
        let config = if store.content().has(&config_digest) {
            store.content().read_to_vec(&config_digest)?
        } else {
            runtime.block_on(self.fetch_blob(reference, &manifest.config))?
        };
        let diff_ids = config_diff_ids(&parse_config(&config)?)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(RegistryError::BadManifest {
                reason: format!(
                    "{} lists {} layers but its config has {} diff ids",
                    reference.familiar(),
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            }
            .into());
        }
        let chains = chain_ids(&diff_ids);
        let mut jobs = Vec::new();
        for (i, desc) in manifest.layers.iter().enumerate() {
            let blob: Digest = desc.digest.parse()?;
            if store.content().has(&blob) && store.has_layer(&chains[i])? {
                progress.on_layer_done(&blob, true);
                continue;
            }
            jobs.push(LayerJob {
                descriptor: desc.clone(),
                blob,
                parent: i.checked_sub(1).map(|p| chains[p].clone()),
                diff_id: diff_ids[i].clone(),
            });
        }
        self.ingest_layers(runtime, reference, store, &jobs, progress)?;
        store.commit_image(&resolved.bytes, &config, &[reference.to_string()])
    }

    /// Runs the layer jobs on a few worker threads; the first error wins and stops new jobs.
    fn ingest_layers(
        &self,
        runtime: &tokio::runtime::Handle,
        reference: &Reference,
        store: &ImageStore,
        jobs: &[LayerJob],
        progress: &dyn PullProgress,
    ) -> Result<()> {
        let workers = self
            .options()
            .max_concurrent_downloads
            .max(1)
            .min(jobs.len());
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    if failed.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { return };
                    if let Err(e) = self.ingest_layer(runtime, reference, store, job, progress) {
                        failed.store(true, Ordering::SeqCst);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                });
            }
        });
        match first_error.into_inner() {
            Ok(Some(e)) => Err(e),
            Ok(None) => Ok(()),
            Err(_) => Err(ImageError::Registry("a layer worker panicked".into())),
        }
    }

    fn ingest_layer(
        &self,
        runtime: &tokio::runtime::Handle,
        reference: &Reference,
        store: &ImageStore,
        job: &LayerJob,
        progress: &dyn PullProgress,
    ) -> Result<()> {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let client = self.clone();
        let registry = reference.registry.clone();
        let repository = reference.repository.clone();
        let digest = job.descriptor.digest.clone();
        let download = runtime.spawn(async move {
            client
                .transport
                .stream_blob(&registry, &repository, &digest, 0, tx, &|_| {})
                .await
        });
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
            done: 0,
            total: job.descriptor.size,
            digest: &job.blob,
            progress,
        };
        let ingested = store.ingest_layer_stream(
            job.parent.as_ref(),
            reader,
            &job.blob,
            &job.descriptor.media_type,
            Some(&job.diff_id),
        );
        // The download's own error (404, 401, a broken connection) explains an ingest failure
        // better than the reader's copy of it.
        let downloaded = runtime
            .block_on(download)
            .map_err(|e| ImageError::Registry(format!("layer download task failed: {e}")))?;
        match (ingested, downloaded) {
            (Ok(_), _) => {
                progress.on_layer_done(&job.blob, false);
                Ok(())
            }
            (Err(_), Err(net)) => Err(net.into()),
            (Err(e), Ok(_)) => Err(e),
        }
    }
}
