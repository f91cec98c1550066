//! host: the offline `host` image (IsoBox). A one-layer image made from the host's own busybox
//! (busybox mode) or from a list of host programs with every shared library they need, found
//! from their ELF headers (binaries mode, never by running ldd), plus the FHS directories and
//! a small /etc. Stored as the ordinary image `host:latest`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use goblin::elf::Elf;

use crate::archive::{commit_one_layer, GeneratedConfig};
use crate::compression::MEDIA_TYPE_OCI_LAYER_TAR;
use crate::db::ImageRecord;
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::image::ImageStore;

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::io_path("read", path, source)
}

fn write_err(source: io::Error) -> ImageError {
    ImageError::io("cannot write the host image layer", source)
}

/// How the host image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostImageMode {
    /// Busybox when the host has one, binaries otherwise.
    #[default]
    Auto,
    /// The host's busybox and its applet links.
    Busybox,
    /// The programs of [`HostImageOptions::binaries`] and their shared libraries.
    Binaries,
}

/// Programs copied in binaries mode unless the caller gives its own list.
pub const DEFAULT_BINARIES: &[&str] = &[
    "sh", "bash", "ls", "cat", "cp", "mv", "rm", "mkdir", "rmdir", "ln", "chmod", "chown", "touch",
    "echo", "printf", "pwd", "head", "tail", "wc", "sort", "uniq", "cut", "tr", "tee", "date",
    "sleep", "true", "false", "test", "dirname", "basename", "readlink", "realpath", "stat", "du",
    "df", "find", "xargs", "grep", "sed", "awk", "tar", "gzip", "gunzip", "zcat", "ps", "kill",
    "env", "id", "whoami", "uname", "hostname", "which", "less", "clear",
];

/// The search path used when the caller gives none and PATH is unset.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Top-level directories every host image has (created where nothing else is at that path).
const FHS_DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("usr/lib", 0o755),
    ("usr/local", 0o755),
    ("usr/local/bin", 0o755),
    ("lib", 0o755),
    ("lib64", 0o755),
    ("etc", 0o755),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("root", 0o700),
    ("home", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
    ("opt", 0o755),
    ("mnt", 0o755),
    ("srv", 0o755),
];

/// Top-level host directories mirrored as symlinks in binaries mode when the host has them so
/// (merged /usr), so that programs found under /usr/bin are also at /bin.
const MERGED_USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Options for [`build_host_image`] and [`plan_host_tree`].
#[derive(Debug, Clone)]
pub struct HostImageOptions {
    /// Busybox, binaries, or whichever the host allows.
    pub mode: HostImageMode,
    /// The busybox binary; found at /bin/busybox or on the search path when `None`.
    pub busybox: Option<PathBuf>,
    /// Program names (or absolute paths) copied in binaries mode.
    pub binaries: Vec<String>,
    /// Where programs are looked up; `$PATH` (or a standard path) when `None`.
    pub search_path: Option<OsString>,
    /// The host's resolv.conf to copy; /etc/resolv.conf when `None`.
    pub resolv_conf: Option<PathBuf>,
    /// The name the image is stored under.
    pub name: String,
}

impl Default for HostImageOptions {
    fn default() -> Self {
        HostImageOptions {
            mode: HostImageMode::Auto,
            busybox: None,
            binaries: DEFAULT_BINARIES.iter().map(|s| (*s).to_string()).collect(),
            search_path: None,
            resolv_conf: None,
            name: "host:latest".to_string(),
        }
    }
}

impl HostImageOptions {
    fn path_dirs(&self) -> Vec<PathBuf> {
        let path = self
            .search_path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_else(|| OsString::from(DEFAULT_PATH));
        std::env::split_paths(&path)
            .filter(|p| p.is_absolute())
            .collect()
    }
}

/// One entry of the host image's file tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostNode {
    /// A directory with this mode.
    Dir {
        /// Permission bits (with sticky bit).
        mode: u32,
    },
    /// A copy of a host file.
    File {
        /// The host file read when the layer is written.
        source: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// A generated file.
    Data {
        /// The file's content.
        bytes: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, as on the host.
        target: PathBuf,
    },
}

/// The host image's file tree, keyed by path relative to `/`; written as a tar in path order.
#[derive(Debug, Clone, Default)]
pub struct HostTree {
    entries: BTreeMap<PathBuf, HostNode>,
    /// The mode that was used (never `Auto`).
    pub mode: HostImageMode,
    /// Requested programs that were not found on the host (binaries mode).
    pub missing: Vec<String>,
}

impl HostTree {
    /// The entry at `path` (relative or absolute: a leading `/` is ignored).
    pub fn get(&self, path: impl AsRef<Path>) -> Option<&HostNode> {
        self.entries.get(&relative(path.as_ref()))
    }

    /// Every entry, in the order they are written.
    pub fn entries(&self) -> impl Iterator<Item = (&Path, &HostNode)> {
        self.entries.iter().map(|(p, n)| (p.as_path(), n))
    }

    /// Inserts `node` at `path` unless something is already there; parents are created as
    /// 0755 directories where missing. Returns whether it was inserted.
    fn insert(&mut self, path: &Path, node: HostNode) -> bool {
        let path = relative(path);
        if path.as_os_str().is_empty() || self.entries.contains_key(&path) {
            return false;
        }
        let mut parent = path.parent();
        while let Some(p) = parent {
            if p.as_os_str().is_empty() {
                break;
            }
            self.entries
                .entry(p.to_path_buf())
                .or_insert(HostNode::Dir { mode: 0o755 });
            parent = p.parent();
        }
        self.entries.insert(path, node);
        true
    }

    /// Copies the host path `path` into the tree at the same place, mirroring every symlink on
    /// the way (the link and its target). Returns the resolved host path of the final file.
    fn add_host_path(&mut self, path: &Path) -> Result<PathBuf> {
        let mut pending: VecDeque<OsString> = components(path);
        let mut current = PathBuf::from("/");
        let mut hops = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                current.pop();
                continue;
            }
            let next = current.join(&name);
            let meta = fs::symlink_metadata(&next).map_err(read_err(&next))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                hops += 1;
                if hops > 40 {
                    return Err(ImageError::Host(format!(
                        "host image: too many symlinks resolving {}",
                        path.display()
                    )));
                }
                let target = fs::read_link(&next).map_err(read_err(&next))?;
                self.insert(
                    &next,
                    HostNode::Symlink {
                        target: target.clone(),
                    },
                );
                let mut rest = components(&target);
                rest.extend(pending);
                pending = rest;
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
            } else if ft.is_dir() {
                if !self.entries.contains_key(&relative(&next)) {
                    self.insert(
                        &next,
                        HostNode::Dir {
                            mode: meta.mode() & 0o7777,
                        },
                    );
                }
                current = next;
            } else {
                if !pending.is_empty() {
                    return Err(ImageError::io_path(
                        "resolve",
                        &next,
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
                self.insert(
                    &next,
                    HostNode::File {
                        source: next.clone(),
                        mode: meta.mode() & 0o7777,
                    },
                );
                current = next;
            }
        }
        Ok(current)
    }

    /// Writes the tree as an uncompressed tar: path order, owner 0:0, mtime 0, so the same host
    /// files always give the same layer digest.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<W> {
        let mut builder = tar::Builder::new(out);
        for (path, node) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match node {
                HostNode::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, path, io::empty())
                        .map_err(write_err)?;
                }
                HostNode::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, target)
                        .map_err(write_err)?;
                }
                HostNode::Data { bytes, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(bytes.len() as u64);
                    builder
                        .append_data(&mut header, path, bytes.as_slice())
                        .map_err(write_err)?;
                }
                HostNode::File { source, mode } => {
                    let file = fs::File::open(source).map_err(read_err(source))?;
                    let len = file.metadata().map_err(read_err(source))?.len();
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(len);
                    // A file that shrinks while being read would corrupt the stream: read
                    // exactly `len` bytes and fail if fewer arrive.
                    let reader = ExactReader {
                        inner: file.take(len),
                        left: len,
                    };
                    builder
                        .append_data(&mut header, path, reader)
                        .map_err(write_err)?;
                }
            }
        }
        builder.into_inner().map_err(write_err)
    }
}

/// Reads exactly `left` bytes from `inner`, failing on an early end.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being copied",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// What one ELF object needs from the dynamic loader.
#[derive(Debug, Clone, Default)]
struct ElfDeps {
    interpreter: Option<PathBuf>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    is_64: bool,
    machine: u16,
}

/// Reads the dynamic dependencies of an ELF file; `None` when the file is not ELF.
fn read_elf(path: &Path) -> Result<Option<ElfDeps>> {
    let bytes = fs::read(path).map_err(read_err(path))?;
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let elf = Elf::parse(&bytes).map_err(|e| {
        ImageError::Host(format!(
            "host image: {} is not a readable ELF file: {e}",
            path.display()
        ))
    })?;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(Some(ElfDeps {
        interpreter: elf.interpreter.map(PathBuf::from),
        needed: elf.libraries.iter().map(|s| (*s).to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        is_64: elf.is_64,
        machine: elf.header.e_machine,
    }))
}

/// Finds shared libraries the way the dynamic loader does: DT_RPATH (when there is no
/// DT_RUNPATH), DT_RUNPATH, the directories of /etc/ld.so.conf, then the default directories.
#[derive(Debug, Clone)]
pub struct LibraryResolver {
    system_dirs: Vec<PathBuf>,
    cache: HashMap<PathBuf, Option<ElfDeps>>,
}

impl LibraryResolver {
    /// A resolver for this host: /etc/ld.so.conf (with its includes) and the default dirs.
    pub fn from_host() -> Self {
        let mut dirs = Vec::new();
        let mut seen_conf = HashSet::new();
        read_ld_so_conf(Path::new("/etc/ld.so.conf"), &mut dirs, &mut seen_conf, 0);
        for d in [
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib/aarch64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/lib64",
            "/usr/lib64",
            "/lib",
            "/usr/lib",
        ] {
            dirs.push(PathBuf::from(d));
        }
        let mut seen = HashSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        LibraryResolver {
            system_dirs: dirs,
            cache: HashMap::new(),
        }
    }

    /// The directories searched after an object's own RPATH/RUNPATH, in order.
    pub fn system_dirs(&self) -> &[PathBuf] {
        &self.system_dirs
    }

    fn deps(&mut self, path: &Path) -> Result<Option<ElfDeps>> {
        if let Some(d) = self.cache.get(path) {
            return Ok(d.clone());
        }
        let d = read_elf(path)?;
        self.cache.insert(path.to_path_buf(), d.clone());
        Ok(d)
    }

    fn find(
        &mut self,
        name: &str,
        from: &ElfDeps,
        origin: &Path,
        exe_rpath: &[String],
    ) -> Result<Option<PathBuf>> {
        if name.contains('/') {
            let p = PathBuf::from(name);
            return Ok(p.exists().then_some(p));
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        let expand = |d: &str| -> PathBuf {
            let origin = origin.to_string_lossy();
            let lib = if from.is_64 { "lib64" } else { "lib" };
            PathBuf::from(
                d.replace("${ORIGIN}", &origin)
                    .replace("$ORIGIN", &origin)
                    .replace("${LIB}", lib)
                    .replace("$LIB", lib),
            )
        };
        if from.runpath.is_empty() {
            dirs.extend(from.rpath.iter().map(|d| expand(d)));
            dirs.extend(exe_rpath.iter().map(|d| expand(d)));
        }
        dirs.extend(from.runpath.iter().map(|d| expand(d)));
        dirs.extend(self.system_dirs.iter().cloned());
        for dir in dirs {
            let candidate = dir.join(name);
            if !candidate.is_file() {
                continue;
            }
            // Skip libraries of another class or machine (i386 beside x86_64).
            match self.deps(&candidate) {
                Ok(Some(d)) if d.is_64 == from.is_64 && d.machine == from.machine => {
                    return Ok(Some(candidate))
                }
                _ => continue,
            }
        }
        Ok(None)
    }

    /// Adds `program` (a host path) to `tree` with its ELF interpreter and every shared library
    /// it needs, transitively. Scripts bring their `#!` interpreter. Returns unresolved
    /// library names.
    fn add_with_closure(&mut self, tree: &mut HostTree, program: &Path) -> Result<Vec<String>> {
        let mut unresolved = Vec::new();
        let mut queue: VecDeque<(PathBuf, Vec<String>)> = VecDeque::new();
        let mut done: HashSet<PathBuf> = HashSet::new();
        let real = tree.add_host_path(program)?;
        queue.push_back((real, Vec::new()));
        while let Some((path, exe_rpath)) = queue.pop_front() {
            if !done.insert(path.clone()) {
                continue;
            }
            let Some(deps) = self.deps(&path)? else {
                if let Some(interp) = shebang(&path) {
                    if interp.is_absolute() && interp.exists() {
                        let real = tree.add_host_path(&interp)?;
                        queue.push_back((real, Vec::new()));
                    }
                }
                continue;
            };
            let exe_rpath = if exe_rpath.is_empty() {
                deps.rpath.clone()
            } else {
                exe_rpath
            };
            if let Some(interp) = &deps.interpreter {
                let real = tree.add_host_path(interp)?;
                done.insert(real);
            }
            let origin = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            for name in &deps.needed {
                match self.find(name, &deps, &origin, &exe_rpath)? {
                    Some(lib) => {
                        let real = tree.add_host_path(&lib)?;
                        queue.push_back((real, exe_rpath.clone()));
                    }
                    None => unresolved.push(name.clone()),
                }
            }
        }
        Ok(unresolved)
    }
}

/// The interpreter of a `#!` script.
fn shebang(path: &Path) -> Option<PathBuf> {
    let mut f = fs::File::open(path).ok()?;
    let mut buf = [0u8; 256];
    let n = f.read(&mut buf).ok()?;
    let head = buf.get(..n)?;
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim();
    line.split_whitespace().next().map(PathBuf::from)
}

/// Reads an ld.so.conf file: one directory per line, `include GLOB` lines, `#` comments.
fn read_ld_so_conf(path: &Path, dirs: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>, depth: u32) {
    if depth > 8 || !seen.insert(path.to_path_buf()) {
        return;
    }
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    let base = path.parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap ") {
            continue;
        }
        if let Some(pattern) = line.strip_prefix("include") {
            for pat in pattern.split_whitespace() {
                let pat = base.join(pat);
                for file in glob_last_component(&pat) {
                    read_ld_so_conf(&file, dirs, seen, depth + 1);
                }
            }
            continue;
        }
        for dir in line.split([':', ',', ' ', '\t']).filter(|s| !s.is_empty()) {
            if dir.starts_with('/') {
                dirs.push(PathBuf::from(dir));
            }
        }
    }
}

/// Expands `*` and `?` in the last component of `pattern`, sorted (as glob(3) does).
fn glob_last_component(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    if !name.contains(['*', '?']) {
        return if pattern.exists() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| wildcard_match(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn wildcard_match(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard_match(&pat[1..], s) || (!s.is_empty() && wildcard_match(pat, &s[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard_match(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => wildcard_match(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// Finds an executable called `name` in `dirs` (an absolute `name` is taken as is).
fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.starts_with('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The host's busybox: the one in the options, /bin/busybox, or the first on the search path.
pub fn find_busybox(opts: &HostImageOptions) -> Option<PathBuf> {
    if let Some(p) = &opts.busybox {
        return is_executable(p).then(|| p.clone());
    }
    let bin = PathBuf::from("/bin/busybox");
    if is_executable(&bin) {
        return Some(bin);
    }
    find_program("busybox", &opts.path_dirs())
}

/// The applet paths (relative, like `bin/sh`) a busybox binary installs.
fn busybox_applets(busybox: &Path) -> Vec<PathBuf> {
    let valid = |p: &Path| {
        !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
    };
    if let Ok(out) = Command::new(busybox).arg("--list-full").output() {
        if out.status.success() {
            let list: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| PathBuf::from(l.trim()))
                .filter(|p| valid(p))
                .collect();
            if !list.is_empty() {
                return list;
            }
        }
    }
    match Command::new(busybox).arg("--list").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| Path::new("bin").join(l.trim()))
            .filter(|p| valid(p) && p.components().count() == 2)
            .collect(),
        _ => Vec::new(),
    }
}

/// Plans the host image's file tree without writing anything.
pub fn plan_host_tree(opts: &HostImageOptions) -> Result<HostTree> {
    let busybox = match opts.mode {
        HostImageMode::Binaries => None,
        HostImageMode::Busybox => Some(find_busybox(opts).ok_or_else(|| {
            ImageError::Host(
                "host image: no busybox found (looked at /bin/busybox and on PATH); \
                 install busybox or use binaries mode"
                    .to_string(),
            )
        })?),
        HostImageMode::Auto => find_busybox(opts),
    };
    let mut resolver = LibraryResolver::from_host();
    let mut tree = HostTree::default();
    let path_line;
    match busybox {
        Some(bb) => {
            tree.mode = HostImageMode::Busybox;
            let real = fs::canonicalize(&bb).map_err(read_err(&bb))?;
            tree.insert(
                Path::new("bin/busybox"),
                HostNode::File {
                    source: real.clone(),
                    mode: 0o755,
                },
            );
            // A dynamic busybox brings its libraries (and loader) at their host paths.
            if let Some(deps) = resolver.deps(&real)? {
                if let Some(interp) = &deps.interpreter {
                    tree.add_host_path(interp)?;
                }
                let origin = real.parent().unwrap_or(Path::new("/")).to_path_buf();
                for name in &deps.needed {
                    if let Some(lib) = resolver.find(name, &deps, &origin, &deps.rpath)? {
                        resolver.add_with_closure(&mut tree, &lib)?;
                    }
                }
            }
            for applet in busybox_applets(&real) {
                let target = if applet.parent() == Some(Path::new("bin")) {
                    PathBuf::from("busybox")
                } else {
                    PathBuf::from("/bin/busybox")
                };
                tree.insert(&applet, HostNode::Symlink { target });
            }
            path_line = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        }
        None => {
            tree.mode = HostImageMode::Binaries;
            for top in MERGED_USR_LINKS {
                let host = Path::new("/").join(top);
                if let Ok(target) = fs::read_link(&host) {
                    tree.insert(Path::new(top), HostNode::Symlink { target });
                }
            }
            let dirs = opts.path_dirs();
            let mut found = 0;
            for name in &opts.binaries {
                match find_program(name, &dirs) {
                    Some(p) => {
                        resolver.add_with_closure(&mut tree, &p)?;
                        found += 1;
                    }
                    None => tree.missing.push(name.clone()),
                }
            }
            if found == 0 {
                return Err(ImageError::Host(format!(
                    "host image: none of the requested programs were found on {}",
                    std::env::join_paths(&dirs)
                        .unwrap_or_default()
                        .to_string_lossy()
                )));
            }
            path_line = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        }
    }
    for (dir, mode) in FHS_DIRS {
        tree.insert(Path::new(dir), HostNode::Dir { mode: *mode });
    }
    add_etc(&mut tree, opts, path_line);
    Ok(tree)
}

fn data(tree: &mut HostTree, path: &str, text: String) {
    tree.insert(
        Path::new(path),
        HostNode::Data {
            bytes: text.into_bytes(),
            mode: 0o644,
        },
    );
}

fn add_etc(tree: &mut HostTree, opts: &HostImageOptions, path_line: &str) {
    let shell = if tree.get("bin/bash").is_some() && tree.mode == HostImageMode::Binaries {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    data(
        tree,
        "etc/passwd",
        format!(
            "root:x:0:0:root:/root:{shell}\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        ),
    );
    data(
        tree,
        "etc/group",
        "root:x:0:\ntty:x:5:\nusers:x:100:\nnogroup:x:65534:\n".to_string(),
    );
    data(
        tree,
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string(),
    );
    // Every box gets its own, bind-mounted over this one: with the file in the image, no box
    // has to create it (and copy /etc up) in its writable layer at start.
    data(tree, "etc/hostname", "box\n".to_string());
    let resolv_src = opts
        .resolv_conf
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf"));
    data(tree, "etc/resolv.conf", resolv_conf(&resolv_src));
    data(
        tree,
        "etc/profile",
        format!(
            "# Box host image\nexport PATH={path_line}\nexport HOME=\"${{HOME:-/root}}\"\n\
             if [ \"$(id -u 2>/dev/null)\" = 0 ]; then PS1='\\h:\\w# '; else PS1='\\h:\\w$ '; fi\n\
             export PS1\n"
        ),
    );
    data(
        tree,
        "etc/bash.bashrc",
        "# Box host image\n[ -z \"$PS1\" ] && return\nPS1='\\h:\\w\\$ '\n".to_string(),
    );
    data(
        tree,
        "etc/ld.so.conf",
        "include /etc/ld.so.conf.d/*.conf\n/usr/local/lib\n".to_string(),
    );
    data(
        tree,
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n\
         protocols: files\nservices: files\n"
            .to_string(),
    );
    data(
        tree,
        "etc/os-release",
        "NAME=\"Box host image\"\nID=box-host\nPRETTY_NAME=\"Box host image\"\n\
         HOME_URL=\"https://github.com/box\"\n"
            .to_string(),
    );
    tree.insert(Path::new("etc/ld.so.conf.d"), HostNode::Dir { mode: 0o755 });
}

/// The host's resolv.conf without loopback name servers (a box in its own network namespace
/// cannot reach the host's 127.0.0.53); verbatim when only loopback ones exist (host network).
fn resolv_conf(src: &Path) -> String {
    let Ok(text) = fs::read_to_string(src) else {
        return "# Box host image: no resolv.conf on the host\n".to_string();
    };
    let is_loopback = |l: &str| {
        l.strip_prefix("nameserver")
            .map(|a| {
                let a = a.trim();
                a.starts_with("127.") || a == "::1"
            })
            .unwrap_or(false)
    };
    let has_other = text
        .lines()
        .any(|l| l.trim_start().starts_with("nameserver") && !is_loopback(l.trim()));
    if !has_other {
        return text;
    }
    let mut out = String::new();
    for line in text.lines().filter(|l| !is_loopback(l.trim())) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Builds the host image and stores it as the ordinary one-layer image `opts.name`
/// (`host:latest`): the tree is planned, written as an uncompressed tar in memory, ingested
/// (blob digest = diff id) and committed with a generated config running /bin/sh. The same host
/// files give the same image id.
pub fn build_host_image(store: &ImageStore, opts: &HostImageOptions) -> Result<ImageRecord> {
    let tree = plan_host_tree(opts)?;
    let tar = tree.write_tar(Vec::with_capacity(4 << 20))?;
    let digest = Digest::of_bytes(&tar);
    let _lease = store.lease()?;
    let layer = store.ingest_layer_stream(
        None,
        tar.as_slice(),
        &digest,
        MEDIA_TYPE_OCI_LAYER_TAR,
        Some(&digest),
    )?;
    let gen = GeneratedConfig {
        created: box_runtime::state::rfc3339_seconds(0),
        created_by: format!(
            "box host image ({} mode)",
            if tree.mode == HostImageMode::Busybox {
                "busybox"
            } else {
                "binaries"
            }
        ),
        cmd: Some(vec!["/bin/sh".to_string(), "-l".to_string()]),
    };
    commit_one_layer(
        store,
        &layer,
        &digest,
        MEDIA_TYPE_OCI_LAYER_TAR,
        &gen,
        std::slice::from_ref(&opts.name),
    )
}
