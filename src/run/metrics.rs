//! The metrics log of a run: `metrics.jsonl`, one JSON object per epoch.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub layer: usize,
    /// Mean training loss over the steps where the layer updated.
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
    pub lr: f64,
    pub layers: Vec<LayerRecord>,
    pub ensemble_layers: Vec<usize>,
    /// None (`null`) for an epoch without evaluation (`eval_every`).
    pub ensemble_accuracy: Option<f64>,
    /// On the validation split (`val_split`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_val_accuracy: Option<f64>,
    pub train_seconds: f64,
    /// Of `train_seconds`, the time training waited for the next batch (0 in files written
    /// before it was recorded).
    #[serde(default)]
    pub data_wait_seconds: f64,
    pub eval_seconds: f64,
    /// Training samples (positives) per second.
    pub samples_per_second: f64,
}

/// The last record with test accuracies: the final epoch of a finished run, which is always
/// evaluated, or the last evaluated epoch of an unfinished one.
pub fn last_evaluated(records: &[EpochRecord]) -> Option<&EpochRecord> {
    records.iter().rev().find(|r| r.ensemble_accuracy.is_some())
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
pub fn truncate_after(path: &Path, epoch: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let kept: Vec<String> = read(path)?
        .iter()
        .filter(|r| r.epoch <= epoch)
        .map(|r| serde_json::to_string(r).expect("a record always serialises") + "\n")
        .collect();
    super::checkpoint::write_atomic(path, kept.concat().as_bytes())
}
