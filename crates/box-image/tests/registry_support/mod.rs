//! Test fixtures for the registry suite: Debian's `docker-registry` on 127.0.0.1 (plain, htpasswd
//! or token auth), a tiny ES256 token server, and images built from busybox-static.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha2::{Digest as _, Sha256};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Whether the suite can run here. Where every test must run (`BOX_REQUIRE_PRIVILEGED=1`, set
/// by CI), a missing registry is a failure, not a skip.
pub fn have_registry() -> bool {
    have_tool(REGISTRY_BIN, "docker-registry")
}

/// Whether `path` (from Debian package `package`) exists; see [`have_registry`] for CI.
pub fn have_tool(path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var("BOX_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{path} is missing (apt-get install {package}; scripts/install-deps.sh does)");
    }
    false
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("box-reg-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// How the registry authenticates.
pub enum Auth {
    None,
    Htpasswd { user: String, password: String },
    Token { server: TokenServer },
}

/// A running `docker-registry`; killed by pid and its storage removed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub dir: TempDir,
    pub token: Option<TokenServer>,
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        let dir = TempDir::new("registry");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let mut auth_yaml = String::new();
        let mut token = None;
        match auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(&password, 5).unwrap();
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                auth_yaml = format!(
                    "auth:\n  htpasswd:\n    realm: box-test\n    path: {}\n",
                    htpasswd.display()
                );
            }
            Auth::Token { server } => {
                auth_yaml = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: box-test-registry\n    issuer: box-test-issuer\n    rootcertbundle: {}\n",
                    server.addr,
                    server.cert.display()
                );
                token = Some(server);
            }
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth_yaml}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry {
            child,
            addr,
            dir,
            token,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// The number of blob data files the registry stores.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Only the process this fixture started, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token server for `auth: token`: answers `GET /token` with ES256 JWTs signed by a P-256
/// key whose self-signed certificate the registry trusts. Requires Basic credentials
/// `user:password` when `require` is set; anonymous gets pull only.
pub struct TokenServer {
    pub addr: String,
    pub cert: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Arc<TempDir>,
    pub issued: Arc<std::sync::atomic::AtomicU32>,
}

impl TokenServer {
    pub fn start(user: &str, password: &str) -> TokenServer {
        let dir = Arc::new(TempDir::new("token"));
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=box-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl req failed");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        assert!(der.status.success());
        let x5c = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let thread = {
            let stop = stop.clone();
            let issued = issued.clone();
            let dir = dir.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(false);
                            serve_token(s, &expected, &x5c, &dir.path().join("key.pem"), &issued);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        TokenServer {
            addr,
            cert,
            stop,
            thread: Some(thread),
            _dir: dir,
            issued,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn serve_token(
    mut s: TcpStream,
    expected_auth: &str,
    x5c: &str,
    key: &Path,
    issued: &std::sync::atomic::AtomicU32,
) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") && v.trim() == expected_auth {
                authorized = true;
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut service = String::new();
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "service" => service = v,
            "scope" => scopes.push(v),
            _ => {}
        }
    }
    let has_auth_header = request_line.contains("HTTP") && authorized;
    let mut access = Vec::new();
    for scope in &scopes {
        // repository:<name>:<actions>
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| has_auth_header || *a == "pull")
            .collect();
        access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
    }
    if !has_auth_header && !expected_auth.is_empty() && scopes.iter().any(|s| s.contains("push")) {
        let _ = s.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "box-test-issuer", "sub": if has_auth_header {"user"} else {""}, "aud": service,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": format!("{now}-{}", issued.load(Ordering::SeqCst)), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let sig = der_ecdsa_to_raw(&out.stdout);
    let token = format!("{signing_input}.{}", b64url(&sig));
    issued.fetch_add(1, Ordering::SeqCst);
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut rest = Vec::new();
    let _ = reader.read(&mut rest);
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` → 64-byte `r || s` (JWS ES256).
fn der_ecdsa_to_raw(der: &[u8]) -> Vec<u8> {
    fn int(d: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(d[0], 0x02);
        let len = d[1] as usize;
        (&d[2..2 + len], &d[2 + len..])
    }
    assert_eq!(der[0], 0x30);
    let body = if der[1] & 0x80 != 0 {
        &der[3..]
    } else {
        &der[2..]
    };
    let (r, rest) = int(body);
    let (s, _) = int(rest);
    let mut out = vec![0u8; 64];
    let r = &r[r.len().saturating_sub(32)..];
    let s = &s[s.len().saturating_sub(32)..];
    out[32 - r.len()..32].copy_from_slice(r);
    out[64 - s.len()..].copy_from_slice(s);
    out
}

// ---------- images ----------

/// One entry of a test layer.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    /// `.wh.<name>` for `path`.
    Whiteout(&'a str),
    /// `.wh..wh..opq` in `dir`.
    Opaque(&'a str),
}

/// A tar of `entries` (uid/gid 0, fixed mtime).
pub fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |path: &str, kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    for e in entries {
        match e {
            Entry::Dir(p) => {
                let mut h = header(p, tar::EntryType::Directory, 0o755, 0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            Entry::File(p, data) => {
                let mode = if p.ends_with("busybox") { 0o755 } else { 0o644 };
                let mut h = header(p, tar::EntryType::Regular, mode, data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            Entry::Symlink(p, target) => {
                let mut h = header(p, tar::EntryType::Symlink, 0o777, 0);
                h.set_link_name(target).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            Entry::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                let path = if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                };
                let mut h = header(&path, tar::EntryType::Regular, 0o644, 0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            Entry::Opaque(d) => {
                let mut h = header(
                    &format!("{d}/.wh..wh..opq"),
                    tar::EntryType::Regular,
                    0o644,
                    0,
                );
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A compressed layer blob with its descriptors.
#[derive(Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: String,
    pub digest: String,
    pub diff_id: String,
}

pub fn gzip_layer(tar: &[u8], oci: bool) -> Layer {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(tar).unwrap();
    let blob = enc.finish().unwrap();
    Layer {
        digest: sha256(&blob),
        diff_id: sha256(tar),
        blob,
        media_type: if oci {
            "application/vnd.oci.image.layer.v1.tar+gzip".into()
        } else {
            "application/vnd.docker.image.rootfs.diff.tar.gzip".into()
        },
    }
}

pub fn zstd_layer(tar: &[u8]) -> Layer {
    let blob = zstd::encode_all(tar, 3).unwrap();
    Layer {
        digest: sha256(&blob),
        diff_id: sha256(tar),
        blob,
        media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
    }
}

/// An image ready to push: config and manifest bytes plus its layers.
#[derive(Clone)]
pub struct TestImage {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub layers: Vec<Layer>,
    pub arch: String,
}

impl TestImage {
    pub fn new(arch: &str, layers: Vec<Layer>, oci: bool) -> TestImage {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [],
        }))
        .unwrap();
        let (mt, cmt) = if oci {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
            )
        } else {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
            )
        };
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": cmt, "digest": sha256(&config), "size": config.len()},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.blob.len()})).collect::<Vec<_>>(),
        }))
        .unwrap();
        TestImage {
            config,
            manifest,
            manifest_media_type: mt.into(),
            layers,
            arch: arch.into(),
        }
    }

    pub fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }

    pub fn config_digest(&self) -> String {
        sha256(&self.config)
    }
}

/// The busybox-static binary the images are made of.
pub fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox")
        .or_else(|_| std::fs::read("/usr/bin/busybox"))
        .unwrap()
}

/// Three layers: a base with busybox, a layer with a whiteout and an opaque dir, a zstd layer.
pub fn busybox_layers(arch_marker: &str) -> Vec<Layer> {
    let bb = busybox();
    let base = tar_of(&[
        Entry::Dir("bin"),
        Entry::File("bin/busybox", &bb),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Symlink("bin/ls", "busybox"),
        Entry::Dir("etc"),
        Entry::File("etc/hello.txt", b"hello from layer 1\n"),
        Entry::File("etc/removed.txt", b"this is whited out by layer 2\n"),
        Entry::Dir("data"),
        Entry::Dir("data/opaque"),
        Entry::File("data/opaque/old.txt", b"hidden by the opaque dir\n"),
    ]);
    let second = tar_of(&[
        Entry::Dir("etc"),
        Entry::Whiteout("etc/removed.txt"),
        Entry::Dir("data"),
        Entry::Dir("data/opaque"),
        Entry::Opaque("data/opaque"),
        Entry::File("data/opaque/new.txt", b"new\n"),
        Entry::File("etc/arch", arch_marker.as_bytes()),
    ]);
    let third = tar_of(&[
        Entry::Dir("etc"),
        Entry::File("etc/zstd.txt", b"from a zstd layer\n"),
    ]);
    vec![
        gzip_layer(&base, true),
        gzip_layer(&second, true),
        zstd_layer(&third),
    ]
}

/// Writes `images` as an OCI layout at `dir` with an index tagged `tag` listing one manifest per
/// image (with its platform), for `skopeo copy --all oci:DIR:TAG docker://…`.
pub fn write_oci_layout(dir: &Path, images: &[TestImage], tag: &str) -> Vec<u8> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = sha256(data);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
    };
    let mut manifests = Vec::new();
    for img in images {
        put(&img.config);
        put(&img.manifest);
        for l in &img.layers {
            put(&l.blob);
        }
        manifests.push(serde_json::json!({
            "mediaType": img.manifest_media_type, "digest": img.manifest_digest(), "size": img.manifest.len(),
            "platform": {"os": "linux", "architecture": img.arch},
        }));
    }
    let inner_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
    }))
    .unwrap();
    put(&inner_index);
    let top = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&inner_index), "size": inner_index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    inner_index
}

/// A TCP proxy in front of a registry that breaks responses: each of the first `cuts`
/// connections whose response passes `after` bytes is shut down there. Records whether a
/// request carried a `Range` header.
pub struct CuttingProxy {
    pub addr: String,
    stop: Arc<AtomicBool>,
    pub saw_range: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CuttingProxy {
    pub fn start(upstream: &str, after: u64, cuts: i64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let saw_range = Arc::new(AtomicBool::new(false));
        let remaining = Arc::new(std::sync::atomic::AtomicI64::new(cuts));
        let upstream = upstream.to_string();
        let thread = {
            let stop = stop.clone();
            let saw_range = saw_range.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((client, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let saw_range = saw_range.clone();
                    std::thread::spawn(move || {
                        let (mut c, mut s) = (c2, s2);
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = c.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            if String::from_utf8_lossy(&buf[..n])
                                .to_ascii_lowercase()
                                .contains("range: bytes=")
                            {
                                saw_range.store(true, Ordering::SeqCst);
                            }
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = s.shutdown(std::net::Shutdown::Write);
                    });
                    let remaining = remaining.clone();
                    std::thread::spawn(move || {
                        let (mut s, mut c) = (server, client);
                        let mut buf = [0u8; 16384];
                        let mut total = 0u64;
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            total += n as u64;
                            if total > after && remaining.fetch_sub(1, Ordering::SeqCst) > 0 {
                                let _ = c.write_all(&buf[..n / 2]);
                                let _ = c.shutdown(std::net::Shutdown::Both);
                                let _ = s.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            if total > after {
                                remaining.fetch_add(1, Ordering::SeqCst);
                            }
                            if c.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = c.shutdown(std::net::Shutdown::Both);
                    });
                }
            })
        };
        CuttingProxy {
            addr,
            stop,
            saw_range,
            thread: Some(thread),
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Files under `dir` (recursively), as paths relative to it.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            for q in files_under(&p) {
                out.push(p.strip_prefix(dir).unwrap().join(q));
            }
        } else {
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}
