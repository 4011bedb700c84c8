//! Linear layer `y = x W^T + b`: input `(N, in)`, weight `(out, in)`, bias `(out)`; initialised
//! like PyTorch's `nn.Linear`, U(-1/sqrt(in), 1/sqrt(in)) for both.

use super::{Param, ParamLayout};
use crate::backend::Backend;
use crate::error::Result;
use crate::rng::Rng;

pub struct Linear<B: Backend> {
    pub weight: Param<B>,
    pub bias: Param<B>,
    pub inputs: usize,
    pub outputs: usize,
}

impl<B: Backend> Linear<B> {
    pub fn new(backend: &B, inputs: usize, outputs: usize, rng: &mut Rng) -> Result<Self> {
        let bound = 1.0 / (inputs as f32).sqrt();
        let w: Vec<f32> = (0..outputs * inputs)
            .map(|_| rng.uniform(-bound, bound))
            .collect();
        let b: Vec<f32> = (0..outputs).map(|_| rng.uniform(-bound, bound)).collect();
        Ok(Linear {
            weight: Param::new(
                backend,
                "weight",
                &[outputs, inputs],
                ParamLayout::Plain,
                &w,
            )?,
            bias: Param::new(backend, "bias", &[outputs], ParamLayout::Plain, &b)?,
            inputs,
            outputs,
        })
    }

    pub fn forward(&self, backend: &B, out: &mut B::Buf, input: &B::Buf, n: usize) -> Result<()> {
        backend.linear_forward(
            out,
            input,
            &self.weight.value.buf,
            &self.bias.value.buf,
            n,
            self.inputs,
            self.outputs,
        )
    }

    /// Accumulates weight and bias gradients; assigns `grad_input` when asked for.
    pub fn backward(
        &mut self,
        backend: &B,
        grad_input: Option<&mut B::Buf>,
        grad_out: &B::Buf,
        input: &B::Buf,
        n: usize,
    ) -> Result<()> {
        backend.linear_backward(
            grad_input,
            &mut self.weight.grad.buf,
            &mut self.bias.grad.buf,
            grad_out,
            input,
            &self.weight.value.buf,
            n,
            self.inputs,
            self.outputs,
        )
    }
}
