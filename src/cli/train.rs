//! `trifecta train`: every knob as a flag, or a TOML config (`--config`) that flags override.
//! `--resume RUN_DIR` continues an interrupted run.

use super::{device_arg, positive_f64};
use crate::backend::Precision;
use crate::baselines::Model;
use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::ff::{Arch, LossKind};
use crate::layers::norm::NormKind;
use crate::run::config::{PartialConfig, parse_schedule};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Continue the run in this folder from its last checkpoint, or from where a stopped
    /// process saved it within an epoch.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Stop once the run has trained N steps in all (counted across resumes, as Lightning's
    /// `max_steps`), within an epoch if need be; `--resume` goes on from there. Not saved
    /// with the run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Within an epoch, save the run's state every M minutes (0: at epoch ends only), so
    /// that a process stopped any way loses at most M minutes of training. Not saved with
    /// the run.
    #[arg(long, value_name = "M", default_value_t = 10.0)]
    pub save_every_minutes: f64,
    /// Print the run's whole configuration as TOML (defaults, `--config`'s file and the
    /// flags laid over each other; with `--resume`, the run's) and exit without training.
    /// Saved to a file, it is a `--config` for the same run.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub knobs: KnobArgs,
}

/// A run's knobs as flags, or as a TOML file of them: `train`'s, and what `eval` and
/// `reproduce` take to change or fix them.
#[derive(Args, Debug, Default)]
pub struct KnobArgs {
    /// TOML file with any of the knobs below (snake_case keys); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// ff (Forward-Forward), bp (backprop baseline) or lcp (local classifier proxies).
    #[arg(long, value_enum)]
    pub model: Option<Model>,
    /// The data [default: mnist-sample for train, cifar10 for reproduce].
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Folder with the dataset's files (default: $TRIFECTA_DATA/<dataset>, else the user cache
    /// folder, downloading on first use).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// small (6 blocks) or large (12 blocks, the thesis' 500-epoch network) [default: small].
    #[arg(long, value_enum)]
    pub arch: Option<ArchArg>,
    /// Channel multiplier: 0.25 gives 32/32/64/64/64/128 for `small` [default: 1, or 0.25
    /// for the built-in sample].
    #[arg(long, value_parser = positive_f64, allow_negative_numbers = true)]
    pub width: Option<f64>,
    /// symba (the Trifecta's) or threshold (Hinton's) [default: symba].
    #[arg(long, value_enum)]
    pub loss: Option<LossArg>,
    /// SymBa's alpha [default: 4].
    #[arg(long, value_parser = positive_f64, allow_negative_numbers = true)]
    pub alpha: Option<f64>,
    /// The threshold loss' tau [default: 2].
    #[arg(long, allow_negative_numbers = true)]
    pub tau: Option<f64>,
    /// Alternating pairwise updates [default: on].
    #[arg(long, conflicts_with = "no_apl")]
    pub apl: bool,
    /// Every block purely local.
    #[arg(long)]
    pub no_apl: bool,
    /// The norm before every convolution: batch (the Trifecta's) or layer [default: batch].
    #[arg(long, value_enum)]
    pub norm: Option<NormArg>,
    /// [default: the --lr-schedule's epochs where one is given, else 100, or 5 for the
    /// built-in sample]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Positives per step; as many negatives are added [default: 512, or 128 for the sample].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Adam's learning rate [default: 0.001].
    #[arg(long, value_parser = positive_f64, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Learning rate by epoch segments, e.g. the thesis' 200:1e-3,200:5e-4,100:1e-4 (instead
    /// of --lr); without --epochs the run lasts the schedule's epochs, and epochs past the
    /// last segment keep its rate.
    #[arg(long, value_parser = schedule_arg)]
    pub lr_schedule: Option<String>,
    /// Every random draw of the run (initial weights, shuffling, negatives, augmentation,
    /// subsets) derives from it [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// CPU threads (0 = one per core, at most 4 a core) [default: 0].
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda or cuda:N [default: cpu].
    #[arg(long, value_parser = device_arg)]
    pub device: Option<String>,
    /// Convolution arithmetic on the GPU [default: bf16 on CUDA; the CPU is always f32].
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Run folder [default: runs/<dataset>-seed<seed>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Training augmentation (random crop, rotation) [default: on, off for the sample].
    #[arg(long, conflicts_with = "no_augment")]
    pub augment: bool,
    /// No training augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Layers whose goodness the ensemble averages, e.g. 3,4,5 [default: the last].
    #[arg(long, value_delimiter = ',')]
    pub ensemble: Option<Vec<usize>>,
    /// Images per evaluation batch, each scored under all ten labels: a matter of speed and
    /// memory [default: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub eval_batch_size: Option<u64>,
    /// Evaluate after every N-th epoch and after the last [default: 1, every epoch].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub eval_every: Option<u64>,
    /// Train on N images only (a random subset drawn with the seed) [default: 0, all].
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Test on N images only (a random subset drawn with the seed) [default: 0, all].
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Hold out N training images (drawn with the seed, before --train-limit) as a
    /// validation set, evaluated with the test set at every evaluation: choose epochs, layers
    /// and settings on it, and report the test accuracy of that choice [default: 0, none].
    #[arg(long)]
    pub val_split: Option<usize>,
    /// With --val-split: stop once N evaluations in a row bring no better validation
    /// accuracy of any layer (Lightning's EarlyStopping); `best.safetensors` holds the best
    /// [default: 0, never].
    #[arg(long)]
    pub patience: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    F32,
    Bf16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchArg {
    Small,
    Large,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LossArg {
    Symba,
    Threshold,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NormArg {
    Batch,
    Layer,
}

fn schedule_arg(s: &str) -> std::result::Result<String, String> {
    parse_schedule(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn flag(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

impl KnobArgs {
    /// The knobs of `--config`'s file, with the flags laid over them.
    pub fn knobs(&self) -> Result<PartialConfig> {
        let file = match &self.config {
            Some(path) => PartialConfig::from_file(path)?,
            None => PartialConfig::default(),
        };
        Ok(file.overlay(&self.partial()))
    }

    /// The knobs these flags set.
    pub fn partial(&self) -> PartialConfig {
        PartialConfig {
            model: self.model,
            dataset: self.dataset,
            data_dir: self.data_dir.clone(),
            arch: self.arch.map(|a| match a {
                ArchArg::Small => Arch::Small,
                ArchArg::Large => Arch::Large,
            }),
            width: self.width,
            loss: self.loss.map(|l| match l {
                LossArg::Symba => LossKind::Symba,
                LossArg::Threshold => LossKind::Threshold,
            }),
            alpha: self.alpha.map(|a| a as f32),
            tau: self.tau.map(|t| t as f32),
            apl: flag(self.apl, self.no_apl),
            norm: self.norm.map(|n| match n {
                NormArg::Batch => NormKind::Batch,
                NormArg::Layer => NormKind::Layer,
            }),
            epochs: self.epochs,
            batch_size: self.batch_size.map(|b| b as usize),
            lr: self.lr,
            lr_schedule: self.lr_schedule.clone(),
            seed: self.seed,
            threads: self.threads,
            device: self.device.clone(),
            precision: self.precision.map(|p| match p {
                PrecisionArg::F32 => Precision::F32,
                PrecisionArg::Bf16 => Precision::Bf16,
            }),
            out: self.out.clone(),
            augment: flag(self.augment, self.no_augment),
            ensemble: self.ensemble.clone(),
            eval_batch_size: self.eval_batch_size.map(|b| b as usize),
            eval_every: self.eval_every,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            val_split: self.val_split,
            patience: self.patience,
        }
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let knobs = args.knobs.knobs()?;
    let minutes = args.save_every_minutes;
    let bad = || {
        Error::Config(format!(
            "--save-every-minutes must be 0 or more, got {minutes}"
        ))
    };
    let save_every = match minutes {
        0.0 => None,
        m if m > 0.0 => Some(std::time::Duration::try_from_secs_f64(60.0 * m).map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let control = crate::run::RunControl {
        max_steps: args.max_steps,
        save_every,
    };
    if let Some(dir) = &args.resume {
        // The folder may have moved since the run began: it is where the run now lives.
        let mut saved = crate::run::read_config(dir)?;
        saved.out = dir.clone();
        let config = name_the_file(args.knobs.config.as_deref(), saved.resumed_with(&knobs))?;
        if args.print_config {
            print!("{}", config.to_toml());
            return Ok(());
        }
        crate::run::train(&config, true, control)?;
        print_next_steps(&config);
        return Ok(());
    }
    let config = name_the_file(
        args.knobs.config.as_deref(),
        knobs.resolve().and_then(|c| c.check_machine().map(|()| c)),
    )?;
    config.check_precision_for_new_run()?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    crate::run::train(&config, false, control)?;
    print_next_steps(&config);
    Ok(())
}

/// A configuration error of knobs that came partly from `--config`'s file names the file.
fn name_the_file<T>(file: Option<&std::path::Path>, result: Result<T>) -> Result<T> {
    match (file, result) {
        (Some(path), Err(Error::Config(msg))) => Err(Error::Config(format!(
            "{msg} (the flags laid over {})",
            path.display()
        ))),
        (_, result) => result,
    }
}

/// Where the run is, and the commands that read or continue it.
fn print_next_steps(config: &crate::run::config::TrainConfig) {
    let dir = config.out.display();
    println!(
        "run folder {dir}: `trifecta report {dir}` draws its curves, `trifecta eval {dir}` \
         evaluates it, `trifecta train --resume {dir} --epochs N` trains it further"
    );
    // A baseline keeps its last epoch only.
    if config.model == Model::Ff && config.val_split > 0 {
        println!(
            "the epoch best on the validation split: `trifecta eval {}`",
            config.out.join(crate::run::BEST_CHECKPOINT_FILE).display()
        );
    }
}
