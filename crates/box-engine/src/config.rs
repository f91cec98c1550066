//! The engine's settings: `$BOX_CONFIG`, else `/etc/box/box.toml` (root) or
//! `$XDG_CONFIG_HOME/box/box.toml` (rootless). Every key is optional:
//!
//! ```toml
//! [network]
//! default = "bridge"        # the mode of boxes started without --network
//! bridge = "box0"           # the default bridge network's interface
//! subnet = "10.88.0.0/16"   # and its subnet
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{EngineError, Result};

/// The environment variable naming the settings file.
pub const CONFIG_ENV: &str = "BOX_CONFIG";

/// The engine's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Networking.
    pub network: NetworkConfig,
}

/// `[network]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The mode for boxes started without `--network` (none: `bridge` as root, `pasta` (or
    /// `slirp4netns` where passt is missing) rootless).
    pub default: Option<String>,
    /// The default bridge network's interface.
    pub bridge: String,
    /// The default bridge network's subnet.
    pub subnet: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            default: None,
            bridge: "box0".into(),
            subnet: "10.88.0.0/16".into(),
        }
    }
}

/// The settings file this process reads.
pub fn config_path(rootless: bool) -> PathBuf {
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if !rootless {
        return PathBuf::from("/etc/box/box.toml");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    base.join("box/box.toml")
}

/// Reads the settings (defaults when the file does not exist).
pub fn load(rootless: bool) -> Result<Config> {
    let path = config_path(rootless);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            EngineError::invalid(format!(
                "bad settings file {}: {}",
                path.display(),
                e.message()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(EngineError::io_path("read", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_network_settings_and_rejects_unknown_keys() {
        let c: Config =
            toml::from_str("[network]\ndefault = \"none\"\nsubnet = \"10.9.0.0/24\"").unwrap();
        assert_eq!(c.network.default.as_deref(), Some("none"));
        assert_eq!(c.network.bridge, "box0");
        assert_eq!(c.network.subnet, "10.9.0.0/24");
        assert!(toml::from_str::<Config>("[network]\nbrige = \"x\"").is_err());
        assert!(toml::from_str::<Config>("")
            .unwrap()
            .network
            .default
            .is_none());
    }
}
