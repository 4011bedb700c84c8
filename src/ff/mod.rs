//! The Forward-Forward algorithm on top of the layers: configuration (architecture, loss, APL,
//! norm), the network with its training step, and evaluation. Nothing here touches device
//! memory directly; everything goes through `layers` and the `Backend` trait.

pub mod config;
pub mod eval;
pub mod net;
pub mod train;

pub use config::{Arch, FfConfig, ImageShape, LossKind};
pub use eval::{Evaluation, Evaluator};
pub use net::{BlockMetrics, FfNet, StepMetrics};
