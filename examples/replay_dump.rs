//! One epoch of the Trifecta on MNIST or Fashion-MNIST, written out so that
//! `scripts/pytorch_replay.py` can train the same semantics in PyTorch from the same start on
//! the same batches. Seed-to-seed spread after an epoch is several points, so comparing runs
//! of the two implementations seed by seed says little; this takes the random draws out of
//! the comparison and leaves only the arithmetic.
//!
//! Settings are the README's MNIST ones: `small` at width 0.25, batch 128, no augmentation.
//! Writes to OUT_DIR:
//! - `init.safetensors`: every parameter at initialisation (PyTorch names and layouts,
//!   flattened);
//! - `stream.safetensors`: the epoch's shuffled `order` of the training images, the `negative`
//!   label of each, our `losses` as rows (step, block, loss, mean positive goodness, mean
//!   negative goodness), and the `batch` size and `width`;
//! - `after.safetensors`: every parameter and BatchNorm running statistic after the epoch.
//!
//! ```sh
//! cargo run --release --example replay_dump -- fashion-mnist ../shared/datasets/fashion-mnist 0 /tmp/replay
//! python scripts/pytorch_replay.py /tmp/replay ../shared/datasets/fashion-mnist --fashion
//! ```

use anyhow::{Context, bail};
use std::path::PathBuf;
use trifecta::backend::cpu::Cpu;
use trifecta::data::{DatasetKind, loader::epoch_rng, wrong_labels};
use trifecta::layers::Saved;
use trifecta::run::{build_net, checkpoint::save_vectors, config::PartialConfig, load_data};

const BATCH: usize = 128;
const WIDTH: f64 = 0.25;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dataset, data_dir, seed, out] = args.as_slice() else {
        bail!("usage: replay_dump mnist|fashion-mnist DATA_DIR SEED OUT_DIR");
    };
    let dataset = match dataset.as_str() {
        "mnist" => DatasetKind::Mnist,
        "fashion-mnist" => DatasetKind::FashionMnist,
        other => bail!("dataset '{other}': expected mnist or fashion-mnist"),
    };
    let seed: u64 = seed
        .parse()
        .with_context(|| format!("seed '{seed}' is not a whole number"))?;
    let out = PathBuf::from(out);
    let config = PartialConfig {
        dataset: Some(dataset),
        data_dir: Some(data_dir.into()),
        width: Some(WIDTH),
        batch_size: Some(BATCH),
        augment: Some(false),
        seed: Some(seed),
        ..Default::default()
    }
    .resolve()?;
    let cpu = Cpu::new(0)?;
    let train = load_data(&config)?.train;
    let mut net = build_net(&cpu, &config, &train)?;
    let params = |net: &trifecta::ff::FfNet<Cpu>| -> anyhow::Result<Vec<(String, Vec<f32>)>> {
        net.named_params()
            .into_iter()
            .map(|(name, p)| Ok((name, p.to_torch(&cpu)?)))
            .collect()
    };
    std::fs::create_dir_all(&out).with_context(|| format!("{}", out.display()))?;
    save_vectors(&out.join("init.safetensors"), &params(&net)?)?;

    // The draws of `data::loader::with_epoch_batches` for epoch 1, in its order: the
    // shuffle, then per batch its negatives (no augmentation draws).
    let mut rng = epoch_rng(seed, 1);
    let mut order: Vec<usize> = (0..train.len()).collect();
    rng.shuffle(&mut order);
    let (mut negatives, mut losses) = (Vec::new(), Vec::new());
    for (step, indices) in order.chunks(BATCH).enumerate() {
        let (images, positive) = train.batch(indices, None);
        let negative = wrong_labels(&positive, train.classes, &mut rng);
        let metrics = net.train_step(&cpu, &images, &positive, &negative)?;
        for (block, m) in metrics.iter().enumerate() {
            if let Some(m) = m {
                losses.extend([step as f32, block as f32, m.loss, m.positive, m.negative]);
            }
        }
        negatives.extend(negative.iter().map(|&v| v as f32));
    }
    let mut after = params(&net)?;
    for (name, buffer) in net.named_buffers_mut() {
        after.push((name, buffer.to_host(&cpu)?));
    }
    save_vectors(&out.join("after.safetensors"), &after)?;
    let stream = [
        ("order", order.iter().map(|&i| i as f32).collect()),
        ("negative", negatives),
        ("losses", losses),
        ("batch", vec![BATCH as f32]),
        ("width", vec![WIDTH as f32]),
    ];
    let stream: Vec<(String, Vec<f32>)> = stream.into_iter().map(|(k, v)| (k.into(), v)).collect();
    save_vectors(&out.join("stream.safetensors"), &stream)?;
    println!("wrote {}", out.display());
    Ok(())
}
