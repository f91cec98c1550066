//! The command line of `box`: docker's verbs and flags, as clap definitions only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// box: containers without a daemon.
#[derive(Debug, Parser)]
#[command(
    name = "box",
    version,
    about = "Box: Linux processes in boxes, as root or rootless"
)]
pub struct Cli {
    /// Data directory (default /var/lib/box as root, $XDG_DATA_HOME/box rootless).
    #[arg(long, global = true, env = "BOX_ROOT")]
    pub root: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// Archive formats of `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveFormat {
    /// docker save's format (manifest.json + layer tars).
    DockerArchive,
    /// An OCI image layout in a tar.
    OciArchive,
}

/// How the `host` image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostMode {
    /// Busybox when the host has one, host binaries otherwise.
    Auto,
    /// The host's busybox and its applet links.
    Busybox,
    /// Host programs (sh, bash, coreutils, …) and every shared library they need.
    Binaries,
}

/// Registry connection flags shared by pull and push.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Verify TLS certificates (false also allows plain HTTP).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
}

/// What a box is made of: docker's `run`/`create` flags.
#[derive(Debug, Args)]
pub struct BoxOptions {
    /// Name of the box (default: a generated one).
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable KEY=VALUE, repeatable.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Read KEY=VALUE lines from a file.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Working directory in the box.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// User (name or uid[:gid]).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Bind mount SRC:DST[:ro], repeatable.
    #[arg(long = "volume", short = 'v')]
    pub volumes: Vec<String>,
    /// Mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,bind-propagation=…],
    /// repeatable.
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Tmpfs mount DST[:OPTIONS], repeatable.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Memory limit (e.g. 100m).
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    /// CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<String>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Add a capability, repeatable (ALL for all).
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a capability, repeatable (ALL for all).
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// All capabilities, no seccomp, no masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// seccomp=unconfined|PROFILE.json, no-new-privileges.
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Hostname in the box.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Run an init (reaps zombies, forwards signals) as PID 1.
    #[arg(long)]
    pub init: bool,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Network: bridge (root's default), NETWORK (made by box network create), pasta
    /// (rootless default), slirp4netns, none (loopback only), host, container:NAME.
    #[arg(long, visible_alias = "net")]
    pub network: Option<String>,
    /// Publish a port: [IP:][HOSTPORT:]BOXPORT[/tcp|udp] (repeatable).
    #[arg(long = "publish", short = 'p')]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(long = "publish-all", short = 'P')]
    pub publish_all: bool,
    /// Cgroup to nest the box's cgroup under (relative to the caller's own).
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// Run this directory as the root filesystem instead of an image.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Remove the box when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open (attach it in the foreground).
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the box a terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Image (or, with --rootfs, the command); from ./box.toml when left out.
    pub image: Option<String>,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start a box (in the foreground unless -d).
    Run {
        /// Run in the background and print the box's id.
        #[arg(long, short = 'd')]
        detach: bool,
        /// What to run.
        #[command(flatten)]
        opts: BoxOptions,
    },
    /// Run a command in a running box.
    Exec {
        /// Keep stdin open.
        #[arg(long, short = 'i')]
        interactive: bool,
        /// Give the command a terminal.
        #[arg(long, short = 't')]
        tty: bool,
        /// Run in the background.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Environment variable KEY=VALUE, repeatable.
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Working directory.
        #[arg(long, short = 'w')]
        workdir: Option<String>,
        /// uid[:gid].
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// The box.
        r#box: String,
        /// Command and arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Create a box without starting it.
    Create {
        /// What to run.
        #[command(flatten)]
        opts: BoxOptions,
    },
    /// Start created or exited boxes.
    Start {
        /// Attach to the box's output and wait for it.
        #[arg(long, short = 'a')]
        attach: bool,
        /// Boxes.
        #[arg(required = true)]
        boxes: Vec<String>,
    },
    /// Stop boxes: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(long, short = 't', default_value_t = 10)]
        time: u64,
        /// Boxes.
        #[arg(required = true)]
        boxes: Vec<String>,
    },
    /// Send a signal to every process of boxes.
    Kill {
        /// Signal (name or number).
        #[arg(long, short = 's', default_value = "KILL")]
        signal: String,
        /// Boxes.
        #[arg(required = true)]
        boxes: Vec<String>,
    },
    /// Remove boxes.
    Rm {
        /// Kill running boxes first.
        #[arg(long, short = 'f')]
        force: bool,
        /// Remove the boxes' anonymous volumes too.
        #[arg(long = "volumes", short = 'v')]
        volumes: bool,
        /// Boxes.
        #[arg(required = true)]
        boxes: Vec<String>,
    },
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage bridge networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Whole-system tasks.
    #[command(subcommand)]
    System(SystemCommand),
    /// Copy files between a box and the host: BOX:SRC DEST or SRC BOX:DEST (`-`: a tar on
    /// stdout/stdin).
    Cp {
        /// Source (BOX:PATH or a host path).
        src: String,
        /// Destination (BOX:PATH or a host path).
        dest: String,
    },
    /// Make an image from a box's changes.
    Commit {
        /// Commit message (stored in the image's history).
        #[arg(long, short = 'm')]
        message: Option<String>,
        /// The box.
        r#box: String,
        /// Name of the new image (IMAGE[:TAG]).
        image: Option<String>,
    },
    /// Manage boxes (`container prune`).
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Make a per-directory environment in .box/ (offline, from the host's busybox or binaries,
    /// or from an image).
    Init {
        /// What to build it from: host (default) or an image of the store.
        #[arg(long, default_value = "host")]
        from: String,
        /// With --from host: busybox (its applets) or system (the host's own programs).
        #[arg(long, value_enum, default_value_t = EnvMode::Busybox)]
        mode: EnvMode,
        /// The project directory (default: the current one).
        #[arg(long, short = 'C')]
        directory: Option<PathBuf>,
    },
    /// Enter the environment of this directory (or the nearest above it): a login shell, or
    /// one command after `--`.
    Enter {
        /// none: a network namespace with only loopback (default: the host's network).
        #[arg(long)]
        network: Option<String>,
        /// Bind the project directory at /work and start there.
        #[arg(long)]
        mount_project: bool,
        /// The project directory (default: the current one, or the nearest above it with .box).
        #[arg(long, short = 'C')]
        directory: Option<PathBuf>,
        /// The command (default: a login shell).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Manage the environment of this directory.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Alpine packages in the environment of this directory, or in a box (from the host side).
    Pkg {
        /// The project directory (default: the current one, or the nearest above it).
        #[arg(long, short = 'C', global = true)]
        directory: Option<PathBuf>,
        /// A box (running or not) instead of an environment.
        #[arg(
            long = "box",
            global = true,
            value_name = "BOX",
            conflicts_with = "directory"
        )]
        box_name: Option<String>,
        /// What to do.
        #[command(subcommand)]
        command: PkgCommand,
    },
    /// Make and start the box of ./box.toml in the background (idempotent).
    Up {
        /// The project file (default ./box.toml).
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
    /// Stop and remove the box of ./box.toml.
    Down {
        /// The project file (default ./box.toml).
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        /// Seconds to wait for it to stop before killing it.
        #[arg(long, short = 't', default_value_t = 10)]
        time: u64,
    },
    /// List boxes.
    Ps {
        /// All boxes, not only running ones.
        #[arg(long, short = 'a')]
        all: bool,
        /// Only ids.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Only boxes matching KEY=VALUE: name (part of the name), id (a prefix), status
        /// (created, running, paused, exited, dead), label (KEY or KEY=VALUE), exited (the exit
        /// code); repeatable: values of one key are alternatives, different keys must all match.
        #[arg(long, short = 'f')]
        filter: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show a box's output.
    Logs {
        /// Keep following until the box ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Only since this time (RFC 3339, unix time, or a duration like 10m).
        #[arg(long)]
        since: Option<String>,
        /// Prefix lines with their time.
        #[arg(long, short = 't')]
        timestamps: bool,
        /// The box.
        r#box: String,
    },
    /// Show boxes (or images) as JSON.
    Inspect {
        /// Boxes or images.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Wait for boxes to end and print their exit codes.
    Wait {
        /// Boxes.
        #[arg(required = true)]
        boxes: Vec<String>,
    },
    /// Write a box's filesystem as a tar.
    Export {
        /// Write to this file instead of stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// The box.
        r#box: String,
    },
    /// Show what changed in a box's filesystem (A added, C changed, D deleted).
    Diff {
        /// The box.
        r#box: String,
    },
    /// attach, the Akuma verbs, restart/pause/unpause/top/stats/port, completion, man.
    #[command(flatten)]
    Session(super::akuma::SessionCommand),
    /// Give a box another name.
    Rename {
        /// The box.
        r#box: String,
        /// New name.
        name: String,
    },
    /// (internal) The per-box supervisor.
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// The box id.
        id: String,
    },
    /// (internal) The supervisor of a detached exec session.
    #[command(name = "__supervise-exec", hide = true)]
    SuperviseExec {
        /// The box id.
        id: String,
        /// The session request the spawner wrote.
        request: PathBuf,
    },
    /// Download an image from a registry.
    Pull {
        /// os/arch[/variant] to pick from a multi-platform image (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        /// Registry options.
        #[command(flatten)]
        registry: RegistryArgs,
        /// Image reference (registry/repository[:tag|@digest]).
        image: String,
    },
    /// Upload a local image to a registry.
    Push {
        /// Registry options.
        #[command(flatten)]
        registry: RegistryArgs,
        /// Local image.
        image: String,
        /// Destination reference (default: the image name).
        destination: Option<String>,
    },
    /// List local images.
    Images(ImagesArgs),
    /// Image subcommands (docker's `image …`).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Give an image another name.
    Tag {
        /// Existing image.
        source: String,
        /// New name.
        target: String,
    },
    /// Remove image names (and images left without names).
    Rmi {
        /// Remove even when boxes use it.
        #[arg(long, short)]
        force: bool,
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from a docker-archive or OCI-layout tar.
    Load {
        /// Read from this file instead of stdin.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Save images to a tar.
    Save {
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Archive format.
        #[arg(long, value_enum, default_value_t = ArchiveFormat::DockerArchive)]
        format: ArchiveFormat,
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Make an image from a root filesystem tarball (.tar, .tar.gz, .tar.zst, .tar.xz).
    Import {
        /// The tarball ("-" for stdin).
        file: PathBuf,
        /// Name of the new image.
        name: String,
    },
    /// Remember credentials for a registry.
    Login {
        /// User name.
        #[arg(long, short)]
        username: Option<String>,
        /// Password (prefer --password-stdin).
        #[arg(long, short)]
        password: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Registry host[:port].
        registry: String,
    },
    /// Forget the credentials of a registry.
    Logout {
        /// Registry host[:port].
        registry: String,
    },
}

/// `images` / `image ls` options.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only ids.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `image …` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List local images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Show an image's details as JSON.
    Inspect {
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove dangling images and unreferenced blobs and layers.
    Prune {
        /// Don't ask (accepted: Box never asks).
        #[arg(long, short)]
        force: bool,
    },
    /// Remove images.
    Rm {
        /// Remove even when boxes use it.
        #[arg(long, short)]
        force: bool,
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Give an image another name.
    Tag {
        /// Existing image.
        source: String,
        /// New name.
        target: String,
    },
    /// (Re)make the offline `host` image from this machine's busybox or binaries.
    Host {
        /// What to build it from.
        #[arg(long, value_enum, default_value_t = HostMode::Auto)]
        mode: HostMode,
    },
}

/// `system …` subcommands.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Start the boxes whose restart policy brings them back when the machine starts
    /// (`always`; `unless-stopped` unless stopped by the user; `on-failure` when they went
    /// down with the machine). Run at boot (box-boot.service).
    Boot,
    /// Remove every box, network, volume and image, and the data they keep: back to a fresh
    /// start.
    Reset {
        /// Do not ask.
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// What `box init --from host` builds from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EnvMode {
    /// The host's busybox and its applets.
    Busybox,
    /// The host's own programs and their shared libraries.
    System,
}

/// `env …` subcommands.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// What the environment is: its name, source, size.
    Status {
        /// The project directory (default: the current one, or the nearest above it).
        #[arg(long, short = 'C')]
        directory: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Write the environment as a tar (to a file, or stdout).
    Export {
        /// The file (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The project directory.
        #[arg(long, short = 'C')]
        directory: Option<PathBuf>,
    },
    /// Make this directory's environment from a tar that export wrote (a file, or stdin).
    Import {
        /// The file (default: stdin).
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// The project directory (default: the current one).
        #[arg(long, short = 'C')]
        directory: Option<PathBuf>,
    },
    /// Remove the environment (.box/).
    Rm {
        /// The project directory.
        #[arg(long, short = 'C')]
        directory: Option<PathBuf>,
    },
}

/// `pkg …` subcommands.
#[derive(Debug, Subcommand)]
pub enum PkgCommand {
    /// Install packages (NAME, or NAME>=VERSION and the like) with their dependencies.
    Add {
        /// The packages.
        #[arg(required = true)]
        packages: Vec<String>,
    },
    /// Remove packages (and what only they needed).
    #[command(alias = "remove")]
    Del {
        /// The packages.
        #[arg(required = true)]
        packages: Vec<String>,
    },
    /// Installed packages.
    List,
    /// Packages of the repositories whose name contains TERM.
    Search {
        /// What to look for.
        term: String,
    },
    /// Fetch and verify the repositories' indexes.
    Update,
    /// A package's details.
    Info {
        /// The package.
        package: String,
    },
}

/// `network …` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Make a bridge network (boxes on it reach each other by name).
    Create {
        /// Its subnet (default: the first free 10.89.N.0/24).
        #[arg(long)]
        subnet: Option<String>,
        /// Its name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show networks and the boxes on them as JSON.
    Inspect {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while boxes are on one).
    #[command(alias = "remove")]
    Rm {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Put a box on a further network (at once when it runs).
    Connect {
        /// The network.
        network: String,
        /// The box.
        r#box: String,
    },
    /// Take a box off a network.
    Disconnect {
        /// The network.
        network: String,
        /// The box.
        r#box: String,
    },
}

/// `volume …` subcommands.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Make a volume (a generated name when none is given).
    Create {
        /// Name of the volume.
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show volumes' details as JSON.
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a box uses one, unless -f).
    #[command(alias = "remove")]
    Rm {
        /// Remove even when boxes use it.
        #[arg(long, short = 'f')]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no box uses.
    Prune {
        /// Don't ask (accepted: Box never asks).
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// `container …` subcommands.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Remove every stopped box.
    Prune {
        /// Don't ask (accepted: Box never asks).
        #[arg(long, short = 'f')]
        force: bool,
    },
}
