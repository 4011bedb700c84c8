//! What defines an FF network and its training rule: architecture, norm, loss, APL, Adam.
//! Defaults are the thesis' Trifecta (SymBa alpha 4, APL, BatchNorm, Adam lr 1e-3).

use crate::backend::{AdamParams, FfLoss};
use crate::error::{Error, Result};
use crate::layers::block::BlockSpec;
use crate::layers::norm::NormKind;
use serde::{Deserialize, Serialize};

/// The named architectures of the reference implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 6 blocks: 128 pool, 128, 256 pool, 256, 256, 512 pool.
    Small,
    /// 12 blocks: 64, 128 pool, 128, 128, 128, 256 pool, 256, 256, 256, 512 pool, 512, 512.
    Large,
}

impl Arch {
    /// (channels, pool) per block at width 1.
    pub fn layers(&self) -> &'static [(usize, bool)] {
        match self {
            Arch::Small => &[
                (128, true),
                (128, false),
                (256, true),
                (256, false),
                (256, false),
                (512, true),
            ],
            Arch::Large => &[
                (64, false),
                (128, true),
                (128, false),
                (128, false),
                (128, false),
                (256, true),
                (256, false),
                (256, false),
                (256, false),
                (512, true),
                (512, false),
                (512, false),
            ],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    Symba,
    Threshold,
}

/// Image geometry: channels, height, width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }
    pub fn numel(&self) -> usize {
        self.channels * self.pixels()
    }
}

/// Everything that fixes an FF network and its update rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FfConfig {
    pub image: ImageShape,
    pub classes: usize,
    /// (output channels, max-pool) per block.
    pub layers: Vec<(usize, bool)>,
    pub norm: NormKind,
    pub loss: LossKind,
    /// SymBa's alpha.
    pub alpha: f32,
    /// The threshold loss' tau.
    pub tau: f32,
    /// Alternating pairwise updates.
    pub apl: bool,
    pub adam: AdamParams,
}

impl FfConfig {
    /// The Trifecta on `arch` scaled by `width` (every channel count rounded, at least 1).
    pub fn trifecta(arch: Arch, width: f64, image: ImageShape, classes: usize) -> Result<Self> {
        if !(width.is_finite() && width > 0.0) {
            return Err(Error::Config(format!(
                "width must be a positive number, got {width}"
            )));
        }
        let layers = arch
            .layers()
            .iter()
            .map(|&(c, pool)| (((c as f64 * width).round() as usize).max(1), pool))
            .collect();
        Ok(FfConfig {
            image,
            classes,
            layers,
            norm: NormKind::Batch,
            loss: LossKind::Symba,
            alpha: 4.0,
            tau: 2.0,
            apl: true,
            adam: AdamParams::default(),
        })
    }

    pub fn ff_loss(&self) -> FfLoss {
        match self.loss {
            LossKind::Symba => FfLoss::Symba { alpha: self.alpha },
            LossKind::Threshold => FfLoss::Threshold { tau: self.tau },
        }
    }

    /// Block geometries, following the image through the pools.
    pub fn block_specs(&self) -> Result<Vec<BlockSpec>> {
        let (mut h, mut w) = (self.image.height, self.image.width);
        let mut c_in = self.image.channels + 1;
        let mut specs = Vec::with_capacity(self.layers.len());
        for (i, &(c_out, pool)) in self.layers.iter().enumerate() {
            if h == 0 || w == 0 || (pool && (h < 2 || w < 2)) {
                return Err(Error::Config(format!(
                    "block {i}: the image is pooled down to nothing ({h}x{w})"
                )));
            }
            let spec = BlockSpec {
                c_in,
                c_out,
                h,
                w,
                pool,
            };
            (h, w) = spec.out_hw();
            c_in = c_out;
            specs.push(spec);
        }
        if specs.is_empty() {
            return Err(Error::Config("the network has no blocks".into()));
        }
        Ok(specs)
    }

    /// Bytes that a pass over `images` images at once (a training batch counts its positives
    /// and negatives) needs at the very least: every parameter four times in f32 (weight,
    /// gradient, Adam's two moments) and the largest block's input and output for those
    /// images. A floor, not an estimate: the engine holds more (every block's activations,
    /// scratch), so a run below it may still not fit, but one above it cannot.
    pub fn memory_floor(&self, images: usize) -> Result<u64> {
        let specs = self.block_specs()?;
        let params: u64 = specs
            .iter()
            .map(|s| (9 * s.c_in * s.c_out + 2 * s.c_in) as u64)
            .sum();
        let activations = specs
            .iter()
            .map(|s| ((s.c_in + s.c_out) * s.h * s.w) as u64)
            .max()
            .unwrap_or(0);
        Ok(4 * (4 * params + images as u64 * activations))
    }

    /// Refuses a network whose [`memory_floor`](Self::memory_floor) for `images` at once
    /// exceeds the device's `available` memory, before any of it is allocated.
    pub fn check_fits(&self, images: usize, available: Option<u64>) -> Result<()> {
        let (Some(available), floor) = (available, self.memory_floor(images)?) else {
            return Ok(());
        };
        if floor > available {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            return Err(Error::Config(format!(
                "this network (channels {:?}) needs at least {:.1} GiB for {images} images at once (parameters, gradients, Adam's moments and one block's activations), more than the {:.1} GiB this machine has available: lower --width or the batch sizes",
                self.layers.iter().map(|l| l.0).collect::<Vec<_>>(),
                gib(floor),
                gib(available)
            )));
        }
        Ok(())
    }

    /// Whether block `block` computes its loss and updates at `iteration`: always without APL;
    /// with APL, odd blocks on even iterations and even blocks on odd ones.
    pub fn updates(&self, block: usize, iteration: u64) -> bool {
        !self.apl || (block.is_multiple_of(2) ^ iteration.is_multiple_of(2))
    }

    /// Whether a training step at `iteration` needs block `block`'s output, i.e. runs its
    /// convolution: where the block learns, or where the next block reads it. Only the last
    /// block, where it does not learn (APL: every other step), is left at its norm.
    pub fn needs_output(&self, block: usize, iteration: u64) -> bool {
        self.updates(block, iteration) || block + 1 < self.layers.len()
    }
}
