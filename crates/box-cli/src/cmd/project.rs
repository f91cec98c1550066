//! `box.toml`, the per-project file in the current directory, and `box up` / `box down` /
//! `box run` (no image) over it:
//!
//! ```toml
//! image = "busybox"
//! command = ["sh", "-c", "echo hi"]   # or one string, split like a shell would
//! name = "web"                        # default: the directory's name
//! env = { GREETING = "hello" }        # or ["GREETING=hello"]
//! mounts = ["./data:/data", "cache:/cache:ro"]
//! ports = ["8080:80"]                 # published ports, as -p takes them
//! memory = "100m"
//! cpus = 2
//! pids_limit = 100
//! workdir = "/srv"
//! user = "1000:1000"
//! restart = "on-failure:3"
//! network = "host"                    # as --network (default: bridge as root, pasta rootless)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use box_engine::engine::Engine;
use box_engine::spec::{self, BoxSpec, NetworkMode, RestartPolicy};
use box_engine::supervisor;
use serde::Deserialize;

/// The file's name.
pub const FILE_NAME: &str = "box.toml";

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One string (a command is split like a shell would, without running one).
    One(String),
    /// A list.
    List(Vec<String>),
}

/// Environment as a table or as `K=V` strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum EnvSpec {
    /// `{ K = "v", N = 1 }`.
    Table(BTreeMap<String, toml::Value>),
    /// `["K=v"]`.
    List(Vec<String>),
}

/// A port: `"8080:80"` or `80`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// `"8080:80/tcp"`.
    Text(String),
    /// `80`.
    Number(u16),
}

/// `box.toml` as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    /// The image.
    pub image: Option<String>,
    /// The command.
    pub command: Option<StringOrList>,
    /// The entrypoint.
    pub entrypoint: Option<StringOrList>,
    /// The box's name.
    pub name: Option<String>,
    /// Environment.
    pub env: Option<EnvSpec>,
    /// `src:dst[:ro]` mounts (bind for paths, volume for names).
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Published ports (`-p` forms, or a bare box port).
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Memory limit (`"100m"` or bytes).
    pub memory: Option<toml::Value>,
    /// CPUs (`2`, `0.5` or `"1.5"`).
    pub cpus: Option<toml::Value>,
    /// Most processes.
    pub pids_limit: Option<i64>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Restart policy.
    pub restart: Option<String>,
    /// Network mode or network name, as `--network` takes it.
    pub network: Option<String>,
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<ProjectFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
}

/// `./box.toml` when there is one.
fn find() -> Option<PathBuf> {
    let p = PathBuf::from(FILE_NAME);
    p.is_file().then_some(p)
}

/// Splits a command line on blanks, honouring '…', "…" and backslashes (no shell runs).
pub fn split_command(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                has = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => bail!("unterminated ' in command {s:?}"),
                    }
                }
            }
            '"' => {
                has = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x) => cur.push(x),
                            None => bail!("unterminated \" in command {s:?}"),
                        },
                        Some(x) => cur.push(x),
                        None => bail!("unterminated \" in command {s:?}"),
                    }
                }
            }
            '\\' => {
                has = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                has = true;
                cur.push(c);
            }
        }
    }
    if has {
        out.push(cur);
    }
    Ok(out)
}

/// A scalar TOML value as text (`2`, `true`, `1.5`); others debug-printed.
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn list(v: &StringOrList) -> Result<Vec<String>> {
    match v {
        StringOrList::One(s) => split_command(s),
        StringOrList::List(l) => Ok(l.clone()),
    }
}

/// The default box name: the directory's name, made into a valid box name.
fn dir_name() -> Result<String> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let raw = cwd
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "box".into());
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'p');
    }
    Ok(name)
}

impl ProjectFile {
    /// The box's name: `name`, else the current directory's.
    pub fn box_name(&self) -> Result<String> {
        match &self.name {
            Some(n) => Ok(n.clone()),
            None => dir_name(),
        }
    }

    /// Fills what `spec` (from the command line) leaves unset; env and mounts from the file
    /// come before the command line's.
    pub fn apply(&self, s: &mut BoxSpec) -> Result<()> {
        if s.image.is_empty() && s.rootfs.is_none() {
            s.image = self
                .image
                .clone()
                .ok_or_else(|| anyhow!("{FILE_NAME} gives no image: add image = \"NAME\" to it"))?;
        }
        if s.cmd.is_none() {
            s.cmd = self.command.as_ref().map(list).transpose()?;
        }
        if s.entrypoint.is_none() {
            s.entrypoint = self.entrypoint.as_ref().map(list).transpose()?;
        }
        if s.name.is_none() {
            s.name = Some(self.box_name()?);
        }
        let mut env = match &self.env {
            None => Vec::new(),
            Some(EnvSpec::List(l)) => l.clone(),
            Some(EnvSpec::Table(t)) => t
                .iter()
                .map(|(k, v)| match v {
                    toml::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={}", value_text(other)),
                })
                .collect(),
        };
        env.append(&mut s.env);
        s.env = env;
        let mut mounts = self
            .mounts
            .iter()
            .map(|m| spec::parse_volume(m).map_err(|e| anyhow!("{FILE_NAME}: mounts: {e}")))
            .collect::<Result<Vec<_>>>()?;
        mounts.append(&mut s.mounts);
        s.mounts = mounts;
        for p in &self.ports {
            let text = match p {
                PortSpec::Text(t) => t.clone(),
                PortSpec::Number(n) => n.to_string(),
            };
            let mapping: box_net::ports::PortMapping = text
                .parse()
                .map_err(|e: String| anyhow!("{FILE_NAME}: ports: {e}"))?;
            if !s
                .ports
                .iter()
                .any(|q| q.box_port == mapping.box_port && q.proto == mapping.proto)
            {
                s.ports.push(mapping);
            }
        }
        if s.memory.is_none() {
            s.memory = match &self.memory {
                None => None,
                Some(toml::Value::String(m)) => Some(spec::parse_size(m)?),
                Some(toml::Value::Integer(n)) => Some(*n),
                Some(other) => bail!(
                    "{FILE_NAME}: memory = {} is not a size like \"100m\"",
                    value_text(other)
                ),
            };
        }
        if s.cpus.is_none() {
            s.cpus = match &self.cpus {
                None => None,
                Some(toml::Value::String(c)) => Some(spec::parse_cpus(c)?),
                Some(toml::Value::Integer(n)) => Some(spec::parse_cpus(&n.to_string())?),
                Some(toml::Value::Float(f)) => Some(spec::parse_cpus(&f.to_string())?),
                Some(other) => bail!(
                    "{FILE_NAME}: cpus = {} is not a number like 2 or 0.5",
                    value_text(other)
                ),
            };
        }
        if s.pids_limit.is_none() {
            s.pids_limit = self.pids_limit;
        }
        if s.workdir.is_none() {
            s.workdir = self.workdir.clone();
        }
        if s.user.is_none() {
            s.user = self.user.clone();
        }
        if s.restart == RestartPolicy::No {
            if let Some(r) = &self.restart {
                s.restart = r
                    .parse()
                    .map_err(|e| anyhow!("{FILE_NAME}: restart = {r:?}: {e}"))?;
            }
        }
        if s.network == NetworkMode::Default {
            if let Some(n) = &self.network {
                s.network = n
                    .parse()
                    .map_err(|e| anyhow!("{FILE_NAME}: network = {n:?}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// For `box run` with no image: fills `spec` from `./box.toml`, or says what is missing.
pub fn fill_run_spec(spec: &mut BoxSpec) -> Result<()> {
    let Some(path) = find() else {
        bail!("no image given (box run IMAGE [CMD…]), and no {FILE_NAME} in the current directory");
    };
    load(&path)?.apply(spec)
}

fn project(file: Option<PathBuf>) -> Result<ProjectFile> {
    let path = match file {
        Some(p) => p,
        None => find().ok_or_else(|| {
            anyhow!("no {FILE_NAME} in the current directory (or give one with --file)")
        })?,
    };
    load(&path)
}

/// The name of the project's box (from `file`, default ./box.toml).
pub fn box_name(file: Option<PathBuf>) -> Result<String> {
    project(file)?.box_name()
}

/// `box up`: makes and starts the project's box in the background; an already running box is
/// left as it is, a stopped one is started again.
pub fn up(engine: &Engine, file: Option<PathBuf>) -> Result<()> {
    let p = project(file)?;
    let name = p.box_name()?;
    let bin = std::env::current_exe().context("cannot find the box binary")?;
    if let Some(rec) = engine.db().by_name(&name)? {
        if rec.state.is_active() {
            println!("box {name} is already running ({})", rec.short_id());
            return Ok(());
        }
        supervisor::spawn(&bin, engine.paths(), &rec.id)?;
        println!("box {name} started ({})", rec.short_id());
        return Ok(());
    }
    let mut s = BoxSpec::default();
    p.apply(&mut s)?;
    let rec = engine.create(s)?;
    if let Err(e) = supervisor::spawn(&bin, engine.paths(), &rec.id) {
        let _ = engine.remove(&rec.id, true);
        return Err(e.into());
    }
    println!("box {name} started ({})", rec.short_id());
    Ok(())
}

/// `box down`: stops (up to `timeout`) and removes the project's box.
pub fn down(engine: &Engine, file: Option<PathBuf>, timeout: Duration) -> Result<()> {
    let name = project(file)?.box_name()?;
    let Some(rec) = engine.db().by_name(&name)? else {
        println!("box {name} does not exist");
        return Ok(());
    };
    if rec.state.is_active() {
        super::boxes::stop(engine, std::slice::from_ref(&rec.id), timeout)?;
    }
    engine.remove(&rec.id, true)?;
    println!("box {name} removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_becomes_a_spec() {
        let p: ProjectFile = toml::from_str(
            r#"
            image = "busybox"
            command = "sh -c 'echo \"hi there\"'"
            name = "web"
            env = { A = "1", B = 2 }
            mounts = ["/src:/dst:ro", "cache:/c"]
            ports = ["8080:80", 443]
            memory = "100m"
            cpus = 2
            pids_limit = 50
            workdir = "/srv"
            user = "1000"
            restart = "on-failure:3"
            network = "host"
            "#,
        )
        .unwrap();
        let mut s = BoxSpec {
            env: vec!["C=3".into()],
            ..BoxSpec::default()
        };
        p.apply(&mut s).unwrap();
        assert_eq!(s.image, "busybox");
        assert_eq!(
            s.cmd,
            Some(vec!["sh".into(), "-c".into(), "echo \"hi there\"".into()])
        );
        assert_eq!(s.name.as_deref(), Some("web"));
        assert_eq!(s.env, vec!["A=1", "B=2", "C=3"]);
        assert_eq!(s.mounts.len(), 2);
        assert!(s.mounts[0].readonly);
        let ports: Vec<String> = s.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(ports, ["80/tcp -> 0.0.0.0:8080", "443/tcp -> 0.0.0.0:0"]);
        assert_eq!(s.memory, Some(100 << 20));
        assert_eq!(s.cpus, Some(2.0));
        assert_eq!(s.pids_limit, Some(50));
        assert_eq!(s.workdir.as_deref(), Some("/srv"));
        assert_eq!(s.restart, RestartPolicy::OnFailure(Some(3)));
        assert_eq!(s.network, NetworkMode::Host);
        let bad: ProjectFile = toml::from_str("image = \"x\"\nnetwork = \"a/b\"").unwrap();
        let err = bad.apply(&mut BoxSpec::default()).unwrap_err().to_string();
        assert!(err.contains("network") && err.contains("a/b"), "{err}");
    }

    #[test]
    fn lists_and_errors() {
        let p: ProjectFile =
            toml::from_str("image = \"x\"\ncommand = [\"a\", \"b c\"]\nenv = [\"K=v\"]").unwrap();
        let mut s = BoxSpec::default();
        p.apply(&mut s).unwrap();
        assert_eq!(s.cmd, Some(vec!["a".into(), "b c".into()]));
        assert_eq!(s.env, vec!["K=v"]);
        assert!(toml::from_str::<ProjectFile>("imgae = \"typo\"").is_err());
        let p: ProjectFile = toml::from_str("memory = true\nimage = \"x\"").unwrap();
        assert!(p.apply(&mut BoxSpec::default()).is_err());
        let p: ProjectFile = toml::from_str("name = \"n\"").unwrap();
        assert!(p.apply(&mut BoxSpec::default()).is_err(), "no image");
        assert!(split_command("a 'b").is_err());
        assert_eq!(split_command("  a\\ b  ''  ").unwrap(), vec!["a b", ""]);
    }
}
