//! Box commands: run, create, start, stop, kill, rm, ps, logs, inspect, wait, export, diff,
//! rename, and the hidden `__supervise` the supervisor runs as.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use box_engine::db::{BoxRecord, BoxState, StateChange};
use box_engine::engine::Engine;
use box_engine::error::EngineError;
use box_engine::paths::Paths;
use box_engine::spec::{self, BoxSpec, RestartPolicy};
use box_engine::supervisor::{self, Prepared};
use nix::sys::signal::Signal;
use serde_json::json;

use super::attach::{self, AttachFlags, Relayed, DEFAULT_DETACH_KEYS};
use super::cli::{BoxOptions, Format};

/// The engine over `--root` (or the default places), after entering the rootless user namespace.
pub fn engine(root: Option<PathBuf>) -> Result<Engine> {
    Ok(Engine::open(engine_paths(root)?)?)
}

/// The rootless user namespace entered, the data and run dirs of `--root` (or the defaults).
fn engine_paths(root: Option<PathBuf>) -> Result<Paths> {
    super::userns::enter_if_rootless()?;
    Ok(match root {
        Some(d) => Paths::with_data_dir(d),
        None => Paths::detect(),
    })
}

/// [`engine`] for a command that starts a new box (`run`, `open`): a supervisor is forked in
/// advance, before the database is opened (see `supervisor::Prepared`), when it can be had.
pub fn engine_starting(root: Option<PathBuf>) -> Result<(Engine, Option<Prepared>)> {
    let paths = engine_paths(root)?;
    let prepared = box_bin()
        .ok()
        .and_then(|bin| Prepared::fork(&bin, &paths).ok().flatten());
    Ok((Engine::open(paths)?, prepared))
}

/// Starts box `rec`'s supervisor detached (through `prepared` when there is one); on failure
/// the box is removed again.
pub(crate) fn spawn_detached(
    engine: &Engine,
    rec: &BoxRecord,
    prepared: Option<Prepared>,
) -> Result<()> {
    let spawned = match prepared {
        Some(p) => p.spawn(&rec.id, engine.paths()),
        None => supervisor::spawn(&box_bin()?, engine.paths(), &rec.id),
    };
    if let Err(e) = spawned {
        let _ = engine.remove(&rec.id, true);
        return Err(e.into());
    }
    Ok(())
}

/// The engine for a command that works in or on one box (exec, use, cp, top, show, stats):
/// rootless, when the box runs, it joins the user namespace of the box's supervisor rather
/// than making a new one, so that a process it starts lives in the box's own user namespace
/// and the box's namespaces and processes are its to enter and see (from a user namespace of
/// its own they are not: every rootless `box` command makes a new one).
pub fn engine_for_box(root: Option<PathBuf>, name: &str) -> Result<Engine> {
    if !box_runtime::idmap::running_rootless() || box_runtime::idmap::in_user_namespace() {
        return engine(root);
    }
    let paths = match &root {
        Some(d) => Paths::with_data_dir(d.clone()),
        None => Paths::detect(),
    };
    let eng = Engine::open(paths)?;
    let live_supervisor = eng.get(name).ok().and_then(|r| {
        r.supervisor_pid.filter(|&pid| {
            r.state.is_active() && box_engine::db::process_alive(pid, r.supervisor_start)
        })
    });
    match live_supervisor {
        Some(pid) => {
            super::userns::join_of(pid)?;
            Ok(eng)
        }
        None => {
            drop(eng);
            engine(root)
        }
    }
}

/// Rootless, a command that signals boxes (stop, kill, rm, restart, close) must act from each
/// box's own user namespace (see [`engine_for_box`]: from another one, a process running as
/// any user but the box's root cannot be signalled), and a process can join only one. With
/// several boxes, this runs `box [--root DIR] ARGS(name)` once per box instead, in order,
/// stopping at the first failure (whose exit code it returns), as the loop over boxes does;
/// `None` when one process can do it all (as root, or for one box).
pub fn per_box_rootless(
    root: &Option<PathBuf>,
    boxes: &[String],
    args: impl Fn(&str) -> Vec<String>,
) -> Option<Result<i32>> {
    if boxes.len() < 2
        || !box_runtime::idmap::running_rootless()
        || box_runtime::idmap::in_user_namespace()
    {
        return None;
    }
    let run = || -> Result<i32> {
        let bin = box_bin()?;
        for name in boxes {
            let mut cmd = std::process::Command::new(&bin);
            if let Some(r) = root {
                cmd.arg("--root").arg(r);
            }
            let status = cmd
                .args(args(name))
                .status()
                .with_context(|| format!("cannot run {}", bin.display()))?;
            if !status.success() {
                return Ok(status.code().unwrap_or(1));
            }
        }
        Ok(0)
    };
    Some(run())
}

fn box_bin() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the box binary to run the supervisor")
}

/// Turns the command line into a BoxSpec.
fn box_spec(o: BoxOptions) -> Result<BoxSpec> {
    let (image, command) = match (&o.rootfs, &o.image) {
        // `--rootfs DIR CMD…`: the first positional is the command.
        (Some(_), Some(first)) => (
            String::new(),
            [vec![first.clone()], o.command.clone()].concat(),
        ),
        (Some(_), None) => (String::new(), o.command.clone()),
        (None, Some(image)) => (image.clone(), o.command.clone()),
        // No image: ./box.toml gives it (filled in below).
        (None, None) => (String::new(), Vec::new()),
    };
    let from_project = o.rootfs.is_none() && o.image.is_none();
    let mut env = Vec::new();
    for file in &o.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read env file {}", file.display()))?;
        env.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    env.extend(o.env.iter().cloned());
    let mut mounts = Vec::new();
    for v in &o.volumes {
        mounts.push(spec::parse_volume(v)?);
    }
    for m in &o.mounts {
        mounts.push(spec::parse_mount(m)?);
    }
    for t in &o.tmpfs {
        mounts.push(spec::parse_tmpfs(t)?);
    }
    let restart: RestartPolicy = o
        .restart
        .parse()
        .map_err(|e| anyhow!("--restart {}: {e}", o.restart))?;
    let network: spec::NetworkMode = match &o.network {
        Some(n) => n.parse().map_err(|e| anyhow!("--network {n}: {e}"))?,
        None => spec::NetworkMode::Default,
    };
    let mut s = BoxSpec::new(image, &[]);
    s.network = network;
    s.ports = o
        .publish
        .iter()
        .map(|p| p.parse().map_err(|e: String| anyhow!(e)))
        .collect::<Result<_>>()?;
    s.publish_all = o.publish_all;
    s.name = o.name;
    s.cmd = (!command.is_empty()).then_some(command);
    s.entrypoint = o.entrypoint.map(|e| vec![e]);
    s.env = env;
    s.workdir = o.workdir;
    s.user = o.user;
    s.hostname = o.hostname;
    s.tty = o.tty;
    s.stdin_open = o.interactive;
    s.mounts = mounts;
    s.read_only = o.read_only;
    s.memory = o.memory.as_deref().map(spec::parse_size).transpose()?;
    s.cpus = o.cpus.as_deref().map(spec::parse_cpus).transpose()?;
    s.cpu_shares = o.cpu_shares;
    s.pids_limit = o.pids_limit;
    s.cap_add = o.cap_add;
    s.cap_drop = o.cap_drop;
    s.privileged = o.privileged;
    s.security_opt = o.security_opt;
    s.restart = restart;
    s.auto_remove = o.rm;
    s.init = o.init;
    s.cgroup_parent = o.cgroup_parent;
    s.rootfs = o.rootfs;
    if from_project {
        super::project::fill_run_spec(&mut s)?;
    }
    Ok(s)
}

/// `box create`.
pub fn create(engine: &Engine, o: BoxOptions) -> Result<()> {
    let rec = engine.create(box_spec(o)?)?;
    println!("{}", rec.id);
    Ok(())
}

/// `box run`: create, then start detached (print the id) or attached (stream the output and
/// exit with the box's code).
pub fn run(
    engine: &Engine,
    prepared: Option<Prepared>,
    o: BoxOptions,
    detach: bool,
) -> Result<i32> {
    let rec = engine.create(box_spec(o)?)?;
    if detach {
        spawn_detached(engine, &rec, prepared)?;
        println!("{}", rec.id);
        return Ok(0);
    }
    start_attached(engine, &rec, prepared)
}

/// Starts `rec` with this process attached from the box's first byte (through `prepared` when
/// there is one); returns its exit code.
pub(crate) fn start_attached(
    engine: &Engine,
    rec: &BoxRecord,
    prepared: Option<Prepared>,
) -> Result<i32> {
    let hello = if rec.spec.stdin_open { b'o' } else { b'r' };
    let (_, stream) = match prepared {
        Some(p) => p.spawn_attached(&rec.id, engine.paths(), hello)?,
        None => supervisor::spawn_attached(&box_bin()?, engine.paths(), &rec.id, hello)?,
    };
    let flags = AttachFlags::new(!rec.spec.stdin_open, false, DEFAULT_DETACH_KEYS)?;
    let size = attach::size_channel(engine.paths(), &rec.id, rec.spec.tty);
    let code = match attach::relay(stream, size, rec.spec.stdin_open, rec.spec.tty, &flags)? {
        Relayed::Exited(code) => code,
        Relayed::Detached => return Ok(0),
        Relayed::Dropped => bail!("the box's supervisor went away before the box ended"),
    };
    // Return once the box is recorded as ended (or removed, with --rm): the supervisor closes
    // the stream only then, so this is a check, on the connection we have.
    let settled = match engine.db().get(&rec.id) {
        Ok(Some(now)) => !now.state.is_active() && !rec.spec.auto_remove,
        _ => true,
    };
    if settled {
        return Ok(code);
    }
    let _ = supervisor::wait_exit(engine.paths(), &rec.id);
    if rec.spec.auto_remove {
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.db().get(&rec.id).ok().flatten().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(code)
}

/// `exec`'s flags.
pub struct ExecFlags {
    /// Terminal.
    pub tty: bool,
    /// Keep stdin open (a detached session: attach clients can write to it).
    pub interactive: bool,
    /// Background.
    pub detach: bool,
    /// Detached: print the session's pid (for `box grab BOX PID`).
    pub print_pid: bool,
    /// Extra environment.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// uid[:gid].
    pub user: Option<String>,
}

/// Refuses to act on the processes of a box that is restarting (it has none until its
/// supervisor starts it again), saying so.
pub(crate) fn refuse_restarting(rec: &BoxRecord) -> Result<()> {
    if rec.state == BoxState::Restarting {
        bail!(
            "box {} is restarting (its main process ended; its restart policy starts it \
             again): wait until it runs, or `box stop {}`",
            rec.name,
            rec.name
        );
    }
    Ok(())
}

/// `box exec`: a process in a running box, made from the box's own process (its env, user,
/// capabilities), with the flags on top. Its stdio is this command's; detached (`-d`), it is a
/// supervised session instead (`supervisor::exec`: logged, its own pipes or pty, grabbable by
/// pid) and this command returns once it runs, printing nothing (or its pid, `print_pid`).
pub fn exec(engine: &Engine, name: &str, command: &[String], f: ExecFlags) -> Result<i32> {
    let rec = engine.get(name)?;
    refuse_restarting(&rec)?;
    if rec.state != BoxState::Running {
        bail!(
            "box {} is not running (box start {} first)",
            rec.name,
            rec.name
        );
    }
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(engine.paths().config_path(&rec.id))
            .with_context(|| format!("cannot read the config of box {}", rec.name))?,
    )?;
    let mut p = config["process"].clone();
    p["args"] = json!(command);
    p["terminal"] = json!(f.tty);
    let mut env: Vec<String> = serde_json::from_value(p["env"].clone()).unwrap_or_default();
    for e in &f.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p["env"] = json!(env);
    if let Some(w) = &f.workdir {
        p["cwd"] = json!(w);
    }
    if let Some(u) = &f.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a.parse::<u32>()?, b.parse::<u32>()?),
            None => (u.parse::<u32>().context("--user takes uid[:gid]")?, 0),
        };
        p["user"] = json!({"uid": uid, "gid": gid});
    }
    let process = serde_json::from_value(p).context("cannot build the exec process")?;
    let opts = box_runtime::ExecOptions {
        process,
        console_socket: None,
        pid_file: None,
        detach: f.detach,
        preserve_fds: 0,
    };
    if f.detach {
        let pid = supervisor::exec::spawn_exec(
            &box_bin()?,
            engine.paths(),
            &rec.id,
            opts.process,
            f.interactive,
        )?;
        if f.print_pid {
            println!("{pid}");
        }
        return Ok(0);
    }
    let rt = engine.runtime()?;
    let outcome = rt.exec(&rec.id, &opts)?;
    Ok(match outcome {
        box_runtime::RunOutcome::Detached => 0,
        box_runtime::RunOutcome::Exited(code) => code,
    })
}

/// `box start`.
pub fn start(engine: &Engine, boxes: &[String], attach: bool) -> Result<i32> {
    let mut last = 0;
    for name in boxes {
        let rec = engine.get(name)?;
        if rec.state == BoxState::Running {
            bail!("box {} is already running", rec.name);
        }
        if rec.state == BoxState::Restarting {
            bail!(
                "box {} is restarting: its supervisor starts it again by itself",
                rec.name
            );
        }
        if rec.state == BoxState::Paused {
            bail!(
                "box {} is paused: box unpause {} instead",
                rec.name,
                rec.name
            );
        }
        if attach {
            last = start_attached(engine, &rec, None)?;
        } else {
            supervisor::spawn(&box_bin()?, engine.paths(), &rec.id)?;
            println!("{}", rec.name);
        }
    }
    Ok(last)
}

/// `box system boot`: starts every box that [`BoxRecord::restarts_at_boot`] (the database
/// repaired first, so boxes that went down with the machine show as exited); one that fails to
/// start is reported and the others still start.
pub fn boot(engine: &Engine) -> Result<()> {
    let mut failed = Vec::new();
    for rec in engine.list(true)?.iter().filter(|r| r.restarts_at_boot()) {
        match supervisor::spawn(&box_bin()?, engine.paths(), &rec.id) {
            Ok(_) => println!("{}", rec.name),
            Err(e) => {
                eprintln!("box: cannot start box {}: {e}", rec.name);
                failed.push(rec.name.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} box(es) did not start: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// `box system reset`: removes every box (killed first), every network (bridges and
/// firewall entries), then the data and run dirs (images, volumes, the database). Asks first on
/// a terminal; elsewhere it needs `--force`.
pub fn system_reset(engine: &Engine, force: bool) -> Result<()> {
    let data = engine.paths().data.clone();
    if !force {
        if !std::io::stdin().is_terminal() {
            bail!("box system reset removes every box, image, volume and network under {}: give --force to confirm", data.display());
        }
        eprint!(
            "This removes every box, image, volume and network under {}. Are you sure? [y/N] ",
            data.display()
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("nothing removed");
        }
    }
    for rec in engine.list(true)? {
        engine
            .remove(&rec.id, true)
            .with_context(|| format!("cannot remove box {}", rec.name))?;
    }
    engine.remove_all_networks()?;
    for dir in [&engine.paths().run, &data] {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
    }
    Ok(())
}

/// How long a box may take to end once SIGKILL went to all its processes before `stop` (and
/// everything built on it) gives up with an error: only a process stuck in the kernel lasts so.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// `box stop`: SIGTERM to the init, then SIGKILL after `timeout`; never restarted by its
/// policy. A paused box is thawed after the signal, so that it takes it (as docker does).
pub fn stop(engine: &Engine, boxes: &[String], timeout: Duration) -> Result<()> {
    for name in boxes {
        let rec = engine.get(name)?;
        stop_box(engine, &rec, Signal::SIGTERM, false, timeout)?;
        println!("{}", rec.name);
    }
    Ok(())
}

/// Ends an active box (running or paused; otherwise nothing to do) and waits for its supervisor
/// to record the end: `signal` to its init (with `all`, to every process of its cgroup), a
/// paused box thawed right after so that the signal is delivered, then SIGKILL to every process
/// when it still lives after `grace`. A box removed when it ends (`--rm`) is fine.
pub(crate) fn stop_box(
    engine: &Engine,
    rec: &BoxRecord,
    signal: Signal,
    all: bool,
    grace: Duration,
) -> Result<()> {
    if !rec.state.is_active() {
        return Ok(());
    }
    supervisor::request_stop(engine.paths(), &rec.id)?;
    engine.db().mark_stopped(&rec.id)?;
    let rt = engine.runtime()?;
    let _ = rt.kill(&rec.id, signal, all);
    thaw_if_paused(engine, &rt, rec);
    let ended = |e: &Engine| e.get(&rec.id).map(|r| !r.state.is_active()).unwrap_or(true);
    let deadline = Instant::now() + grace;
    while !ended(engine) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !ended(engine) {
        let _ = rt.kill(&rec.id, Signal::SIGKILL, true);
        thaw_if_paused(engine, &rt, rec);
    }
    match supervisor::wait_exit_within(engine.paths(), &rec.id, Some(KILL_GRACE)) {
        Ok(_) | Err(EngineError::NoSuchBox(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Thaws a box recorded as paused, after it was signalled: a frozen process takes its signal
/// only once thawed. The record goes back to `running` (only if still `paused`: an end the
/// supervisor recorded meanwhile stays).
fn thaw_if_paused(engine: &Engine, rt: &box_runtime::Runtime, rec: &BoxRecord) {
    if rec.state == BoxState::Paused {
        let _ = rt.resume(&rec.id);
        let _ = engine.db().update_state(&rec.id, &StateChange::Unpaused);
    }
}

/// `box kill`: `signal` to every process of the box; a paused box is thawed after it, so that
/// the signal is delivered (as docker does).
pub fn kill(engine: &Engine, boxes: &[String], signal: &str) -> Result<()> {
    let sig = box_runtime::signals::parse_signal(signal)?;
    for name in boxes {
        let rec = engine.get(name)?;
        if !rec.state.is_active() {
            bail!("box {} is not running", rec.name);
        }
        refuse_restarting(&rec)?;
        if sig == Signal::SIGKILL || sig == Signal::SIGTERM {
            supervisor::request_stop(engine.paths(), &rec.id)?;
            engine.db().mark_stopped(&rec.id)?;
        }
        let rt = engine.runtime()?;
        rt.kill(&rec.id, sig, true)?;
        thaw_if_paused(engine, &rt, &rec);
        println!("{}", rec.name);
    }
    Ok(())
}

/// `box rm`.
pub fn remove(engine: &Engine, boxes: &[String], force: bool, volumes: bool) -> Result<()> {
    for name in boxes {
        let rec = engine.remove(name, force)?;
        if volumes {
            engine.remove_anonymous_volumes(&rec)?;
        }
        println!("{}", rec.name);
    }
    Ok(())
}

fn age(ms: i64) -> String {
    let now = box_engine::db::now_ms();
    let s = (now - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86_399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

fn status(r: &BoxRecord) -> String {
    match r.state {
        BoxState::Running => format!("Up since {}", age(r.started_at.unwrap_or(r.created))),
        BoxState::Exited => format!(
            "Exited ({}) {}",
            r.exit_code.unwrap_or(-1),
            age(r.finished_at.unwrap_or(r.created))
        ),
        BoxState::Restarting => format!(
            "Restarting ({}) {}",
            r.exit_code.unwrap_or(-1),
            age(r.finished_at.unwrap_or(r.created))
        ),
        other => other.as_str().to_string(),
    }
}

fn record_json(engine: &Engine, r: &BoxRecord) -> serde_json::Value {
    json!({
        "Id": r.id,
        "Name": r.name,
        "Image": r.image_name,
        "ImageId": r.image_id,
        "Created": box_runtime::state::rfc3339((r.created / 1000) as u64, 0),
        "State": {
            "Status": r.state.as_str(),
            "Running": r.state == BoxState::Running,
            "Pid": r.pid.unwrap_or(0),
            "ExitCode": r.exit_code,
            "OOMKilled": r.oom_killed,
            "StartedAt": r.started_at,
            "FinishedAt": r.finished_at,
            "Error": r.error,
            "SupervisorPid": r.supervisor_pid,
            "Restarting": r.state == BoxState::Restarting,
            "StoppedByUser": r.stopped,
        },
        "RestartCount": r.restart_count,
        "Config": r.spec,
        "NetworkSettings": super::networks::settings(engine, r),
    })
}

/// One `ps --filter KEY=VALUE`.
struct PsFilter {
    key: String,
    value: String,
}

impl PsFilter {
    fn parse(arg: &str) -> Result<PsFilter> {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| anyhow!("--filter {arg}: KEY=VALUE expected"))?;
        match key {
            "name" | "id" | "label" => {}
            "status" => {
                value.parse::<BoxState>().map_err(|_| {
                    anyhow!("--filter {arg}: status is created, running, paused, exited or dead")
                })?;
            }
            "exited" => {
                value
                    .parse::<i32>()
                    .map_err(|_| anyhow!("--filter {arg}: exited takes an exit code"))?;
            }
            _ => bail!("--filter {arg}: unknown key {key} (name, id, status, label, exited)"),
        }
        Ok(PsFilter {
            key: key.into(),
            value: value.into(),
        })
    }

    fn matches(&self, b: &BoxRecord) -> bool {
        let v = self.value.as_str();
        match self.key.as_str() {
            "name" => b.name.contains(v),
            "id" => b.id.starts_with(v),
            "status" => b.state.as_str() == v,
            "label" => match v.split_once('=') {
                Some((k, want)) => b.spec.labels.get(k).is_some_and(|l| l == want),
                None => b.spec.labels.contains_key(v),
            },
            "exited" => {
                b.state == BoxState::Exited && b.exit_code.is_some_and(|c| c.to_string() == v)
            }
            _ => false,
        }
    }
}

/// Whether `b` passes every key of `filters` (any of that key's values).
fn passes(b: &BoxRecord, filters: &[PsFilter]) -> bool {
    filters.iter().all(|f| {
        filters
            .iter()
            .filter(|g| g.key == f.key)
            .any(|g| g.matches(b))
    })
}

/// `box ps`.
pub fn ps(
    engine: &Engine,
    all: bool,
    quiet: bool,
    filter: &[String],
    format: Format,
) -> Result<()> {
    let filters = filter
        .iter()
        .map(|f| PsFilter::parse(f))
        .collect::<Result<Vec<_>>>()?;
    let boxes: Vec<BoxRecord> = engine
        .list(all)?
        .into_iter()
        .filter(|b| passes(b, &filters))
        .collect();
    if quiet {
        for b in &boxes {
            println!("{}", b.short_id());
        }
        return Ok(());
    }
    if format == Format::Json {
        let v: Vec<_> = boxes.iter().map(|b| record_json(engine, b)).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut rows = vec![[
        "BOX ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES",
    ]
    .map(String::from)
    .to_vec()];
    for b in &boxes {
        let cmd = b.spec.cmd.clone().unwrap_or_default().join(" ");
        let cmd = if cmd.chars().count() > 20 {
            format!("{}…", cmd.chars().take(19).collect::<String>())
        } else {
            cmd
        };
        rows.push(vec![
            b.short_id().to_string(),
            b.image_name.clone(),
            format!("{cmd:?}"),
            age(b.created),
            status(b),
            b.spec
                .ports
                .iter()
                .map(|p| p.ps_text())
                .collect::<Vec<_>>()
                .join(", "),
            b.name.clone(),
        ]);
    }
    crate::table::print(&rows, 3)?;
    Ok(())
}

/// `box logs`.
pub fn logs(
    engine: &Engine,
    name: &str,
    follow: bool,
    tail: Option<usize>,
    since: Option<&str>,
    timestamps: bool,
) -> Result<()> {
    let rec = engine.get(name)?;
    let since = since
        .map(|s| {
            box_engine::logs::parse_since(s, SystemTime::now())
                .ok_or_else(|| anyhow!("--since {s}: not a time (RFC 3339, unix seconds, or 10m)"))
        })
        .transpose()?;
    let query = box_engine::logs::LogQuery {
        tail,
        since,
        timestamps,
        follow,
    };
    let id = rec.id.clone();
    let stopped = || {
        engine
            .get(&id)
            .map(|r| r.state != BoxState::Running)
            .unwrap_or(true)
    };
    box_engine::logs::read(
        &engine.paths().log_path(&rec.id),
        &query,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
        stopped,
    )?;
    Ok(())
}

/// `box inspect`: boxes first, then images.
pub fn inspect(engine: &Engine, names: &[String]) -> Result<()> {
    let mut out = Vec::new();
    for n in names {
        match engine.get(n) {
            Ok(r) => out.push(record_json(engine, &r)),
            Err(box_err) => match engine.images().resolve(n) {
                Ok(img) => out.push(json!({
                    "Id": img.id.to_string(),
                    "RepoTags": img.names,
                    "Created": img.created,
                    "Size": img.size,
                    "Os": img.os,
                    "Architecture": img.architecture,
                })),
                Err(_) => return Err(box_err.into()),
            },
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `box wait`: prints each box's exit code (and, like docker, succeeds itself).
pub fn wait(engine: &Engine, boxes: &[String]) -> Result<()> {
    for name in boxes {
        let rec = engine.get(name)?;
        println!("{}", supervisor::wait_exit(engine.paths(), &rec.id)?);
    }
    Ok(())
}

/// `box export`.
pub fn export(engine: &Engine, name: &str, output: Option<&std::path::Path>) -> Result<()> {
    match output {
        Some(path) => {
            let tmp = path.with_extension("box-partial");
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let result = engine
                .export(name, std::io::BufWriter::new(file))
                .map_err(anyhow::Error::from)
                .and_then(|mut w| w.flush().map_err(anyhow::Error::from));
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write a tar to a terminal: use -o FILE or redirect stdout");
            }
            let mut w = engine.export(name, std::io::stdout().lock())?;
            w.flush()?;
            Ok(())
        }
    }
}

/// `box diff`.
pub fn diff(engine: &Engine, name: &str) -> Result<()> {
    use box_image::snapshot::ChangeKind;
    for c in engine.diff(name)? {
        let k = match c.kind {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        };
        println!("{k} {}", c.path.display());
    }
    Ok(())
}

/// `box rename`.
pub fn rename(engine: &Engine, name: &str, new_name: &str) -> Result<()> {
    engine.rename(name, new_name)?;
    Ok(())
}

/// `box __supervise ID`: becomes the box's supervisor (never returns).
pub fn supervise(root: Option<PathBuf>, id: &str) -> ! {
    supervisor::run(&supervisor_paths(root), id)
}

/// `box __supervise-exec ID REQUEST`: becomes an exec session's supervisor (never returns).
pub fn supervise_exec(root: Option<PathBuf>, id: &str, request: &Path) -> ! {
    supervisor::exec::run_exec(&supervisor_paths(root), id, request)
}

/// What both supervisors do first: SIGPIPE ignored (a CLI killed before reading "started"
/// must not take its supervisor along), and the dirs the spawner passed (else `--root`/the
/// defaults).
fn supervisor_paths(root: Option<PathBuf>) -> Paths {
    // SAFETY: setting a signal disposition affects only this process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    supervisor::paths_from_env().unwrap_or_else(|| match root {
        Some(d) => Paths::with_data_dir(d),
        None => Paths::detect(),
    })
}
