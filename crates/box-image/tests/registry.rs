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
    if !std::path::Path::new("/usr/bin/skopeo").exists() {
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
