//! Checkpoints: one safetensors file with every parameter (PyTorch names and layouts, so that
//! PyTorch can read them), the BatchNorm running statistics and the Adam moments (an FF
//! network's `checkpoint.safetensors`, a baseline's `weights.safetensors`), plus a JSON
//! header in its metadata (format, epoch, iteration, Adam step counts, the run's config). A
//! copy of the header is written beside it as `checkpoint.json` for people. Files are written
//! to a temporary name and renamed, so a crash never leaves a half-written checkpoint.

use super::config::TrainConfig;
use crate::backend::Backend;
use crate::baselines::Model;
use crate::error::{Error, Result};
pub use crate::layers::Saved;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "trifecta-checkpoint-1";
const HEADER_KEY: &str = "trifecta";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    /// Epochs completed.
    pub epoch: u64,
    /// Training iterations completed (decides the APL phase).
    pub iteration: u64,
    /// Adam step counts per block: [previous group, own group].
    pub adam_steps: Vec<[u64; 2]>,
    pub config: TrainConfig,
    /// A run stopped in the middle of epoch `epoch + 1` (`progress.safetensors`): how far
    /// that epoch got. Absent in an epoch's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialEpoch>,
    /// The images the network takes and what its labels mean (`trifecta predict` reads
    /// them); absent in checkpoints written before it was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<crate::data::InputSpec>,
}

/// The part of an epoch trained before a stop: its steps and their statistics (sums).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    pub steps_done: usize,
    pub stats: crate::ff::train::EpochStats,
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    // On the disk before the rename makes it the file: after a crash the name holds the old
    // bytes or the new ones, never a file the rename got ahead of.
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        // A partial copy (a full disk) is not left to fill it further.
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Serialises named f32 tensors with a metadata map.
fn serialize(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("shape and byte count agree");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Saves `net` to `path` (and the header to `path` with extension `.json`).
pub fn save<B: Backend, N: Saved<B>>(
    path: &Path,
    net: &mut N,
    backend: &B,
    header: &Header,
) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, param) in net.named_params_mut() {
        tensors.push((
            name,
            param.torch_shape.clone(),
            to_bytes(&param.to_torch(backend)?),
        ));
    }
    for (name, buffer) in net.named_buffers_mut() {
        tensors.push((
            name,
            buffer.shape.clone(),
            to_bytes(&buffer.to_host(backend)?),
        ));
    }
    for (name, buffer) in net.named_optimizer_buffers_mut() {
        let values = backend.download(buffer)?;
        tensors.push((name, vec![values.len()], to_bytes(&values)));
    }
    let json = serde_json::to_string(header).expect("a header always serialises");
    let bytes = serialize(
        path,
        &tensors,
        HashMap::from([(HEADER_KEY.to_string(), json)]),
    )?;
    write_atomic(path, &bytes)?;
    let pretty = serde_json::to_string_pretty(header).expect("a header always serialises");
    write_atomic(&path.with_extension("json"), pretty.as_bytes())
}

/// Reads only the header of an FF checkpoint.
pub fn read_header(path: &Path) -> Result<Header> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    header_of(path, &bytes, Some(true))
}

/// Reads only the header of a baseline's `weights.safetensors`.
pub fn read_weights_header(path: &Path) -> Result<Header> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    header_of(path, &bytes, Some(false))
}

/// Reads only the header of an FF checkpoint or a baseline's weights, whichever `path` is.
pub fn read_any_header(path: &Path) -> Result<Header> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    header_of(path, &bytes, None)
}

/// The header of `bytes`, which must be an FF checkpoint (`ff` true) or a baseline's weights
/// (false), or either (None).
fn header_of(path: &Path, bytes: &[u8], ff: Option<bool>) -> Result<Header> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        bad(format!(
            "not a checkpoint ({e}): pass a run folder or the .safetensors file train wrote"
        ))
    })?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(HEADER_KEY))
        .ok_or_else(|| bad("no trifecta header: not a trifecta checkpoint".into()))?;
    const BASELINE: &str = "holds a baseline (bp/lcp) model's weights, not an FF checkpoint";
    let header: Header = serde_json::from_str(json).map_err(|e| {
        // Baselines' weights used to carry a header of their own: the epoch and the config.
        let old_baseline = serde_json::from_str::<serde_json::Value>(json)
            .is_ok_and(|v| v.get("config").is_some() && v.get("format").is_none());
        match (old_baseline, ff) {
            (true, Some(true)) => bad(BASELINE.into()),
            (true, _) => bad(
                "a baseline's weights from an earlier trifecta, without BatchNorm's running \
                 statistics or Adam's state: it cannot be evaluated, predicted with or resumed \
                 (train the run again)"
                    .into(),
            ),
            (false, _) => bad(format!("unreadable header: {e}")),
        }
    })?;
    if header.format != FORMAT {
        return Err(bad(format!("format {} is not {FORMAT}", header.format)));
    }
    match (header.config.model == Model::Ff, ff) {
        (false, Some(true)) => Err(bad(BASELINE.into())),
        (true, Some(false)) => Err(bad(
            "holds an FF checkpoint, not a baseline (bp/lcp) model's weights".into(),
        )),
        _ => Ok(header),
    }
}

/// Loads every tensor of the checkpoint at `path` into `net`, which must have the same
/// architecture; returns the header.
pub fn load<B: Backend, N: Saved<B>>(path: &Path, net: &mut N, backend: &B) -> Result<Header> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let header = header_of(path, &bytes, Some(N::FF))?;
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let view = file.tensor(name).map_err(|_| {
            bad(format!(
                "has no tensor {name}: it was saved from a different architecture"
            ))
        })?;
        if view.shape() != shape || view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!(
                "{name} has shape {:?} ({:?}), the model expects {shape:?} (F32): a different architecture",
                view.shape(),
                view.dtype()
            )));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect())
    };
    let expected = net.named_params_mut().len()
        + net.named_buffers_mut().len()
        + net.named_optimizer_buffers_mut().len();
    if file.len() != expected {
        return Err(bad(format!(
            "holds {} tensors, the model has {expected}: a different architecture",
            file.len()
        )));
    }
    for (name, param) in net.named_params_mut() {
        let values = read(&name, &param.torch_shape.clone())?;
        param.load_torch(backend, &values)?;
    }
    for (name, buffer) in net.named_buffers_mut() {
        let values = read(&name, &buffer.shape.clone())?;
        backend.write(&mut buffer.buf, &values)?;
    }
    for (name, buffer) in net.named_optimizer_buffers_mut() {
        let values = read(&name, &[B::len(buffer)])?;
        backend.write(buffer, &values)?;
    }
    net.set_optimizer_steps(&header.adam_steps)?;
    *net.iteration_mut() = header.iteration;
    Ok(header)
}

/// Writes named f32 vectors (no metadata), atomically.
pub fn save_vectors(path: &Path, vectors: &[(String, Vec<f32>)]) -> Result<()> {
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = vectors
        .iter()
        .map(|(name, v)| (name.clone(), vec![v.len()], to_bytes(v)))
        .collect();
    let bytes = serialize(path, &tensors, HashMap::new())?;
    write_atomic(path, &bytes)
}

/// Reads named f32 tensors (flattened) from a safetensors file.
pub fn load_vectors(path: &Path) -> Result<Vec<(String, Vec<f32>)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("not a safetensors file: {e}"),
    })?;
    let mut out: Vec<(String, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(name, v)| {
            (
                name,
                v.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
