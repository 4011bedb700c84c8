//! The `trifecta` command line: one file per subcommand. Parsing is `clap`; each subcommand
//! turns its flags into library calls and prints what a user needs to read.

// The flags' doc comments are their `--help` text, where `<dataset>` is a placeholder, not
// an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

pub mod bench;
pub mod data;
pub mod eval;
pub mod predict;
pub mod report;
pub mod reproduce;
pub mod train;

use crate::error::{Error, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "trifecta",
    version,
    about = "Forward-Forward training with the Trifecta (SymBa, APL, BatchNorm)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train an FF network; with no flags, a short run (5 epochs) on the built-in MNIST sample.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint: per-layer and ensemble accuracy on the test set (and on the
    /// run's validation split if it has one).
    Eval(eval::EvalArgs),
    /// The class a trained network gives image files (PNG, JPEG), with each class' goodness.
    Predict(predict::PredictArgs),
    /// Time the FF training step on synthetic data.
    Bench(bench::BenchArgs),
    /// Download and verify datasets.
    Data(data::DataArgs),
    /// Run one of the thesis' experiments and write its result table.
    Reproduce(reproduce::ReproduceArgs),
    /// Write a Markdown report with figures from run folders.
    Report(report::ReportArgs),
}

/// `--device cpu|cuda[:N]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    Cuda(usize),
}

impl DeviceArg {
    pub fn parse(s: &str) -> Result<DeviceArg> {
        match s {
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" => Ok(DeviceArg::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceArg::Cuda(n)),
                _ => Err(Error::Config(format!(
                    "unknown device '{s}': expected cpu, cuda or cuda:N"
                ))),
            },
        }
    }

    /// Fails with a typed error for devices this build cannot use (CUDA without the `cuda`
    /// feature). Whether the device exists is checked when it is opened.
    pub fn check_available(&self) -> Result<()> {
        match self {
            DeviceArg::Cuda(_) if !cfg!(feature = "cuda") => Err(self.unavailable()),
            _ => Ok(()),
        }
    }

    /// The error for a device this build cannot use.
    pub fn unavailable(&self) -> Error {
        Error::Device {
            device: match self {
                DeviceArg::Cpu => "cpu".into(),
                DeviceArg::Cuda(n) => format!("cuda:{n}"),
            },
            msg:
                "this build has no CUDA backend; build with `--features cuda`, or use --device cpu"
                    .into(),
        }
    }
}

/// A `--device` flag value.
pub fn device_arg(s: &str) -> std::result::Result<String, String> {
    DeviceArg::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// A positive real number flag (`--width`, `--lr`).
pub fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

pub fn run(cli: Cli) -> Result<()> {
    // The commands that load batches report a bad TRIFECTA_LOADER_THREADS before any work.
    if !matches!(
        cli.command,
        Command::Data(_) | Command::Report(_) | Command::Predict(_)
    ) {
        crate::data::loader::threads()?;
    }
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Data(args) => data::run(args),
        Command::Reproduce(args) => reproduce::run(args),
        Command::Report(args) => report::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `trifecta` command of the GPU scripts parses with this build's flags: a renamed
    /// flag must fail here, not in a device session's few minutes.
    #[test]
    fn the_gpu_scripts_commands_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (script, at_least) in [("gpu-check.sh", 12), ("gpu-results.sh", 3)] {
            let text = std::fs::read_to_string(root.join("scripts").join(script)).unwrap();
            // Continuation lines joined, comments left out.
            let text = text.replace("\\\n", " ");
            let mut commands = 0;
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                for (_, rest) in line
                    .match_indices(".device/trifecta ")
                    .map(|(i, _)| line.split_at(i))
                {
                    let args: Vec<String> = std::iter::once("trifecta")
                        .chain(
                            rest.split_whitespace()
                                .skip(1)
                                .take_while(|t| !t.contains('>') && !t.starts_with('|')),
                        )
                        .map(|t| t.trim_matches('"').to_string())
                        .collect();
                    if let Err(e) = Cli::try_parse_from(&args) {
                        panic!("{script}: {args:?} does not parse: {e}");
                    }
                    commands += 1;
                }
            }
            assert!(
                commands >= at_least,
                "found only {commands} commands in {script}"
            );
        }
    }

    /// Every flag of every subcommand says what it does in `--help` (clap prints a flag
    /// without a doc comment as a bare name).
    #[test]
    fn every_flag_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, bare: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    bare.push(format!("{path} --{}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), bare);
            }
        }
        let mut bare = Vec::new();
        walk(&Cli::command(), "trifecta", &mut bare);
        assert!(bare.is_empty(), "flags without help: {bare:?}");
    }
}
