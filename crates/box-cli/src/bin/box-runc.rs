//! `box-runc`: Box's OCI runtime with runc's command line.

fn main() -> std::process::ExitCode {
    box_cli::runc::main()
}
