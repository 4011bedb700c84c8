//! The class a trained FF network gives each of a set of image files: every image runs under
//! every label, as in evaluation, and the label of the highest goodness (of the run's ensemble
//! layers, by default the last) wins. A baseline's (bp/lcp) classifier predicts with its last
//! head, or the mean softmax of the heads the ensemble names.
//!
//! The images are made what the network takes, as torchvision's weights' `transforms()` do:
//! decoded, turned gray or RGB as the training data was, resized (bilinear) where their size
//! differs, and normalised with the training data's mean and std. Those, and the class names,
//! come from the checkpoint; a checkpoint older than that record takes them from the run's
//! dataset (which must then be readable).

use super::config::PartialConfig;
use super::{
    Splits, build_net, checkpoint, ensemble_layers, ff_config, load_data, saved_state_file,
};
use crate::backend::{Backend, with_backend};
use crate::baselines::{ClassifierNet, Model, argmax, softmax};
use crate::data::{Dataset, InputSpec, image_folder};
use crate::error::{Error, Result};
use crate::ff::eval::{ensemble_goodness, predict};
use crate::report::csv_text;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// One image's prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub path: PathBuf,
    /// The winning label.
    pub label: u32,
    /// Every class' score: for an FF network its goodness, averaged over the ensemble's
    /// layers; for a baseline its probability (softmax), averaged over the ensemble's heads.
    pub scores: Vec<f32>,
    /// The file's own width and height, where it was resized to the network's.
    pub resized_from: Option<(u32, u32)>,
}

/// The predictions of a checkpoint, with what they were made with.
#[derive(Clone, Debug)]
pub struct Predictions {
    /// What made them: an FF network or a baseline's classifier.
    pub model: Model,
    pub inputs: InputSpec,
    pub ensemble: Vec<usize>,
    /// Epochs the checkpoint had trained.
    pub epoch: u64,
    pub items: Vec<Prediction>,
}

impl Predictions {
    /// What the scores are: "goodness" (FF) or "probability" (a baseline).
    pub fn score_name(&self) -> &'static str {
        match self.model {
            Model::Ff => "goodness",
            _ => "probability",
        }
    }

    /// A row per image, for pandas and the like: `path,label,class`, then the score of every
    /// class (columns `goodness_<class>`, a baseline's `probability_<class>`), as `--scores`
    /// prints them.
    pub fn to_csv(&self) -> String {
        let names = &self.inputs.class_names;
        let mut csv = String::from("path,label,class");
        for name in names {
            csv += &format!(",{}", csv_text(&format!("{}_{name}", self.score_name())));
        }
        csv.push('\n');
        for p in &self.items {
            csv += &format!(
                "{},{},{}",
                csv_text(&p.path.display().to_string()),
                p.label,
                csv_text(&names[p.label as usize])
            );
            for g in &p.scores {
                csv += &format!(",{g}");
            }
            csv.push('\n');
        }
        csv
    }
}

/// The image files `paths` name: files as given, folders' `.png` and `.jpg` files (sorted,
/// hidden ones left out, not recursing).
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let found = image_folder::images_in(path)?;
            if found.is_empty() {
                return Err(Error::data(path, "folder holds no .png or .jpg images"));
            }
            files.extend(found);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            return Err(Error::data(path, "no such image file or folder"));
        }
    }
    Ok(files)
}

/// An image file made what a network takes.
pub struct LoadedImage {
    /// `(H, W, C)`, unnormalised.
    pub pixels: Vec<u8>,
    /// The file's own width and height, where it was resized.
    pub resized_from: Option<(u32, u32)>,
}

/// Decodes `path` as `spec` takes it.
pub fn load_image(path: &Path, spec: &InputSpec) -> Result<LoadedImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| Error::data(path, format!("cannot decode image: {e}")))?;
    let (w, h) = (spec.width as u32, spec.height as u32);
    let resized_from = ((img.width(), img.height()) != (w, h)).then(|| (img.width(), img.height()));
    let img = match resized_from {
        Some(_) => img.resize_exact(w, h, image::imageops::FilterType::Triangle),
        None => img,
    };
    let pixels = match spec.channels {
        1 => img.into_luma8().into_raw(),
        3 => img.into_rgb8().into_raw(),
        c => {
            return Err(Error::data(
                path,
                format!("the network takes {c}-channel images; only gray and RGB are read"),
            ));
        }
    };
    Ok(LoadedImage {
        pixels,
        resized_from,
    })
}

/// Predicts the class of every image of `files` with the saved network at `path` (a run
/// folder, an FF checkpoint or a baseline's weights), its configuration changed by
/// `overrides` (where it runs:
/// device, threads, `eval_batch_size`; the `ensemble`; the `data_dir` a checkpoint older
/// than the record of its inputs takes them from).
pub fn predict_files(
    path: &Path,
    files: &[PathBuf],
    overrides: &PartialConfig,
) -> Result<Predictions> {
    let file = saved_state_file(path);
    let header = checkpoint::read_any_header(&file)?;
    let config = PartialConfig::from(&header.config)
        .overlay(overrides)
        .resolve()?;
    config.check_machine()?;
    let inputs = match header.inputs {
        Some(inputs) => inputs,
        None => {
            let Splits { train, .. } = load_data(&config)?;
            train.input_spec()
        }
    };
    if files.is_empty() {
        return Err(Error::Config("no images to predict".into()));
    }
    let images: Vec<LoadedImage> = files
        .par_iter()
        .map(|f| load_image(f, &inputs))
        .collect::<Result<_>>()?;
    let mut pixels = Vec::with_capacity(files.len() * inputs.shape().numel());
    let mut resized = Vec::with_capacity(files.len());
    for image in images {
        pixels.extend(image.pixels);
        resized.push(image.resized_from);
    }
    let classes = inputs.class_names.len();
    let data = Dataset {
        mean: inputs.mean.clone(),
        std: inputs.std.clone(),
        class_names: inputs.class_names.clone(),
        ..Dataset::new(inputs.shape(), classes, pixels, vec![0; files.len()])
    };
    let (ensemble, scored) = with_backend!(
        &config.device,
        config.threads,
        crate::backend::GpuOptions::new(config.gpu_precision()),
        |backend| {
            let batch = config.eval_batch_size;
            match config.model {
                Model::Ff => {
                    let mut net = build_net(backend, &config, &data)?;
                    checkpoint::load(&file, &mut net, backend)?;
                    let ensemble = ensemble_layers(&config, net.blocks.len());
                    let scored = score(backend, &mut net, &data, batch, &ensemble)?;
                    Ok::<_, Error>((ensemble, scored))
                }
                model => {
                    let ff = ff_config(&config, &data)?;
                    let mut net = ClassifierNet::new(backend, ff, model, config.seed)?;
                    checkpoint::load(&file, &mut net, backend)?;
                    let ensemble = ensemble_layers(&config, net.blocks.len());
                    let scored = score_classifier(backend, &mut net, &data, batch, &ensemble)?;
                    Ok((ensemble, scored))
                }
            }
        }
    )?;
    let items = files
        .iter()
        .zip(resized)
        .zip(scored)
        .map(|((path, resized_from), (label, scores))| Prediction {
            path: path.clone(),
            label,
            scores,
            resized_from,
        })
        .collect();
    Ok(Predictions {
        model: config.model,
        inputs,
        ensemble,
        epoch: header.epoch,
        items,
    })
}

/// Each image's winning label and the ensemble's goodness of every label, batch by batch.
fn score<B: Backend>(
    backend: &B,
    net: &mut crate::ff::FfNet<B>,
    data: &Dataset,
    batch_size: usize,
    ensemble: &[usize],
) -> Result<Vec<(u32, Vec<f32>)>> {
    let (classes, layers) = (data.classes, net.blocks.len());
    let mut out = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let (images, _) = data.batch(chunk, None);
        let goodness = net.goodness_per_label(backend, &images)?;
        let n = chunk.len();
        let labels = predict(&goodness, classes, layers, n, ensemble);
        for (i, label) in labels.into_iter().enumerate() {
            let mean = (0..classes)
                .map(|c| {
                    ensemble_goodness(&goodness, layers, n, ensemble, c, i) / ensemble.len() as f32
                })
                .collect();
            out.push((label, mean));
        }
    }
    Ok(out)
}

/// Each image's winning class and its probability of every class, averaged over the heads on
/// the `ensemble`'s layers (by default the last), batch by batch.
fn score_classifier<B: Backend>(
    backend: &B,
    net: &mut ClassifierNet<B>,
    data: &Dataset,
    batch_size: usize,
    ensemble: &[usize],
) -> Result<Vec<(u32, Vec<f32>)>> {
    let heads = net.head_layers();
    let chosen = ensemble
        .iter()
        .map(|layer| {
            heads.iter().position(|h| h == layer).ok_or_else(|| {
                let model = format!("{:?}", net.model).to_lowercase();
                Error::Config(format!(
                    "layer {layer} has no head: this {model} network has heads on layers {heads:?}"
                ))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let classes = data.classes;
    let mut out = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let (images, _) = data.batch(chunk, None);
        let logits = net.logits(backend, &images)?;
        for i in 0..chunk.len() {
            let mut mean = vec![0.0f32; classes];
            for &k in &chosen {
                let probabilities = softmax(&logits[k][i * classes..(i + 1) * classes]);
                for (m, p) in mean.iter_mut().zip(probabilities) {
                    *m += p / chosen.len() as f32;
                }
            }
            out.push((argmax(&mean), mean));
        }
    }
    Ok(out)
}
