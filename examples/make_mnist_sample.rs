//! Writes `assets/mnist-sample/`: the first 4,000 training and 1,000 test images of MNIST, as
//! gzipped IDX files. Usage: `cargo run --example make_mnist_sample -- ../shared/datasets/mnist`.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::path::Path;

fn cut(src: &Path, dst: &Path, keep: usize) {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(src).expect("readable file"))
        .read_to_end(&mut bytes)
        .expect("gzipped IDX file");
    let ndim = bytes[3] as usize;
    let mut header = bytes[..4 + 4 * ndim].to_vec();
    header[4..8].copy_from_slice(&(keep as u32).to_be_bytes());
    let item: usize = (1..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .product();
    let body = &bytes[4 + 4 * ndim..][..keep * item];
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&header).unwrap();
    gz.write_all(body).unwrap();
    std::fs::write(dst, gz.finish().unwrap()).unwrap();
}

fn main() {
    let src = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/datasets/mnist".into());
    let src = Path::new(&src);
    let dst = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/mnist-sample");
    std::fs::create_dir_all(&dst).unwrap();
    for (name, keep) in [
        ("train-images-idx3-ubyte", 4000),
        ("train-labels-idx1-ubyte", 4000),
        ("t10k-images-idx3-ubyte", 1000),
        ("t10k-labels-idx1-ubyte", 1000),
    ] {
        cut(
            &src.join(format!("{name}.gz")),
            &dst.join(format!("{name}.gz")),
            keep,
        );
    }
}
