//! `trifecta bench`: the training-step benchmark (see `crate::bench`).

use super::train::{ArchArg, NormArg};
use super::{DeviceArg, device_arg, positive_f64};
use crate::bench::{BenchConfig, run_cpu};
use crate::error::Result;
use crate::ff::ImageShape;
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "small")]
    pub arch: ArchArg,
    #[arg(long, default_value = "1", value_parser = positive_f64)]
    pub width: f64,
    /// Positives per step (as many negatives are added).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Image side (square images).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(2..))]
    pub image_size: u64,
    /// Image channels (the label plane comes on top).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub channels: u64,
    /// Alternating pairwise updates (off by default: every block local).
    #[arg(long)]
    pub apl: bool,
    #[arg(long, value_enum, default_value = "batch")]
    pub norm: NormArg,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = device_arg)]
    pub device: String,
    /// Also print the time per step of every kernel.
    #[arg(long)]
    pub profile: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    DeviceArg::parse(&args.device)?.require_cpu()?;
    let config = BenchConfig {
        arch: match args.arch {
            ArchArg::Small => crate::ff::Arch::Small,
            ArchArg::Large => crate::ff::Arch::Large,
        },
        width: args.width,
        image: ImageShape {
            channels: args.channels as usize,
            height: args.image_size as usize,
            width: args.image_size as usize,
        },
        batch: args.batch_size as usize,
        apl: args.apl,
        norm: match args.norm {
            NormArg::Batch => crate::layers::norm::NormKind::Batch,
            NormArg::Layer => crate::layers::norm::NormKind::Layer,
        },
        warmup: args.warmup as usize,
        steps: args.steps as usize,
        profile: args.profile,
        ..BenchConfig::default()
    };
    let report = run_cpu(&config, args.threads)?;
    println!("{}", report.render(&config));
    Ok(())
}
