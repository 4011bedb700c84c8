//! The thesis' experiments as grids of runs, with the thesis' numbers to set beside ours.
//!
//! - `ablation`: vanilla FF (threshold loss, LayerNorm, no APL), SymBa, SymBa + APL,
//!   SymBa + BN and the Trifecta, on one dataset;
//! - `datasets`: FF and backprop on MNIST, Fashion-MNIST, SVHN and CIFAR-10;
//! - `convergence`: the large network with the 200/200/100 learning-rate schedule;
//! - `lcp`: FF against local classifier proxies, layer by layer.

use crate::baselines::Model;
use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::ff::{Arch, LossKind};
use crate::layers::norm::NormKind;
use crate::run::config::{PartialConfig, TrainConfig};
use crate::run::metrics::{EpochRecord, last_evaluated};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    Ablation,
    Datasets,
    Convergence,
    Lcp,
}

/// One run of a grid.
#[derive(Debug)]
pub struct Variant {
    pub name: String,
    /// Knobs the grid fixes; they win over the user's flags.
    pub fixed: PartialConfig,
    /// The thesis' test accuracy (percent) and what it refers to.
    pub thesis: Option<(f64, &'static str)>,
}

fn ff(loss: LossKind, norm: NormKind, apl: bool) -> PartialConfig {
    PartialConfig {
        model: Some(Model::Ff),
        loss: Some(loss),
        norm: Some(norm),
        apl: Some(apl),
        ..PartialConfig::default()
    }
}

const CIFAR_100: &str = "CIFAR-10, 100 epochs";

/// The runs of `experiment`; `dataset` is the one the user chose (ablation, lcp).
pub fn variants(experiment: Experiment, dataset: DatasetKind) -> Vec<Variant> {
    let v = |name: &str, fixed: PartialConfig, thesis: Option<(f64, &'static str)>| Variant {
        name: name.into(),
        fixed,
        thesis,
    };
    match experiment {
        Experiment::Ablation => vec![
            v(
                "vanilla",
                ff(LossKind::Threshold, NormKind::Layer, false),
                Some((34.3, CIFAR_100)),
            ),
            v(
                "symba",
                ff(LossKind::Symba, NormKind::Layer, false),
                Some((55.7, CIFAR_100)),
            ),
            v(
                "symba-apl",
                ff(LossKind::Symba, NormKind::Layer, true),
                Some((61.4, CIFAR_100)),
            ),
            v(
                "symba-bn",
                ff(LossKind::Symba, NormKind::Batch, false),
                Some((64.7, CIFAR_100)),
            ),
            v(
                "trifecta",
                ff(LossKind::Symba, NormKind::Batch, true),
                Some((74.0, CIFAR_100)),
            ),
        ],
        Experiment::Datasets => {
            let table = [
                (DatasetKind::Mnist, 98.3, 99.1),
                (DatasetKind::FashionMnist, 85.0, 93.6),
                (DatasetKind::Svhn, 91.8, 94.1),
                (DatasetKind::Cifar10, 74.0, 88.9),
            ];
            let mut out = Vec::new();
            for (kind, ff_thesis, bp_thesis) in table {
                for (model, thesis) in [(Model::Ff, ff_thesis), (Model::Bp, bp_thesis)] {
                    let fixed = PartialConfig {
                        model: Some(model),
                        dataset: Some(kind),
                        ..PartialConfig::default()
                    };
                    let name = format!("{}-{}", format!("{model:?}").to_lowercase(), kind.name());
                    out.push(v(&name, fixed, Some((thesis, "100 epochs"))));
                }
            }
            out
        }
        Experiment::Convergence => vec![v(
            "trifecta-large",
            PartialConfig {
                arch: Some(Arch::Large),
                lr_schedule: Some("200:1e-3,200:5e-4,100:1e-4".into()),
                epochs: Some(500),
                ..ff(LossKind::Symba, NormKind::Batch, true)
            },
            (dataset == DatasetKind::Cifar10).then_some((84.3, "CIFAR-10, 500 epochs, large")),
        )],
        Experiment::Lcp => vec![
            v("ff", ff(LossKind::Symba, NormKind::Batch, true), None),
            v(
                "lcp",
                PartialConfig {
                    model: Some(Model::Lcp),
                    ..PartialConfig::default()
                },
                None,
            ),
        ],
    }
}

/// Runs every variant of `experiment` under `out` (`out/<variant>`, or `out/<variant>-seed<S>`
/// for each of `seeds` when given), on top of the user's `flags`, then writes
/// `out/results.md` (with several seeds: mean and standard deviation over them). Finished
/// runs are reused; FF runs that stopped early are resumed. Returns the table's path.
pub fn run(
    experiment: Experiment,
    flags: &PartialConfig,
    out: &Path,
    seeds: &[u64],
    only: &[String],
) -> Result<PathBuf> {
    let dataset = flags.dataset.unwrap_or(DatasetKind::Cifar10);
    let variants = chosen(variants(experiment, dataset), only)?;
    let seeds: Vec<Option<u64>> = match seeds {
        [] => vec![None],
        _ => seeds.iter().copied().map(Some).collect(),
    };
    // Every run's settings first, so that a bad value, a missing data folder (the datasets
    // grid reads four) or a folder holding another run fails before any run starts, not
    // after hours of the others.
    let mut grid = Vec::new();
    for variant in variants {
        let mut configs = Vec::new();
        for &seed in &seeds {
            let dir = match seed {
                Some(seed) => out.join(format!("{}-seed{seed}", variant.name)),
                None => out.join(&variant.name),
            };
            let mut partial = flags.clone().overlay(&variant.fixed);
            partial.dataset = variant.fixed.dataset.or(Some(dataset));
            partial.out = Some(dir.clone());
            partial.seed = seed.or(partial.seed);
            if experiment == Experiment::Datasets {
                // --data-dir is a root holding one folder per dataset.
                let kind = partial.dataset.expect("set above");
                partial.data_dir = flags.data_dir.as_ref().map(|root| root.join(kind.name()));
            }
            if experiment == Experiment::Convergence && flags.epochs.is_some() {
                partial.epochs = flags.epochs;
            }
            let config = partial.resolve()?;
            config.check_precision_for_new_run()?;
            let (config, done) = reconcile(config, &dir)?;
            if !finished(&config, &done) {
                config.check_machine()?;
                crate::run::check_data_dir(&config)?;
            }
            configs.push((config, dir, done));
        }
        grid.push((variant, configs));
    }
    let mut rows = Vec::new();
    for (variant, configs) in grid {
        let mut runs = Vec::new();
        for (config, dir, done) in configs {
            runs.push(run_one(config, &dir, done)?);
        }
        rows.push((variant, runs));
    }
    let table = results_table(experiment, &rows);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join("results.md");
    crate::run::checkpoint::write_atomic(&path, table.as_bytes())?;
    println!("\n{table}");
    Ok(path)
}

/// The variants named in `only` (all where it is empty), in the grid's order; a name that is
/// none of them is an error that lists them.
pub fn chosen(variants: Vec<Variant>, only: &[String]) -> Result<Vec<Variant>> {
    if let Some(twice) = crate::ff::eval::first_repeat(only) {
        return Err(Error::Config(format!("--only lists {twice} twice")));
    }
    let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
    if let Some(unknown) = only.iter().find(|o| !names.contains(&o.as_str())) {
        return Err(Error::Config(format!(
            "--only: this grid has no variant {unknown}; its variants are {}",
            names.join(", ")
        )));
    }
    Ok(variants
        .into_iter()
        .filter(|v| only.is_empty() || only.contains(&v.name))
        .collect())
}

/// A finished run of a grid: its configuration and every epoch's record.
type Finished = (TrainConfig, Vec<EpochRecord>);

/// The configuration to run in `dir` and the records already there: `config` itself and none
/// for a new run; for a folder that holds one already, its saved configuration with the knobs
/// a resumed run may change taken from `config`, and its log, or an error if it is another
/// run (another width's results must not stand in for this one's).
fn reconcile(config: TrainConfig, dir: &Path) -> Result<(TrainConfig, Vec<EpochRecord>)> {
    if !dir.join(crate::run::CONFIG_FILE).exists() {
        return Ok((config, Vec::new()));
    }
    let mut saved = crate::run::read_config(dir)?;
    saved.out = dir.to_path_buf();
    let (config, changed) = saved.with_changes(&PartialConfig::from(&config))?;
    if !changed.is_empty() {
        return Err(Error::Config(format!(
            "{} holds a run with other settings ({}): remove it, or choose another --out",
            dir.display(),
            changed.join(", ")
        )));
    }
    let done = records_in(dir)?;
    Ok((config, done))
}

/// The records of the run in `dir`: none before its log exists; a log that cannot be read is
/// an error naming it (it is not taken for a run that has not started).
fn records_in(dir: &Path) -> Result<Vec<EpochRecord>> {
    let path = dir.join(crate::run::METRICS_FILE);
    match path.exists() {
        true => crate::run::metrics::read(&path),
        false => Ok(Vec::new()),
    }
}

/// Whether a run with the records `done` has trained `config`'s epochs, or stopped early on
/// its validation split (then it is reused, and its data not read).
fn finished(config: &TrainConfig, done: &[EpochRecord]) -> bool {
    done.last().is_some_and(|r| r.epoch >= config.epochs)
        || crate::run::metrics::stopped_early(done, config.patience)
}

/// One run of a grid in `dir`, as [`reconcile`]d (with the records `done` already there):
/// trained, or reused if finished, or resumed if not.
fn run_one(config: TrainConfig, dir: &Path, done: Vec<EpochRecord>) -> Result<Finished> {
    if !dir.join(crate::run::CONFIG_FILE).exists() {
        let records = crate::run::train(&config, false, Default::default())?;
        return Ok((config, records));
    }
    if crate::run::metrics::stopped_early(&done, config.patience) {
        println!("{}: stopped early, reusing its results", dir.display());
        return Ok((config, done));
    }
    if let Some(last) = done.last().filter(|r| r.epoch >= config.epochs) {
        // A longer run stands for this one up to the epochs asked (its schedule does not depend
        // on the total), so the table is the one a run of that length would give.
        match last.epoch > config.epochs {
            true => println!(
                "{}: finished {} epochs, reusing its first {}",
                dir.display(),
                last.epoch,
                config.epochs
            ),
            false => println!("{}: already finished, reusing its results", dir.display()),
        }
        let asked: Vec<_> = done
            .into_iter()
            .filter(|r| r.epoch <= config.epochs)
            .collect();
        return Ok((config, asked));
    }
    // Records past the last saved state are retrained (and dropped from the log).
    let checkpointed = match config.model {
        Model::Ff => crate::run::checkpoint::read_header(&dir.join(crate::run::CHECKPOINT_FILE)),
        _ => crate::run::checkpoint::read_weights_header(&dir.join(crate::run::WEIGHTS_FILE)),
    }
    .map_or(0, |h| h.epoch);
    let mut records: Vec<_> = done
        .into_iter()
        .filter(|r| r.epoch <= checkpointed)
        .collect();
    records.extend(crate::run::train(&config, true, Default::default())?);
    Ok((config, records))
}

/// The value of a cell over a variant's runs: the value itself for one run, else mean and
/// standard deviation.
fn over_runs(values: &[f64]) -> String {
    match values {
        [] => "-".into(),
        [one] => format!("{:.2}%", 100.0 * one),
        _ => crate::report::mean_sd(values),
    }
}

fn results_table(experiment: Experiment, rows: &[(Variant, Vec<Finished>)]) -> String {
    let mut md = format!("# {experiment:?}\n\n");
    let layers = rows
        .iter()
        .flat_map(|(_, runs)| runs.iter().filter_map(|r| r.1.last()))
        .map(|e| e.layers.iter().map(|l| l.layer + 1).max().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let columns = [
        "run",
        "dataset",
        "epochs",
        "thesis",
        "ours (reported layer)",
        "best layer",
    ];
    let _ = writeln!(md, "{}", crate::report::table_head(&columns, 0..layers));
    for (variant, runs) in rows {
        let lasts: Vec<&EpochRecord> = runs.iter().filter_map(|r| last_evaluated(&r.1)).collect();
        let (Some(first), Some((config, _))) = (lasts.first(), runs.first()) else {
            continue;
        };
        let thesis = variant
            .thesis
            .map_or("n/a".to_string(), |(v, what)| format!("{v:.1}% ({what})"));
        let at_layer = |l: usize| -> Vec<f64> {
            lasts
                .iter()
                .filter_map(|e| e.layers.iter().find(|x| x.layer == l)?.test_accuracy)
                .collect()
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let best = (0..layers)
            .map(|l| (at_layer(l), l))
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, l)| (mean(&v), l))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map_or(String::new(), |(accuracy, layer)| {
                format!("{:.2}% (layer {layer})", 100.0 * accuracy)
            });
        let reported: Vec<f64> = lasts.iter().filter_map(|e| e.ensemble_accuracy).collect();
        let seeds = match lasts.len() {
            1 => String::new(),
            n => format!(" ({n} seeds)"),
        };
        let mut row = format!(
            "| {} | {} | {} | {thesis} | {}{seeds} | {best} |",
            variant.name,
            config.dataset.name(),
            first.epoch,
            over_runs(&reported)
        );
        for l in 0..layers {
            let values = at_layer(l);
            match values.is_empty() {
                true => row.push_str(" |"),
                false => {
                    let _ = write!(row, " {} |", over_runs(&values));
                }
            }
        }
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(
        md,
        "\nThe thesis column is the thesis' own figure for that setting where it has one; ours come from the runs in this folder (same seed, epochs and width as given on the command line, or mean +- sample standard deviation over --seeds), so they are comparable only when those match the thesis' settings."
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--only` keeps the named variants in the grid's order; an unknown or repeated name is
    /// an error (the unknown one lists the grid's names).
    #[test]
    fn only_chooses_variants_by_name() {
        let all = || variants(Experiment::Datasets, DatasetKind::Cifar10);
        let names = |v: Vec<Variant>| v.into_iter().map(|v| v.name).collect::<Vec<_>>();
        assert_eq!(names(chosen(all(), &[]).unwrap()).len(), 8);
        let only = ["bp-fashion-mnist".to_string(), "ff-mnist".to_string()];
        assert_eq!(
            names(chosen(all(), &only).unwrap()),
            ["ff-mnist", "bp-fashion-mnist"]
        );
        let err = chosen(all(), &["bp-cifar".into()]).unwrap_err().to_string();
        assert!(
            err.contains("no variant bp-cifar") && err.contains("ff-mnist, bp-mnist,"),
            "{err}"
        );
        let twice = ["ff-mnist".to_string(), "ff-mnist".to_string()];
        assert!(
            chosen(all(), &twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
