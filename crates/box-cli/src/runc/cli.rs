//! The command line of `box-runc`: runc's commands, flags and defaults, as clap definitions only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// box-runc: an OCI runtime with runc's command line.
#[derive(Debug, Parser)]
#[command(
    name = "box-runc",
    version,
    about = "Box's OCI runtime (runc-compatible command line)"
)]
pub struct Cli {
    /// Directory for the state of boxes (default: /run/box-runc as root, $XDG_RUNTIME_DIR/box-runc otherwise).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Append log lines (errors, warnings) to this file.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Format of the --log lines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Manage cgroups through systemd (not supported: Box writes cgroupfs under the caller's own cgroup).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// More output (accepted for compatibility).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Rootless mode hint (accepted for compatibility; Box detects it).
    #[arg(long)]
    pub rootless: Option<String>,
    /// CRIU path (accepted for compatibility; checkpoint is not supported).
    #[arg(long)]
    pub criu: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// --log-format values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time="…" level=error msg="…"`
    Text,
    /// `{"level":"error","msg":"…","time":"…"}`
    Json,
}

/// Output formats of list/ps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// Options shared by create and run.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(long, short, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master (terminal: true).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// File to write the init's pid to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Use chroot instead of pivot_root (for ramfs roots).
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a session keyring (accepted; Box never creates one).
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many descriptors after stdio (3, 4, …) into the box.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// The box id.
    pub id: String,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a box from a bundle; it waits for `start`.
    Create(CreateArgs),
    /// Start a created box.
    Start {
        /// The box id.
        id: String,
    },
    /// Print a box's OCI state as JSON.
    State {
        /// The box id.
        id: String,
    },
    /// Send a signal to a box's init (or all its processes).
    Kill {
        /// Signal every process of the box.
        #[arg(long, short)]
        all: bool,
        /// The box id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a box (and its cgroup); --force kills a running one first.
    Delete {
        /// Kill the box if it still runs.
        #[arg(long, short)]
        force: bool,
        /// The box id.
        id: String,
    },
    /// Create and start a box; wait for it unless --detach; exit with its code.
    Run {
        /// Return once the box runs.
        #[arg(long, short)]
        detach: bool,
        /// Keep the box's state after it exits (accepted; Box deletes on exit unless detached).
        #[arg(long)]
        keep: bool,
        /// Create options.
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Run a new process in a running box.
    Exec(ExecArgs),
    /// List the processes of a box.
    Ps {
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The box id.
        id: String,
        /// Options passed to ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List boxes.
    List {
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Ids only.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Freeze every process of a box.
    Pause {
        /// The box id.
        id: String,
    },
    /// Thaw a paused box.
    Resume {
        /// The box id.
        id: String,
    },
    /// Change a running box's resource limits.
    Update(UpdateArgs),
    /// Write a default config.json.
    Spec {
        /// Bundle directory to write config.json into.
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        /// A spec for rootless boxes (user namespace mapping the caller to root).
        #[arg(long)]
        rootless: bool,
    },
    /// Print what this runtime supports, as JSON.
    Features,
    /// Print resource usage events of a box.
    Events {
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Seconds between stats events.
        #[arg(long, default_value = "5s")]
        interval: String,
        /// The box id.
        id: String,
    },
}

/// `exec` options (runc's).
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// process.json describing the process (instead of CMD).
    #[arg(long, short)]
    pub process: Option<PathBuf>,
    /// Allocate a pty.
    #[arg(long, short)]
    pub tty: bool,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// File to write the process's pid to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs.
    #[arg(long, short)]
    pub detach: bool,
    /// Extra environment (KEY=VALUE), repeatable.
    #[arg(long, short)]
    pub env: Vec<String>,
    /// Working directory in the box.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// uid[:gid] to run as.
    #[arg(long, short)]
    pub user: Option<String>,
    /// Additional gids, repeatable.
    #[arg(long = "additional-gids", short = 'g')]
    pub additional_gids: Vec<u32>,
    /// Extra capability, repeatable.
    #[arg(long = "cap", short = 'c')]
    pub caps: Vec<String>,
    /// Set no_new_privileges.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Pass this many descriptors after stdio.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// AppArmor profile (accepted; AppArmor is not applied by Box yet).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label (accepted; SELinux is not applied by Box yet).
    #[arg(long)]
    pub process_label: Option<String>,
    /// Accepted for runc's sake; exec into a paused box is refused either way (resume it first).
    #[arg(long)]
    pub ignore_paused: bool,
    /// The box id.
    pub id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `update` options (runc's).
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// A JSON file with linux.resources ("-" for stdin).
    #[arg(long, short)]
    pub resources: Option<PathBuf>,
    /// Memory limit (bytes, or with k/m/g suffix).
    #[arg(long)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (-1 for unlimited).
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// CPU shares.
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// CPU CFS period (µs).
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota (µs, -1 for none).
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPUs allowed (cpuset).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed (cpuset).
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes (-1 for none).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Block IO weight.
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// The box id.
    pub id: String,
}
