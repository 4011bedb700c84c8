//! A classifier head: global average pooling `(N, H, W, C) -> (N, C)`, then a linear layer to
//! the class logits `(N, classes)`. The backprop baseline puts one on its trunk; the local
//! classifier proxy puts one on every block.

use super::Param;
use super::linear::Linear;
use crate::backend::{Backend, ChannelShape};
use crate::error::Result;
use crate::rng::Rng;
use crate::tensor::Tensor;

pub struct Head<B: Backend> {
    pub linear: Linear<B>,
    /// Positions pooled per sample (H*W of the input).
    pixels: usize,
    n: usize,
    /// (N, C)
    pooled: Tensor<B>,
    /// (N, classes)
    pub logits: Tensor<B>,
    grad_pooled: Tensor<B>,
}

impl<B: Backend> Head<B> {
    pub fn new(
        backend: &B,
        channels: usize,
        pixels: usize,
        classes: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(Head {
            linear: Linear::new(backend, channels, classes, rng)?,
            pixels,
            n: 0,
            pooled: Tensor::zeros(backend, &[0])?,
            logits: Tensor::zeros(backend, &[0])?,
            grad_pooled: Tensor::zeros(backend, &[0])?,
        })
    }

    fn shape(&self) -> ChannelShape {
        ChannelShape {
            rows: self.n * self.pixels,
            channels: self.linear.inputs,
        }
    }

    pub fn params_mut(&mut self) -> [&mut Param<B>; 2] {
        [&mut self.linear.weight, &mut self.linear.bias]
    }

    pub fn params(&self) -> [&Param<B>; 2] {
        [&self.linear.weight, &self.linear.bias]
    }

    pub fn forward(&mut self, backend: &B, input: &B::Buf, n: usize) -> Result<()> {
        self.n = n;
        self.pooled.resize(backend, &[n, self.linear.inputs])?;
        self.logits.resize(backend, &[n, self.linear.outputs])?;
        let s = self.shape();
        backend.avgpool_forward(&mut self.pooled.buf, input, s, n)?;
        self.linear
            .forward(backend, &mut self.logits.buf, &self.pooled.buf, n)
    }

    /// From d(logits) to d(input) `(N, H, W, C)`, accumulating the linear layer's gradients.
    pub fn backward(
        &mut self,
        backend: &B,
        grad_input: &mut B::Buf,
        grad_logits: &B::Buf,
    ) -> Result<()> {
        let n = self.n;
        self.grad_pooled.resize(backend, &[n, self.linear.inputs])?;
        self.linear.backward(
            backend,
            Some(&mut self.grad_pooled.buf),
            grad_logits,
            &self.pooled.buf,
            n,
        )?;
        let s = self.shape();
        backend.avgpool_backward(grad_input, &self.grad_pooled.buf, s, n)
    }
}
