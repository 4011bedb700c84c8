//! The `trifecta` binary: parse, run, report errors in one line.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    trifecta::interrupt::default_sigpipe();
    let cli = match trifecta::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!("{} (see --help)", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(), // --help, --version
    };
    match trifecta::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A run stopped by Ctrl-C or SIGTERM exits as the signal's own would (128 + 2).
            let code = match e {
                trifecta::error::Error::Interrupted(_) => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            };
            eprintln!("error: {:#}", anyhow::Error::from(e));
            code
        }
    }
}

/// clap's message in one line: what is wrong, with what it lists under it (the missing
/// arguments) and its tips (a flag's right spelling), but not the usage and help hints that
/// follow (the line ends with our own "see --help").
fn one_line(text: &str) -> String {
    let mut lines = text.lines().take_while(|l| !l.starts_with("Usage:"));
    let mut out = lines.next().unwrap_or("error: bad arguments").to_string();
    let hint = |l: &&str| l.is_empty() || l.starts_with("For more information");
    for line in lines.map(str::trim).filter(|l| !hint(l)) {
        out.push_str(if line.starts_with("tip:") { "; " } else { " " });
        out.push_str(line);
    }
    out
}
