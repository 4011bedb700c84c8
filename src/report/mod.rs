//! `trifecta report`: reads run folders and writes a Markdown report with tables and figures
//! (PNG and SVG): test accuracy per layer over epochs, delta per layer over epochs, histograms
//! of positive and negative goodness per layer at the end of training, and the final accuracy
//! per layer of every run side by side.

pub mod plots;

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
    })
}

fn describe(c: &TrainConfig) -> String {
    format!(
        "{:?} on {}, {:?} x{}, loss {:?}, APL {}, norm {:?}, batch {}, {} epochs",
        c.model,
        c.dataset.name(),
        c.arch,
        c.width,
        c.loss,
        c.apl,
        c.norm,
        c.batch_size,
        c.epochs
    )
    .to_lowercase()
}

/// An accuracy as a table cell; `-` for an epoch that was not evaluated.
pub(crate) fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// Writes `out/report.md` and its figures for `runs`; returns the report's path.
pub fn write_report(runs: &[RunData], out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut md = String::from("# trifecta report\n\n");
    // Final accuracy per layer, all runs side by side.
    let layers = runs
        .iter()
        .map(|r| r.records.last().map_or(0, |e| e.layers.len()))
        .max()
        .unwrap_or(0);
    let _ = writeln!(md, "## Final test accuracy per layer\n");
    let mut header = String::from("| run | ensemble |");
    let mut rule = String::from("|---|---|");
    for l in 0..layers {
        let _ = write!(header, " layer {l} |");
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for r in runs {
        let Some(last) = metrics::last_evaluated(&r.records) else {
            continue;
        };
        let mut row = format!("| {} | {} |", r.name, percent(last.ensemble_accuracy));
        for l in 0..layers {
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
            "- **{}** ({}): {}",
            r.name,
            r.dir.display(),
            describe(&r.config)
        );
    }
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
        let _ = writeln!(md, "## {}\n\n{}\n", r.name, describe(&r.config));
        let _ = writeln!(
            md,
            "| epoch | lr | ensemble | train s | samples/s |\n|---|---|---|---|---|"
        );
        for e in &r.records {
            let _ = writeln!(
                md,
                "| {} | {:.1e} | {} | {:.1} | {:.0} |",
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
        let stem = format!("accuracy-{}", r.name);
        plots::line_chart(
            &out.join(&stem),
            &LineChart {
                title: format!("Test accuracy per layer: {}", r.name),
                x_label: "epoch".into(),
                y_label: "test accuracy (%)".into(),
                integer_x: true,
                series: per_layer(&|l| l.test_accuracy.map(|a| 100.0 * a)),
            },
        )?;
        let _ = writeln!(md, "\n![accuracy per layer]({stem}.png)\n");
        let deltas = per_layer(&|l| l.delta);
        if !deltas.is_empty() {
            let stem = format!("delta-{}", r.name);
            plots::line_chart(
                &out.join(&stem),
                &LineChart {
                    title: format!("Delta (positive - negative goodness) per layer: {}", r.name),
                    x_label: "epoch".into(),
                    y_label: "delta".into(),
                    integer_x: true,
                    series: deltas,
                },
            )?;
            let _ = writeln!(md, "![delta per layer]({stem}.png)\n");
        }
        if !r.goodness.is_empty() {
            let stem = format!("goodness-{}", r.name);
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
    let path = out.join("report.md");
    checkpoint::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}
