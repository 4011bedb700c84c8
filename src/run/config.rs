//! The training configuration: every knob of a run, from defaults, a TOML file and flags, in
//! that order of precedence. The resolved configuration is written into the run folder.

use crate::backend::Precision;
use crate::baselines::Model;
use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::ff::{Arch, LossKind};
use crate::layers::norm::NormKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a run needs, fully resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `ff` (Forward-Forward), or the `bp` / `lcp` baselines.
    pub model: Model,
    pub dataset: DatasetKind,
    /// Dataset folder; absent = the cache folder, with download on first use.
    pub data_dir: Option<PathBuf>,
    pub arch: Arch,
    pub width: f64,
    pub loss: LossKind,
    pub alpha: f32,
    pub tau: f32,
    pub apl: bool,
    pub norm: NormKind,
    pub epochs: u64,
    pub batch_size: usize,
    /// Adam's learning rate, for every epoch when `lr_schedule` is empty.
    pub lr: f64,
    /// Epoch segments `EPOCHS:LR,...`, e.g. the thesis' `200:1e-3,200:5e-4,100:1e-4`; epochs
    /// past the last segment keep its rate.
    pub lr_schedule: String,
    pub seed: u64,
    /// CPU threads, 0 = one per core.
    pub threads: usize,
    pub device: String,
    /// Convolution arithmetic on the GPU; absent = bf16 on CUDA (the CPU is always f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    pub out: PathBuf,
    pub augment: bool,
    /// Layers averaged by the ensemble; empty = the last layer.
    pub ensemble: Vec<usize>,
    pub eval_batch_size: usize,
    /// Evaluate after every N-th epoch and after the last (as Lightning's
    /// `check_val_every_n_epoch`); the other epochs' records carry no accuracy.
    #[serde(default = "every_epoch")]
    pub eval_every: u64,
    /// Use only N training / test images, a subset drawn with the run's seed (0 = all).
    pub train_limit: usize,
    pub test_limit: usize,
    /// Hold out N training images, drawn with the run's seed, as a validation set that is
    /// evaluated with the test set (0 = none; also for configurations written before it).
    #[serde(default)]
    pub val_split: usize,
    /// With a validation split: stop once this many evaluations in a row bring no better
    /// validation accuracy of any layer (Lightning's `EarlyStopping(patience=N)`); 0 = never.
    #[serde(default)]
    pub patience: u64,
}

/// A configuration with every knob optional: what a TOML file or the flags set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialConfig {
    pub model: Option<Model>,
    pub dataset: Option<DatasetKind>,
    pub data_dir: Option<PathBuf>,
    pub arch: Option<Arch>,
    pub width: Option<f64>,
    pub loss: Option<LossKind>,
    pub alpha: Option<f32>,
    pub tau: Option<f32>,
    pub apl: Option<bool>,
    pub norm: Option<NormKind>,
    pub epochs: Option<u64>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub lr_schedule: Option<String>,
    pub seed: Option<u64>,
    pub threads: Option<usize>,
    pub device: Option<String>,
    pub precision: Option<Precision>,
    pub out: Option<PathBuf>,
    pub augment: Option<bool>,
    pub ensemble: Option<Vec<usize>>,
    pub eval_batch_size: Option<usize>,
    pub eval_every: Option<u64>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub val_split: Option<usize>,
    pub patience: Option<u64>,
}

impl PartialConfig {
    /// Reads a TOML file; unknown keys and bad values are errors naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| {
            let place = e.span().map(|span| {
                let line = text[..span.start].matches('\n').count();
                let content = text.lines().nth(line).unwrap_or("").trim();
                format!("line {}: `{content}`: ", line + 1)
            });
            Error::data(
                path,
                format!("{}{}", place.unwrap_or_default(), e.message()),
            )
        })
    }

    /// `self` with every knob that `top` sets replaced. The destructuring is exhaustive, so a
    /// new knob cannot be forgotten here.
    pub fn overlay(self, top: &PartialConfig) -> Self {
        let PartialConfig {
            model,
            dataset,
            data_dir,
            arch,
            width,
            loss,
            alpha,
            tau,
            apl,
            norm,
            epochs,
            batch_size,
            lr,
            lr_schedule,
            seed,
            threads,
            device,
            precision,
            out,
            augment,
            ensemble,
            eval_batch_size,
            eval_every,
            train_limit,
            test_limit,
            val_split,
            patience,
        } = top.clone();
        PartialConfig {
            model: model.or(self.model),
            dataset: dataset.or(self.dataset),
            data_dir: data_dir.or(self.data_dir),
            arch: arch.or(self.arch),
            width: width.or(self.width),
            loss: loss.or(self.loss),
            alpha: alpha.or(self.alpha),
            tau: tau.or(self.tau),
            apl: apl.or(self.apl),
            norm: norm.or(self.norm),
            epochs: epochs.or(self.epochs),
            batch_size: batch_size.or(self.batch_size),
            lr: lr.or(self.lr),
            lr_schedule: lr_schedule.or(self.lr_schedule),
            seed: seed.or(self.seed),
            threads: threads.or(self.threads),
            device: device.or(self.device),
            precision: precision.or(self.precision),
            out: out.or(self.out),
            augment: augment.or(self.augment),
            ensemble: ensemble.or(self.ensemble),
            eval_batch_size: eval_batch_size.or(self.eval_batch_size),
            eval_every: eval_every.or(self.eval_every),
            train_limit: train_limit.or(self.train_limit),
            test_limit: test_limit.or(self.test_limit),
            val_split: val_split.or(self.val_split),
            patience: patience.or(self.patience),
        }
    }

    /// Fills in defaults and checks every value. Without a dataset the run is the quick start:
    /// the built-in MNIST sample at width 0.25 for 5 epochs; otherwise the thesis' settings
    /// (width 1, batch 512, 100 epochs, augmentation).
    pub fn resolve(&self) -> Result<TrainConfig> {
        let dataset = self.dataset.unwrap_or(DatasetKind::MnistSample);
        let quick = dataset == DatasetKind::MnistSample;
        let config = TrainConfig {
            model: self.model.unwrap_or(Model::Ff),
            dataset,
            data_dir: self.data_dir.clone(),
            arch: self.arch.unwrap_or(Arch::Small),
            width: self.width.unwrap_or(if quick { 0.25 } else { 1.0 }),
            loss: self.loss.unwrap_or(LossKind::Symba),
            alpha: self.alpha.unwrap_or(4.0),
            tau: self.tau.unwrap_or(2.0),
            apl: self.apl.unwrap_or(true),
            norm: self.norm.unwrap_or(NormKind::Batch),
            epochs: self.epochs.unwrap_or_else(|| {
                // A schedule says how long the run is meant to last (the thesis' 500
                // epochs would otherwise stop at 100, before its lower rates).
                let scheduled: u64 = parse_schedule(self.lr_schedule.as_deref().unwrap_or(""))
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.epochs)
                    .sum();
                match (scheduled, quick) {
                    (0, true) => 5,
                    (0, false) => 100,
                    (n, _) => n,
                }
            }),
            batch_size: self.batch_size.unwrap_or(if quick { 128 } else { 512 }),
            lr: self.lr.unwrap_or(1e-3),
            lr_schedule: self.lr_schedule.clone().unwrap_or_default(),
            seed: self.seed.unwrap_or(0),
            threads: self.threads.unwrap_or(0),
            device: self.device.clone().unwrap_or_else(|| "cpu".into()),
            precision: self.precision,
            out: self
                .out
                .clone()
                .unwrap_or_else(|| default_out(dataset, self.seed.unwrap_or(0))),
            augment: self.augment.unwrap_or(!quick),
            ensemble: self.ensemble.clone().unwrap_or_default(),
            eval_batch_size: self.eval_batch_size.unwrap_or(1000),
            eval_every: self.eval_every.unwrap_or_else(every_epoch),
            train_limit: self.train_limit.unwrap_or(0),
            test_limit: self.test_limit.unwrap_or(0),
            val_split: self.val_split.unwrap_or(0),
            patience: self.patience.unwrap_or(0),
        };
        config.validate()?;
        Ok(config)
    }
}

/// Every knob set, as the configuration was resolved: the base a resumed run's changes are
/// laid over.
impl From<&TrainConfig> for PartialConfig {
    // The literal names every knob: a knob added to both structs must be added here too.
    fn from(config: &TrainConfig) -> Self {
        let c = config.clone();
        PartialConfig {
            model: Some(c.model),
            dataset: Some(c.dataset),
            data_dir: c.data_dir,
            arch: Some(c.arch),
            width: Some(c.width),
            loss: Some(c.loss),
            alpha: Some(c.alpha),
            tau: Some(c.tau),
            apl: Some(c.apl),
            norm: Some(c.norm),
            epochs: Some(c.epochs),
            batch_size: Some(c.batch_size),
            lr: Some(c.lr),
            lr_schedule: Some(c.lr_schedule),
            seed: Some(c.seed),
            threads: Some(c.threads),
            device: Some(c.device),
            precision: c.precision,
            out: Some(c.out),
            augment: Some(c.augment),
            ensemble: Some(c.ensemble),
            eval_batch_size: Some(c.eval_batch_size),
            eval_every: Some(c.eval_every),
            train_limit: Some(c.train_limit),
            test_limit: Some(c.test_limit),
            val_split: Some(c.val_split),
            patience: Some(c.patience),
        }
    }
}

/// The knobs a resumed run may change, as flags.
pub const RESUMABLE_FLAGS: &str = "--epochs, --threads, --device, --precision, --data-dir, \
     --eval-batch-size, --eval-every and --patience";

/// The default of `eval_every`, also for configurations written before it existed.
fn every_epoch() -> u64 {
    1
}

/// `runs/<dataset>-seed<seed>`, or the first `-2`, `-3`... that does not exist yet.
fn default_out(dataset: DatasetKind, seed: u64) -> PathBuf {
    let base = format!("runs/{}-seed{seed}", dataset.name());
    let mut path = PathBuf::from(&base);
    let mut k = 2;
    while path.exists() {
        path = PathBuf::from(format!("{base}-{k}"));
        k += 1;
    }
    path
}

/// One segment of a learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSegment {
    pub epochs: u64,
    pub lr: f64,
}

/// Parses `EPOCHS:LR,EPOCHS:LR,...` (empty = no schedule).
pub fn parse_schedule(text: &str) -> Result<Vec<LrSegment>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| {
            let bad = || {
                Error::Config(format!(
                    "lr schedule segment '{part}' is not EPOCHS:LR (e.g. 200:1e-3)"
                ))
            };
            let (epochs, lr) = part.trim().split_once(':').ok_or_else(bad)?;
            let epochs: u64 = epochs.trim().parse().map_err(|_| bad())?;
            let lr: f64 = lr.trim().parse().map_err(|_| bad())?;
            if epochs == 0 || !(lr.is_finite() && lr > 0.0) {
                return Err(bad());
            }
            Ok(LrSegment { epochs, lr })
        })
        .collect()
}

impl TrainConfig {
    /// Checks every value that does not depend on the machine: a config written on another
    /// one (a GPU run's folder, a 64-core machine's) still reads, reports and resumes here
    /// with the knobs changed that this machine needs. See [`Self::check_machine`].
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "{name} must be a positive number, got {v}"
                )))
            }
        };
        positive("width", self.width)?;
        positive("lr", self.lr)?;
        positive("alpha", self.alpha as f64)?;
        if self.epochs == 0 {
            return Err(Error::Config("epochs must be at least 1".into()));
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(Error::Config("batch sizes must be at least 1".into()));
        }
        if self.eval_every == 0 {
            return Err(Error::Config("eval_every must be at least 1".into()));
        }
        if self.patience > 0 && self.val_split == 0 {
            return Err(Error::Config(
                "patience stops on the validation accuracy: it needs a validation split (--val-split N)"
                    .into(),
            ));
        }
        // Checked here, before a run folder is made (the evaluator checks it again).
        crate::ff::eval::check_ensemble_layers(
            &self.ensemble,
            self.arch.layers().len(),
            &format!("{:?}", self.arch).to_lowercase(),
        )?;
        parse_schedule(&self.lr_schedule)?;
        crate::cli::DeviceArg::parse(&self.device)?;
        Ok(())
    }

    /// Checks what this machine must offer to run the config: its device, and no more
    /// threads than it can use. Run where a config is about to train or evaluate here.
    pub fn check_machine(&self) -> Result<()> {
        crate::backend::cpu::check_threads("threads", self.threads)?;
        crate::cli::DeviceArg::parse(&self.device)?.check_available()
    }

    /// `changes` laid over this (saved) configuration, and the knobs outside
    /// [`RESUMABLE_FLAGS`] that they change, each as `key saved -> asked` (asking for the
    /// value a knob already has is no change).
    pub fn with_changes(&self, changes: &PartialConfig) -> Result<(TrainConfig, Vec<String>)> {
        let resumed = PartialConfig::from(self).overlay(changes).resolve()?;
        let kept = TrainConfig {
            epochs: self.epochs,
            threads: self.threads,
            device: self.device.clone(),
            precision: self.precision,
            data_dir: self.data_dir.clone(),
            eval_batch_size: self.eval_batch_size,
            eval_every: self.eval_every,
            patience: self.patience,
            ..resumed.clone()
        };
        let table = |c: &TrainConfig| toml::Table::try_from(c).unwrap_or_default();
        let (saved, asked) = (table(self), table(&kept));
        let changed = asked
            .iter()
            .filter(|(key, value)| saved.get(*key) != Some(*value))
            .map(|(key, value)| {
                let was = saved.get(key).map_or("unset".into(), |v| v.to_string());
                format!("{key} {was} -> {value}")
            })
            .collect();
        Ok((resumed, changed))
    }

    /// This (saved) configuration continued with `changes`; a change to a knob outside
    /// [`RESUMABLE_FLAGS`] is an error naming it, with its saved and its asked value.
    pub fn resumed_with(&self, changes: &PartialConfig) -> Result<TrainConfig> {
        let (resumed, changed) = self.with_changes(changes)?;
        if !changed.is_empty() {
            return Err(Error::Config(format!(
                "a resumed run keeps its configuration; only {RESUMABLE_FLAGS} may change (asked: {})",
                changed.join(", ")
            )));
        }
        Ok(resumed)
    }

    /// Fails when a new run asks for bf16 on the CPU (which computes in f32). A resumed or
    /// evaluated GPU run may move to the CPU: there the precision is simply not used.
    pub fn check_precision_for_new_run(&self) -> Result<()> {
        if self.device == "cpu" && self.precision == Some(Precision::Bf16) {
            return Err(Error::Config(
                "precision bf16 needs a CUDA device (--device cuda); the CPU computes in f32"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The GPU's convolution arithmetic: as set, or bf16 (the thesis trained in mixed
    /// precision).
    pub fn gpu_precision(&self) -> Precision {
        self.precision.unwrap_or(Precision::Bf16)
    }

    /// Whether epoch `epoch` (1-based) ends with an evaluation: every `eval_every`-th
    /// epoch and the last.
    pub fn evaluates(&self, epoch: u64) -> bool {
        epoch.is_multiple_of(self.eval_every) || epoch >= self.epochs
    }

    /// The learning rate of epoch `epoch` (1-based): its segment's, or past the schedule the
    /// last segment's (as PyTorch's `MultiStepLR` keeps its last rate: a finished 500-epoch
    /// run resumed for more epochs goes on at 1e-4, not back at 1e-3); `lr` without one.
    pub fn lr_at(&self, epoch: u64) -> f64 {
        let mut start = 0;
        let mut last = self.lr;
        for segment in parse_schedule(&self.lr_schedule).unwrap_or_default() {
            if epoch <= start + segment.epochs {
                return segment.lr;
            }
            start += segment.epochs;
            last = segment.lr;
        }
        last
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a TrainConfig always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick start's configuration (no folder is made: `resolve` only names it).
    fn quick_start() -> TrainConfig {
        PartialConfig {
            out: Some("unused".into()),
            ..PartialConfig::default()
        }
        .resolve()
        .unwrap()
    }

    #[test]
    fn eval_every_evaluates_every_nth_epoch_and_the_last() {
        let partial = PartialConfig {
            epochs: Some(10),
            eval_every: Some(3),
            out: Some("unused".into()),
            ..PartialConfig::default()
        };
        let config = partial.resolve().unwrap();
        let evaluated: Vec<u64> = (1..=10).filter(|&e| config.evaluates(e)).collect();
        assert_eq!(evaluated, [3, 6, 9, 10]);
        let every = quick_start();
        assert!((1..=every.epochs).all(|e| every.evaluates(e)));
        let zero = PartialConfig {
            eval_every: Some(0),
            ..partial
        };
        assert!(zero.resolve().is_err());
    }

    /// A run folder written before `eval_every` and `val_split` existed still reads, as
    /// every epoch and no validation split.
    #[test]
    fn configs_without_eval_every_evaluate_every_epoch() {
        let config = quick_start();
        let old = config
            .to_toml()
            .replace("eval_every = 1\n", "")
            .replace("val_split = 0\n", "");
        assert!(!old.contains("eval_every") && !old.contains("val_split"));
        let read: TrainConfig = toml::from_str(&old).unwrap();
        assert_eq!(read, config);
    }

    #[test]
    fn a_resumed_run_changes_only_the_resumable_knobs() {
        let saved = quick_start();
        let longer = saved
            .resumed_with(&PartialConfig {
                epochs: Some(9),
                eval_every: Some(2),
                // The value the run already has is no change.
                seed: Some(saved.seed),
                ..PartialConfig::default()
            })
            .unwrap();
        assert_eq!((longer.epochs, longer.eval_every), (9, 2));
        assert_eq!(
            TrainConfig {
                epochs: saved.epochs,
                eval_every: saved.eval_every,
                ..longer
            },
            saved
        );
        let err = saved
            .resumed_with(&PartialConfig {
                width: Some(0.5),
                seed: Some(3),
                epochs: Some(9),
                ..PartialConfig::default()
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("width 0.25 -> 0.5") && err.contains("seed 0 -> 3"),
            "{err}"
        );
        assert!(!err.contains("epochs 5"), "{err}");
    }

    /// The thesis' 500-epoch schedule, shortened: each segment's epochs (1-based) take its
    /// rate, and epochs past the schedule keep the last segment's.
    #[test]
    fn lr_schedule_segments_cover_their_epochs() {
        let config = TrainConfig {
            lr: 0.25,
            lr_schedule: "2:1e-3, 3:5e-4,1:1e-4".into(),
            ..quick_start()
        };
        let rates: Vec<f64> = (1..=8).map(|e| config.lr_at(e)).collect();
        assert_eq!(rates, [1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 1e-4, 1e-4, 1e-4]);
        let plain = quick_start();
        assert!((1..=plain.epochs).all(|e| plain.lr_at(e) == plain.lr));
        for bad in ["2:1e-3,", "0:1e-3", "2:-1", "2", "x:1e-3", "2:nan"] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
        // Without epochs of its own, a run lasts its schedule; given, they win.
        let thesis = |epochs| PartialConfig {
            dataset: Some(DatasetKind::Mnist),
            lr_schedule: Some("200:1e-3,200:5e-4,100:1e-4".into()),
            epochs,
            ..PartialConfig::default()
        };
        assert_eq!(thesis(None).resolve().unwrap().epochs, 500);
        assert_eq!(thesis(Some(7)).resolve().unwrap().epochs, 7);
        let sample = PartialConfig {
            lr_schedule: Some("3:1e-3".into()),
            ..PartialConfig::default()
        };
        assert_eq!(sample.resolve().unwrap().epochs, 3);
        assert_eq!(PartialConfig::default().resolve().unwrap().epochs, 5);
    }
}
