//! The metrics log of a run: `metrics.jsonl`, one JSON object per epoch.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub layer: usize,
    /// Mean training loss over the steps where the layer updated.
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub loss: f64,
    /// Mean goodness of positives and negatives, and their difference (FF only).
    pub positive: Option<f64>,
    pub negative: Option<f64>,
    pub delta: Option<f64>,
    /// None (`null`) for an epoch without evaluation (`eval_every`).
    pub test_accuracy: Option<f64>,
    /// On the validation split (`val_split`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub lr: f64,
    pub layers: Vec<LayerRecord>,
    pub ensemble_layers: Vec<usize>,
    /// None (`null`) for an epoch without evaluation (`eval_every`).
    pub ensemble_accuracy: Option<f64>,
    /// On the validation split (`val_split`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_val_accuracy: Option<f64>,
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub train_seconds: f64,
    /// Of `train_seconds`, the time training waited for the next batch (0 in files written
    /// before it was recorded).
    #[serde(default, deserialize_with = "crate::json::f64_or_nan")]
    pub data_wait_seconds: f64,
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub eval_seconds: f64,
    /// Training samples (positives) per second.
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub samples_per_second: f64,
}

/// The last record with test accuracies: the final epoch of a finished run, which is always
/// evaluated, or the last evaluated epoch of an unfinished one.
pub fn last_evaluated(records: &[EpochRecord]) -> Option<&EpochRecord> {
    records.iter().rev().find(|r| r.ensemble_accuracy.is_some())
}

/// The index of the record, and its layer, with the best validation accuracy: the first of
/// equals, in epoch order and then layer order.
fn best_val_at(records: &[EpochRecord]) -> Option<(usize, &LayerRecord)> {
    let mut best: Option<(f64, usize, &LayerRecord)> = None;
    for (i, e) in records.iter().enumerate() {
        for l in &e.layers {
            if let Some(v) = l.val_accuracy
                && best.is_none_or(|(b, ..)| v > b)
            {
                best = Some((v, i, l));
            }
        }
    }
    best.map(|(_, i, l)| (i, l))
}

/// The epoch and layer with the best validation accuracy (the first of equals): the report's
/// choice, the epoch `best.safetensors` keeps, and the one early stopping counts from.
pub fn best_val(records: &[EpochRecord]) -> Option<(&EpochRecord, &LayerRecord)> {
    best_val_at(records).map(|(i, l)| (&records[i], l))
}

/// The record of [`best_val`], and how many records with validation accuracies came after it.
pub fn since_best_val(records: &[EpochRecord]) -> Option<(u64, &EpochRecord)> {
    let (i, _) = best_val_at(records)?;
    let evaluated = |r: &&EpochRecord| r.layers.iter().any(|l| l.val_accuracy.is_some());
    let after = records[i + 1..].iter().filter(evaluated).count();
    Some((after as u64, &records[i]))
}

/// Whether a run with these records has stopped early: `patience` evaluations in a row
/// without a better validation accuracy (never with patience 0).
pub fn stopped_early(records: &[EpochRecord], patience: u64) -> bool {
    patience > 0 && since_best_val(records).is_some_and(|(since, _)| since >= patience)
}

pub fn append(path: &Path, record: &EpochRecord) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    // One write of the whole line: `writeln!` writes the newline separately.
    let line = serde_json::to_string(record).expect("a record always serialises") + "\n";
    file.write_all(line.as_bytes())
        .map_err(|e| Error::io(path, e))
}

/// Every record of a metrics file. A last line without its newline that does not parse is a
/// write cut short (a full disk, a kill): it is left out, as the epoch it began is not
/// checkpointed (the record is written first) and a resumed run trains it again. Any other
/// bad line is an error naming it.
pub fn read(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<&str> = text.lines().collect();
    let torn = !text.ends_with('\n');
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .filter_map(|(i, line)| match serde_json::from_str(line) {
            Ok(record) => Some(Ok(record)),
            Err(_) if torn && i + 1 == lines.len() => None,
            Err(e) => Some(Err(Error::data(path, format!("line {}: {e}", i + 1)))),
        })
        .collect()
}

/// Keeps only the records of epochs up to `epoch` (after a resume), rewriting atomically.
/// Returns the records kept (none if there is no file).
pub fn truncate_after(path: &Path, epoch: u64) -> Result<Vec<EpochRecord>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut kept = read(path)?;
    kept.retain(|r| r.epoch <= epoch);
    let lines: Vec<String> = kept
        .iter()
        .map(|r| serde_json::to_string(r).expect("a record always serialises") + "\n")
        .collect();
    super::checkpoint::write_atomic(path, lines.concat().as_bytes())?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `epoch` with these validation accuracies per layer (none: not evaluated).
    fn record(epoch: u64, val: &[Option<f64>]) -> EpochRecord {
        let layers = val
            .iter()
            .enumerate()
            .map(|(layer, &v)| LayerRecord {
                layer,
                loss: 0.5,
                positive: None,
                negative: None,
                delta: None,
                test_accuracy: v,
                val_accuracy: v,
            })
            .collect();
        EpochRecord {
            epoch,
            lr: 1e-3,
            layers,
            ensemble_layers: vec![1],
            ensemble_accuracy: None,
            ensemble_val_accuracy: None,
            train_seconds: 1.0,
            data_wait_seconds: 0.0,
            eval_seconds: 1.0,
            samples_per_second: 1.0,
        }
    }

    /// The best is the first of equals over any layer; epochs not evaluated do not count.
    #[test]
    fn early_stopping_counts_evaluations_since_the_best() {
        let records = [
            record(1, &[Some(0.2), Some(0.5)]),
            record(2, &[Some(0.6), Some(0.3)]),
            record(3, &[None, None]),
            record(4, &[Some(0.6), Some(0.1)]),
            record(5, &[Some(0.4), Some(0.5)]),
        ];
        let (since, best) = since_best_val(&records).unwrap();
        assert_eq!((since, best.epoch), (2, 2));
        assert!(stopped_early(&records, 2));
        assert!(!stopped_early(&records, 3));
        assert!(!stopped_early(&records, 0));
        assert!(since_best_val(&records[2..3]).is_none());
    }
}
