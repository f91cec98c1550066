//! The HTTP side of the distribution API: scheme choice per host, authentication retries,
//! manifests with digest checks, blob streams that resume with `Range`, and uploads.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, RANGE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use super::auth::{Challenge, TokenCache, TokenResponse};
use super::credentials::Credentials;
use super::manifest::{ManifestDocument, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE};
use super::{RegistryError, RegistryOptions};

/// How many times a broken blob download is picked up again from where it stopped.
const BLOB_RETRIES: u32 = 5;

/// One registry endpoint's HTTP state, shared by the pulls and pushes of a [`super::RegistryClient`].
pub(crate) struct Transport {
    http: reqwest::Client,
    options: RegistryOptions,
    tokens: TokenCache,
    /// `host -> "http" | "https"`, decided on first contact.
    schemes: Mutex<HashMap<String, &'static str>>,
}

/// A fetched manifest: the exact bytes (their digest is the manifest's identity), its parsed
/// form and its digest.
pub(crate) struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub document: ManifestDocument,
    pub digest: String,
}

/// The API host for a registry name (Docker Hub's API lives elsewhere than its name).
pub(crate) fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        r => r,
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map(|(h, _)| h)
        .unwrap_or_else(|| host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host));
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

impl Transport {
    pub fn new(options: RegistryOptions) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("box/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!options.tls_verify)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(8)
            .build()
            .map_err(|e| RegistryError::Http {
                url: String::new(),
                reason: format!("cannot set up the HTTP client: {e}"),
            })?;
        Ok(Transport {
            http,
            options,
            tokens: TokenCache::default(),
            schemes: Mutex::new(HashMap::new()),
        })
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// `scheme://host` for `registry`: plain HTTP for loopback hosts, HTTPS otherwise, and with
    /// `tls_verify` off HTTPS first then HTTP if HTTPS cannot be spoken.
    async fn base(&self, registry: &str) -> Result<String, RegistryError> {
        let host = api_host(registry);
        let mut schemes = self.schemes.lock().await;
        if let Some(s) = schemes.get(host) {
            return Ok(format!("{s}://{host}"));
        }
        let scheme = if is_loopback(host) {
            "http"
        } else if self.options.tls_verify {
            "https"
        } else {
            match self.http.get(format!("https://{host}/v2/")).send().await {
                Ok(_) => "https",
                Err(_) => "http",
            }
        };
        schemes.insert(host.to_string(), scheme);
        Ok(format!("{scheme}://{host}"))
    }

    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = &self.options.credentials {
            return Ok(Some(c.clone()));
        }
        Credentials::lookup(registry)
    }

    fn send_error(&self, registry: &str, url: &str, e: reqwest::Error) -> RegistryError {
        if e.is_connect() || e.is_timeout() {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = s.to_string();
                source = s.source();
            }
            RegistryError::Unreachable {
                registry: registry.to_string(),
                reason,
            }
        } else {
            RegistryError::Http {
                url: url.to_string(),
                reason: e.to_string(),
            }
        }
    }

    /// Sends the request `build` makes (called again for the retry), answering a 401 challenge
    /// with a bearer token (cached per scope) or Basic credentials.
    pub async fn send(
        &self,
        registry: &str,
        scope: &str,
        path: &str,
        build: &(dyn Fn(&reqwest::Client, &str) -> RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        let base = self.base(registry).await?;
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{base}{path}")
        };
        let cache_key = format!("{}|{scope}", api_host(registry));
        let cached = self.tokens.get(&cache_key);
        let mut req = build(&self.http, &url);
        if let Some(value) = &cached {
            req = req.header(AUTHORIZATION, value);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.send_error(registry, &url, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        if cached.is_some() {
            self.tokens.forget(&cache_key);
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        let creds = self.credentials(registry)?;
        let (value, ttl) = match challenge {
            Some(Challenge::Bearer { realm, service, .. }) => {
                self.fetch_token(registry, &realm, service.as_deref(), scope, creds.as_ref())
                    .await?
            }
            Some(Challenge::Basic) | None => match &creds {
                Some(c) => (c.basic_header(), Duration::from_secs(3600)),
                None => return Err(unauthorized(registry, false)),
            },
        };
        let resp = build(&self.http, &url)
            .header(AUTHORIZATION, &value)
            .send()
            .await
            .map_err(|e| self.send_error(registry, &url, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(unauthorized(registry, creds.is_some()));
        }
        self.tokens.put(&cache_key, value, ttl);
        Ok(resp)
    }

    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<(String, Duration), RegistryError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        if !scope.is_empty() {
            query.push(("scope", scope));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some(c) = creds {
            req = req.header(AUTHORIZATION, c.basic_header());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.send_error(registry, realm, e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(unauthorized(registry, creds.is_some()));
        }
        if !status.is_success() {
            return Err(RegistryError::Http {
                url: realm.to_string(),
                reason: format!("token endpoint answered {status}"),
            });
        }
        let body: TokenResponse = resp.json().await.map_err(|e| RegistryError::Http {
            url: realm.to_string(),
            reason: format!("token endpoint sent no usable token: {e}"),
        })?;
        let token = body.token.or(body.access_token).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(RegistryError::Http {
                url: realm.to_string(),
                reason: "token endpoint sent no token".into(),
            });
        };
        let ttl = Duration::from_secs(body.expires_in.unwrap_or(60));
        Ok((format!("Bearer {token}"), ttl))
    }

    /// `GET /v2/<repo>/manifests/<reference>`; checks the bytes against `expected` (a digest
    /// reference) and against `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
        expected: Option<&str>,
        display: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let scope = format!("repository:{repository}:pull");
        let path = format!("/v2/{repository}/manifests/{reference}");
        let resp = self
            .send(registry, &scope, &path, &|c, url| {
                c.get(url).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::ManifestUnknown {
                reference: display.to_string(),
            });
        }
        let resp = check_status(resp, registry).await?;
        let headers = resp.headers().clone();
        if let Some(len) = content_length(&headers) {
            if len > MAX_MANIFEST_SIZE as u64 {
                return Err(RegistryError::BadManifest {
                    reason: format!("manifest of {len} bytes is larger than the 4 MiB limit"),
                });
            }
        }
        let mut bytes = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Http {
                url: path.clone(),
                reason: e.to_string(),
            })?;
            if bytes.len() + chunk.len() > MAX_MANIFEST_SIZE {
                return Err(RegistryError::BadManifest {
                    reason: "manifest is larger than the 4 MiB limit".into(),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let digest = sha256_digest(&bytes);
        if let Some(exp) = expected {
            if exp != digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest of {display}"),
                    expected: exp.to_string(),
                    actual: digest,
                });
            }
        }
        if let Some(header) = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|h| h.starts_with("sha256:"))
        {
            if header != digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest of {display} (Docker-Content-Digest)"),
                    expected: header.to_string(),
                    actual: digest,
                });
            }
        }
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let document = ManifestDocument::parse(&bytes, media_type.as_deref())?;
        Ok(FetchedManifest {
            bytes,
            document,
            digest,
        })
    }

    /// Fetches a small blob (a config) whole and checks its digest and size.
    pub async fn get_blob_bytes(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
        size: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let fetch = self.stream_blob(registry, repository, digest, 0, tx, &|_| {});
        let collect = async {
            let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 24));
            while let Some(chunk) = rx.recv().await {
                if let Ok(chunk) = chunk {
                    out.extend_from_slice(&chunk);
                }
            }
            out
        };
        let (res, bytes) = tokio::join!(fetch, collect);
        res?;
        let got = sha256_digest(&bytes);
        if got != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.to_string(),
                actual: got,
            });
        }
        Ok(bytes)
    }

    /// Streams blob bytes from `offset` into `tx`, reconnecting with `Range: bytes=N-` where a
    /// connection breaks (or skipping bytes when the registry ignores `Range`). `on_bytes` gets
    /// the running total. Errors are also sent into `tx` so a reader on the other side stops.
    pub async fn stream_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
        offset: u64,
        tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, RegistryError> {
        let result = self
            .stream_blob_inner(registry, repository, digest, offset, &tx, on_bytes)
            .await;
        if let Err(e) = &result {
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
        result
    }

    async fn stream_blob_inner(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
        offset: u64,
        tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, RegistryError> {
        let scope = format!("repository:{repository}:pull");
        let path = format!("/v2/{repository}/blobs/{digest}");
        let mut done = offset;
        let mut attempts = 0;
        loop {
            let start = done;
            let resp = self
                .send(registry, &scope, &path, &|c, url| {
                    let r = c.get(url);
                    if start > 0 {
                        r.header(RANGE, format!("bytes={start}-"))
                    } else {
                        r
                    }
                })
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(RegistryError::Unreachable { .. }) if attempts < BLOB_RETRIES && done > 0 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(200 << attempts)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(RegistryError::BlobUnknown {
                    repository: repository.to_string(),
                    digest: digest.to_string(),
                });
            }
            let mut skip = 0u64;
            if start > 0 && resp.status() == StatusCode::OK {
                // The registry ignored Range: drop what was already delivered.
                skip = start;
            } else if start > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
                return Err(status_error(resp, registry).await);
            }
            let resp = check_status(resp, registry).await?;
            let mut stream = resp.bytes_stream();
            let mut broken = false;
            while let Some(chunk) = stream.next().await {
                let mut chunk = match chunk {
                    Ok(c) => c,
                    Err(_) if attempts < BLOB_RETRIES => {
                        broken = true;
                        break;
                    }
                    Err(e) => {
                        return Err(RegistryError::Http {
                            url: path.clone(),
                            reason: format!("download of {digest} broke off: {e}"),
                        })
                    }
                };
                if skip > 0 {
                    let n = skip.min(chunk.len() as u64);
                    chunk = chunk.slice(usize::try_from(n).unwrap_or(chunk.len())..);
                    skip -= n;
                    if chunk.is_empty() {
                        continue;
                    }
                }
                done += chunk.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    // The consumer stopped (its own error is the one to report).
                    return Ok(done);
                }
                on_bytes(done);
            }
            if !broken {
                return Ok(done);
            }
            attempts += 1;
            tokio::time::sleep(Duration::from_millis(100 << attempts)).await;
        }
    }

    /// Whether the registry has a blob (`HEAD /v2/<repo>/blobs/<digest>`).
    pub async fn blob_exists(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        let scope = format!("repository:{repository}:pull,push");
        let path = format!("/v2/{repository}/blobs/{digest}");
        let resp = self
            .send(registry, &scope, &path, &|c, url| c.head(url))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(resp, registry).await),
        }
    }

    /// Uploads a blob monolithically: `POST /v2/<repo>/blobs/uploads/` then `PUT <location>?digest=`.
    pub async fn upload_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
        body: &(dyn Fn() -> reqwest::Body + Sync),
        size: u64,
    ) -> Result<(), RegistryError> {
        let scope = format!("repository:{repository}:pull,push");
        let path = format!("/v2/{repository}/blobs/uploads/");
        let resp = self
            .send(registry, &scope, &path, &|c, url| {
                c.request(Method::POST, url)
                    .header(reqwest::header::CONTENT_LENGTH, 0)
            })
            .await?;
        let resp = check_status(resp, registry).await?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Http {
                url: path.clone(),
                reason: "upload started without a Location".into(),
            })?
            .to_string();
        let base = self.base(registry).await?;
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{base}{location}")
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(digest);
        let resp = self
            .send(registry, &scope, &url, &|c, u| {
                c.put(u)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .body(body())
            })
            .await?;
        check_status(resp, registry).await?;
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<tag>` with the manifest's own media type.
    pub async fn put_manifest(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let scope = format!("repository:{repository}:pull,push");
        let path = format!("/v2/{repository}/manifests/{reference}");
        let resp = self
            .send(registry, &scope, &path, &|c, url| {
                c.put(url)
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec())
            })
            .await?;
        check_status(resp, registry).await?;
        Ok(())
    }
}

fn content_length(headers: &HeaderMap<HeaderValue>) -> Option<u64> {
    headers
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn unauthorized(registry: &str, had_credentials: bool) -> RegistryError {
    RegistryError::Unauthorized {
        registry: registry.to_string(),
        had_credentials,
    }
}

async fn check_status(resp: Response, registry: &str) -> Result<Response, RegistryError> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(status_error(resp, registry).await)
    }
}

/// Turns an error response into a [`RegistryError`], using the registry's `errors[].code`.
async fn status_error(resp: Response, registry: &str) -> RegistryError {
    let status = resp.status();
    let url = resp.url().to_string();
    let body = resp.text().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let detail = serde_json::from_str::<Errors>(&body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| format!("{}: {}", e.code, e.message))
        .unwrap_or_else(|| body.chars().take(200).collect());
    if status == StatusCode::UNAUTHORIZED {
        return unauthorized(registry, true);
    }
    if status == StatusCode::FORBIDDEN {
        return RegistryError::Denied {
            registry: registry.to_string(),
            detail,
        };
    }
    RegistryError::Http {
        url,
        reason: format!("{status}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_get_plain_http() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:41234"));
        assert!(is_loopback("[::1]:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("registry.example.com:5000"));
        assert!(!is_loopback("docker.io"));
    }
}
