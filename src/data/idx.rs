//! The IDX format of MNIST and Fashion-MNIST, raw or gzipped: a big-endian header (magic
//! 0x0000_08_0D: unsigned bytes, D dimensions; then D u32 sizes) followed by the bytes.

use crate::error::{Error, Result};
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
