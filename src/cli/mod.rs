//! The `trifecta` command line: one file per subcommand. Parsing is `clap`; each subcommand
//! turns its flags into library calls and prints what a user needs to read.

pub mod bench;
pub mod train;

use crate::error::{Error, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "trifecta",
    version,
    about = "Forward-Forward training with the Trifecta"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train an FF network and report per-layer test accuracy.
    Train(train::TrainArgs),
    /// Time the FF training step on synthetic data.
    Bench(bench::BenchArgs),
}

/// `--device cpu|cuda[:N]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" => Ok(DeviceArg::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceArg::Cuda(n)),
                _ => Err(format!(
                    "unknown device '{s}': expected cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

impl DeviceArg {
    /// Fails with a typed error for devices this build cannot use.
    pub fn require_cpu(&self) -> Result<()> {
        match self {
            DeviceArg::Cpu => Ok(()),
            DeviceArg::Cuda(n) => Err(Error::Device {
                device: format!("cuda:{n}"),
                msg: "this build has no CUDA backend yet; use --device cpu".into(),
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    Small,
    Large,
}

impl From<ArchArg> for crate::ff::Arch {
    fn from(a: ArchArg) -> Self {
        match a {
            ArchArg::Small => crate::ff::Arch::Small,
            ArchArg::Large => crate::ff::Arch::Large,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NormArg {
    Batch,
    Layer,
}

impl From<NormArg> for crate::layers::norm::NormKind {
    fn from(n: NormArg) -> Self {
        match n {
            NormArg::Batch => crate::layers::norm::NormKind::Batch,
            NormArg::Layer => crate::layers::norm::NormKind::Layer,
        }
    }
}

/// A positive real number flag (`--width`).
pub fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
