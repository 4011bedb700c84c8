//! The CPU backend: `gemm` for the convolutions, `rayon` for everything that can run in
//! parallel, on a thread pool of its own so that the thread count is the user's choice and
//! results depend on nothing else.

pub mod conv;
mod elementwise;
mod norm;
pub mod winograd;

/// Below this many input channels the Winograd gemms are too thin to pay for the transforms,
/// and im2col is used instead.
pub const WINOGRAD_MIN_CHANNELS: usize = 128;

/// The input gradient goes by col2im (`conv::input_grad_col2im`) where the output has at least
/// this many times the input's channels: block 0, whose 2-4 input channels would otherwise
/// have the flipped forward convolution unfold or transform a gradient 32-128 channels wide.
pub const COL2IM_MIN_WIDENING: usize = 4;

pub use elementwise::softplus;

/// The most threads a pool may have: four for each thread the machine runs at once. More only
/// slow the work down (1,024 threads on 2 cores took a tiny run from 1.6 s to 63 s, and 4,096
/// did not finish in minutes), and a value from another machine's config is more likely a
/// slip than a wish.
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The memory this machine can still give a process, in bytes: Linux's estimate of what is
/// available without swapping, plus free swap. None where `/proc/meminfo` does not say.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(1024 * (kib("MemAvailable:")? + kib("SwapFree:").unwrap_or(0)))
}

/// Fails, naming `what` (the flag, key or variable), when `threads` exceeds [`max_threads`].
pub fn check_threads(what: &str, threads: usize) -> Result<()> {
    let max = max_threads();
    if threads > max {
        return Err(Error::Config(format!(
            "{what} {threads} is more threads than this machine can use: at most {max} here (4 a core); 0 means one per core"
        )));
    }
    Ok(())
}

use super::{
    AdamParams, Backend, ChannelShape, ConvShape, EmbedShape, FfLoss, NextNorm, PoolShape,
    SampleShape, check_copy, checks,
};
use crate::error::{Error, Result};
use std::cell::RefCell;
use std::ops::Range;

/// The CPU device.
pub struct Cpu {
    pool: rayon::ThreadPool,
    threads: usize,
    /// Weight-sized scratch kept between calls: fresh multi-megabyte allocations cost page
    /// faults on every step. Index 0 is the transformed weight, then one per thread range.
    weight_scratch: std::sync::Mutex<Vec<Vec<f32>>>,
    profile: crate::profile::Profile,
}

impl Cpu {
    /// A CPU backend with `threads` worker threads (0 = one per core).
    pub fn new(threads: usize) -> Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Device {
                device: "cpu".into(),
                msg: e.to_string(),
            })?;
        Ok(Cpu {
            pool,
            threads,
            weight_scratch: std::sync::Mutex::new(Vec::new()),
            profile: crate::profile::Profile::default(),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs kernel `op` on this backend's threads, timing it when profiling is on.
    fn run<R: Send>(&self, op: &'static str, f: impl FnOnce() -> R + Send) -> R {
        if !self.profile.enabled() {
            return self.pool.install(f);
        }
        let start = std::time::Instant::now();
        let out = self.pool.install(f);
        self.profile.record(op, start.elapsed());
        out
    }

    /// Runs `f` with the transformed-weight buffer (`len` floats) and one buffer per thread.
    fn with_weight_scratch<R>(
        &self,
        len: usize,
        f: impl FnOnce(&mut [f32], &mut [Vec<f32>]) -> R,
    ) -> R {
        let mut guard = self
            .weight_scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        guard.resize_with(self.threads + 1, Vec::new);
        let (u, partials) = guard.split_first_mut().expect("resized above");
        if u.len() < len {
            u.resize(len, 0.0);
        }
        f(&mut u[..len], partials)
    }
}

/// `n` items cut into at most `parts` contiguous, nearly equal ranges (never empty).
pub(crate) fn ranges(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    let size = n.div_ceil(parts);
    (0..parts)
        .map(|i| (i * size).min(n)..((i + 1) * size).min(n))
        .filter(|r| !r.is_empty())
        .collect()
}

thread_local! {
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer number `slot`, grown to `len` floats. The content
/// on entry is whatever the last user left there.
pub(crate) fn with_scratch<R>(slot: usize, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() <= slot {
            s.resize_with(slot + 1, Vec::new);
        }
        std::mem::take(&mut s[slot])
    });
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    SCRATCH.with(|s| s.borrow_mut()[slot] = buf);
    out
}

/// The processor's name as the OS gives it (Linux: `/proc/cpuinfo`), for logs and benches.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    let name = line.split_once(':')?.1.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The SIMD level our kernels and `gemm`'s run at here (both choose at run time).
fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "AVX-512"
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            "AVX2"
        } else {
            "SSE2"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

impl Backend for Cpu {
    type Buf = Vec<f32>;

    fn name(&self) -> String {
        let model = cpu_model().map_or(String::new(), |m| format!("{m}, "));
        format!("cpu ({} threads, {model}{})", self.threads, simd_level())
    }

    fn enable_profile(&self) {
        self.profile.enable();
    }

    fn available_memory(&self) -> Option<u64> {
        available_memory()
    }

    fn profile(&self) -> Result<Vec<crate::profile::Row>> {
        Ok(self.profile.report())
    }

    fn profile_scope(&self, scope: &'static str) {
        self.profile.set_scope(scope);
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    /// Keeps the allocation: buffers shared by blocks of different sizes change size every
    /// step, and a fresh allocation of a large one costs a page fault per page.
    fn resize_zeroed(&self, buf: &mut Vec<f32>, len: usize) -> Result<()> {
        if len > buf.capacity() {
            // Exactly `len` (no amortised growth), and no copy of the old contents.
            *buf = vec![0.0; len];
        } else {
            buf.clear();
            buf.resize(len, 0.0);
        }
        Ok(())
    }
    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }
    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }
    fn len(buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn fill(&self, buf: &mut Vec<f32>, value: f32) -> Result<()> {
        buf.fill(value);
        Ok(())
    }
    fn write(&self, dst: &mut Vec<f32>, data: &[f32]) -> Result<()> {
        super::check_len("write", data.len(), dst.len())?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn copy_into(&self, dst: &mut Vec<f32>, offset: usize, src: &Vec<f32>) -> Result<()> {
        check_copy(dst.len(), offset, src.len())?;
        dst[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn embed_forward(
        &self,
        out: &mut Vec<f32>,
        images: &Vec<f32>,
        table: &Vec<f32>,
        labels: &[u32],
        s: EmbedShape,
    ) -> Result<()> {
        checks::embed_forward::<Self>(out, images, table, labels, s)?;
        self.run("embed_forward", || {
            elementwise::embed_forward(out, images, table, labels, s)
        });
        Ok(())
    }
    fn embed_backward(
        &self,
        grad_table: &mut Vec<f32>,
        grad_input: &Vec<f32>,
        labels: &[u32],
        s: EmbedShape,
    ) -> Result<()> {
        checks::embed_backward::<Self>(grad_table, grad_input, labels, s)?;
        elementwise::embed_backward(grad_table, grad_input, labels, s);
        Ok(())
    }

    fn conv3x3_forward(
        &self,
        out: &mut Vec<f32>,
        input: &Vec<f32>,
        weight: &Vec<f32>,
        s: ConvShape,
    ) -> Result<()> {
        checks::conv3x3_forward::<Self>(out, input, weight, s)?;
        if s.c_in >= WINOGRAD_MIN_CHANNELS {
            self.run("conv3x3_forward (winograd)", || {
                self.with_weight_scratch(16 * s.c_in * s.c_out, |u, _| {
                    winograd::forward(out, u, input, weight, s)
                })
            });
        } else {
            self.run("conv3x3_forward (im2col)", || {
                conv::forward(out, input, weight, s)
            });
        }
        Ok(())
    }
    fn conv3x3_backward(
        &self,
        grad_input: Option<&mut Vec<f32>>,
        grad_weight: &mut Vec<f32>,
        grad_out: &Vec<f32>,
        input: &Vec<f32>,
        weight: &Vec<f32>,
        s: ConvShape,
    ) -> Result<()> {
        checks::conv3x3_backward::<Self>(
            grad_input.as_deref(),
            grad_weight,
            grad_out,
            input,
            weight,
            s,
        )?;
        let threads = self.threads;
        let winograd = s.c_in >= WINOGRAD_MIN_CHANNELS;
        let op = if winograd {
            "conv3x3_backward_weight (winograd)"
        } else {
            "conv3x3_backward_weight (im2col)"
        };
        self.run(op, || {
            if winograd {
                self.with_weight_scratch(0, |_, partials| {
                    winograd::weight_grad(grad_weight, partials, grad_out, input, s, threads)
                })
            } else {
                conv::weight_grad(grad_weight, grad_out, input, s, threads)
            }
        });
        let Some(grad_input) = grad_input else {
            return Ok(());
        };
        if s.c_in * COL2IM_MIN_WIDENING <= s.c_out {
            self.run("conv3x3_backward_input (col2im)", || {
                conv::input_grad_col2im(grad_input, grad_out, weight, s)
            });
        } else if s.c_out >= WINOGRAD_MIN_CHANNELS {
            // dx is the convolution of dy with the filters flipped in space and transposed in
            // channels: a forward pass with Cout inputs, here and in the im2col branch below.
            self.run("conv3x3_backward_input (winograd)", || {
                self.with_weight_scratch(16 * s.c_in * s.c_out, |u, _| {
                    winograd::input_grad(grad_input, u, grad_out, weight, s)
                })
            });
        } else {
            self.run("conv3x3_backward_input (im2col)", || {
                let flipped = conv::flip_weight(weight, s.c_in, s.c_out);
                let t = s.for_input_grad();
                conv::forward(grad_input, grad_out, &flipped, t)
            });
        }
        Ok(())
    }

    fn batchnorm_forward_train(
        &self,
        out: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        running_mean: &mut Vec<f32>,
        running_var: &mut Vec<f32>,
        input: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        s: ChannelShape,
        eps: f32,
        momentum: f32,
    ) -> Result<()> {
        checks::batchnorm_forward_train::<Self>(
            out,
            mean,
            rstd,
            running_mean,
            running_var,
            input,
            gamma,
            beta,
            s,
        )?;
        let threads = self.threads;
        self.run("batchnorm_forward_train", || {
            norm::batchnorm_forward_train(
                out,
                mean,
                rstd,
                running_mean,
                running_var,
                input,
                gamma,
                beta,
                s,
                eps,
                momentum,
                threads,
            )
        });
        Ok(())
    }
    fn batchnorm_forward_eval(
        &self,
        out: &mut Vec<f32>,
        input: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        running_mean: &Vec<f32>,
        running_var: &Vec<f32>,
        s: ChannelShape,
        eps: f32,
    ) -> Result<()> {
        checks::batchnorm_forward_eval::<Self>(
            out,
            input,
            gamma,
            beta,
            running_mean,
            running_var,
            s,
        )?;
        self.run("batchnorm_forward_eval", || {
            norm::batchnorm_forward_eval(out, input, gamma, beta, running_mean, running_var, s, eps)
        });
        Ok(())
    }
    fn batchnorm_backward(
        &self,
        grad_input: Option<&mut Vec<f32>>,
        grad_gamma: &mut Vec<f32>,
        grad_beta: &mut Vec<f32>,
        grad_out: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        input: &Vec<f32>,
        gamma: &Vec<f32>,
        s: ChannelShape,
    ) -> Result<()> {
        checks::batchnorm_backward::<Self>(
            grad_input.as_deref(),
            grad_gamma,
            grad_beta,
            grad_out,
            mean,
            rstd,
            input,
            gamma,
            s,
        )?;
        let threads = self.threads;
        self.run("batchnorm_backward", || {
            norm::batchnorm_backward(
                grad_input.map(|g| g.as_mut_slice()),
                grad_gamma,
                grad_beta,
                grad_out,
                mean,
                rstd,
                input,
                gamma,
                s,
                threads,
            )
        });
        Ok(())
    }

    fn layernorm_forward(
        &self,
        out: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        input: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        s: SampleShape,
        eps: f32,
    ) -> Result<()> {
        checks::layernorm_forward::<Self>(out, mean, rstd, input, gamma, beta, s)?;
        self.run("layernorm_forward", || {
            norm::layernorm_forward(out, mean, rstd, input, gamma, beta, s, eps)
        });
        Ok(())
    }
    fn layernorm_backward(
        &self,
        grad_input: Option<&mut Vec<f32>>,
        grad_gamma: &mut Vec<f32>,
        grad_beta: &mut Vec<f32>,
        grad_out: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        input: &Vec<f32>,
        gamma: &Vec<f32>,
        s: SampleShape,
    ) -> Result<()> {
        checks::layernorm_backward::<Self>(
            grad_input.as_deref(),
            grad_gamma,
            grad_beta,
            grad_out,
            mean,
            rstd,
            input,
            gamma,
            s,
        )?;
        let threads = self.threads;
        self.run("layernorm_backward", || {
            norm::layernorm_backward(
                grad_input.map(|g| g.as_mut_slice()),
                grad_gamma,
                grad_beta,
                grad_out,
                mean,
                rstd,
                input,
                gamma,
                s,
                threads,
            )
        });
        Ok(())
    }

    /// Evaluation from a kept output: the add and the ReLU in one pass (the CPU's only
    /// fusion: here they are what the sharing of block 0 costs per label).
    fn bias_relu_pool_goodness(
        &self,
        activation: &mut Vec<f32>,
        pooled: Option<&mut Vec<f32>>,
        goodness: &mut Vec<f32>,
        pre: &Vec<f32>,
        maps: &Vec<f32>,
        index: usize,
        s: ConvShape,
        next: Option<NextNorm<'_, Self>>,
    ) -> Result<()> {
        checks::bias_relu_pool_goodness::<Self>(
            activation,
            pooled.as_deref(),
            goodness,
            pre,
            maps,
            index,
            s,
            next.as_ref(),
        )?;
        let features = s.h * s.w * s.c_out;
        let map = &maps[index * features..][..features];
        self.run("add_bias_map_relu", || {
            elementwise::add_bias_map_relu(activation, pre, map)
        });
        super::pool_goodness_next_composed(self, activation, pooled, goodness, s, next)
    }

    fn add_bias_map(
        &self,
        out: &mut Vec<f32>,
        pre: &Vec<f32>,
        maps: &Vec<f32>,
        index: usize,
        s: SampleShape,
    ) -> Result<()> {
        checks::add_bias_map::<Self>(out, pre, maps, index, s)?;
        let map = &maps[index * s.features..][..s.features];
        self.run("add_bias_map", || elementwise::add_bias_map(out, pre, map));
        Ok(())
    }
    fn relu_forward(&self, x: &mut Vec<f32>) -> Result<()> {
        self.run("relu_forward", || elementwise::relu_forward(x));
        Ok(())
    }
    fn relu_backward(&self, grad: &mut Vec<f32>, activation: &Vec<f32>) -> Result<()> {
        checks::relu_backward::<Self>(grad, activation)?;
        self.run("relu_backward", || {
            elementwise::relu_backward(grad, activation)
        });
        Ok(())
    }
    fn maxpool2_forward(&self, out: &mut Vec<f32>, input: &Vec<f32>, s: PoolShape) -> Result<()> {
        checks::maxpool2_forward::<Self>(out, input, s)?;
        self.run("maxpool2_forward", || {
            elementwise::maxpool2_forward(out, input, s)
        });
        Ok(())
    }
    fn relu_maxpool2_backward(
        &self,
        grad_input: &mut Vec<f32>,
        grad_out: &Vec<f32>,
        activation: &Vec<f32>,
        s: PoolShape,
    ) -> Result<()> {
        checks::relu_maxpool2_backward::<Self>(grad_input, grad_out, activation, s)?;
        self.run("relu_maxpool2_backward", || {
            elementwise::relu_maxpool2_backward(grad_input, grad_out, activation, s)
        });
        Ok(())
    }

    fn goodness_forward(
        &self,
        goodness: &mut Vec<f32>,
        input: &Vec<f32>,
        s: SampleShape,
    ) -> Result<()> {
        checks::goodness_forward::<Self>(goodness, input, s)?;
        self.run("goodness_forward", || {
            elementwise::goodness_forward(goodness, input, s)
        });
        Ok(())
    }
    fn goodness_backward(
        &self,
        grad_input: &mut Vec<f32>,
        grad_goodness: &Vec<f32>,
        input: &Vec<f32>,
        s: SampleShape,
    ) -> Result<()> {
        checks::goodness_backward::<Self>(grad_input, grad_goodness, input, s)?;
        self.run("goodness_backward", || {
            elementwise::goodness_backward(grad_input, grad_goodness, input, s)
        });
        Ok(())
    }
    fn ff_loss(
        &self,
        loss: &mut Vec<f32>,
        grad_goodness: &mut Vec<f32>,
        goodness: &Vec<f32>,
        pairs: usize,
        kind: FfLoss,
    ) -> Result<()> {
        checks::ff_loss::<Self>(loss, grad_goodness, goodness, pairs)?;
        elementwise::ff_loss(loss, grad_goodness, goodness, pairs, kind);
        Ok(())
    }

    fn avgpool_forward(
        &self,
        out: &mut Vec<f32>,
        input: &Vec<f32>,
        s: ChannelShape,
        n: usize,
    ) -> Result<()> {
        checks::avgpool_forward::<Self>(out, input, s, n)?;
        let pixels = s.rows / n.max(1);
        self.run("avgpool_forward", || {
            elementwise::avgpool_forward(out, input, pixels, s.channels)
        });
        Ok(())
    }
    fn avgpool_backward(
        &self,
        grad_input: &mut Vec<f32>,
        grad_out: &Vec<f32>,
        s: ChannelShape,
        n: usize,
    ) -> Result<()> {
        checks::avgpool_backward::<Self>(grad_input, grad_out, s, n)?;
        let pixels = s.rows / n.max(1);
        self.run("avgpool_backward", || {
            elementwise::avgpool_backward(grad_input, grad_out, pixels, s.channels)
        });
        Ok(())
    }
    fn linear_forward(
        &self,
        out: &mut Vec<f32>,
        input: &Vec<f32>,
        weight: &Vec<f32>,
        bias: &Vec<f32>,
        n: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<()> {
        checks::linear_forward::<Self>(out, input, weight, bias, (n, inputs, outputs))?;
        self.run("linear_forward", || {
            for row in out.chunks_mut(outputs) {
                row.copy_from_slice(bias);
            }
            // out (n x outputs) += input (n x inputs) * W^T, W^T element (k, o) at o*inputs + k.
            conv::matmul(
                n,
                outputs,
                inputs,
                out,
                true,
                input,
                1,
                inputs as isize,
                weight,
                inputs as isize,
                1,
            );
        });
        Ok(())
    }
    fn linear_backward(
        &self,
        grad_input: Option<&mut Vec<f32>>,
        grad_weight: &mut Vec<f32>,
        grad_bias: &mut Vec<f32>,
        grad_out: &Vec<f32>,
        input: &Vec<f32>,
        weight: &Vec<f32>,
        n: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<()> {
        checks::linear_backward::<Self>(
            grad_input.as_deref(),
            grad_weight,
            grad_bias,
            grad_out,
            input,
            weight,
            (n, inputs, outputs),
        )?;
        self.run("linear_backward", || {
            for row in grad_out.chunks(outputs) {
                for (b, g) in grad_bias.iter_mut().zip(row) {
                    *b += g;
                }
            }
            // dW (outputs x inputs) += dY^T (outputs x n) * X (n x inputs)
            conv::matmul(
                outputs,
                inputs,
                n,
                grad_weight,
                true,
                grad_out,
                outputs as isize,
                1,
                input,
                1,
                inputs as isize,
            );
            if let Some(gi) = grad_input {
                // dX (n x inputs) = dY (n x outputs) * W (outputs x inputs)
                conv::matmul(
                    n,
                    inputs,
                    outputs,
                    gi,
                    false,
                    grad_out,
                    1,
                    outputs as isize,
                    weight,
                    1,
                    inputs as isize,
                );
            }
        });
        Ok(())
    }
    fn cross_entropy(
        &self,
        loss: &mut Vec<f32>,
        grad_logits: &mut Vec<f32>,
        logits: &Vec<f32>,
        labels: &[u32],
        classes: usize,
    ) -> Result<()> {
        checks::cross_entropy::<Self>(loss, grad_logits, logits, labels, classes)?;
        elementwise::cross_entropy(loss, grad_logits, logits, labels, classes);
        Ok(())
    }

    fn adam_step(
        &self,
        param: &mut Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        grad: &Vec<f32>,
        step: u64,
        hp: AdamParams,
    ) -> Result<()> {
        checks::adam_step::<Self>(param, m, v, grad)?;
        self.run("adam_step", || {
            elementwise::adam_step(param, m, v, grad, step, hp)
        });
        Ok(())
    }
}
