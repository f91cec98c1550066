//! Registry credentials: Box's own `auth.json` (written by `box login`) and read-only lookup in
//! Docker's `config.json`.
//!
//! Box's file is `$BOX_AUTH_FILE` when set, else `/etc/box/auth.json` for root and
//! `$XDG_CONFIG_HOME/box/auth.json` (`~/.config/box/auth.json`) otherwise. It uses Docker's format
//! (`{"auths": {"HOST": {"auth": "base64(user:pass)"}}}`) and is written with mode 0600 through a
//! temporary file and a rename, so a crash never leaves it half-written.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::RegistryError;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// Keys Box does not know (Docker's credHelpers, …) are kept as they were.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

impl Credentials {
    /// Makes credentials from a user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization: Basic …` value for these credentials.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", self.encode())
    }

    fn encode(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password))
    }

    fn decode(auth: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some(Credentials::new(user, pass))
    }

    /// Box's credentials file: `$BOX_AUTH_FILE`, else `/etc/box/auth.json` as root, else
    /// `$XDG_CONFIG_HOME/box/auth.json` (default `~/.config/box/auth.json`) — also for uid 0 of
    /// a user namespace (rootless `box` runs there), which is the user, not root.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("BOX_AUTH_FILE") {
            return PathBuf::from(p);
        }
        if !box_runtime::idmap::running_rootless() {
            return PathBuf::from("/etc/box/auth.json");
        }
        config_home().join("box").join("auth.json")
    }

    /// Docker's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn docker_config_path() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(d).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
    }

    /// Saves credentials for `registry` in Box's credentials file (`box login`).
    pub fn store(registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
        Self::store_in(&Self::default_path(), registry, creds)
    }

    /// Removes the credentials for `registry` from Box's file (`box logout`); returns whether
    /// there were any.
    pub fn remove(registry: &str) -> Result<bool, RegistryError> {
        Self::remove_in(&Self::default_path(), registry)
    }

    /// Finds credentials for `registry`: Box's file first, then Docker's `config.json`.
    pub fn lookup(registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = Self::lookup_in(&Self::default_path(), registry)? {
            return Ok(Some(c));
        }
        match Self::docker_config_path() {
            Some(p) => Self::lookup_in(&p, registry),
            None => Ok(None),
        }
    }

    /// [`Credentials::store`] on an explicit file.
    pub fn store_in(path: &Path, registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
        let mut file = read_auth_file(path)?.unwrap_or_default();
        let entry = file.auths.entry(normalize_key(registry)).or_default();
        entry.auth = Some(creds.encode());
        write_auth_file(path, &file)
    }

    /// [`Credentials::remove`] on an explicit file.
    pub fn remove_in(path: &Path, registry: &str) -> Result<bool, RegistryError> {
        let Some(mut file) = read_auth_file(path)? else {
            return Ok(false);
        };
        let key = normalize_key(registry);
        let before = file.auths.len();
        file.auths.retain(|k, _| normalize_key(k) != key);
        if file.auths.len() == before {
            return Ok(false);
        }
        write_auth_file(path, &file)?;
        Ok(true)
    }

    /// [`Credentials::lookup`] in one explicit file (Box or Docker format).
    pub fn lookup_in(path: &Path, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let Some(file) = read_auth_file(path)? else {
            return Ok(None);
        };
        let key = normalize_key(registry);
        for (k, entry) in &file.auths {
            if normalize_key(k) != key {
                continue;
            }
            if let Some(auth) = &entry.auth {
                return match Credentials::decode(auth) {
                    Some(c) => Ok(Some(c)),
                    None => Err(RegistryError::Credentials {
                        path: path.to_path_buf(),
                        reason: format!("the entry for {k} is not base64 of user:password"),
                    }),
                };
            }
        }
        Ok(None)
    }
}

fn config_home() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".config")
}

/// Keys are registry hosts; Docker Hub is stored by Docker as `https://index.docker.io/v1/`.
fn normalize_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_ascii_lowercase(),
    }
}

fn read_auth_file(path: &Path) -> Result<Option<AuthFile>, RegistryError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RegistryError::Credentials {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    if text.trim().is_empty() {
        return Ok(Some(AuthFile::default()));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| RegistryError::Credentials {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })
}

fn write_auth_file(path: &Path, file: &AuthFile) -> Result<(), RegistryError> {
    let err = |e: std::io::Error| RegistryError::Credentials {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let text = serde_json::to_vec_pretty(file).map_err(|e| RegistryError::Credentials {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tmp = dir.join(format!(".auth.json.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("box-cred-test-{}", std::process::id()));
        let path = dir.join("auth.json");
        let creds = Credentials::new("alice", "s3cr:et");
        Credentials::store_in(&path, "localhost:5000", &creds).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            Credentials::lookup_in(&path, "localhost:5000").unwrap(),
            Some(creds)
        );
        assert_eq!(Credentials::lookup_in(&path, "other:5000").unwrap(), None);
        assert!(Credentials::remove_in(&path, "localhost:5000").unwrap());
        assert!(!Credentials::remove_in(&path, "localhost:5000").unwrap());
        assert_eq!(
            Credentials::lookup_in(&path, "localhost:5000").unwrap(),
            None
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn docker_config_hub_key_matches_docker_io() {
        let dir = std::env::temp_dir().join(format!("box-cred-docker-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:pw");
        fs::write(
            &path,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}}}},"credsStore":"x"}}"#),
        )
        .unwrap();
        let got = Credentials::lookup_in(&path, "docker.io").unwrap().unwrap();
        assert_eq!(got.username, "bob");
        assert_eq!(got.password, "pw");
        fs::remove_dir_all(&dir).unwrap();
    }
}
