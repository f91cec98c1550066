//! Registry client against a real `docker-registry` on 127.0.0.1: push, resolve (tags, digests,
//! multi-arch indexes), pulls into an `ImageStore`, Basic (htpasswd) and bearer-token auth,
//! interop with skopeo, broken and aborted downloads.

mod registry_support;

use box_image::reference::Reference;
use box_image::registry::{
    BlockingRegistryClient, Credentials, Platform, RegistryClient, RegistryOptions,
};
use registry_support::*;

fn client() -> BlockingRegistryClient {
    BlockingRegistryClient::new(RegistryOptions::default()).unwrap()
}

fn client_with(creds: Option<Credentials>) -> BlockingRegistryClient {
    BlockingRegistryClient::new(RegistryOptions {
        credentials: creds,
        ..RegistryOptions::default()
    })
    .unwrap()
}

fn reference(reg: &Registry, name: &str) -> Reference {
    Reference::parse(&format!("{}/{name}", reg.addr)).unwrap()
}

/// Pushes `img` (blobs, config, manifest) under `r` with Box's own push primitives.
fn push_test_image(c: &BlockingRegistryClient, r: &Reference, img: &TestImage) {
    let cl: &RegistryClient = c.client();
    c.block_on(async {
        for l in &img.layers {
            cl.push_blob(r, &l.digest.parse().unwrap(), l.blob.clone())
                .await
                .unwrap();
        }
        cl.push_blob(r, &img.config_digest().parse().unwrap(), img.config.clone())
            .await
            .unwrap();
        cl.push_manifest(r, &img.manifest_media_type, &img.manifest)
            .await
            .unwrap();
    });
}

macro_rules! require_registry {
    () => {
        if !have_registry() {
            eprintln!("skipped: {REGISTRY_BIN} not installed");
            return;
        }
    };
}

#[test]
fn resolve_finds_pushed_manifest_by_tag_and_digest() {
    require_registry!();
    let reg = Registry::start(Auth::None);
    let c = client();
    let img = TestImage::new("amd64", busybox_layers("amd64"), true);
    let r = reference(&reg, "test/busybox:1");
    push_test_image(&c, &r, &img);
    let got = c.resolve(&r, &Platform::host()).unwrap();
    assert_eq!(got.digest.to_string(), img.manifest_digest());
    assert_eq!(got.manifest.layers.len(), 3);
    assert_eq!(got.bytes, img.manifest);
    let by_digest = Reference::parse(&format!(
        "{}/test/busybox@{}",
        reg.addr,
        img.manifest_digest()
    ))
    .unwrap();
    assert_eq!(
        c.resolve(&by_digest, &Platform::host()).unwrap().digest,
        got.digest
    );
    // A second push finds every blob present.
    let cl = c.client();
    let uploaded = c
        .block_on(cl.push_blob(
            &r,
            &img.layers[0].digest.parse().unwrap(),
            img.layers[0].blob.clone(),
        ))
        .unwrap();
    assert!(!uploaded);
}

#[test]
fn unknown_tag_says_image_not_found() {
    require_registry!();
    let reg = Registry::start(Auth::None);
    let r = reference(&reg, "nothing/here:tag");
    let err = client()
        .resolve(&r, &Platform::host())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "image {}/nothing/here:tag not found in the registry",
            reg.addr
        )
    );
}

#[test]
fn unreachable_registry_is_a_clear_error() {
    let port = free_port();
    let r = Reference::parse(&format!("127.0.0.1:{port}/a:b")).unwrap();
    let err = client()
        .resolve(&r, &Platform::host())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn multi_arch_index_pushed_by_skopeo_resolves_per_platform() {
    require_registry!();
    if !have_tool("/usr/bin/skopeo", "skopeo") {
        eprintln!("skipped: skopeo not installed");
        return;
    }
    let reg = Registry::start(Auth::None);
    let amd = TestImage::new("amd64", busybox_layers("amd64"), true);
    let arm = TestImage::new("arm64", busybox_layers("arm64"), true);
    let layout = TempDir::new("layout");
    write_oci_layout(layout.path(), &[amd.clone(), arm.clone()], "multi");
    let status = std::process::Command::new("skopeo")
        .args(["copy", "--all", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", layout.path().display()))
        .arg(format!("docker://{}/test/multi:1", reg.addr))
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy failed");
    let c = client();
    let r = reference(&reg, "test/multi:1");
    let a = c.resolve(&r, &"linux/amd64".parse().unwrap()).unwrap();
    let b = c.resolve(&r, &"linux/arm64".parse().unwrap()).unwrap();
    assert_eq!(a.digest.to_string(), amd.manifest_digest());
    assert_eq!(b.digest.to_string(), arm.manifest_digest());
    assert!(a.index_digest.is_some());
    let err = c
        .resolve(&r, &"linux/s390x".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no manifest for linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[test]
fn htpasswd_registry_needs_login_and_accepts_basic_credentials() {
    require_registry!();
    let reg = Registry::start(Auth::Htpasswd {
        user: "alice".into(),
        password: "wonderland".into(),
    });
    let r = reference(&reg, "private/busybox:1");
    // Without credentials: a clear error naming `box login`.
    let dir = TempDir::new("noauth");
    std::env::set_var("BOX_AUTH_FILE", dir.path().join("auth.json"));
    std::env::set_var("DOCKER_CONFIG", dir.path().join("docker"));
    let err = client_with(None)
        .resolve(&r, &Platform::host())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("box login {}", reg.addr)), "{err}");
    // Wrong password: refused.
    let bad = client_with(Some(Credentials::new("alice", "nope")));
    assert!(bad.check_login(&reg.addr).is_err());
    // Right password: push and resolve.
    let good = client_with(Some(Credentials::new("alice", "wonderland")));
    good.check_login(&reg.addr).unwrap();
    let img = TestImage::new("amd64", busybox_layers("amd64"), false);
    push_test_image(&good, &r, &img);
    assert_eq!(
        good.resolve(&r, &Platform::host())
            .unwrap()
            .digest
            .to_string(),
        img.manifest_digest()
    );
}

#[test]
fn token_auth_registry_gets_bearer_tokens() {
    require_registry!();
    let server = TokenServer::start("bob", "builder");
    let issued = server.issued.clone();
    let reg = Registry::start(Auth::Token { server });
    let r = reference(&reg, "tok/busybox:1");
    let good = client_with(Some(Credentials::new("bob", "builder")));
    let img = TestImage::new("amd64", busybox_layers("amd64"), true);
    push_test_image(&good, &r, &img);
    let n = issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n >= 1);
    assert_eq!(
        good.resolve(&r, &Platform::host())
            .unwrap()
            .digest
            .to_string(),
        img.manifest_digest()
    );
    // Anonymous clients get pull-only tokens: resolve works, push is refused.
    let anon = client_with(None);
    assert_eq!(
        anon.resolve(&r, &Platform::host())
            .unwrap()
            .digest
            .to_string(),
        img.manifest_digest()
    );
    let err = anon
        .block_on(anon.client().push_manifest(
            &reference(&reg, "tok/other:1"),
            &img.manifest_media_type,
            &img.manifest,
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("box login"), "{err}");
}

use box_image::image::ImageStore;
use box_image::registry::NoProgress;
use std::os::unix::fs::FileTypeExt;

fn open_store(dir: &TempDir) -> ImageStore {
    ImageStore::open(&dir.path().join("data"), false).unwrap()
}

#[test]
fn pull_unpacks_whiteout_and_zstd_layers_and_second_pull_is_a_no_op() {
    require_registry!();
    let reg = Registry::start(Auth::None);
    let c = client();
    let img = TestImage::new("amd64", busybox_layers("amd64"), true);
    let r = reference(&reg, "test/busybox:latest");
    push_test_image(&c, &r, &img);
    let data = TempDir::new("store");
    let store = open_store(&data);
    let rec = c.pull(&r, &Platform::host(), &store, &NoProgress).unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest());
    assert_eq!(rec.manifest_digest.to_string(), img.manifest_digest());
    assert_eq!(rec.layers.len(), 3);
    let lowers = store.lower_dirs(&rec); // top first
    let (top, mid, base) = (&lowers[0], &lowers[1], &lowers[2]);
    assert_eq!(std::fs::read(base.join("bin/busybox")).unwrap(), busybox());
    assert_eq!(
        std::fs::read_link(base.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    let wh = std::fs::symlink_metadata(mid.join("etc/removed.txt")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "whiteout is not overlay form"
    );
    assert!(mid.join("data/opaque/new.txt").exists());
    assert!(!mid.join("data/opaque/.wh..wh..opq").exists());
    assert_eq!(
        std::fs::read_to_string(top.join("etc/zstd.txt")).unwrap(),
        "from a zstd layer\n"
    );
    for l in &img.layers {
        assert!(store.content().has(&l.digest.parse().unwrap()));
    }
    assert_eq!(store.resolve(&r.to_string()).unwrap().id, rec.id);
    // Idempotent: a second pull changes nothing.
    let before = files_under(&data.path().join("data/blobs"));
    let again = c.pull(&r, &Platform::host(), &store, &NoProgress).unwrap();
    assert_eq!(again.id, rec.id);
    assert_eq!(files_under(&data.path().join("data/blobs")), before);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn pull_of_multi_arch_index_takes_the_requested_platform() {
    require_registry!();
    let reg = Registry::start(Auth::None);
    let c = client();
    let amd = TestImage::new("amd64", busybox_layers("amd64"), true);
    let arm = TestImage::new("arm64", busybox_layers("arm64"), false);
    let r = reference(&reg, "test/multi:2");
    // An index pushed by Box itself: both manifests by digest, then the index under the tag.
    for img in [&amd, &arm] {
        let by_digest = Reference::parse(&format!(
            "{}/test/multi@{}",
            reg.addr,
            img.manifest_digest()
        ))
        .unwrap();
        push_test_image(&c, &by_digest, img);
    }
    let entries: Vec<serde_json::Value> = [&amd, &arm]
        .iter()
        .map(|i| serde_json::json!({
            "mediaType": i.manifest_media_type, "digest": i.manifest_digest(), "size": i.manifest.len(),
            "platform": {"os": "linux", "architecture": i.arch}}))
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": entries,
    }))
    .unwrap();
    c.block_on(c.client().push_manifest(
        &r,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &index,
    ))
    .unwrap();
    let data = TempDir::new("store");
    let store = open_store(&data);
    let rec = c
        .pull(&r, &"linux/arm64".parse().unwrap(), &store, &NoProgress)
        .unwrap();
    assert_eq!(rec.architecture, "arm64");
    assert_eq!(rec.manifest_digest.to_string(), arm.manifest_digest());
    let mid = &store.lower_dirs(&rec)[1];
    assert_eq!(
        std::fs::read_to_string(mid.join("etc/arch")).unwrap(),
        "arm64"
    );
    let rec2 = c
        .pull(&r, &"linux/amd64".parse().unwrap(), &store, &NoProgress)
        .unwrap();
    assert_eq!(rec2.architecture, "amd64");
    // The base layer is shared between the two images: stored once.
    assert_eq!(rec.layers[0].chain_id, rec2.layers[0].chain_id);
}

#[test]
fn concurrent_pulls_of_one_image_leave_a_consistent_store() {
    require_registry!();
    let reg = Registry::start(Auth::None);
    let c = client();
    let img = TestImage::new("amd64", busybox_layers("amd64"), true);
    let r = reference(&reg, "test/race:1");
    push_test_image(&c, &r, &img);
    let data = TempDir::new("store");
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (r, data) = (&r, &data);
                s.spawn(move || {
                    // Separate store handles, as two `box pull` processes would have.
                    let store = open_store(data);
                    client()
                        .pull(r, &Platform::host(), &store, &NoProgress)
                        .unwrap()
                        .id
                        .to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids[0], ids[1]);
    let store = open_store(&data);
    assert_eq!(store.list().unwrap().len(), 1);
    let rec = store.resolve(&r.to_string()).unwrap();
    for d in store.lower_dirs(&rec) {
        assert!(d.is_dir());
    }
    assert!(files_under(&data.path().join("data/ingest")).is_empty());
}

#[test]
fn broken_download_resumes_with_range() {
    require_registry!();
    let reg = Registry::start(Auth::None);
    let c = client();
    let img = TestImage::new("amd64", busybox_layers("amd64"), true);
    push_test_image(&c, &reference(&reg, "test/resume:1"), &img);
    // Every first big response is cut after 300 KB.
    let proxy = CuttingProxy::start(&reg.addr, 300_000, 1);
    let r = Reference::parse(&format!("{}/test/resume:1", proxy.addr)).unwrap();
    let data = TempDir::new("store");
    let store = open_store(&data);
    let rec = c.pull(&r, &Platform::host(), &store, &NoProgress).unwrap();
    assert!(
        proxy.saw_range.load(std::sync::atomic::Ordering::SeqCst),
        "no Range request was made"
    );
    assert_eq!(
        std::fs::read(store.lower_dirs(&rec)[2].join("bin/busybox")).unwrap(),
        busybox()
    );
}

#[test]
fn aborted_pull_leaves_nothing_half_stored_and_a_retry_completes() {
    require_registry!();
    let reg = Registry::start(Auth::None);
    let c = client();
    let img = TestImage::new("amd64", busybox_layers("amd64"), true);
    push_test_image(&c, &reference(&reg, "test/abort:1"), &img);
    let proxy = CuttingProxy::start(&reg.addr, 100_000, i64::MAX);
    let broken = Reference::parse(&format!("{}/test/abort:1", proxy.addr)).unwrap();
    let data = TempDir::new("store");
    let store = open_store(&data);
    let err = c
        .pull(&broken, &Platform::host(), &store, &NoProgress)
        .unwrap_err();
    assert!(
        err.to_string().contains("broke off") || err.to_string().contains("cannot reach"),
        "{err}"
    );
    let base_blob: box_image::digest::Digest = img.layers[0].digest.parse().unwrap();
    assert!(!store.content().has(&base_blob), "a half blob was stored");
    assert!(files_under(&data.path().join("data/ingest")).is_empty());
    assert!(store.list().unwrap().is_empty());
    let layer_dirs: Vec<_> = files_under(&data.path().join("data/layers"));
    assert!(
        layer_dirs
            .iter()
            .all(|p| !p.to_string_lossy().contains(".tmp")),
        "{layer_dirs:?}"
    );
    drop(proxy);
    let rec = c
        .pull(
            &reference(&reg, "test/abort:1"),
            &Platform::host(),
            &store,
            &NoProgress,
        )
        .unwrap();
    assert_eq!(rec.layers.len(), 3);
}

#[test]
fn wrong_diff_id_in_config_stores_no_image() {
    require_registry!();
    let reg = Registry::start(Auth::None);
    let c = client();
    let mut layers = busybox_layers("amd64");
    layers[2].diff_id = sha256(b"not the tar");
    let img = TestImage::new("amd64", layers, true);
    let r = reference(&reg, "test/bad:1");
    push_test_image(&c, &r, &img);
    let data = TempDir::new("store");
    let store = open_store(&data);
    let err = c
        .pull(&r, &Platform::host(), &store, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn push_of_a_pulled_image_round_trips_to_another_repository() {
    require_registry!();
    let reg = Registry::start(Auth::None);
    let c = client();
    let img = TestImage::new("amd64", busybox_layers("amd64"), false);
    let r = reference(&reg, "test/src:1");
    push_test_image(&c, &r, &img);
    let data = TempDir::new("store");
    let store = open_store(&data);
    let rec = c.pull(&r, &Platform::host(), &store, &NoProgress).unwrap();
    let target = reference(&reg, "other/copy:7");
    c.push(&store, &rec, &target, &NoProgress).unwrap();
    let got = c.resolve(&target, &Platform::host()).unwrap();
    assert_eq!(got.digest, rec.manifest_digest);
    assert_eq!(
        got.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}
