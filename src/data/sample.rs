//! A small MNIST built into the binary, so that `trifecta train` runs with no data at all:
//! the first 4,000 training and first 1,000 test images of the real MNIST, as gzipped IDX files
//! made by `cargo run --example make_mnist_sample`.

use super::{Dataset, Split, idx};
use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

const TRAIN_IMAGES: &[u8] = include_bytes!("../../assets/mnist-sample/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../assets/mnist-sample/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../assets/mnist-sample/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../assets/mnist-sample/t10k-labels-idx1-ubyte.gz");

fn parse(name: &str, gz: &[u8]) -> Result<idx::IdxArray> {
    let path = Path::new("<built-in mnist-sample>").join(name);
    let mut bytes = Vec::new();
    GzDecoder::new(gz)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::data(&path, format!("corrupt gzip stream: {e}")))?;
    idx::parse(&path, &bytes)
}

pub fn load(split: Split) -> Result<Dataset> {
    let (images, labels) = match split {
        Split::Train => (TRAIN_IMAGES, TRAIN_LABELS),
        Split::Test => (TEST_IMAGES, TEST_LABELS),
    };
    let (images_name, labels_name) = idx::file_names(split);
    let base = Path::new("<built-in mnist-sample>");
    idx::dataset(
        &base.join(images_name),
        parse(images_name, images)?,
        &base.join(labels_name),
        parse(labels_name, labels)?,
    )
}
