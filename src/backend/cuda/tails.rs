//! What several ops share after a convolution: the per-column partial sums behind every
//! norm's statistics, and the fused tails (ReLU, pool, goodness, and the next block's
//! BatchNorm) of the evaluation and of the bf16 backward. The ops that call them are in `ops`.

use super::sig::NextNormArgs;
use super::{Cuda, CudaBuf, Scratch, grow, int, nvrtc, pool_dims, sig};
use crate::backend::{ConvShape, NextNorm, checks};
use crate::error::Result;

/// The inputs of the per-column partial-sum kernels.
pub(super) enum PartialInputs<'a> {
    /// sum x.
    Sum(&'a CudaBuf),
    /// sum (x - k) and sum (x - k)^2, k the column's value in row 0 (kernels.cu's
    /// `MomentsItem`).
    Moments(&'a CudaBuf),
    /// sum dy and sum dy * x.
    DyDyx(&'a CudaBuf, &'a CudaBuf),
    /// sum dy * xhat and sum dy, with per-row statistics.
    DyXhatRows {
        dy: &'a CudaBuf,
        x: &'a CudaBuf,
        mean: &'a CudaBuf,
        rstd: &'a CudaBuf,
    },
}

/// Where the backward of a block's tail starts.
#[derive(Clone, Copy)]
pub(super) enum TailGrad<'a> {
    /// d(block output).
    Output(&'a CudaBuf),
    /// d(goodness), one per sample: the goodness backward is part of the same pass.
    Goodness(&'a CudaBuf),
}

impl Cuda {
    /// Per-column partial sums into the scratch partials; returns the partition.
    pub(super) fn launch_partials(
        &self,
        scratch: &mut Scratch,
        rows: usize,
        cols: usize,
        inputs: PartialInputs,
    ) -> Result<nvrtc::Partials> {
        // Every BatchNorm row is alike (column statistics), so narrow ones fold; LayerNorm's
        // per-row statistics need the true row index.
        let p = match inputs {
            PartialInputs::DyXhatRows { .. } => nvrtc::partials(rows, cols, self.sms),
            _ => nvrtc::folded_partials(rows, cols, self.sms),
        };
        let a = grow(&self.stream, &mut scratch.part_a, p.parts * cols)
            .map_err(|x| self.err("allocation", x))?;
        let b = grow(&self.stream, &mut scratch.part_b, p.parts * cols)
            .map_err(|x| self.err("allocation", x))?;
        let (rows_i, cols_i) = (p.rows as i64, int("columns", p.cols)?);
        let (period, chunk) = (int("columns", cols)?, p.chunk as i64);
        let (cfg, moments) = (p.config(), matches!(inputs, PartialInputs::Moments(_)));
        // SAFETY (of each launch): the buffers hold rows x cols elements (checked by the
        // callers) and parts x cols partials. A gradient may be held as bf16 values alone
        // (`grad_values`): the `_bf16` kernels.
        match inputs {
            PartialInputs::Sum(x) | PartialInputs::Moments(x) => {
                let kernel = if moments {
                    sig::partial_moments
                } else {
                    sig::partial_sum
                };
                launch!(
                    self,
                    kernel,
                    cfg,
                    a,
                    b,
                    x.f32()?,
                    &rows_i,
                    &cols_i,
                    &period,
                    &chunk
                );
            }
            PartialInputs::DyDyx(dy, x) => {
                let (half, dy) = self.grad_values(dy)?;
                launch!(
                    self,
                    either(half, sig::partial_dy_dyx_bf16, sig::partial_dy_dyx),
                    cfg,
                    a,
                    b,
                    &dy,
                    x.f32()?,
                    &rows_i,
                    &cols_i,
                    &period,
                    &chunk
                );
            }
            PartialInputs::DyXhatRows { dy, x, mean, rstd } => {
                let (half, dy) = self.grad_values(dy)?;
                launch!(
                    self,
                    either(
                        half,
                        sig::partial_dy_xhat_rows_bf16,
                        sig::partial_dy_xhat_rows
                    ),
                    cfg,
                    a,
                    b,
                    &dy,
                    x.f32()?,
                    mean.f32()?,
                    rstd.f32()?,
                    &rows_i,
                    &cols_i,
                    &period,
                    &chunk
                );
            }
        }
        Ok(p)
    }

    /// Launches an evaluation tail kernel (`from`: whether the values it reads are bf16, and
    /// their address) with the bias map at `bias` (0: none) and the next block's BatchNorm, if
    /// any, into `next.out` (with its bf16 copy in bf16).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn eval_tail(
        &self,
        from: (bool, u64),
        bias: u64,
        activation: &mut CudaBuf,
        pooled: Option<&mut CudaBuf>,
        goodness: &mut CudaBuf,
        s: ConvShape,
        next: Option<NextNorm<'_, Self>>,
    ) -> Result<()> {
        if s.n == 0 {
            return Ok(());
        }
        let (half, y) = from;
        let (h, w, c) = (int("h", s.h)?, int("w", s.w)?, int("c", s.c_out)?);
        let pool = pooled.is_some() as i32;
        // Raw addresses: `y` may be the activation itself (f32, in place), and `pooled` is
        // absent without pool (the kernel then never touches it).
        let pooled = pooled.map_or(0, |p| self.ptr(p.f32_mut()));
        let next = match next {
            None => NextNormArgs::default(),
            Some(n) => {
                let (gamma, beta) = (self.ptr(n.gamma.f32()?), self.ptr(n.beta.f32()?));
                let (mean, var) = (
                    self.ptr(n.running_mean.f32()?),
                    self.ptr(n.running_var.f32()?),
                );
                let (out, out_half) = self.conv_operand_out(n.out)?;
                NextNormArgs {
                    out,
                    out_half,
                    gamma,
                    beta,
                    running_mean: mean,
                    running_var: var,
                    eps: n.eps,
                }
            }
        };
        launch!(
            self,
            either(half, sig::eval_tail_bf16, sig::eval_tail_f32),
            nvrtc::per_row(s.n),
            activation.f32_mut(),
            &pooled,
            goodness.f32_mut(),
            &y,
            &bias,
            &h,
            &w,
            &c,
            &pool,
            &next
        );
        Ok(())
    }

    /// The fused bf16 backward of a block's tail and convolution: d(conv output) in bf16
    /// straight into the convolution's operand (the scratch slot 2), from d(output) or from
    /// d(goodness), reading the forward's record in `activation` (bf16 with pool), then the
    /// convolution's backward. The caller has checked the shapes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bf16_tail_backward(
        &self,
        from: TailGrad<'_>,
        grad_input: Option<&mut CudaBuf>,
        grad_weight: &mut CudaBuf,
        activation: &CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
        pool: bool,
    ) -> Result<()> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let ny = checks::conv_sizes(s).2;
        let dy = grow(&self.stream, &mut state.scratch.half[2], ny)
            .map_err(|e| self.err("allocation", e))?;
        let (goodness, grad) = match from {
            TailGrad::Output(g) => (false, g.f32()?),
            TailGrad::Goodness(g) => (true, g.f32()?),
        };
        if pool {
            let (n, h, w, c) = pool_dims(s.output_pool())?;
            // The convolution's bf16 output, the pooled record, kept in the activation's
            // storage.
            let record = self.ptr(activation.f32()?);
            launch!(
                self,
                either(
                    goodness,
                    sig::goodness_relu_maxpool2_backward_bf16,
                    sig::relu_maxpool2_backward_bf16
                ),
                nvrtc::quads(checks::pool_sizes(s.output_pool()).1, s.c_out),
                dy,
                grad,
                &record,
                &n,
                &h,
                &w,
                &c
            );
        } else if goodness {
            let features = int("features", ny / s.n.max(1))?;
            let total = ny as i64;
            launch!(
                self,
                sig::goodness_relu_backward_bf16,
                nvrtc::quads(ny, features as usize),
                dy,
                grad,
                activation.f32()?,
                &features,
                &total
            );
        } else {
            let total = ny as i64;
            launch!(
                self,
                sig::relu_backward_bf16,
                nvrtc::quads(ny, ny),
                dy,
                grad,
                activation.f32()?,
                &total
            );
        }
        self.conv_backward(state, grad_input, grad_weight, None, input, weight, s)
    }
}
