//! The baselines' composed backward passes against finite differences of their losses: the
//! whole trunk for backprop, one block and its head for the local classifier proxy.

use trifecta::backend::cpu::Cpu;
use trifecta::baselines::{ClassifierNet, Model};
use trifecta::ff::{Arch, FfConfig, ImageShape};
use trifecta::layers::norm::NormKind;
use trifecta::rng::Rng;

fn tiny(norm: NormKind) -> FfConfig {
    let image = ImageShape {
        channels: 2,
        height: 6,
        width: 5,
    };
    let mut config = FfConfig::trifecta(Arch::Small, 1.0, image, 4).unwrap();
    config.layers = vec![(3, true), (4, false)];
    config.norm = norm;
    config
}

/// d(loss of head `head`)/d(param `name`) from train_step's gradients vs central differences.
fn check(model: Model, norm: NormKind, name: &str, head: usize) {
    let backend = Cpu::new(2).unwrap();
    let mut rng = Rng::new(11);
    let images: Vec<f32> = (0..5 * 60).map(|_| rng.normal()).collect();
    let labels: Vec<u32> = vec![0, 3, 1, 2, 3];
    let mut net = ClassifierNet::new(&backend, tiny(norm), model, 4).unwrap();
    let values = {
        let params = net.named_params_mut();
        let (_, p) = params.into_iter().find(|(n, _)| n == name).unwrap();
        p.to_torch(&backend).unwrap()
    };
    // The step leaves the gradients at the initial weights in place (and moves the weights).
    net.train_step(&backend, &images, &labels).unwrap();
    let grads = {
        let params = net.named_params_mut();
        let (_, p) = params.into_iter().find(|(n, _)| n == name).unwrap();
        p.grad_to_torch(&backend).unwrap()
    };
    let loss_at = |values: &[f32]| -> f64 {
        let mut fresh = ClassifierNet::new(&backend, tiny(norm), model, 4).unwrap();
        for (n, p) in fresh.named_params_mut() {
            if n == name {
                p.load_torch(&backend, values).unwrap();
            }
        }
        fresh.losses(&backend, &images, &labels).unwrap()[head] as f64
    };
    let eps = 1e-3f32;
    let scale = grads.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
    // f32 rounding in the loss, amplified by 1/eps.
    let noise = 2e-7 * loss_at(&values).abs() / eps as f64;
    let picks: Vec<usize> = (0..values.len())
        .step_by((values.len() / 24).max(1))
        .collect();
    let mut bad = Vec::new();
    for &j in &picks {
        let mut v = values.clone();
        v[j] += eps;
        let plus = loss_at(&v);
        v[j] -= 2.0 * eps;
        let minus = loss_at(&v);
        let numeric = (plus - minus) / (2.0 * eps as f64);
        if (numeric - grads[j] as f64).abs() > 2e-2 * scale.max(1e-3) + noise {
            bad.push(format!("[{j}] analytic {} numeric {numeric:.6}", grads[j]));
        }
    }
    // A unit whose pre-activation sits within eps of a ReLU or max-pool kink makes the central
    // difference average both sides (seen here: one such unit moved one element by 40%); a
    // wrong backward fails most elements, not a few.
    assert!(
        bad.len() * 5 <= picks.len(),
        "{model:?} {norm:?} {name}: {} of {} elements disagree: {}",
        bad.len(),
        picks.len(),
        bad.join(", ")
    );
}

#[test]
fn backprop_gradients_reach_the_first_block() {
    for norm in [NormKind::Batch, NormKind::Layer] {
        for name in [
            "head0.linear.weight",
            "head0.linear.bias",
            "block1.conv.weight",
            "block1.norm.weight",
            "block0.norm.bias",
            "block0.conv.weight",
            "block0.norm.weight",
        ] {
            check(Model::Bp, norm, name, 0);
        }
    }
}

#[test]
fn local_proxies_train_their_own_block() {
    check(Model::Lcp, NormKind::Batch, "block1.conv.weight", 1);
    check(Model::Lcp, NormKind::Batch, "block1.norm.bias", 1);
    check(Model::Lcp, NormKind::Batch, "head1.linear.weight", 1);
    check(Model::Lcp, NormKind::Batch, "block0.conv.weight", 0);
}
