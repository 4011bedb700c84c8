//! The learned label embedding: a table `(classes, H*W)`, N(0, 1) at init like
//! `nn.Embedding`. The row of a sample's label becomes one extra input plane, appended after
//! the image channels: input `(N, H, W, C)` -> `(N, H, W, C+1)`.

use super::{Param, ParamLayout};
use crate::backend::{Backend, EmbedShape};
use crate::error::Result;
use crate::rng::Rng;

pub struct LabelEmbedding<B: Backend> {
    pub table: Param<B>,
    pub classes: usize,
    pub pixels: usize,
}

impl<B: Backend> LabelEmbedding<B> {
    pub fn new(backend: &B, classes: usize, pixels: usize, rng: &mut Rng) -> Result<Self> {
        let data: Vec<f32> = (0..classes * pixels).map(|_| rng.normal()).collect();
        let table = Param::new(
            backend,
            "weight",
            &[classes, pixels],
            ParamLayout::Plain,
            &data,
        )?;
        Ok(LabelEmbedding {
            table,
            classes,
            pixels,
        })
    }

    pub fn forward(
        &self,
        backend: &B,
        out: &mut B::Buf,
        images: &B::Buf,
        labels: &[u32],
        s: EmbedShape,
    ) -> Result<()> {
        backend.embed_forward(out, images, &self.table.value.buf, labels, s)
    }

    pub fn backward(
        &mut self,
        backend: &B,
        grad_input: &B::Buf,
        labels: &[u32],
        s: EmbedShape,
    ) -> Result<()> {
        backend.embed_backward(&mut self.table.grad.buf, grad_input, labels, s)
    }
}
