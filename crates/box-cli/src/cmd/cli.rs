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

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
