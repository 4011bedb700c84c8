//! SVHN cropped digits: the MATLAB v5 files `train_32x32.mat` and `test_32x32.mat`, holding
//! `X` (32 x 32 x 3 x N, uint8, column-major) and `y` (N x 1), where label 10 means digit 0.

use super::{Dataset, Split, check_labels};
use crate::error::{Error, Result};
use crate::ff::ImageShape;
use matfile::NumericData;
use std::path::Path;

pub fn file_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train_32x32.mat",
        Split::Test => "test_32x32.mat",
    }
}

fn numbers(path: &Path, name: &str, data: &NumericData) -> Result<Vec<f64>> {
    Ok(match data {
        NumericData::UInt8 { real, .. } => real.iter().map(|v| *v as f64).collect(),
        NumericData::Double { real, .. } => real.clone(),
        NumericData::Single { real, .. } => real.iter().map(|v| *v as f64).collect(),
        NumericData::Int32 { real, .. } => real.iter().map(|v| *v as f64).collect(),
        NumericData::UInt16 { real, .. } => real.iter().map(|v| *v as f64).collect(),
        NumericData::Int16 { real, .. } => real.iter().map(|v| *v as f64).collect(),
        NumericData::Int8 { real, .. } => real.iter().map(|v| *v as f64).collect(),
        other => {
            return Err(Error::data(
                path,
                format!(
                    "variable {name} has an unsupported type: {}",
                    type_name(other)
                ),
            ));
        }
    })
}

fn type_name(data: &NumericData) -> &'static str {
    match data {
        NumericData::UInt32 { .. } => "uint32",
        NumericData::Int64 { .. } => "int64",
        NumericData::UInt64 { .. } => "uint64",
        _ => "numeric",
    }
}

/// Parses the bytes of an SVHN `.mat` file.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Dataset> {
    let mat = matfile::MatFile::parse(bytes)
        .map_err(|e| Error::data(path, format!("not a readable MATLAB v5 file: {e}")))?;
    let x = mat
        .find_by_name("X")
        .ok_or_else(|| Error::data(path, "no variable X (the 32x32x3xN images)"))?;
    let y = mat
        .find_by_name("y")
        .ok_or_else(|| Error::data(path, "no variable y (the N labels)"))?;
    let dims = x.size();
    if dims.len() != 4 || dims[2] != 3 {
        return Err(Error::data(
            path,
            format!("X has shape {dims:?}, expected H x W x 3 x N"),
        ));
    }
    let (h, w, n) = (dims[0], dims[1], dims[3]);
    let raw = match x.data() {
        NumericData::UInt8 { real, .. } => real,
        other => {
            return Err(Error::data(
                path,
                format!("X must be uint8, got {}", type_name(other)),
            ));
        }
    };
    if y.size().iter().product::<usize>() != n {
        return Err(Error::data(
            path,
            format!("y has shape {:?} but X holds {n} images", y.size()),
        ));
    }
    let mut labels = Vec::with_capacity(n);
    for (i, v) in numbers(path, "y", y.data())?.iter().enumerate() {
        if v.fract() != 0.0 || *v < 1.0 || *v > 10.0 {
            return Err(Error::data(
                path,
                format!("label {v} at index {i} is out of range 1-10"),
            ));
        }
        labels.push(if *v == 10.0 { 0 } else { *v as u32 });
    }
    check_labels(path, &labels, 10)?;
    // Column-major (h, w, c, n): element (r, col, ch, i) at r + h*(col + w*(ch + 3*i)).
    let mut pixels = vec![0u8; n * h * w * 3];
    for i in 0..n {
        for ch in 0..3 {
            for col in 0..w {
                for r in 0..h {
                    pixels[((i * h + r) * w + col) * 3 + ch] =
                        raw[r + h * (col + w * (ch + 3 * i))];
                }
            }
        }
    }
    let shape = ImageShape {
        channels: 3,
        height: h,
        width: w,
    };
    Ok(Dataset::new(shape, 10, pixels, labels))
}

pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    let path = dir.join(file_name(split));
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    parse(&path, &bytes)
}
