//! Adam (PyTorch semantics, no weight decay) over a group of parameters that share one step
//! count. m and v are fp32, one pair per parameter:
//!   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//!   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

use crate::backend::{AdamParams, AdamTensor, Backend};
use crate::error::Result;
use crate::layers::Param;

pub struct AdamGroup<B: Backend> {
    /// First and second moments, one per parameter, in the group's order.
    pub m: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    /// Steps taken so far.
    pub step: u64,
}

impl<B: Backend> AdamGroup<B> {
    pub fn new(backend: &B, sizes: &[usize]) -> Result<Self> {
        Ok(AdamGroup {
            m: sizes
                .iter()
                .map(|n| backend.zeros(*n))
                .collect::<Result<_>>()?,
            v: sizes
                .iter()
                .map(|n| backend.zeros(*n))
                .collect::<Result<_>>()?,
            step: 0,
        })
    }

    /// The moments with PyTorch's names (`exp_avg`, `exp_avg_sq`), as `{prefix}.{k}.exp_avg`
    /// for the group's parameter k.
    pub fn named_buffers_mut(&mut self, prefix: &str) -> Vec<(String, &mut B::Buf)> {
        let mut out = Vec::new();
        for (k, (m, v)) in self.m.iter_mut().zip(self.v.iter_mut()).enumerate() {
            out.push((format!("{prefix}.{k}.exp_avg"), m));
            out.push((format!("{prefix}.{k}.exp_avg_sq"), v));
        }
        out
    }

    /// One step over `params`, which must be the group's parameters in its order.
    pub fn step(
        &mut self,
        backend: &B,
        params: &mut [&mut Param<B>],
        hp: AdamParams,
    ) -> Result<()> {
        self.step += 1;
        let mut tensors: Vec<AdamTensor<'_, B>> = params
            .iter_mut()
            .zip(&mut self.m)
            .zip(&mut self.v)
            .map(|((param, m), v)| {
                let Param { value, grad, .. } = &mut **param;
                AdamTensor {
                    param: &mut value.buf,
                    m,
                    v,
                    grad: &grad.buf,
                }
            })
            .collect();
        backend.adam_step_many(&mut tensors, self.step, hp)
    }
}
