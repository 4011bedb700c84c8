//! Runs: a training run as a folder that holds its resolved config (`config.toml`), its metrics
//! (`metrics.jsonl`) and its latest checkpoint (`checkpoint.safetensors` + `.json`). A run can
//! be resumed from that folder and ends with the same weights as an uninterrupted one, because
//! every epoch's randomness is derived from (seed, epoch) and the checkpoint holds the whole
//! optimiser state.

pub mod checkpoint;
pub mod config;
pub mod metrics;

use crate::backend::Backend;
use crate::backend::cpu::Cpu;
use crate::data::augment::Augment;
use crate::data::{self, Dataset, DatasetKind, Split};
use crate::error::{Error, Result};
use crate::ff::train::{evaluate, train_epoch};
use crate::ff::{Evaluation, FfConfig, FfNet};
use config::TrainConfig;
use metrics::{EpochRecord, LayerRecord};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// The training and test splits of a config's dataset, with the training split's
/// normalisation applied to both.
pub fn load_data(config: &TrainConfig) -> Result<(Dataset, Dataset)> {
    let dir = data::data_dir(config.dataset, config.data_dir.as_deref())?;
    // Only the cache folder is downloaded into; an explicit folder is read as it is.
    let download = config.data_dir.is_none() && config.dataset != DatasetKind::MnistSample;
    let mut train = data::load(config.dataset, &dir, Split::Train, download)?;
    let mut test = data::load(config.dataset, &dir, Split::Test, false)?;
    if train.shape != test.shape || train.classes != test.classes {
        return Err(Error::data(
            &dir,
            "the training and test splits differ in image shape or classes",
        ));
    }
    if config.train_limit > 0 {
        train.subsample(
            config.train_limit,
            &mut crate::rng::Rng::stream(config.seed, 3),
        );
    }
    if config.test_limit > 0 {
        test.subsample(
            config.test_limit,
            &mut crate::rng::Rng::stream(config.seed, 4),
        );
    }
    test.mean = train.mean.clone();
    test.std = train.std.clone();
    Ok((train, test))
}

/// The network a config describes, for images of `data`'s shape.
pub fn build_net<B: Backend>(
    backend: &B,
    config: &TrainConfig,
    data: &Dataset,
) -> Result<FfNet<B>> {
    let mut ff = FfConfig::trifecta(config.arch, config.width, data.shape, data.classes)?;
    ff.loss = config.loss;
    ff.alpha = config.alpha;
    ff.tau = config.tau;
    ff.apl = config.apl;
    ff.norm = config.norm;
    ff.adam.lr = config.lr as f32;
    FfNet::new(backend, ff, config.seed)
}

fn ensemble_layers(config: &TrainConfig, layers: usize) -> Vec<usize> {
    if config.ensemble.is_empty() {
        vec![layers - 1]
    } else {
        config.ensemble.clone()
    }
}

/// Makes `dir` a fresh run folder: refuses one that already holds a run, creates it, and
/// writes the config (which also proves the folder writable).
fn create_run_dir(dir: &Path, config: &TrainConfig) -> Result<()> {
    if dir.join(CONFIG_FILE).exists() || dir.join(CHECKPOINT_FILE).exists() {
        return Err(Error::Config(format!(
            "{} already holds a run: pass --resume {} to continue it, or choose another --out",
            dir.display(),
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    checkpoint::write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())
}

/// Reads the resolved config of an existing run folder.
pub fn read_config(dir: &Path) -> Result<TrainConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let config: TrainConfig =
        toml::from_str(&text).map_err(|e| Error::data(&path, e.message().to_string()))?;
    config.validate()?;
    Ok(config)
}

/// How a run reports progress: a bar on a terminal, plain lines otherwise.
fn progress_bar(epoch: u64, epochs: u64, steps: usize) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} {bar:30} step {pos}/{len} {msg} [{elapsed} < {eta}]",
        )
        .expect("valid template"),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

/// Trains `config` from scratch into `config.out`, or, with `resume`, continues the run in
/// `config.out` from its checkpoint. Prints one block per epoch; returns every epoch's record.
pub fn train(config: &TrainConfig, resume: bool) -> Result<Vec<EpochRecord>> {
    config.validate()?;
    let dir = config.out.clone();
    let backend = Cpu::new(config.threads)?;
    let (train, test) = load_data(config)?;
    let mut net = build_net(&backend, config, &train)?;
    let checkpoint_path = dir.join(CHECKPOINT_FILE);
    let metrics_path = dir.join(METRICS_FILE);
    let mut done = 0;
    if resume {
        if checkpoint_path.exists() {
            let header = checkpoint::load(&checkpoint_path, &mut net, &backend)?;
            done = header.epoch;
        }
        metrics::truncate_after(&metrics_path, done)?;
        // A longer --epochs is allowed on resume: the folder's config follows it.
        checkpoint::write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
    } else {
        create_run_dir(&dir, config)?;
    }
    let layers = net.blocks.len();
    let ensemble = ensemble_layers(config, layers);
    println!(
        "run {}: {} ({} train / {} test images), {}, widths {:?}, loss {:?}, apl {}, norm {:?}, batch {}",
        dir.display(),
        config.dataset.name(),
        train.len(),
        test.len(),
        backend.name(),
        net.config.layers.iter().map(|l| l.0).collect::<Vec<_>>(),
        config.loss,
        config.apl,
        config.norm,
        config.batch_size
    );
    if done > 0 {
        println!("resuming after epoch {done}");
    }
    let augment = config.augment.then(Augment::default);
    let mut records = Vec::new();
    for epoch in done + 1..=config.epochs {
        let lr = config.lr_at(epoch);
        net.config.adam.lr = lr as f32;
        let steps = train.len().div_ceil(config.batch_size);
        let bar = progress_bar(epoch, config.epochs, steps);
        let started = Instant::now();
        let stats = train_epoch(
            &mut net,
            &backend,
            &train,
            config.batch_size,
            config.seed,
            epoch,
            augment,
            |step, _, metrics| {
                let last = metrics.iter().rev().flatten().next();
                let rate =
                    ((step + 1) * config.batch_size) as f64 / started.elapsed().as_secs_f64();
                if let Some(m) = last {
                    bar.set_message(format!("loss {:.4} {:.0} samples/s", m.loss, rate));
                }
                bar.inc(1);
            },
        )?;
        bar.finish_and_clear();
        let eval_start = Instant::now();
        let eval = evaluate(&mut net, &backend, &test, config.eval_batch_size, &ensemble)?;
        let record = epoch_record(epoch, lr, &stats, &eval, eval_start.elapsed().as_secs_f64());
        print_epoch(&record, config.epochs);
        metrics::append(&metrics_path, &record)?;
        let header = checkpoint::Header {
            format: checkpoint::FORMAT.into(),
            epoch,
            iteration: net.iteration,
            adam_steps: net.optimizer_steps(),
            config: config.clone(),
        };
        checkpoint::save(&checkpoint_path, &mut net, &backend, &header)?;
        records.push(record);
    }
    Ok(records)
}

fn epoch_record(
    epoch: u64,
    lr: f64,
    stats: &crate::ff::train::EpochStats,
    eval: &Evaluation,
    eval_seconds: f64,
) -> EpochRecord {
    EpochRecord {
        epoch,
        lr,
        layers: stats
            .layers
            .iter()
            .zip(&eval.layer_accuracy)
            .enumerate()
            .map(|(layer, (s, accuracy))| LayerRecord {
                layer,
                loss: s.loss,
                positive: s.positive,
                negative: s.negative,
                delta: s.delta(),
                test_accuracy: *accuracy,
            })
            .collect(),
        ensemble_layers: eval.ensemble_layers.clone(),
        ensemble_accuracy: eval.ensemble_accuracy,
        train_seconds: stats.seconds,
        eval_seconds,
        samples_per_second: stats.samples as f64 / stats.seconds,
    }
}

fn print_epoch(r: &EpochRecord, epochs: u64) {
    println!(
        "epoch {}/{epochs}: train {:.1} s ({:.0} samples/s), eval {:.1} s, lr {:.1e}, ensemble {:?} test accuracy {:.2}%",
        r.epoch,
        r.train_seconds,
        r.samples_per_second,
        r.eval_seconds,
        r.lr,
        r.ensemble_layers,
        100.0 * r.ensemble_accuracy
    );
    for l in &r.layers {
        println!(
            "  layer {}: loss {:.4}  pos {:.4}  neg {:.4}  delta {:+.4}  test accuracy {:.2}%",
            l.layer,
            l.loss,
            l.positive,
            l.negative,
            l.delta,
            100.0 * l.test_accuracy
        );
    }
}

/// Evaluates the checkpoint at `path` (a run folder or a `.safetensors` file) with `config`
/// (by default the one saved in the checkpoint) on its dataset's test split.
pub fn evaluate_checkpoint(
    path: &Path,
    config: Option<TrainConfig>,
) -> Result<(TrainConfig, Evaluation)> {
    let file: PathBuf = if path.is_dir() {
        path.join(CHECKPOINT_FILE)
    } else {
        path.to_path_buf()
    };
    let header = checkpoint::read_header(&file)?;
    let config = config.unwrap_or(header.config);
    let backend = Cpu::new(config.threads)?;
    let (train, test) = load_data(&config)?;
    let mut net = build_net(&backend, &config, &train)?;
    checkpoint::load(&file, &mut net, &backend)?;
    let ensemble = ensemble_layers(&config, net.blocks.len());
    let eval = evaluate(&mut net, &backend, &test, config.eval_batch_size, &ensemble)?;
    Ok((config, eval))
}
