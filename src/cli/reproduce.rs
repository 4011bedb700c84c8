//! `trifecta reproduce <experiment>`: one of the thesis' experiments as one command.

use super::train::KnobArgs;
use crate::error::Result;
use crate::experiments::{self, Experiment};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// ablation, datasets, convergence or lcp.
    #[arg(value_enum)]
    pub experiment: Experiment,
    /// Any `train` flag (epochs, device, data dir, width...); the grid's own knobs win. With
    /// `datasets`, --data-dir is a folder holding mnist/, fashion-mnist/, svhn/ and cifar10/.
    #[command(flatten)]
    pub train: KnobArgs,
}

pub fn run(args: ReproduceArgs) -> Result<()> {
    let flags = args.train.knobs()?;
    let out = flags.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!("runs/reproduce-{:?}", args.experiment).to_lowercase())
    });
    let path = experiments::run(args.experiment, &flags, &out)?;
    println!("wrote {}", path.display());
    Ok(())
}
