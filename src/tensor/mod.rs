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
            backend.resize_zeroed(&mut self.buf, numel)?;
        }
        self.shape = shape.to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;

    /// A resize to another size gives zeros, whether the memory is new or reused (the CPU
    /// keeps the old allocation), and a resize to the same size keeps the values.
    #[test]
    fn resize_gives_zeros_when_the_size_changes() {
        let cpu = Cpu::new(1).unwrap();
        let mut t = Tensor::from_host(&cpu, &[2, 3], &[1.0; 6]).unwrap();
        for shape in [[1, 4], [3, 3], [1, 2]] {
            t.resize(&cpu, &shape).unwrap();
            assert_eq!(t.shape, shape);
            assert_eq!(t.to_host(&cpu).unwrap(), vec![0.0; shape[0] * shape[1]]);
            cpu.fill(&mut t.buf, 5.0).unwrap();
        }
        t.resize(&cpu, &[2, 1]).unwrap();
        assert_eq!(t.to_host(&cpu).unwrap(), vec![5.0; 2]);
    }
}
