//! Repositories and downloads: `/etc/apk/repositories` (one URL per line, `#` comments,
//! `@tag` prefixes), where a repository keeps its signed index and packages
//! (`REPO/ARCH/APKINDEX.tar.gz`, `REPO/ARCH/NAME-VERSION.apk`), and the index cache: an index
//! is verified before it replaces the cached one (written aside and renamed), so a cut
//! download never damages what was there.

use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::index::Package;
use crate::{PkgError, Result};

/// Where the repositories are listed, relative to the root.
pub const REPOSITORIES: &str = "etc/apk/repositories";
/// Where the trusted keys are, relative to the root.
pub const KEYS: &str = "etc/apk/keys";
/// Where fetched indexes are cached, relative to the root.
pub const CACHE: &str = "var/cache/apk";
/// The repositories of a root that lists none: Alpine v3.19's main and community.
pub const DEFAULT_REPOSITORIES: [&str; 2] = [
    "https://dl-cdn.alpinelinux.org/alpine/v3.19/main",
    "https://dl-cdn.alpinelinux.org/alpine/v3.19/community",
];

/// The repository URLs of a repositories file.
pub fn parse_repositories(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('@') {
            // `@edge https://…`: a tagged repository.
            Some(tagged) => tagged
                .split_once(char::is_whitespace)
                .map(|(_, url)| url.trim())
                .unwrap_or(""),
            None => l,
        })
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_string())
        .collect()
}

/// `REPO/ARCH/APKINDEX.tar.gz`.
pub fn index_url(repo: &str, arch: &str) -> String {
    format!("{repo}/{arch}/APKINDEX.tar.gz")
}

/// `REPO/ARCH/NAME-VERSION.apk`.
pub fn package_url(repo: &str, arch: &str, pkg: &Package) -> String {
    format!("{repo}/{arch}/{}.apk", pkg.file_stem())
}

/// The cache file of a repository's index: `APKINDEX.<first 8 hex digits of SHA-1(url)>.tar.gz`.
pub fn cache_file(cache: &Path, repo: &str, arch: &str) -> PathBuf {
    let hex: String = Sha1::digest(index_url(repo, arch).as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    cache.join(format!("APKINDEX.{hex}.tar.gz"))
}

/// Something that gets a URL's bytes.
pub trait Fetch {
    /// The whole body of `url`, or why not.
    fn get(&self, url: &str) -> Result<Vec<u8>>;
}

/// HTTP(S) downloads (reqwest on a small runtime of its own, 60 s per request).
pub struct Http {
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Http {
    /// A client.
    pub fn new() -> Result<Http> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| PkgError::Unreachable(format!("cannot make an HTTP client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PkgError::Io(format!("cannot start the HTTP runtime: {e}")))?;
        Ok(Http { client, runtime })
    }
}

impl Fetch for Http {
    fn get(&self, url: &str) -> Result<Vec<u8>> {
        let unreachable =
            |e: reqwest::Error| PkgError::Unreachable(format!("cannot fetch {url}: {e}"));
        self.runtime.block_on(async {
            let response = self.client.get(url).send().await.map_err(unreachable)?;
            if !response.status().is_success() {
                return Err(PkgError::Unreachable(format!(
                    "cannot fetch {url}: {}",
                    response.status()
                )));
            }
            Ok(response.bytes().await.map_err(unreachable)?.to_vec())
        })
    }
}

/// `file://` URLs and plain paths read from the file system; everything else through `http`.
pub struct Fetcher<F: Fetch> {
    /// The HTTP(S) side.
    pub http: F,
}

impl<F: Fetch> Fetch for Fetcher<F> {
    fn get(&self, url: &str) -> Result<Vec<u8>> {
        match url
            .strip_prefix("file://")
            .or_else(|| url.strip_prefix('/').map(|_| url))
        {
            Some(path) => std::fs::read(path)
                .map_err(|e| PkgError::Unreachable(format!("cannot read {url}: {e}"))),
            None => self.http.get(url),
        }
    }
}

/// The trusted keys of a root: every `*.pub` file of `/etc/apk/keys` (name, PEM).
pub fn read_keys(root: &Path) -> Result<Vec<(String, String)>> {
    let dir = root.join(KEYS);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PkgError::Io(format!("cannot read {}: {e}", dir.display()))),
    };
    let mut keys = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pub") {
            let pem = std::fs::read_to_string(e.path())
                .map_err(|err| PkgError::Io(format!("cannot read key {name}: {err}")))?;
            keys.push((name, pem));
        }
    }
    keys.sort();
    Ok(keys)
}

/// Fetches every repository's index, verifies it with `keys`, caches it under `cache` (the old
/// cached copy stays until a verified new one replaces it), and returns each repository's
/// packages (repository order kept: earlier repositories first).
pub fn update(
    repos: &[String],
    arch: &str,
    keys: &[(String, String)],
    fetch: &dyn Fetch,
    cache: &Path,
) -> Result<Vec<(String, Vec<Package>)>> {
    std::fs::create_dir_all(cache)
        .map_err(|e| PkgError::Io(format!("cannot create {}: {e}", cache.display())))?;
    let mut out = Vec::new();
    for repo in repos {
        let url = index_url(repo, arch);
        let bytes = fetch.get(&url)?;
        let packages = crate::apk::read_index(&bytes, keys).map_err(|e| match e {
            PkgError::Untrusted(why) => PkgError::Untrusted(format!("{url}: {why}")),
            PkgError::BadPackage(why) => PkgError::BadPackage(format!("{url}: {why}")),
            e => e,
        })?;
        let file = cache_file(cache, repo, arch);
        let tmp = file.with_extension("new");
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|e| PkgError::Io(format!("cannot cache {}: {e}", file.display())))?;
        out.push((repo.clone(), packages));
    }
    Ok(out)
}

/// The cached indexes of `repos` (verified again with `keys`); a repository without a cached
/// index is an error naming `box pkg update`.
pub fn cached(
    repos: &[String],
    arch: &str,
    keys: &[(String, String)],
    cache: &Path,
) -> Result<Vec<(String, Vec<Package>)>> {
    repos
        .iter()
        .map(|repo| {
            let file = cache_file(cache, repo, arch);
            let bytes = std::fs::read(&file).map_err(|_| {
                PkgError::Unreachable(format!(
                    "no index of {repo} yet (box pkg update fetches it)"
                ))
            })?;
            Ok((repo.clone(), crate::apk::read_index(&bytes, keys)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{key, signed_index as index};
    use std::collections::HashMap;

    struct Map(HashMap<String, Vec<u8>>);

    impl Fetch for Map {
        fn get(&self, url: &str) -> Result<Vec<u8>> {
            self.0
                .get(url)
                .cloned()
                .ok_or_else(|| PkgError::Unreachable(format!("{url}: 404")))
        }
    }

    #[test]
    fn repositories_file() {
        let text = "# comment\nhttps://a.example/alpine/v3.19/main/\n\n@edge https://b.example/edge\n/srv/local\n";
        assert_eq!(
            parse_repositories(text),
            [
                "https://a.example/alpine/v3.19/main",
                "https://b.example/edge",
                "/srv/local"
            ]
        );
        assert_eq!(
            index_url("http://127.0.0.1:8080/main", "x86_64"),
            "http://127.0.0.1:8080/main/x86_64/APKINDEX.tar.gz"
        );
    }

    #[test]
    fn update_verifies_then_caches_and_keeps_the_old_copy_on_failure() {
        let (private, keys) = key();
        let cache = std::env::temp_dir().join(format!("box-pkg-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let repo = "http://repo.test/main".to_string();
        let repos = std::slice::from_ref(&repo);
        let good = index(&private, "P:hello\nV:1.0-r0\n\n");
        let mut files = HashMap::new();
        files.insert(index_url(&repo, "x86_64"), good.clone());
        let got = update(repos, "x86_64", &keys, &Map(files), &cache).unwrap();
        assert_eq!(got[0].1[0].name, "hello");
        assert_eq!(
            cached(repos, "x86_64", &keys, &cache).unwrap()[0].1.len(),
            1
        );

        // A cut download, an index signed by another key, an unreachable repository: errors,
        // and the cached index is still the good one.
        let (other, _) = key();
        for bytes in [
            good[..good.len() / 2].to_vec(),
            index(&other, "P:evil\nV:1\n\n"),
        ] {
            let mut files = HashMap::new();
            files.insert(index_url(&repo, "x86_64"), bytes);
            assert!(update(repos, "x86_64", &keys, &Map(files), &cache).is_err());
        }
        let e = update(repos, "x86_64", &keys, &Map(HashMap::new()), &cache).unwrap_err();
        assert!(matches!(e, PkgError::Unreachable(_)), "{e}");
        let still = cached(repos, "x86_64", &keys, &cache).unwrap();
        assert_eq!(still[0].1[0].name, "hello");
        let e = cached(&["http://other".into()], "x86_64", &keys, &cache).unwrap_err();
        assert!(e.to_string().contains("box pkg update"), "{e}");
        let _ = std::fs::remove_dir_all(&cache);
    }

    #[test]
    fn keys_and_local_files() {
        let root = std::env::temp_dir().join(format!("box-pkg-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(KEYS)).unwrap();
        std::fs::write(root.join(KEYS).join("a.rsa.pub"), "PEM").unwrap();
        std::fs::write(root.join(KEYS).join("README"), "not a key").unwrap();
        assert_eq!(
            read_keys(&root).unwrap(),
            [("a.rsa.pub".to_string(), "PEM".to_string())]
        );
        let local = root.join("file.bin");
        std::fs::write(&local, b"bytes").unwrap();
        let f = Fetcher {
            http: Map(HashMap::new()),
        };
        assert_eq!(
            f.get(&format!("file://{}", local.display())).unwrap(),
            b"bytes"
        );
        assert_eq!(f.get(local.to_str().unwrap()).unwrap(), b"bytes");
        assert!(f.get("http://nowhere/x").is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
