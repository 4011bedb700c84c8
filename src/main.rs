//! The `trifecta` binary: parse, run, report errors in one line.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = trifecta::cli::Cli::parse();
    match trifecta::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            std::process::ExitCode::FAILURE
        }
    }
}
