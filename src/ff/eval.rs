//! FF evaluation: run each image once per candidate label; the label with the highest goodness
//! wins, per layer or for an ensemble (mean goodness over a chosen set of layers).

use super::net::FfNet;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// Predictions and accuracies of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Accuracy of each layer on its own, in [0, 1].
    pub layer_accuracy: Vec<f64>,
    /// Accuracy of the ensemble.
    pub ensemble_accuracy: f64,
    /// The layers the ensemble averages.
    pub ensemble_layers: Vec<usize>,
    pub samples: usize,
    pub classes: usize,
    /// The ensemble's confusion matrix: `confusion[true * classes + predicted]` images.
    pub confusion: Vec<usize>,
    /// The goodness of the first test images, for the separation histograms.
    pub kept: KeptGoodness,
}

/// The ensemble's record on one class' images.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRecord {
    pub images: usize,
    /// The share predicted right (NaN without images).
    pub accuracy: f64,
    /// The other class they were most often taken for, with how many (the lowest label of
    /// equals; None where none was mistaken).
    pub mistaken: Option<(usize, usize)>,
}

impl Evaluation {
    /// Per class, the ensemble's record on its images.
    pub fn per_class(&self) -> Vec<ClassRecord> {
        let classes = self.classes;
        (0..classes)
            .map(|t| {
                let row = &self.confusion[t * classes..(t + 1) * classes];
                let images: usize = row.iter().sum();
                let mistaken = (0..classes)
                    .filter(|&p| p != t && row[p] > 0)
                    .max_by_key(|&p| (row[p], std::cmp::Reverse(p)))
                    .map(|p| (p, row[p]));
                ClassRecord {
                    images,
                    accuracy: row[t] as f64 / images as f64,
                    mistaken,
                }
            })
            .collect()
    }
}

/// How many test images an evaluation keeps the goodness of.
pub const KEPT_IMAGES: usize = 1000;

/// The goodness of the first [`KEPT_IMAGES`] images of an evaluation under every label at every
/// layer, as the evaluation computed it (no pass of its own).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeptGoodness {
    /// Each kept image's true label.
    pub labels: Vec<u32>,
    /// `goodness[(image * classes + label) * layers + layer]`.
    pub goodness: Vec<f32>,
    pub classes: usize,
    pub layers: usize,
}

impl KeptGoodness {
    /// Image `image`'s goodness at `layer` under `label`.
    pub fn at(&self, image: usize, label: u32, layer: usize) -> f32 {
        self.goodness[(image * self.classes + label as usize) * self.layers + layer]
    }
}

/// Sample `i`'s goodness under `label`, summed over the layers `pick`, from
/// `goodness[label][layer][sample]` of `layers` layers and `n` samples.
pub fn ensemble_goodness(
    goodness: &[f32],
    layers: usize,
    n: usize,
    pick: &[usize],
    label: usize,
    i: usize,
) -> f32 {
    pick.iter()
        .map(|l| goodness[(label * layers + l) * n + i])
        .sum::<f32>()
}

/// argmax over labels of `goodness[label][layer][sample]` summed over `layers`; ties go to the
/// lowest label, like `torch.argmax`.
pub fn predict(
    goodness: &[f32],
    classes: usize,
    layers: usize,
    n: usize,
    pick: &[usize],
) -> Vec<u32> {
    (0..n)
        .map(|i| {
            let score = |label: usize| ensemble_goodness(goodness, layers, n, pick, label, i);
            let mut best = 0;
            let mut best_score = score(0);
            for label in 1..classes {
                let s = score(label);
                if s > best_score {
                    best = label;
                    best_score = s;
                }
            }
            best as u32
        })
        .collect()
}

/// Accumulates predictions batch by batch.
pub struct Evaluator {
    correct_per_layer: Vec<usize>,
    correct_ensemble: usize,
    samples: usize,
    ensemble_layers: Vec<usize>,
    confusion: Vec<usize>,
    kept: KeptGoodness,
}

/// Fails when an ensemble layer is not one of `network`'s `layers` (the network, or the
/// architecture a config names, before any network is built).
pub fn check_ensemble_layers(ensemble: &[usize], layers: usize, network: &str) -> Result<()> {
    if let Some(bad) = ensemble.iter().find(|&&l| l >= layers) {
        return Err(Error::Config(format!(
            "ensemble layer {bad} does not exist: {network} has {layers} layers (0-{})",
            layers.saturating_sub(1)
        )));
    }
    // A layer listed twice would count twice in the average, silently.
    if let Some(twice) = first_repeat(ensemble) {
        return Err(Error::Config(format!("ensemble lists layer {twice} twice")));
    }
    Ok(())
}

/// The first item of `items` that an earlier one equals (a layer or a seed listed twice).
pub(crate) fn first_repeat<T: PartialEq>(items: &[T]) -> Option<&T> {
    items
        .iter()
        .enumerate()
        .find_map(|(i, x)| items[..i].contains(x).then_some(x))
}

impl Evaluator {
    pub fn new(layers: usize, ensemble_layers: &[usize]) -> Result<Self> {
        if ensemble_layers.is_empty() {
            return Err(Error::Config(
                "the ensemble needs at least one layer".into(),
            ));
        }
        check_ensemble_layers(ensemble_layers, layers, "the network")?;
        Ok(Evaluator {
            correct_per_layer: vec![0; layers],
            correct_ensemble: 0,
            samples: 0,
            ensemble_layers: ensemble_layers.to_vec(),
            confusion: Vec::new(),
            kept: KeptGoodness {
                layers,
                ..KeptGoodness::default()
            },
        })
    }

    /// Evaluates one batch of `images` `(n, H, W, C)` with their true `labels`.
    pub fn add_batch<B: Backend>(
        &mut self,
        net: &mut FfNet<B>,
        backend: &B,
        images: &[f32],
        labels: &[u32],
    ) -> Result<()> {
        let goodness = net.goodness_per_label(backend, images)?;
        let (classes, layers, n) = (net.config.classes, net.blocks.len(), labels.len());
        for layer in 0..layers {
            let predictions = predict(&goodness, classes, layers, n, &[layer]);
            self.correct_per_layer[layer] += predictions
                .iter()
                .zip(labels)
                .filter(|(p, y)| p == y)
                .count();
        }
        let predictions = predict(&goodness, classes, layers, n, &self.ensemble_layers);
        self.correct_ensemble += predictions
            .iter()
            .zip(labels)
            .filter(|(p, y)| p == y)
            .count();
        self.confusion.resize(classes * classes, 0);
        for (&p, &y) in predictions.iter().zip(labels) {
            self.confusion[y as usize * classes + p as usize] += 1;
        }
        self.samples += n;
        self.kept.classes = classes;
        for (i, &label) in labels.iter().enumerate() {
            if self.kept.labels.len() >= KEPT_IMAGES {
                break;
            }
            self.kept.labels.push(label);
            for c in 0..classes {
                for layer in 0..layers {
                    self.kept
                        .goodness
                        .push(goodness[(c * layers + layer) * n + i]);
                }
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Evaluation {
        let total = self.samples.max(1) as f64;
        Evaluation {
            layer_accuracy: self
                .correct_per_layer
                .iter()
                .map(|c| *c as f64 / total)
                .collect(),
            ensemble_accuracy: self.correct_ensemble as f64 / total,
            ensemble_layers: self.ensemble_layers,
            samples: self.samples,
            classes: self.kept.classes,
            confusion: self.confusion,
            kept: self.kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per class: its images, the share right, and the class most often taken instead (the
    /// lowest of equals); a class without images has no accuracy.
    #[test]
    fn per_class_reads_the_confusion_matrix() {
        // Rows: the true class; columns: the predicted one.
        let confusion = vec![
            8, 1, 1, //
            0, 3, 0, //
            0, 0, 0, //
        ];
        let eval = Evaluation {
            layer_accuracy: vec![],
            ensemble_accuracy: 11.0 / 13.0,
            ensemble_layers: vec![0],
            samples: 13,
            classes: 3,
            confusion,
            kept: KeptGoodness::default(),
        };
        let per_class = eval.per_class();
        let record = |images, accuracy, mistaken| ClassRecord {
            images,
            accuracy,
            mistaken,
        };
        assert_eq!(per_class[0], record(10, 0.8, Some((1, 1))));
        assert_eq!(per_class[1], record(3, 1.0, None));
        assert_eq!(per_class[2].images, 0);
        assert!(per_class[2].accuracy.is_nan());
    }
}
