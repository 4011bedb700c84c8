//! `trifecta eval CHECKPOINT`: per-layer and ensemble test accuracy of a saved network.

use crate::error::{Error, Result};
use crate::run::config::{PartialConfig, TrainConfig};
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
        let split = |c: &TrainConfig| (c.val_split, if c.val_split > 0 { c.seed } else { 0 });
        if split(&config) != split(&saved) {
            // Another split would score images the network trained on as validation.
            return Err(Error::Config(format!(
                "{}: the validation split is the run's own ({} training images held out with \
                 seed {}); eval cannot change --val-split, nor --seed where there is one",
                file.display(),
                saved.val_split,
                saved.seed
            )));
        }
        config.out = saved.out;
        Some(config)
    };
    let crate::run::CheckpointEval { config, test, val } =
        crate::run::evaluate_checkpoint(&args.checkpoint, config)?;
    let val_images = val
        .as_ref()
        .map_or(String::new(), |v| format!("{} val / ", v.samples));
    let val_part = |accuracy: Option<f64>| {
        accuracy.map_or(String::new(), |a| format!("val {:.2}%, test ", 100.0 * a))
    };
    println!(
        "{} on {} ({val_images}{} test images): ensemble {:?} accuracy {}{:.2}%",
        args.checkpoint.display(),
        config.dataset.name(),
        test.samples,
        test.ensemble_layers,
        val_part(val.as_ref().map(|v| v.ensemble_accuracy)),
        100.0 * test.ensemble_accuracy
    );
    for (layer, accuracy) in test.layer_accuracy.iter().enumerate() {
        let on_val = val.as_ref().map(|v| v.layer_accuracy[layer]);
        println!(
            "  layer {layer}: {}{:.2}%",
            val_part(on_val),
            100.0 * accuracy
        );
    }
    Ok(())
}
