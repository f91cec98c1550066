//! `BoxSpec`: what the user asked for a box (Docker's options, stored as JSON in the box's
//! record), and the parsers of the docker-style flags that make one (`-v`, `--tmpfs`,
//! `--memory`, `--restart`, `--cpus`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Everything a box is made from, as the user gave it. Defaults are Docker's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BoxSpec {
    /// The image (name, id or short id); ignored when `rootfs` is given.
    pub image: String,
    /// The box's name; one is generated when `None`.
    pub name: Option<String>,
    /// The command (Docker's Cmd); the image's when `None`.
    pub cmd: Option<Vec<String>>,
    /// The entrypoint; the image's when `None`. `Some(vec![])` clears the image's.
    pub entrypoint: Option<Vec<String>>,
    /// Environment, `K=V` (or `K`, taken from nowhere: dropped).
    pub env: Vec<String>,
    /// Working directory; the image's, else `/`.
    pub workdir: Option<String>,
    /// `uid[:gid]` or `name[:group]` (names resolved in the box's /etc/passwd and /etc/group).
    pub user: Option<String>,
    /// Hostname; the first 12 hex digits of the id when `None`.
    pub hostname: Option<String>,
    /// Allocate a pty (`-t`).
    pub tty: bool,
    /// Keep stdin open (`-i`).
    pub stdin_open: bool,
    /// Mounts (`-v`, `--mount`, `--tmpfs`).
    pub mounts: Vec<MountSpec>,
    /// Read-only root file system.
    pub read_only: bool,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Memory + swap limit in bytes (`--memory-swap`); equal to `memory` when `None`.
    pub memory_swap: Option<i64>,
    /// CPUs (`--cpus 1.5`): becomes quota/period.
    pub cpus: Option<f64>,
    /// Relative CPU weight (`--cpu-shares`).
    pub cpu_shares: Option<u64>,
    /// Most processes the box may have.
    pub pids_limit: Option<i64>,
    /// Capabilities added to Docker's default 14 (`ALL` for all).
    pub cap_add: Vec<String>,
    /// Capabilities dropped (`ALL` for all).
    pub cap_drop: Vec<String>,
    /// All capabilities, no seccomp, no masked paths, all devices visible in /dev.
    pub privileged: bool,
    /// `seccomp=unconfined`, `seccomp=/path/profile.json`, `no-new-privileges[=true|false]`.
    pub security_opt: Vec<String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// How the box is networked (`--network`). Records from before networks read as `none`.
    #[serde(default = "network_of_old_records")]
    pub network: NetworkMode,
    /// Published ports (`-p`); host ports left 0 are chosen when the box is made.
    pub ports: Vec<box_net::ports::PortMapping>,
    /// Publish every port the image exposes on a free host port (`-P`).
    pub publish_all: bool,
    /// Remove the box when it exits (`--rm`).
    pub auto_remove: bool,
    /// Run a tiny init as pid 1 that reaps zombies and forwards signals (`--init`).
    pub init: bool,
    /// Parent cgroup (`--cgroup-parent`): the box's cgroup is `<cgroup_parent>/<id>`.
    pub cgroup_parent: Option<String>,
    /// Run this directory as the root file system instead of an image (`--rootfs DIR`).
    pub rootfs: Option<PathBuf>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
}

/// What kind of mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path bound into the box.
    #[default]
    Bind,
    /// A named volume.
    Volume,
    /// A tmpfs.
    Tmpfs,
}

/// One mount of a box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MountSpec {
    /// bind, volume or tmpfs.
    pub kind: MountKind,
    /// Host path (bind) or volume name (volume); empty for tmpfs or an anonymous volume.
    pub source: String,
    /// Absolute path inside the box.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// Further mount options (`size=64m`, `mode=1777`, `rprivate`, `z`…).
    pub options: Vec<String>,
}

/// How a box is networked (`--network`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "box")]
pub enum NetworkMode {
    /// A network namespace of its own with only the loopback interface.
    None,
    /// The host's network namespace (and its /etc/hosts, /etc/resolv.conf and hostname).
    Host,
    /// The network namespace of another box (by name or id), which must be running when this
    /// one starts.
    Container(String),
    /// A bridge network by name: `bridge` (the default network) or one made by
    /// `box network create` (root only).
    Bridge(String),
    /// User-mode networking through pasta (rootless default).
    Pasta,
    /// User-mode networking through slirp4netns.
    Slirp4netns,
    /// Not chosen: [`crate::engine::Engine::create`] puts the configured default here.
    #[default]
    Default,
}

impl NetworkMode {
    /// The bridge network the box is on first, if any.
    pub fn bridge_network(&self) -> Option<&str> {
        match self {
            NetworkMode::Bridge(name) => Some(name),
            _ => None,
        }
    }
}

impl FromStr for NetworkMode {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            "" | "default" => Ok(NetworkMode::Default),
            "pasta" => Ok(NetworkMode::Pasta),
            "slirp4netns" => Ok(NetworkMode::Slirp4netns),
            other => match other.strip_prefix("container:") {
                Some(name) if !name.is_empty() => Ok(NetworkMode::Container(name.to_string())),
                Some(_) => Err(EngineError::invalid(
                    "--network container: needs a box name or id (container:NAME)",
                )),
                None if valid_network_name(other) => Ok(NetworkMode::Bridge(other.to_string())),
                None => Err(EngineError::invalid(format!(
                    "network {other:?} is neither a mode (none, host, bridge, pasta, \
                     slirp4netns, container:NAME) nor a network name (letters, digits, _ . -)"
                ))),
            },
        }
    }
}

fn network_of_old_records() -> NetworkMode {
    NetworkMode::None
}

/// Whether `name` can name a network: docker's rule (alphanumeric first, then `[A-Za-z0-9_.-]`).
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 64
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::Container(name) => write!(f, "container:{name}"),
            NetworkMode::Bridge(name) => f.write_str(name),
            NetworkMode::Pasta => f.write_str("pasta"),
            NetworkMode::Slirp4netns => f.write_str("slirp4netns"),
            NetworkMode::Default => f.write_str("default"),
        }
    }
}

/// Docker's restart policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy", content = "max_retries")]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart when it exits non-zero, at most N times (unlimited when `None`).
    OnFailure(Option<u32>),
    /// Always restart (also when the engine comes back up).
    Always,
    /// Like `always`, but not after the user stopped it.
    UnlessStopped,
}

impl FromStr for RestartPolicy {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            EngineError::invalid(format!(
                "invalid restart policy {s:?} (use no, on-failure[:N], always or unless-stopped)"
            ))
        };
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        match (name, count) {
            ("no" | "", None) => Ok(RestartPolicy::No),
            ("always", None) => Ok(RestartPolicy::Always),
            ("unless-stopped", None) => Ok(RestartPolicy::UnlessStopped),
            ("on-failure", None) => Ok(RestartPolicy::OnFailure(None)),
            ("on-failure", Some(c)) => {
                let n: u32 = c.parse().map_err(|_| {
                    EngineError::invalid(format!(
                        "invalid restart policy {s:?}: the retry count must be a number \
                         (e.g. on-failure:3)"
                    ))
                })?;
                Ok(RestartPolicy::OnFailure(Some(n)))
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure(None) => f.write_str("on-failure"),
            RestartPolicy::OnFailure(Some(n)) => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

/// What `security_opt` asks for seccomp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompChoice {
    /// The default profile.
    Default,
    /// No seccomp filter.
    Unconfined,
    /// A profile (OCI `LinuxSeccomp` JSON) from this file.
    Profile(PathBuf),
}

impl BoxSpec {
    /// A spec for `image` running `cmd` (the image's command when empty), defaults elsewhere.
    pub fn new(image: impl Into<String>, cmd: &[&str]) -> BoxSpec {
        BoxSpec {
            image: image.into(),
            cmd: if cmd.is_empty() {
                None
            } else {
                Some(cmd.iter().map(|s| (*s).to_string()).collect())
            },
            ..BoxSpec::default()
        }
    }

    /// The seccomp choice from `security_opt` (the last one given wins).
    pub fn seccomp(&self) -> Result<SeccompChoice> {
        let mut choice = SeccompChoice::Default;
        for opt in &self.security_opt {
            if let Some(v) = opt
                .strip_prefix("seccomp=")
                .or_else(|| opt.strip_prefix("seccomp:"))
            {
                choice =
                    match v {
                        "unconfined" => SeccompChoice::Unconfined,
                        "" => return Err(EngineError::invalid(
                            "--security-opt seccomp= needs a value (unconfined or a profile file)",
                        )),
                        path => SeccompChoice::Profile(PathBuf::from(path)),
                    };
            }
        }
        Ok(choice)
    }

    /// Whether `security_opt` asks for no_new_privileges.
    pub fn no_new_privileges(&self) -> Result<bool> {
        let mut nnp = false;
        for opt in &self.security_opt {
            let o = opt.replace(':', "=");
            match o.as_str() {
                "no-new-privileges" | "no-new-privileges=true" => nnp = true,
                "no-new-privileges=false" => nnp = false,
                s if s.starts_with("seccomp=") => {}
                s if s.starts_with("label=") || s.starts_with("apparmor=") => {}
                _ => {
                    return Err(EngineError::invalid(format!(
                        "invalid --security-opt {opt:?} (supported: seccomp=unconfined, \
                         seccomp=PROFILE.json, no-new-privileges)"
                    )))
                }
            }
        }
        Ok(nnp)
    }

    /// Checks what can be checked without an image: the name, mounts, limits, options.
    pub fn validate(&self) -> Result<()> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        for m in &self.mounts {
            if !m.target.starts_with('/') {
                return Err(EngineError::invalid(format!(
                    "invalid mount target {:?}: it must be an absolute path inside the box",
                    m.target
                )));
            }
        }
        if let Some(c) = self.cpus {
            if !c.is_finite() || c <= 0.0 {
                return Err(EngineError::invalid(format!(
                    "invalid --cpus {c}: it must be a positive number such as 0.5 or 2"
                )));
            }
        }
        if let Some(m) = self.memory {
            if m < 6 * 1024 * 1024 {
                return Err(EngineError::invalid(format!(
                    "invalid --memory {m}: the minimum is 6m"
                )));
            }
        }
        self.seccomp()?;
        self.no_new_privileges()?;
        if self.rootfs.is_none() && self.image.is_empty() {
            return Err(EngineError::invalid(
                "no image given (box run IMAGE [CMD…], or --rootfs DIR)",
            ));
        }
        Ok(())
    }
}

/// Checks a box name: Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters, and not
/// 64 hex digits (which would read as an id).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| EngineError::InvalidName {
        name: name.to_string(),
        why: why.to_string(),
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(bad("it is empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(bad("it must start with a letter or digit"))
        }
        _ => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(bad("only letters, digits, '_', '.' and '-' are allowed"));
    }
    if name.len() > 128 {
        return Err(bad("it is longer than 128 characters"));
    }
    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("64 hex digits would read as a box id"));
    }
    Ok(())
}

/// Parses `-v SRC:DST[:OPTS]` (OPTS: `ro`, `rw`, and others kept as mount options). A SRC that
/// is an absolute or relative path (`/x`, `./x`, `~`-free) is a bind mount; a bare name is a
/// named volume; a lone `DST` is an anonymous volume.
pub fn parse_volume(s: &str) -> Result<MountSpec> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => {
            return Err(EngineError::invalid(format!(
                "invalid volume {s:?} (use -v SRC:DST[:ro])"
            )))
        }
    };
    if !target.starts_with('/') {
        return Err(EngineError::invalid(format!(
            "invalid volume {s:?}: the destination {target:?} must be an absolute path"
        )));
    }
    let mut m = MountSpec {
        kind: if source.is_empty() {
            MountKind::Volume
        } else if source.starts_with('/') || source.starts_with('.') {
            MountKind::Bind
        } else {
            MountKind::Volume
        },
        source: source.to_string(),
        target: target.to_string(),
        readonly: false,
        options: Vec::new(),
    };
    if m.kind == MountKind::Bind && !source.starts_with('/') {
        let abs = std::env::current_dir()
            .map_err(|e| EngineError::io("cannot read the current directory", e))?
            .join(source);
        m.source = abs.to_string_lossy().into_owned();
    }
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => m.readonly = true,
            "rw" => m.readonly = false,
            other => m.options.push(other.to_string()),
        }
    }
    Ok(m)
}

/// Parses Docker's `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]
/// [,bind-propagation=rshared][,tmpfs-size=64m][,tmpfs-mode=1777][,volume-nocopy]`
/// (`src`/`dst`/`destination` and `ro` are accepted too).
pub fn parse_mount(s: &str) -> Result<MountSpec> {
    let bad = |why: String| EngineError::invalid(format!("invalid --mount {s:?}: {why}"));
    let mut m = MountSpec {
        kind: MountKind::Volume,
        ..MountSpec::default()
    };
    let mut target = None;
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field.trim(), None),
        };
        let flag = |v: Option<&str>| -> Result<bool> {
            match v {
                None | Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(other) => Err(bad(format!("{key}={other} must be true or false"))),
            }
        };
        match (key, value) {
            ("type", Some("bind")) => m.kind = MountKind::Bind,
            ("type", Some("volume")) => m.kind = MountKind::Volume,
            ("type", Some("tmpfs")) => m.kind = MountKind::Tmpfs,
            ("type", other) => {
                return Err(bad(format!(
                    "type {} is not supported (use bind, volume or tmpfs)",
                    other.unwrap_or("")
                )))
            }
            ("source" | "src", Some(v)) => m.source = v.to_string(),
            ("target" | "destination" | "dst", Some(v)) => target = Some(v.to_string()),
            ("readonly" | "ro", v) => m.readonly = flag(v)?,
            ("bind-propagation", Some(v)) => match v {
                "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                    m.options.push(v.to_string())
                }
                other => return Err(bad(format!("unknown bind-propagation {other:?}"))),
            },
            ("tmpfs-size", Some(v)) => m.options.push(format!("size={}", parse_size(v)?)),
            ("tmpfs-mode", Some(v)) => m.options.push(format!("mode={v}")),
            ("volume-nocopy", v) => {
                if flag(v)? {
                    m.options.push("nocopy".into());
                }
            }
            ("consistency" | "bind-nonrecursive" | "volume-driver" | "volume-opt", _) => {}
            (k, _) => return Err(bad(format!("unknown field {k:?}"))),
        }
    }
    let target = target.ok_or_else(|| bad("it needs target=/path/in/box".into()))?;
    if !target.starts_with('/') {
        return Err(bad(format!("target {target:?} must be an absolute path")));
    }
    m.target = target;
    match m.kind {
        MountKind::Bind if m.source.is_empty() => {
            return Err(bad("a bind mount needs source=/host/path".into()))
        }
        MountKind::Bind if !m.source.starts_with('/') => {
            let abs = std::env::current_dir()
                .map_err(|e| EngineError::io("cannot read the current directory", e))?
                .join(&m.source);
            m.source = abs.to_string_lossy().into_owned();
        }
        MountKind::Tmpfs if !m.source.is_empty() => {
            return Err(bad("a tmpfs mount takes no source".into()))
        }
        _ => {}
    }
    Ok(m)
}

/// Parses `--tmpfs /x[:opts]` (opts comma-separated: `size=64m,mode=1777,ro,…`).
pub fn parse_tmpfs(s: &str) -> Result<MountSpec> {
    let (target, opts) = s.split_once(':').unwrap_or((s, ""));
    if !target.starts_with('/') {
        return Err(EngineError::invalid(format!(
            "invalid --tmpfs {s:?}: {target:?} must be an absolute path"
        )));
    }
    let mut m = MountSpec {
        kind: MountKind::Tmpfs,
        source: String::new(),
        target: target.to_string(),
        readonly: false,
        options: Vec::new(),
    };
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => m.readonly = true,
            "rw" => m.readonly = false,
            other => m.options.push(other.to_string()),
        }
    }
    Ok(m)
}

/// Parses a size such as `100m`, `1g`, `512k`, `1.5g`, `4096` (bytes; `b`, `k`, `m`, `g`, `t`,
/// optionally followed by `b`/`ib`, case-insensitive).
pub fn parse_size(s: &str) -> Result<i64> {
    let bad = || {
        EngineError::invalid(format!(
            "invalid size {s:?} (use a number with an optional unit: 512k, 100m, 1g)"
        ))
    };
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// Parses `--cpus 1.5`.
pub fn parse_cpus(s: &str) -> Result<f64> {
    match s.trim().parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(c),
        _ => Err(EngineError::invalid(format!(
            "invalid --cpus {s:?}: use a positive number such as 0.5 or 2"
        ))),
    }
}

/// `--cpus` as CFS quota and period (period 100 ms, Docker's).
pub fn cpus_to_quota(cpus: f64) -> (i64, u64) {
    let period: u64 = 100_000;
    let quota = (cpus * period as f64).round() as i64;
    (quota.max(1000), period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_parse_and_print() {
        for (text, mode) in [
            ("none", NetworkMode::None),
            ("host", NetworkMode::Host),
            ("container:web", NetworkMode::Container("web".into())),
            ("bridge", NetworkMode::Bridge("bridge".into())),
            ("my-net.1", NetworkMode::Bridge("my-net.1".into())),
            ("pasta", NetworkMode::Pasta),
            ("slirp4netns", NetworkMode::Slirp4netns),
            ("default", NetworkMode::Default),
        ] {
            let parsed: NetworkMode = text.parse().unwrap();
            assert_eq!(parsed, mode);
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!("".parse::<NetworkMode>().unwrap(), NetworkMode::Default);
        for bad in ["container:", "-net", "a/b", "two words"] {
            assert!(bad.parse::<NetworkMode>().is_err(), "{bad}");
        }
        // Records written before the field existed read as `none`.
        let old: BoxSpec = serde_json::from_str(r#"{"image":"host"}"#).unwrap();
        assert_eq!(old.network, NetworkMode::None);
    }

    #[test]
    fn volume_bind_ro() {
        let m = parse_volume("/src:/dst:ro").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert_eq!(m.source, "/src");
        assert_eq!(m.target, "/dst");
        assert!(m.readonly);
        let m = parse_volume("/src:/dst").unwrap();
        assert!(!m.readonly);
        let m = parse_volume("/src:/dst:rw,rprivate").unwrap();
        assert_eq!(m.options, vec!["rprivate"]);
    }

    #[test]
    fn volume_named_and_anonymous() {
        let m = parse_volume("data:/var/lib/x").unwrap();
        assert_eq!(m.kind, MountKind::Volume);
        assert_eq!(m.source, "data");
        let m = parse_volume("/only").unwrap();
        assert_eq!(m.kind, MountKind::Volume);
        assert_eq!(m.source, "");
    }

    #[test]
    fn volume_relative_bind_becomes_absolute() {
        let m = parse_volume("./here:/x").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert!(m.source.starts_with('/'), "{}", m.source);
    }

    #[test]
    fn volume_rejects_relative_target_and_extra_fields() {
        assert!(parse_volume("/a:b").is_err());
        assert!(parse_volume("/a:/b:ro:x").is_err());
    }

    #[test]
    fn mount_flag_forms() {
        let m = parse_mount("type=bind,source=/src,target=/dst,readonly,bind-propagation=rshared")
            .unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert_eq!(m.source, "/src");
        assert_eq!(m.target, "/dst");
        assert!(m.readonly);
        assert_eq!(m.options, vec!["rshared"]);
        let m = parse_mount("type=volume,src=data,dst=/d").unwrap();
        assert_eq!(m.kind, MountKind::Volume);
        assert_eq!(m.source, "data");
        assert!(!m.readonly);
        let m = parse_mount("target=/anon").unwrap();
        assert_eq!(m.kind, MountKind::Volume);
        assert!(m.source.is_empty());
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=1m").unwrap();
        assert_eq!(m.options, vec!["size=1048576"]);
        assert!(parse_mount("type=bind,target=/x").is_err());
        assert!(parse_mount("type=volume,source=x").is_err());
        assert!(parse_mount("type=nfs,target=/x").is_err());
        assert!(parse_mount("type=bind,source=/a,target=/b,bind-propagation=odd").is_err());
        assert!(parse_mount("type=bind,source=/a,target=/b,readonly=maybe").is_err());
    }

    #[test]
    fn tmpfs_with_options() {
        let m = parse_tmpfs("/run:size=64m,mode=1777").unwrap();
        assert_eq!(m.kind, MountKind::Tmpfs);
        assert_eq!(m.target, "/run");
        assert_eq!(m.options, vec!["size=64m", "mode=1777"]);
        let m = parse_tmpfs("/x").unwrap();
        assert!(m.options.is_empty());
        assert!(parse_tmpfs("x").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100m").unwrap(), 100 * 1024 * 1024);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512k").unwrap(), 512 * 1024);
        assert_eq!(parse_size("512kb").unwrap(), 512 * 1024);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4096b").unwrap(), 4096);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert!(parse_size("abc").is_err());
        assert!(parse_size("10x").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn restart_policies_round_trip() {
        for s in [
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:3",
        ] {
            let p: RestartPolicy = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            "on-failure:3".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::OnFailure(Some(3))
        );
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        assert!("always:3".parse::<RestartPolicy>().is_err());
    }

    #[test]
    fn cpus_become_quota() {
        assert_eq!(cpus_to_quota(1.5), (150_000, 100_000));
        assert_eq!(cpus_to_quota(0.5), (50_000, 100_000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").is_err());
        assert_eq!(parse_cpus("2").unwrap(), 2.0);
    }

    #[test]
    fn security_opts() {
        let mut s = BoxSpec::new("x", &[]);
        assert_eq!(s.seccomp().unwrap(), SeccompChoice::Default);
        assert!(!s.no_new_privileges().unwrap());
        s.security_opt = vec!["seccomp=unconfined".into(), "no-new-privileges".into()];
        assert_eq!(s.seccomp().unwrap(), SeccompChoice::Unconfined);
        assert!(s.no_new_privileges().unwrap());
        s.security_opt = vec!["seccomp=/p.json".into()];
        assert_eq!(
            s.seccomp().unwrap(),
            SeccompChoice::Profile(PathBuf::from("/p.json"))
        );
        s.security_opt = vec!["bogus".into()];
        assert!(s.no_new_privileges().is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("web_1.a-b").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn spec_json_round_trip_with_defaults() {
        let mut s = BoxSpec::new("busybox", &["echo", "hi"]);
        s.restart = RestartPolicy::OnFailure(Some(2));
        s.mounts.push(parse_tmpfs("/t").unwrap());
        let json = serde_json::to_string(&s).unwrap();
        let back: BoxSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let minimal: BoxSpec = serde_json::from_str(r#"{"image":"x"}"#).unwrap();
        assert_eq!(minimal.restart, RestartPolicy::No);
    }
}
