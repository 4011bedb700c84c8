//! `trifecta predict CHECKPOINT IMAGE...`: the class a trained network gives image files.

use super::device_arg;
use crate::baselines::Model;
use crate::error::{Error, Result};
use crate::run::checkpoint::write_atomic;
use crate::run::config::PartialConfig;
use crate::run::predict::{image_files, predict_files};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A run folder or a checkpoint `.safetensors` file (such as a run's best.safetensors), or
    /// a baseline's (bp/lcp) `weights.safetensors`.
    pub checkpoint: PathBuf,
    /// Image files (.png, .jpg), or folders of them; each is turned gray or RGB, resized and
    /// normalised as the network's training data was.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Layers whose goodness is averaged, e.g. 3,4,5 (a baseline's: whose heads' probabilities)
    /// [default: the run's ensemble, by default its last layer].
    #[arg(long, value_delimiter = ',')]
    pub ensemble: Option<Vec<usize>>,
    /// Also print every class' goodness (a baseline's: probability).
    #[arg(long)]
    pub scores: bool,
    /// cpu, cuda or cuda:N [default: the run's].
    #[arg(long, value_parser = device_arg)]
    pub device: Option<String>,
    /// CPU threads (0 = one per core) [default: the run's].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Images per batch, each run under every label [default: the run's evaluation batch].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Also write every prediction to this CSV file: path, label, class and every class'
    /// goodness or probability (`pd.read_csv` reads it).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Where the run's dataset is now, for a checkpoint from before checkpoints recorded
    /// their inputs (it takes them from the training split) [default: the run's].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn run(args: PredictArgs) -> Result<()> {
    if let Some(csv) = &args.csv {
        // Found out before the images are scored, not after.
        let folder = csv.parent().filter(|p| !p.as_os_str().is_empty());
        let problem = if csv.is_dir() {
            Some("is a folder: --csv names the file to write")
        } else if folder.is_some_and(|f| !f.is_dir()) {
            Some("its folder does not exist")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::io(csv, std::io::Error::other(problem)));
        }
    }
    let files = image_files(&args.images)?;
    let overrides = PartialConfig {
        device: args.device.clone(),
        threads: args.threads,
        ensemble: args.ensemble.clone(),
        eval_batch_size: args.batch_size.map(|b| b as usize),
        data_dir: args.data_dir.clone(),
        ..PartialConfig::default()
    };
    let predictions = predict_files(&args.checkpoint, &files, &overrides)?;
    let inputs = &predictions.inputs;
    let score = predictions.score_name();
    let layers = match (predictions.model, predictions.ensemble.as_slice()) {
        (Model::Ff, [one]) => format!("layer {one}'s goodness"),
        (Model::Ff, many) => format!("mean goodness of layers {many:?}"),
        (model, [one]) => format!("{model:?} head on layer {one}").to_lowercase(),
        (model, many) => {
            format!("{model:?} heads on layers {many:?}, mean probability").to_lowercase()
        }
    };
    println!(
        "{} (epoch {}; {}x{} {} images; {layers}): {} image{}",
        args.checkpoint.display(),
        predictions.epoch,
        inputs.width,
        inputs.height,
        if inputs.channels == 1 { "gray" } else { "RGB" },
        predictions.items.len(),
        if predictions.items.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    let names = &inputs.class_names;
    let path_width = predictions
        .items
        .iter()
        .map(|p| p.path.display().to_string().chars().count())
        .max()
        .unwrap_or(0);
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for p in &predictions.items {
        // The runner-up: how far ahead the winner is.
        let second = (0..names.len())
            .filter(|&c| c != p.label as usize)
            .max_by(|&a, &b| p.scores[a].total_cmp(&p.scores[b]));
        let mut line = format!(
            "  {:<path_width$}  {:<name_width$}  {score} {:.3}",
            p.path.display().to_string(),
            names[p.label as usize],
            p.scores[p.label as usize]
        );
        if let Some(c) = second {
            line += &format!(", next {} at {:.3}", names[c], p.scores[c]);
        }
        if let Some((w, h)) = p.resized_from {
            line += &format!(" (resized from {w}x{h})");
        }
        println!("{line}");
        if args.scores {
            let all: Vec<String> = names
                .iter()
                .zip(&p.scores)
                .map(|(n, g)| format!("{n} {g:.3}"))
                .collect();
            println!("    {}", all.join(", "));
        }
    }
    if let Some(csv) = &args.csv {
        write_atomic(csv, predictions.to_csv().as_bytes())?;
        println!("wrote {}", csv.display());
    }
    Ok(())
}
