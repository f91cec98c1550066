//! The content store, layer store and ImageStore: verification, races, crash leftovers, and a
//! full commit/resolve/tag/remove/prune round trip with a two-layer (gzip + zstd) image.

mod support;

use std::fs;
use std::io::{self, Read, Write};
use std::sync::Arc;

use box_image::compression::{MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_ZSTD};
use box_image::content::ContentStore;
use box_image::digest::Digest;
use box_image::error::ImageError;
use box_image::image::ImageStore;
use box_image::layers::{chain_id, LayerStore};
use box_image::unpack::UnpackOptions;
use support::{raw_tar, Raw, TempDir};

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn content_store_rejects_wrong_digest_and_keeps_nothing() {
    let t = TempDir::new("cs-wrong");
    let cs = ContentStore::open(t.path()).expect("open");
    let wrong = Digest::of_bytes(b"something else");
    let e = cs
        .write_blob(b"payload", Some(&wrong))
        .expect_err("must fail");
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert!(names_in(&t.path().join("blobs/sha256")).is_empty());
    assert!(names_in(&t.path().join("ingest")).is_empty());
    let right = Digest::of_bytes(b"payload");
    assert_eq!(cs.write_blob(b"payload", Some(&right)).expect("ok"), right);
    assert_eq!(cs.read_to_vec(&right).expect("read"), b"payload");
    assert_eq!(cs.list().expect("list"), vec![right]);
}

#[test]
fn content_store_detects_corruption_on_read() {
    let t = TempDir::new("cs-corrupt");
    let cs = ContentStore::open(t.path()).expect("open");
    let d = cs.write_blob(b"payload", None).expect("write");
    fs::write(cs.path(&d), b"tampered").expect("tamper");
    assert!(matches!(
        cs.read_to_vec(&d),
        Err(ImageError::DigestMismatch { .. })
    ));
}

#[test]
fn concurrent_writers_of_the_same_blob_both_succeed() {
    let t = TempDir::new("cs-race");
    let cs = Arc::new(ContentStore::open(t.path()).expect("open"));
    let data = Arc::new(vec![42u8; 3 * 1024 * 1024]);
    let d = Digest::of_bytes(&data);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (cs, data, d) = (cs.clone(), data.clone(), d.clone());
            std::thread::spawn(move || {
                let mut w = cs.writer(Some(&d)).expect("writer");
                for chunk in data.chunks(4096) {
                    w.write_all(chunk).expect("write");
                }
                w.commit().expect("commit")
            })
        })
        .collect();
    for th in threads {
        assert_eq!(th.join().expect("thread").0, d);
    }
    assert_eq!(
        names_in(&t.path().join("blobs/sha256")),
        vec![d.hex().to_string()]
    );
    assert!(names_in(&t.path().join("ingest")).is_empty());
    assert_eq!(cs.read_to_vec(&d).expect("read").len(), data.len());
}

#[test]
fn open_removes_crash_leftovers_but_not_live_writers() {
    let t = TempDir::new("cs-crash");
    let cs = ContentStore::open(t.path()).expect("open");
    let mut live = cs.writer(None).expect("writer");
    live.write_all(b"in progress").expect("write");
    live.flush().expect("flush");
    fs::write(t.path().join("ingest/blob-dead-writer"), b"half").expect("leftover");
    fs::create_dir_all(t.path().join("layers/.tmp-dead")).expect("tmp layer");
    fs::write(t.path().join("layers/.tmp-dead/f"), b"x").expect("tmp layer file");
    let _store = ImageStore::open(t.path(), true).expect("reopen");
    let left = names_in(&t.path().join("ingest"));
    assert_eq!(left.len(), 1, "the live writer's file stays: {left:?}");
    assert!(!left.contains(&"blob-dead-writer".to_string()));
    assert!(names_in(&t.path().join("layers")).is_empty());
    live.commit().expect("live writer still commits");
}

#[test]
fn layer_store_unpacks_once_even_when_racing() {
    let t = TempDir::new("ls-race");
    let ls = Arc::new(LayerStore::open(&t.path().join("layers")).expect("open"));
    let tar = Arc::new(raw_tar(&[Raw::dir("a"), Raw::file("a/f", &[1u8; 100_000])]));
    let diff = Digest::of_bytes(&tar);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (ls, tar) = (ls.clone(), tar.clone());
            std::thread::spawn(move || {
                let opts = UnpackOptions {
                    rootless: true,
                    ignore_ownership: true,
                };
                ls.ensure(None, None, &tar[..], &opts).expect("ensure")
            })
        })
        .collect();
    for th in threads {
        let rec = th.join().expect("thread");
        assert_eq!(rec.chain_id, diff);
        assert_eq!(rec.diff_id, diff);
    }
    assert_eq!(
        names_in(&t.path().join("layers")),
        vec![diff.hex().to_string()]
    );
    assert_eq!(
        fs::read(ls.path(&diff).join("a/f")).expect("f").len(),
        100_000
    );
    // Known layer with the expected diff id: the reader is not even touched.
    struct Boom;
    impl Read for Boom {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            panic!("a present layer must not be read again")
        }
    }
    let opts = UnpackOptions::default();
    ls.ensure(None, Some(&diff), Boom, &opts).expect("present");
    // A wrong expected diff id stores nothing.
    let other = Digest::of_bytes(b"other");
    let tar2 = raw_tar(&[Raw::file("g", b"g")]);
    let e = ls
        .ensure(Some(&diff), Some(&other), &tar2[..], &opts)
        .expect_err("mismatch");
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert_eq!(names_in(&t.path().join("layers")).len(), 1);
}

#[test]
fn chain_ids_follow_the_oci_rule() {
    let a = Digest::of_bytes(b"a");
    let b = Digest::of_bytes(b"b");
    assert_eq!(chain_id(None, &a), a);
    let want = Digest::of_bytes(format!("{a} {b}").as_bytes());
    assert_eq!(chain_id(Some(&a), &b), want);
}

struct Layer {
    blob: Vec<u8>,
    digest: Digest,
    diff_id: Digest,
    media_type: &'static str,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gz");
    e.finish().expect("gz")
}

fn test_image(tag: &str) -> (Vec<Layer>, Vec<u8>, Vec<u8>) {
    let tar1 = raw_tar(&[
        Raw::dir("etc"),
        Raw::file("etc/os-release", tag.as_bytes()),
        Raw::file("etc/old", b"old"),
    ]);
    let tar2 = raw_tar(&[
        Raw::dir("etc"),
        Raw::file("etc/.wh.old", b""),
        Raw::file("app", tag.as_bytes()),
    ]);
    let gz = gzip(&tar1);
    let zs = zstd::encode_all(&tar2[..], 3).expect("zstd");
    let layers = vec![
        Layer {
            digest: Digest::of_bytes(&gz),
            diff_id: Digest::of_bytes(&tar1),
            blob: gz,
            media_type: MEDIA_TYPE_OCI_LAYER_GZIP,
        },
        Layer {
            digest: Digest::of_bytes(&zs),
            diff_id: Digest::of_bytes(&tar2),
            blob: zs,
            media_type: MEDIA_TYPE_OCI_LAYER_ZSTD,
        },
    ];
    let config = serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/app"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        "history": [{"created_by": tag}]
    });
    let config = serde_json::to_vec(&config).expect("config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of_bytes(&config).to_string(), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.blob.len()})).collect::<Vec<_>>()
    });
    (
        layers,
        serde_json::to_vec(&manifest).expect("manifest"),
        config,
    )
}

fn ingest_all(store: &ImageStore, layers: &[Layer]) {
    let mut parent: Option<Digest> = None;
    for l in layers {
        let rec = store
            .ingest_layer_stream(
                parent.as_ref(),
                &l.blob[..],
                &l.digest,
                l.media_type,
                Some(&l.diff_id),
            )
            .expect("ingest");
        assert_eq!(rec.diff_id, l.diff_id);
        parent = Some(rec.chain_id);
    }
}

#[test]
fn image_store_round_trip() {
    let t = TempDir::new("is-roundtrip");
    let store = ImageStore::open(t.path(), true).expect("open");
    let (layers, manifest, config) = test_image("one");
    ingest_all(&store, &layers);
    for l in &layers {
        assert!(
            store.content().has(&l.digest),
            "blob stored while unpacking"
        );
    }
    let img = store
        .commit_image(&manifest, &config, &["test/app:1".to_string()])
        .expect("commit");
    assert_eq!(img.id, Digest::of_bytes(&config));
    assert_eq!(img.names, vec!["docker.io/test/app:1".to_string()]);
    assert_eq!(img.layers.len(), 2);
    assert_eq!(
        (img.os.as_str(), img.architecture.as_str()),
        ("linux", "amd64")
    );

    // Resolve by every handle.
    for handle in [
        "test/app:1",
        "docker.io/test/app:1",
        &img.id.to_string(),
        img.id.hex(),
        img.short_id(),
        &img.id.hex()[..5],
    ] {
        assert_eq!(store.resolve(handle).expect(handle).id, img.id, "{handle}");
    }
    let e = store.resolve("test/app:2").expect_err("unknown");
    assert!(e.to_string().contains("box pull test/app:2"), "{e}");
    assert!(matches!(
        store.resolve("Bad Name"),
        Err(ImageError::InvalidReference { .. })
    ));

    // Layers as overlay lower dirs, top first; the whiteout is in the top layer.
    let lowers = store.lower_dirs(&img);
    assert_eq!(lowers.len(), 2);
    assert!(lowers[0].join("app").is_file());
    assert!(lowers[1].join("etc/os-release").is_file());
    assert!(fs::symlink_metadata(lowers[0].join("etc/old")).is_ok());

    // Tag, then remove by id needs force, remove by name untags.
    store
        .tag("test/app:1", "localhost:5000/mine:v2")
        .expect("tag");
    assert_eq!(
        store.resolve("localhost:5000/mine:v2").expect("tagged").id,
        img.id
    );
    let e = store.remove(img.short_id(), false).expect_err("two names");
    assert!(matches!(e, ImageError::Conflict(_)), "{e}");
    let out = store.remove("test/app:1", false).expect("untag");
    assert_eq!(out.untagged, vec!["docker.io/test/app:1".to_string()]);
    assert_eq!(out.deleted, None);
    assert_eq!(store.list().expect("list").len(), 1);

    // Prune keeps named images and everything they use.
    let report = store.prune().expect("prune");
    assert!(
        report.images.is_empty() && report.blobs == 0 && report.layers == 0,
        "{report:?}"
    );

    // A second image sharing nothing; then the last name of the first goes: image, blobs and
    // layers with it, the second untouched.
    let (layers2, manifest2, config2) = test_image("two");
    ingest_all(&store, &layers2);
    let img2 = store
        .commit_image(&manifest2, &config2, &["two".to_string()])
        .expect("commit 2");
    let out = store
        .remove("localhost:5000/mine:v2", false)
        .expect("remove");
    assert_eq!(out.deleted, Some(img.id.clone()));
    assert!(matches!(
        store.resolve(img.short_id()),
        Err(ImageError::UnknownImage(_))
    ));
    for l in &layers {
        assert!(!store.content().has(&l.digest));
    }
    assert!(!lowers[0].exists() && !lowers[1].exists());
    let left = store.resolve("two").expect("second image");
    assert!(store.lower_dirs(&left).iter().all(|p| p.is_dir()));
    assert_eq!(
        store.content().list().expect("blobs").len(),
        4,
        "2 layers + config + manifest"
    );

    // Re-committing the same name to another image leaves the old one dangling for prune.
    ingest_all(&store, &layers);
    store
        .commit_image(&manifest, &config, &["two".to_string()])
        .expect("retag");
    let report = store.prune().expect("prune");
    assert_eq!(report.images, vec![img2.id.clone()]);
    assert_eq!(report.layers, 2);
    assert_eq!(store.list().expect("list").len(), 1);
}

#[test]
fn ingest_rejects_wrong_digests_and_stores_nothing() {
    let t = TempDir::new("is-wrong");
    let store = ImageStore::open(t.path(), true).expect("open");
    let (layers, manifest, config) = test_image("x");
    let l = &layers[0];
    let bogus = Digest::of_bytes(b"bogus");
    let e = store
        .ingest_layer_stream(None, &l.blob[..], &bogus, l.media_type, Some(&l.diff_id))
        .expect_err("blob digest");
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    let e = store
        .ingest_layer_stream(None, &l.blob[..], &l.digest, l.media_type, Some(&bogus))
        .expect_err("diff id");
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert!(store.layers().list().expect("layers").is_empty());
    assert!(names_in(&t.path().join("layers")).is_empty());
    // The blob itself was fine and may stay (prune collects it); no image can be committed.
    let e = store
        .commit_image(&manifest, &config, &["x".to_string()])
        .expect_err("layers missing");
    assert!(e.to_string().contains("not ingested"), "{e}");
    assert!(store.list().expect("list").is_empty());
    let e = store
        .ingest_layer_stream(None, &l.blob[..], &l.digest, "application/json", None)
        .expect_err("media type");
    assert!(matches!(e, ImageError::UnsupportedMediaType { .. }));
}

#[test]
fn commit_rejects_config_that_does_not_match_the_manifest() {
    let t = TempDir::new("is-config");
    let store = ImageStore::open(t.path(), true).expect("open");
    let (layers, manifest, _config) = test_image("y");
    ingest_all(&store, &layers);
    let (_, _, other_config) = test_image("z");
    let e = store
        .commit_image(&manifest, &other_config, &[])
        .expect_err("config digest");
    assert!(
        matches!(
            e,
            ImageError::DigestMismatch { .. } | ImageError::InvalidDocument { .. }
        ),
        "{e}"
    );
    assert!(store.list().expect("list").is_empty());
}
