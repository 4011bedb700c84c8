//! The FF block: `norm -> conv 3x3 -> ReLU -> optional 2x2 max-pool`, and its goodness.
//!
//! Shapes for a batch of N: input `(N, H, W, Cin)`, normed `(N, H, W, Cin)`, activation
//! `(N, H, W, Cout)` (after ReLU), output `(N, H/2, W/2, Cout)` with pool, else the activation.
//! Goodness of a sample = mean over all its output units of the squared value.

use super::Param;
use super::conv::Conv3x3;
use super::norm::{NORM_EPS, Norm, NormKind};
use crate::backend::{Backend, ConvShape, NextNorm};
use crate::error::Result;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Geometry of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
    pub pool: bool,
}

impl BlockSpec {
    pub fn out_hw(&self) -> (usize, usize) {
        if self.pool {
            (self.h / 2, self.w / 2)
        } else {
            (self.h, self.w)
        }
    }

    /// Units per sample in the block's output.
    pub fn out_features(&self) -> usize {
        let (h, w) = self.out_hw();
        h * w * self.c_out
    }
}

pub struct Block<B: Backend> {
    pub spec: BlockSpec,
    pub norm: Norm<B>,
    pub conv: Conv3x3<B>,
    /// Batch size of the last forward.
    n: usize,
    /// (N, H, W, Cin)
    normed: Tensor<B>,
    /// (N, H, W, Cout), after ReLU
    activation: Tensor<B>,
    /// (N, H/2, W/2, Cout), only with pool
    pooled: Tensor<B>,
    /// (N)
    pub goodness: Tensor<B>,
    /// Evaluation only: the convolution's output kept for [`Block::forward_from_kept`],
    /// (N, H, W, Cout).
    kept: Tensor<B>,
    /// backward scratch: (N, H, W, Cout) and (N, H, W, Cin)
    grad_activation: Tensor<B>,
    grad_normed: Tensor<B>,
}

impl<B: Backend> Block<B> {
    pub fn new(backend: &B, spec: BlockSpec, norm: NormKind, rng: &mut Rng) -> Result<Self> {
        Ok(Block {
            spec,
            norm: Norm::new(backend, norm, spec.c_in, spec.h, spec.w)?,
            conv: Conv3x3::new(backend, spec.c_in, spec.c_out, rng)?,
            n: 0,
            normed: Tensor::zeros(backend, &[0])?,
            activation: Tensor::zeros(backend, &[0])?,
            pooled: Tensor::zeros(backend, &[0])?,
            goodness: Tensor::zeros(backend, &[0])?,
            kept: Tensor::zeros(backend, &[0])?,
            grad_activation: Tensor::zeros(backend, &[0])?,
            grad_normed: Tensor::zeros(backend, &[0])?,
        })
    }

    fn conv_shape(&self) -> ConvShape {
        self.conv.shape(self.n, self.spec.h, self.spec.w)
    }

    /// Parameters in PyTorch's registration order: norm weight, norm bias, conv weight.
    pub fn params(&self) -> [&Param<B>; 3] {
        [&self.norm.weight, &self.norm.bias, &self.conv.weight]
    }

    pub fn params_mut(&mut self) -> [&mut Param<B>; 3] {
        [
            &mut self.norm.weight,
            &mut self.norm.bias,
            &mut self.conv.weight,
        ]
    }

    /// Parameters with their PyTorch names, for the block at position `index`.
    pub fn named_params(&self, index: usize) -> [(String, &Param<B>); 3] {
        [
            (format!("block{index}.norm.weight"), &self.norm.weight),
            (format!("block{index}.norm.bias"), &self.norm.bias),
            (format!("block{index}.conv.weight"), &self.conv.weight),
        ]
    }

    pub fn named_params_mut(&mut self, index: usize) -> [(String, &mut Param<B>); 3] {
        [
            (format!("block{index}.norm.weight"), &mut self.norm.weight),
            (format!("block{index}.norm.bias"), &mut self.norm.bias),
            (format!("block{index}.conv.weight"), &mut self.conv.weight),
        ]
    }

    /// BatchNorm's running statistics with their PyTorch names (none under LayerNorm).
    pub fn named_buffers_mut(&mut self, index: usize) -> Vec<(String, &mut Tensor<B>)> {
        let norm = &mut self.norm;
        match (norm.running_mean.as_mut(), norm.running_var.as_mut()) {
            (Some(mean), Some(var)) => vec![
                (format!("block{index}.norm.running_mean"), mean),
                (format!("block{index}.norm.running_var"), var),
            ],
            _ => Vec::new(),
        }
    }

    /// The block's output after the last forward: `(N, H', W', Cout)`.
    pub fn output(&self) -> &B::Buf {
        if self.spec.pool {
            &self.pooled.buf
        } else {
            &self.activation.buf
        }
    }

    /// Sizes the activation, the pooled output (with pool) and the goodness for the batch
    /// of the current forward.
    fn size_outputs(&mut self, backend: &B) -> Result<()> {
        let (s, n) = (self.spec, self.n);
        self.activation.resize(backend, &[n, s.h, s.w, s.c_out])?;
        self.goodness.resize(backend, &[n])?;
        if s.pool {
            let (oh, ow) = s.out_hw();
            self.pooled.resize(backend, &[n, oh, ow, s.c_out])?;
        }
        Ok(())
    }

    /// Runs the block on `n` samples and computes their goodness (training or eval mode;
    /// either way the block's output is written, for whoever reads it).
    pub fn forward(&mut self, backend: &B, input: &B::Buf, n: usize, train: bool) -> Result<()> {
        match train {
            true => {
                self.normalise(backend, Some(input), n, true)?;
                let cs = self.conv_shape();
                let pooled = self.spec.pool.then_some(&mut self.pooled.buf);
                backend.conv3x3_relu_pool_goodness(
                    &mut self.activation.buf,
                    pooled,
                    &mut self.goodness.buf,
                    &self.normed.buf,
                    &self.conv.weight.value.buf,
                    cs,
                )
            }
            false => self.forward_eval(backend, Some(input), n, None),
        }
    }

    /// The part of a training forward that outlasts the step when nothing reads the block's
    /// output: its norm in training mode, which moves BatchNorm's running statistics exactly
    /// as [`Self::forward`] would (LayerNorm keeps no state, but runs the same). The block's
    /// output and goodness are left as they were.
    pub fn forward_norm_only(&mut self, backend: &B, input: &B::Buf, n: usize) -> Result<()> {
        self.normalise(backend, Some(input), n, true)
    }

    /// Sizes the buffers for `n` samples and normalises `input` into `normed`; None: the
    /// block before already wrote `normed` (see [`Self::norm_for_previous`]).
    fn normalise(
        &mut self,
        backend: &B,
        input: Option<&B::Buf>,
        n: usize,
        train: bool,
    ) -> Result<()> {
        let s = self.spec;
        self.n = n;
        self.normed.resize(backend, &[n, s.h, s.w, s.c_in])?;
        self.size_outputs(backend)?;
        match input {
            Some(input) => self
                .norm
                .forward(backend, &mut self.normed.buf, input, n, train),
            None => Ok(()),
        }
    }

    /// Evaluation of `n` samples: from `input`, or with None from the normalised input that
    /// the block before wrote. With `next`, the next block's BatchNorm is applied to this
    /// block's output as it goes out, into the next block's `normed` (and this block's
    /// output need not be written): see [`Self::norm_for_previous`].
    pub fn forward_eval(
        &mut self,
        backend: &B,
        input: Option<&B::Buf>,
        n: usize,
        next: Option<NextNorm<'_, B>>,
    ) -> Result<()> {
        self.normalise(backend, input, n, false)?;
        let cs = self.conv_shape();
        let pooled = self.spec.pool.then_some(&mut self.pooled.buf);
        backend.conv3x3_relu_pool_goodness_eval(
            &mut self.activation.buf,
            pooled,
            &mut self.goodness.buf,
            &self.normed.buf,
            &self.conv.weight.value.buf,
            cs,
            next,
        )
    }

    /// For the block before this one, in evaluation of `n` samples: this block's BatchNorm
    /// in eval mode, writing into this block's `normed` input, so that the block before
    /// applies it as it writes its output and this block skips its own pass
    /// ([`Self::forward_eval`] with no input). None with LayerNorm.
    pub fn norm_for_previous(&mut self, backend: &B, n: usize) -> Result<Option<NextNorm<'_, B>>> {
        let (Some(mean), Some(var)) = (&self.norm.running_mean, &self.norm.running_var) else {
            return Ok(None);
        };
        let s = self.spec;
        self.normed.resize(backend, &[n, s.h, s.w, s.c_in])?;
        Ok(Some(NextNorm {
            out: &mut self.normed.buf,
            gamma: &self.norm.weight.value.buf,
            beta: &self.norm.bias.value.buf,
            running_mean: &mean.buf,
            running_var: &var.buf,
            eps: NORM_EPS,
        }))
    }

    /// Evaluation, first half: norm (eval mode) and convolution of `n` samples, the
    /// convolution's output kept for [`Self::forward_from_kept`].
    pub fn forward_kept(&mut self, backend: &B, input: &B::Buf, n: usize) -> Result<()> {
        let s = self.spec;
        self.normalise(backend, Some(input), n, false)?;
        self.kept.resize(backend, &[n, s.h, s.w, s.c_out])?;
        let cs = self.conv_shape();
        backend.conv3x3_forward(
            &mut self.kept.buf,
            &self.normed.buf,
            &self.conv.weight.value.buf,
            cs,
        )
    }

    /// Evaluation, second half: the block's output and goodness as if its convolution had
    /// given the kept output plus map `index` of `maps` `(M, H, W, Cout)` in every sample;
    /// `next` as in [`Self::forward_eval`].
    pub fn forward_from_kept(
        &mut self,
        backend: &B,
        maps: &B::Buf,
        index: usize,
        next: Option<NextNorm<'_, B>>,
    ) -> Result<()> {
        let cs = self.conv_shape();
        self.size_outputs(backend)?;
        let pooled = self.spec.pool.then_some(&mut self.pooled.buf);
        backend.bias_relu_pool_goodness(
            &mut self.activation.buf,
            pooled,
            &mut self.goodness.buf,
            &self.kept.buf,
            maps,
            index,
            cs,
            next,
        )
    }

    /// Backward from d(output) `grad_output` (used as scratch when there is no pool), or
    /// with `grad_goodness` from d(goodness) (N) of this block's own loss, `grad_output` then
    /// being scratch for d(output) that a backend may not write. Accumulates into the norm
    /// and conv parameter gradients; assigns `grad_input` `(N, H, W, Cin)` when asked for.
    /// `input` is the one given to the last (training-mode) forward.
    pub fn backward(
        &mut self,
        backend: &B,
        grad_input: Option<&mut B::Buf>,
        grad_output: &mut B::Buf,
        grad_goodness: Option<&B::Buf>,
        input: &B::Buf,
    ) -> Result<()> {
        let s = self.spec;
        let n = self.n;
        let cs = self.conv_shape();
        if s.pool {
            self.grad_activation
                .resize(backend, &[n, s.h, s.w, s.c_out])?;
        }
        // The conv's input gradient is always needed: the norm's weight and bias learn from it.
        self.grad_normed.resize(backend, &[n, s.h, s.w, s.c_in])?;
        let output = match s.pool {
            true => &self.pooled.buf,
            false => &self.activation.buf,
        };
        match grad_goodness {
            Some(grad_goodness) => backend.goodness_relu_pool_conv3x3_backward(
                Some(&mut self.grad_normed.buf),
                &mut self.conv.weight.grad.buf,
                &mut self.grad_activation.buf,
                grad_output,
                grad_goodness,
                output,
                &self.activation.buf,
                &self.normed.buf,
                &self.conv.weight.value.buf,
                cs,
                s.pool,
            )?,
            None => backend.relu_pool_conv3x3_backward(
                Some(&mut self.grad_normed.buf),
                &mut self.conv.weight.grad.buf,
                &mut self.grad_activation.buf,
                grad_output,
                &self.activation.buf,
                &self.normed.buf,
                &self.conv.weight.value.buf,
                cs,
                s.pool,
            )?,
        }
        self.norm
            .backward(backend, grad_input, &self.grad_normed.buf, input, n)
    }
}
