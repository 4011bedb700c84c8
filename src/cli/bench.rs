//! `trifecta bench`: the training-step benchmark (see `crate::bench`).

use super::train::{ArchArg, NormArg, PrecisionArg};
use super::{DeviceArg, device_arg, positive_f64};
use crate::backend::cpu::Cpu;
use crate::backend::{GpuOptions, Precision, with_backend};
use crate::bench::{BenchConfig, run_cpu, run_epoch};
use crate::error::{Error, Result};
use crate::ff::ImageShape;
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The network: small (6 blocks, the thesis' 100-epoch one) or large (12 blocks).
    #[arg(long, value_enum, default_value = "small")]
    pub arch: ArchArg,
    /// Channel multiplier (0.25 gives 32/32/64/64/64/128 for `small`).
    #[arg(long, default_value = "1", value_parser = positive_f64)]
    pub width: f64,
    /// Positives per step (as many negatives are added) [default: 32 on the CPU, 512 on CUDA].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Image side (square images).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(2..))]
    pub image_size: u64,
    /// Image channels (the label plane comes on top).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub channels: u64,
    /// Alternating pairwise updates (off by default: every block local).
    #[arg(long)]
    pub apl: bool,
    /// The norm before every convolution: batch (the Trifecta's) or layer.
    #[arg(long, value_enum, default_value = "batch")]
    pub norm: NormArg,
    /// Timed steps; the median is reported.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Untimed steps before them (allocation, cuDNN's choices, caches).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = device_arg)]
    pub device: String,
    /// Convolution arithmetic on the GPU [default: bf16].
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Also time a full Trifecta training epoch over this many synthetic images (with
    /// augmentation), then an evaluation of --eval-images [default: 50000 on CUDA, 0 (skip)
    /// on the CPU].
    #[arg(long)]
    pub epoch_images: Option<usize>,
    /// Images of the evaluation timed after the epoch, each under all ten labels (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub eval_images: usize,
    /// Images per batch of that evaluation.
    #[arg(long, default_value_t = 2_500, value_parser = clap::value_parser!(u64).range(1..))]
    pub eval_batch_size: u64,
    /// CUDA: run every op of a block on its own and convert each convolution's inputs (no
    /// fused block ops, no bf16 copies), to measure what the fusion saves.
    #[arg(long)]
    pub unfused: bool,
    /// CUDA: cuDNN's first-ranked algorithms even where they are not deterministic (runs then
    /// need not repeat bit for bit), to measure what determinism costs.
    #[arg(long)]
    pub any_cudnn_algorithm: bool,
    /// CUDA: run bf16 convolutions with few input channels (block 0's 4) as they are, not on
    /// copies padded with zero channels to 8, to measure what the padding saves.
    #[arg(long)]
    pub no_channel_padding: bool,
    /// CUDA: rank each convolution's cuDNN algorithms by timing them on the device when the
    /// shape is first used (as `torch.backends.cudnn.benchmark`), not by cuDNN's heuristics.
    #[arg(long)]
    pub cudnn_benchmark: bool,
    /// Also time the epoch's evaluation with every label through the whole network, i.e.
    /// without sharing block 0's convolution between the labels, to measure the sharing.
    #[arg(long)]
    pub compare_unshared_eval: bool,
    /// Also print the time per step of every kernel: wall-clock on the CPU, GPU events around
    /// every kernel and library call on CUDA (the events add a little time of their own).
    #[arg(long)]
    pub profile: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    crate::backend::cpu::check_threads("--threads", args.threads)?;
    let device = DeviceArg::parse(&args.device)?;
    let cpu = device == DeviceArg::Cpu;
    let gpu_only =
        args.unfused || args.any_cudnn_algorithm || args.no_channel_padding || args.cudnn_benchmark;
    if cpu && gpu_only {
        return Err(Error::Config(
            "--unfused, --any-cudnn-algorithm, --no-channel-padding and --cudnn-benchmark are \
             CUDA settings; they need --device cuda"
                .into(),
        ));
    }
    device.check_available()?;
    let precision = match args.precision {
        Some(PrecisionArg::F32) => Precision::F32,
        Some(PrecisionArg::Bf16) if cpu => {
            return Err(Error::Config(
                "--precision bf16 needs --device cuda; the CPU computes in f32".into(),
            ));
        }
        Some(PrecisionArg::Bf16) | None => Precision::Bf16,
    };
    let batch = args.batch_size.unwrap_or(if cpu { 32 } else { 512 }) as usize;
    let epoch_images = args.epoch_images.unwrap_or(if cpu { 0 } else { 50_000 });
    let eval_batch = args.eval_batch_size as usize;
    if args.compare_unshared_eval && (epoch_images == 0 || args.eval_images == 0) {
        return Err(Error::Config(
            "--compare-unshared-eval times the epoch's evaluation: it needs --epoch-images and \
             --eval-images above 0 (on the CPU --epoch-images is 0 unless given)"
                .into(),
        ));
    }
    let config = BenchConfig {
        arch: match args.arch {
            ArchArg::Small => crate::ff::Arch::Small,
            ArchArg::Large => crate::ff::Arch::Large,
        },
        width: args.width,
        image: ImageShape {
            channels: args.channels as usize,
            height: args.image_size as usize,
            width: args.image_size as usize,
        },
        batch,
        apl: args.apl,
        norm: match args.norm {
            NormArg::Batch => crate::layers::norm::NormKind::Batch,
            NormArg::Layer => crate::layers::norm::NormKind::Layer,
        },
        warmup: args.warmup as usize,
        steps: args.steps as usize,
        profile: args.profile,
        compare_unshared_eval: args.compare_unshared_eval,
        ..BenchConfig::default()
    };
    let report = if cpu {
        let mut report = run_cpu(&config, args.threads)?;
        if epoch_images > 0 {
            let backend = Cpu::new(args.threads)?;
            let e = run_epoch(
                &backend,
                &config,
                epoch_images,
                args.eval_images,
                eval_batch,
            )?;
            report.epoch = Some(e);
        }
        report
    } else {
        let gpu = GpuOptions {
            fused: !args.unfused,
            deterministic: !args.any_cudnn_algorithm,
            pad_channels: !args.no_channel_padding,
            cudnn_benchmark: args.cudnn_benchmark,
            ..GpuOptions::new(precision)
        };
        with_backend!(&args.device, args.threads, gpu, |backend| {
            let mut report = crate::bench::run(backend, &config)?;
            if epoch_images > 0 {
                let e = run_epoch(backend, &config, epoch_images, args.eval_images, eval_batch)?;
                report.epoch = Some(e);
            }
            Ok::<_, Error>(report)
        })?
    };
    println!("{}", report.render(&config));
    Ok(())
}
