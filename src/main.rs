//! The `trifecta` binary: parse, run, report errors in one line.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match trifecta::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // clap's first line says what is wrong; the rest is a usage hint.
            let text = e.to_string();
            eprintln!(
                "{} (see --help)",
                text.lines().next().unwrap_or("error: bad arguments")
            );
            return ExitCode::from(2);
        }
        Err(e) => e.exit(), // --help, --version
    };
    match trifecta::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
