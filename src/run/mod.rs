//! Runs: a training run as a folder that holds its resolved config (`config.toml`), its metrics
//! (`metrics.jsonl`) and its latest checkpoint (`checkpoint.safetensors` + `.json`). A run can
//! be resumed from that folder and ends with the same weights as an uninterrupted one, because
//! every epoch's randomness is derived from (seed, epoch) and the checkpoint holds the whole
//! optimiser state.

pub mod checkpoint;
pub mod config;
pub mod metrics;
pub mod predict;

use crate::backend::{Backend, with_backend};
use crate::baselines::{ClassifierNet, Model};
use crate::data::augment::Augment;
use crate::data::{self, Dataset, DatasetKind, Split};
use crate::error::{Error, Result};
use crate::ff::eval::KeptGoodness;
use crate::ff::train::{evaluate, train_epoch};
use crate::ff::{Evaluation, FfConfig, FfNet};
use crate::interrupt;
use checkpoint::Saved;
use config::TrainConfig;
use metrics::{EpochRecord, LayerRecord};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// A run stopped in the middle of an epoch: the network and the epoch's progress at the stop
/// (`--max-steps`, or the periodic save), which `--resume` goes on from; gone once that
/// epoch's checkpoint is written.
pub const PROGRESS_FILE: &str = "progress.safetensors";
/// With a validation split: the checkpoint of the epoch whose best layer did best on it (the
/// first such epoch), as Lightning's `ModelCheckpoint(monitor=...)`.
pub const BEST_CHECKPOINT_FILE: &str = "best.safetensors";
/// Goodness samples of positives and negatives per layer, after the last epoch (FF runs).
pub const GOODNESS_FILE: &str = "goodness.safetensors";
/// The trained parameters of a baseline run.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// The folder a config's dataset is read from, checked as far as can be without reading it:
/// an explicit `--data-dir` must exist (with the download command where there is one), and
/// must not hold the other of MNIST and Fashion-MNIST.
pub fn check_data_dir(config: &TrainConfig) -> Result<PathBuf> {
    let dir = data::data_dir(config.dataset, config.data_dir.as_deref())?;
    if config.data_dir.is_none() || config.dataset == DatasetKind::MnistSample {
        return Ok(dir);
    }
    if !dir.exists() {
        let fetch = match data::download::remotes(config.dataset) {
            [] => String::new(),
            _ => format!(
                " (`trifecta data download --dataset {} --data-dir {}` fetches it)",
                config.dataset.name(),
                dir.display()
            ),
        };
        return Err(Error::data(
            &dir,
            format!("--data-dir: no such folder{fetch}"),
        ));
    }
    data::download::check_not_the_twin(config.dataset, &dir)?;
    Ok(dir)
}

/// A run's data: the splits of its dataset, normalised with the training split's statistics.
pub struct Splits {
    pub train: Dataset,
    /// With `val_split`: training images held out, evaluated with the test set.
    pub val: Option<Dataset>,
    pub test: Dataset,
}

/// The splits of a config's dataset: `val_split` images drawn out of the training split
/// first, then the `train_limit` and `test_limit` subsets; the training split's normalisation
/// applied to all.
pub fn load_data(config: &TrainConfig) -> Result<Splits> {
    let dir = check_data_dir(config)?;
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
    let val = match config.val_split {
        0 => None,
        n if n >= train.len() => {
            return Err(Error::Config(format!(
                "val_split {n} leaves no training images: the training split of {} has {}",
                config.dataset.name(),
                train.len()
            )));
        }
        n => Some(train.split_off(n, &mut crate::rng::Rng::stream(config.seed, 6))),
    };
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
    Ok(Splits { train, val, test })
}

/// The network a config describes, for images of `data`'s shape.
pub fn build_net<B: Backend>(
    backend: &B,
    config: &TrainConfig,
    data: &Dataset,
) -> Result<FfNet<B>> {
    let ff = ff_config(config, data)?;
    ff.check_fits(
        (2 * config.batch_size).max(config.eval_batch_size),
        backend.available_memory(),
    )?;
    FfNet::new(backend, ff, config.seed)
}

/// The FF configuration (architecture, rule, Adam) of a run, for images of `data`'s shape;
/// the baselines take their trunk from it too.
pub fn ff_config(config: &TrainConfig, data: &Dataset) -> Result<FfConfig> {
    let mut ff = FfConfig::trifecta(config.arch, config.width, data.shape, data.classes)?;
    ff.loss = config.loss;
    ff.alpha = config.alpha;
    ff.tau = config.tau;
    ff.apl = config.apl;
    ff.norm = config.norm;
    ff.adam.lr = config.lr as f32;
    Ok(ff)
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
    if dir.exists() && !dir.is_dir() {
        return Err(Error::data(
            dir,
            "--out names a file, not a folder: choose another --out",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    checkpoint::write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())
}

/// Reads the resolved config of an existing run folder.
pub fn read_config(dir: &Path) -> Result<TrainConfig> {
    let path = dir.join(CONFIG_FILE);
    if !dir.exists() {
        return Err(Error::data(dir, "no such run folder"));
    }
    if !dir.is_dir() {
        return Err(Error::data(dir, "not a run folder: a file"));
    }
    if !path.exists() {
        return Err(Error::data(
            dir,
            format!("not a run folder: it has no {CONFIG_FILE}"),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let config: TrainConfig =
        toml::from_str(&text).map_err(|e| Error::data(&path, e.message().to_string()))?;
    config.validate()?;
    Ok(config)
}

/// How a run reports progress within an epoch: a bar on a terminal; otherwise a plain log
/// line at every tenth of the epoch.
enum Progress {
    Bar(indicatif::ProgressBar),
    Plain {
        epoch: u64,
        epochs: u64,
        steps: usize,
        done: usize,
    },
}

impl Progress {
    /// The progress of epoch `epoch` of `epochs`, `steps` long, from step `done` on (a
    /// resumed epoch's).
    fn new(epoch: u64, epochs: u64, steps: usize, done: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Plain {
                epoch,
                epochs,
                steps,
                done,
            };
        }
        let bar = indicatif::ProgressBar::new(steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} {bar:30} step {pos}/{len} {msg} [{elapsed} < {eta}]",
            )
            .expect("valid template"),
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        bar.set_position(done as u64);
        Progress::Bar(bar)
    }

    /// One more step done; `loss` and `rate` (samples/s) describe it.
    fn step(&mut self, loss: Option<f32>, rate: f64) {
        let message = match loss {
            Some(l) => format!("loss {l:.4} {rate:.0} samples/s"),
            None => format!("{rate:.0} samples/s"),
        };
        match self {
            Progress::Bar(bar) => {
                bar.set_message(message);
                bar.inc(1);
            }
            Progress::Plain {
                epoch,
                epochs,
                steps,
                done,
            } => {
                *done += 1;
                let tenth = (*steps / 10).max(1);
                if *done % tenth == 0 && *done < *steps {
                    eprintln!("epoch {epoch}/{epochs} step {done}/{steps} {message}");
                }
            }
        }
    }

    fn finish(self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// How a training process runs, beside its run's configuration: neither changes what the run
/// computes, so neither is saved with it.
#[derive(Clone, Copy, Debug)]
pub struct RunControl {
    /// Stop once the run has trained this many steps in all (Lightning's `max_steps`), in
    /// the middle of an epoch if need be, saving where it stopped for `--resume`.
    pub max_steps: Option<u64>,
    /// Within an epoch, save the run's state once this long has passed since the last
    /// save (Lightning's `train_time_interval`), so that a stopped process loses at most
    /// that much training; None: at the ends of epochs only.
    pub save_every: Option<std::time::Duration>,
}

impl Default for RunControl {
    /// No step limit; a save every 10 minutes within an epoch (which only long CPU epochs
    /// reach).
    fn default() -> Self {
        RunControl {
            max_steps: None,
            save_every: Some(std::time::Duration::from_secs(600)),
        }
    }
}

/// Trains `config` from scratch into `config.out`, or, with `resume`, continues the run in
/// `config.out` from its checkpoint, or from the middle of an epoch where a stopped process
/// saved its progress. Prints one block per epoch; returns every epoch's record. An FF run
/// routes SIGINT and SIGTERM to a stop it can resume from ([`crate::interrupt`]), returning
/// [`Error::Interrupted`].
pub fn train(config: &TrainConfig, resume: bool, control: RunControl) -> Result<Vec<EpochRecord>> {
    config.validate()?;
    config.check_machine()?;
    if config.model != Model::Ff {
        if control.max_steps.is_some() {
            return Err(Error::Config(
                "--max-steps stops a run within an epoch, and baseline (bp/lcp) runs resume only from an epoch's end".into(),
            ));
        }
        return train_baseline(config, resume);
    }
    with_backend!(
        &config.device,
        config.threads,
        crate::backend::GpuOptions::new(config.gpu_precision()),
        |backend| train_ff(backend, config, resume, control)
    )
}

/// Removes a run's progress file and its JSON copy, if there.
fn remove_progress(path: &Path) -> Result<()> {
    for file in [path.to_path_buf(), path.with_extension("json")] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&file, e));
            }
            _ => {}
        }
    }
    Ok(())
}

fn train_ff<B: Backend>(
    backend: &B,
    config: &TrainConfig,
    resume: bool,
    control: RunControl,
) -> Result<Vec<EpochRecord>> {
    let dir = config.out.clone();
    interrupt::install();
    let Splits { train, val, test } = load_data(config)?;
    let mut net = build_net(backend, config, &train)?;
    let inputs = train.input_spec();
    let checkpoint_path = dir.join(CHECKPOINT_FILE);
    let metrics_path = dir.join(METRICS_FILE);
    let progress_path = dir.join(PROGRESS_FILE);
    let mut done = 0;
    let mut partial = None;
    if resume {
        if checkpoint_path.exists() {
            let header = checkpoint::load(&checkpoint_path, &mut net, backend)?;
            done = header.epoch;
        }
        if progress_path.exists() {
            let header = checkpoint::read_header(&progress_path)?;
            match header.partial {
                Some(p) if header.epoch == done && done < config.epochs => {
                    checkpoint::load(&progress_path, &mut net, backend)?;
                    partial = Some(p);
                }
                // An epoch past --epochs: kept for a resume that asks for it.
                Some(_) if header.epoch == done => {}
                // Its epoch finished after it was written.
                _ => remove_progress(&progress_path)?,
            }
        }
    }
    let mut history = open_run_dir(config, resume, done)?;
    let layers = net.blocks.len();
    let ensemble = ensemble_layers(config, layers);
    println!(
        "run {}: {} ({}), {}, widths {:?}, loss {:?}, apl {}, norm {:?}, batch {}",
        dir.display(),
        config.dataset.name(),
        split_sizes(&train, val.as_ref(), &test),
        backend.name(),
        net.config.layers.iter().map(|l| l.0).collect::<Vec<_>>(),
        config.loss,
        config.apl,
        config.norm,
        config.batch_size
    );
    println!("{}", net.summary());
    match &partial {
        Some(p) => println!(
            "resuming epoch {} after its step {} ({})",
            done + 1,
            p.steps_done,
            steps_in_all(net.iteration)
        ),
        None if done > 0 => println!("resuming after epoch {done}"),
        None => {}
    }
    if let Some(max) = control.max_steps
        && net.iteration >= max
    {
        println!(
            "the run has trained {} steps, --max-steps {max}: nothing to do",
            net.iteration
        );
        return Ok(Vec::new());
    }
    if nothing_left(config, done, &history, EARLY_STOP_FF) {
        return Ok(Vec::new());
    }
    let augment = config.augment.then(Augment::default);
    let mut records = Vec::new();
    // Steps per epoch, and the share of the first that a resumed run trained before.
    let steps = train.len().div_ceil(config.batch_size);
    let skipped = partial
        .as_ref()
        .map_or(0.0, |p| p.steps_done as f64 / steps.max(1) as f64);
    let pace = Pace::new(done + 1, skipped);
    let mut last_save = Instant::now();
    let go_on = format!(
        "`trifecta train --resume {}` goes on from there",
        dir.display()
    );
    interrupt::check(|| format!("before training: {go_on}"))?;
    for epoch in done + 1..=config.epochs {
        let lr = config.lr_at(epoch);
        net.config.adam.lr = lr as f32;
        let resumed = partial.take().map(|p| (p.steps_done, p.stats));
        let skipped = resumed.as_ref().map_or(0, |(k, _)| *k);
        let mut progress = Progress::new(epoch, config.epochs, steps, skipped);
        let started = Instant::now();
        let mut stopped_after = 0;
        // The epoch's sums after its last step: saved if its evaluation is interrupted.
        let mut trained = None;
        let stats = train_epoch(
            &mut net,
            backend,
            &train,
            config.batch_size,
            config.seed,
            epoch,
            augment,
            resumed,
            |net, done| {
                let last = done.metrics.iter().rev().flatten().next();
                let rate = ((done.steps_done - skipped) * config.batch_size) as f64
                    / started.elapsed().as_secs_f64();
                progress.step(last.map(|m| m.loss), rate);
                // The limit stops an epoch before its end; at the end, after its record.
                // An interrupt stops it anywhere.
                let stop = control.max_steps.is_some_and(|m| net.iteration >= m)
                    && done.steps_done < done.steps
                    || interrupt::requested();
                let due = control.save_every.is_some_and(|d| last_save.elapsed() >= d);
                let partial = checkpoint::PartialEpoch {
                    steps_done: done.steps_done,
                    stats: done.stats.clone(),
                };
                if stop || due {
                    save_progress(
                        &progress_path,
                        net,
                        backend,
                        config,
                        &inputs,
                        epoch,
                        &partial,
                    )?;
                    last_save = Instant::now();
                }
                stopped_after = done.steps_done;
                trained = Some(partial);
                Ok(stop)
            },
        )?;
        backend.synchronize()?;
        progress.finish();
        let Some(stats) = stats else {
            interrupt::check(|| {
                format!("after step {stopped_after} of {steps} of epoch {epoch}: {go_on}")
            })?;
            println!(
                "stopped after step {stopped_after} of {steps} of epoch {epoch} ({}, \
                 --max-steps): {go_on}",
                steps_in_all(net.iteration)
            );
            return Ok(records);
        };
        let eval_start = Instant::now();
        let mut evaluate_on = |data: Option<&Dataset>| match data {
            Some(data) if config.evaluates(epoch) => {
                evaluate(&mut net, backend, data, config.eval_batch_size, &ensemble).map(Some)
            }
            _ => Ok(None),
        };
        let evals = evaluate_on(Some(&test)).and_then(|e| Ok((e, evaluate_on(val.as_ref())?)));
        let (eval, val_eval) = match evals {
            Err(Error::Interrupted(at)) => {
                // The epoch's training is kept: a resume evaluates it.
                if let Some(partial) = &trained {
                    save_progress(
                        &progress_path,
                        &mut net,
                        backend,
                        config,
                        &inputs,
                        epoch,
                        partial,
                    )?;
                }
                return Err(Error::Interrupted(format!(
                    "{at} after epoch {epoch}: {go_on}"
                )));
            }
            other => other?,
        };
        let record = epoch_record(
            epoch,
            lr,
            &stats,
            [eval.as_ref(), val_eval.as_ref()],
            &ensemble,
            eval_start.elapsed().as_secs_f64(),
        );
        print_epoch(&record, config.epochs, &pace);
        metrics::append(&metrics_path, &record)?;
        history.push(record.clone());
        let header = run_header(&mut net, config, &inputs, epoch, None);
        // The best first: a run stopped between the two redoes this epoch, the same way.
        if metrics::best_val(&history).is_some_and(|(best, _)| best.epoch == epoch) {
            checkpoint::save(&dir.join(BEST_CHECKPOINT_FILE), &mut net, backend, &header)?;
        }
        checkpoint::save(&checkpoint_path, &mut net, backend, &header)?;
        remove_progress(&progress_path)?;
        last_save = Instant::now();
        // The histograms follow the last evaluation, so a run stopped early has them too.
        if let Some(eval) = &eval {
            save_goodness_samples(&dir.join(GOODNESS_FILE), &eval.kept, config.seed)?;
        }
        records.push(record);
        if epoch < config.epochs && metrics::stopped_early(&history, config.patience) {
            println!(
                "{}",
                early_stop_words(&history, config.patience, "stopping early") + EARLY_STOP_FF
            );
            break;
        }
        if epoch < config.epochs {
            interrupt::check(|| format!("after epoch {epoch}: {go_on}"))?;
        }
        if let Some(max) = control.max_steps
            && net.iteration >= max
            && epoch < config.epochs
        {
            println!(
                "stopped after epoch {epoch} ({}, --max-steps): {go_on}",
                steps_in_all(net.iteration)
            );
            break;
        }
    }
    print_totals(&records);
    Ok(records)
}

/// Makes `config.out` a fresh run folder, or, on `resume` of a run that has trained `done`
/// epochs, checks that `--epochs` asks for no fewer and saves the config (a longer
/// `--epochs` is allowed: the folder's config follows it). Returns the run's records kept
/// (up to epoch `done`: those of an epoch whose state was never saved are dropped, to be
/// trained again), to which the epochs of this process are added as they end.
fn open_run_dir(config: &TrainConfig, resume: bool, done: u64) -> Result<Vec<EpochRecord>> {
    let dir = &config.out;
    if !resume {
        create_run_dir(dir, config)?;
        return Ok(Vec::new());
    }
    if config.epochs < done {
        return Err(Error::Config(format!(
            "{} has trained {done} epochs already: --epochs {} would end before that (ask for more to continue it)",
            dir.display(),
            config.epochs
        )));
    }
    let history = metrics::truncate_after(&dir.join(METRICS_FILE), done)?;
    checkpoint::write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
    Ok(history)
}

/// Whether a resumed run has nothing left to train (its epochs done, or stopped early on its
/// validation split, where `kept` says what it kept): prints why.
fn nothing_left(config: &TrainConfig, done: u64, history: &[EpochRecord], kept: &str) -> bool {
    if done > 0 && done == config.epochs {
        println!(
            "the run has trained epoch {done} of {done}: nothing to do (`--epochs N` with N above {done} trains it further)"
        );
        return true;
    }
    if metrics::stopped_early(history, config.patience) {
        println!(
            "{}",
            early_stop_words(history, config.patience, "stopped early already") + kept
        );
        return true;
    }
    false
}

/// Saves `net` within epoch `epoch` (1-based), `partial` of it done, as the run's progress.
fn save_progress<B: Backend>(
    path: &Path,
    net: &mut FfNet<B>,
    backend: &B,
    config: &TrainConfig,
    inputs: &data::InputSpec,
    epoch: u64,
    partial: &checkpoint::PartialEpoch,
) -> Result<()> {
    let header = run_header(net, config, inputs, epoch - 1, Some(partial.clone()));
    checkpoint::save(path, net, backend, &header)
}

/// The header of a checkpoint of `net` after `epochs` epochs, and `partial` of the next.
fn run_header<B: Backend, N: Saved<B>>(
    net: &mut N,
    config: &TrainConfig,
    inputs: &data::InputSpec,
    epochs: u64,
    partial: Option<checkpoint::PartialEpoch>,
) -> checkpoint::Header {
    checkpoint::Header {
        format: checkpoint::FORMAT.into(),
        epoch: epochs,
        iteration: *net.iteration_mut(),
        adam_steps: net.optimizer_steps(),
        config: config.clone(),
        partial,
        inputs: Some(inputs.clone()),
    }
}

/// Goodness of every layer for the test images an evaluation kept (up to 1,000), once with the
/// true label and once with a uniformly drawn wrong one (the thesis' "data separation"
/// histograms): tensors `layer{i}.positive` and `layer{i}.negative`.
fn save_goodness_samples(path: &Path, kept: &KeptGoodness, seed: u64) -> Result<()> {
    let mut rng = crate::rng::Rng::stream(seed, 5);
    let wrong = data::wrong_labels(&kept.labels, kept.classes, &mut rng);
    let mut tensors = Vec::new();
    for layer in 0..kept.layers {
        let positive: Vec<f32> = (0..kept.labels.len())
            .map(|i| kept.at(i, kept.labels[i], layer))
            .collect();
        let negative: Vec<f32> = (0..kept.labels.len())
            .map(|i| kept.at(i, wrong[i], layer))
            .collect();
        tensors.push((format!("layer{layer}.positive"), positive));
        tensors.push((format!("layer{layer}.negative"), negative));
    }
    checkpoint::save_vectors(path, &tensors)
}

/// "`lead`: no better validation accuracy in N evaluations; the best, X% (layer L), was epoch
/// E's, in best.safetensors".
fn early_stop_words(history: &[EpochRecord], patience: u64, lead: &str) -> String {
    let Some((best, layer)) = metrics::best_val(history) else {
        return lead.to_string();
    };
    format!(
        "{lead} (--patience {patience}): no better validation accuracy in {patience} \
         evaluations; the best, {:.2}% (layer {}), was epoch {}'s",
        100.0 * layer.val_accuracy.unwrap_or(f64::NAN),
        layer.layer,
        best.epoch
    )
}

/// Where an FF run that stopped early keeps its best epoch, and how it goes on.
const EARLY_STOP_FF: &str = ", in best.safetensors (`--resume` with a larger --patience goes on)";

/// "N train / M test images", with the validation split's between them if there is one.
fn split_sizes(train: &Dataset, val: Option<&Dataset>, test: &Dataset) -> String {
    let val = val.map_or(String::new(), |v| format!("{} val / ", v.len()));
    format!("{} train / {val}{} test images", train.len(), test.len())
}

/// An epoch's record from its training statistics and its evaluations on the test and the
/// validation split (each None where not run).
fn epoch_record(
    epoch: u64,
    lr: f64,
    stats: &crate::ff::train::EpochStats,
    [eval, val]: [Option<&Evaluation>; 2],
    ensemble: &[usize],
    eval_seconds: f64,
) -> EpochRecord {
    EpochRecord {
        epoch,
        lr,
        layers: stats
            .layers
            .iter()
            .enumerate()
            .map(|(layer, s)| LayerRecord {
                layer,
                loss: s.loss,
                positive: Some(s.positive),
                negative: Some(s.negative),
                delta: Some(s.delta()),
                test_accuracy: eval.map(|e| e.layer_accuracy[layer]),
                val_accuracy: val.map(|e| e.layer_accuracy[layer]),
            })
            .collect(),
        ensemble_layers: ensemble.to_vec(),
        ensemble_accuracy: eval.map(|e| e.ensemble_accuracy),
        ensemble_val_accuracy: val.map(|e| e.ensemble_accuracy),
        train_seconds: stats.seconds,
        data_wait_seconds: stats.data_wait_seconds,
        eval_seconds,
        samples_per_second: stats.samples as f64 / stats.seconds,
    }
}

/// The wall time of this process' epochs so far, for the time left.
struct Pace {
    started: Instant,
    first_epoch: u64,
    /// The share of the first epoch trained before this process (a resume within it).
    skipped: f64,
    /// When the first epoch ended: later epochs are timed from there.
    first_ended: std::cell::Cell<Option<Instant>>,
}

impl Pace {
    /// The pace of a process that trains from epoch `first_epoch` on, `skipped` of which an
    /// earlier process trained.
    fn new(first_epoch: u64, skipped: f64) -> Pace {
        Pace {
            started: Instant::now(),
            first_epoch,
            skipped,
            first_ended: Default::default(),
        }
    }

    /// "N epochs left, about T at this pace" after `epoch`; none after the last.
    fn left_after(&self, epoch: u64, epochs: u64) -> Option<String> {
        self.left_after_at(Instant::now(), epoch, epochs)
    }

    /// [`Pace::left_after`] at time `now`: after the first epoch from its own time (the part
    /// of it this process trained, scaled up to a whole), later from the epochs since.
    fn left_after_at(&self, now: Instant, epoch: u64, epochs: u64) -> Option<String> {
        let left = epochs.checked_sub(epoch).filter(|&n| n > 0)?;
        let since_first = epoch.checked_sub(self.first_epoch)?;
        let per_epoch = match (since_first, self.first_ended.get()) {
            (0, _) | (_, None) => {
                self.first_ended.set(Some(now));
                let trained = (1.0 - self.skipped).max(0.01);
                (now - self.started).as_secs_f64() / trained / (since_first + 1) as f64
            }
            (n, Some(ended)) => (now - ended).as_secs_f64() / n as f64,
        };
        Some(format!(
            "  {left} epoch{} left, about {} at this pace",
            if left == 1 { "" } else { "s" },
            duration_words(per_epoch * left as f64)
        ))
    }
}

/// "5 epochs in 21 s (training 16 s, evaluation 5 s)": this process' epochs, if any.
fn print_totals(records: &[EpochRecord]) {
    if records.is_empty() {
        return;
    }
    let train: f64 = records.iter().map(|r| r.train_seconds).sum();
    let eval: f64 = records.iter().map(|r| r.eval_seconds).sum();
    println!(
        "{} epoch{} in {} (training {}, evaluation {})",
        records.len(),
        if records.len() == 1 { "" } else { "s" },
        duration_words(train + eval),
        duration_words(train),
        duration_words(eval)
    );
}

/// `2 h 05 min`, `7 min 30 s` or `42 s`.
fn duration_words(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => {
            let minutes = (s + 30) / 60;
            format!("{} h {:02} min", minutes / 60, minutes % 60)
        }
    }
}

/// `val accuracy X%  test accuracy Y%`, each part where measured, after `sep`.
fn accuracies(val: Option<f64>, test: Option<f64>, sep: &str) -> String {
    let part = |name: &str, a: Option<f64>| {
        a.map_or(String::new(), |a| {
            format!("{sep}{name} accuracy {:.2}%", 100.0 * a)
        })
    };
    part("val", val) + &part("test", test)
}

fn print_epoch(r: &EpochRecord, epochs: u64, pace: &Pace) {
    let eval = match r.ensemble_accuracy {
        Some(accuracy) => format!(
            "eval {:.1} s, lr {:.1e}, ensemble {:?}{}",
            r.eval_seconds,
            r.lr,
            r.ensemble_layers,
            accuracies(r.ensemble_val_accuracy, Some(accuracy), " ")
        ),
        None => format!("lr {:.1e}, not evaluated (--eval-every)", r.lr),
    };
    println!(
        "epoch {}/{epochs}: train {:.1} s ({:.0} samples/s, {:.1} s waiting for batches), {eval}",
        r.epoch, r.train_seconds, r.samples_per_second, r.data_wait_seconds,
    );
    for l in &r.layers {
        let goodness = match (l.positive, l.negative, l.delta) {
            (Some(p), Some(n), Some(d)) => format!("  pos {p:.4}  neg {n:.4}  delta {d:+.4}"),
            _ => String::new(),
        };
        let accuracy = accuracies(l.val_accuracy, l.test_accuracy, "  ");
        println!(
            "  layer {}: loss {:.4}{goodness}{accuracy}",
            l.layer, l.loss
        );
    }
    let diverged: Vec<String> = r
        .layers
        .iter()
        .filter(|l| !l.loss.is_finite())
        .map(|l| l.layer.to_string())
        .collect();
    if !diverged.is_empty() {
        println!(
            "  warning: layer {} trained to a non-finite loss: the run has diverged (too high a --lr, or --alpha or --tau out of range?)",
            diverged.join(", ")
        );
    }
    if let Some(left) = pace.left_after(r.epoch, epochs) {
        println!("{left}");
    }
}

/// A checkpoint's evaluation: the config it ran with, and its accuracies on each split
/// evaluated, named (`train`, `val`, `test`), in that order.
pub struct CheckpointEval {
    pub config: TrainConfig,
    pub splits: Vec<(&'static str, Evaluation)>,
    /// What each label means.
    pub class_names: Vec<String>,
}

/// The saved state `path` names: a file, or a run folder's FF checkpoint or, in a
/// baseline's run folder, its weights.
pub fn saved_state_file(path: &Path) -> PathBuf {
    if !path.is_dir() {
        return path.to_path_buf();
    }
    let (checkpoint, weights) = (path.join(CHECKPOINT_FILE), path.join(WEIGHTS_FILE));
    match !checkpoint.exists() && weights.exists() {
        true => weights,
        false => checkpoint,
    }
}

/// "1 step in all", "N steps in all".
fn steps_in_all(steps: u64) -> String {
    match steps {
        1 => "1 step in all".into(),
        n => format!("{n} steps in all"),
    }
}

/// Evaluates the saved network at `path` (a run folder, an FF checkpoint or a baseline's
/// weights; a baseline per head, [`evaluate_classifier`]) with `config` (by default the one
/// saved with it) on its dataset's test split, on the
/// validation split it held out if any, and with `on_train` on the images it trained on
/// (as they were drawn for training: after the validation split and `train_limit`; without
/// augmentation), whose accuracy against the test's is the generalisation gap.
pub fn evaluate_checkpoint(
    path: &Path,
    config: Option<TrainConfig>,
    on_train: bool,
) -> Result<CheckpointEval> {
    let file = saved_state_file(path);
    let header = checkpoint::read_any_header(&file)?;
    let config = config.unwrap_or(header.config);
    // A checkpoint's own config may come from another machine (its thread count, its device).
    config.validate()?;
    config.check_machine()?;
    let (splits, class_names) = with_backend!(
        &config.device,
        config.threads,
        crate::backend::GpuOptions::new(config.gpu_precision()),
        |backend| {
            let Splits { train, val, test } = load_data(&config)?;
            let named = [
                ("train", on_train.then_some(&train)),
                ("val", val.as_ref()),
                ("test", Some(&test)),
            ];
            let named = named
                .into_iter()
                .filter_map(|(name, data)| Some((name, data?)));
            let batch = config.eval_batch_size;
            let splits = match config.model {
                Model::Ff => {
                    let mut net = build_net(backend, &config, &train)?;
                    checkpoint::load(&file, &mut net, backend)?;
                    let ensemble = ensemble_layers(&config, net.blocks.len());
                    named
                        .map(|(name, data)| {
                            Ok((name, evaluate(&mut net, backend, data, batch, &ensemble)?))
                        })
                        .collect::<Result<Vec<_>>>()?
                }
                model => {
                    let ff = ff_config(&config, &train)?;
                    let mut net = ClassifierNet::new(backend, ff, model, config.seed)?;
                    checkpoint::load(&file, &mut net, backend)?;
                    named
                        .map(|(name, data)| {
                            Ok((name, evaluate_classifier(&mut net, backend, data, batch)?))
                        })
                        .collect::<Result<Vec<_>>>()?
                }
            };
            Ok::<_, Error>((splits, train.class_names.clone()))
        }
    )?;
    Ok(CheckpointEval {
        config,
        splits,
        class_names,
    })
}

/// Trains a baseline (`bp` or `lcp`) on the same data pipeline: a run folder with the config,
/// the metrics (one record per head: its loss and test accuracy) and, after every epoch, the
/// network's state in `weights.safetensors` (parameters, running statistics, Adam), from
/// which `resume` goes on after the last epoch it saved.
fn train_baseline(config: &TrainConfig, resume: bool) -> Result<Vec<EpochRecord>> {
    with_backend!(
        &config.device,
        config.threads,
        crate::backend::GpuOptions::new(config.gpu_precision()),
        |backend| train_classifier(backend, config, resume)
    )
}

/// A baseline's evaluation on `data`: each head's accuracy at the layer it sits on (NaN at
/// layers without one), the last head standing for the ensemble, with its confusion matrix.
pub fn evaluate_classifier<B: Backend>(
    net: &mut ClassifierNet<B>,
    backend: &B,
    data: &Dataset,
    batch_size: usize,
) -> Result<Evaluation> {
    let heads = net.head_layers();
    let classes = data.classes;
    let mut correct = vec![0usize; heads.len()];
    let mut confusion = vec![0usize; classes * classes];
    data::loader::with_eval_batches(data, batch_size, |batches| -> Result<()> {
        for (images, labels) in batches {
            let predictions = net.predict(backend, &images)?;
            for (c, predicted) in correct.iter_mut().zip(&predictions) {
                *c += predicted
                    .iter()
                    .zip(&labels)
                    .filter(|(p, y)| p == y)
                    .count();
            }
            let last = predictions.last().expect("at least one head");
            for (&p, &y) in last.iter().zip(&labels) {
                confusion[y as usize * classes + p as usize] += 1;
            }
        }
        Ok(())
    })?;
    let total = data.len().max(1) as f64;
    let mut layer_accuracy = vec![f64::NAN; net.blocks.len()];
    for (&layer, c) in heads.iter().zip(&correct) {
        layer_accuracy[layer] = *c as f64 / total;
    }
    let last = *heads.last().expect("at least one head");
    Ok(Evaluation {
        ensemble_accuracy: layer_accuracy[last],
        layer_accuracy,
        ensemble_layers: vec![last],
        samples: data.len(),
        classes,
        confusion,
        kept: Default::default(),
    })
}

fn train_classifier<B: Backend>(
    backend: &B,
    config: &TrainConfig,
    resume: bool,
) -> Result<Vec<EpochRecord>> {
    let dir = config.out.clone();
    interrupt::install();
    let Splits { train, val, test } = load_data(config)?;
    let ff = ff_config(config, &train)?;
    ff.check_fits(
        config.batch_size.max(config.eval_batch_size),
        backend.available_memory(),
    )?;
    let mut net = ClassifierNet::new(backend, ff, config.model, config.seed)?;
    let inputs = train.input_spec();
    let weights_path = dir.join(WEIGHTS_FILE);
    let mut done = 0;
    if resume && weights_path.exists() {
        done = checkpoint::load(&weights_path, &mut net, backend)?.epoch;
    }
    let mut history = open_run_dir(config, resume, done)?;
    let layers = net.head_layers();
    println!(
        "run {}: {:?} baseline on {} ({}), {}, widths {:?}, norm {:?}, batch {}",
        dir.display(),
        config.model,
        config.dataset.name(),
        split_sizes(&train, val.as_ref(), &test),
        backend.name(),
        net.config.layers.iter().map(|l| l.0).collect::<Vec<_>>(),
        config.norm,
        config.batch_size
    );
    if done > 0 {
        println!("resuming after epoch {done}");
    }
    if nothing_left(config, done, &history, "") {
        return Ok(Vec::new());
    }
    let augment = config.augment.then(Augment::default);
    let mut records = Vec::new();
    let pace = Pace::new(done + 1, 0.0);
    for epoch in done + 1..=config.epochs {
        let lr = config.lr_at(epoch);
        net.config.adam.lr = lr as f32;
        let steps = train.len().div_ceil(config.batch_size);
        let mut progress = Progress::new(epoch, config.epochs, steps, 0);
        let started = Instant::now();
        let mut loss_sums = vec![0.0f64; layers.len()];
        let mut seen = 0usize;
        let mut data_wait_seconds = 0.0;
        data::loader::with_epoch_batches(
            &train,
            config.batch_size,
            config.seed,
            epoch,
            augment,
            0,
            |_, batches| -> Result<()> {
                let mut waited = data::loader::Waited::new(batches);
                for batch in waited.by_ref() {
                    interrupt::check(|| {
                        format!(
                            "in epoch {epoch}: `trifecta train --resume {}` goes on from its start \
                             (a baseline saves at epoch ends)",
                            dir.display()
                        )
                    })?;
                    let losses = net.train_step(backend, &batch.images, &batch.positive)?;
                    for (sum, l) in loss_sums.iter_mut().zip(&losses) {
                        *sum += *l as f64;
                    }
                    seen += batch.positive.len();
                    let rate = seen as f64 / started.elapsed().as_secs_f64();
                    progress.step(losses.last().copied(), rate);
                }
                data_wait_seconds = waited.seconds;
                Ok(())
            },
        )?;
        progress.finish();
        let train_seconds = started.elapsed().as_secs_f64();
        let eval_start = Instant::now();
        let mut accuracy_on = |data: Option<&Dataset>| match data {
            Some(data) if config.evaluates(epoch) => {
                let eval = evaluate_classifier(&mut net, backend, data, config.eval_batch_size)?;
                let heads: Vec<f64> = layers.iter().map(|&l| eval.layer_accuracy[l]).collect();
                Ok::<_, Error>(Some(heads))
            }
            _ => Ok(None),
        };
        let accuracy = accuracy_on(Some(&test))?;
        let val_accuracy = accuracy_on(val.as_ref())?;
        let record = EpochRecord {
            epoch,
            lr,
            layers: layers
                .iter()
                .enumerate()
                .map(|(k, &layer)| LayerRecord {
                    layer,
                    loss: loss_sums[k] / steps.max(1) as f64,
                    positive: None,
                    negative: None,
                    delta: None,
                    test_accuracy: accuracy.as_ref().map(|a| a[k]),
                    val_accuracy: val_accuracy.as_ref().map(|a| a[k]),
                })
                .collect(),
            ensemble_layers: vec![*layers.last().expect("at least one head")],
            ensemble_accuracy: accuracy.as_ref().and_then(|a| a.last().copied()),
            ensemble_val_accuracy: val_accuracy.as_ref().and_then(|a| a.last().copied()),
            train_seconds,
            data_wait_seconds,
            eval_seconds: eval_start.elapsed().as_secs_f64(),
            samples_per_second: train.len() as f64 / train_seconds,
        };
        print_epoch(&record, config.epochs, &pace);
        metrics::append(&dir.join(METRICS_FILE), &record)?;
        let header = run_header(&mut net, config, &inputs, epoch, None);
        checkpoint::save(&weights_path, &mut net, backend, &header)?;
        history.push(record.clone());
        records.push(record);
        if epoch < config.epochs && metrics::stopped_early(&history, config.patience) {
            // Its weights are the last epoch's: a baseline keeps no best checkpoint.
            println!(
                "{}",
                early_stop_words(&records, config.patience, "stopping early")
            );
            break;
        }
    }
    print_totals(&records);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_is_not_steps() {
        assert_eq!(steps_in_all(1), "1 step in all");
        assert_eq!(steps_in_all(0), "0 steps in all");
        assert_eq!(steps_in_all(163), "163 steps in all");
    }

    #[test]
    fn time_left_reads_as_words() {
        assert_eq!(duration_words(0.4), "0 s");
        assert_eq!(duration_words(59.4), "59 s");
        assert_eq!(duration_words(450.0), "7 min 30 s");
        assert_eq!(duration_words(3599.6), "1 h 00 min");
        assert_eq!(duration_words(7529.0), "2 h 05 min");
        // A run resumed a quarter into epoch 35: that epoch's 30 s are three quarters of one,
        // so 65 epochs left take 65 x 40 s; from then on, the epochs since it ended count.
        let pace = Pace::new(35, 0.25);
        let at = |s: u64| pace.started + std::time::Duration::from_secs(s);
        assert_eq!(
            pace.left_after_at(at(30), 35, 100).unwrap(),
            "  65 epochs left, about 43 min 20 s at this pace"
        );
        assert_eq!(
            pace.left_after_at(at(30 + 2 * 50), 37, 100).unwrap(),
            "  63 epochs left, about 52 min 30 s at this pace"
        );
        assert_eq!(
            pace.left_after_at(at(30 + 64 * 50), 99, 100).unwrap(),
            "  1 epoch left, about 50 s at this pace"
        );
        assert_eq!(pace.left_after_at(at(3300), 100, 100), None);
    }
}
