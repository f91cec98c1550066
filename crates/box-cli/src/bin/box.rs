//! `box`: Box's command line (images now; boxes with the engine). Also answers as `box-runc`.

fn main() -> std::process::ExitCode {
    box_cli::cmd::main()
}
