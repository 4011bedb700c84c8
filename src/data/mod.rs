//! Datasets in memory and the batches cut from them. Images are stored normalised, NHWC f32,
//! which is what the network consumes.

pub mod idx;

use crate::error::{Error, Result};
use crate::ff::ImageShape;
use crate::rng::Rng;
use std::path::{Path, PathBuf};

/// A labelled image set: `images` is `(len, H, W, C)`, normalised.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub shape: ImageShape,
    pub classes: usize,
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
}

/// The known datasets with their per-channel normalisation (from the reference code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
}

impl DatasetKind {
    pub fn mean_std(&self) -> (&'static [f32], &'static [f32]) {
        match self {
            DatasetKind::Mnist => (&[0.1307], &[0.3081]),
            DatasetKind::FashionMnist => (&[0.2860], &[0.3530]),
        }
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Images `(n, H, W, C)` and labels of the samples at `indices`.
    pub fn gather(&self, indices: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let size = self.shape.numel();
        let mut images = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            images.extend_from_slice(&self.images[i * size..(i + 1) * size]);
        }
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

/// One split of MNIST or Fashion-MNIST from the four official IDX files (optionally `.gz`) in
/// `dir`.
pub fn load_idx_split(dir: &Path, kind: DatasetKind, train: bool) -> Result<Dataset> {
    let prefix = if train { "train" } else { "t10k" };
    let find = |stem: String| -> Result<PathBuf> {
        let plain = dir.join(&stem);
        let gz = dir.join(format!("{stem}.gz"));
        if gz.exists() {
            Ok(gz)
        } else if plain.exists() {
            Ok(plain)
        } else {
            Err(Error::data(&gz, "file not found (nor without .gz)"))
        }
    };
    let images_path = find(format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(format!("{prefix}-labels-idx1-ubyte"))?;
    let images = idx::read(&images_path)?;
    let labels = idx::read(&labels_path)?;
    if images.dims.len() != 3 {
        return Err(Error::data(
            &images_path,
            format!("expected 3 dimensions (N, H, W), got {:?}", images.dims),
        ));
    }
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        return Err(Error::data(
            &labels_path,
            format!(
                "expected {} labels to match the images, got dimensions {:?}",
                images.dims[0], labels.dims
            ),
        ));
    }
    if let Some(pos) = labels.data.iter().position(|&y| y >= 10) {
        return Err(Error::data(
            &labels_path,
            format!(
                "label {} at index {pos} is out of range 0-9",
                labels.data[pos]
            ),
        ));
    }
    let (mean, std) = kind.mean_std();
    Ok(Dataset {
        shape: ImageShape {
            channels: 1,
            height: images.dims[1],
            width: images.dims[2],
        },
        classes: 10,
        images: images
            .data
            .iter()
            .map(|&v| (v as f32 / 255.0 - mean[0]) / std[0])
            .collect(),
        labels: labels.data.iter().map(|&v| v as u32).collect(),
    })
}
