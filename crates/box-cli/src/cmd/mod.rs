//! `box`: docker's verbs over box-image (and, with the engine, boxes). This module parses the
//! command line, picks the data directory, and turns library errors into messages.

pub mod akuma;
mod attach;
mod boxes;
pub mod cli;
mod environments;
mod files;
mod images;
mod networks;
mod packages;
mod progress;
mod project;
mod userns;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use box_image::image::ImageStore;
use clap::Parser;

use cli::{Cli, Command, ImageCommand, SystemCommand};

/// Entry point of the `box` binary (also `box-runc` when called by that name).
pub fn main() -> ExitCode {
    let called_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if called_as == "box-runc" {
        return crate::runc::main();
    }
    // SAFETY: restoring the default SIGPIPE disposition of this process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // `box enter` is a hot path (entering an environment should cost little more than a
    // chroot): its usual forms skip building the whole command line's parser.
    if let Some(args) = environments::quick_enter_args() {
        return exit_code(environments::enter(
            args.network.as_deref(),
            args.mount_project,
            args.directory,
            args.command,
        ));
    }
    let cli = Cli::parse();
    exit_code(dispatch(cli))
}

fn exit_code(result: Result<i32>) -> ExitCode {
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("box: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Where Box keeps its data: /var/lib/box as root, $XDG_DATA_HOME/box (~/.local/share/box)
/// rootless.
pub fn data_dir(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(d) = explicit {
        return d;
    }
    if !box_runtime::idmap::running_rootless() {
        return PathBuf::from("/var/lib/box");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("box"),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
            PathBuf::from(home).join(".local/share/box")
        }
    }
}

/// Opens the store; rootless, first moves into the user namespace with the user's subordinate
/// ids (every command touches the store before it starts any thread).
fn open_store(root: Option<PathBuf>) -> Result<ImageStore> {
    userns::enter_if_rootless()?;
    let dir = data_dir(root);
    ImageStore::open(&dir, box_runtime::idmap::running_rootless())
        .with_context(|| format!("cannot open Box's store in {}", dir.display()))
}

fn dispatch(cli: Cli) -> Result<i32> {
    let root = cli.root;
    let done = |r: Result<()>| r.map(|()| 0);
    match cli.command {
        Command::Supervise { id } => boxes::supervise(root, &id),
        Command::SuperviseExec { id, request } => boxes::supervise_exec(root, &id, &request),
        Command::Run { detach, opts } => {
            let (engine, prepared) = boxes::engine_starting(root)?;
            boxes::run(&engine, prepared, opts, detach)
        }
        Command::Create { opts } => done(boxes::create(&boxes::engine(root)?, opts)),
        Command::Exec {
            interactive,
            tty,
            detach,
            env,
            workdir,
            user,
            r#box,
            command,
        } => boxes::exec(
            &boxes::engine_for_box(root, &r#box)?,
            &r#box,
            &command,
            boxes::ExecFlags {
                tty,
                interactive,
                detach,
                print_pid: false,
                env,
                workdir,
                user,
            },
        ),
        Command::Start { attach, boxes: b } => boxes::start(&boxes::engine(root)?, &b, attach),
        Command::Stop { time, boxes: b } => {
            let one = |n: &str| vec!["stop".into(), "-t".into(), time.to_string(), n.into()];
            if let Some(code) = boxes::per_box_rootless(&root, &b, one) {
                return code;
            }
            done(boxes::stop(
                &boxes::engine_for_box(root, &b[0])?,
                &b,
                std::time::Duration::from_secs(time),
            ))
        }
        Command::Kill { signal, boxes: b } => {
            let one = |n: &str| vec!["kill".into(), "-s".into(), signal.clone(), n.into()];
            if let Some(code) = boxes::per_box_rootless(&root, &b, one) {
                return code;
            }
            done(boxes::kill(
                &boxes::engine_for_box(root, &b[0])?,
                &b,
                &signal,
            ))
        }
        Command::Rm {
            force,
            volumes: v,
            boxes: b,
        } => {
            let one = |n: &str| {
                let mut a = vec!["rm".to_string()];
                a.extend(force.then(|| "-f".to_string()));
                a.extend(v.then(|| "-v".to_string()));
                a.push(n.into());
                a
            };
            if let Some(code) = boxes::per_box_rootless(&root, &b, one) {
                return code;
            }
            done(boxes::remove(
                &boxes::engine_for_box(root, &b[0])?,
                &b,
                force,
                v,
            ))
        }
        Command::Volume(cmd) => done(volumes::volume(&boxes::engine(root)?, cmd)),
        Command::Network(cmd) => done(networks::network(&boxes::engine(root)?, cmd)),
        Command::System(SystemCommand::Boot) => done(boxes::boot(&boxes::engine(root)?)),
        Command::System(SystemCommand::Reset { force }) => {
            done(boxes::system_reset(&boxes::engine(root)?, force))
        }
        Command::Cp { src, dest } => done(files::cp(
            &files::cp_engine(root, &src, &dest)?,
            &src,
            &dest,
        )),
        Command::Commit {
            message,
            r#box,
            image,
        } => done(files::commit(
            &boxes::engine(root)?,
            &r#box,
            image.as_deref(),
            message.as_deref(),
        )),
        Command::Container(cli::ContainerCommand::Prune { force: _ }) => {
            done(files::container_prune(&boxes::engine(root)?))
        }
        Command::Init {
            from,
            mode,
            directory,
        } => done(environments::init(root, &from, mode, directory)),
        Command::Enter {
            network,
            mount_project,
            directory,
            command,
        } => environments::enter(network.as_deref(), mount_project, directory, command),
        Command::Env(cmd) => done(environments::env(cmd)),
        Command::Pkg {
            directory,
            box_name,
            command,
        } => done(packages::pkg(root, directory, box_name, command)),
        Command::Up { file } => done(project::up(&boxes::engine(root)?, file)),
        Command::Down { file, time } => {
            // Rootless, the box is stopped from its own user namespace (as `box stop` does); a
            // file that cannot be read is reported by `down` itself.
            let engine = match project::box_name(file.clone()) {
                Ok(name) => boxes::engine_for_box(root, &name)?,
                Err(_) => boxes::engine(root)?,
            };
            done(project::down(
                &engine,
                file,
                std::time::Duration::from_secs(time),
            ))
        }
        Command::Ps {
            all,
            quiet,
            filter,
            format,
        } => done(boxes::ps(
            &boxes::engine(root)?,
            all,
            quiet,
            &filter,
            format,
        )),
        Command::Logs {
            follow,
            tail,
            since,
            timestamps,
            r#box,
        } => done(boxes::logs(
            &boxes::engine(root)?,
            &r#box,
            follow,
            tail,
            since.as_deref(),
            timestamps,
        )),
        Command::Inspect { names } => done(boxes::inspect(&boxes::engine(root)?, &names)),
        Command::Wait { boxes: b } => done(boxes::wait(&boxes::engine(root)?, &b)),
        Command::Export { output, r#box } => done(boxes::export(
            &boxes::engine(root)?,
            &r#box,
            output.as_deref(),
        )),
        Command::Diff { r#box } => done(boxes::diff(&boxes::engine(root)?, &r#box)),
        Command::Session(c) => akuma::dispatch(root, c),
        Command::Rename { r#box, name } => {
            done(boxes::rename(&boxes::engine(root)?, &r#box, &name))
        }
        Command::Pull {
            platform,
            quiet,
            registry,
            image,
        } => done(images::pull(
            &open_store(root)?,
            &image,
            platform.as_deref(),
            quiet,
            registry.tls_verify,
        )),
        Command::Push {
            registry,
            image,
            destination,
        } => done(images::push(
            &open_store(root)?,
            &image,
            destination.as_deref(),
            registry.tls_verify,
        )),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => {
            done(images::list(&open_store(root)?, a.quiet, a.format))
        }
        Command::Image(ImageCommand::Inspect { images: names }) => {
            done(images::inspect(&open_store(root)?, &names))
        }
        Command::Image(ImageCommand::Prune { force: _ }) => done(images::prune(&open_store(root)?)),
        Command::Rmi {
            force,
            images: names,
        }
        | Command::Image(ImageCommand::Rm {
            force,
            images: names,
        }) => done(images::remove(&open_store(root)?, &names, force)),
        Command::Tag { source, target } | Command::Image(ImageCommand::Tag { source, target }) => {
            done(images::tag(&open_store(root)?, &source, &target))
        }
        Command::Login {
            username,
            password,
            password_stdin,
            registry,
        } => done(images::login(&registry, username, password, password_stdin)),
        Command::Logout { registry } => done(images::logout(&registry)),
        Command::Load { input, quiet } => {
            done(images::load(&open_store(root)?, input.as_deref(), quiet))
        }
        Command::Save {
            output,
            format,
            images: names,
        } => done(images::save(
            &open_store(root)?,
            &names,
            format,
            output.as_deref(),
        )),
        Command::Import { file, name } => done(images::import(&open_store(root)?, &file, &name)),
        Command::Image(ImageCommand::Host { mode }) => done(images::host(&open_store(root)?, mode)),
    }
}
