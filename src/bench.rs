//! `trifecta bench`: times the FF training step on synthetic data and sets it against the
//! machine's own sgemm speed, measured in the same run.
//!
//! Default workload (the one the engine issue measured against PyTorch): `small` at width 1,
//! 32x32 images with 3+1 channels, 32 positives + 32 negatives, SymBa, BatchNorm, no APL (every
//! block local). The FLOP count is that of the convolutions the step actually runs: forward,
//! weight gradient and input gradient (the input gradient of the conv is always needed, since
//! the norm before it learns; the norm's own input gradient is skipped when detached).

use crate::backend::Backend;
use crate::backend::cpu::Cpu;
use crate::data::Dataset;
use crate::error::Result;
use crate::ff::train::{evaluate, train_epoch};
use crate::ff::{Arch, FfConfig, FfNet, ImageShape};
use crate::layers::norm::NormKind;
use crate::rng::Rng;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub arch: Arch,
    pub width: f64,
    pub image: ImageShape,
    pub batch: usize,
    pub apl: bool,
    pub norm: NormKind,
    pub warmup: usize,
    pub steps: usize,
    /// Size of the square sgemm reference.
    pub sgemm_size: usize,
    /// Also time every kernel (timed steps only).
    pub profile: bool,
    /// The epoch's evaluation is also timed with every label through the whole network
    /// (block 0 not shared between the labels).
    pub compare_unshared_eval: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            arch: Arch::Small,
            width: 1.0,
            image: ImageShape {
                channels: 3,
                height: 32,
                width: 32,
            },
            batch: 32,
            apl: false,
            norm: NormKind::Batch,
            warmup: 2,
            steps: 10,
            sgemm_size: 2048,
            profile: false,
            compare_unshared_eval: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub device: String,
    /// Median seconds per training step.
    pub step_seconds: f64,
    pub step_seconds_all: Vec<f64>,
    /// With APL: the median step where the last block learns, and where it does not (and
    /// its convolution is skipped). None without APL, or without steps of both kinds.
    pub step_seconds_by_parity: Option<(f64, f64)>,
    /// Median seconds a step spent queueing its work, up to its wait for the device
    /// (`FfNet::last_queue_seconds`): the whole step on the CPU, the host's share on a GPU.
    pub queue_seconds: f64,
    /// Positives per second (each also runs as a negative).
    pub samples_per_second: f64,
    /// Convolution FLOPs of one step.
    pub step_flops: f64,
    pub step_gflops: f64,
    pub sgemm_gflops: f64,
    /// (kernel, seconds per step, calls per step) when profiled, slowest first.
    pub kernels: Vec<(&'static str, f64, f64)>,
    /// (scope, e.g. "block 0", kernel, seconds per step, calls per step) when profiled: the
    /// same time split by the part of the step it ran for.
    pub kernels_by_scope: Vec<(&'static str, &'static str, f64, f64)>,
    /// A full training epoch and an evaluation, when asked for.
    pub epoch: Option<EpochReport>,
}

/// One training epoch and one evaluation on synthetic data of a dataset's shapes.
#[derive(Clone, Debug)]
pub struct EpochReport {
    pub batch: usize,
    pub train_images: usize,
    pub train_seconds: f64,
    /// Of `train_seconds`, the time spent waiting for the next batch.
    pub data_wait_seconds: f64,
    /// The threads that prepared the batches (`data::loader::pool_threads`).
    pub loader_threads: usize,
    pub test_images: usize,
    pub classes: usize,
    pub eval_seconds: f64,
    /// The same evaluation with every label through the whole network, when asked for.
    pub unshared_eval_seconds: Option<f64>,
}

/// Times one Trifecta training epoch (APL, BatchNorm, augmentation, batches prepared on another
/// thread as in `train`) over `train_images` random images of `config.image`'s shape, then one
/// evaluation of `test_images` images against every label, in batches of `eval_batch`.
pub fn run_epoch<B: Backend>(
    backend: &B,
    config: &BenchConfig,
    train_images: usize,
    test_images: usize,
    eval_batch: usize,
) -> Result<EpochReport> {
    let classes = 10;
    let ff = FfConfig::trifecta(config.arch, config.width, config.image, classes)?;
    ff.check_fits(
        (2 * config.batch).max(eval_batch),
        backend.available_memory(),
    )?;
    let mut net = FfNet::new(backend, ff, 0)?;
    let synthetic =
        |n: usize, seed: u64| Dataset::noise(config.image, classes, n, &mut Rng::new(seed));
    let (train, test) = (synthetic(train_images, 2), synthetic(test_images, 3));
    let augment = Some(crate::data::augment::Augment::default());
    // Two short warm-up epochs on a slice (plans, allocations, kernel loading), each ending in
    // a batch of the timed epoch's last size: the timed epoch is then one like every epoch
    // after a run's first, none of whose shapes is new. With a partial last batch each warm-up
    // epoch has 5 steps, so the partial batches fall on iterations 4 and 9: under APL both
    // halves of the network update on a batch of that size, whatever the parity of the
    // timed epoch's last step.
    let warm_images = 4 * config.batch + train_images % config.batch.max(1);
    let warm = synthetic(warm_images.min(train_images), 4);
    for epoch in [0, 1] {
        train_epoch(
            &mut net,
            backend,
            &warm,
            config.batch,
            0,
            epoch,
            augment,
            None,
            |_, _| Ok(false),
        )?;
    }
    let stats = train_epoch(
        &mut net,
        backend,
        &train,
        config.batch,
        0,
        2,
        augment,
        None,
        |_, _| Ok(false),
    )?
    .expect("an epoch nothing stops ends");
    let last = net.blocks.len() - 1;
    // Each evaluation is timed after a one-batch warm-up of its own (the evaluation's
    // convolution plans and allocations), as the epoch is.
    let warm_test = synthetic(eval_batch.min(test_images), 5);
    let time_eval = |net: &mut FfNet<B>| -> Result<f64> {
        evaluate(net, backend, &warm_test, eval_batch, &[last])?;
        backend.synchronize()?;
        let start = Instant::now();
        evaluate(net, backend, &test, eval_batch, &[last])?;
        backend.synchronize()?;
        Ok(start.elapsed().as_secs_f64())
    };
    let eval_seconds = time_eval(&mut net)?;
    let unshared_eval_seconds = match config.compare_unshared_eval {
        true => {
            net.share_labels_in_eval = false;
            Some(time_eval(&mut net)?)
        }
        false => None,
    };
    Ok(EpochReport {
        batch: config.batch,
        train_images,
        train_seconds: stats.seconds,
        data_wait_seconds: stats.data_wait_seconds,
        loader_threads: crate::data::loader::pool_threads(),
        test_images,
        classes,
        eval_seconds,
        unshared_eval_seconds,
    })
}

impl BenchReport {
    pub fn render(&self, config: &BenchConfig) -> String {
        let mut text = format!(
            "device: {}\nworkload: {:?} x{} width, {}x{}x{}+1 input, batch {} positives + {} negatives, apl {}, norm {:?}\n\
             step: median {:.1} ms over {} steps (min {:.1}, max {:.1})\n\
             host: median {:.2} ms of a step spent before its one wait for the device (on the CPU: all of it)\n\
             throughput: {:.1} samples/s ({:.1} images/s counting negatives)\n\
             convolutions: {:.2} GFLOP per step, {:.1} GFLOP/s",
            self.device,
            config.arch,
            config.width,
            config.image.channels,
            config.image.height,
            config.image.width,
            config.batch,
            config.batch,
            config.apl,
            config.norm,
            self.step_seconds * 1e3,
            self.step_seconds_all.len(),
            self.step_seconds_all
                .iter()
                .cloned()
                .fold(f64::MAX, f64::min)
                * 1e3,
            self.step_seconds_all.iter().cloned().fold(0.0, f64::max) * 1e3,
            self.queue_seconds * 1e3,
            self.samples_per_second,
            2.0 * self.samples_per_second,
            self.step_flops / 1e9,
            self.step_gflops,
        );
        if let Some((learns, idle)) = self.step_seconds_by_parity {
            text.push_str(&format!(
                "\nAPL: median {:.1} ms where the last block learns, {:.1} ms where it does not (its convolution skipped)",
                learns * 1e3,
                idle * 1e3
            ));
        }
        if self.sgemm_gflops.is_finite() {
            text.push_str(&format!(
                "\nsgemm {n}x{n}x{n}: {:.1} GFLOP/s; step/sgemm ratio {:.2}",
                self.sgemm_gflops,
                self.step_gflops / self.sgemm_gflops,
                n = config.sgemm_size,
            ));
        }
        if let Some(e) = &self.epoch {
            text.push_str(&format!(
                "\nepoch (Trifecta: APL, BatchNorm, augmentation; batch {}): {} training images in {:.2} s ({:.0} images/s, \
                 {:.2} s of it waiting for batches, prepared on {} loader thread{}); evaluation of {} images x {} labels in {:.3} s",
                e.batch,
                e.train_images,
                e.train_seconds,
                e.train_images as f64 / e.train_seconds,
                e.data_wait_seconds,
                e.loader_threads,
                if e.loader_threads == 1 { "" } else { "s" },
                e.test_images,
                e.classes,
                e.eval_seconds,
            ));
            if let Some(unshared) = e.unshared_eval_seconds {
                text.push_str(&format!(
                    "; with every label through the whole network {unshared:.3} s (sharing block 0: {:.2}x)",
                    unshared / e.eval_seconds
                ));
            }
        }
        if !self.kernels.is_empty() {
            let total: f64 = self.kernels.iter().map(|k| k.1).sum();
            text.push_str(&format!(
                "\nper step, by kernel ({:.3} ms in all, {:.1}% of the median step):",
                total * 1e3,
                100.0 * total / self.step_seconds
            ));
            for (op, seconds, calls) in &self.kernels {
                text.push_str(&format!(
                    "\n  {:9.3} ms  {:5.1}%  {calls:>5.1} calls  {op}",
                    seconds * 1e3,
                    100.0 * seconds / self.step_seconds
                ));
            }
            text.push_str(&self.render_scopes());
        }
        text
    }
}

impl BenchReport {
    /// The profile by scope (block), in the order of the step, each scope's kernels slowest
    /// first.
    fn render_scopes(&self) -> String {
        let mut scopes: Vec<&'static str> = Vec::new();
        for (scope, ..) in &self.kernels_by_scope {
            if !scopes.contains(scope) {
                scopes.push(scope);
            }
        }
        scopes.sort_by_key(|s| scope_order(s));
        let mut text = String::from("\nper step, by part of the step:");
        for scope in scopes {
            let rows: Vec<_> = self
                .kernels_by_scope
                .iter()
                .filter(|r| r.0 == scope)
                .collect();
            let total: f64 = rows.iter().map(|r| r.2).sum();
            let name = if scope.is_empty() { "(unnamed)" } else { scope };
            text.push_str(&format!(
                "\n  {:9.3} ms  {:5.1}%  {name}",
                total * 1e3,
                100.0 * total / self.step_seconds
            ));
            for (_, op, seconds, calls) in rows {
                text.push_str(&format!(
                    "\n      {:9.3} ms  {calls:>5.1} calls  {op}",
                    seconds * 1e3
                ));
            }
        }
        text
    }
}

/// "input" first, then the blocks by number, then the rest by name.
fn scope_order(scope: &str) -> (u8, usize, &str) {
    if scope == "input" {
        return (0, 0, scope);
    }
    match scope.strip_prefix("block ").and_then(|i| i.parse().ok()) {
        Some(i) => (1, i, scope),
        None => (2, 0, scope),
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        0.5 * (v[mid - 1] + v[mid])
    }
}

/// Convolution FLOPs of one training step: forward for every block but the last where it
/// does not learn (the step skips it); weight and conv-input gradients for each block that
/// updates (and for the previous block when its output is attached). Averaged over two
/// iterations so that APL's alternation is counted fairly.
pub fn step_flops(config: &FfConfig, batch: usize) -> Result<f64> {
    let specs = config.block_specs()?;
    let mut total = 0.0;
    for t in 0..2u64 {
        for (i, spec) in specs.iter().enumerate() {
            let conv = crate::backend::ConvShape {
                n: 2 * batch,
                h: spec.h,
                w: spec.w,
                c_in: spec.c_in,
                c_out: spec.c_out,
            };
            let forward = conv.forward_flops();
            if config.needs_output(i, t) {
                total += forward;
            }
            if config.updates(i, t) {
                total += 2.0 * forward;
                if i > 0 && !config.updates(i - 1, t) {
                    let previous = crate::backend::ConvShape {
                        h: specs[i - 1].h,
                        w: specs[i - 1].w,
                        c_in: specs[i - 1].c_in,
                        c_out: specs[i - 1].c_out,
                        n: 2 * batch,
                    };
                    total += 2.0 * previous.forward_flops();
                }
            }
        }
    }
    Ok(total / 2.0)
}

/// Median GFLOP/s of an n x n x n sgemm on all of the backend's threads.
pub fn sgemm_gflops(n: usize, threads: usize, reps: usize) -> f64 {
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        // SAFETY: a, b and c are n x n row-major and c does not alias a or b.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                if threads > 1 {
                    gemm::Parallelism::Rayon(threads)
                } else {
                    gemm::Parallelism::None
                },
            );
        }
        times.push(start.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / median(&times) / 1e9
}

/// Runs the benchmark on the CPU backend, with the machine's sgemm speed beside it.
pub fn run_cpu(config: &BenchConfig, threads: usize) -> Result<BenchReport> {
    let backend = Cpu::new(threads)?;
    let report = run(&backend, config)?;
    Ok(BenchReport {
        sgemm_gflops: sgemm_gflops(config.sgemm_size, backend.threads(), 5),
        ..report
    })
}

/// Times the training step on `backend` (sgemm left at NaN: it is the CPU's reference), and
/// the time per kernel over the timed steps when `config.profile` is set.
pub fn run<B: Backend>(backend: &B, config: &BenchConfig) -> Result<BenchReport> {
    let mut ff = FfConfig::trifecta(config.arch, config.width, config.image, 10)?;
    ff.apl = config.apl;
    ff.norm = config.norm;
    ff.check_fits(2 * config.batch, backend.available_memory())?;
    let mut net = FfNet::new(backend, ff.clone(), 0)?;
    let mut rng = Rng::new(1);
    let images: Vec<f32> = (0..config.batch * config.image.numel())
        .map(|_| rng.normal())
        .collect();
    let positive: Vec<u32> = (0..config.batch).map(|_| rng.below(10)).collect();
    let negative = crate::data::wrong_labels(&positive, 10, &mut rng);
    // As in training: each step uploads the next step's images (here the same ones) behind its
    // own work; only the first is given its images.
    let mut staged = false;
    let mut step = |net: &mut FfNet<B>| -> Result<()> {
        let given = (!staged).then_some(images.as_slice());
        net.train_step_ahead(backend, given, &positive, &negative, Some(&images))?;
        staged = true;
        Ok(())
    };
    for _ in 0..config.warmup {
        step(&mut net)?;
    }
    backend.synchronize()?;
    if config.profile {
        backend.enable_profile();
    }
    let mut times = Vec::with_capacity(config.steps);
    let mut queued = Vec::with_capacity(config.steps);
    let last = ff.layers.len() - 1;
    let (mut learns, mut idles) = (Vec::new(), Vec::new());
    for _ in 0..config.steps {
        let learning = ff.updates(last, net.iteration);
        let start = Instant::now();
        step(&mut net)?;
        backend.synchronize()?;
        let seconds = start.elapsed().as_secs_f64();
        times.push(seconds);
        queued.push(net.last_queue_seconds());
        match learning {
            true => learns.push(seconds),
            false => idles.push(seconds),
        }
    }
    let step_seconds_by_parity =
        (!learns.is_empty() && !idles.is_empty()).then(|| (median(&learns), median(&idles)));
    let steps = config.steps as f64;
    let rows = if config.profile {
        backend.profile()?
    } else {
        Vec::new()
    };
    let kernels = crate::profile::sum_by(&rows, |r| r.1)
        .into_iter()
        .map(|(op, time, calls)| (op, time.as_secs_f64() / steps, calls as f64 / steps))
        .collect();
    let kernels_by_scope = rows
        .into_iter()
        .map(|(scope, op, time, calls)| {
            (scope, op, time.as_secs_f64() / steps, calls as f64 / steps)
        })
        .collect();
    let step_seconds = median(&times);
    let flops = step_flops(&ff, config.batch)?;
    Ok(BenchReport {
        device: backend.name(),
        step_seconds,
        step_seconds_all: times,
        step_seconds_by_parity,
        queue_seconds: median(&queued),
        samples_per_second: config.batch as f64 / step_seconds,
        step_flops: flops,
        step_gflops: flops / step_seconds / 1e9,
        sgemm_gflops: f64::NAN,
        kernels,
        kernels_by_scope,
        epoch: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ff::{Arch, ImageShape};

    /// Two blocks: with APL the last block's forward counts on the steps where it learns only
    /// (the step skips it on the others), and its loss also runs block 0's backward.
    #[test]
    fn step_flops_count_what_the_step_runs() {
        let image = ImageShape {
            channels: 1,
            height: 8,
            width: 8,
        };
        let mut config = FfConfig::trifecta(Arch::Small, 0.125, image, 10).unwrap();
        config.layers.truncate(2);
        let f: Vec<f64> = config
            .block_specs()
            .unwrap()
            .iter()
            .map(|s| {
                crate::backend::ConvShape {
                    n: 2 * 4,
                    h: s.h,
                    w: s.w,
                    c_in: s.c_in,
                    c_out: s.c_out,
                }
                .forward_flops()
            })
            .collect();
        // Even steps: both forwards, block 1's two gradients and block 0's (attached); odd
        // steps: block 0's forward and gradients.
        let apl = (f[0] + f[1] + 2.0 * f[1] + 2.0 * f[0] + f[0] + 2.0 * f[0]) / 2.0;
        assert_eq!(step_flops(&config, 4).unwrap(), apl);
        // Without APL every block runs and learns; block 1's input is not attached.
        config.apl = false;
        assert_eq!(step_flops(&config, 4).unwrap(), 3.0 * (f[0] + f[1]));
    }
}
