//! trifecta: Forward-Forward training with the Trifecta (SymBa loss, alternating pairwise
//! updates, BatchNorm), after T. Dooms, "The Trifecta" (arXiv 2311.18130).
//!
//! Map of the crate, bottom to top:
//! - [`backend`]: the `Backend` trait (every kernel, NHWC f32) and the CPU backend (`gemm` +
//!   `rayon`). A device backend plugs in here and nowhere else.
//! - [`tensor`]: a shape plus a buffer on a backend.
//! - [`layers`]: parameters, saved activations, forward and backward of the label embedding,
//!   conv 3x3, BatchNorm/LayerNorm and the FF block.
//! - [`optim`]: the Adam optimiser.
//! - [`json`]: NaN in the JSON of logs and checkpoint headers.
//! - [`interrupt`]: Ctrl-C and SIGTERM while training, a flag that training and evaluation
//!   check to stop where a run can resume.
//! - [`ff`]: the FF algorithm: config, training step with APL, evaluation.
//! - [`baselines`]: backprop and local-classifier-proxy networks on the same trunk.
//! - [`data`]: dataset formats, downloads, augmentation and the batch loader.
//! - [`run`]: run folders: config, metrics, checkpoints, resume.
//! - [`experiments`]: the thesis' experiments as grids of runs.
//! - [`report`]: Markdown reports with figures.
//! - [`mod@bench`]: the training-step benchmark behind `trifecta bench`.
//! - [`cli`]: the subcommands of the `trifecta` binary.

pub mod backend;
pub mod baselines;
pub mod bench;
pub mod cli;
pub mod data;
pub mod error;
pub mod experiments;
pub mod ff;
pub mod interrupt;
pub mod json;
pub mod layers;
pub mod optim;
pub mod profile;
pub mod report;
pub mod rng;
pub mod run;
pub mod tensor;

pub use error::{Error, Result};
