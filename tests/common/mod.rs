//! Shared test helpers: locating `../shared`, reading safetensors, comparing with tolerances.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the project root. Missing is a hard failure: tests never skip.
pub fn shared_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(
        dir.join("golden/manifest.json").exists(),
        "../shared/golden is missing at {}: lay the shared folder beside the project root",
        dir.display()
    );
    dir
}

pub struct TensorFile {
    bytes: Vec<u8>,
}

impl TensorFile {
    pub fn open(path: &std::path::Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TensorFile { bytes }
    }

    fn view(&self, name: &str) -> Option<(Vec<usize>, safetensors::Dtype, Vec<u8>)> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("valid safetensors");
        let t = st.tensor(name).ok()?;
        Some((t.shape().to_vec(), t.dtype(), t.data().to_vec()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.view(name).is_some()
    }

    pub fn names(&self) -> Vec<String> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("valid safetensors");
        st.names().into_iter().map(|s| s.to_string()).collect()
    }

    /// An F64 tensor as (shape, f64 values).
    pub fn f64(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let (shape, dtype, data) = self
            .view(name)
            .unwrap_or_else(|| panic!("tensor {name} missing"));
        assert_eq!(dtype, safetensors::Dtype::F64, "{name}");
        let values = data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (shape, values)
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        self.f64(name).1.iter().map(|v| *v as f32).collect()
    }

    pub fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let (shape, dtype, data) = self
            .view(name)
            .unwrap_or_else(|| panic!("tensor {name} missing"));
        assert_eq!(dtype, safetensors::Dtype::I64, "{name}");
        let values = data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (shape, values)
    }
}

/// (N, C, H, W) -> (N, H, W, C).
pub fn nchw_to_nhwc(data: &[f64], n: usize, c: usize, h: usize, w: usize) -> Vec<f64> {
    let mut out = vec![0.0; data.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                out[(i * h * w + p) * c + ch] = data[(i * c + ch) * h * w + p];
            }
        }
    }
    out
}

/// Asserts |got - want| <= abs + rel * |want| elementwise, skipping elements where
/// `skip(i)`; on failure prints the worst element and the first few values.
pub fn assert_close_masked(
    what: &str,
    got: &[f32],
    want: &[f64],
    rel: f64,
    abs: f64,
    skip: &dyn Fn(usize) -> bool,
) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs golden {}",
        got.len(),
        want.len()
    );
    let mut worst: Option<(usize, f64)> = None;
    let mut max_diff = 0.0f64;
    for i in 0..got.len() {
        if skip(i) {
            continue;
        }
        let diff = (got[i] as f64 - want[i]).abs();
        max_diff = max_diff.max(diff);
        let excess = diff - (abs + rel * want[i].abs());
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        let first: Vec<String> = got
            .iter()
            .zip(want)
            .take(6)
            .map(|(g, w)| format!("{g:.6e}/{w:.6e}"))
            .collect();
        panic!(
            "{what}: element {i} is {} but golden is {} (max |diff| {max_diff:.3e}, rel {rel}, abs {abs}); first got/golden: {}",
            got[i],
            want[i],
            first.join(", ")
        );
    }
}

pub fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
    assert_close_masked(what, got, want, rel, abs, &|_| false);
}
