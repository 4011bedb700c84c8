//! The backend seam: every numeric kernel the engine needs, as one trait.
//!
//! Layout conventions, shared by every backend:
//! - activations are NHWC, f32, contiguous: `(N, H, W, C)`;
//! - convolution weights are OHWI: `(C_out, 3, 3, C_in)` (cuDNN's KRSC);
//! - LayerNorm affine parameters follow the activation layout: `(H, W, C)`.
//!
//! The gradient rule, written once: backward kernels ACCUMULATE (`+=`) into parameter
//! gradients and ASSIGN (`=`) activation gradients. An activation gradient that nobody needs
//! is passed as `None` and never computed.
//!
//! This module must not know about Forward-Forward: it is plain tensor arithmetic. A new
//! backend (CUDA) implements [`Backend`] and nothing in `layers/` or `ff/` changes.

pub mod checks;
mod composed;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use composed::{
    bias_relu_pool_goodness_composed, conv3x3_relu_pool_goodness_composed,
    conv3x3_relu_pool_goodness_eval_composed, goodness_relu_pool_conv3x3_backward_composed,
    pool_goodness_next_composed, relu_pool_conv3x3_backward_composed,
};

use crate::error::{Error, Result};

/// Checks that a buffer of `got` elements holds the `len` that a shape asks for.
pub(crate) fn check_len(op: &'static str, got: usize, len: usize) -> Result<()> {
    if got == len {
        Ok(())
    } else {
        Err(Error::Shape {
            op,
            expected: vec![len],
            got: vec![got],
        })
    }
}

/// Checks that `len` elements fit into a buffer of `dst` elements at `offset`.
pub(crate) fn check_copy(dst: usize, offset: usize, len: usize) -> Result<()> {
    if offset.checked_add(len).is_some_and(|end| end <= dst) {
        Ok(())
    } else {
        Err(Error::Shape {
            op: "copy_into",
            expected: vec![dst],
            got: vec![offset, len],
        })
    }
}

/// Checks that there are `n` labels, each below `classes`.
pub(crate) fn check_labels(
    op: &'static str,
    labels: &[u32],
    n: usize,
    classes: usize,
) -> Result<()> {
    if labels.len() != n {
        return Err(Error::Shape {
            op,
            expected: vec![n],
            got: vec![labels.len()],
        });
    }
    match labels.iter().find(|l| **l as usize >= classes) {
        Some(bad) => Err(Error::Config(format!(
            "label {bad} out of range for {classes} classes"
        ))),
        None => Ok(()),
    }
}

/// The arithmetic of the convolutions. The CPU computes everything in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (no TF32): the reference path.
    F32,
    /// bf16 operands on tensor cores for the convolutions, accumulating in f32; f32 master
    /// weights, optimiser state, norms and reductions. CUDA only.
    Bf16,
}

/// How the GPU backend computes: the arithmetic, and two speed knobs that `bench` can turn to
/// measure what they are worth (both on their reference setting by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    pub precision: Precision,
    /// The fused block ops and the norms' bf16 copies (default); off, every op runs on its own
    /// and each convolution converts its inputs.
    pub fused: bool,
    /// A deterministic cuDNN algorithm wherever cuDNN offers one (default, so that runs repeat
    /// bit for bit); off, cuDNN's first-ranked algorithm.
    pub deterministic: bool,
    /// bf16 convolutions with input channels not a multiple of 8 (block 0: 3 colours and the
    /// label) run on zero-padded copies, which cuDNN's tensor-core kernels take (default);
    /// off, as they are.
    pub pad_channels: bool,
    /// Each convolution shape's algorithms ranked by timing them on the device when first
    /// used (cuDNN's Find, as `torch.backends.cudnn.benchmark`); off (default), by cuDNN's
    /// heuristics.
    pub cudnn_benchmark: bool,
}

impl GpuOptions {
    pub fn new(precision: Precision) -> Self {
        GpuOptions {
            precision,
            fused: true,
            deterministic: true,
            pad_channels: true,
            cudnn_benchmark: false,
        }
    }
}

/// Opens the backend that `$device` (`cpu`, `cuda`, `cuda:N`) names and evaluates `$body`
/// with `$b` bound to it. `$gpu` are the GPU's [`GpuOptions`]; the CPU ignores them.
macro_rules! with_backend {
    ($device:expr, $threads:expr, $gpu:expr, |$b:ident| $body:expr) => {
        match $crate::cli::DeviceArg::parse($device)? {
            $crate::cli::DeviceArg::Cpu => {
                let backend = $crate::backend::cpu::Cpu::new($threads)?;
                let $b = &backend;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::cli::DeviceArg::Cuda(n) => {
                let backend = $crate::backend::cuda::Cuda::with_options(n, $gpu)?;
                let $b = &backend;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            device @ $crate::cli::DeviceArg::Cuda(_) => {
                let _ = $gpu;
                Err(device.unavailable())
            }
        }
    };
}
pub(crate) use with_backend;

/// Shape of a 3x3, stride 1, padding 1, bias-free convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c_in: usize,
    pub c_out: usize,
}

impl ConvShape {
    /// The 2x2 max-pool over this convolution's output.
    pub fn output_pool(&self) -> PoolShape {
        PoolShape {
            n: self.n,
            h: self.h,
            w: self.w,
            c: self.c_out,
        }
    }

    /// The shape of the convolution that maps this one's output gradient to its input
    /// gradient (filters flipped in space, channels swapped): Cout inputs, Cin outputs.
    pub fn for_input_grad(&self) -> ConvShape {
        ConvShape {
            c_in: self.c_out,
            c_out: self.c_in,
            ..*self
        }
    }

    /// Multiply-adds times two, for one forward pass over the whole batch.
    pub fn forward_flops(&self) -> f64 {
        2.0 * (self.n * self.h * self.w * self.c_out * self.c_in * 9) as f64
    }
}

/// Shape of a per-channel (BatchNorm) reduction: `rows` = N*H*W, `channels` = C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelShape {
    pub rows: usize,
    pub channels: usize,
}

/// Shape of a per-sample reduction (LayerNorm, goodness): `n` samples of `features` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleShape {
    pub n: usize,
    pub features: usize,
}

/// Shape of a 2x2, stride 2 max-pool input (output is `h/2 x w/2`, floored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

/// Shape of the label-embedding concatenation: `n` images of `pixels` pixels and
/// `channels` image channels; the label plane is appended as channel `channels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbedShape {
    pub n: usize,
    pub pixels: usize,
    pub channels: usize,
}

/// The next block's BatchNorm in eval mode, for an evaluation op to apply to a block's
/// output as it writes it: `out` (the next block's normalised input, shaped as the output)
/// = batchnorm_forward_eval(output) with these parameters (`Cout` each) and `eps`.
pub struct NextNorm<'a, B: Backend> {
    pub out: &'a mut B::Buf,
    pub gamma: &'a B::Buf,
    pub beta: &'a B::Buf,
    pub running_mean: &'a B::Buf,
    pub running_var: &'a B::Buf,
    pub eps: f32,
}

/// The Forward-Forward losses on goodness. `goodness` holds `pairs` positives, then `pairs`
/// negatives (negative i is positive i with a wrong label).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FfLoss {
    /// `mean_i softplus(-alpha * (g_pos_i - g_neg_i))`.
    Symba { alpha: f32 },
    /// `mean over all 2B terms of [softplus(tau - g_pos), softplus(g_neg - tau)]`.
    Threshold { tau: f32 },
}

/// Adam hyper-parameters (PyTorch semantics, no weight decay).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl AdamParams {
    /// The host-side factors of step `step` (1-based) that every backend's Adam kernel
    /// uses: lr / (1 - beta1^t) and sqrt(1 - beta2^t), computed in f64.
    pub fn step_factors(&self, step: u64) -> (f32, f32) {
        let bias1 = 1.0 - (self.beta1 as f64).powi(step as i32);
        let bias2 = 1.0 - (self.beta2 as f64).powi(step as i32);
        ((self.lr as f64 / bias1) as f32, bias2.sqrt() as f32)
    }
}

impl Default for AdamParams {
    fn default() -> Self {
        AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Every kernel of the engine. Buffers are flat f32 arrays on the backend's device; the
/// shape structs say how to read them. Arguments come in llm.c order: outputs, then saved
/// values, then inputs, then sizes.
pub trait Backend: Send + Sync + Sized + 'static {
    /// A flat f32 buffer on this backend's device.
    type Buf: Send + Sync;

    /// A human-readable device name, e.g. `cpu (2 threads, AMD EPYC, AVX-512)`.
    fn name(&self) -> String;

    /// Bytes the device can still give, where allocating past it would not fail cleanly (on
    /// the CPU, memory is promised lazily and the kernel kills the process later). None: not
    /// known, or allocation failures are errors anyway (CUDA's are).
    fn available_memory(&self) -> Option<u64> {
        None
    }

    /// Waits until all queued work is done (timers call it; a synchronous backend need not).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Turns per-kernel timing on, for `bench --profile` (off by default: it costs a clock
    /// read, or two GPU events, per kernel).
    fn enable_profile(&self);

    /// Time per kernel since profiling was turned on: (scope, kernel, total, calls), slowest
    /// first.
    fn profile(&self) -> Result<Vec<crate::profile::Row>>;

    /// Names the work that follows in the profile (e.g. "block 2"); a no-op unless profiling.
    fn profile_scope(&self, scope: &'static str);

    // ---- memory ----
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// Makes `buf` `len` zeros. By default a new buffer; a backend may reuse the old one's
    /// memory instead.
    fn resize_zeroed(&self, buf: &mut Self::Buf, len: usize) -> Result<()> {
        *buf = self.zeros(len)?;
        Ok(())
    }
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    fn len(buf: &Self::Buf) -> usize;
    fn fill(&self, buf: &mut Self::Buf, value: f32) -> Result<()>;
    /// `fill` of several buffers (a GPU does them in one launch).
    fn fill_many(&self, bufs: &mut [&mut Self::Buf], value: f32) -> Result<()> {
        for buf in bufs {
            self.fill(buf, value)?;
        }
        Ok(())
    }
    /// Overwrite `dst` with host data of the same length.
    fn write(&self, dst: &mut Self::Buf, data: &[f32]) -> Result<()>;
    /// dst[offset .. offset + len(src)] = src, on the device.
    fn copy_into(&self, dst: &mut Self::Buf, offset: usize, src: &Self::Buf) -> Result<()>;
    /// `copy_into` of several (offset, src) pairs into one `dst` (a GPU does them in one
    /// launch), in order. Every range is checked before anything is copied.
    fn copy_many(&self, dst: &mut Self::Buf, parts: &[(usize, &Self::Buf)]) -> Result<()> {
        checks::copy_many::<Self>(dst, parts)?;
        for &(offset, src) in parts {
            self.copy_into(dst, offset, src)?;
        }
        Ok(())
    }

    // ---- label embedding ----
    /// `out (N, P, C+1) = concat(images (N, P, C), table[labels[n]] (P))`.
    fn embed_forward(
        &self,
        out: &mut Self::Buf,
        images: &Self::Buf,
        table: &Self::Buf,
        labels: &[u32],
        s: EmbedShape,
    ) -> Result<()>;
    /// `grad_table[labels[n]] += grad_input[n, :, C]`.
    fn embed_backward(
        &self,
        grad_table: &mut Self::Buf,
        grad_input: &Self::Buf,
        labels: &[u32],
        s: EmbedShape,
    ) -> Result<()>;

    // ---- convolution 3x3, padding 1, no bias ----
    fn conv3x3_forward(
        &self,
        out: &mut Self::Buf,
        input: &Self::Buf,
        weight: &Self::Buf,
        s: ConvShape,
    ) -> Result<()>;
    fn conv3x3_backward(
        &self,
        grad_input: Option<&mut Self::Buf>,
        grad_weight: &mut Self::Buf,
        grad_out: &Self::Buf,
        input: &Self::Buf,
        weight: &Self::Buf,
        s: ConvShape,
    ) -> Result<()>;

    // ---- a block's convolution with what follows it, for backends that fuse them ----
    /// Training: `activation` (N, H, W, Cout) = ReLU(conv3x3(input, weight)); with
    /// `pooled`, its 2x2 max-pool; `goodness` (N) of the block's output (`pooled`, or the
    /// activation). The same as those five ops one after the other, which is what this
    /// default does. With `pooled`, `activation` is only this op's record for
    /// [`Self::relu_pool_conv3x3_backward`], in a form of the backend's choosing (the CPU:
    /// the ReLU output; CUDA in bf16: the convolution's bf16 output before ReLU).
    fn conv3x3_relu_pool_goodness(
        &self,
        activation: &mut Self::Buf,
        pooled: Option<&mut Self::Buf>,
        goodness: &mut Self::Buf,
        input: &Self::Buf,
        weight: &Self::Buf,
        s: ConvShape,
    ) -> Result<()> {
        conv3x3_relu_pool_goodness_composed(self, activation, pooled, goodness, input, weight, s)
    }
    /// Evaluation: the values of [`Self::conv3x3_relu_pool_goodness`] with no backward to
    /// follow, so a pooled block's `activation` may be left unwritten. With `next`, the next
    /// block's BatchNorm (eval mode) is applied to the block's output as well, into
    /// `next.out`, and then the output itself may be left unwritten too. The default is the
    /// separate ops.
    #[allow(clippy::too_many_arguments)]
    fn conv3x3_relu_pool_goodness_eval(
        &self,
        activation: &mut Self::Buf,
        pooled: Option<&mut Self::Buf>,
        goodness: &mut Self::Buf,
        input: &Self::Buf,
        weight: &Self::Buf,
        s: ConvShape,
        next: Option<NextNorm<'_, Self>>,
    ) -> Result<()> {
        conv3x3_relu_pool_goodness_eval_composed(
            self, activation, pooled, goodness, input, weight, s, next,
        )
    }
    /// Evaluation from a convolution's output kept aside: `activation` = ReLU(`pre` +
    /// map `index` of `maps`, the map added to every sample), then the pool, goodness and
    /// optional next BatchNorm of [`Self::conv3x3_relu_pool_goodness_eval`]. `pre` is
    /// `(N, H, W, Cout)`, `maps` `(M, H, W, Cout)`. Evaluation uses it to share block 0's
    /// convolution between the labels. The default is [`Self::add_bias_map`] followed by
    /// the separate ops.
    #[allow(clippy::too_many_arguments)]
    fn bias_relu_pool_goodness(
        &self,
        activation: &mut Self::Buf,
        pooled: Option<&mut Self::Buf>,
        goodness: &mut Self::Buf,
        pre: &Self::Buf,
        maps: &Self::Buf,
        index: usize,
        s: ConvShape,
        next: Option<NextNorm<'_, Self>>,
    ) -> Result<()> {
        bias_relu_pool_goodness_composed(
            self, activation, pooled, goodness, pre, maps, index, s, next,
        )
    }

    /// The backward of [`Self::conv3x3_relu_pool_goodness`] from d(block output)
    /// `grad_output` (pooled shape with `pool`, else the activation's; may be overwritten):
    /// the ReLU (and pool) backward, then [`Self::conv3x3_backward`]. `activation` is what
    /// that forward left there. `grad_activation` (N, H, W, Cout) is scratch, used only with
    /// `pool`.
    #[allow(clippy::too_many_arguments)]
    fn relu_pool_conv3x3_backward(
        &self,
        grad_input: Option<&mut Self::Buf>,
        grad_weight: &mut Self::Buf,
        grad_activation: &mut Self::Buf,
        grad_output: &mut Self::Buf,
        activation: &Self::Buf,
        input: &Self::Buf,
        weight: &Self::Buf,
        s: ConvShape,
        pool: bool,
    ) -> Result<()> {
        relu_pool_conv3x3_backward_composed(
            self,
            grad_input,
            grad_weight,
            grad_activation,
            grad_output,
            activation,
            input,
            weight,
            s,
            pool,
        )
    }

    /// The backward of a block whose loss is on its own goodness, from d(goodness)
    /// `grad_goodness` (N): d(output) = [`Self::goodness_backward`] of `output` (the block's
    /// output: the pooled values with `pool`, else `activation` itself), then
    /// [`Self::relu_pool_conv3x3_backward`]. `grad_output` (the output's shape) is scratch for
    /// d(output), which a backend that fuses the two need not write. The default is the
    /// separate ops.
    #[allow(clippy::too_many_arguments)]
    fn goodness_relu_pool_conv3x3_backward(
        &self,
        grad_input: Option<&mut Self::Buf>,
        grad_weight: &mut Self::Buf,
        grad_activation: &mut Self::Buf,
        grad_output: &mut Self::Buf,
        grad_goodness: &Self::Buf,
        output: &Self::Buf,
        activation: &Self::Buf,
        input: &Self::Buf,
        weight: &Self::Buf,
        s: ConvShape,
        pool: bool,
    ) -> Result<()> {
        goodness_relu_pool_conv3x3_backward_composed(
            self,
            grad_input,
            grad_weight,
            grad_activation,
            grad_output,
            grad_goodness,
            output,
            activation,
            input,
            weight,
            s,
            pool,
        )
    }

    // ---- BatchNorm over (N, H, W) per channel ----
    /// Training mode: normalise with batch statistics, save mean and 1/std, and update the
    /// running statistics (unbiased variance) with `momentum`.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_train(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        running_mean: &mut Self::Buf,
        running_var: &mut Self::Buf,
        input: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        s: ChannelShape,
        eps: f32,
        momentum: f32,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_eval(
        &self,
        out: &mut Self::Buf,
        input: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        running_mean: &Self::Buf,
        running_var: &Self::Buf,
        s: ChannelShape,
        eps: f32,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_backward(
        &self,
        grad_input: Option<&mut Self::Buf>,
        grad_gamma: &mut Self::Buf,
        grad_beta: &mut Self::Buf,
        grad_out: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        input: &Self::Buf,
        gamma: &Self::Buf,
        s: ChannelShape,
    ) -> Result<()>;

    // ---- LayerNorm over all features of a sample ----
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        input: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        s: SampleShape,
        eps: f32,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        grad_input: Option<&mut Self::Buf>,
        grad_gamma: &mut Self::Buf,
        grad_beta: &mut Self::Buf,
        grad_out: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        input: &Self::Buf,
        gamma: &Self::Buf,
        s: SampleShape,
    ) -> Result<()>;

    // ---- ReLU and max-pool ----
    /// `out (N, F) = pre (N, F) + maps[index] (F)`: one of the `len(maps) / F` maps, added to
    /// every sample.
    fn add_bias_map(
        &self,
        out: &mut Self::Buf,
        pre: &Self::Buf,
        maps: &Self::Buf,
        index: usize,
        s: SampleShape,
    ) -> Result<()>;
    fn relu_forward(&self, x: &mut Self::Buf) -> Result<()>;
    /// grad (in place) *= (activation > 0), where `activation` is the ReLU output.
    fn relu_backward(&self, grad: &mut Self::Buf, activation: &Self::Buf) -> Result<()>;
    fn maxpool2_forward(&self, out: &mut Self::Buf, input: &Self::Buf, s: PoolShape) -> Result<()>;
    /// Routes each output gradient to the first maximum of its window (PyTorch's choice) and
    /// applies the ReLU mask of `activation` (the pool's input, a ReLU output) in the same pass.
    fn relu_maxpool2_backward(
        &self,
        grad_input: &mut Self::Buf,
        grad_out: &Self::Buf,
        activation: &Self::Buf,
        s: PoolShape,
    ) -> Result<()>;

    // ---- goodness and the FF losses ----
    /// goodness (N) = mean of squares of each sample.
    fn goodness_forward(
        &self,
        goodness: &mut Self::Buf,
        input: &Self::Buf,
        s: SampleShape,
    ) -> Result<()>;
    fn goodness_backward(
        &self,
        grad_input: &mut Self::Buf,
        grad_goodness: &Self::Buf,
        input: &Self::Buf,
        s: SampleShape,
    ) -> Result<()>;
    /// loss (1) and grad_goodness (2 * pairs) from goodness (2 * pairs).
    fn ff_loss(
        &self,
        loss: &mut Self::Buf,
        grad_goodness: &mut Self::Buf,
        goodness: &Self::Buf,
        pairs: usize,
        kind: FfLoss,
    ) -> Result<()>;

    // ---- classifier heads (the backprop and local-classifier baselines) ----
    /// out (N, C) = mean over the `pixels` positions of input (N, pixels, C), where
    /// `s.rows` = N * pixels.
    fn avgpool_forward(
        &self,
        out: &mut Self::Buf,
        input: &Self::Buf,
        s: ChannelShape,
        n: usize,
    ) -> Result<()>;
    /// grad_input (N, pixels, C) = grad_out (N, C) / pixels, broadcast.
    fn avgpool_backward(
        &self,
        grad_input: &mut Self::Buf,
        grad_out: &Self::Buf,
        s: ChannelShape,
        n: usize,
    ) -> Result<()>;
    /// out (N, out) = input (N, in) W^T + b, with W (out, in) and b (out).
    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &self,
        out: &mut Self::Buf,
        input: &Self::Buf,
        weight: &Self::Buf,
        bias: &Self::Buf,
        n: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        grad_input: Option<&mut Self::Buf>,
        grad_weight: &mut Self::Buf,
        grad_bias: &mut Self::Buf,
        grad_out: &Self::Buf,
        input: &Self::Buf,
        weight: &Self::Buf,
        n: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<()>;
    /// Mean softmax cross-entropy of logits (N, classes) against `labels`: loss (1) and
    /// grad_logits (N, classes) = (softmax - onehot) / N.
    fn cross_entropy(
        &self,
        loss: &mut Self::Buf,
        grad_logits: &mut Self::Buf,
        logits: &Self::Buf,
        labels: &[u32],
        classes: usize,
    ) -> Result<()>;

    // ---- optimiser ----
    /// One Adam step; `step` is the 1-based step count of this state.
    fn adam_step(
        &self,
        param: &mut Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        grad: &Self::Buf,
        step: u64,
        hp: AdamParams,
    ) -> Result<()>;
    /// `adam_step` of several parameters that share a step count (a GPU does them in one
    /// launch). Every parameter's lengths are checked before anything is updated.
    fn adam_step_many(
        &self,
        tensors: &mut [AdamTensor<'_, Self>],
        step: u64,
        hp: AdamParams,
    ) -> Result<()> {
        checks::adam_step_many::<Self>(tensors)?;
        for t in tensors {
            self.adam_step(t.param, t.m, t.v, t.grad, step, hp)?;
        }
        Ok(())
    }
}

/// One parameter of [`Backend::adam_step_many`]: its values, moments and gradient.
pub struct AdamTensor<'a, B: Backend> {
    pub param: &'a mut B::Buf,
    pub m: &'a mut B::Buf,
    pub v: &'a mut B::Buf,
    pub grad: &'a B::Buf,
}
