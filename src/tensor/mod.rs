//! `Tensor` = a shape plus a flat f32 buffer on some backend's device. Layout is the
//! backend's convention (see `backend`): the shape is only read, never used to reorder data.

use crate::backend::Backend;
use crate::error::{Error, Result};

pub struct Tensor<B: Backend> {
    pub shape: Vec<usize>,
    pub buf: B::Buf,
}

impl<B: Backend> Tensor<B> {
    pub fn zeros(backend: &B, shape: &[usize]) -> Result<Self> {
        Ok(Tensor {
            shape: shape.to_vec(),
            buf: backend.zeros(shape.iter().product())?,
        })
    }

    pub fn from_host(backend: &B, shape: &[usize], data: &[f32]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            return Err(Error::Shape {
                op: "Tensor::from_host",
                expected: shape.to_vec(),
                got: vec![data.len()],
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            buf: backend.upload(data)?,
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn to_host(&self, backend: &B) -> Result<Vec<f32>> {
        backend.download(&self.buf)
    }

    /// Makes this tensor `shape`, reallocating (zeroed) only when the size changes. Used for
    /// activation buffers that follow the batch size.
    pub fn resize(&mut self, backend: &B, shape: &[usize]) -> Result<()> {
        let numel: usize = shape.iter().product();
        if B::len(&self.buf) != numel {
            self.buf = backend.zeros(numel)?;
        }
        self.shape = shape.to_vec();
        Ok(())
    }
}
