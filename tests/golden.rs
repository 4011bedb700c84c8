//! The FF training step against `../shared/golden/` on the CPU backend, for the five
//! variants. The checks themselves are in `common/golden.rs`, shared with the CUDA tests.

mod common;

use common::golden::run_variant;
use trifecta::backend::cpu::Cpu;

#[test]
fn golden_vanilla() {
    run_variant(&Cpu::new(2).unwrap(), "vanilla");
}

#[test]
fn golden_symba() {
    run_variant(&Cpu::new(2).unwrap(), "symba");
}

#[test]
fn golden_symba_apl() {
    run_variant(&Cpu::new(2).unwrap(), "symba_apl");
}

#[test]
fn golden_symba_bn() {
    run_variant(&Cpu::new(2).unwrap(), "symba_bn");
}

#[test]
fn golden_trifecta() {
    run_variant(&Cpu::new(2).unwrap(), "trifecta");
}
