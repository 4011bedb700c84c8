//! Optimisers. Only Adam is needed: the thesis trains every network with it.

pub mod adam;

pub use adam::AdamGroup;
