//! The golden FF training step (`../shared/golden/`, float64 PyTorch), on any backend: every
//! block output, goodness, loss, gradient and parameter over 4 iterations, the running
//! statistics, and the eval goodness and predictions.
//!
//! Tolerances are the golden README's: forward values, losses and gradients relative 1e-4 and
//! absolute 1e-6; parameters after a step absolute 1e-5. Adam's first step moves a parameter
//! by about lr * sign(gradient), so an element whose golden gradient is below 1e-7 in magnitude
//! may legitimately flip: such elements (unless both gradients are exactly zero) are skipped in
//! the parameter checks (from that iteration on), and the count of skipped elements is printed.

use super::*;
use std::collections::HashMap;
use trifecta::backend::Backend;
use trifecta::ff::{FfConfig, FfNet, ImageShape, LossKind};
use trifecta::layers::Saved;
use trifecta::layers::norm::NormKind;

const REL: f64 = 1e-4;
const ABS: f64 = 1e-6;
const PARAM_ABS: f64 = 1e-5;
const FLIP: f64 = 1e-7;

fn config(manifest: &serde_json::Value, variant: &str) -> FfConfig {
    let v = &manifest["variants"][variant];
    let image = ImageShape {
        channels: manifest["image"][0].as_u64().unwrap() as usize,
        height: manifest["image"][1].as_u64().unwrap() as usize,
        width: manifest["image"][2].as_u64().unwrap() as usize,
    };
    let classes = manifest["num_classes"].as_u64().unwrap() as usize;
    let mut config = FfConfig::trifecta(trifecta::ff::Arch::Small, 1.0, image, classes).unwrap();
    config.layers = manifest["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b[1].as_u64().unwrap() as usize, b[2].as_bool().unwrap()))
        .collect();
    config.loss = match v["loss"].as_str().unwrap() {
        "symba" => LossKind::Symba,
        "threshold" => LossKind::Threshold,
        other => panic!("unknown loss {other}"),
    };
    config.norm = match v["norm"].as_str().unwrap() {
        "batch" => NormKind::Batch,
        "layer" => NormKind::Layer,
        other => panic!("unknown norm {other}"),
    };
    config.apl = v["olu"].as_bool().unwrap();
    config.alpha = manifest["alpha"].as_f64().unwrap() as f32;
    config.tau = manifest["tau"].as_f64().unwrap() as f32;
    config.adam.lr = manifest["lr"].as_f64().unwrap() as f32;
    config
}

/// Runs golden variant `variant` on `backend` and checks every value against it.
pub fn run_variant<B: Backend>(backend: &B, variant: &str) {
    let shared = shared_dir();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("golden/manifest.json")).unwrap(),
    )
    .unwrap();
    let data = TensorFile::open(&shared.join("golden/data.safetensors"));
    let golden = TensorFile::open(&shared.join(format!("golden/{variant}.safetensors")));
    let config = config(&manifest, variant);
    let mut net = FfNet::new(backend, config.clone(), 0).unwrap();

    // Load the initial parameters and running statistics.
    for (name, param) in net.named_params_mut() {
        param
            .load_torch(backend, &golden.f32(&format!("init.{name}")))
            .unwrap();
    }
    for (name, buffer) in net.named_buffers_mut() {
        let init = format!("init.{name}");
        if golden.has(&init) {
            backend.write(&mut buffer.buf, &golden.f32(&init)).unwrap();
        }
    }

    let (x_shape, x_train) = data.f64("x_train");
    let (_, y_pos) = data.i64("y_pos");
    let (_, y_neg) = data.i64("y_neg");
    let (iterations, batch) = (x_shape[0], x_shape[1]);
    let (c, h, w) = (x_shape[2], x_shape[3], x_shape[4]);
    let per_image = c * h * w;
    let log = manifest["variants"][variant]["log"].as_array().unwrap();
    let blocks = config.layers.len();
    // Elements whose golden gradient was ever below FLIP: their Adam trajectory may differ.
    let mut flipped: HashMap<String, Vec<bool>> = HashMap::new();
    let mut checked = 0usize;

    for t in 0..iterations {
        let images: Vec<f32> = nchw_to_nhwc(
            &x_train[t * batch * per_image..(t + 1) * batch * per_image],
            batch,
            c,
            h,
            w,
        )
        .iter()
        .map(|v| *v as f32)
        .collect();
        let positive: Vec<u32> = y_pos[t * batch..(t + 1) * batch]
            .iter()
            .map(|v| *v as u32)
            .collect();
        let negative: Vec<u32> = y_neg[t * batch..(t + 1) * batch]
            .iter()
            .map(|v| *v as u32)
            .collect();
        let metrics = net
            .train_step_observed(backend, &images, &positive, &negative, &mut |i, net| {
                if i == 0 {
                    let (s, input) = golden.f64(&format!("iter{t}.input"));
                    let want = nchw_to_nhwc(&input, s[0], s[1], s[2], s[3]);
                    assert_close(
                        &format!("{variant} iter{t}.input"),
                        &net.input().to_host(backend)?,
                        &want,
                        REL,
                        ABS,
                    );
                }
                let (s, out) = golden.f64(&format!("iter{t}.block{i}.output"));
                let want = nchw_to_nhwc(&out, s[0], s[1], s[2], s[3]);
                let got = backend.download(net.blocks[i].output()).unwrap();
                assert_close(
                    &format!("{variant} iter{t}.block{i}.output"),
                    &got,
                    &want,
                    REL,
                    ABS,
                );
                let goodness_name = format!("iter{t}.block{i}.goodness");
                if golden.has(&goodness_name) {
                    let got = net.blocks[i].goodness.to_host(backend)?;
                    assert_close(
                        &format!("{variant} {goodness_name}"),
                        &got,
                        &golden.f64(&goodness_name).1,
                        REL,
                        ABS,
                    );
                }
                let prefix = format!("iter{t}.block{i}.grad.");
                for (name, param) in net.named_params() {
                    let key = format!("{prefix}{name}");
                    if golden.has(&key) {
                        let want = golden.f64(&key).1;
                        let got = param.grad_to_torch(backend)?;
                        let mask = flipped
                            .entry(name.clone())
                            .or_insert_with(|| vec![false; want.len()]);
                        // Both exactly zero (e.g. embedding rows of absent labels) cannot flip.
                        for ((m, g), ours) in mask.iter_mut().zip(&want).zip(&got) {
                            *m |= g.abs() < FLIP && *ours as f64 != *g;
                        }
                        assert_close(&format!("{variant} {key}"), &got, &want, REL, ABS);
                        checked += 1;
                    }
                }
                Ok(())
            })
            .unwrap();

        for entry in log
            .iter()
            .filter(|e| e["iteration"].as_u64() == Some(t as u64))
        {
            let i = entry["block"].as_u64().unwrap() as usize;
            let updated = entry["update"].as_bool().unwrap();
            assert_eq!(
                metrics[i].is_some(),
                updated,
                "{variant} iter{t} block{i}: update flag"
            );
            if let Some(m) = metrics[i] {
                for (what, got, key) in [
                    ("loss", m.loss, "loss"),
                    ("pos", m.positive, "pos"),
                    ("neg", m.negative, "neg"),
                    ("delta", m.delta(), "delta"),
                ] {
                    let want = entry[key].as_f64().unwrap();
                    // delta is a difference of two checked means: its absolute error is theirs.
                    let rel = if what == "delta" { 0.0 } else { REL };
                    let abs = if what == "delta" {
                        REL * m.positive.abs().max(m.negative.abs()) as f64 + ABS
                    } else {
                        ABS
                    };
                    assert_close(
                        &format!("{variant} log iter{t} block{i} {what}"),
                        &[got],
                        &[want],
                        rel,
                        abs,
                    );
                }
            }
        }

        for (name, param) in net.named_params() {
            let want = golden.f64(&format!("iter{t}.after.{name}")).1;
            let mask = flipped
                .get(&name)
                .cloned()
                .unwrap_or_else(|| vec![false; want.len()]);
            assert_close_masked(
                &format!("{variant} iter{t}.after.{name}"),
                &param.to_torch(backend).unwrap(),
                &want,
                0.0,
                PARAM_ABS,
                &|k| mask[k],
            );
        }
        for (name, buffer) in net.named_buffers_mut() {
            let want = golden.f64(&format!("iter{t}.after.{name}")).1;
            assert_close(
                &format!("{variant} iter{t}.after.{name}"),
                &buffer.to_host(backend).unwrap(),
                &want,
                REL,
                ABS,
            );
        }
    }
    assert!(
        checked >= iterations,
        "{variant}: only {checked} gradient tensors were compared"
    );
    let skipped: usize = flipped
        .values()
        .map(|m| m.iter().filter(|v| **v).count())
        .sum();
    println!(
        "{variant}: {checked} gradient tensors compared; {skipped} parameter elements skipped for |golden grad| < {FLIP}"
    );

    // Evaluation in eval mode.
    let (xs, x_test) = data.f64("x_test");
    let test_images: Vec<f32> = nchw_to_nhwc(&x_test, xs[0], xs[1], xs[2], xs[3])
        .iter()
        .map(|v| *v as f32)
        .collect();
    let goodness = net.goodness_per_label(backend, &test_images).unwrap();
    assert_close(
        &format!("{variant} eval.goodness"),
        &goodness,
        &golden.f64("eval.goodness").1,
        REL,
        ABS,
    );
    let (_, predictions) = golden.i64("eval.prediction_per_layer");
    let n = xs[0];
    for layer in 0..blocks {
        let got = trifecta::ff::eval::predict(&goodness, config.classes, blocks, n, &[layer]);
        let want: Vec<u32> = predictions[layer * n..(layer + 1) * n]
            .iter()
            .map(|v| *v as u32)
            .collect();
        assert_eq!(
            got, want,
            "{variant} eval.prediction_per_layer layer {layer}"
        );
    }
}
