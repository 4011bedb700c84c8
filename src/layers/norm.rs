//! The two normalisations that an FF block can start with.
//!
//! BatchNorm2d: per channel over (N, H, W); training mode uses batch statistics (over the whole
//! batch given, which in FF is positives and negatives together) and updates running mean and
//! unbiased running variance with momentum 0.1; eval mode uses the running statistics.
//! LayerNorm: per sample over (H, W, C), with an affine weight and bias per element `(H, W, C)`.
//! Both: `y = (x - mean) / sqrt(var + eps) * gamma + beta`, eps = 1e-5.

use super::{Param, ParamLayout};
use crate::backend::{Backend, ChannelShape, SampleShape};
use crate::error::Result;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    Batch,
    Layer,
}

pub const NORM_EPS: f32 = 1e-5;
pub const BN_MOMENTUM: f32 = 0.1;

pub struct Norm<B: Backend> {
    pub kind: NormKind,
    pub weight: Param<B>,
    pub bias: Param<B>,
    /// BatchNorm only: running statistics `(C)`.
    pub running_mean: Option<Tensor<B>>,
    pub running_var: Option<Tensor<B>>,
    /// Saved for backward: `(C)` for BatchNorm, `(N)` for LayerNorm.
    mean: Tensor<B>,
    rstd: Tensor<B>,
    c: usize,
    h: usize,
    w: usize,
}

impl<B: Backend> Norm<B> {
    pub fn new(backend: &B, kind: NormKind, c: usize, h: usize, w: usize) -> Result<Self> {
        let (shape, layout) = match kind {
            NormKind::Batch => (vec![c], ParamLayout::Plain),
            NormKind::Layer => (vec![c, h, w], ParamLayout::Chw { c, h, w }),
        };
        let numel: usize = shape.iter().product();
        let weight = Param::new(backend, "weight", &shape, layout, &vec![1.0; numel])?;
        let bias = Param::new(backend, "bias", &shape, layout, &vec![0.0; numel])?;
        let (running_mean, running_var) = match kind {
            NormKind::Batch => (
                Some(Tensor::zeros(backend, &[c])?),
                Some(Tensor::from_host(backend, &[c], &vec![1.0; c])?),
            ),
            NormKind::Layer => (None, None),
        };
        Ok(Norm {
            kind,
            weight,
            bias,
            running_mean,
            running_var,
            mean: Tensor::zeros(backend, &[c])?,
            rstd: Tensor::zeros(backend, &[c])?,
            c,
            h,
            w,
        })
    }

    fn channel_shape(&self, n: usize) -> ChannelShape {
        ChannelShape {
            rows: n * self.h * self.w,
            channels: self.c,
        }
    }

    fn sample_shape(&self, n: usize) -> SampleShape {
        SampleShape {
            n,
            features: self.h * self.w * self.c,
        }
    }

    /// out = norm(input) for `n` samples; `train` selects batch statistics (and updates the
    /// running ones) over running statistics.
    pub fn forward(
        &mut self,
        backend: &B,
        out: &mut B::Buf,
        input: &B::Buf,
        n: usize,
        train: bool,
    ) -> Result<()> {
        match self.kind {
            NormKind::Batch => {
                let s = self.channel_shape(n);
                let running_mean = self
                    .running_mean
                    .as_mut()
                    .expect("batch norm has running stats");
                let running_var = self
                    .running_var
                    .as_mut()
                    .expect("batch norm has running stats");
                if train {
                    backend.batchnorm_forward_train(
                        out,
                        &mut self.mean.buf,
                        &mut self.rstd.buf,
                        &mut running_mean.buf,
                        &mut running_var.buf,
                        input,
                        &self.weight.value.buf,
                        &self.bias.value.buf,
                        s,
                        NORM_EPS,
                        BN_MOMENTUM,
                    )
                } else {
                    backend.batchnorm_forward_eval(
                        out,
                        input,
                        &self.weight.value.buf,
                        &self.bias.value.buf,
                        &running_mean.buf,
                        &running_var.buf,
                        s,
                        NORM_EPS,
                    )
                }
            }
            NormKind::Layer => {
                let ss = self.sample_shape(n);
                self.mean.resize(backend, &[n])?;
                self.rstd.resize(backend, &[n])?;
                backend.layernorm_forward(
                    out,
                    &mut self.mean.buf,
                    &mut self.rstd.buf,
                    input,
                    &self.weight.value.buf,
                    &self.bias.value.buf,
                    ss,
                    NORM_EPS,
                )
            }
        }
    }

    /// BatchNorm in eval mode is `x * scale + shift` per channel: `scale` = weight /
    /// sqrt(running variance + eps), read from the device. None for LayerNorm, whose
    /// statistics depend on each sample.
    pub fn eval_scale(&self, backend: &B) -> Result<Option<Vec<f32>>> {
        let Some(running_var) = &self.running_var else {
            return Ok(None);
        };
        let gamma = self.weight.value.to_host(backend)?;
        let var = running_var.to_host(backend)?;
        Ok(Some(
            gamma
                .iter()
                .zip(&var)
                .map(|(g, v)| (f64::from(*g) / (f64::from(*v) + f64::from(NORM_EPS)).sqrt()) as f32)
                .collect(),
        ))
    }

    /// Accumulates weight and bias gradients; assigns `grad_input` when asked for. Must follow
    /// a training-mode forward on the same `input`.
    pub fn backward(
        &mut self,
        backend: &B,
        grad_input: Option<&mut B::Buf>,
        grad_out: &B::Buf,
        input: &B::Buf,
        n: usize,
    ) -> Result<()> {
        let (cs, ss) = (self.channel_shape(n), self.sample_shape(n));
        match self.kind {
            NormKind::Batch => backend.batchnorm_backward(
                grad_input,
                &mut self.weight.grad.buf,
                &mut self.bias.grad.buf,
                grad_out,
                &self.mean.buf,
                &self.rstd.buf,
                input,
                &self.weight.value.buf,
                cs,
            ),
            NormKind::Layer => backend.layernorm_backward(
                grad_input,
                &mut self.weight.grad.buf,
                &mut self.bias.grad.buf,
                grad_out,
                &self.mean.buf,
                &self.rstd.buf,
                input,
                &self.weight.value.buf,
                ss,
            ),
        }
    }
}
