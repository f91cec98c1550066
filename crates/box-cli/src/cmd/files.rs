//! `box cp BOX:SRC DEST` and `box cp SRC BOX:DEST` (docker's semantics: a directory is copied
//! recursively; into an existing directory it lands under its own name, otherwise it takes
//! DEST's name; `-` is a tar on stdout or stdin), `box commit` and `box container prune`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use box_engine::engine::Engine;
use box_engine::files::BoxPathKind;

/// `BOX:PATH` split in two; `None` for a host path (absolute, relative with `.`, or `-`).
fn split_box(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') || arg == "-" {
        return None;
    }
    match arg.split_once(':') {
        Some((b, p)) if !b.is_empty() => Some((b, if p.is_empty() { "/" } else { p })),
        _ => None,
    }
}

/// The last component of `p`, `.` for `/`.
fn base_name(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

fn parent_of(p: &str) -> String {
    match Path::new(p).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_string_lossy().into_owned(),
        _ if p.starts_with('/') => "/".into(),
        _ => ".".into(),
    }
}

/// The engine for `box cp SRC DEST`: that of the box either names (see
/// `boxes::engine_for_box`: rootless, a running box's mount namespace can only be entered
/// from its own user namespace).
pub fn cp_engine(root: Option<PathBuf>, src: &str, dest: &str) -> Result<Engine> {
    match split_box(src).or_else(|| split_box(dest)) {
        Some((b, _)) => super::boxes::engine_for_box(root, b),
        None => super::boxes::engine(root),
    }
}

/// `box cp`.
pub fn cp(engine: &Engine, src: &str, dest: &str) -> Result<()> {
    match (split_box(src), split_box(dest)) {
        (Some((b, path)), None) => copy_from_box(engine, b, path, dest),
        (None, Some((b, path))) => copy_into_box(engine, src, b, path),
        (Some(_), Some(_)) => bail!("box cp copies between a box and the host, not between boxes"),
        (None, None) => bail!("one of SRC and DEST must be BOX:PATH (box cp BOX:/etc/hosts ./)"),
    }
}

fn pipe() -> Result<(fs::File, fs::File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot make a pipe")?;
    Ok((fs::File::from(r), fs::File::from(w)))
}

fn copy_from_box(engine: &Engine, b: &str, path: &str, dest: &str) -> Result<()> {
    if dest == "-" {
        engine.copy_out(b, path, &base_name(path), std::io::stdout())?;
        return Ok(());
    }
    let (dir, name) = if Path::new(dest).is_dir() {
        (PathBuf::from(dest), base_name(path))
    } else {
        let parent = PathBuf::from(parent_of(dest));
        if !parent.is_dir() {
            bail!(
                "cannot copy to {dest}: {} is not a directory",
                parent.display()
            );
        }
        (parent, base_name(dest))
    };
    let (read, write) = pipe()?;
    std::thread::scope(|scope| -> Result<()> {
        let unpacker = scope.spawn(move || -> Result<()> {
            let mut archive = tar::Archive::new(read);
            archive.set_preserve_permissions(true);
            archive.set_overwrite(true);
            let res = archive
                .unpack(&dir)
                .with_context(|| format!("cannot unpack into {}", dir.display()));
            // Drain what is left, so that the writer never meets a closed pipe.
            let _ = std::io::copy(&mut archive.into_inner(), &mut std::io::sink());
            res
        });
        let copied = engine.copy_out(b, path, &name, write).map(drop);
        let unpacked = unpacker
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the unpacking thread panicked")));
        copied?;
        unpacked
    })
}

fn copy_into_box(engine: &Engine, src: &str, b: &str, path: &str) -> Result<()> {
    if src == "-" {
        engine.copy_in(b, path, std::io::stdin())?;
        return Ok(());
    }
    let meta = fs::symlink_metadata(src)
        .with_context(|| format!("cannot copy {src}: it does not exist"))?;
    let (dir, name) = match engine.box_path_kind(b, path)? {
        BoxPathKind::Dir => (path.to_string(), base_name(src)),
        BoxPathKind::Other if meta.is_dir() => {
            bail!("cannot copy directory {src} over the file {path} in box {b}")
        }
        _ => (parent_of(path), base_name(path)),
    };
    let (read, write) = pipe()?;
    std::thread::scope(|scope| -> Result<()> {
        let packer = scope.spawn(move || -> Result<()> {
            // A box side that gives up early closes the pipe: get EPIPE here, not SIGPIPE.
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(nix::sys::signal::Signal::SIGPIPE);
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_BLOCK,
                Some(&set),
                None,
            );
            let mut tar = tar::Builder::new(write);
            tar.follow_symlinks(false);
            if meta.is_dir() {
                tar.append_dir_all(&name, src)
            } else {
                tar.append_path_with_name(src, &name)
            }
            .with_context(|| format!("cannot read {src}"))?;
            tar.finish().context("cannot write the tar stream")
        });
        let copied = engine.copy_in(b, &dir, read);
        let packed = packer
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the packing thread panicked")));
        copied?;
        packed
    })
}

/// `box commit BOX [IMAGE[:TAG]]`: prints the new image's id.
pub fn commit(
    engine: &Engine,
    name: &str,
    image: Option<&str>,
    message: Option<&str>,
) -> Result<()> {
    let img = engine.commit(name, image, message)?;
    println!("{}", img.id);
    Ok(())
}

/// `box container prune`: removes every stopped box, printing their ids.
pub fn container_prune(engine: &Engine) -> Result<()> {
    let removed = engine.prune_boxes()?;
    if !removed.is_empty() {
        println!("Deleted Boxes:");
        for b in &removed {
            println!("{}", b.id);
        }
    }
    println!("Total removed boxes: {}", removed.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_and_host_paths() {
        assert_eq!(split_box("web:/etc/hosts"), Some(("web", "/etc/hosts")));
        assert_eq!(split_box("web:"), Some(("web", "/")));
        assert_eq!(split_box("/tmp/a:b"), None);
        assert_eq!(split_box("./a:b"), None);
        assert_eq!(split_box("-"), None);
        assert_eq!(split_box("plain"), None);
        assert_eq!(base_name("/etc/hosts"), "hosts");
        assert_eq!(base_name("/"), ".");
        assert_eq!(parent_of("/etc/hosts"), "/etc");
        assert_eq!(parent_of("/x"), "/");
        assert_eq!(parent_of("x"), ".");
    }
}
