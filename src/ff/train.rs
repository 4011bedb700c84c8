//! Epoch loops: shuffled mini-batches with freshly drawn negatives (prepared ahead on another
//! thread), per-layer training statistics, and batched evaluation.

use super::eval::{Evaluation, Evaluator};
use super::net::{FfNet, StepMetrics};
use crate::backend::Backend;
use crate::data::Dataset;
use crate::data::augment::Augment;
use crate::data::loader::{Waited, with_epoch_batches, with_eval_batches};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Mean training statistics of one layer over an epoch (over the steps where it updated); sums
/// while the epoch runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub loss: f64,
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub positive: f64,
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub negative: f64,
    pub updates: usize,
}

impl LayerStats {
    pub fn delta(&self) -> f64 {
        self.positive - self.negative
    }
}

/// An epoch's training statistics: the means once it is over; while it runs, the sums so far
/// (what a run stopped mid-epoch keeps, to go on from).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub layers: Vec<LayerStats>,
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub seconds: f64,
    /// Of `seconds`, the time the training loop waited for the next batch (the feeder thread
    /// not keeping up).
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
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

/// Where an epoch stands after a step, for [`train_epoch`]'s `after_step`.
pub struct StepDone<'a> {
    /// Steps of the epoch done, this one included.
    pub steps_done: usize,
    /// Steps in the epoch.
    pub steps: usize,
    pub metrics: &'a StepMetrics,
    /// The epoch's statistics so far (sums, and seconds so far across every process that
    /// trained it): with `steps_done`, what resuming the epoch needs.
    pub stats: &'a EpochStats,
}

/// Epoch `epoch` (1-based) of a run seeded with `seed`: one pass over `data` in shuffled
/// batches of `batch_size` positives (the last may be smaller), prepared on another thread.
/// `after_step(net, done)` runs after each step and may stop the epoch (returning true), which
/// then returns None. With `resume`, `(steps done, their statistics)` of an epoch stopped
/// that way: its batches are drawn again (the same ones) and those steps skipped, so the
/// epoch ends as it would have without the stop.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch<B: Backend>(
    net: &mut FfNet<B>,
    backend: &B,
    data: &Dataset,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    augment: Option<Augment>,
    resume: Option<(usize, EpochStats)>,
    mut after_step: impl FnMut(&mut FfNet<B>, StepDone) -> Result<bool>,
) -> Result<Option<EpochStats>> {
    if batch_size == 0 {
        return Err(Error::Config("batch size must be at least 1".into()));
    }
    let start = Instant::now();
    let (skip, mut stats) = resume.unwrap_or_else(|| {
        let stats = EpochStats {
            layers: vec![LayerStats::default(); net.blocks.len()],
            seconds: 0.0,
            data_wait_seconds: 0.0,
            samples: 0,
        };
        (0, stats)
    });
    let (seconds_before, wait_before) = (stats.seconds, stats.data_wait_seconds);
    let finished = with_epoch_batches(
        data,
        batch_size,
        seed,
        epoch,
        augment,
        skip,
        |steps, batches| -> Result<bool> {
            let mut waited = Waited::new(batches);
            // Each step uploads the next step's images behind its own work.
            let mut staged = false;
            let mut steps_done = skip;
            let mut current = waited.next();
            while let Some(batch) = current {
                let upcoming = waited.next();
                let next = upcoming.as_ref().map(|b| b.images.as_slice());
                let images = (!staged).then_some(batch.images.as_slice());
                let metrics =
                    net.train_step_ahead(backend, images, &batch.positive, &batch.negative, next)?;
                staged = next.is_some();
                stats.add(&metrics);
                stats.samples += batch.positive.len();
                steps_done += 1;
                stats.seconds = seconds_before + start.elapsed().as_secs_f64();
                stats.data_wait_seconds = wait_before + waited.seconds;
                let done = StepDone {
                    steps_done,
                    steps,
                    metrics: &metrics,
                    stats: &stats,
                };
                if after_step(net, done)? {
                    return Ok(false);
                }
                current = upcoming;
            }
            Ok(true)
        },
    )?;
    backend.synchronize()?;
    if !finished {
        return Ok(None);
    }
    stats.finish();
    stats.seconds = seconds_before + start.elapsed().as_secs_f64();
    Ok(Some(stats))
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
            // A training run's Ctrl-C need not wait for the whole evaluation.
            crate::interrupt::check(|| "during an evaluation".into())?;
            evaluator.add_batch(net, backend, &images, &labels)?;
        }
        Ok(())
    })?;
    Ok(evaluator.finish())
}
