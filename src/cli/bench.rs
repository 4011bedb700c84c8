//! `trifecta bench`: the training-step benchmark (see `crate::bench`).

use super::{ArchArg, DeviceArg, NormArg, positive_f64};
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
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Also print the time per step of every kernel.
    #[arg(long)]
    pub profile: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    args.device.require_cpu()?;
    let config = BenchConfig {
        arch: args.arch.into(),
        width: args.width,
        image: ImageShape {
            channels: args.channels as usize,
            height: args.image_size as usize,
            width: args.image_size as usize,
        },
        batch: args.batch_size as usize,
        apl: args.apl,
        norm: args.norm.into(),
        warmup: args.warmup as usize,
        steps: args.steps as usize,
        profile: args.profile,
        ..BenchConfig::default()
    };
    let report = run_cpu(&config, args.threads)?;
    println!("{}", report.render(&config));
    Ok(())
}
