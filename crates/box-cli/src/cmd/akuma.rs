//! Box commands around a box's supervisor and cgroup: `attach`, the Akuma verbs (`open`, `use`,
//! `peek`, `close`, `show`, `grab`), the lifecycle verbs (`restart`, `pause`, `unpause`, `top`,
//! `stats`, `port`), and the shell completion and man page generators.
//!
//! Their clap definitions live here ([`SessionCommand`], flattened into `cli::Command`), so that
//! these commands add one variant to the shared command enum.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use box_engine::db::{now_ms, BoxRecord, BoxState, StateChange};
use box_engine::engine::Engine;
use box_engine::error::EngineError;
use box_engine::spec::BoxSpec;
use box_engine::supervisor::{self, Prepared};
use clap::{CommandFactory, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use serde_json::json;

use super::attach::{self, AttachFlags, Relayed, DEFAULT_DETACH_KEYS};
use super::cli::{Cli, Format};

/// Shells `box completion` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// attach, the Akuma verbs, restart/pause/unpause/top/stats/port, completion and man.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Attach to a running box's output (and stdin); an ended box shows its recorded output.
    Attach {
        /// Do not forward stdin (watch only).
        #[arg(long)]
        no_stdin: bool,
        /// Take the box's stdin over: its current holder is disconnected.
        #[arg(long)]
        takeover: bool,
        /// Keys that detach and leave the box running ("" for none).
        #[arg(long, default_value = DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        /// The box.
        r#box: String,
    },
    /// Akuma: run a command in a new box called NAME (like `run --name NAME`).
    Open {
        /// Use this directory as the box's root (like `run --rootfs DIR`).
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Remove the box when its main process ends (like `run --rm`).
        #[arg(long)]
        tmp: bool,
        /// Run in the background and print the box's id.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Keep stdin open.
        #[arg(long, short = 'i')]
        interactive: bool,
        /// Give the box a terminal.
        #[arg(long, short = 't')]
        tty: bool,
        /// Image (ignored with --directory).
        #[arg(long, default_value = "host")]
        image: String,
        /// Name of the box.
        name: String,
        /// Command and arguments (default: the image's).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Akuma: run a command in the running box NAME (like `exec`).
    Use {
        /// Run in the background.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Give the command a terminal.
        #[arg(long, short = 't')]
        tty: bool,
        /// Keep stdin open (accepted for symmetry with exec; stdin is always passed).
        #[arg(long, short = 'i')]
        interactive: bool,
        /// The box.
        name: String,
        /// Command and arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Akuma: watch a box (like `attach`); an ended box shows its output and exit code.
    Peek {
        /// Take the box's stdin over (like `attach --takeover`).
        #[arg(long)]
        detach: bool,
        /// Keys that detach and leave the box running ("" for none).
        #[arg(long, default_value = DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        /// The box.
        name: String,
    },
    /// Akuma: kill every process of a box (even those that forked away), then remove it.
    Close {
        /// Boxes (names or ids).
        #[arg(required = true)]
        boxes: Vec<String>,
    },
    /// Akuma: inspect a box, with uptime, member pids and live CPU/memory/pids usage.
    Show {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The box (name or id).
        name: String,
    },
    /// Akuma: reattach to a box's primary process, taking its stdin over.
    Grab {
        /// The box.
        name: String,
        /// A process of the box (its host pid): the primary one, or a detached session's
        /// (`box use -d` prints it).
        pid: Option<i32>,
    },
    /// Stop boxes, then start them again.
    Restart {
        /// Seconds to wait before SIGKILL.
        #[arg(long, short = 't', default_value_t = 10)]
        time: u64,
        /// Boxes.
        #[arg(required = true)]
        boxes: Vec<String>,
    },
    /// Freeze every process of boxes.
    Pause {
        /// Boxes.
        #[arg(required = true)]
        boxes: Vec<String>,
    },
    /// Thaw paused boxes.
    Unpause {
        /// Boxes.
        #[arg(required = true)]
        boxes: Vec<String>,
    },
    /// List the processes of a box (host ps, default options -ef).
    Top {
        /// The box.
        r#box: String,
        /// ps options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_options: Vec<String>,
    },
    /// Live CPU %, memory and pids of boxes (default: every running one), every second.
    Stats {
        /// Print one sample and exit.
        #[arg(long)]
        no_stream: bool,
        /// Boxes.
        boxes: Vec<String>,
    },
    /// Published ports of a box (`80/tcp -> 0.0.0.0:8080`).
    Port {
        /// The box.
        r#box: String,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write man pages (box.1, box-run.1, …) into a directory.
    Man {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

/// Runs one of these commands; returns the exit code.
pub fn dispatch(root: Option<PathBuf>, cmd: SessionCommand) -> Result<i32> {
    let engine = || super::boxes::engine(root.clone());
    let done = |r: Result<()>| r.map(|()| 0);
    match cmd {
        SessionCommand::Attach {
            no_stdin,
            takeover,
            detach_keys,
            r#box,
        } => attach::attach(
            &engine()?,
            &r#box,
            &AttachFlags::new(no_stdin, takeover, &detach_keys)?,
        ),
        SessionCommand::Open {
            directory,
            tmp,
            detach,
            interactive,
            tty,
            image,
            name,
            command,
        } => {
            let (engine, prepared) = super::boxes::engine_starting(root)?;
            open(
                &engine,
                prepared,
                OpenFlags {
                    directory,
                    tmp,
                    detach,
                    interactive,
                    tty,
                    image,
                    name,
                    command,
                },
            )
        }
        SessionCommand::Use {
            detach,
            tty,
            interactive,
            name,
            command,
        } => {
            let engine = super::boxes::engine_for_box(root, &name)?;
            super::boxes::exec(
                &engine,
                &name,
                &command,
                super::boxes::ExecFlags {
                    tty,
                    interactive,
                    detach,
                    print_pid: true,
                    env: Vec::new(),
                    workdir: None,
                    user: None,
                },
            )
        }
        SessionCommand::Peek {
            detach,
            detach_keys,
            name,
        } => attach::attach(
            &engine()?,
            &name,
            &AttachFlags::new(false, detach, &detach_keys)?,
        ),
        SessionCommand::Close { boxes } => {
            let one = |n: &str| vec!["close".into(), n.into()];
            if let Some(code) = super::boxes::per_box_rootless(&root, &boxes, one) {
                return code;
            }
            done(close(
                &super::boxes::engine_for_box(root, &boxes[0])?,
                &boxes,
            ))
        }
        SessionCommand::Show { format, name } => done(show(
            &super::boxes::engine_for_box(root, &name)?,
            &name,
            format,
        )),
        SessionCommand::Grab { name, pid } => grab(&engine()?, &name, pid),
        SessionCommand::Restart { time, boxes } => {
            let one = |n: &str| vec!["restart".into(), "-t".into(), time.to_string(), n.into()];
            if let Some(code) = super::boxes::per_box_rootless(&root, &boxes, one) {
                return code;
            }
            done(restart(
                &super::boxes::engine_for_box(root, &boxes[0])?,
                &boxes,
                Duration::from_secs(time),
            ))
        }
        SessionCommand::Pause { boxes } => done(pause(&engine()?, &boxes, true)),
        SessionCommand::Unpause { boxes } => done(pause(&engine()?, &boxes, false)),
        SessionCommand::Top { r#box, ps_options } => done(top(
            &super::boxes::engine_for_box(root, &r#box)?,
            &r#box,
            &ps_options,
        )),
        SessionCommand::Stats { no_stream, boxes } => {
            // One box: seen from its own user namespace (rootless), as top and show do.
            let engine = match boxes.as_slice() {
                [one] => super::boxes::engine_for_box(root, one)?,
                _ => engine()?,
            };
            done(stats(&engine, &boxes, no_stream))
        }
        SessionCommand::Port { r#box } => done(super::networks::port(&engine()?, &r#box)),
        SessionCommand::Completion { shell } => done(completion(shell)),
        SessionCommand::Man { dir } => done(man(&dir)),
    }
}

fn box_bin() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the box binary to run the supervisor")
}

/// `open`'s flags.
struct OpenFlags {
    directory: Option<PathBuf>,
    tmp: bool,
    detach: bool,
    interactive: bool,
    tty: bool,
    image: String,
    name: String,
    command: Vec<String>,
}

/// `box open NAME CMD…`: `run --name NAME` (`--directory` = `--rootfs`, `--tmp` = `--rm`).
fn open(engine: &Engine, prepared: Option<Prepared>, f: OpenFlags) -> Result<i32> {
    let image = if f.directory.is_some() {
        String::new()
    } else {
        f.image
    };
    if f.directory.is_some() && f.command.is_empty() {
        bail!("box open --directory needs a command: there is no image to take one from");
    }
    let mut spec = BoxSpec::new(image, &[]);
    spec.name = Some(f.name);
    spec.cmd = (!f.command.is_empty()).then_some(f.command);
    spec.rootfs = f.directory;
    spec.auto_remove = f.tmp;
    spec.tty = f.tty;
    spec.stdin_open = f.interactive;
    let rec = engine.create(spec)?;
    if f.detach {
        super::boxes::spawn_detached(engine, &rec, prepared)?;
        println!("{}", rec.id);
        return Ok(0);
    }
    super::boxes::start_attached(engine, &rec, prepared)
}

/// `box close`: SIGKILL to every process of the box (through its cgroup, which holds even the
/// processes that double-forked away; without a cgroup, the pid namespace's init takes its
/// namespace down with it), then remove the box.
fn close(engine: &Engine, boxes: &[String]) -> Result<()> {
    for name in boxes {
        let rec = engine.get(name)?;
        super::boxes::stop_box(engine, &rec, Signal::SIGKILL, true, Duration::ZERO)?;
        match engine.remove(&rec.id, true) {
            Ok(_) | Err(EngineError::NoSuchBox(_)) => {}
            Err(e) => return Err(e.into()),
        }
        println!("{}", rec.name);
    }
    Ok(())
}

/// `box restart`: stop as `box stop` (SIGTERM to the init, SIGKILL after `grace`; a paused box
/// is thawed), then start detached.
fn restart(engine: &Engine, boxes: &[String], grace: Duration) -> Result<()> {
    for name in boxes {
        let rec = engine.get(name)?;
        super::boxes::stop_box(engine, &rec, Signal::SIGTERM, false, grace)?;
        let rec = engine.get(&rec.id).with_context(|| {
            format!(
                "box {} was removed when it stopped (--rm): nothing to restart",
                rec.name
            )
        })?;
        supervisor::spawn(&box_bin()?, engine.paths(), &rec.id)?;
        println!("{}", rec.name);
    }
    Ok(())
}

/// `box pause` (`freeze`) / `box unpause`.
fn pause(engine: &Engine, boxes: &[String], freeze: bool) -> Result<()> {
    let rt = engine.runtime()?;
    for name in boxes {
        let rec = engine.get(name)?;
        if freeze {
            if rec.state != BoxState::Running {
                bail!("box {} is {}, not running", rec.name, rec.state.as_str());
            }
            rt.pause(&rec.id)?;
            engine.db().update_state(&rec.id, &StateChange::Paused)?;
        } else {
            if rec.state != BoxState::Paused {
                bail!("box {} is {}, not paused", rec.name, rec.state.as_str());
            }
            rt.resume(&rec.id)?;
            engine.db().update_state(&rec.id, &StateChange::Unpaused)?;
        }
        println!("{}", rec.name);
    }
    Ok(())
}

fn require_active(rec: &BoxRecord) -> Result<()> {
    super::boxes::refuse_restarting(rec)?;
    if !rec.state.is_active() {
        bail!("box {} is {}, not running", rec.name, rec.state.as_str());
    }
    Ok(())
}

/// `box top BOX [ps options]`: the host's `ps` (default `-ef`), only the box's processes.
fn top(engine: &Engine, name: &str, ps_options: &[String]) -> Result<()> {
    let rec = engine.get(name)?;
    require_active(&rec)?;
    let pids: BTreeSet<i32> = engine.runtime()?.pids(&rec.id)?.into_iter().collect();
    let args: Vec<String> = if ps_options.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_options.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("cannot run ps (is procps installed?)")?;
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
    let Some(col) = header.split_whitespace().position(|h| h == "PID") else {
        bail!("ps {}: its output has no PID column", args.join(" "));
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{header}")?;
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            writeln!(stdout, "{line}")?;
        }
    }
    Ok(())
}

/// One usage sample of a box.
struct Sample {
    at: Instant,
    cpu_ns: u64,
    mem: u64,
    mem_limit: u64,
    pids: u64,
}

fn sample(rt: &box_runtime::Runtime, id: &str) -> Result<Sample> {
    let s = match rt.stats(id) {
        Ok(s) => s,
        Err(box_runtime::Error::Unsupported(why)) => {
            return proc_sample(rt, id).ok_or_else(|| anyhow::anyhow!(why));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Sample {
        at: Instant::now(),
        cpu_ns: s.cpu.usage.total,
        mem: s.memory.usage.usage,
        mem_limit: s.memory.usage.limit,
        pids: s.pids.current,
    })
}

/// A sample of a box without a cgroup (rootless without delegation), from /proc: CPU time
/// (utime + stime) and resident memory summed over its live processes (so CPU spent by
/// processes that already ended is not counted, and shared pages count once per process),
/// no memory limit. `None` when the box has no process.
fn proc_sample(rt: &box_runtime::Runtime, id: &str) -> Option<Sample> {
    let pids = rt.pids(id).ok().filter(|p| !p.is_empty())?;
    // SAFETY: sysconf only reads system constants.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let ns_per_tick = 1_000_000_000 / ticks.max(1) as u64;
    let (mut cpu_ns, mut mem) = (0u64, 0u64);
    for pid in &pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            cpu_ns += (t(11) + t(12)) * ns_per_tick;
        }
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
            let resident = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok());
            mem += resident.unwrap_or(0) * page.max(0) as u64;
        }
    }
    Some(Sample {
        at: Instant::now(),
        cpu_ns,
        mem,
        mem_limit: 0,
        pids: pids.len() as u64,
    })
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// `1.5MiB`-style sizes.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[u])
    }
}

/// Usage between two samples: CPU % of one CPU, memory used, its limit (the host's memory when
/// unlimited), memory %, pids.
struct Usage {
    cpu_percent: f64,
    mem: u64,
    mem_limit: u64,
    mem_percent: f64,
    pids: u64,
}

fn usage(a: &Sample, b: &Sample) -> Usage {
    let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
    let cpu = b.cpu_ns.saturating_sub(a.cpu_ns) as f64;
    // No limit reads as u64::MAX (v1: a page-rounded i64::MAX): use the host's memory.
    let limit = if b.mem_limit >= 1 << 62 || b.mem_limit == 0 {
        host_memory()
    } else {
        b.mem_limit
    };
    Usage {
        cpu_percent: cpu / wall * 100.0,
        mem: b.mem,
        mem_limit: limit,
        mem_percent: if limit == 0 {
            0.0
        } else {
            b.mem as f64 / limit as f64 * 100.0
        },
        pids: b.pids,
    }
}

/// `box stats`: one line per box; every second unless `no_stream`.
fn stats(engine: &Engine, names: &[String], no_stream: bool) -> Result<()> {
    let rt = engine.runtime()?;
    let pick = || -> Result<Vec<BoxRecord>> {
        if names.is_empty() {
            Ok(engine
                .list(false)?
                .into_iter()
                .filter(|r| r.state.is_active())
                .collect())
        } else {
            names.iter().map(|n| Ok(engine.get(n)?)).collect()
        }
    };
    let clear = !no_stream && std::io::stdout().is_terminal();
    let mut before: Vec<(String, Sample)> = Vec::new();
    let boxes = pick()?;
    for r in &boxes {
        if let Ok(s) = sample(&rt, &r.id) {
            before.push((r.id.clone(), s));
        }
    }
    let mut first = true;
    loop {
        std::thread::sleep(if first {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        });
        first = false;
        let boxes = pick()?;
        let mut rows = vec![[
            "BOX ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "PIDS",
        ]
        .map(String::from)
        .to_vec()];
        let mut after = Vec::new();
        for r in &boxes {
            let now = match sample(&rt, &r.id) {
                Ok(s) => s,
                Err(e) if !names.is_empty() && !r.state.is_active() => {
                    bail!("box {} is {}: {e}", r.name, r.state.as_str())
                }
                Err(_) => continue,
            };
            let u = before
                .iter()
                .find(|(id, _)| *id == r.id)
                .map(|(_, s)| usage(s, &now))
                .unwrap_or_else(|| usage(&now, &now));
            rows.push(vec![
                r.short_id().to_string(),
                r.name.clone(),
                format!("{:.2}%", u.cpu_percent),
                format!("{} / {}", human(u.mem), human(u.mem_limit)),
                format!("{:.2}%", u.mem_percent),
                u.pids.to_string(),
            ]);
            after.push((r.id.clone(), now));
        }
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        crate::table::print(&rows, 3)?;
        std::io::stdout().flush()?;
        if no_stream {
            return Ok(());
        }
        before = after;
    }
}

fn uptime(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `box show`: the record, plus uptime, member pids and usage over a quarter second.
fn show(engine: &Engine, name: &str, format: Format) -> Result<()> {
    let rec = engine.get(name)?;
    let live = rec.state.is_active();
    let rt = engine.runtime()?;
    let pids = if live {
        rt.pids(&rec.id).unwrap_or_default()
    } else {
        Vec::new()
    };
    let up_ms = match (live, rec.started_at) {
        (true, Some(t)) => Some(now_ms() - t),
        _ => None,
    };
    let usage = if live {
        match sample(&rt, &rec.id) {
            Ok(a) => {
                std::thread::sleep(Duration::from_millis(250));
                sample(&rt, &rec.id).ok().map(|b| usage(&a, &b))
            }
            Err(_) => None,
        }
    } else {
        None
    };
    if format == Format::Json {
        let v = json!({
            "Id": rec.id,
            "Name": rec.name,
            "Image": rec.image_name,
            "State": rec.state.as_str(),
            "Pid": rec.pid,
            "SupervisorPid": rec.supervisor_pid,
            "ExitCode": rec.exit_code,
            "OOMKilled": rec.oom_killed,
            "Created": rec.created,
            "StartedAt": rec.started_at,
            "FinishedAt": rec.finished_at,
            "RestartCount": rec.restart_count,
            "UptimeSeconds": up_ms.map(|m| m / 1000),
            "Pids": pids,
            "Usage": usage.as_ref().map(|u| json!({
                "CpuPercent": u.cpu_percent,
                "MemoryBytes": u.mem,
                "MemoryLimitBytes": u.mem_limit,
                "MemoryPercent": u.mem_percent,
                "Pids": u.pids,
            })),
            "Config": rec.spec,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let cmd = rec.spec.cmd.clone().unwrap_or_default().join(" ");
    writeln!(out, "Name:      {}", rec.name)?;
    writeln!(out, "Id:        {}", rec.id)?;
    match &rec.spec.rootfs {
        Some(dir) => writeln!(out, "Root:      {}", dir.display())?,
        None => writeln!(out, "Image:     {}", rec.image_name)?,
    }
    writeln!(out, "Command:   {cmd}")?;
    writeln!(out, "State:     {}", rec.state.as_str())?;
    if let Some(ms) = up_ms {
        writeln!(out, "Uptime:    {}", uptime(ms))?;
    }
    if !live {
        if let Some(code) = rec.exit_code {
            writeln!(
                out,
                "Exit code: {code}{}",
                if rec.oom_killed { " (OOM killed)" } else { "" }
            )?;
        }
    }
    if let Some(p) = rec.pid.filter(|_| live) {
        writeln!(out, "Main pid:  {p}")?;
    }
    if let Some(p) = rec.supervisor_pid.filter(|_| live) {
        writeln!(out, "Supervisor pid: {p}")?;
    }
    if live {
        let list: Vec<String> = pids.iter().map(i32::to_string).collect();
        writeln!(out, "Pids:      {}", list.join(" "))?;
    }
    if let Some(u) = &usage {
        writeln!(out, "CPU:       {:.2}%", u.cpu_percent)?;
        writeln!(
            out,
            "Memory:    {} / {} ({:.2}%)",
            human(u.mem),
            human(u.mem_limit),
            u.mem_percent
        )?;
        writeln!(out, "Processes: {}", u.pids)?;
    }
    writeln!(out, "Restarts:  {}", rec.restart_count)?;
    Ok(())
}

/// `box grab NAME [PID]`: takes the primary process's stdin over and relays its output. Exec'd
/// sessions are not run by the supervisor, so they cannot be grabbed (yet): say so.
fn grab(engine: &Engine, name: &str, pid: Option<i32>) -> Result<i32> {
    let rec = engine.get(name)?;
    if let Some(pid) = pid {
        let primary = rec.pid.filter(|_| rec.state.is_active());
        if primary != Some(pid) {
            let what = format!("session {pid} of box {}", rec.name);
            let session = engine.paths().exec_socket(&rec.id, pid);
            if session.exists() {
                match grab_session(&session, &what) {
                    // It may have ended between the look-up and the connect.
                    Err(_) if ended_session(engine, &rec, pid).is_some() => {}
                    other => return other,
                }
            }
            if let Some(code) = ended_session(engine, &rec, pid) {
                return session_post_mortem(engine, &rec, pid, code);
            }
            require_active(&rec)?;
            let members = engine.runtime()?.pids(&rec.id)?;
            if members.contains(&pid) {
                bail!(
                    "process {pid} of box {} is neither its primary process nor a detached session \
                     (`box use -d` starts those): its I/O belongs to whoever started it; \
                     `box grab {}` reattaches to the primary process{}",
                    rec.name,
                    rec.name,
                    primary.map(|p| format!(" (pid {p})")).unwrap_or_default()
                );
            }
            bail!(
                "box {} has no process {pid} (its processes: `box top {}`)",
                rec.name,
                rec.name
            );
        }
    }
    attach::attach(
        engine,
        &rec.id,
        &AttachFlags::new(false, true, DEFAULT_DETACH_KEYS)?,
    )
}

/// The exit code of box `rec`'s exec session `pid` when it has ended.
fn ended_session(engine: &Engine, rec: &BoxRecord, pid: i32) -> Option<i32> {
    supervisor::exec::session_exit_code(engine.paths(), &rec.id, pid)
}

/// `box grab BOX PID` of an exec session that has ended: its recorded output (stdout and stderr
/// kept apart), then its exit code on stderr; returns the code.
fn session_post_mortem(engine: &Engine, rec: &BoxRecord, pid: i32, code: i32) -> Result<i32> {
    attach::print_recorded_output(&engine.paths().exec_log_path(&rec.id, pid))?;
    eprintln!(
        "box: session {pid} of box {} exited with code {code}",
        rec.name
    );
    Ok(code)
}

/// `box grab BOX PID` of a detached exec session: takes its stdin over and relays its output
/// until it ends (its exit code) or the detach keys are typed.
fn grab_session(socket: &Path, what: &str) -> Result<i32> {
    let attached = supervisor::connect_attach_at(socket, what, b'W')?;
    let size = if attached.tty && std::io::stdin().is_terminal() {
        supervisor::connect_attach_at(socket, what, box_supervisor::hub::HELLO_RESIZE)
            .ok()
            .map(|a| a.stream)
    } else {
        None
    };
    let flags = AttachFlags::new(false, true, DEFAULT_DETACH_KEYS)?;
    Ok(
        match attach::relay(attached.stream, size, true, attached.tty, &flags)? {
            Relayed::Exited(code) => code,
            Relayed::Detached => 0,
            Relayed::Dropped => {
                eprintln!("box: detached from {what}: another client took it over");
                0
            }
        },
    )
}

/// `box completion SHELL`.
fn completion(shell: Shell) -> Result<()> {
    let mut cmd = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "box", &mut std::io::stdout().lock());
    Ok(())
}

/// `box man DIR`: box.1 and one page per (sub)command, named git-style (box-image-ls.1).
fn man(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    let mut written = 0;
    write_pages(dir, cmd, "box", &mut written)?;
    eprintln!("wrote {written} man pages to {}", dir.display());
    Ok(())
}

fn write_pages(dir: &Path, cmd: clap::Command, name: &str, written: &mut usize) -> Result<()> {
    let cmd = cmd.display_name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .with_context(|| format!("cannot render the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        write_pages(dir, sub.clone(), &sub_name, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_from_two_samples() {
        let t = Instant::now();
        let a = Sample {
            at: t,
            cpu_ns: 0,
            mem: 0,
            mem_limit: u64::MAX,
            pids: 1,
        };
        let b = Sample {
            at: t + Duration::from_secs(1),
            cpu_ns: 500_000_000,
            mem: 1 << 20,
            mem_limit: 4 << 20,
            pids: 3,
        };
        let u = usage(&a, &b);
        assert!((u.cpu_percent - 50.0).abs() < 0.01);
        assert!((u.mem_percent - 25.0).abs() < 0.01);
        assert_eq!(u.pids, 3);
        assert_eq!(human(1536), "1.5KiB");
        assert_eq!(uptime(61_000), "1m1s");
    }
}
