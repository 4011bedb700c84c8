//! CIFAR-10, binary version: `cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`, each a
//! sequence of 3073-byte records (1 label byte, then 1024 red, 1024 green and 1024 blue bytes,
//! row-major). Read from that folder, or straight from the official `cifar-10-binary.tar.gz`.

use super::{Dataset, Split, check_labels};
use crate::error::{Error, Result};
use crate::ff::ImageShape;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const ARCHIVE: &str = "cifar-10-binary.tar.gz";
pub const FOLDER: &str = "cifar-10-batches-bin";
/// Bytes of one record: the label, then the three 1024-byte planes.
pub const RECORD: usize = 3073;
const PIXELS: usize = 1024;

pub fn batch_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    }
}

/// Appends the records of one batch file (CHW planes) to `pixels` (HWC) and `labels`.
pub fn parse_records(
    path: &Path,
    bytes: &[u8],
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(Error::data(
            path,
            format!(
                "size {} bytes is not a positive multiple of the {RECORD}-byte CIFAR-10 record",
                bytes.len()
            ),
        ));
    }
    let first = labels.len();
    for record in bytes.chunks_exact(RECORD) {
        labels.push(record[0] as u32);
        let planes = &record[1..];
        for p in 0..PIXELS {
            pixels.extend_from_slice(&[planes[p], planes[PIXELS + p], planes[2 * PIXELS + p]]);
        }
    }
    check_labels(path, &labels[first..], 10)
}

fn dataset(pixels: Vec<u8>, labels: Vec<u32>) -> Dataset {
    let shape = ImageShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    Dataset::new(shape, 10, pixels, labels)
}

/// The batch folder: `dir/cifar-10-batches-bin`, or `dir` itself when it holds the batches.
fn folder(dir: &Path) -> Option<PathBuf> {
    [dir.join(FOLDER), dir.to_path_buf()]
        .into_iter()
        .find(|d| d.join("test_batch.bin").exists())
}

pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    if let Some(folder) = folder(dir) {
        for name in batch_names(split) {
            let path = folder.join(&name);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            parse_records(&path, &bytes, &mut pixels, &mut labels)?;
        }
        return Ok(dataset(pixels, labels));
    }
    let archive = dir.join(ARCHIVE);
    if !archive.exists() {
        return Err(Error::data(
            dir,
            format!(
                "no CIFAR-10 here: expected {FOLDER}/ or {ARCHIVE} (try `trifecta data download --dataset cifar10`)"
            ),
        ));
    }
    let file = std::fs::File::open(&archive).map_err(|e| Error::io(&archive, e))?;
    let mut tar = tar::Archive::new(GzDecoder::new(file));
    let wanted = batch_names(split);
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| Error::data(&archive, format!("not a tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::data(&archive, format!("corrupt archive: {e}")))?;
        let name = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        if wanted.contains(&name) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| Error::data(&archive, format!("corrupt archive entry {name}: {e}")))?;
            found.push((name, bytes));
        }
    }
    for name in &wanted {
        let (_, bytes) = found
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| Error::data(&archive, format!("archive has no {name}")))?;
        parse_records(&archive.join(name), bytes, &mut pixels, &mut labels)?;
    }
    Ok(dataset(pixels, labels))
}
