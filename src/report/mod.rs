//! `trifecta report`: reads run folders and writes a Markdown report with tables and figures
//! (PNG and SVG): test accuracy per layer over epochs, delta per layer over epochs, histograms
//! of positive and negative goodness per layer at the end of training, and the final accuracy
//! per layer of every run side by side.

pub mod plots;

use crate::baselines::Model;
use crate::error::{Error, Result};
use crate::run::config::TrainConfig;
use crate::run::metrics::EpochRecord;
use crate::run::{self, checkpoint, metrics};
use plots::{Histograms, LineChart, Series};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Everything a report needs from one run folder.
pub struct RunData {
    pub name: String,
    pub dir: PathBuf,
    pub config: TrainConfig,
    pub records: Vec<EpochRecord>,
    /// (layer, positives, negatives), for FF runs.
    pub goodness: Vec<(usize, Vec<f32>, Vec<f32>)>,
    /// A run stopped within an epoch: that epoch and its steps done (`progress.safetensors`).
    pub under_way: Option<(u64, usize)>,
}

/// Reads a run folder.
pub fn load_run(dir: &Path) -> Result<RunData> {
    let config = run::read_config(dir)?;
    let records = metrics::read(&dir.join(run::METRICS_FILE))?;
    if records.is_empty() {
        return Err(Error::data(
            dir.join(run::METRICS_FILE),
            "no epoch has finished yet",
        ));
    }
    let mut goodness = Vec::new();
    let path = dir.join(run::GOODNESS_FILE);
    if path.exists() {
        let vectors = checkpoint::load_vectors(&path)?;
        let find = |name: String| {
            vectors
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let mut layer = 0;
        while let (Some(p), Some(n)) = (
            find(format!("layer{layer}.positive")),
            find(format!("layer{layer}.negative")),
        ) {
            goodness.push((layer, p, n));
            layer += 1;
        }
    }
    let progress = dir.join(run::PROGRESS_FILE);
    let under_way = match progress.exists() {
        true => {
            let header = checkpoint::read_header(&progress)?;
            let last = records.last().map_or(0, |e| e.epoch);
            // One whose epoch has finished since is stale (a resume removes it).
            header
                .partial
                .filter(|_| header.epoch >= last)
                .map(|p| (header.epoch + 1, p.steps_done))
        }
        false => None,
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(RunData {
        name,
        dir: dir.to_path_buf(),
        config,
        records,
        goodness,
        under_way,
    })
}

/// Reads run folders, naming each by its folder, or by its parent and folder where two
/// folders have the same name (`grid-a/trifecta`, `grid-b/trifecta`): the names are the
/// report's headings and its figures' file names, which must not overwrite each other.
///
/// A folder that is no run but holds runs (a `reproduce` grid) stands for those runs, in
/// the order of their names.
pub fn load_runs(dirs: &[PathBuf]) -> Result<Vec<RunData>> {
    let mut expanded = Vec::new();
    for dir in dirs {
        let inner = if dir.join(run::CONFIG_FILE).exists() {
            Vec::new()
        } else {
            runs_inside(dir)
        };
        match inner.is_empty() {
            true => expanded.push(dir.clone()),
            false => expanded.extend(inner),
        }
    }
    let mut runs = expanded
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<Vec<_>>>()?;
    unique_names(&mut runs);
    Ok(runs)
}

/// The run folders directly inside `dir`, sorted; none if it cannot be read. A run that
/// has not finished an epoch yet (a grid still at work) is left out, with a note.
fn runs_inside(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut runs: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join(run::CONFIG_FILE).is_file())
        .filter(|p| {
            let started = std::fs::metadata(p.join(run::METRICS_FILE)).is_ok_and(|m| m.len() > 0);
            if !started {
                eprintln!("{}: no epoch has finished yet, left out", p.display());
            }
            started
        })
        .collect();
    runs.sort();
    runs
}

fn unique_names(runs: &mut [RunData]) {
    let count = |runs: &[RunData], name: &str| runs.iter().filter(|r| r.name == name).count();
    let shared: Vec<bool> = runs.iter().map(|r| count(runs, &r.name) > 1).collect();
    for (r, shared) in runs.iter_mut().zip(shared) {
        let parent = r.dir.parent().and_then(|p| p.file_name());
        if let (true, Some(parent)) = (shared, parent) {
            r.name = format!("{}-{}", parent.to_string_lossy(), r.name);
        }
    }
    for k in 0..runs.len() {
        let (before, rest) = runs.split_at_mut(k);
        let base = rest[0].name.clone();
        let mut n = 2;
        while before.iter().any(|r| r.name == rest[0].name) {
            rest[0].name = format!("{base}-{n}");
            n += 1;
        }
    }
}

/// A run's name as part of a file name that a Markdown link can hold: letters, digits, `.`,
/// `_` and `-`, anything else as `_`.
fn file_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A run's settings in words; from its `records`, the epochs it has finished where that is
/// fewer than its config asks (a run stopped early, or unfinished).
fn describe(c: &TrainConfig, records: &[EpochRecord]) -> String {
    let done = records.last().map(|e| e.epoch);
    let epochs = match done {
        Some(done) if done < c.epochs && metrics::stopped_early(records, c.patience) => format!(
            "{done} of {} epochs (stopped early: no better validation accuracy in {} evaluations)",
            c.epochs, c.patience
        ),
        Some(done) if done < c.epochs => format!("{done} of {} epochs (unfinished)", c.epochs),
        _ => format!("{} epoch{}", c.epochs, if c.epochs == 1 { "" } else { "s" }),
    };
    let val = match c.val_split {
        0 => String::new(),
        n => format!(", {n} training images held out for validation"),
    };
    // The FF rule's knobs; a baseline trains with cross-entropy, its own way.
    let rule = match c.model {
        Model::Ff => format!(", loss {:?}, APL {}", c.loss, c.apl),
        _ => String::new(),
    };
    format!(
        "{:?} on {}, {:?} x{}{rule}, norm {:?}, batch {}, {epochs}{val}",
        c.model,
        c.dataset.name(),
        c.arch,
        c.width,
        c.norm,
        c.batch_size,
    )
    .to_lowercase()
}

/// The head of a Markdown table: the named columns, then `layer L` for each of `layers`;
/// the header line and the rule under it, without a final newline.
pub(crate) fn table_head(columns: &[&str], layers: impl IntoIterator<Item = usize>) -> String {
    let mut header = format!("| {} |", columns.join(" | "));
    let mut rule = "|---".repeat(columns.len()) + "|";
    for l in layers {
        let _ = write!(header, " layer {l} |");
        rule.push_str("---|");
    }
    format!("{header}\n{rule}")
}

/// An accuracy as a table cell; `-` for an epoch that was not evaluated.
pub(crate) fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// `mean +- sd%` of accuracies (sd: the sample standard deviation).
pub(crate) fn mean_sd(values: &[f64]) -> String {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    format!("{:.2} +- {:.2}%", 100.0 * mean, 100.0 * var.sqrt())
}

/// Runs that differ only in their seed (and in what does not change the numbers: folder,
/// threads, data folder, evaluation batch), evaluated last at the same epoch, as one row
/// each: mean and standard deviation over the seeds. Empty when no two runs are alike.
fn across_seeds(runs: &[RunData]) -> String {
    let mut groups: Vec<(TrainConfig, u64, Vec<&RunData>)> = Vec::new();
    for r in runs {
        let Some(last) = metrics::last_evaluated(&r.records) else {
            continue;
        };
        let key = TrainConfig {
            seed: 0,
            out: PathBuf::new(),
            threads: 0,
            data_dir: None,
            eval_batch_size: 0,
            eval_every: 1,
            ..r.config.clone()
        };
        match groups
            .iter_mut()
            .find(|(k, epoch, _)| *k == key && *epoch == last.epoch)
        {
            Some((_, _, members)) => members.push(r),
            None => groups.push((key, last.epoch, vec![r])),
        }
    }
    let mut md = String::new();
    for (config, epoch, members) in groups {
        let mut seeds: Vec<u64> = members.iter().map(|r| r.config.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() < 2 || seeds.len() != members.len() {
            continue;
        }
        if md.is_empty() {
            md.push_str(
                "\n## Across seeds\n\nRuns alike but for their seed: mean +- sample standard \
                 deviation of the last evaluated epoch's test accuracy.\n\n",
            );
        }
        let lasts: Vec<&EpochRecord> = members
            .iter()
            .filter_map(|r| metrics::last_evaluated(&r.records))
            .collect();
        // Alike runs record the same layers.
        let layers: Vec<usize> = lasts[0].layers.iter().map(|l| l.layer).collect();
        let head = table_head(
            &["runs", "seeds", "epoch", "ensemble"],
            layers.iter().copied(),
        );
        let names: Vec<&str> = members.iter().map(|r| r.name.as_str()).collect();
        let ensemble: Vec<f64> = lasts.iter().filter_map(|e| e.ensemble_accuracy).collect();
        let mut row = format!(
            "| {} | {seeds:?} | {epoch} | {} |",
            names.join(", "),
            mean_sd(&ensemble)
        );
        for &l in &layers {
            let values: Vec<f64> = lasts
                .iter()
                .filter_map(|e| e.layers.iter().find(|x| x.layer == l)?.test_accuracy)
                .collect();
            let _ = write!(row, " {} |", mean_sd(&values));
        }
        let _ = writeln!(md, "{}:\n\n{head}\n{row}\n", describe(&config, &[]));
    }
    md
}

/// For the runs with a validation split: the epoch and layer with the best validation
/// accuracy (the first of equals), and the test accuracy there, the figure to report for a
/// choice made on validation. Empty when no run has one.
fn chosen_on_validation(runs: &[RunData]) -> String {
    let mut md = String::new();
    for r in runs {
        let Some((best, layer)) = metrics::best_val(&r.records) else {
            continue;
        };
        if md.is_empty() {
            md.push_str(
                "\n## Chosen on the validation split\n\nThe evaluated epoch and layer with the \
                 best validation accuracy, and the test accuracy there; an FF run keeps that \
                 epoch's network in `best.safetensors`.\n\n\
                 | run | validation images | epoch | layer | validation | test |\n\
                 |---|---|---|---|---|---|\n",
            );
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.name,
            r.config.val_split,
            best.epoch,
            layer.layer,
            percent(layer.val_accuracy),
            percent(layer.test_accuracy)
        );
    }
    md
}

/// Writes `out/report.md` and its figures for `runs`; returns the report's path.
pub fn write_report(runs: &[RunData], out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut md = String::from("# trifecta report\n\n");
    // Final accuracy per layer, all runs side by side: a column for every layer any run
    // records (a backprop run records its last layer only).
    let mut layers: Vec<usize> = runs
        .iter()
        .filter_map(|r| r.records.last())
        .flat_map(|e| e.layers.iter().map(|l| l.layer))
        .collect();
    layers.sort_unstable();
    layers.dedup();
    let _ = writeln!(md, "## Final test accuracy per layer\n");
    let _ = writeln!(
        md,
        "{}",
        table_head(&["run", "ensemble"], layers.iter().copied())
    );
    for r in runs {
        let Some(last) = metrics::last_evaluated(&r.records) else {
            continue;
        };
        let mut row = format!("| {} | {} |", r.name, percent(last.ensemble_accuracy));
        for &l in &layers {
            match last.layers.iter().find(|x| x.layer == l) {
                Some(x) => {
                    let _ = write!(row, " {} |", percent(x.test_accuracy));
                }
                None => row.push_str(" |"),
            }
        }
        let _ = writeln!(md, "{row}");
    }
    md.push('\n');
    for r in runs {
        let _ = writeln!(
            md,
            "- **{}** ({}): {}{}",
            r.name,
            r.dir.display(),
            describe(&r.config, &r.records),
            r.under_way.map_or(String::new(), |(epoch, steps)| format!(
                "; epoch {epoch} under way, {steps} steps done (`train --resume` goes on)"
            ))
        );
    }
    let _ = writeln!(
        md,
        "\nEvery run's metrics, a row per epoch and layer (for pandas and the like): [{METRICS_CSV}]({METRICS_CSV})."
    );
    md.push_str(&chosen_on_validation(runs));
    md.push_str(&across_seeds(runs));
    let side_by_side = LineChart {
        title: "Final test accuracy per layer".into(),
        x_label: "layer".into(),
        y_label: "test accuracy (%)".into(),
        integer_x: true,
        series: runs
            .iter()
            .filter_map(|r| {
                Some(Series {
                    name: r.name.clone(),
                    points: metrics::last_evaluated(&r.records)?
                        .layers
                        .iter()
                        .filter_map(|l| Some((l.layer as f64, 100.0 * l.test_accuracy?)))
                        .collect(),
                })
            })
            .collect(),
    };
    plots::line_chart(&out.join("layers"), &side_by_side)?;
    let _ = writeln!(md, "\n![final accuracy per layer](layers.png)\n");

    for r in runs {
        let _ = writeln!(md, "## {}\n\n{}\n", r.name, describe(&r.config, &r.records));
        let has_val = r.records.iter().any(|e| e.ensemble_val_accuracy.is_some());
        let (val_head, val_rule) = match has_val {
            true => (" ensemble (val) |", "---|"),
            false => ("", ""),
        };
        let _ = writeln!(
            md,
            "| epoch | lr | ensemble |{val_head} train s | samples/s |\n|---|---|---|{val_rule}---|---|"
        );
        for e in &r.records {
            let val = match has_val {
                true => format!(" {} |", percent(e.ensemble_val_accuracy)),
                false => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} | {:.1e} | {} |{val} {:.1} | {:.0} |",
                e.epoch,
                e.lr,
                percent(e.ensemble_accuracy),
                e.train_seconds,
                e.samples_per_second
            );
        }
        let per_layer =
            |value: &dyn Fn(&crate::run::metrics::LayerRecord) -> Option<f64>| -> Vec<Series> {
                let count = r.records.last().map_or(0, |e| e.layers.len());
                (0..count)
                    .map(|k| Series {
                        name: format!("layer {}", r.records[0].layers[k].layer),
                        points: r
                            .records
                            .iter()
                            .filter_map(|e| value(&e.layers[k]).map(|v| (e.epoch as f64, v)))
                            .collect(),
                    })
                    .filter(|s| !s.points.is_empty())
                    .collect()
            };
        // A chart over the epochs of one value per layer, drawn as `<kind>-<run>`; its stem.
        let over_epochs = |kind: &str, title: &str, y_label: &str, series| -> Result<String> {
            let stem = format!("{kind}-{}", file_part(&r.name));
            let chart = LineChart {
                title: format!("{title}: {}", r.name),
                x_label: "epoch".into(),
                y_label: y_label.into(),
                integer_x: true,
                series,
            };
            plots::line_chart(&out.join(&stem), &chart)?;
            Ok(stem)
        };
        let stem = over_epochs(
            "accuracy",
            "Test accuracy per layer",
            "test accuracy (%)",
            per_layer(&|l| l.test_accuracy.map(|a| 100.0 * a)),
        )?;
        let _ = writeln!(md, "\n![accuracy per layer]({stem}.png)\n");
        if has_val {
            let stem = over_epochs(
                "val-accuracy",
                "Validation accuracy per layer",
                "validation accuracy (%)",
                per_layer(&|l| l.val_accuracy.map(|a| 100.0 * a)),
            )?;
            let _ = writeln!(md, "![validation accuracy per layer]({stem}.png)\n");
        }
        let deltas = per_layer(&|l| l.delta);
        if !deltas.is_empty() {
            let stem = over_epochs(
                "delta",
                "Delta (positive - negative goodness) per layer",
                "delta",
                deltas,
            )?;
            let _ = writeln!(md, "![delta per layer]({stem}.png)\n");
        }
        if !r.goodness.is_empty() {
            let stem = format!("goodness-{}", file_part(&r.name));
            plots::histograms(
                &out.join(&stem),
                &Histograms {
                    title: format!(
                        "Goodness of positives and negatives after training: {}",
                        r.name
                    ),
                    layers: r.goodness.clone(),
                },
            )?;
            let _ = writeln!(md, "![goodness histograms]({stem}.png)\n");
        }
    }
    checkpoint::write_atomic(&out.join(METRICS_CSV), metrics_csv(runs).as_bytes())?;
    let path = out.join("report.md");
    checkpoint::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// The report's table of every run's metrics.
pub const METRICS_CSV: &str = "metrics.csv";

/// Every record of every run in long form, one row per (run, epoch, layer), the epoch's own
/// values repeated on its layers' rows; an empty cell where a value was not measured (an
/// epoch not evaluated, a baseline's goodness). `pd.read_csv` reads it as it is.
fn metrics_csv(runs: &[RunData]) -> String {
    let mut csv = String::from(
        "run,seed,epoch,lr,layer,loss,positive,negative,delta,test_accuracy,ensemble_accuracy,val_accuracy,ensemble_val_accuracy,train_seconds,eval_seconds\n",
    );
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in runs {
        let name = csv_text(&r.name);
        for e in &r.records {
            for l in &e.layers {
                let _ = writeln!(
                    csv,
                    "{name},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.config.seed,
                    e.epoch,
                    e.lr,
                    l.layer,
                    l.loss,
                    cell(l.positive),
                    cell(l.negative),
                    cell(l.delta),
                    cell(l.test_accuracy),
                    cell(e.ensemble_accuracy),
                    cell(l.val_accuracy),
                    cell(e.ensemble_val_accuracy),
                    e.train_seconds,
                    e.eval_seconds
                );
            }
        }
    }
    csv
}

/// A CSV text cell: quoted (quotes doubled) where it holds a comma, a quote or a line break.
pub fn csv_text(text: &str) -> String {
    match text.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", text.replace('"', "\"\"")),
        false => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::config::PartialConfig;
    use crate::run::metrics::LayerRecord;

    fn run(name: &str, seed: u64, width: f64, accuracies: [f64; 2]) -> RunData {
        let config = PartialConfig {
            seed: Some(seed),
            width: Some(width),
            out: Some(format!("runs/{name}").into()),
            threads: Some(seed as usize),
            ..PartialConfig::default()
        }
        .resolve()
        .unwrap();
        let layers = accuracies
            .iter()
            .enumerate()
            .map(|(layer, &a)| LayerRecord {
                layer,
                loss: 0.5,
                positive: None,
                negative: None,
                delta: None,
                test_accuracy: Some(a),
                val_accuracy: None,
            })
            .collect();
        let record = EpochRecord {
            epoch: 1,
            lr: 1e-3,
            layers,
            ensemble_layers: vec![1],
            ensemble_accuracy: Some(accuracies[1]),
            ensemble_val_accuracy: None,
            train_seconds: 1.0,
            data_wait_seconds: 0.0,
            eval_seconds: 1.0,
            samples_per_second: 1.0,
        };
        RunData {
            name: name.into(),
            dir: format!("runs/{name}").into(),
            config,
            records: vec![record],
            goodness: Vec::new(),
            under_way: None,
        }
    }

    /// A run in words: the FF rule's loss and APL for FF, not for a baseline, which has none.
    #[test]
    fn describe_names_the_rule_of_ff_runs_only() {
        let ff = run("ff", 0, 0.25, [0.5, 0.6]);
        assert_eq!(
            describe(&ff.config, &ff.records),
            "ff on mnist-sample, small x0.25, loss symba, apl true, norm batch, batch 128, \
             1 of 5 epochs (unfinished)"
        );
        let bp = TrainConfig {
            model: Model::Bp,
            ..ff.config.clone()
        };
        assert_eq!(
            describe(&bp, &[]),
            "bp on mnist-sample, small x0.25, norm batch, batch 128, 5 epochs"
        );
    }

    #[test]
    fn runs_alike_but_for_the_seed_are_summarised_together() {
        let runs = [
            run("a", 0, 0.25, [0.5, 0.9]),
            run("b", 1, 0.25, [0.7, 0.8]),
            // Another width is another experiment, and alone.
            run("c", 2, 0.5, [0.1, 0.2]),
        ];
        let md = across_seeds(&runs);
        assert!(
            md.contains(
                "| a, b | [0, 1] | 1 | 85.00 +- 7.07% | 60.00 +- 14.14% | 85.00 +- 7.07% |"
            ),
            "{md}"
        );
        assert!(!md.contains("| c"), "{md}");
        // No two alike: no section.
        assert_eq!(across_seeds(&runs[1..]), "");
        assert_eq!(
            across_seeds(&[run("a", 0, 0.25, [0.5, 0.9]), run("d", 0, 0.25, [0.5, 0.9])]),
            ""
        );
    }

    /// Long form: a row per run, epoch and layer; unmeasured values empty; a name with a
    /// comma or a quote quoted as RFC 4180 says.
    #[test]
    fn metrics_csv_has_a_row_per_epoch_and_layer() {
        let mut a = run("grid, \"a\"", 3, 0.25, [0.5, 0.9]);
        a.records[0].layers[0].test_accuracy = None;
        a.records[0].layers[1].positive = Some(2.5);
        let mut b = run("b", 1, 0.25, [0.7, 0.8]);
        b.records[0].layers[1].val_accuracy = Some(0.75);
        b.records[0].ensemble_val_accuracy = Some(0.75);
        let csv = metrics_csv(&[a, b]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 2 + 2, "{csv}");
        assert!(lines[0].starts_with("run,seed,epoch,lr,layer,loss,positive"));
        assert_eq!(
            lines[1],
            "\"grid, \"\"a\"\"\",3,1,0.001,0,0.5,,,,,0.9,,,1,1"
        );
        assert_eq!(
            lines[2],
            "\"grid, \"\"a\"\"\",3,1,0.001,1,0.5,2.5,,,0.9,0.9,,,1,1"
        );
        assert_eq!(lines[4], "b,1,1,0.001,1,0.5,,,,0.8,0.8,0.75,0.75,1,1");
    }

    /// The epoch and layer with the best validation accuracy, the first of equals, with the
    /// test accuracy there; runs without a split have no row, and no run with one no section.
    #[test]
    fn the_choice_on_validation_is_the_best_first_epoch_and_layer() {
        let mut a = run("a", 0, 0.25, [0.5, 0.9]);
        a.config.val_split = 100;
        let mut second = a.records[0].clone();
        second.epoch = 2;
        a.records.push(second);
        let vals = [[0.6, 0.8], [0.8, 0.7]];
        for (e, vals) in a.records.iter_mut().zip(vals) {
            for (l, v) in e.layers.iter_mut().zip(vals) {
                l.val_accuracy = Some(v);
            }
        }
        a.records[1].layers[0].test_accuracy = Some(0.55);
        let md = chosen_on_validation(&[a, run("b", 1, 0.25, [0.7, 0.8])]);
        assert!(md.contains("| a | 100 | 1 | 1 | 80.00% | 90.00% |"), "{md}");
        assert!(!md.contains("| b"), "{md}");
        assert_eq!(chosen_on_validation(&[run("b", 1, 0.25, [0.7, 0.8])]), "");
    }

    /// A backprop run records its last layer only: its column is that layer's.
    #[test]
    fn the_table_has_a_column_per_recorded_layer() {
        let mut bp = run("bp", 0, 0.25, [0.25, 0.75]);
        bp.records[0].layers.remove(0);
        bp.records[0].layers[0].layer = 5;
        let tmp = std::env::temp_dir().join(format!("trifecta-report-{}", std::process::id()));
        let path = write_report(&[bp], &tmp).unwrap();
        let md = std::fs::read_to_string(path).unwrap();
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(
            md.contains("| run | ensemble | layer 5 |\n|---|---|---|\n| bp | 75.00% | 75.00% |"),
            "{md}"
        );
    }

    #[test]
    fn runs_of_the_same_folder_name_get_names_of_their_own() {
        let mut runs = [
            run("trifecta", 0, 0.25, [0.5, 0.9]),
            run("trifecta", 1, 0.25, [0.5, 0.9]),
            run("symba", 2, 0.25, [0.5, 0.9]),
            run("trifecta", 3, 0.25, [0.5, 0.9]),
        ];
        runs[0].dir = "grid-a/trifecta".into();
        runs[1].dir = "grid-b/trifecta".into();
        runs[3].dir = "grid-a/trifecta".into();
        unique_names(&mut runs);
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "grid-a-trifecta",
                "grid-b-trifecta",
                "symba",
                "grid-a-trifecta-2"
            ]
        );
        // Figures' file names keep to what a Markdown link holds.
        assert_eq!(file_part("my run (2).v1"), "my_run__2_.v1");
    }
}
