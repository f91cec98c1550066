//! `box-runc`: runc's command line over `box_runtime::Runtime`.

pub mod cli;
mod log;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use box_runtime::{CreateOptions, ExecOptions, RunOutcome, Runtime};
use clap::Parser;
use serde_json::{json, Value};

use cli::{Cli, Command, CreateArgs, ExecArgs, Format, UpdateArgs};

/// Entry point of the `box-runc` binary.
pub fn main() -> ExitCode {
    // Like any Unix tool: a closed pipe ends the output quietly.
    // SAFETY: restoring the default SIGPIPE disposition of this process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Commands that make or enter a box run from a protected view of the binary
    // (CVE-2019-5736); decided before parsing, so a re-exec does not parse twice.
    if std::env::args()
        .skip(1)
        .any(|a| matches!(a.as_str(), "create" | "run" | "exec"))
    {
        if let Err(e) = box_runtime::exe_protect::protect_self() {
            eprintln!("box-runc: {e}");
            return ExitCode::from(1);
        }
    }
    let cli = Cli::parse();
    let log = cli.log.clone();
    let format = cli.log_format;
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            if let Some(path) = &log {
                log::write(path, format, "error", &msg);
            }
            eprintln!("box-runc: {msg}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: Box manages cgroupfs directly, nested under the caller's own cgroup (drop the flag, or use cgroupfs in your engine's config)");
    }
    let root = cli
        .root
        .clone()
        .unwrap_or_else(box_runtime::state::StateRoot::default_dir);
    let rt = || Runtime::new(&root).context("cannot open the state root");
    match cli.command {
        Command::Create(a) => {
            rt()?.create(&a.id, &create_options(&a))?;
        }
        Command::Start { id } => rt()?.start(&id)?,
        Command::State { id } => {
            println!("{}", serde_json::to_string_pretty(&rt()?.state(&id)?)?);
        }
        Command::Kill { all, id, signal } => {
            let sig = box_runtime::signals::parse_signal(&signal)?;
            rt()?.kill(&id, sig, all)?;
        }
        Command::Delete { force, id } => match rt()?.delete(&id, force) {
            // runc: deleting a box that is already gone is fine with --force.
            Err(box_runtime::Error::NotFound(_)) if force => {}
            other => other?,
        },
        Command::Run {
            detach,
            keep: _,
            create,
        } => {
            return Ok(
                match rt()?.run(&create.id, &create_options(&create), detach)? {
                    RunOutcome::Detached => ExitCode::SUCCESS,
                    RunOutcome::Exited(code) => ExitCode::from(code.clamp(0, 255) as u8),
                },
            )
        }
        Command::Exec(a) => return exec(&rt()?, a),
        Command::Ps {
            format,
            id,
            ps_args,
        } => ps(&rt()?, &id, format, &ps_args)?,
        Command::List { format, quiet } => list(&rt()?, format, quiet)?,
        Command::Pause { id } => rt()?.pause(&id)?,
        Command::Resume { id } => rt()?.resume(&id)?,
        Command::Update(a) => update(&rt()?, &a)?,
        Command::Spec { bundle, rootless } => spec(&bundle, rootless)?,
        Command::Features => println!("{}", serde_json::to_string_pretty(&features())?),
        Command::Events {
            stats,
            interval,
            id,
        } => events(&rt()?, &id, stats, &interval)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
    }
}

fn exec(rt: &Runtime, a: ExecArgs) -> Result<ExitCode> {
    let process = match &a.process {
        Some(path) => box_runtime::spec::load_process(path)?,
        None => exec_process_from_flags(rt, &a)?,
    };
    let opts = ExecOptions {
        process,
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        detach: a.detach,
        preserve_fds: a.preserve_fds,
    };
    Ok(match rt.exec(&a.id, &opts)? {
        RunOutcome::Detached => ExitCode::SUCCESS,
        RunOutcome::Exited(code) => ExitCode::from(code.clamp(0, 255) as u8),
    })
}

/// runc's rule: the box's own process is the template; flags override it.
fn exec_process_from_flags(rt: &Runtime, a: &ExecArgs) -> Result<oci_spec::runtime::Process> {
    if a.command.is_empty() {
        bail!("exec needs a command (or --process process.json)");
    }
    let record = rt.load(&a.id)?;
    let template = record
        .config
        .process()
        .clone()
        .ok_or_else(|| anyhow!("the box's config has no process"))?;
    let mut p = serde_json::to_value(&template)?;
    p["args"] = json!(a.command);
    p["terminal"] = json!(a.tty);
    let mut env: Vec<String> = serde_json::from_value(p["env"].clone()).unwrap_or_default();
    for e in &a.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p["env"] = json!(env);
    if let Some(cwd) = &a.cwd {
        p["cwd"] = json!(cwd);
    }
    if let Some(user) = &a.user {
        // As runc: a uid alone keeps the box's gid.
        let bad = || format!("--user takes uid[:gid] (numbers), not {user}");
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        p["user"]["uid"] = json!(uid.parse::<u32>().with_context(bad)?);
        if let Some(g) = gid {
            p["user"]["gid"] = json!(g.parse::<u32>().with_context(bad)?);
        }
    }
    if !a.additional_gids.is_empty() {
        p["user"]["additionalGids"] = json!(a.additional_gids);
    }
    if !a.caps.is_empty() {
        for set in ["bounding", "effective", "permitted"] {
            let mut list: Vec<String> =
                serde_json::from_value(p["capabilities"][set].clone()).unwrap_or_default();
            for c in &a.caps {
                if !list.contains(c) {
                    list.push(c.clone());
                }
            }
            p["capabilities"][set] = json!(list);
        }
    }
    if a.no_new_privs {
        p["noNewPrivileges"] = json!(true);
    }
    Ok(serde_json::from_value(p)?)
}

fn ps(rt: &Runtime, id: &str, format: Format, ps_args: &[String]) -> Result<()> {
    let pids = rt.pids(id)?;
    if format == Format::Json {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("cannot run ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow!("ps output has no PID column"))?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

fn list(rt: &Runtime, format: Format, quiet: bool) -> Result<()> {
    let boxes = rt.list()?;
    if quiet {
        for (r, _) in &boxes {
            println!("{}", r.id);
        }
        return Ok(());
    }
    if format == Format::Json {
        let v: Vec<Value> = boxes
            .iter()
            .map(|(r, s)| {
                let st = r.oci_state(*s);
                json!({
                    "ociVersion": st["ociVersion"],
                    "id": r.id,
                    "pid": st["pid"],
                    "status": s.as_str(),
                    "bundle": r.bundle,
                    "rootfs": r.rootfs,
                    "created": r.created,
                    "owner": r.owner_name(),
                    "annotations": st.get("annotations").cloned().unwrap_or(json!({})),
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let rows: Vec<[String; 6]> = boxes
        .iter()
        .map(|(r, s)| {
            let st = r.oci_state(*s);
            [
                r.id.clone(),
                st["pid"].to_string(),
                s.as_str().to_string(),
                r.bundle.display().to_string(),
                r.created.clone(),
                r.owner_name(),
            ]
        })
        .collect();
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let table: Vec<Vec<String>> = std::iter::once(header.to_vec())
        .chain(rows.into_iter().map(|r| r.to_vec()))
        .collect();
    crate::table::print(&table, 3)?;
    Ok(())
}

/// Parses `100`, `64k`, `32m`, `1g` (also with `b`), `-1`.
fn parse_size(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: i64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    Ok(if n < 0 { -1 } else { n * mult })
}

fn update(rt: &Runtime, a: &UpdateArgs) -> Result<()> {
    let mut res: Value = match &a.resources {
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            serde_json::from_str(&s)?
        }
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        )?,
        None => json!({}),
    };
    let set = |v: &mut Value, section: &str, key: &str, val: Value| {
        if !v[section].is_object() {
            v[section] = json!({});
        }
        v[section][key] = val;
    };
    if let Some(m) = &a.memory {
        set(&mut res, "memory", "limit", json!(parse_size(m)?));
    }
    if let Some(m) = &a.memory_reservation {
        set(&mut res, "memory", "reservation", json!(parse_size(m)?));
    }
    if let Some(m) = &a.memory_swap {
        set(&mut res, "memory", "swap", json!(parse_size(m)?));
    }
    if let Some(v) = a.cpu_shares {
        set(&mut res, "cpu", "shares", json!(v));
    }
    if let Some(v) = a.cpu_period {
        set(&mut res, "cpu", "period", json!(v));
    }
    if let Some(v) = a.cpu_quota {
        set(&mut res, "cpu", "quota", json!(v));
    }
    if let Some(v) = &a.cpuset_cpus {
        set(&mut res, "cpu", "cpus", json!(v));
    }
    if let Some(v) = &a.cpuset_mems {
        set(&mut res, "cpu", "mems", json!(v));
    }
    if let Some(v) = a.pids_limit {
        set(&mut res, "pids", "limit", json!(v));
    }
    if let Some(v) = a.blkio_weight {
        set(&mut res, "blockIO", "weight", json!(v));
    }
    let resources = serde_json::from_value(res).context("invalid resources")?;
    rt.update(&a.id, &resources)?;
    Ok(())
}

fn spec(bundle: &Path, rootless: bool) -> Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists: remove it first", path.display());
    }
    let text = serde_json::to_string_pretty(&box_runtime::spec::default_spec(rootless))?;
    std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

fn features() -> Value {
    use box_runtime::seccomp;
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime",
            "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave",
            "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": box_runtime::capabilities::all_names(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": seccomp::supported_actions(),
                "operators": seccomp::supported_operators(),
                "archs": seccomp::supported_archs(),
                "supportedFlags": seccomp::supported_flags(),
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}},
        },
        "annotations": {"io.github.box.runtime": "box-runc"},
    })
}

fn parse_interval(s: &str) -> Result<std::time::Duration> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num.parse().with_context(|| format!("bad interval {s:?}"))?;
    Ok(std::time::Duration::from_secs_f64(v * scale))
}

fn events(rt: &Runtime, id: &str, once: bool, interval: &str) -> Result<()> {
    let every = parse_interval(interval)?;
    loop {
        let stats = rt.stats(id)?;
        println!(
            "{}",
            json!({"type": "stats", "id": id, "data": serde_json::to_value(&stats)?})
        );
        if once {
            return Ok(());
        }
        std::thread::sleep(every);
        if rt.load(id)?.status(rt.root()) == box_runtime::Status::Stopped {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_intervals_parse() {
        assert_eq!(parse_size("100").expect("n"), 100);
        assert_eq!(parse_size("64k").expect("k"), 65536);
        assert_eq!(parse_size("32M").expect("m"), 32 << 20);
        assert_eq!(parse_size("1gb").expect("g"), 1 << 30);
        assert_eq!(parse_size("-1").expect("-1"), -1);
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_interval("5s").expect("5s").as_secs(), 5);
        assert_eq!(parse_interval("250ms").expect("ms").as_millis(), 250);
    }

    #[test]
    fn features_lists_namespaces_and_hooks() {
        let f = features();
        assert!(f["linux"]["namespaces"]
            .as_array()
            .is_some_and(|a| a.len() == 8));
        assert_eq!(f["hooks"].as_array().map(Vec::len), Some(6));
    }
}
