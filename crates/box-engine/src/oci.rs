//! BoxSpec + image config → the OCI runtime `Spec` box-runtime runs, following Docker's rules:
//! Entrypoint/Cmd/Env/WorkingDir/User merging, default mounts, the 14 default capabilities,
//! the default seccomp profile, masked paths, resources and the cgroup path. Also writes the
//! box's /etc/hostname, /etc/hosts and /etc/resolv.conf, bound into the box.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxSeccomp, Spec};
use serde_json::{json, Value};

use crate::db::BoxDb;
use crate::error::{EngineError, IoContext, Result};
use crate::paths::Paths;
use crate::spec::{cpus_to_quota, BoxSpec, MountKind, NetworkMode, SeccompChoice};

/// PATH when neither the image nor the user sets one (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `--init`'s binary is bound inside the box.
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The NOFILE limit a box asks for (Docker's), lowered to the caller's hard limit.
const NOFILE: u64 = 1_048_576;

/// Host binaries `--init` can use, in order.
const INIT_CANDIDATES: &[&str] = &[
    "/usr/libexec/docker/docker-init",
    "/usr/bin/docker-init",
    "/usr/bin/tini-static",
    "/usr/bin/tini",
    "/sbin/tini",
];

/// The resolved identity of the box's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid inside the box.
    pub uid: u32,
    /// gid inside the box.
    pub gid: u32,
    /// Supplementary groups from /etc/group.
    pub additional_gids: Vec<u32>,
    /// The home directory from /etc/passwd (for `HOME`), when found.
    pub home: Option<String>,
}

/// Builds the OCI spec of box `id`.
///
/// `rootfs` becomes `root.path` (the snapshot's merged dir, or the `--rootfs` dir).
/// `etc_roots` are the directories where the box's /etc/passwd and /etc/group are looked up,
/// first match wins (the snapshot's upper dir then the image's layers top first, or the
/// `--rootfs` dir): the snapshot is not mounted when the spec is made.
pub fn build_spec(
    spec: &BoxSpec,
    image: Option<&ImageConfiguration>,
    rootfs: &Path,
    etc_roots: &[PathBuf],
    paths: &Paths,
    id: &str,
) -> Result<Spec> {
    spec.validate()?;
    let img = image.and_then(|i| i.config().as_ref());
    let hostname = hostname_of(spec, id);

    // Process: args, env, cwd, user.
    let mut args = merge_args(
        spec.entrypoint.as_deref(),
        spec.cmd.as_deref(),
        img.and_then(|c| c.entrypoint().as_deref()),
        img.and_then(|c| c.cmd().as_deref()),
    );
    if args.is_empty() {
        return Err(EngineError::invalid(
            "no command to run: the image has no Entrypoint or Cmd, and none was given \
             (box run IMAGE CMD…)",
        ));
    }
    let user_str = spec
        .user
        .clone()
        .or_else(|| img.and_then(|c| c.user().clone()))
        .filter(|u| !u.is_empty());
    let user = match &user_str {
        Some(u) => resolve_user(u, etc_roots)?,
        None => resolve_user("0", etc_roots)?,
    };
    let mut env = merge_env(
        img.and_then(|c| c.env().as_deref()).unwrap_or(&[]),
        &spec.env,
    );
    set_default_env(&mut env, "HOSTNAME", &hostname);
    if spec.tty {
        set_default_env(&mut env, "TERM", "xterm");
    }
    set_default_env(
        &mut env,
        "HOME",
        user.home
            .as_deref()
            .unwrap_or(if user.uid == 0 { "/root" } else { "/" }),
    );
    let cwd = spec
        .workdir
        .clone()
        .or_else(|| img.and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(EngineError::invalid(format!(
            "invalid working directory {cwd:?}: it must be an absolute path"
        )));
    }

    // Capabilities, seccomp.
    let caps = capabilities(spec)?;
    let no_new_privs = spec.no_new_privileges()?;
    let seccomp: Option<LinuxSeccomp> = if spec.privileged {
        None
    } else {
        match spec.seccomp()? {
            SeccompChoice::Default => Some(box_runtime::policy::default_seccomp(&caps)),
            SeccompChoice::Unconfined => None,
            SeccompChoice::Profile(p) => Some(read_seccomp_profile(&p)?),
        }
    };

    // Mounts.
    let mut mounts = default_mounts(paths.rootless);
    let box_dir = paths.box_dir(id);
    for f in ["hostname", "hosts", "resolv.conf"] {
        mounts.push(json!({
            "destination": format!("/etc/{f}"),
            "type": "bind",
            "source": box_dir.join(f),
            "options": ["rbind", "rprivate"],
        }));
    }
    for m in &spec.mounts {
        mounts.push(user_mount(m)?);
    }
    if spec.init {
        let init = find_init()?;
        mounts.push(json!({
            "destination": INIT_PATH,
            "type": "bind",
            "source": init,
            "options": ["bind", "ro", "nosuid", "nodev"],
        }));
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
    }

    // Resources.
    let mut resources = serde_json::Map::new();
    if !paths.rootless {
        resources.insert(
            "devices".into(),
            json!([{"allow": spec.privileged, "access": "rwm"}]),
        );
    }
    if let Some(limit) = spec.memory {
        let swap = spec.memory_swap.unwrap_or(limit);
        resources.insert("memory".into(), json!({"limit": limit, "swap": swap}));
    }
    let mut cpu = serde_json::Map::new();
    if let Some(c) = spec.cpus {
        let (quota, period) = cpus_to_quota(c);
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(period));
    }
    if let Some(s) = spec.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(p) = spec.pids_limit {
        resources.insert("pids".into(), json!({"limit": p}));
    }

    let cgroups_path = match &spec.cgroup_parent {
        Some(parent) if !parent.is_empty() => {
            format!("{}/{id}", parent.trim_end_matches('/'))
        }
        _ => format!("box/{id}"),
    };

    // `container:` boxes get their own namespace here; `set_network_namespace` then points it
    // at the other box's (a forgotten step isolates, never shares the host's).
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "cgroup"}),
    ];
    if spec.network != NetworkMode::Host {
        namespaces.push(json!({"type": "network"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": Value::Object(resources),
        "cgroupsPath": cgroups_path,
    });
    if !spec.privileged {
        linux["maskedPaths"] = json!(box_runtime::policy::MASKED_PATHS);
        linux["readonlyPaths"] = json!(box_runtime::policy::READONLY_PATHS);
    }
    if let Some(s) = &seccomp {
        linux["seccomp"] = serde_json::to_value(s).map_err(|source| EngineError::Json {
            context: "cannot encode the seccomp profile".into(),
            source,
        })?;
    }

    let mut user_json = json!({"uid": user.uid, "gid": user.gid});
    if !user.additional_gids.is_empty() {
        user_json["additionalGids"] = json!(user.additional_gids);
    }
    let nofile = nofile_limit();
    let doc = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            "user": user_json,
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": no_new_privs,
        },
        "root": {"path": rootfs, "readonly": spec.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    });
    serde_json::from_value(doc).map_err(|source| EngineError::Json {
        context: "cannot make the box's OCI spec".into(),
        source,
    })
}

/// Writes the box's `hostname`, `hosts` and `resolv.conf` into `<data>/boxes/<id>/` (which
/// must exist); `build_spec` binds them over the box's /etc files.
pub fn write_etc_files(paths: &Paths, id: &str, hostname: &str) -> Result<()> {
    let dir = paths.box_dir(id);
    let write = |name: &str, text: &str| -> Result<()> {
        let p = dir.join(name);
        fs::write(&p, text).ctx(|| format!("cannot write {}", p.display()))
    };
    write("hostname", &format!("{hostname}\n"))?;
    write(
        "hosts",
        &format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
    )?;
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    write("resolv.conf", &box_resolv_conf(&host_resolv))
}

/// The box's hostname: the spec's, else the host's (`--network host`), else the first 12 hex
/// digits of the id.
pub fn hostname_of(spec: &BoxSpec, id: &str) -> String {
    let host = || {
        (spec.network == NetworkMode::Host)
            .then(|| nix::unistd::gethostname().ok())
            .flatten()
            .map(|h| h.to_string_lossy().into_owned())
    };
    spec.hostname
        .clone()
        .filter(|h| !h.is_empty())
        .or_else(host)
        .unwrap_or_else(|| id.get(..12).unwrap_or(id).to_string())
}

/// The network namespace a `--network container:NAME` box joins: the other box's init's, which
/// must be running (none for other modes).
pub fn joined_network(db: &BoxDb, spec: &BoxSpec) -> Result<Option<PathBuf>> {
    let NetworkMode::Container(name) = &spec.network else {
        return Ok(None);
    };
    let other = db.find(name)?;
    match (other.state.is_active(), other.pid) {
        (true, Some(pid)) if other.state != crate::db::BoxState::Restarting => {
            Ok(Some(PathBuf::from(format!("/proc/{pid}/ns/net"))))
        }
        _ => Err(EngineError::WrongState(format!(
            "--network container:{name}: box {} is {}, and a box can only join the network of \
             a running one (box start {} first)",
            other.name,
            other.state.as_str(),
            other.name
        ))),
    }
}

/// Points the box's network namespace at `path` (another box's).
pub fn set_network_namespace(spec: &mut Spec, path: &Path) {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    if let Ok(ns) = LinuxNamespaceBuilder::default()
        .typ(LinuxNamespaceType::Network)
        .path(path.to_path_buf())
        .build()
    {
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));
}

/// Before each start of a `container:` box: config.json joins the other box's network
/// namespace as it is now (its init may have changed since the last start).
pub fn rejoin_network(paths: &Paths, db: &BoxDb, id: &str, spec: &BoxSpec) -> Result<()> {
    let Some(path) = joined_network(db, spec)? else {
        return Ok(());
    };
    let config = paths.config_path(id);
    let mut oci = Spec::load(&config)
        .map_err(|e| EngineError::WrongState(format!("cannot read {}: {e}", config.display())))?;
    set_network_namespace(&mut oci, &path);
    crate::engine::write_config(&config, &oci)
}

/// With `host` or `container:` networking the box's /etc/hosts and /etc/resolv.conf are those of
/// the network it joins: the host's, or the other box's.
pub fn adopt_network_files(paths: &Paths, db: &BoxDb, id: &str, spec: &BoxSpec) -> Result<()> {
    let from = match &spec.network {
        NetworkMode::Host => PathBuf::from("/etc"),
        NetworkMode::Container(name) => paths.box_dir(&db.find(name)?.id),
        _ => return Ok(()),
    };
    for name in ["hosts", "resolv.conf"] {
        let src = from.join(name);
        let dst = paths.box_dir(id).join(name);
        if let Ok(text) = fs::read(&src) {
            fs::write(&dst, text).ctx(|| format!("cannot write {}", dst.display()))?;
        }
    }
    Ok(())
}

/// The host's resolv.conf without loopback nameservers (unreachable from the box's own
/// network namespace); public resolvers when none are left.
pub fn box_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("nameserver") {
            let addr = addr.trim();
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Docker's Entrypoint/Cmd rule: the user's entrypoint (if given) replaces the image's and
/// drops the image's Cmd; the user's Cmd replaces the image's Cmd; the result is
/// entrypoint + cmd.
pub fn merge_args(
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
    image_entrypoint: Option<&[String]>,
    image_cmd: Option<&[String]>,
) -> Vec<String> {
    let (ep, cmd) = match entrypoint {
        Some(ep) => (ep, cmd.unwrap_or(&[])),
        None => (
            image_entrypoint.unwrap_or(&[]),
            cmd.or(image_cmd).unwrap_or(&[]),
        ),
    };
    ep.iter().chain(cmd.iter()).cloned().collect()
}

/// Image env, then the user's (a user's `K=V` replaces the image's `K`; a bare `K` is taken
/// from nowhere and dropped, as the CLI resolves `-e K` from its own environment first);
/// PATH defaults to [`DEFAULT_PATH`].
pub fn merge_env(image: &[String], user: &[String]) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    for kv in image.iter().chain(user.iter()) {
        let Some((k, _)) = kv.split_once('=') else {
            continue;
        };
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k))
        {
            Some(slot) => slot.clone_from(kv),
            None => env.push(kv.clone()),
        }
    }
    set_default_env(&mut env, "PATH", DEFAULT_PATH);
    env
}

fn set_default_env(env: &mut Vec<String>, key: &str, value: &str) {
    let present = env
        .iter()
        .any(|e| e.split_once('=').map(|(k, _)| k) == Some(key));
    if !present {
        env.push(format!("{key}={value}"));
    }
}

/// Resolves `user[:group]` (names or numbers) against /etc/passwd and /etc/group under
/// `etc_roots` (first root that has the file wins). A numeric uid not in passwd gets gid 0
/// (or the given group); a name not found is an error.
pub fn resolve_user(user: &str, etc_roots: &[PathBuf]) -> Result<ResolvedUser> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_etc(etc_roots, "passwd");
    let groups = read_etc(etc_roots, "group");
    let entry = passwd.as_deref().and_then(|p| {
        p.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            let matches = match u.parse::<u32>() {
                Ok(n) => f[2].parse::<u32>().ok() == Some(n),
                Err(_) => f[0] == u,
            };
            matches.then(|| {
                (
                    f[0].to_string(),
                    f[2].parse::<u32>().ok(),
                    f[3].parse::<u32>().ok(),
                    f[5].to_string(),
                )
            })
        })
    });
    let (name, uid, gid, home) = match (u.parse::<u32>(), entry) {
        (_, Some((name, Some(uid), gid, home))) => (Some(name), uid, gid.unwrap_or(0), Some(home)),
        (Ok(n), _) => (None, n, 0, None),
        (Err(_), _) => {
            return Err(EngineError::invalid(format!(
                "unable to find user {u}: no matching entries in the image's /etc/passwd \
                 (use a numeric uid, e.g. -u 1000:1000)"
            )))
        }
    };
    let gid = match g {
        None | Some("") => gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .as_deref()
                .and_then(|text| {
                    text.lines().find_map(|line| {
                        let f: Vec<&str> = line.split(':').collect();
                        (f.len() >= 3 && f[0] == g).then(|| f[2].parse::<u32>().ok())?
                    })
                })
                .ok_or_else(|| {
                    EngineError::invalid(format!(
                        "unable to find group {g}: no matching entries in the image's \
                         /etc/group (use a numeric gid)"
                    ))
                })?,
        },
    };
    let mut additional: BTreeSet<u32> = BTreeSet::new();
    if let (Some(name), Some(text)) = (&name, groups.as_deref()) {
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if n != gid {
                        additional.insert(n);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional.into_iter().collect(),
        home: home.filter(|h| !h.is_empty()),
    })
}

/// Reads `<root>/etc/<name>` from the first root that has it, refusing symlinked /etc or
/// files (they could point out of the box's tree onto the host's).
fn read_etc(roots: &[PathBuf], name: &str) -> Option<String> {
    for root in roots {
        let etc = root.join("etc");
        let file = etc.join(name);
        let Ok(meta) = fs::symlink_metadata(&file) else {
            continue;
        };
        let etc_is_link = fs::symlink_metadata(&etc)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(true);
        if etc_is_link || !meta.file_type().is_file() {
            return None;
        }
        return fs::read_to_string(&file).ok();
    }
    None
}

/// The capability set: Docker's defaults (all when privileged), then `--cap-drop` (ALL
/// clears), then `--cap-add` (ALL adds every one the kernel knows).
pub fn capabilities(spec: &BoxSpec) -> Result<Vec<String>> {
    let all = box_runtime::capabilities::all_names();
    if spec.privileged {
        return Ok(all);
    }
    let norm = |c: &str| -> Result<String> {
        let up = c.trim().to_ascii_uppercase();
        let name = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if name == "CAP_ALL" || all.contains(&name) {
            Ok(name)
        } else {
            Err(EngineError::invalid(format!(
                "unknown capability {c:?} (names such as NET_ADMIN or CAP_SYS_PTRACE, or ALL)"
            )))
        }
    };
    let drops: Vec<String> = spec
        .cap_drop
        .iter()
        .map(|c| norm(c))
        .collect::<Result<_>>()?;
    let adds: Vec<String> = spec
        .cap_add
        .iter()
        .map(|c| norm(c))
        .collect::<Result<_>>()?;
    let mut caps: Vec<String> = if drops.iter().any(|d| d == "CAP_ALL") {
        Vec::new()
    } else {
        box_runtime::policy::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_string())
            .filter(|c| !drops.contains(c))
            .collect()
    };
    if adds.iter().any(|a| a == "CAP_ALL") {
        for c in &all {
            if !drops.contains(c) && !caps.contains(c) {
                caps.push(c.clone());
            }
        }
    }
    for a in adds.into_iter().filter(|a| a != "CAP_ALL") {
        if !caps.contains(&a) {
            caps.push(a);
        }
    }
    Ok(caps)
}

fn read_seccomp_profile(path: &Path) -> Result<LinuxSeccomp> {
    let data = fs::read(path).ctx(|| {
        format!(
            "cannot read seccomp profile {} (--security-opt seccomp=PATH)",
            path.display()
        )
    })?;
    serde_json::from_slice(&data).map_err(|source| EngineError::Json {
        context: format!(
            "seccomp profile {} is not an OCI LinuxSeccomp document",
            path.display()
        ),
        source,
    })
}

/// The mounts every box gets: /proc, /dev (tmpfs), /dev/pts, /dev/shm, /dev/mqueue, /sys
/// (read-only; bound rather than mounted rootless), /sys/fs/cgroup (read-only).
fn default_mounts(rootless: bool) -> Vec<Value> {
    let sys = if rootless {
        json!({"destination": "/sys", "type": "none", "source": "/sys",
               "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    } else {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]})
    };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        sys,
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ]
}

fn user_mount(m: &crate::spec::MountSpec) -> Result<Value> {
    if !m.target.starts_with('/') {
        return Err(EngineError::invalid(format!(
            "invalid mount target {:?}: it must be an absolute path inside the box",
            m.target
        )));
    }
    match m.kind {
        MountKind::Bind => {
            let src = Path::new(&m.source);
            if !src.is_absolute() {
                return Err(EngineError::invalid(format!(
                    "bind mount source {:?} must be an absolute path",
                    m.source
                )));
            }
            if let Err(e) = fs::metadata(src) {
                return Err(EngineError::io(
                    format!(
                        "bind mount source {} does not exist or cannot be read (create it, \
                         or fix -v {}:{})",
                        src.display(),
                        m.source,
                        m.target
                    ),
                    e,
                ));
            }
            let mut opts = vec!["rbind".to_string()];
            if !m
                .options
                .iter()
                .any(|o| o.contains("private") || o.contains("shared") || o.contains("slave"))
            {
                opts.push("rprivate".into());
            }
            // SELinux relabel flags mean nothing here.
            opts.extend(
                m.options
                    .iter()
                    .filter(|o| !matches!(o.as_str(), "z" | "Z"))
                    .cloned(),
            );
            if m.readonly {
                opts.push("ro".into());
            }
            Ok(
                json!({"destination": m.target, "type": "bind", "source": m.source,
                      "options": opts}),
            )
        }
        MountKind::Tmpfs => {
            let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
            if !m.options.iter().any(|o| o == "exec") {
                opts.push("noexec".into());
            }
            opts.extend(m.options.iter().filter(|o| o.as_str() != "exec").cloned());
            if m.readonly {
                opts.push("ro".into());
            }
            Ok(
                json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs",
                      "options": opts}),
            )
        }
        // Engine::create resolves volumes into bind mounts of their `_data` dirs first.
        MountKind::Volume => Err(EngineError::invalid(format!(
            "volume {:?} at {} was not resolved to its directory (Engine::create does that)",
            m.source, m.target
        ))),
    }
}

fn find_init() -> Result<PathBuf> {
    INIT_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            EngineError::Unsupported(format!(
                "--init needs tini or docker-init on the host (looked in {}); install tini, \
                 or run without --init",
                INIT_CANDIDATES.join(", ")
            ))
        })
}

/// The NOFILE limit for a box: Docker's 1048576, never above this process's hard limit
/// (raising it needs CAP_SYS_RESOURCE).
fn nofile_limit() -> u64 {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((_soft, hard)) => NOFILE.min(hard),
        Err(_) => 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let ep = v(&["/ep"]);
        let cmd = v(&["c1"]);
        let iep = v(&["/iep", "-x"]);
        let icmd = v(&["ic"]);
        // Nothing given: image entrypoint + image cmd.
        assert_eq!(
            merge_args(None, None, Some(&iep), Some(&icmd)),
            v(&["/iep", "-x", "ic"])
        );
        // Cmd given: image entrypoint + user cmd.
        assert_eq!(
            merge_args(None, Some(&cmd), Some(&iep), Some(&icmd)),
            v(&["/iep", "-x", "c1"])
        );
        // Entrypoint given: the image's cmd is dropped.
        assert_eq!(
            merge_args(Some(&ep), None, Some(&iep), Some(&icmd)),
            v(&["/ep"])
        );
        assert_eq!(
            merge_args(Some(&ep), Some(&cmd), Some(&iep), Some(&icmd)),
            v(&["/ep", "c1"])
        );
        // Empty entrypoint clears the image's.
        assert_eq!(
            merge_args(Some(&[]), None, Some(&iep), Some(&icmd)),
            Vec::<String>::new()
        );
        assert_eq!(
            merge_args(Some(&[]), Some(&cmd), Some(&iep), None),
            v(&["c1"])
        );
        // No image entrypoint.
        assert_eq!(merge_args(None, None, None, Some(&icmd)), v(&["ic"]));
        assert_eq!(merge_args(None, Some(&cmd), None, Some(&icmd)), v(&["c1"]));
    }

    #[test]
    fn user_env_overrides_image_env_and_path_defaults() {
        let env = merge_env(&v(&["A=1", "B=2"]), &v(&["B=3", "C=4", "BARE"]));
        assert_eq!(
            env,
            v(&["A=1", "B=3", "C=4", &format!("PATH={DEFAULT_PATH}")])
        );
        let env = merge_env(&v(&["PATH=/x"]), &[]);
        assert_eq!(env, v(&["PATH=/x"]));
        let env = merge_env(&v(&["PATH=/x"]), &v(&["PATH=/y"]));
        assert_eq!(env, v(&["PATH=/y"]));
    }

    fn etc_root(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "box-engine-oci-{tag}-{}-{}",
            std::process::id(),
            crate::db::now_ms()
        ));
        fs::create_dir_all(d.join("etc")).unwrap();
        fs::write(
            d.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            d.join("etc/group"),
            "root:x:0:\nwww:x:33:\nbob:x:1000:\nwheel:x:10:bob,alice\naudio:x:29:bob\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn users_are_looked_up_in_the_box_etc() {
        let root = etc_root("user");
        let roots = vec![root.clone()];
        let u = resolve_user("bob", &roots).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![10, 29]);
        assert_eq!(u.home.as_deref(), Some("/home/bob"));
        let u = resolve_user("www:wheel", &roots).unwrap();
        assert_eq!((u.uid, u.gid), (33, 10));
        let u = resolve_user("33", &roots).unwrap();
        assert_eq!((u.uid, u.gid), (33, 33));
        let u = resolve_user("4242:7", &roots).unwrap();
        assert_eq!((u.uid, u.gid, u.home), (4242, 7, None));
        let u = resolve_user("4242", &roots).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        let e = resolve_user("nobody_here", &roots).unwrap_err();
        assert!(
            e.to_string().contains("unable to find user nobody_here"),
            "{e}"
        );
        assert!(resolve_user("bob:nogroup", &roots).is_err());
        // The first root that has the file wins (an upper dir over image layers).
        let upper = etc_root("upper");
        fs::write(upper.join("etc/passwd"), "bob:x:2000:2000::/b:/bin/sh\n").unwrap();
        let u = resolve_user("bob", &[upper.clone(), root.clone()]).unwrap();
        assert_eq!(u.uid, 2000);
        fs::remove_dir_all(root).unwrap();
        fs::remove_dir_all(upper).unwrap();
    }

    #[test]
    fn symlinked_passwd_is_not_followed() {
        let root = etc_root("link");
        fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("etc/passwd")).unwrap();
        assert!(resolve_user("root", std::slice::from_ref(&root)).is_err());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn capabilities_add_drop_all() {
        let mut s = BoxSpec::new("x", &["true"]);
        assert_eq!(capabilities(&s).unwrap().len(), 14);
        s.cap_drop = v(&["net_raw", "CAP_MKNOD"]);
        s.cap_add = v(&["SYS_PTRACE"]);
        let c = capabilities(&s).unwrap();
        assert_eq!(c.len(), 13);
        assert!(c.contains(&"CAP_SYS_PTRACE".to_string()));
        assert!(!c.contains(&"CAP_NET_RAW".to_string()));
        s.cap_drop = v(&["ALL"]);
        s.cap_add = v(&["CHOWN"]);
        assert_eq!(capabilities(&s).unwrap(), v(&["CAP_CHOWN"]));
        s.cap_drop = v(&["kill"]);
        s.cap_add = v(&["ALL"]);
        let c = capabilities(&s).unwrap();
        assert!(!c.contains(&"CAP_KILL".to_string()));
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()));
        s.cap_add = v(&["FLY"]);
        assert!(capabilities(&s).is_err());
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let r = box_resolv_conf("search x\nnameserver 127.0.0.53\n");
        assert!(r.contains("search x"));
        assert!(!r.contains("127.0.0.53"));
        assert!(r.contains("nameserver 8.8.8.8"));
        let r = box_resolv_conf("nameserver 10.0.0.1\n");
        assert_eq!(r, "nameserver 10.0.0.1\n");
    }

    fn image_config(json: &str) -> ImageConfiguration {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn spec_from_image_config_and_options() {
        let root = etc_root("spec");
        let paths = Paths::with_data_dir("/nonexistent-data");
        let id = "0123456789abcdef".repeat(4);
        let img = image_config(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
                "config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],
                          "Env":["PATH=/bin","A=1"],"WorkingDir":"/srv","User":"www"}}"#,
        );
        let mut s = BoxSpec::new("img", &[]);
        s.env = v(&["A=2"]);
        s.memory = Some(64 << 20);
        s.cpus = Some(0.5);
        s.pids_limit = Some(50);
        s.read_only = true;
        s.mounts
            .push(crate::spec::parse_tmpfs("/scratch:size=1m").unwrap());
        s.security_opt = v(&["no-new-privileges"]);
        let spec = build_spec(
            &s,
            Some(&img),
            &root,
            std::slice::from_ref(&root),
            &paths,
            &id,
        )
        .unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_ref().unwrap(),
            &v(&["/bin/sh", "-c", "echo hi"])
        );
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"A=2".to_string()) && env.contains(&"PATH=/bin".to_string()));
        assert!(env.contains(&"HOSTNAME=0123456789ab".to_string()));
        assert_eq!(p.cwd(), &PathBuf::from("/srv"));
        assert_eq!((p.user().uid(), p.user().gid()), (33, 33));
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap(),
            &PathBuf::from(format!("box/{id}"))
        );
        let res = linux.resources().as_ref().unwrap();
        let mem = res.memory().as_ref().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 50);
        assert!(linux.seccomp().is_some());
        assert!(linux.masked_paths().as_ref().is_some_and(|m| !m.is_empty()));
        let mounts = spec.mounts().as_ref().unwrap();
        let dests: Vec<String> = mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/sys",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/scratch",
        ] {
            assert!(dests.contains(&d.to_string()), "{d} missing from {dests:?}");
        }
        // Privileged: all caps, no seccomp, no masked paths; cgroup parent honoured.
        s.privileged = true;
        s.cgroup_parent = Some("ci/job".into());
        let spec = build_spec(
            &s,
            Some(&img),
            &root,
            std::slice::from_ref(&root),
            &paths,
            &id,
        )
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().is_none_or(|m| m.is_empty()));
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap(),
            &PathBuf::from(format!("ci/job/{id}"))
        );
        let bounding = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .len();
        assert!(bounding > 14);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn spec_errors_are_clear() {
        let root = etc_root("errs");
        let paths = Paths::with_data_dir("/nonexistent-data");
        let id = "ab".repeat(32);
        let mut s = BoxSpec::new("img", &[]);
        let e = build_spec(&s, None, &root, std::slice::from_ref(&root), &paths, &id).unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
        s.cmd = Some(v(&["true"]));
        s.mounts
            .push(crate::spec::parse_volume("/definitely/not/here:/x").unwrap());
        let e = build_spec(&s, None, &root, std::slice::from_ref(&root), &paths, &id).unwrap_err();
        assert!(e.to_string().contains("/definitely/not/here"), "{e}");
        s.mounts = vec![crate::spec::parse_volume("data:/x").unwrap()];
        let e = build_spec(&s, None, &root, std::slice::from_ref(&root), &paths, &id).unwrap_err();
        assert!(e.to_string().contains("not resolved"), "{e}");
        fs::remove_dir_all(root).unwrap();
    }
}
