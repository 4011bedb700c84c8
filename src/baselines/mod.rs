//! The thesis' baselines on the same convolutional trunk as FF (same architectures, norms and
//! widths, but no label plane: the input is the image alone):
//!
//! - **Backprop (BP)**: trunk, global average pool, linear classifier, trained end to end with
//!   softmax cross-entropy and one Adam over everything.
//! - **Local Classifier Proxy (LCP)**, after Duan et al. 2021: every block gets its own head
//!   (global average pool + linear), trained with cross-entropy on that block's output; the
//!   gradient stops at the block's input. Each block has one Adam over itself and its head.
//!   Every head reports its own test accuracy.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ff::FfConfig;
use crate::layers::block::Block;
use crate::layers::head::Head;
use crate::layers::{Param, Saved, zero_grads};
use crate::optim::AdamGroup;
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which training rule a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// Forward-Forward (the default).
    Ff,
    /// End-to-end backprop with a linear classifier.
    Bp,
    /// Local classifier proxies, one per block.
    Lcp,
}

pub struct ClassifierNet<B: Backend> {
    pub model: Model,
    pub config: FfConfig,
    pub blocks: Vec<Block<B>>,
    /// BP: one head on the last block; LCP: one per block.
    pub heads: Vec<Head<B>>,
    /// Per block: its own parameters and (LCP) its head's; for BP the last entry also holds
    /// the head.
    optimizers: Vec<(AdamGroup<B>, AdamGroup<B>)>,
    /// Training steps taken (across resumes).
    pub iteration: u64,
    /// (N, H, W, C)
    images: Tensor<B>,
    grad_output: Tensor<B>,
    grad_input: Tensor<B>,
    grad_logits: Tensor<B>,
    loss: Tensor<B>,
}

fn sizes<B: Backend>(params: &[&Param<B>]) -> Vec<usize> {
    params.iter().map(|p| p.numel()).collect()
}

impl<B: Backend> ClassifierNet<B> {
    /// The trunk of `config` (its layers, norm, image shape and classes) with heads for `model`.
    pub fn new(backend: &B, config: FfConfig, model: Model, seed: u64) -> Result<Self> {
        if model == Model::Ff {
            return Err(Error::Config(
                "ClassifierNet is for the bp and lcp baselines".into(),
            ));
        }
        let mut specs = config.block_specs()?;
        specs[0].c_in = config.image.channels;
        let mut rng = Rng::stream(seed, 1);
        let blocks = specs
            .iter()
            .map(|spec| Block::new(backend, *spec, config.norm, &mut rng))
            .collect::<Result<Vec<_>>>()?;
        let headed: Vec<usize> = match model {
            Model::Bp => vec![blocks.len() - 1],
            _ => (0..blocks.len()).collect(),
        };
        let heads = headed
            .iter()
            .map(|&i| {
                let (h, w) = specs[i].out_hw();
                Head::new(backend, specs[i].c_out, h * w, config.classes, &mut rng)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut optimizers = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            let head_sizes = match headed.iter().position(|&k| k == i) {
                Some(k) => sizes(&heads[k].params()),
                None => Vec::new(),
            };
            optimizers.push((
                AdamGroup::new(backend, &sizes(&block.params()))?,
                AdamGroup::new(backend, &head_sizes)?,
            ));
        }
        Ok(ClassifierNet {
            model,
            config,
            blocks,
            heads,
            optimizers,
            iteration: 0,
            images: Tensor::zeros(backend, &[0])?,
            grad_output: Tensor::zeros(backend, &[0])?,
            grad_input: Tensor::zeros(backend, &[0])?,
            grad_logits: Tensor::zeros(backend, &[0])?,
            loss: Tensor::zeros(backend, &[1])?,
        })
    }

    /// The block each head sits on.
    pub fn head_layers(&self) -> Vec<usize> {
        match self.model {
            Model::Bp => vec![self.blocks.len() - 1],
            _ => (0..self.blocks.len()).collect(),
        }
    }

    fn upload(&mut self, backend: &B, images: &[f32], n: usize) -> Result<()> {
        let image = self.config.image;
        if images.len() != n * image.numel() {
            return Err(Error::Shape {
                op: "ClassifierNet input",
                expected: vec![n, image.height, image.width, image.channels],
                got: vec![images.len()],
            });
        }
        self.images
            .resize(backend, &[n, image.height, image.width, image.channels])?;
        backend.write(&mut self.images.buf, images)
    }

    fn forward_block(&mut self, backend: &B, i: usize, n: usize, train: bool) -> Result<()> {
        let (before, rest) = self.blocks.split_at_mut(i);
        let input = before.last().map_or(&self.images.buf, |b| b.output());
        rest[0].forward(backend, input, n, train)
    }

    /// Cross-entropy of head `k` on `labels`; leaves d(logits) in `grad_logits`.
    fn head_loss(&mut self, backend: &B, k: usize, labels: &[u32]) -> Result<f32> {
        let n = labels.len();
        self.grad_logits
            .resize(backend, &[n, self.config.classes])?;
        backend.cross_entropy(
            &mut self.loss.buf,
            &mut self.grad_logits.buf,
            &self.heads[k].logits.buf,
            labels,
            self.config.classes,
        )?;
        Ok(self.loss.to_host(backend)?[0])
    }

    fn zero_grads(&mut self, backend: &B, i: usize) -> Result<()> {
        let layers = self.head_layers();
        let head: Vec<&mut Param<B>> = match layers.iter().position(|&l| l == i) {
            Some(k) => self.heads[k].params_mut().into_iter().collect(),
            None => Vec::new(),
        };
        zero_grads(backend, self.blocks[i].params_mut().into_iter().chain(head))
    }

    fn step(&mut self, backend: &B, i: usize) -> Result<()> {
        let hp = self.config.adam;
        let layers = self.head_layers();
        let (own, head) = &mut self.optimizers[i];
        own.step(backend, &mut self.blocks[i].params_mut(), hp)?;
        if let Some(k) = layers.iter().position(|&l| l == i) {
            head.step(backend, &mut self.heads[k].params_mut(), hp)?;
        }
        Ok(())
    }

    /// One training step; returns the loss of every head (indexed like `heads`).
    pub fn train_step(&mut self, backend: &B, images: &[f32], labels: &[u32]) -> Result<Vec<f32>> {
        if labels.is_empty() {
            return Err(Error::Config("empty batch".into()));
        }
        self.upload(backend, images, labels.len())?;
        let losses = match self.model {
            Model::Bp => self.backprop_step(backend, labels),
            _ => self.local_step(backend, labels),
        }?;
        self.iteration += 1;
        Ok(losses)
    }

    /// The loss of every head in training mode, without any update (for gradient checks).
    pub fn losses(&mut self, backend: &B, images: &[f32], labels: &[u32]) -> Result<Vec<f32>> {
        let n = labels.len();
        self.upload(backend, images, n)?;
        let layers = self.head_layers();
        let mut losses = Vec::new();
        for i in 0..self.blocks.len() {
            self.forward_block(backend, i, n, true)?;
            if let Some(k) = layers.iter().position(|&l| l == i) {
                self.heads[k].forward(backend, self.blocks[i].output(), n)?;
                losses.push(self.head_loss(backend, k, labels)?);
            }
        }
        Ok(losses)
    }

    /// Every parameter with its name (`block{i}.{norm|conv}.*`, `head{k}.linear.*`).
    pub fn named_params_mut(&mut self) -> Vec<(String, &mut Param<B>)> {
        let mut out = Vec::new();
        for (i, block) in self.blocks.iter_mut().enumerate() {
            out.extend(block.named_params_mut(i));
        }
        for (k, head) in self.heads.iter_mut().enumerate() {
            for p in head.params_mut() {
                out.push((format!("head{k}.linear.{}", p.name), p));
            }
        }
        out
    }

    fn backprop_step(&mut self, backend: &B, labels: &[u32]) -> Result<Vec<f32>> {
        let n = labels.len();
        let last = self.blocks.len() - 1;
        for i in 0..self.blocks.len() {
            self.forward_block(backend, i, n, true)?;
            self.zero_grads(backend, i)?;
        }
        self.heads[0].forward(backend, self.blocks[last].output(), n)?;
        let loss = self.head_loss(backend, 0, labels)?;
        let spec = self.blocks[last].spec;
        self.grad_output
            .resize(backend, &[n, spec.out_features()])?;
        self.heads[0].backward(backend, &mut self.grad_output.buf, &self.grad_logits.buf)?;
        for i in (0..self.blocks.len()).rev() {
            let spec = self.blocks[i].spec;
            let (before, rest) = self.blocks.split_at_mut(i);
            let input = before.last().map_or(&self.images.buf, |b| b.output());
            if i > 0 {
                self.grad_input
                    .resize(backend, &[n, spec.h * spec.w * spec.c_in])?;
                rest[0].backward(
                    backend,
                    Some(&mut self.grad_input.buf),
                    &mut self.grad_output.buf,
                    None,
                    input,
                )?;
                std::mem::swap(&mut self.grad_input, &mut self.grad_output);
            } else {
                rest[0].backward(backend, None, &mut self.grad_output.buf, None, input)?;
            }
        }
        for i in 0..self.blocks.len() {
            self.step(backend, i)?;
        }
        Ok(vec![loss])
    }

    fn local_step(&mut self, backend: &B, labels: &[u32]) -> Result<Vec<f32>> {
        let n = labels.len();
        let mut losses = Vec::with_capacity(self.blocks.len());
        for i in 0..self.blocks.len() {
            self.forward_block(backend, i, n, true)?;
            self.zero_grads(backend, i)?;
            self.heads[i].forward(backend, self.blocks[i].output(), n)?;
            losses.push(self.head_loss(backend, i, labels)?);
            let spec = self.blocks[i].spec;
            self.grad_output
                .resize(backend, &[n, spec.out_features()])?;
            self.heads[i].backward(backend, &mut self.grad_output.buf, &self.grad_logits.buf)?;
            let (before, rest) = self.blocks.split_at_mut(i);
            let input = before.last().map_or(&self.images.buf, |b| b.output());
            // The gradient stops at the block's input.
            rest[0].backward(backend, None, &mut self.grad_output.buf, None, input)?;
            self.step(backend, i)?;
        }
        Ok(losses)
    }

    /// The logits `(n, classes)` of every head for `images` `(n, H, W, C)`, in eval mode.
    pub fn logits(&mut self, backend: &B, images: &[f32]) -> Result<Vec<Vec<f32>>> {
        let n = images.len() / self.config.image.numel().max(1);
        self.upload(backend, images, n)?;
        for i in 0..self.blocks.len() {
            self.forward_block(backend, i, n, false)?;
        }
        let layers = self.head_layers();
        let mut out = Vec::with_capacity(layers.len());
        for (k, &layer) in layers.iter().enumerate() {
            self.heads[k].forward(backend, self.blocks[layer].output(), n)?;
            out.push(self.heads[k].logits.to_host(backend)?);
        }
        Ok(out)
    }

    /// Predicted classes of every head for `images` `(n, H, W, C)`, in eval mode (the first
    /// of equal logits).
    pub fn predict(&mut self, backend: &B, images: &[f32]) -> Result<Vec<Vec<u32>>> {
        let classes = self.config.classes;
        Ok(self
            .logits(backend, images)?
            .iter()
            .map(|logits| logits.chunks(classes).map(argmax).collect())
            .collect())
    }
}

/// The whole training state, for checkpoints (`run::checkpoint`), under PyTorch's names.
impl<B: Backend> Saved<B> for ClassifierNet<B> {
    const FF: bool = false;
    fn named_params_mut(&mut self) -> Vec<(String, &mut Param<B>)> {
        ClassifierNet::named_params_mut(self)
    }

    /// BatchNorm's running statistics.
    fn named_buffers_mut(&mut self) -> Vec<(String, &mut Tensor<B>)> {
        let blocks = self.blocks.iter_mut().enumerate();
        blocks.flat_map(|(i, b)| b.named_buffers_mut(i)).collect()
    }

    /// Adam's moments: block i's own group (`optimizer.block{i}.own`) and its head's
    /// (`optimizer.block{i}.head`, empty where the block has no head).
    fn named_optimizer_buffers_mut(&mut self) -> Vec<(String, &mut B::Buf)> {
        let mut out = Vec::new();
        for (i, (own, head)) in self.optimizers.iter_mut().enumerate() {
            out.extend(own.named_buffers_mut(&format!("optimizer.block{i}.own")));
            out.extend(head.named_buffers_mut(&format!("optimizer.block{i}.head")));
        }
        out
    }

    /// [own group, head group] per block.
    fn step_counts_mut(&mut self) -> Vec<[&mut u64; 2]> {
        let groups = self.optimizers.iter_mut();
        groups
            .map(|(own, head)| [&mut own.step, &mut head.step])
            .collect()
    }

    fn iteration_mut(&mut self) -> &mut u64 {
        &mut self.iteration
    }
}

/// The index of the largest value (the first of equals).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (c, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = c;
        }
    }
    best as u32
}

/// Softmax of `logits`, in f64 for the sums.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|z| ((z - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| (e / sum) as f32).collect()
}
