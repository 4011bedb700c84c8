//! Layers: parameters, the activations they save for backward, and the calls into the backend
//! kernels. One file per layer type; `block` composes them into the FF block
//! `norm -> conv 3x3 -> ReLU -> optional 2x2 max-pool`.
//!
//! Parameters are held in the backend layout. [`ParamLayout`] converts to and from PyTorch's
//! layout, which is what checkpoints and golden files use.

pub mod block;
pub mod conv;
pub mod embedding;
pub mod head;
pub mod linear;
pub mod norm;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// How a parameter's backend layout relates to PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamLayout {
    /// Same order in both.
    Plain,
    /// Conv weight: PyTorch (O, I, 3, 3), backend (O, 3, 3, I).
    ConvOihw { c_out: usize, c_in: usize },
    /// Per-feature affine: PyTorch (C, H, W), backend (H, W, C).
    Chw { c: usize, h: usize, w: usize },
}

impl ParamLayout {
    /// PyTorch-ordered data to backend order.
    pub fn from_torch(&self, data: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; data.len()];
        match *self {
            ParamLayout::Plain => out.copy_from_slice(data),
            ParamLayout::ConvOihw { c_out, c_in } => {
                for o in 0..c_out {
                    for i in 0..c_in {
                        for k in 0..9 {
                            out[(o * 9 + k) * c_in + i] = data[(o * c_in + i) * 9 + k];
                        }
                    }
                }
            }
            ParamLayout::Chw { c, h, w } => {
                for ch in 0..c {
                    for p in 0..h * w {
                        out[p * c + ch] = data[ch * h * w + p];
                    }
                }
            }
        }
        out
    }

    /// Backend-ordered data to PyTorch order.
    pub fn to_torch(&self, data: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; data.len()];
        match *self {
            ParamLayout::Plain => out.copy_from_slice(data),
            ParamLayout::ConvOihw { c_out, c_in } => {
                for o in 0..c_out {
                    for i in 0..c_in {
                        for k in 0..9 {
                            out[(o * c_in + i) * 9 + k] = data[(o * 9 + k) * c_in + i];
                        }
                    }
                }
            }
            ParamLayout::Chw { c, h, w } => {
                for ch in 0..c {
                    for p in 0..h * w {
                        out[ch * h * w + p] = data[p * c + ch];
                    }
                }
            }
        }
        out
    }
}

/// A trainable tensor, its gradient, and its PyTorch name and shape.
pub struct Param<B: Backend> {
    /// PyTorch-style name relative to its layer, e.g. `weight`.
    pub name: &'static str,
    /// PyTorch shape.
    pub torch_shape: Vec<usize>,
    pub layout: ParamLayout,
    pub value: Tensor<B>,
    pub grad: Tensor<B>,
}

impl<B: Backend> Param<B> {
    /// A parameter from PyTorch-ordered host data.
    pub fn new(
        backend: &B,
        name: &'static str,
        torch_shape: &[usize],
        layout: ParamLayout,
        torch_data: &[f32],
    ) -> Result<Self> {
        let value = Tensor::from_host(backend, torch_shape, &layout.from_torch(torch_data))?;
        let grad = Tensor::zeros(backend, torch_shape)?;
        Ok(Param {
            name,
            torch_shape: torch_shape.to_vec(),
            layout,
            value,
            grad,
        })
    }

    pub fn numel(&self) -> usize {
        self.value.numel()
    }

    /// The value in PyTorch order.
    pub fn to_torch(&self, backend: &B) -> Result<Vec<f32>> {
        Ok(self.layout.to_torch(&self.value.to_host(backend)?))
    }

    /// The gradient in PyTorch order.
    pub fn grad_to_torch(&self, backend: &B) -> Result<Vec<f32>> {
        Ok(self.layout.to_torch(&self.grad.to_host(backend)?))
    }

    /// Overwrites the value from PyTorch-ordered data.
    pub fn load_torch(&mut self, backend: &B, data: &[f32]) -> Result<()> {
        backend.write(&mut self.value.buf, &self.layout.from_torch(data))
    }
}

/// Zeroes the gradients of `params`, in one launch on a backend that can (`fill_many`).
pub fn zero_grads<'a, B: Backend + 'a>(
    backend: &B,
    params: impl IntoIterator<Item = &'a mut Param<B>>,
) -> Result<()> {
    let mut grads: Vec<&mut B::Buf> = params.into_iter().map(|p| &mut p.grad.buf).collect();
    backend.fill_many(&mut grads, 0.0)
}

/// A network whose whole training state a checkpoint holds (`run::checkpoint`): its
/// parameters (PyTorch names and layouts), BatchNorm's running statistics, the Adam moments
/// and step counts, and the steps trained. FF networks (`checkpoint.safetensors`) and the
/// baselines (`weights.safetensors`) are saved and resumed alike; each implements it beside
/// its private optimiser state.
pub trait Saved<B: Backend> {
    /// Whether this is an FF network (else a baseline's classifier).
    const FF: bool;
    fn named_params_mut(&mut self) -> Vec<(String, &mut Param<B>)>;
    fn named_buffers_mut(&mut self) -> Vec<(String, &mut Tensor<B>)>;
    fn named_optimizer_buffers_mut(&mut self) -> Vec<(String, &mut B::Buf)>;
    /// Each block's two Adam groups' step counts.
    fn step_counts_mut(&mut self) -> Vec<[&mut u64; 2]>;
    fn iteration_mut(&mut self) -> &mut u64;

    /// The Adam step counts per block, as the header keeps them.
    fn optimizer_steps(&mut self) -> Vec<[u64; 2]> {
        self.step_counts_mut()
            .into_iter()
            .map(|[a, b]| [*a, *b])
            .collect()
    }

    fn set_optimizer_steps(&mut self, steps: &[[u64; 2]]) -> Result<()> {
        let mut counts = self.step_counts_mut();
        if steps.len() != counts.len() {
            return Err(Error::Config(format!(
                "{} optimiser step counts for {} blocks",
                steps.len(),
                counts.len()
            )));
        }
        for ([a, b], s) in counts.iter_mut().zip(steps) {
            (**a, **b) = (s[0], s[1]);
        }
        Ok(())
    }
}
