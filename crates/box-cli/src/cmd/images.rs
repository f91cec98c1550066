//! Image commands: pull, push, images, inspect, prune, rmi, tag, login, logout.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, bail, Context, Result};
use box_image::db::ImageRecord;
use box_image::image::ImageStore;
use box_image::reference::Reference;
use box_image::registry::{
    BlockingRegistryClient, Credentials, NoProgress, Platform, RegistryOptions,
};
use serde_json::{json, Value};

use super::cli::{ArchiveFormat, Format, HostMode};
use super::progress::LayerProgress;

fn client(tls_verify: bool, credentials: Option<Credentials>) -> Result<BlockingRegistryClient> {
    Ok(BlockingRegistryClient::new(RegistryOptions {
        tls_verify,
        credentials,
        ..RegistryOptions::default()
    })?)
}

/// `box pull`. `host` is not in any registry: it is made here, offline, on first use.
pub fn pull(
    store: &ImageStore,
    image: &str,
    platform: Option<&str>,
    quiet: bool,
    tls_verify: bool,
) -> Result<()> {
    let reference = Reference::parse(image)?;
    if reference.familiar() == "host:latest" || reference.familiar() == "host" {
        return host(store, HostMode::Auto);
    }
    let platform = match platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    if !quiet {
        eprintln!("Pulling {reference}");
    }
    let progress = LayerProgress::new(quiet);
    let record = client(tls_verify, None)?.pull(&reference, &platform, store, &progress)?;
    println!("{}", record.id);
    Ok(())
}

/// `box push`.
pub fn push(
    store: &ImageStore,
    image: &str,
    destination: Option<&str>,
    tls_verify: bool,
) -> Result<()> {
    let record = store.resolve(image)?;
    let target = Reference::parse(destination.unwrap_or(image))?;
    eprintln!("Pushing {target}");
    client(tls_verify, None)?.push(store, &record, &target, &NoProgress)?;
    println!("{}", record.manifest_digest);
    Ok(())
}

/// Splits a stored name into (repository, tag) the way `docker images` shows them.
fn repo_and_tag(name: &str) -> (String, String) {
    let familiar = Reference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string());
    let slash = familiar.rfind('/').map_or(0, |i| i + 1);
    match familiar[slash..].rfind(':') {
        Some(i) => (
            familiar[..slash + i].to_string(),
            familiar[slash + i + 1..].to_string(),
        ),
        None => (familiar, "<none>".to_string()),
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.3} {}", UNITS[unit])
    }
}

fn summary(r: &ImageRecord) -> Value {
    json!({
        "Id": r.id.to_string(),
        "Names": r.names,
        "Digest": r.manifest_digest.to_string(),
        "Created": r.created,
        "Size": r.size,
        "Os": r.os,
        "Architecture": r.architecture,
    })
}

/// `box images`.
pub fn list(store: &ImageStore, quiet: bool, format: Format) -> Result<()> {
    let images = store.list()?;
    if quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in &images {
            if seen.insert(r.short_id().to_string()) {
                println!("{}", r.short_id());
            }
        }
        return Ok(());
    }
    if format == Format::Json {
        let v: Vec<Value> = images.iter().map(summary).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut rows = vec![["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
        .map(String::from)
        .to_vec()];
    for r in &images {
        let names = if r.names.is_empty() {
            vec![("<none>".to_string(), "<none>".to_string())]
        } else {
            r.names.iter().map(|n| repo_and_tag(n)).collect()
        };
        for (repo, tag) in names {
            rows.push(vec![
                repo,
                tag,
                r.short_id().to_string(),
                r.created.clone().unwrap_or_else(|| "-".into()),
                human_size(r.size),
            ]);
        }
    }
    crate::table::print(&rows, 2)?;
    Ok(())
}

/// `box image inspect`.
pub fn inspect(store: &ImageStore, names: &[String]) -> Result<()> {
    let mut out = Vec::new();
    for name in names {
        let r = store.resolve(name)?;
        let config: Value = serde_json::from_str(&r.config).unwrap_or(Value::Null);
        out.push(json!({
            "Id": r.id.to_string(),
            "RepoTags": r.names,
            "RepoDigests": r.names.iter().filter_map(|n| Reference::parse(n).ok())
                .map(|n| format!("{}@{}", n.name(), r.manifest_digest)).collect::<Vec<_>>(),
            "Created": r.created,
            "Size": r.size,
            "Os": r.os,
            "Architecture": r.architecture,
            "Config": config.get("config").cloned().unwrap_or(Value::Null),
            "RootFS": {
                "Type": "layers",
                "Layers": r.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
            },
            "Manifest": {"Digest": r.manifest_digest.to_string(), "MediaType": r.manifest_media_type},
            "GraphDriver": {"Name": "overlay", "Data": {
                "LowerDirs": store.lower_dirs(&r),
            }},
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `box image prune`.
pub fn prune(store: &ImageStore) -> Result<()> {
    let report = store.prune()?;
    for id in &report.images {
        println!("Deleted: {id}");
    }
    println!(
        "Total reclaimed: {} ({} blobs, {} layers)",
        human_size(report.blob_bytes),
        report.blobs,
        report.layers
    );
    Ok(())
}

/// `box rmi` / `box image rm`.
pub fn remove(store: &ImageStore, names: &[String], force: bool) -> Result<()> {
    let mut failed = None;
    for name in names {
        match store.remove(name, force) {
            Ok(outcome) => {
                for u in &outcome.untagged {
                    println!("Untagged: {u}");
                }
                if let Some(id) = &outcome.deleted {
                    println!("Deleted: {id}");
                }
            }
            Err(e) => {
                eprintln!("box: {e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) if names.len() == 1 => Err(e.into()),
        Some(_) => bail!("some images could not be removed"),
        None => Ok(()),
    }
}

/// `box tag`.
pub fn tag(store: &ImageStore, source: &str, target: &str) -> Result<()> {
    store.tag(source, target)?;
    Ok(())
}

/// `box load`.
pub fn load(store: &ImageStore, input: Option<&std::path::Path>, quiet: bool) -> Result<()> {
    let records = match input {
        Some(p) => box_image::archive::load(
            std::io::BufReader::new(
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            ),
            store,
        )?,
        None => box_image::archive::load(std::io::stdin(), store)?,
    };
    for r in &records {
        if !quiet {
            for n in &r.names {
                let shown = Reference::parse(n).map_or_else(|_| n.clone(), |r| r.familiar());
                println!("Loaded image: {shown}");
            }
        }
        if r.names.is_empty() || quiet {
            println!("Loaded image ID: {}", r.id);
        }
    }
    Ok(())
}

/// `box save`.
pub fn save(
    store: &ImageStore,
    names: &[String],
    format: ArchiveFormat,
    output: Option<&std::path::Path>,
) -> Result<()> {
    let format = match format {
        ArchiveFormat::DockerArchive => box_image::archive::SaveFormat::DockerArchive,
        ArchiveFormat::OciArchive => box_image::archive::SaveFormat::OciLayout,
    };
    match output {
        Some(path) => {
            // Written beside the target and renamed: a failed save leaves no partial archive.
            let tmp = path.with_extension("box-partial");
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let result =
                box_image::archive::save(store, names, format, std::io::BufWriter::new(file))
                    .map_err(anyhow::Error::from)
                    .and_then(|mut w| w.flush().map_err(anyhow::Error::from));
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect stdout");
            }
            let mut w = box_image::archive::save(store, names, format, stdout.lock())?;
            w.flush()?;
        }
    }
    Ok(())
}

/// `box import`.
pub fn import(store: &ImageStore, file: &std::path::Path, name: &str) -> Result<()> {
    let record = if file == std::path::Path::new("-") {
        box_image::archive::import_rootfs(std::io::stdin(), name, store)?
    } else {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        box_image::archive::import_rootfs(f, name, store)?
    };
    println!("{}", record.id);
    Ok(())
}

/// `box image host`: makes the offline `host` image.
pub fn host(store: &ImageStore, mode: HostMode) -> Result<()> {
    let opts = box_image::host::HostImageOptions {
        mode: match mode {
            HostMode::Auto => box_image::host::HostImageMode::Auto,
            HostMode::Busybox => box_image::host::HostImageMode::Busybox,
            HostMode::Binaries => box_image::host::HostImageMode::Binaries,
        },
        ..Default::default()
    };
    let record = box_image::host::build_host_image(store, &opts)?;
    println!("{}", record.id);
    Ok(())
}

/// `box login`: checks the credentials against the registry, then stores them (mode 0600).
pub fn login(
    registry: &str,
    username: Option<String>,
    password: Option<String>,
    password_stdin: bool,
) -> Result<()> {
    let username = match username {
        Some(u) => u,
        None => prompt("Username: ", true)?,
    };
    let password = match (password, password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => prompt("Password: ", false)?,
    };
    if username.is_empty() || password.is_empty() {
        bail!("a user name and a password are needed (--username, --password-stdin)");
    }
    let creds = Credentials::new(username, password);
    let tls_verify = !Reference::parse(&format!("{registry}/x"))
        .map(|r| r.is_local_registry())
        .unwrap_or(false);
    client(tls_verify, Some(creds.clone()))?
        .check_login(registry)
        .with_context(|| format!("cannot log in to {registry}"))?;
    Credentials::store(registry, &creds)?;
    println!("Login Succeeded!");
    Ok(())
}

/// `box logout`.
pub fn logout(registry: &str) -> Result<()> {
    if Credentials::remove(registry)? {
        println!("Removed login credentials for {registry}");
        Ok(())
    } else {
        Err(anyhow!("not logged in to {registry}"))
    }
}

/// Asks on the terminal; `echo` false hides what is typed.
fn prompt(question: &str, echo: bool) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "{} needed: pass it as a flag",
            question.trim_end_matches([':', ' '])
        );
    }
    eprint!("{question}");
    let saved = tcgetattr(&stdin).ok();
    if let (false, Some(t)) = (echo, &saved) {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let (false, Some(t)) = (echo, &saved) {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
        eprintln!();
    }
    read.context("cannot read from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            repo_and_tag("localhost:5000/a/b:v1"),
            ("localhost:5000/a/b".to_string(), "v1".to_string())
        );
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500_000), "1.500 MB");
    }
}
