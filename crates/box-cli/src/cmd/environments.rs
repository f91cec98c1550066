//! `box init`, `box enter` and `box env status|export|import|rm`: per-directory environments.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use box_engine::environment::enter::{enter as enter_env, EnterOptions};
use box_engine::environment::{self, Environment, Source};
use serde_json::json;

use super::cli::{EnvCommand, EnvMode, Format};

pub(crate) fn project_dir(directory: Option<PathBuf>) -> Result<PathBuf> {
    match directory {
        Some(d) => Ok(d),
        None => std::env::current_dir().context("cannot read the current directory"),
    }
}

/// `box init`.
pub fn init(
    root: Option<PathBuf>,
    from: &str,
    mode: EnvMode,
    directory: Option<PathBuf>,
) -> Result<()> {
    let project = project_dir(directory)?;
    let started = std::time::Instant::now();
    let env = if from == "host" {
        let source = match mode {
            EnvMode::Busybox => Source::Busybox,
            EnvMode::System => Source::System,
        };
        environment::init(&project, source, None)?
    } else {
        // An image of the store, flattened; the project dir is resolved before the store's
        // user namespace (rootless) changes who we are.
        let project = std::fs::canonicalize(&project)
            .with_context(|| format!("cannot use {} as a project directory", project.display()))?;
        let engine = super::boxes::engine(root)?;
        let tar = engine.flatten_image(from, Vec::new())?;
        environment::init(
            &project,
            Source::Image(from.to_string()),
            Some(&mut tar.as_slice()),
        )?
    };
    eprintln!(
        "box: environment {} made in {} ({} ms); enter it with box enter",
        env.meta.name,
        env.dir().display(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// `box enter`'s arguments, read without clap.
pub struct QuickEnter {
    /// `--network`.
    pub network: Option<String>,
    /// `--mount-project`.
    pub mount_project: bool,
    /// `-C`/`--directory`.
    pub directory: Option<PathBuf>,
    /// After `--`.
    pub command: Vec<String>,
}

/// The arguments of `box enter [--network N] [--mount-project] [-C DIR] [-- CMD…]` when the
/// command line is exactly of that form (no global flags, no `--help`, nothing clap would
/// reject); anything else goes to clap, which defines the same command.
pub fn quick_enter_args() -> Option<QuickEnter> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("enter") {
        return None;
    }
    let mut q = QuickEnter {
        network: None,
        mount_project: false,
        directory: None,
        command: Vec::new(),
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--" => {
                q.command = args.collect();
                return Some(q);
            }
            "--mount-project" if !q.mount_project => q.mount_project = true,
            "--network" if q.network.is_none() => q.network = Some(args.next()?),
            "-C" | "--directory" if q.directory.is_none() => {
                q.directory = Some(PathBuf::from(args.next()?))
            }
            _ => return None,
        }
    }
    Some(q)
}

/// `box enter`: the program's exit code.
pub fn enter(
    network: Option<&str>,
    mount_project: bool,
    directory: Option<PathBuf>,
    command: Vec<String>,
) -> Result<i32> {
    let network_none = match network {
        None | Some("host") => false,
        Some("none") => true,
        Some(other) => bail!("--network {other}: an environment shares the host's network or has none (--network none)"),
    };
    let start = project_dir(directory)?;
    let env = Environment::find(&start)?;
    if command.is_empty() && std::io::stderr().is_terminal() {
        let _ = writeln!(
            std::io::stderr(),
            "box: entering environment {} ({}); exit to leave",
            env.meta.name,
            env.dir().display()
        );
    }
    Ok(enter_env(
        &env,
        &EnterOptions {
            network_none,
            mount_project,
            command,
        },
    )?)
}

/// `box env …`.
pub fn env(cmd: EnvCommand) -> Result<()> {
    match cmd {
        EnvCommand::Status { directory, format } => {
            let env = Environment::find(&project_dir(directory)?)?;
            let (bytes, files) = env.usage();
            let source = match &env.meta.source {
                Source::Busybox => "host (busybox)".to_string(),
                Source::System => "host (system)".to_string(),
                Source::Image(i) => format!("image {i}"),
            };
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "Name": env.meta.name,
                        "Path": env.dir(),
                        "Source": env.meta.source,
                        "Created": env.meta.created,
                        "Size": bytes,
                        "Files": files,
                    }))?
                );
            } else {
                println!("name:    {}", env.meta.name);
                println!("path:    {}", env.dir().display());
                println!("source:  {source}");
                println!("size:    {:.1} MB in {files} files", bytes as f64 / 1e6);
            }
        }
        EnvCommand::Export { output, directory } => {
            let env = Environment::find(&project_dir(directory)?)?;
            match output {
                Some(path) => {
                    let tmp = path.with_extension("box-partial");
                    let file = std::fs::File::create(&tmp)
                        .with_context(|| format!("cannot create {}", tmp.display()))?;
                    let result = environment::export(&env, std::io::BufWriter::new(file))
                        .map_err(anyhow::Error::from)
                        .and_then(|mut w| w.flush().map_err(anyhow::Error::from));
                    if let Err(e) = result {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e);
                    }
                    std::fs::rename(&tmp, &path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                None => {
                    if std::io::stdout().is_terminal() {
                        bail!(
                            "refusing to write a tar to a terminal: use -o FILE or redirect stdout"
                        );
                    }
                    let mut w = environment::export(&env, std::io::stdout().lock())?;
                    w.flush()?;
                }
            }
        }
        EnvCommand::Import { input, directory } => {
            let project = project_dir(directory)?;
            let env = match input {
                Some(path) => {
                    let file = std::fs::File::open(&path)
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    environment::import(&project, std::io::BufReader::new(file))?
                }
                None => environment::import(&project, std::io::stdin().lock())?,
            };
            eprintln!(
                "box: environment {} imported into {}",
                env.meta.name,
                env.dir().display()
            );
        }
        EnvCommand::Rm { directory } => {
            let env = Environment::find(&project_dir(directory)?)?;
            environment::remove(&env)?;
            println!("{}", env.dir().display());
        }
    }
    Ok(())
}
