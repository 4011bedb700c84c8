//! Datasets: loading the official on-disk formats, downloading them on first use, and cutting
//! normalised (optionally augmented) batches out of them.
//!
//! Images are kept as raw bytes `(N, H, W, C)` and normalised per batch, which keeps CIFAR-10 at
//! 150 MB rather than 600 MB and lets augmentation pad with true black.

pub mod augment;
pub mod cifar;
pub mod download;
pub mod idx;
pub mod image_folder;
pub mod loader;
pub mod sample;
pub mod svhn;

use crate::error::{Error, Result};
use crate::ff::ImageShape;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A labelled image set.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub shape: ImageShape,
    pub classes: usize,
    /// Raw pixels `(N, H, W, C)`.
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    /// Per-channel normalisation, on the [0, 1] scale.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// What each label means ("0".."9" for digits, CIFAR-10's and Fashion-MNIST's class
    /// names, an image folder's class folders).
    pub class_names: Vec<String>,
}

/// What a network trained on a dataset takes and gives, saved with its checkpoints (as
/// torchvision's weights carry their transforms and categories): the image shape, the
/// normalisation, and the name of each class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub class_names: Vec<String>,
}

impl InputSpec {
    pub fn shape(&self) -> ImageShape {
        ImageShape {
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }
}

/// The datasets the tool knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// 4,000 training and 1,000 test images of real MNIST, built into the binary.
    MnistSample,
    /// Handwritten digits: 60,000 training and 10,000 test images, 28 x 28 gray (IDX files).
    Mnist,
    /// Zalando's images of 10 kinds of clothing, in MNIST's format and sizes.
    FashionMnist,
    /// 50,000 training and 10,000 test photos of 10 classes, 32 x 32 colour (binary version).
    Cifar10,
    /// Street View house numbers, cropped digits: 73,257 training and 26,032 test images,
    /// 32 x 32 colour (.mat).
    Svhn,
    /// Any `split/<class>/*.{png,jpg}` folder, or a `.tar.gz` of one.
    Folder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl DatasetKind {
    /// The per-channel mean and std of the reference implementation (folders: measured on
    /// their training split).
    pub fn mean_std(&self) -> Option<(&'static [f32], &'static [f32])> {
        match self {
            DatasetKind::Mnist | DatasetKind::MnistSample => Some((&[0.1307], &[0.3081])),
            DatasetKind::FashionMnist => Some((&[0.2860], &[0.3530])),
            DatasetKind::Svhn => Some((&[0.4377, 0.4438, 0.4728], &[0.1980, 0.2010, 0.1970])),
            DatasetKind::Cifar10 => Some((&[0.4914, 0.4822, 0.4465], &[0.2023, 0.1994, 0.2010])),
            DatasetKind::Folder => None,
        }
    }

    /// The names of the classes, by label: digits for the digit sets, CIFAR-10's and
    /// Fashion-MNIST's as torchvision lists them (folders: their class folders, known only
    /// once loaded).
    pub fn class_names(&self) -> Option<&'static [&'static str]> {
        const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        match self {
            DatasetKind::Mnist | DatasetKind::MnistSample | DatasetKind::Svhn => Some(&DIGITS),
            DatasetKind::FashionMnist => Some(&[
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ]),
            DatasetKind::Cifar10 => Some(&[
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ]),
            DatasetKind::Folder => None,
        }
    }

    /// The name used on the command line and in folder names.
    pub fn name(&self) -> &'static str {
        match self {
            DatasetKind::MnistSample => "mnist-sample",
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Svhn => "svhn",
            DatasetKind::Folder => "folder",
        }
    }
}

/// Where a dataset's files live: `--data-dir`, else `$TRIFECTA_DATA/<name>`, else the
/// platform cache folder (`~/.cache/trifecta/<name>` on Linux).
pub fn data_dir(kind: DatasetKind, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(root) = std::env::var_os("TRIFECTA_DATA") {
        return Ok(PathBuf::from(root).join(kind.name()));
    }
    dirs::cache_dir()
        .map(|d| d.join("trifecta").join(kind.name()))
        .ok_or_else(|| Error::Config("no cache folder on this platform: pass --data-dir".into()))
}

/// Loads one split. With `download`, missing official files are fetched first (image folders
/// cannot be downloaded).
pub fn load(kind: DatasetKind, dir: &Path, split: Split, download: bool) -> Result<Dataset> {
    if download {
        download::ensure(kind, dir)?;
    }
    let loaded = match kind {
        DatasetKind::MnistSample => sample::load(split),
        DatasetKind::Mnist | DatasetKind::FashionMnist => idx::load_split(dir, split),
        DatasetKind::Cifar10 => cifar::load(dir, split),
        DatasetKind::Svhn => svhn::load(dir, split),
        DatasetKind::Folder => image_folder::load(dir, split),
    };
    let mut data = loaded.map_err(|e| another_dataset(kind, dir).unwrap_or(e))?;
    if let Some((mean, std)) = kind.mean_std() {
        data.mean = mean.to_vec();
        data.std = std.to_vec();
    }
    if let Some(names) = kind.class_names() {
        data.class_names = names.iter().map(|n| n.to_string()).collect();
    }
    Ok(data)
}

/// Which dataset a folder holds, judged by the names of the files each format keeps there
/// (IDX files are told apart by their training labels: Fashion-MNIST's official ones, else
/// MNIST). `None` for a folder that holds none of them, or cannot be read.
pub fn detect(dir: &Path) -> Option<DatasetKind> {
    let (images, _) = idx::file_names(Split::Train);
    if [images.to_string(), format!("{images}.gz")]
        .iter()
        .any(|name| dir.join(name).is_file())
    {
        let fashion = download::official_labels(DatasetKind::FashionMnist, dir);
        return Some(if matches!(fashion, Ok(Some(_))) {
            DatasetKind::FashionMnist
        } else {
            DatasetKind::Mnist
        });
    }
    if dir.join(cifar::FOLDER).is_dir()
        || dir.join(cifar::ARCHIVE).is_file()
        || dir.join("test_batch.bin").is_file()
    {
        return Some(DatasetKind::Cifar10);
    }
    if dir.join(svhn::file_name(Split::Train)).is_file() {
        return Some(DatasetKind::Svhn);
    }
    let holds_archive = std::fs::read_dir(dir)
        .ok()?
        .any(|entry| entry.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tar.gz")));
    (dir.join(Split::Train.name()).is_dir() || holds_archive).then_some(DatasetKind::Folder)
}

/// When `kind` could not be loaded from `dir` and the folder holds another dataset, an error
/// that says which and names the flag that reads it (a `--dataset` slip is the likeliest cause
/// of a load that finds nothing it expects).
pub fn another_dataset(kind: DatasetKind, dir: &Path) -> Option<Error> {
    let found = detect(dir)?;
    let twins = |k: DatasetKind| matches!(k, DatasetKind::Mnist | DatasetKind::FashionMnist);
    if found == kind || kind == DatasetKind::MnistSample || (twins(kind) && twins(found)) {
        return None;
    }
    let holds = match found {
        DatasetKind::Folder => {
            "an image folder (train/<class>/ and test/<class>/, or a .tar.gz of them)".to_string()
        }
        other => format!("{}'s files", other.name()),
    };
    let wanted = match kind {
        DatasetKind::Folder => "an image folder".to_string(),
        other => format!("{}'s", other.name()),
    };
    Some(Error::data(
        dir,
        format!(
            "this folder holds {holds}, not {wanted}: --dataset {} reads it",
            found.name()
        ),
    ))
}

impl Dataset {
    /// A dataset from raw parts, with mean 0 and std 1 until set.
    pub fn new(shape: ImageShape, classes: usize, pixels: Vec<u8>, labels: Vec<u32>) -> Self {
        Dataset {
            shape,
            classes,
            pixels,
            labels,
            mean: vec![0.0; shape.channels],
            std: vec![1.0; shape.channels],
            class_names: (0..classes).map(|c| c.to_string()).collect(),
        }
    }

    /// `n` images of uniform noise with uniform labels (pixels drawn first, then labels),
    /// normalised with mean 0.5 and std 0.25: the benchmark's synthetic data.
    pub fn noise(shape: ImageShape, classes: usize, n: usize, rng: &mut Rng) -> Self {
        let pixels = (0..n * shape.numel())
            .map(|_| rng.below(256) as u8)
            .collect();
        let labels = (0..n).map(|_| rng.below(classes as u32)).collect();
        Dataset {
            mean: vec![0.5; shape.channels],
            std: vec![0.25; shape.channels],
            ..Dataset::new(shape, classes, pixels, labels)
        }
    }

    /// The shape, normalisation and class names a network trained on this data takes.
    pub fn input_spec(&self) -> InputSpec {
        InputSpec {
            height: self.shape.height,
            width: self.shape.width,
            channels: self.shape.channels,
            mean: self.mean.clone(),
            std: self.std.clone(),
            class_names: self.class_names.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.shape.numel();
        &self.pixels[i * size..(i + 1) * size]
    }

    /// Keeps `n` samples (all if fewer), drawn uniformly without replacement and kept in
    /// their original order. Files are often sorted by class, so the first `n` would not do.
    pub fn subsample(&mut self, n: usize, rng: &mut Rng) {
        if n >= self.len() {
            return;
        }
        *self = self.split_off(n, rng);
    }

    /// Moves `n` samples (all if fewer), drawn uniformly without replacement, into a dataset
    /// of their own, as torchvision's `random_split`; both keep the original order. The two
    /// share the shape, classes and normalisation.
    pub fn split_off(&mut self, n: usize, rng: &mut Rng) -> Dataset {
        let mut order: Vec<usize> = (0..self.len()).collect();
        rng.shuffle(&mut order);
        let (moved, kept) = order.split_at_mut(n.min(self.len()));
        moved.sort_unstable();
        kept.sort_unstable();
        let part = |indices: &[usize]| {
            let mut pixels = Vec::with_capacity(indices.len() * self.shape.numel());
            for &i in indices {
                pixels.extend_from_slice(self.image(i));
            }
            let labels = indices.iter().map(|&i| self.labels[i]).collect();
            Dataset {
                pixels,
                labels,
                ..Dataset::new(self.shape, self.classes, Vec::new(), Vec::new())
            }
        };
        let (mut moved, kept) = (part(moved), part(kept));
        moved.mean = self.mean.clone();
        moved.std = self.std.clone();
        moved.class_names = self.class_names.clone();
        self.pixels = kept.pixels;
        self.labels = kept.labels;
        moved
    }

    /// Per-channel mean and std of the pixels on the [0, 1] scale.
    pub fn measure_mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        let c = self.shape.channels;
        let mut sum = vec![0.0f64; c];
        let mut sq = vec![0.0f64; c];
        for px in self.pixels.chunks(c) {
            for ch in 0..c {
                let v = px[ch] as f64 / 255.0;
                sum[ch] += v;
                sq[ch] += v * v;
            }
        }
        let count = (self.pixels.len() / c.max(1)).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / count - m * m).max(1e-12)).sqrt() as f32)
            .collect();
        (mean.iter().map(|m| *m as f32).collect(), std)
    }

    /// Normalised `(n, H, W, C)` images and labels of the samples at `indices`, each augmented
    /// when `augment` is given.
    pub fn batch(
        &self,
        indices: &[usize],
        augment: Option<(&augment::Augment, &mut Rng)>,
    ) -> (Vec<f32>, Vec<u32>) {
        use rayon::prelude::*;
        let size = self.shape.numel();
        let c = self.shape.channels;
        // The draws come from the stream in image order; the pixel work runs in parallel, so
        // a batch is the same whatever the thread count.
        let draws: Option<(&augment::Augment, Vec<augment::Draw>)> =
            augment.map(|(aug, rng)| (aug, indices.iter().map(|_| aug.draw(rng)).collect()));
        let mut images = vec![0.0f32; indices.len() * size];
        images
            .par_chunks_mut(size.max(1))
            .zip(indices.par_iter())
            .enumerate()
            .for_each_init(
                || vec![0u8; size],
                |scratch, (k, (out, &i))| {
                    let raw: &[u8] = match &draws {
                        Some((aug, draws)) => {
                            aug.apply_draw(scratch, self.image(i), self.shape, draws[k]);
                            scratch
                        }
                        None => self.image(i),
                    };
                    for (px, o) in raw.chunks(c).zip(out.chunks_mut(c)) {
                        for ch in 0..c {
                            o[ch] = (px[ch] as f32 / 255.0 - self.mean[ch]) / self.std[ch];
                        }
                    }
                },
            );
        (images, indices.iter().map(|&i| self.labels[i]).collect())
    }
}

/// For each label, a uniformly drawn different label.
pub fn wrong_labels(labels: &[u32], classes: usize, rng: &mut Rng) -> Vec<u32> {
    labels
        .iter()
        .map(|&y| (y + 1 + rng.below(classes as u32 - 1)) % classes as u32)
        .collect()
}

/// Checks that every label is below `classes`, naming the file otherwise.
pub fn check_labels(path: &Path, labels: &[u32], classes: usize) -> Result<()> {
    match labels.iter().position(|&y| y as usize >= classes) {
        Some(i) => Err(Error::data(
            path,
            format!(
                "label {} at index {i} is out of range 0-{}",
                labels[i],
                classes - 1
            ),
        )),
        None => Ok(()),
    }
}
