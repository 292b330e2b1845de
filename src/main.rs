//! The `relink` command; every subcommand lives in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
