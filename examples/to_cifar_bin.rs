//! Writes a 32x32 RGB dataset that `trifecta` reads (e.g. the JPEG copy of CIFAR-10, read as an
//! image folder) in CIFAR-10's binary format, `cifar-10-batches-bin/` under the output folder:
//! `data_batch_1.bin` to `data_batch_5.bin` hold the training split in five equal parts (in
//! the order read), `test_batch.bin` the test split. For running `scripts/pytorch_step.py
//! --cifar` on the same pixels that `trifecta` trains on (`trifecta` reads the output too, as
//! `--dataset cifar10`):
//!
//! ```sh
//! cargo run --release --example to_cifar_bin -- ../shared/datasets/cifar10-jpeg /tmp/cifar-jpeg
//! python scripts/pytorch_step.py --cifar /tmp/cifar-jpeg/cifar-10-batches-bin --batch-size 512 --apl
//! ```
//!
//! Keep the output outside the repository: these are the dataset's images.

use anyhow::{Context, bail};
use std::path::PathBuf;
use trifecta::data::{DatasetKind, Split, cifar, load};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(out)) = (args.next(), args.next()) else {
        bail!("usage: to_cifar_bin IMAGE_FOLDER OUT_DIR");
    };
    let dir = PathBuf::from(out).join(cifar::FOLDER);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    for split in [Split::Train, Split::Test] {
        let data = load(DatasetKind::Folder, input.as_ref(), split, false)?;
        let shape = data.shape;
        if (shape.height, shape.width, shape.channels) != (32, 32, 3) {
            bail!("{input}: images are {shape:?}, CIFAR-10's format holds 32x32 RGB");
        }
        let names = cifar::batch_names(split);
        if data.is_empty() || data.len() % names.len() != 0 {
            bail!(
                "{input}: {} images do not split into {} batches",
                data.len(),
                names.len()
            );
        }
        // One record per image: the label byte, then the red, green and blue planes.
        let mut bytes = Vec::with_capacity(data.len() * cifar::RECORD);
        for i in 0..data.len() {
            bytes.push(u8::try_from(data.labels[i]).context("label above 255")?);
            let image = data.image(i);
            for c in 0..3 {
                bytes.extend(image.chunks_exact(3).map(|px| px[c]));
            }
        }
        for (name, part) in names.iter().zip(bytes.chunks(bytes.len() / names.len())) {
            let path = dir.join(name);
            std::fs::write(&path, part).with_context(|| format!("{}", path.display()))?;
            println!("{}: {} images", path.display(), part.len() / cifar::RECORD);
        }
    }
    Ok(())
}
