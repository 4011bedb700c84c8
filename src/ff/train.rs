//! Epoch loops: shuffled mini-batches with freshly drawn negatives (prepared ahead on another
//! thread), per-layer training statistics, and batched evaluation.

use super::eval::{Evaluation, Evaluator};
use super::net::{FfNet, StepMetrics};
use crate::backend::Backend;
use crate::data::Dataset;
use crate::data::augment::Augment;
use crate::data::loader::{Waited, with_epoch_batches, with_eval_batches};
use crate::error::{Error, Result};
use std::time::Instant;

/// Mean training statistics of one layer over an epoch (over the steps where it updated).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerStats {
    pub loss: f64,
    pub positive: f64,
    pub negative: f64,
    pub updates: usize,
}

impl LayerStats {
    pub fn delta(&self) -> f64 {
        self.positive - self.negative
    }
}

#[derive(Clone, Debug)]
pub struct EpochStats {
    pub layers: Vec<LayerStats>,
    pub seconds: f64,
    /// Of `seconds`, the time the training loop waited for the next batch (the feeder thread
    /// not keeping up).
    pub data_wait_seconds: f64,
    /// Positive samples seen.
    pub samples: usize,
}

impl EpochStats {
    fn add(&mut self, step: &StepMetrics) {
        for (stats, metrics) in self.layers.iter_mut().zip(step) {
            if let Some(m) = metrics {
                stats.loss += m.loss as f64;
                stats.positive += m.positive as f64;
                stats.negative += m.negative as f64;
                stats.updates += 1;
            }
        }
    }

    fn finish(&mut self) {
        for s in &mut self.layers {
            let k = s.updates.max(1) as f64;
            s.loss /= k;
            s.positive /= k;
            s.negative /= k;
        }
    }
}

/// Epoch `epoch` (1-based) of a run seeded with `seed`: one pass over `data` in shuffled
/// batches of `batch_size` positives (the last may be smaller), prepared on another thread.
/// `on_step(step, steps, metrics)` is called after each step.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch<B: Backend>(
    net: &mut FfNet<B>,
    backend: &B,
    data: &Dataset,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    augment: Option<Augment>,
    mut on_step: impl FnMut(usize, usize, &StepMetrics),
) -> Result<EpochStats> {
    if batch_size == 0 {
        return Err(Error::Config("batch size must be at least 1".into()));
    }
    let start = Instant::now();
    let mut stats = EpochStats {
        layers: vec![LayerStats::default(); net.blocks.len()],
        seconds: 0.0,
        data_wait_seconds: 0.0,
        samples: 0,
    };
    with_epoch_batches(
        data,
        batch_size,
        seed,
        epoch,
        augment,
        |steps, batches| -> Result<()> {
            let mut waited = Waited::new(batches);
            let mut batches = waited.by_ref().peekable();
            // Each step uploads the next step's images behind its own work.
            let mut staged = false;
            let mut step = 0;
            while let Some(batch) = batches.next() {
                let next = batches.peek().map(|b| b.images.as_slice());
                let images = (!staged).then_some(batch.images.as_slice());
                let metrics =
                    net.train_step_ahead(backend, images, &batch.positive, &batch.negative, next)?;
                staged = next.is_some();
                stats.add(&metrics);
                stats.samples += batch.positive.len();
                on_step(step, steps, &metrics);
                step += 1;
            }
            drop(batches);
            stats.data_wait_seconds = waited.seconds;
            Ok(())
        },
    )?;
    backend.synchronize()?;
    stats.finish();
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(stats)
}

/// Accuracy of every layer and of the ensemble over `ensemble_layers`, with the next batch
/// prepared on another thread while one is evaluated.
pub fn evaluate<B: Backend>(
    net: &mut FfNet<B>,
    backend: &B,
    data: &Dataset,
    batch_size: usize,
    ensemble_layers: &[usize],
) -> Result<Evaluation> {
    let mut evaluator = Evaluator::new(net.blocks.len(), ensemble_layers)?;
    with_eval_batches(data, batch_size, |batches| -> Result<()> {
        for (images, labels) in batches {
            evaluator.add_batch(net, backend, &images, &labels)?;
        }
        Ok(())
    })?;
    Ok(evaluator.finish())
}
