//! `trifecta eval CHECKPOINT`: per-layer and ensemble test accuracy of a saved network.

use crate::error::Result;
use crate::run::config::PartialConfig;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run folder or a checkpoint `.safetensors` file.
    pub checkpoint: PathBuf,
    /// Any `train` knob (or a --config file of them) to change from the checkpoint's own
    /// config (e.g. --data-dir, --ensemble); architecture flags must match the checkpoint.
    #[command(flatten)]
    pub overrides: super::train::KnobArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let overrides = args.overrides.knobs()?;
    let config = if overrides == PartialConfig::default() {
        None
    } else {
        let file = if args.checkpoint.is_dir() {
            args.checkpoint.join(crate::run::CHECKPOINT_FILE)
        } else {
            args.checkpoint.clone()
        };
        let saved = crate::run::checkpoint::read_header(&file)?.config;
        let mut config = PartialConfig::from(&saved).overlay(&overrides).resolve()?;
        config.out = saved.out;
        Some(config)
    };
    let (config, eval) = crate::run::evaluate_checkpoint(&args.checkpoint, config)?;
    println!(
        "{} on {} ({} test images): ensemble {:?} accuracy {:.2}%",
        args.checkpoint.display(),
        config.dataset.name(),
        eval.samples,
        eval.ensemble_layers,
        100.0 * eval.ensemble_accuracy
    );
    for (layer, accuracy) in eval.layer_accuracy.iter().enumerate() {
        println!("  layer {layer}: {:.2}%", 100.0 * accuracy);
    }
    Ok(())
}
