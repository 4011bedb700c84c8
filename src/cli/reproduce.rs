//! `trifecta reproduce <experiment>`: one of the thesis' experiments as one command.

use super::train::KnobArgs;
use crate::error::{Error, Result};
use crate::experiments::{self, Experiment};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// ablation, datasets, convergence or lcp.
    #[arg(value_enum)]
    pub experiment: Experiment,
    /// Run every variant once per seed (e.g. 0,1,2,3,4), into <variant>-seed<S>, and report
    /// mean and standard deviation over them [default: one run, of --seed].
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    pub seeds: Vec<u64>,
    /// Run only these variants of the grid, e.g. ff-mnist,bp-mnist (a name it does not have
    /// is an error that lists its names); the table has their rows alone [default: all].
    #[arg(long, value_delimiter = ',', value_name = "VARIANTS")]
    pub only: Vec<String>,
    /// Any `train` flag (epochs, device, data dir, width...); the grid's own knobs win. With
    /// `datasets`, --data-dir is a folder holding mnist/, fashion-mnist/, svhn/ and cifar10/.
    #[command(flatten)]
    pub train: KnobArgs,
}

pub fn run(args: ReproduceArgs) -> Result<()> {
    // A seed given twice would be one run counted twice in the mean and spread.
    if let Some(twice) = crate::ff::eval::first_repeat(&args.seeds) {
        return Err(Error::Config(format!("--seeds lists seed {twice} twice")));
    }
    let flags = args.train.knobs()?;
    let out = flags.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!("runs/reproduce-{:?}", args.experiment).to_lowercase())
    });
    let path = experiments::run(args.experiment, &flags, &out, &args.seeds, &args.only)?;
    println!("wrote {}", path.display());
    Ok(())
}
