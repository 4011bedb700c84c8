//! The IDX format of MNIST and Fashion-MNIST, raw or gzipped: a big-endian header (magic
//! 0x0000_08_0D: unsigned bytes, D dimensions; then D u32 sizes) followed by the bytes.

use super::{Dataset, Split, check_labels};
use crate::error::{Error, Result};
use crate::ff::ImageShape;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// An IDX array of unsigned bytes.
#[derive(Debug)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads a whole file, un-gzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

pub fn parse(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(Error::data(
            path,
            format!("truncated IDX file: {} bytes, no header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(Error::data(
            path,
            format!(
                "not an IDX file of unsigned bytes: magic {:02x}{:02x}{:02x}{:02x}, expected 000008xx",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(Error::data(
            path,
            format!("truncated IDX header ({ndim} dimensions)"),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected: usize = dims.iter().product();
    let body = &bytes[header..];
    if body.len() != expected {
        return Err(Error::data(
            path,
            format!(
                "IDX dimensions {dims:?} need {expected} data bytes, the file has {}{}",
                body.len(),
                if body.len() < expected {
                    " (truncated)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

pub fn read(path: &Path) -> Result<IdxArray> {
    parse(path, &read_maybe_gz(path)?)
}

/// Finds `stem` or `stem.gz` in `dir`.
fn find(dir: &Path, stem: &str) -> Result<std::path::PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    let plain = dir.join(stem);
    if gz.exists() {
        Ok(gz)
    } else if plain.exists() {
        Ok(plain)
    } else {
        Err(Error::data(&gz, "file not found (nor without .gz)"))
    }
}

/// The IDX file names of a split: (images, labels).
pub fn file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// Images and labels from two parsed IDX arrays.
pub fn dataset(
    images_path: &Path,
    images: IdxArray,
    labels_path: &Path,
    labels: IdxArray,
) -> Result<Dataset> {
    if images.dims.len() != 3 {
        return Err(Error::data(
            images_path,
            format!("expected 3 dimensions (N, H, W), got {:?}", images.dims),
        ));
    }
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        return Err(Error::data(
            labels_path,
            format!(
                "expected {} labels to match the images, got dimensions {:?}",
                images.dims[0], labels.dims
            ),
        ));
    }
    let labels: Vec<u32> = labels.data.iter().map(|&v| v as u32).collect();
    check_labels(labels_path, &labels, 10)?;
    let shape = ImageShape {
        channels: 1,
        height: images.dims[1],
        width: images.dims[2],
    };
    Ok(Dataset::new(shape, 10, images.data, labels))
}

/// One split of MNIST or Fashion-MNIST from the official IDX files (optionally `.gz`) in `dir`.
pub fn load_split(dir: &Path, split: Split) -> Result<Dataset> {
    let (images_name, labels_name) = file_names(split);
    let images_path = find(dir, images_name)?;
    let labels_path = find(dir, labels_name)?;
    let images = read(&images_path)?;
    let labels = read(&labels_path)?;
    dataset(&images_path, images, &labels_path, labels)
}
