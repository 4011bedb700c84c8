//! The FF network and its training step, exactly as `TRIFECTA.md` specifies.
//!
//! One step on B images: the input is [positives; negatives] = the same images twice, with the
//! true labels and then the wrong ones, each with its label plane appended. Blocks run in order.
//! A block that updates at this iteration (see [`FfConfig::updates`]) computes its loss on the
//! goodness of its output, backpropagates it through itself and, if its input is still attached,
//! through the block before it (or into the label embedding, for block 0), then takes one Adam
//! step over the previous block's parameters and its own. Its output then counts as detached. A
//! block that does not update passes its output on attached.
//!
//! Each block `i` owns one optimiser over two groups: the previous block's parameters (the
//! embedding, for block 0) and its own. So every parameter sits in two optimisers, each with its
//! own moments and step count, as in the reference code. A group whose parameters got no
//! gradient (a detached input) is skipped, as PyTorch's Adam skips parameters whose `.grad` is
//! `None`.

use super::config::FfConfig;
use crate::backend::{Backend, EmbedShape};
use crate::error::{Error, Result};
use crate::layers::block::Block;
use crate::layers::embedding::LabelEmbedding;
use crate::layers::{Param, Saved, zero_grads};
use crate::optim::AdamGroup;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Training metrics of one block at one step (only for blocks that updated).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockMetrics {
    pub loss: f32,
    /// Mean goodness of the positives.
    pub positive: f32,
    /// Mean goodness of the negatives.
    pub negative: f32,
}

impl BlockMetrics {
    /// delta = positive - negative goodness.
    pub fn delta(&self) -> f32 {
        self.positive - self.negative
    }
}

/// Per-block metrics of one step; `None` for blocks that did not update.
pub type StepMetrics = Vec<Option<BlockMetrics>>;

struct BlockOptimizer<B: Backend> {
    previous: AdamGroup<B>,
    own: AdamGroup<B>,
}

pub struct FfNet<B: Backend> {
    pub config: FfConfig,
    pub embedding: LabelEmbedding<B>,
    pub blocks: Vec<Block<B>>,
    optimizers: Vec<BlockOptimizer<B>>,
    /// Training iterations done so far; decides the APL schedule.
    pub iteration: u64,
    /// (N, H, W, C): the images of the current batch, twice for a training step.
    images: Tensor<B>,
    /// (B, H, W, C): a training batch as uploaded, before it is doubled on the device.
    staged: Tensor<B>,
    /// `staged` holds the images of the next step (staged by [`Self::train_step_ahead`]).
    staged_ahead: bool,
    /// Each updated block's goodness (N) and loss (1), gathered for one download per step.
    metrics: Tensor<B>,
    /// (N, H, W, C+1): images with their label planes.
    input: Tensor<B>,
    /// Gradient w.r.t. a block's output (scratch).
    grad_output: Tensor<B>,
    /// Gradient w.r.t. a block's input, i.e. the previous block's output (scratch).
    grad_input: Tensor<B>,
    /// (2B).
    grad_goodness: Tensor<B>,
    /// Each block's loss of the current step (1 each): read once, after the whole step, so
    /// that a device backend is not made to wait in the middle of a step.
    losses: Vec<Tensor<B>>,
    /// Seconds the last training step spent before its wait for the metrics (see
    /// [`Self::last_queue_seconds`]).
    queue_seconds: f64,
    /// Evaluation computes block 0's convolution once for all labels where its norm allows
    /// (BatchNorm; see [`Self::goodness_per_label`]). On by default; off, every label goes
    /// through the whole network, which `bench --compare-unshared-eval` times against it.
    pub share_labels_in_eval: bool,
}

fn sizes<B: Backend>(params: &[&Param<B>]) -> Vec<usize> {
    params.iter().map(|p| p.numel()).collect()
}

impl<B: Backend> FfNet<B> {
    /// A freshly initialised network (PyTorch's default initialisers, seeded).
    pub fn new(backend: &B, config: FfConfig, seed: u64) -> Result<Self> {
        if config.classes < 2 {
            return Err(Error::Config(format!(
                "FF needs at least 2 classes, got {}",
                config.classes
            )));
        }
        let specs = config.block_specs()?;
        let mut rng = Rng::stream(seed, 1);
        let embedding =
            LabelEmbedding::new(backend, config.classes, config.image.pixels(), &mut rng)?;
        let blocks = specs
            .iter()
            .map(|spec| Block::new(backend, *spec, config.norm, &mut rng))
            .collect::<Result<Vec<_>>>()?;
        let mut optimizers = Vec::with_capacity(blocks.len());
        for i in 0..blocks.len() {
            let previous = if i == 0 {
                vec![embedding.table.numel()]
            } else {
                sizes(&blocks[i - 1].params())
            };
            optimizers.push(BlockOptimizer {
                previous: AdamGroup::new(backend, &previous)?,
                own: AdamGroup::new(backend, &sizes(&blocks[i].params()))?,
            });
        }
        Ok(FfNet {
            config,
            embedding,
            blocks,
            optimizers,
            iteration: 0,
            images: Tensor::zeros(backend, &[0])?,
            staged: Tensor::zeros(backend, &[0])?,
            staged_ahead: false,
            queue_seconds: 0.0,
            metrics: Tensor::zeros(backend, &[0])?,
            input: Tensor::zeros(backend, &[0])?,
            grad_output: Tensor::zeros(backend, &[0])?,
            grad_input: Tensor::zeros(backend, &[0])?,
            grad_goodness: Tensor::zeros(backend, &[0])?,
            losses: (0..specs.len())
                .map(|_| Tensor::zeros(backend, &[1]))
                .collect::<Result<Vec<_>>>()?,
            share_labels_in_eval: true,
        })
    }

    /// The network input of the last step or evaluation batch: `(N, H, W, C+1)`.
    pub fn input(&self) -> &Tensor<B> {
        &self.input
    }

    fn embed_shape(&self, n: usize) -> EmbedShape {
        EmbedShape {
            n,
            pixels: self.config.image.pixels(),
            channels: self.config.image.channels,
        }
    }

    /// Copies `n` images `(n, H, W, C)` to the device.
    fn load_images(&mut self, backend: &B, images: &[f32], n: usize) -> Result<()> {
        let image = self.config.image;
        if images.len() != n * image.numel() {
            return Err(Error::Shape {
                op: "FfNet input",
                expected: vec![n, image.height, image.width, image.channels],
                got: vec![images.len()],
            });
        }
        self.images
            .resize(backend, &[n, image.height, image.width, image.channels])?;
        backend.write(&mut self.images.buf, images)
    }

    /// The network input: the loaded images with the label planes of `labels`.
    fn embed_labels(&mut self, backend: &B, labels: &[u32]) -> Result<()> {
        let image = self.config.image;
        let n = labels.len();
        self.input
            .resize(backend, &[n, image.height, image.width, image.channels + 1])?;
        let s = self.embed_shape(n);
        self.embedding
            .forward(backend, &mut self.input.buf, &self.images.buf, labels, s)
    }

    /// Evaluation of every block, `n` samples. Block 0 runs on the prepared input, or with
    /// `kept` = (maps, label) from its kept convolution output plus that label's map
    /// ([`Self::goodness_per_label`]). Where a block is followed by a BatchNorm, it applies
    /// that as it writes its output, and the next block skips its own pass over memory
    /// ([`Block::norm_for_previous`]).
    fn forward_eval(
        &mut self,
        backend: &B,
        n: usize,
        kept: Option<(&B::Buf, usize)>,
    ) -> Result<()> {
        let mut normed = false;
        for i in 0..self.blocks.len() {
            let (before, rest) = self.blocks.split_at_mut(i);
            let Some((block, after)) = rest.split_first_mut() else {
                break;
            };
            let next = match after.first_mut() {
                Some(next) => next.norm_for_previous(backend, n)?,
                None => None,
            };
            let next_normed = next.is_some();
            match (i, kept) {
                (0, Some((maps, label))) => block.forward_from_kept(backend, maps, label, next)?,
                _ => {
                    let input = match normed {
                        true => None,
                        false => Some(before.last().map_or(&self.input.buf, |b| b.output())),
                    };
                    block.forward_eval(backend, input, n, next)?
                }
            }
            normed = next_normed;
        }
        Ok(())
    }

    /// Seconds the last training step took to queue its work: all of it up to the wait for
    /// its metrics (its one wait for the device). With a synchronous backend (the CPU) that is
    /// the whole step; with CUDA it is the host's share, and a step no longer than it was
    /// limited by the host, not the GPU.
    pub fn last_queue_seconds(&self) -> f64 {
        self.queue_seconds
    }

    /// One FF training step on `images` `(B, H, W, C)` with true labels `positive` and wrong
    /// labels `negative` (B each).
    pub fn train_step(
        &mut self,
        backend: &B,
        images: &[f32],
        positive: &[u32],
        negative: &[u32],
    ) -> Result<StepMetrics> {
        self.train_step_ahead(backend, Some(images), positive, negative, None)
    }

    /// [`Self::train_step`], also uploading the next step's images `next` once this step's
    /// work is queued: with an asynchronous backend (CUDA) the upload then overlaps the
    /// step instead of delaying the next one. `images` None: the images `next` staged in the
    /// previous call (an error if it staged none, or a different number).
    pub fn train_step_ahead(
        &mut self,
        backend: &B,
        images: Option<&[f32]>,
        positive: &[u32],
        negative: &[u32],
        next: Option<&[f32]>,
    ) -> Result<StepMetrics> {
        self.step(
            backend,
            images,
            positive,
            negative,
            next,
            &mut |_, _| Ok(()),
            false,
        )
    }

    /// [`Self::train_step`], calling `observe(block, net)` right after each block is done
    /// (after its update, if it updated). Gradients are intact at that point; the next
    /// block's update may zero some of them. Tests use this to read intermediate values,
    /// so every block computes its output here, the last one too where the step does not
    /// need it (see `step`): the parameters and statistics are the same either way.
    pub fn train_step_observed(
        &mut self,
        backend: &B,
        images: &[f32],
        positive: &[u32],
        negative: &[u32],
        observe: &mut dyn FnMut(usize, &Self) -> Result<()>,
    ) -> Result<StepMetrics> {
        self.step(
            backend,
            Some(images),
            positive,
            negative,
            None,
            observe,
            true,
        )
    }

    /// Stages `images` `(B, H, W, C)` on the device for a step (the upload may still be in
    /// flight on return).
    fn stage(&mut self, backend: &B, images: &[f32]) -> Result<()> {
        let image = self.config.image;
        if image.numel() == 0 || !images.len().is_multiple_of(image.numel()) {
            return Err(Error::Shape {
                op: "train_step images",
                expected: vec![image.height, image.width, image.channels],
                got: vec![images.len()],
            });
        }
        let batch = images.len() / image.numel();
        self.staged
            .resize(backend, &[batch, image.height, image.width, image.channels])?;
        backend.write(&mut self.staged.buf, images)
    }

    /// One training step. Unless `every_output`, a block whose output the step does not need
    /// ([`FfConfig::needs_output`]: the last one, where it does not learn) runs its norm only,
    /// for BatchNorm's running statistics; its goodness is reported only where it learns.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        backend: &B,
        images: Option<&[f32]>,
        positive: &[u32],
        negative: &[u32],
        next: Option<&[f32]>,
        observe: &mut dyn FnMut(usize, &Self) -> Result<()>,
        every_output: bool,
    ) -> Result<StepMetrics> {
        let pairs = positive.len();
        if negative.len() != pairs || pairs == 0 {
            return Err(Error::Shape {
                op: "train_step labels",
                expected: vec![pairs],
                got: vec![negative.len()],
            });
        }
        // The images go to the device once and are doubled there (positives, then negatives).
        let image = self.config.image;
        let staged = match images {
            Some(images) => images.len(),
            None if self.staged_ahead => B::len(&self.staged.buf),
            None => 0,
        };
        if staged != pairs * image.numel() {
            return Err(Error::Shape {
                op: "train_step images",
                expected: vec![pairs, image.height, image.width, image.channels],
                got: vec![staged],
            });
        }
        self.staged_ahead = false;
        let start = std::time::Instant::now();
        backend.profile_scope("input");
        if let Some(images) = images {
            self.stage(backend, images)?;
        }
        let n = 2 * pairs;
        self.images
            .resize(backend, &[n, image.height, image.width, image.channels])?;
        backend.copy_into(&mut self.images.buf, 0, &self.staged.buf)?;
        backend.copy_into(
            &mut self.images.buf,
            pairs * image.numel(),
            &self.staged.buf,
        )?;
        let labels: Vec<u32> = [positive, negative].concat();
        self.embed_labels(backend, &labels)?;
        let t = self.iteration;
        for i in 0..self.blocks.len() {
            backend.profile_scope(block_scope(i));
            let (before, rest) = self.blocks.split_at_mut(i);
            let input = before.last().map_or(&self.input.buf, |b| b.output());
            if every_output || self.config.needs_output(i, t) {
                rest[0].forward(backend, input, n, true)?;
            } else {
                rest[0].forward_norm_only(backend, input, n)?;
            }
            if self.config.updates(i, t) {
                self.update_block(backend, i, pairs, &labels)?;
            }
            observe(i, self)?;
        }
        backend.profile_scope("metrics and next images");
        // The next step's images go up behind this step's work (which has read the staged
        // ones by then, in stream order), before the wait for the metrics below.
        if let Some(next) = next {
            self.stage(backend, next)?;
            self.staged_ahead = true;
        }
        // The metrics, read after the step: each block's goodness and loss stay in place
        // until the next step. They are gathered on the device and read in one download (one
        // wait for the GPU per step, not two per block).
        let updated: Vec<usize> = (0..self.blocks.len())
            .filter(|&i| self.config.updates(i, t))
            .collect();
        let stride = n + 1;
        self.metrics.resize(backend, &[updated.len() * stride])?;
        let parts: Vec<(usize, &B::Buf)> = updated
            .iter()
            .enumerate()
            .flat_map(|(k, &i)| {
                [
                    (k * stride, &self.blocks[i].goodness.buf),
                    (k * stride + n, &self.losses[i].buf),
                ]
            })
            .collect();
        backend.copy_many(&mut self.metrics.buf, &parts)?;
        self.queue_seconds = start.elapsed().as_secs_f64();
        let host = self.metrics.to_host(backend)?;
        let mut metrics = vec![None; self.blocks.len()];
        for (k, &i) in updated.iter().enumerate() {
            let goodness = &host[k * stride..k * stride + n];
            metrics[i] = Some(BlockMetrics {
                loss: host[k * stride + n],
                positive: goodness[..pairs].iter().sum::<f32>() / pairs as f32,
                negative: goodness[pairs..].iter().sum::<f32>() / pairs as f32,
            });
        }
        self.iteration += 1;
        Ok(metrics)
    }

    /// Loss, backward and Adam step of block `i`, right after its forward.
    fn update_block(&mut self, backend: &B, i: usize, pairs: usize, labels: &[u32]) -> Result<()> {
        let n = 2 * pairs;
        let attached = i == 0 || !self.config.updates(i - 1, self.iteration);
        self.grad_goodness.resize(backend, &[n])?;
        let block = &self.blocks[i];
        backend.ff_loss(
            &mut self.losses[i].buf,
            &mut self.grad_goodness.buf,
            &block.goodness.buf,
            pairs,
            self.config.ff_loss(),
        )?;

        // zero_grad over both groups of optimiser i.
        let (before, rest) = self.blocks.split_at_mut(i);
        let previous: Vec<&mut Param<B>> = match before.last_mut() {
            None => vec![&mut self.embedding.table],
            Some(b) => b.params_mut().into_iter().collect(),
        };
        zero_grads(backend, rest[0].params_mut().into_iter().chain(previous))?;

        let spec = self.blocks[i].spec;
        self.grad_output
            .resize(backend, &[n, spec.out_features()])?;
        if attached {
            self.grad_input
                .resize(backend, &[n, spec.h * spec.w * spec.c_in])?;
        }
        {
            let (before, rest) = self.blocks.split_at_mut(i);
            let input = before.last().map_or(&self.input.buf, |b| b.output());
            rest[0].backward(
                backend,
                attached.then_some(&mut self.grad_input.buf),
                &mut self.grad_output.buf,
                Some(&self.grad_goodness.buf),
                input,
            )?;
        }
        if attached {
            if i == 0 {
                let s = self.embed_shape(n);
                self.embedding
                    .backward(backend, &self.grad_input.buf, labels, s)?;
            } else {
                // Through the previous block; its own input is detached (it updated) or not
                // in this optimiser (the embedding, for block 0), so no input gradient.
                let (before, rest) = self.blocks.split_at_mut(i - 1);
                let input = before.last().map_or(&self.input.buf, |b| b.output());
                rest[0].backward(backend, None, &mut self.grad_input.buf, None, input)?;
            }
        }

        let hp = self.config.adam;
        let (before, rest) = self.blocks.split_at_mut(i);
        let optimizer = &mut self.optimizers[i];
        optimizer.own.step(backend, &mut rest[0].params_mut(), hp)?;
        if attached {
            match before.last_mut() {
                Some(previous) => {
                    optimizer
                        .previous
                        .step(backend, &mut previous.params_mut(), hp)?
                }
                None => optimizer
                    .previous
                    .step(backend, &mut [&mut self.embedding.table], hp)?,
            }
        }
        Ok(())
    }

    /// Goodness of every (label, layer, image) for `images` `(n, H, W, C)`, in eval mode:
    /// returns `[classes][layers][n]`, flattened.
    ///
    /// The images go to the device once; per label only the label plane changes. With
    /// BatchNorm, block 0's convolution is also computed once: in eval mode BatchNorm scales
    /// and shifts each channel, and the convolution is linear, so the input with label `l`
    /// gives the convolution output for label 0 plus that of an input holding only the
    /// label plane's change, `scale * (E_l - E_0)` (`label_offsets`), the same for
    /// every image. (LayerNorm's statistics mix the label plane into every channel; it runs
    /// each label through the whole network.)
    pub fn goodness_per_label(&mut self, backend: &B, images: &[f32]) -> Result<Vec<f32>> {
        let n = images.len() / self.config.image.numel().max(1);
        let layers = self.blocks.len();
        self.load_images(backend, images, n)?;
        let offsets = match self.share_labels_in_eval {
            true => self.label_offsets(backend)?,
            false => None,
        };
        if offsets.is_some() {
            self.embed_labels(backend, &vec![0; n])?;
            self.blocks[0].forward_kept(backend, &self.input.buf, n)?;
        }
        // The goodness of every (label, layer) is gathered on the device and read once.
        let mut all = backend.zeros(self.config.classes * layers * n)?;
        for label in 0..self.config.classes {
            if offsets.is_none() {
                self.embed_labels(backend, &vec![label as u32; n])?;
            }
            self.forward_eval(backend, n, offsets.as_ref().map(|maps| (maps, label)))?;
            for (layer, block) in self.blocks.iter().enumerate() {
                backend.copy_into(&mut all, (label * layers + layer) * n, &block.goodness.buf)?;
            }
        }
        backend.download(&all)
    }

    /// With BatchNorm in block 0: the change of block 0's convolution output from label 0 to
    /// each label, `(classes, H, W, Cout)`, i.e. the convolution of inputs that are zero but
    /// for the label channel, which holds `scale * (E_l - E_0)` (`scale` being BatchNorm's
    /// for that channel in eval mode, `E` the embedding table). None with LayerNorm.
    fn label_offsets(&self, backend: &B) -> Result<Option<B::Buf>> {
        let block = &self.blocks[0];
        let Some(scale) = block.norm.eval_scale(backend)? else {
            return Ok(None);
        };
        let (classes, pixels, c) = (
            self.config.classes,
            self.config.image.pixels(),
            self.config.image.channels,
        );
        let table = self.embedding.table.value.to_host(backend)?;
        let mut input = vec![0.0f32; classes * pixels * (c + 1)];
        for (planes, row) in input
            .chunks_exact_mut(pixels * (c + 1))
            .zip(table.chunks_exact(pixels))
        {
            for (p, (e, e0)) in row.iter().zip(&table[..pixels]).enumerate() {
                planes[p * (c + 1) + c] = scale[c] * (e - e0);
            }
        }
        let spec = block.spec;
        let s = block.conv.shape(classes, spec.h, spec.w);
        let mut maps = backend.zeros(classes * spec.h * spec.w * spec.c_out)?;
        let input = backend.upload(&input)?;
        backend.conv3x3_forward(&mut maps, &input, &block.conv.weight.value.buf, s)?;
        Ok(Some(maps))
    }

    /// Every parameter with its PyTorch name, in registration order.
    pub fn named_params(&self) -> Vec<(String, &Param<B>)> {
        let mut out = vec![("embedding.weight".to_string(), &self.embedding.table)];
        for (i, block) in self.blocks.iter().enumerate() {
            out.extend(block.named_params(i));
        }
        out
    }

    pub fn named_params_mut(&mut self) -> Vec<(String, &mut Param<B>)> {
        let mut out = vec![("embedding.weight".to_string(), &mut self.embedding.table)];
        for (i, block) in self.blocks.iter_mut().enumerate() {
            out.extend(block.named_params_mut(i));
        }
        out
    }

    /// A model summary, as Lightning prints one when training starts: the label embedding and
    /// each block (its input, convolution, pool and parameters), then the total.
    pub fn summary(&self) -> String {
        let count = |params: &[&Param<B>]| -> usize { params.iter().map(|p| p.numel()).sum() };
        let row = |name: &str, input: &str, conv: &str, pool: &str, params: &str| {
            format!("  {name:<10}{input:>14}{conv:>14}{pool:>6}{params:>12}")
        };
        let mut lines = vec![row("", "input", "conv 3x3", "pool", "parameters")];
        let embedding = count(&[&self.embedding.table]);
        lines.push(row("labels", "", "", "", &thousands(embedding)));
        let mut total = embedding;
        for (i, block) in self.blocks.iter().enumerate() {
            let s = block.spec;
            let params = count(&block.params());
            total += params;
            lines.push(row(
                &format!("block {i}"),
                &format!("{}x{}x{}", s.h, s.w, s.c_in),
                &format!("{} -> {}", s.c_in, s.c_out),
                if s.pool { "2x2" } else { "-" },
                &thousands(params),
            ));
        }
        lines.push(format!(
            "  {} parameters, {:.1} MB in f32 ({:.1} MB with their gradients and Adam's moments)",
            thousands(total),
            4.0 * total as f64 / 1e6,
            16.0 * total as f64 / 1e6
        ));
        lines.join("\n")
    }
}

/// The whole training state, for checkpoints (`run::checkpoint`), under PyTorch's names.
impl<B: Backend> Saved<B> for FfNet<B> {
    const FF: bool = true;
    fn named_params_mut(&mut self) -> Vec<(String, &mut Param<B>)> {
        FfNet::named_params_mut(self)
    }

    /// BatchNorm's running statistics.
    fn named_buffers_mut(&mut self) -> Vec<(String, &mut Tensor<B>)> {
        let blocks = self.blocks.iter_mut().enumerate();
        blocks.flat_map(|(i, b)| b.named_buffers_mut(i)).collect()
    }

    /// Adam's moments, `optimizer.block{i}.{previous|own}.{k}.{exp_avg|exp_avg_sq}`.
    fn named_optimizer_buffers_mut(&mut self) -> Vec<(String, &mut B::Buf)> {
        let mut out = Vec::new();
        for (i, o) in self.optimizers.iter_mut().enumerate() {
            out.extend(
                o.previous
                    .named_buffers_mut(&format!("optimizer.block{i}.previous")),
            );
            out.extend(o.own.named_buffers_mut(&format!("optimizer.block{i}.own")));
        }
        out
    }

    /// [previous group, own group] per block.
    fn step_counts_mut(&mut self) -> Vec<[&mut u64; 2]> {
        let groups = self.optimizers.iter_mut();
        groups
            .map(|o| [&mut o.previous.step, &mut o.own.step])
            .collect()
    }

    fn iteration_mut(&mut self) -> &mut u64 {
        &mut self.iteration
    }
}

/// The profile's name for block `i`'s forward, backward and update (`Backend::profile_scope`).
fn block_scope(i: usize) -> &'static str {
    const NAMES: [&str; 12] = [
        "block 0", "block 1", "block 2", "block 3", "block 4", "block 5", "block 6", "block 7",
        "block 8", "block 9", "block 10", "block 11",
    ];
    NAMES.get(i).copied().unwrap_or("blocks 12 and up")
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_in_thousands() {
        let cases = [(0, "0"), (999, "999"), (1000, "1,000"), (184036, "184,036")];
        for (n, text) in cases {
            assert_eq!(thousands(n), text);
        }
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    /// The summary's total is every parameter the checkpoint holds (PyTorch's count).
    #[test]
    fn the_summary_counts_every_parameter() {
        let cpu = crate::backend::cpu::Cpu::new(1).unwrap();
        let config = FfConfig::trifecta(
            crate::ff::Arch::Small,
            0.25,
            crate::ff::ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            10,
        )
        .unwrap();
        let net = FfNet::new(&cpu, config, 0).unwrap();
        let total: usize = net
            .named_params()
            .iter()
            .map(|(_, p)| p.torch_shape.iter().product::<usize>())
            .sum();
        let summary = net.summary();
        assert!(
            summary.contains(&format!("{} parameters", thousands(total))),
            "{summary}"
        );
        assert_eq!(summary.lines().count(), 2 + net.blocks.len() + 1);
    }
}
