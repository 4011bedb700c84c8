//! Engine behaviour beyond the golden values: architecture widths, the APL schedule, layout
//! round trips, reproducibility, negatives, evaluation, and IDX parsing errors.

mod common;

use trifecta::backend::cpu::Cpu;
use trifecta::data::{idx, wrong_labels};
use trifecta::ff::{Arch, FfConfig, FfNet, ImageShape};
use trifecta::layers::ParamLayout;
use trifecta::layers::Saved;
use trifecta::rng::Rng;

const MNIST_LIKE: ImageShape = ImageShape {
    channels: 1,
    height: 12,
    width: 12,
};

#[test]
fn width_scales_every_block() {
    let c = FfConfig::trifecta(Arch::Small, 0.25, MNIST_LIKE, 10).unwrap();
    let widths: Vec<usize> = c.layers.iter().map(|l| l.0).collect();
    assert_eq!(widths, vec![32, 32, 64, 64, 64, 128]);
    let large = FfConfig::trifecta(Arch::Large, 1.0, MNIST_LIKE, 10).unwrap();
    assert_eq!(large.layers.len(), 12);
    assert!(FfConfig::trifecta(Arch::Small, 0.0, MNIST_LIKE, 10).is_err());
    assert!(FfConfig::trifecta(Arch::Small, f64::NAN, MNIST_LIKE, 10).is_err());
}

#[test]
fn too_many_pools_is_a_config_error() {
    let tiny = ImageShape {
        channels: 1,
        height: 4,
        width: 4,
    };
    let err = FfConfig::trifecta(Arch::Small, 0.25, tiny, 10)
        .unwrap()
        .block_specs()
        .unwrap_err();
    assert!(err.to_string().contains("pooled down to nothing"), "{err}");
}

#[test]
fn apl_alternates_and_off_updates_everything() {
    let mut c = FfConfig::trifecta(Arch::Small, 0.25, MNIST_LIKE, 10).unwrap();
    let even: Vec<bool> = (0..6).map(|i| c.updates(i, 0)).collect();
    let odd: Vec<bool> = (0..6).map(|i| c.updates(i, 1)).collect();
    assert_eq!(even, vec![false, true, false, true, false, true]);
    assert_eq!(odd, vec![true, false, true, false, true, false]);
    c.apl = false;
    assert!((0..6).all(|i| c.updates(i, 0) && c.updates(i, 7)));
}

#[test]
fn param_layouts_round_trip() {
    let data: Vec<f32> = (0..2 * 3 * 9).map(|v| v as f32).collect();
    let conv = ParamLayout::ConvOihw { c_out: 2, c_in: 3 };
    assert_eq!(conv.to_torch(&conv.from_torch(&data)), data);
    // OIHW element (o=1, i=2, ky=0, kx=1) lands at OHWI (1, 0, 1, 2).
    assert_eq!(
        conv.from_torch(&data)[(9 + 1) * 3 + 2],
        data[(3 + 2) * 9 + 1]
    );
    let chw = ParamLayout::Chw { c: 3, h: 2, w: 3 };
    let data: Vec<f32> = (0..18).map(|v| v as f32).collect();
    assert_eq!(chw.to_torch(&chw.from_torch(&data)), data);
}

fn train_a_few(seed: u64, threads: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    let backend = Cpu::new(threads).unwrap();
    let mut config = FfConfig::trifecta(Arch::Small, 0.125, MNIST_LIKE, 10).unwrap();
    config.layers.truncate(3);
    let mut net = FfNet::new(&backend, config, seed).unwrap();
    let mut rng = Rng::new(seed);
    let mut losses = Vec::new();
    for _ in 0..3 {
        let (images, labels, negatives) = random_batch(&mut rng);
        let metrics = net
            .train_step(&backend, &images, &labels, &negatives)
            .unwrap();
        losses.extend(metrics.iter().flatten().map(|m| m.loss));
    }
    let params = net
        .named_params()
        .iter()
        .map(|(_, p)| p.to_torch(&backend).unwrap())
        .collect();
    (params, losses)
}

/// A batch of 8 MNIST-shaped images of noise, their labels and wrong labels, drawn from `rng`
/// in that order.
fn random_batch(rng: &mut Rng) -> (Vec<f32>, Vec<u32>, Vec<u32>) {
    let images: Vec<f32> = (0..8 * MNIST_LIKE.numel()).map(|_| rng.normal()).collect();
    let labels: Vec<u32> = (0..8).map(|_| rng.below(10)).collect();
    let negatives = wrong_labels(&labels, 10, rng);
    (images, labels, negatives)
}

/// With APL the last block learns every other step; on the others its convolution is skipped
/// (nothing reads its output) and only its norm runs. That must change nothing: parameters,
/// Adam's state, BatchNorm's running statistics, the metrics and the evaluation are bit for
/// bit those of steps that compute every block (`train_step_observed`).
#[test]
fn skipping_the_idle_last_block_changes_nothing() {
    use trifecta::layers::norm::NormKind;
    let backend = Cpu::new(2).unwrap();
    for norm in [NormKind::Batch, NormKind::Layer] {
        let mut config = FfConfig::trifecta(Arch::Small, 0.125, MNIST_LIKE, 10).unwrap();
        config.layers.truncate(3);
        config.norm = norm;
        let mut skipping = FfNet::new(&backend, config.clone(), 9).unwrap();
        let mut whole = FfNet::new(&backend, config, 9).unwrap();
        let mut rng = Rng::new(9);
        for step in 0..5 {
            let (images, labels, negatives) = random_batch(&mut rng);
            let a = skipping
                .train_step(&backend, &images, &labels, &negatives)
                .unwrap();
            let b = whole
                .train_step_observed(&backend, &images, &labels, &negatives, &mut |_, _| Ok(()))
                .unwrap();
            assert_eq!(a, b, "{norm:?} step {step}");
        }
        let state = |net: &FfNet<Cpu>| -> Vec<Vec<f32>> {
            let mut all: Vec<Vec<f32>> = net
                .named_params()
                .iter()
                .map(|(_, p)| p.to_torch(&backend).unwrap())
                .collect();
            for block in &net.blocks {
                for stat in [&block.norm.running_mean, &block.norm.running_var]
                    .into_iter()
                    .flatten()
                {
                    all.push(stat.to_host(&backend).unwrap());
                }
            }
            all
        };
        assert_eq!(state(&skipping), state(&whole), "{norm:?}");
        assert_eq!(skipping.optimizer_steps(), whole.optimizer_steps());
        let test: Vec<f32> = (0..4 * MNIST_LIKE.numel()).map(|_| rng.normal()).collect();
        assert_eq!(
            skipping.goodness_per_label(&backend, &test).unwrap(),
            whole.goodness_per_label(&backend, &test).unwrap(),
            "{norm:?}"
        );
    }
}

#[test]
fn same_seed_and_threads_reproduce_exactly() {
    let (a, la) = train_a_few(3, 2);
    let (b, lb) = train_a_few(3, 2);
    assert_eq!(a, b);
    assert_eq!(la, lb);
    let (c, _) = train_a_few(4, 2);
    assert_ne!(a, c, "a different seed must give a different run");
}

#[test]
fn negatives_are_always_wrong_and_cover_every_other_label() {
    let mut rng = Rng::new(9);
    let labels: Vec<u32> = (0..5000).map(|i| (i % 10) as u32).collect();
    let negatives = wrong_labels(&labels, 10, &mut rng);
    assert!(
        labels
            .iter()
            .zip(&negatives)
            .all(|(y, n)| y != n && *n < 10)
    );
    let mut seen = [[false; 10]; 10];
    for (y, n) in labels.iter().zip(&negatives) {
        seen[*y as usize][*n as usize] = true;
    }
    for (y, row) in seen.iter().enumerate() {
        assert_eq!(row.iter().filter(|s| **s).count(), 9, "label {y}");
    }
}

#[test]
fn ensemble_must_name_existing_layers() {
    assert!(trifecta::ff::Evaluator::new(6, &[6]).is_err());
    assert!(trifecta::ff::Evaluator::new(6, &[]).is_err());
    assert!(trifecta::ff::Evaluator::new(6, &[3, 5]).is_ok());
}

#[test]
fn prediction_is_argmax_of_summed_goodness() {
    // goodness[label][layer][sample] with 3 labels, 2 layers, 2 samples.
    let goodness = vec![
        1.0, 0.0, 0.0, 5.0, // label 0
        2.0, 1.0, 0.0, 1.0, // label 1
        0.0, 3.0, 2.0, 0.0, // label 2
    ];
    assert_eq!(
        trifecta::ff::eval::predict(&goodness, 3, 2, 2, &[0]),
        vec![1, 2]
    );
    assert_eq!(
        trifecta::ff::eval::predict(&goodness, 3, 2, 2, &[1]),
        vec![2, 0]
    );
    // Sample 0 ties labels 1 and 2 at 2.0: the lowest label wins, like torch.argmax.
    assert_eq!(
        trifecta::ff::eval::predict(&goodness, 3, 2, 2, &[0, 1]),
        vec![1, 0]
    );
}

#[test]
fn idx_errors_name_the_file_and_the_problem() {
    let path = std::path::Path::new("some/train-images-idx3-ubyte");
    let mut good = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
    good.extend([1u8; 8]);
    let array = idx::parse(path, &good).unwrap();
    assert_eq!(array.dims, vec![2, 2, 2]);
    let err = idx::parse(path, &good[..good.len() - 1])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );
    let mut bad_magic = good.clone();
    bad_magic[2] = 0x0d;
    let err = idx::parse(path, &bad_magic).unwrap_err().to_string();
    assert!(err.contains("magic"), "{err}");
    assert!(
        idx::parse(path, &[0, 0])
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
}

/// 100 one-pixel images, pixel i of class i / 10 (sorted by class, as files often are).
fn hundred_images() -> trifecta::data::Dataset {
    let shape = ImageShape {
        channels: 1,
        height: 1,
        width: 1,
    };
    let labels: Vec<u32> = (0..100).map(|i| i / 10).collect();
    let pixels: Vec<u8> = (0..100).collect();
    trifecta::data::Dataset::new(shape, 10, pixels, labels)
}

#[test]
fn subsets_are_seeded_ordered_and_not_the_first_images() {
    let data = hundred_images();
    let mut a = data.clone();
    a.subsample(20, &mut Rng::new(5));
    let mut b = data.clone();
    b.subsample(20, &mut Rng::new(5));
    assert_eq!(a.pixels, b.pixels);
    assert_eq!(a.len(), 20);
    assert!(
        a.pixels.windows(2).all(|w| w[0] < w[1]),
        "original order is kept"
    );
    assert!(
        a.labels.iter().any(|l| *l >= 5),
        "not just the first classes"
    );
    for (p, l) in a.pixels.iter().zip(&a.labels) {
        assert_eq!(*l as u8, p / 10, "labels travel with their images");
    }
}

/// A validation split: the images it takes leave the training split, none is in both, none is
/// lost, both keep their order, and the same seed takes the same images.
#[test]
fn a_split_off_part_leaves_the_rest_disjoint_and_whole() {
    let mut data = hundred_images();
    data.mean = vec![0.5];
    let whole = data.clone();
    let val = data.split_off(30, &mut Rng::new(7));
    assert_eq!((val.len(), data.len()), (30, 70));
    assert_eq!(val.mean, [0.5]);
    let mut all: Vec<u8> = val.pixels.iter().chain(&data.pixels).copied().collect();
    all.sort_unstable();
    assert_eq!(all, whole.pixels, "every image in exactly one part");
    for part in [&val, &data] {
        assert!(part.pixels.windows(2).all(|w| w[0] < w[1]));
        for (p, l) in part.pixels.iter().zip(&part.labels) {
            assert_eq!(*l as u8, p / 10);
        }
    }
    assert!(
        val.pixels.iter().any(|&p| p >= 50),
        "not just the first images"
    );
    let mut again = whole.clone();
    assert_eq!(again.split_off(30, &mut Rng::new(7)).pixels, val.pixels);
    // A subset of n is what a split of n takes.
    let mut subset = whole.clone();
    subset.subsample(30, &mut Rng::new(7));
    assert_eq!(subset.pixels, val.pixels);
}

#[test]
fn flags_override_the_config_file_knob_by_knob() {
    use trifecta::run::config::PartialConfig;
    let file: PartialConfig = toml::from_str("model = \"bp\"\nwidth = 0.5\nepochs = 7\n").unwrap();
    let flags = PartialConfig {
        epochs: Some(2),
        seed: Some(9),
        ..PartialConfig::default()
    };
    let config = file.overlay(&flags).resolve().unwrap();
    assert_eq!(config.model, trifecta::baselines::Model::Bp);
    assert_eq!((config.width, config.epochs, config.seed), (0.5, 2, 9));
}

#[test]
fn copy_into_writes_a_window_and_refuses_overflow() {
    use trifecta::backend::Backend;
    let b = Cpu::new(1).unwrap();
    let mut dst = vec![0.0f32; 5];
    b.copy_into(&mut dst, 2, &vec![1.0, 2.0]).unwrap();
    assert_eq!(dst, [0.0, 0.0, 1.0, 2.0, 0.0]);
    assert!(b.copy_into(&mut dst, 4, &vec![1.0, 2.0]).is_err());
    assert!(b.copy_into(&mut dst, usize::MAX, &vec![1.0]).is_err());
}

#[test]
fn copy_many_checks_every_range_before_it_copies() {
    use trifecta::backend::Backend;
    let b = Cpu::new(1).unwrap();
    let mut dst = vec![0.0f32; 6];
    let (one, two) = (vec![1.0f32], vec![2.0f32, 3.0]);
    b.copy_many(&mut dst, &[(0, &one), (3, &two)]).unwrap();
    assert_eq!(dst, [1.0, 0.0, 0.0, 2.0, 3.0, 0.0]);
    assert!(b.copy_many(&mut dst, &[(5, &one), (5, &two)]).is_err());
    assert_eq!(dst, [1.0, 0.0, 0.0, 2.0, 3.0, 0.0], "nothing copied");
}

#[test]
fn augmented_batches_do_not_depend_on_the_thread_count() {
    use trifecta::data::{Dataset, augment::Augment};
    let shape = ImageShape {
        channels: 3,
        height: 9,
        width: 7,
    };
    let mut rng = Rng::new(5);
    let n = 40;
    let data = Dataset::noise(shape, 10, n, &mut rng);
    let indices: Vec<usize> = (0..n).rev().collect();
    let batch = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut rng = Rng::new(9);
            let first = data.batch(&indices, Some((&Augment::default(), &mut rng)));
            // The stream moved on by exactly one draw per image.
            (first, rng.below(1 << 30))
        })
    };
    let one = batch(1);
    assert_eq!(one, batch(3));
    let plain = data.batch(&indices, None);
    assert_ne!(one.0.0, plain.0, "augmentation changed nothing");
}

#[test]
fn bench_profile_times_every_kernel_of_the_step() {
    let cpu = Cpu::new(2).unwrap();
    common::check_profile(
        &cpu,
        &[
            "embed_forward",
            "batchnorm_forward_train",
            "batchnorm_backward",
            "relu_maxpool2_backward",
            "goodness_forward",
            "adam_step",
        ],
    );
}

#[test]
fn every_op_refuses_buffers_of_the_wrong_size() {
    common::check_ops_refuse_wrong_sizes(&Cpu::new(1).unwrap());
}

/// Sharing block 0's convolution between the labels changes the goodness only by float
/// rounding, and it does share: one block-0 tail from the kept output per label, and one
/// convolution fewer per label than the network has blocks.
#[test]
fn evaluation_shares_block_0_between_labels() {
    let b = Cpu::new(2).unwrap();
    common::check_eval_sharing(&b, 1e-4, 1e-6);
    let mut config = FfConfig::trifecta(Arch::Small, 0.125, MNIST_LIKE, 10).unwrap();
    config.layers.truncate(3);
    let mut net = FfNet::new(&b, config, 1).unwrap();
    let images = vec![0.5; 4 * MNIST_LIKE.numel()];
    trifecta::backend::Backend::enable_profile(&b);
    net.goodness_per_label(&b, &images).unwrap();
    let profile = trifecta::backend::Backend::profile(&b).unwrap();
    let calls = |name: &str| -> u64 {
        profile
            .iter()
            .filter(|row| row.1.starts_with(name))
            .map(|row| row.3)
            .sum()
    };
    assert_eq!(calls("add_bias_map"), 10, "{profile:?}");
    // Per label blocks 1 and 2; once block 0, once the label offsets.
    assert_eq!(calls("conv3x3_forward"), 10 * 2 + 2, "{profile:?}");
}

/// The bench's epoch: a training epoch, then the evaluation timed shared and, asked for,
/// unshared.
#[test]
fn bench_epoch_times_training_and_both_evaluations() {
    let b = Cpu::new(2).unwrap();
    let config = trifecta::bench::BenchConfig {
        width: 0.125,
        image: MNIST_LIKE,
        batch: 4,
        compare_unshared_eval: true,
        ..Default::default()
    };
    let e = trifecta::bench::run_epoch(&b, &config, 10, 6, 4).unwrap();
    assert_eq!((e.train_images, e.test_images, e.classes), (10, 6, 10));
    assert!(e.train_seconds > 0.0 && e.eval_seconds > 0.0, "{e:?}");
    assert!(e.unshared_eval_seconds.is_some_and(|s| s > 0.0), "{e:?}");
}

/// With APL the bench also gives the two kinds of step apart (the last block learning, or
/// skipped); without APL every step is alike.
#[test]
fn bench_splits_apl_steps_by_what_the_last_block_does() {
    let b = Cpu::new(2).unwrap();
    let mut config = trifecta::bench::BenchConfig {
        width: 0.125,
        image: MNIST_LIKE,
        batch: 4,
        warmup: 1,
        steps: 4,
        apl: true,
        ..Default::default()
    };
    let report = trifecta::bench::run(&b, &config).unwrap();
    let (learns, idle) = report.step_seconds_by_parity.unwrap();
    assert!(learns > 0.0 && idle > 0.0);
    assert!(
        report
            .render(&config)
            .contains("where the last block learns")
    );
    config.apl = false;
    let report = trifecta::bench::run(&b, &config).unwrap();
    assert!(report.step_seconds_by_parity.is_none());
}

#[test]
fn evaluation_does_not_depend_on_the_batch_size() {
    // Batches come from a thread of their own, in order: any batch size gives the same counts.
    let backend = Cpu::new(2).unwrap();
    let mut config = FfConfig::trifecta(Arch::Small, 0.125, MNIST_LIKE, 10).unwrap();
    config.layers.truncate(3);
    let mut net = FfNet::new(&backend, config, 5).unwrap();
    let mut rng = Rng::new(6);
    let n = 37;
    let data = trifecta::data::Dataset::noise(MNIST_LIKE, 10, n, &mut rng);
    let whole = trifecta::ff::train::evaluate(&mut net, &backend, &data, 100, &[1, 2]).unwrap();
    assert_eq!(whole.samples, n);
    for batch in [1, 7, 36] {
        let e = trifecta::ff::train::evaluate(&mut net, &backend, &data, batch, &[1, 2]).unwrap();
        assert_eq!(e.samples, n, "batch {batch}");
        assert_eq!(e.layer_accuracy, whole.layer_accuracy, "batch {batch}");
        assert_eq!(
            e.ensemble_accuracy, whole.ensemble_accuracy,
            "batch {batch}"
        );
        // The goodness kept for the histograms: every image's, in order, whatever the batches.
        assert_eq!(e.kept.labels, data.labels, "batch {batch}");
        assert_eq!(e.kept.goodness.len(), n * 10 * 3, "batch {batch}");
        for (a, b) in e.kept.goodness.iter().zip(&whole.kept.goodness) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "batch {batch}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn staging_the_next_images_ahead_changes_nothing() {
    let backend = Cpu::new(2).unwrap();
    let mut config = FfConfig::trifecta(Arch::Small, 0.125, MNIST_LIKE, 10).unwrap();
    config.layers.truncate(3);
    let mut rng = Rng::new(9);
    let steps: Vec<(Vec<f32>, Vec<u32>, Vec<u32>)> =
        (0..3).map(|_| random_batch(&mut rng)).collect();
    let params = |net: &FfNet<Cpu>| -> Vec<Vec<f32>> {
        net.named_params()
            .iter()
            .map(|(_, p)| p.to_torch(&backend).unwrap())
            .collect()
    };
    let mut plain = FfNet::new(&backend, config.clone(), 1).unwrap();
    let mut ahead = FfNet::new(&backend, config, 1).unwrap();
    // Nothing staged yet: the images must be given.
    let (_, labels, negatives) = &steps[0];
    let err = ahead
        .train_step_ahead(&backend, None, labels, negatives, None)
        .unwrap_err();
    assert!(err.to_string().contains("train_step images"), "{err}");
    for (k, (images, labels, negatives)) in steps.iter().enumerate() {
        let a = plain
            .train_step(&backend, images, labels, negatives)
            .unwrap();
        let given = (k == 0).then_some(images.as_slice());
        let next = steps.get(k + 1).map(|s| s.0.as_slice());
        let b = ahead
            .train_step_ahead(&backend, given, labels, negatives, next)
            .unwrap();
        assert_eq!(a, b, "step {k}: metrics");
    }
    assert_eq!(params(&plain), params(&ahead));
    // The last step staged nothing: a step without images is refused again.
    assert!(
        ahead
            .train_step_ahead(&backend, None, labels, negatives, None)
            .is_err()
    );
}
