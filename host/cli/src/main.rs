//! The `snapshot-host` command line.

mod commands;

fn main() -> std::process::ExitCode {
    commands::main()
}
