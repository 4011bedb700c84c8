//! `trifecta train`: train an FF network on a dataset and print per-layer test accuracy after
//! every epoch.

use super::{ArchArg, DeviceArg, NormArg, positive_f64};
use crate::backend::Backend;
use crate::backend::cpu::Cpu;
use crate::data::{DatasetKind, load_idx_split};
use crate::error::{Error, Result};
use crate::ff::train::{evaluate, train_epoch};
use crate::ff::{FfConfig, FfNet, LossKind};
use crate::rng::Rng;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetArg {
    Mnist,
    FashionMnist,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossArg {
    Symba,
    Threshold,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: DatasetArg,
    /// Folder holding the dataset's files (default: $TRIFECTA_DATA).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "small")]
    pub arch: ArchArg,
    /// Channel multiplier, e.g. 0.25 gives 32/32/64/64/64/128 for `small`.
    #[arg(long, default_value = "1", value_parser = positive_f64)]
    pub width: f64,
    #[arg(long, value_enum, default_value = "symba")]
    pub loss: LossArg,
    /// Alternating pairwise updates (on by default).
    #[arg(long, overrides_with = "no_apl")]
    pub apl: bool,
    /// Every block purely local.
    #[arg(long)]
    pub no_apl: bool,
    #[arg(long, value_enum, default_value = "batch")]
    pub norm: NormArg,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: u64,
    /// Positives per step (as many negatives are added).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    #[arg(long, default_value = "0.001", value_parser = positive_f64)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Layers whose goodness the ensemble averages, e.g. `3,4,5` (default: the last).
    #[arg(long, value_delimiter = ',')]
    pub ensemble: Vec<usize>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    args.device.require_cpu()?;
    let backend = Cpu::new(args.threads)?;
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| std::env::var_os("TRIFECTA_DATA").map(PathBuf::from))
        .ok_or_else(|| {
            Error::Config("no dataset folder: pass --data-dir or set TRIFECTA_DATA".into())
        })?;
    let kind = match args.dataset {
        DatasetArg::Mnist => DatasetKind::Mnist,
        DatasetArg::FashionMnist => DatasetKind::FashionMnist,
    };
    let train = load_idx_split(&data_dir, kind, true)?;
    let test = load_idx_split(&data_dir, kind, false)?;

    let mut config = FfConfig::trifecta(args.arch.into(), args.width, train.shape, train.classes)?;
    config.loss = match args.loss {
        LossArg::Symba => LossKind::Symba,
        LossArg::Threshold => LossKind::Threshold,
    };
    config.apl = !args.no_apl;
    config.norm = args.norm.into();
    config.adam.lr = args.lr as f32;
    let layers = config.layers.len();
    let ensemble = if args.ensemble.is_empty() {
        vec![layers - 1]
    } else {
        args.ensemble.clone()
    };
    let mut net = FfNet::new(&backend, config.clone(), args.seed)?;
    let mut rng = Rng::stream(args.seed, 2);
    println!(
        "training on {} ({} train, {} test), {}: layers {:?}, loss {:?}, apl {}, norm {:?}, batch {}",
        data_dir.display(),
        train.len(),
        test.len(),
        backend.name(),
        config.layers.iter().map(|l| l.0).collect::<Vec<_>>(),
        config.loss,
        config.apl,
        config.norm,
        args.batch_size
    );
    for epoch in 1..=args.epochs {
        let stats = train_epoch(
            &mut net,
            &backend,
            &train,
            args.batch_size as usize,
            &mut rng,
            |_, _, _| {},
        )?;
        let eval = evaluate(&mut net, &backend, &test, 1000, &ensemble)?;
        println!(
            "epoch {epoch}: {:.1} s train ({:.0} samples/s), ensemble {:?} test accuracy {:.2}%",
            stats.seconds,
            stats.samples as f64 / stats.seconds,
            eval.ensemble_layers,
            100.0 * eval.ensemble_accuracy
        );
        for (i, (layer, accuracy)) in stats.layers.iter().zip(&eval.layer_accuracy).enumerate() {
            println!(
                "  layer {i}: loss {:.4}  pos {:.4}  neg {:.4}  delta {:+.4}  test accuracy {:.2}%",
                layer.loss,
                layer.positive,
                layer.negative,
                layer.delta(),
                100.0 * accuracy
            );
        }
    }
    Ok(())
}
