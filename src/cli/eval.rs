//! `trifecta eval CHECKPOINT`: per-layer and ensemble accuracy of a saved network (an FF
//! network, or a baseline's heads) on the test set, the run's validation split and (asked)
//! the images it trained on.

use crate::baselines::Model;
use crate::error::{Error, Result};
use crate::run::config::{PartialConfig, TrainConfig};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run folder, an FF checkpoint `.safetensors` file, or a baseline's (bp/lcp)
    /// `weights.safetensors`.
    pub checkpoint: PathBuf,
    /// Also evaluate the images the run trained on (without augmentation), for the
    /// generalisation gap: accuracy on them against the test set's, per layer.
    #[arg(long)]
    pub on_train: bool,
    /// Also the ensemble's accuracy on each class of the test set, and the class each was
    /// most often taken for.
    #[arg(long)]
    pub per_class: bool,
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
        let file = crate::run::saved_state_file(&args.checkpoint);
        let saved = crate::run::checkpoint::read_any_header(&file)?.config;
        if saved.model != Model::Ff && overrides.ensemble.is_some() {
            return Err(Error::Config(format!(
                "{}: a baseline's eval reports every head on its own; --ensemble averages an FF \
                 network's layers (predict takes it for a baseline's heads)",
                file.display()
            )));
        }
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
    let crate::run::CheckpointEval {
        config,
        splits,
        class_names,
    } = crate::run::evaluate_checkpoint(&args.checkpoint, config, args.on_train)?;
    // "train 99.10%, val 98.70%, test 98.60%", every split evaluated in that order; the
    // test split's alone without a name.
    let accuracies = |value: &dyn Fn(&crate::ff::Evaluation) -> f64| {
        let parts: Vec<String> = splits
            .iter()
            .map(|(name, e)| match splits.len() {
                1 => format!("{:.2}%", 100.0 * value(e)),
                _ => format!("{name} {:.2}%", 100.0 * value(e)),
            })
            .collect();
        parts.join(", ")
    };
    let images: Vec<String> = splits
        .iter()
        .map(|(name, e)| format!("{} {name}", e.samples))
        .collect();
    let (_, test) = splits.last().expect("the test split is always evaluated");
    // A baseline's last head stands where an FF network's ensemble does.
    let predictor = match config.model {
        Model::Ff => format!("ensemble {:?}", test.ensemble_layers),
        model => format!("{model:?} head on layer {}", test.ensemble_layers[0]).to_lowercase(),
    };
    println!(
        "{} on {} ({} images): {predictor} accuracy {}",
        args.checkpoint.display(),
        config.dataset.name(),
        images.join(" / "),
        accuracies(&|e| e.ensemble_accuracy)
    );
    // A baseline's layers without a head have no accuracy.
    for layer in (0..test.layer_accuracy.len()).filter(|&l| !test.layer_accuracy[l].is_nan()) {
        println!(
            "  layer {layer}: {}",
            accuracies(&|e| e.layer_accuracy[layer])
        );
    }
    if args.per_class {
        print_per_class(test, &class_names, &predictor);
    }
    Ok(())
}

/// The ensemble's (a baseline's last head's) accuracy on each class, and the class it was
/// most often taken for.
fn print_per_class(eval: &crate::ff::Evaluation, names: &[String], predictor: &str) {
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    println!(
        "per class ({predictor}, test):\n  {:<width$}  images  accuracy  most often taken for",
        "class"
    );
    for (class, record) in eval.per_class().into_iter().enumerate() {
        let taken = match record.mistaken {
            Some((other, count)) => format!("{} ({count})", names[other]),
            None => "-".into(),
        };
        let accuracy = match record.images {
            0 => "-".into(),
            _ => format!("{:.2}%", 100.0 * record.accuracy),
        };
        println!(
            "  {:<width$}  {:>6}  {accuracy:>8}  {taken}",
            names[class], record.images
        );
    }
}
