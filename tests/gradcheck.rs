//! Finite-difference gradient checks for every backward kernel, on random shapes that include
//! odd spatial sizes and a batch of 1 where the op allows it. Each check is a generic function
//! of the backend, so a device backend runs the same checks.
//!
//! The scalar under test is L = sum(out * r) for a fixed random r; its gradient w.r.t. out is r.
//! Central differences in f32 carry rounding noise of about 1e-7 * |L| / eps, so the tolerance
//! is 1% of the gradient's scale plus that noise. Ties and dead ReLUs, where differences cannot
//! look, are checked exactly against the rule instead.

use trifecta::backend::cpu::Cpu;
use trifecta::backend::{
    Backend, ChannelShape, ConvShape, EmbedShape, FfLoss, PoolShape, SampleShape,
};
use trifecta::rng::Rng;

const EPS: f32 = 1e-2;
const SAMPLES: usize = 48;

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

/// Values away from 0 so that ReLU kinks are not crossed by the finite difference.
fn random_away_from_zero(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.normal();
            if v.abs() < 0.1 {
                v.signum() * 0.1 + v
            } else {
                v
            }
        })
        .collect()
}

/// Distinct values 0.1 apart (none within 0.05 of zero), shuffled: no max-pool tie or ReLU
/// kink lies within a finite-difference step.
fn random_distinct(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n)
        .map(|i| (i as f32 + 0.5) * 0.1 - n as f32 * 0.05)
        .collect();
    rng.shuffle(&mut v);
    v
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Compares `analytic` with central differences of `loss` at `x`, on a sample of coordinates.
fn check(what: &str, x: &[f32], analytic: &[f32], loss: &dyn Fn(&[f32]) -> f64, rng: &mut Rng) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let scale = analytic.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let base = loss(x).abs();
    let tolerance = 1e-2 * scale.max(1e-3) + 1e-6 * base / EPS as f64;
    let mut x = x.to_vec();
    let picks: Vec<usize> = if x.len() <= SAMPLES {
        (0..x.len()).collect()
    } else {
        (0..SAMPLES)
            .map(|_| rng.below(x.len() as u32) as usize)
            .collect()
    };
    for j in picks {
        let keep = x[j];
        x[j] = keep + EPS;
        let plus = loss(&x);
        x[j] = keep - EPS;
        let minus = loss(&x);
        x[j] = keep;
        let numeric = (plus - minus) / (2.0 * EPS as f64);
        let diff = (numeric - analytic[j] as f64).abs();
        assert!(
            diff <= tolerance,
            "{what}: d/dx[{j}] analytic {} vs numeric {numeric} (|diff| {diff:.3e} > {tolerance:.3e})",
            analytic[j]
        );
    }
}

fn conv_check<B: Backend>(b: &B, s: ConvShape, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = random(&mut rng, s.n * s.h * s.w * s.c_in);
    let w = random(&mut rng, s.c_out * 9 * s.c_in);
    let r = random(&mut rng, s.n * s.h * s.w * s.c_out);
    let forward = |x: &[f32], w: &[f32]| -> f64 {
        let mut out = b.zeros(r.len()).unwrap();
        b.conv3x3_forward(&mut out, &b.upload(x).unwrap(), &b.upload(w).unwrap(), s)
            .unwrap();
        dot(&b.download(&out).unwrap(), &r)
    };
    let mut gx = b.zeros(x.len()).unwrap();
    // Weight gradients accumulate: start from 1 and subtract it afterwards.
    let mut gw = b.upload(&vec![1.0; w.len()]).unwrap();
    b.conv3x3_backward(
        Some(&mut gx),
        &mut gw,
        &b.upload(&r).unwrap(),
        &b.upload(&x).unwrap(),
        &b.upload(&w).unwrap(),
        s,
    )
    .unwrap();
    let gw: Vec<f32> = b.download(&gw).unwrap().iter().map(|v| v - 1.0).collect();
    check(
        &format!("conv {s:?} input"),
        &x,
        &b.download(&gx).unwrap(),
        &|x| forward(x, &w),
        &mut rng,
    );
    check(
        &format!("conv {s:?} weight"),
        &w,
        &gw,
        &|w| forward(&x, w),
        &mut rng,
    );
    // Without the input gradient, the weight gradient is the same.
    let mut gw2 = b.zeros(w.len()).unwrap();
    b.conv3x3_backward(
        None,
        &mut gw2,
        &b.upload(&r).unwrap(),
        &b.upload(&x).unwrap(),
        &b.upload(&w).unwrap(),
        s,
    )
    .unwrap();
    let gw2 = b.download(&gw2).unwrap();
    for (a, c) in gw.iter().zip(&gw2) {
        assert!(
            (a - c).abs() <= 1e-4 * (1.0 + c.abs()),
            "conv weight grad with and without input grad: {a} vs {c}"
        );
    }
}

#[test]
fn conv3x3_gradients() {
    let b = Cpu::new(2).unwrap();
    conv_check(
        &b,
        ConvShape {
            n: 1,
            h: 5,
            w: 7,
            c_in: 3,
            c_out: 4,
        },
        1,
    );
    conv_check(
        &b,
        ConvShape {
            n: 3,
            h: 1,
            w: 1,
            c_in: 2,
            c_out: 3,
        },
        2,
    );
    // Several im2col chunks per thread and a partial last chunk.
    conv_check(
        &b,
        ConvShape {
            n: 5,
            h: 16,
            w: 16,
            c_in: 64,
            c_out: 8,
        },
        3,
    );
    conv_check(
        &b,
        ConvShape {
            n: 2,
            h: 4,
            w: 3,
            c_in: 5,
            c_out: 2,
        },
        4,
    );
}

fn batchnorm_check<B: Backend>(b: &B, n: usize, h: usize, w: usize, c: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let s = ChannelShape {
        rows: n * h * w,
        channels: c,
    };
    let x = random(&mut rng, s.rows * c);
    let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.normal()).collect();
    let beta = random(&mut rng, c);
    let r = random(&mut rng, s.rows * c);
    let forward = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
        let mut out = b.zeros(x.len()).unwrap();
        let (mut mean, mut rstd) = (b.zeros(c).unwrap(), b.zeros(c).unwrap());
        let (mut rm, mut rv) = (b.zeros(c).unwrap(), b.zeros(c).unwrap());
        b.batchnorm_forward_train(
            &mut out,
            &mut mean,
            &mut rstd,
            &mut rm,
            &mut rv,
            &b.upload(x).unwrap(),
            &b.upload(gamma).unwrap(),
            &b.upload(beta).unwrap(),
            s,
            1e-5,
            0.1,
        )
        .unwrap();
        dot(&b.download(&out).unwrap(), &r)
    };
    let mut out = b.zeros(x.len()).unwrap();
    let (mut mean, mut rstd) = (b.zeros(c).unwrap(), b.zeros(c).unwrap());
    let (mut rm, mut rv) = (b.zeros(c).unwrap(), b.zeros(c).unwrap());
    let (xb, gb) = (b.upload(&x).unwrap(), b.upload(&gamma).unwrap());
    b.batchnorm_forward_train(
        &mut out,
        &mut mean,
        &mut rstd,
        &mut rm,
        &mut rv,
        &xb,
        &gb,
        &b.upload(&beta).unwrap(),
        s,
        1e-5,
        0.1,
    )
    .unwrap();
    let mut gx = b.zeros(x.len()).unwrap();
    let (mut gg, mut gbeta) = (b.zeros(c).unwrap(), b.zeros(c).unwrap());
    b.batchnorm_backward(
        Some(&mut gx),
        &mut gg,
        &mut gbeta,
        &b.upload(&r).unwrap(),
        &mean,
        &rstd,
        &xb,
        &gb,
        s,
    )
    .unwrap();
    let what = format!("batchnorm n{n} {h}x{w} c{c}");
    check(
        &format!("{what} input"),
        &x,
        &b.download(&gx).unwrap(),
        &|x| forward(x, &gamma, &beta),
        &mut rng,
    );
    check(
        &format!("{what} gamma"),
        &gamma,
        &b.download(&gg).unwrap(),
        &|g| forward(&x, g, &beta),
        &mut rng,
    );
    check(
        &format!("{what} beta"),
        &beta,
        &b.download(&gbeta).unwrap(),
        &|be| forward(&x, &gamma, be),
        &mut rng,
    );
}

#[test]
fn batchnorm_gradients() {
    let b = Cpu::new(2).unwrap();
    batchnorm_check(&b, 1, 3, 5, 4, 10);
    batchnorm_check(&b, 4, 1, 1, 3, 11);
    batchnorm_check(&b, 3, 7, 5, 9, 12);
}

fn layernorm_check<B: Backend>(b: &B, n: usize, features: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let s = SampleShape { n, features };
    let x = random(&mut rng, n * features);
    let gamma: Vec<f32> = (0..features).map(|_| 1.0 + 0.5 * rng.normal()).collect();
    let beta = random(&mut rng, features);
    let r = random(&mut rng, n * features);
    let forward = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
        let mut out = b.zeros(x.len()).unwrap();
        let (mut mean, mut rstd) = (b.zeros(n).unwrap(), b.zeros(n).unwrap());
        b.layernorm_forward(
            &mut out,
            &mut mean,
            &mut rstd,
            &b.upload(x).unwrap(),
            &b.upload(gamma).unwrap(),
            &b.upload(beta).unwrap(),
            s,
            1e-5,
        )
        .unwrap();
        dot(&b.download(&out).unwrap(), &r)
    };
    let mut out = b.zeros(x.len()).unwrap();
    let (mut mean, mut rstd) = (b.zeros(n).unwrap(), b.zeros(n).unwrap());
    let (xb, gb) = (b.upload(&x).unwrap(), b.upload(&gamma).unwrap());
    b.layernorm_forward(
        &mut out,
        &mut mean,
        &mut rstd,
        &xb,
        &gb,
        &b.upload(&beta).unwrap(),
        s,
        1e-5,
    )
    .unwrap();
    let mut gx = b.zeros(x.len()).unwrap();
    let (mut gg, mut gbeta) = (b.zeros(features).unwrap(), b.zeros(features).unwrap());
    b.layernorm_backward(
        Some(&mut gx),
        &mut gg,
        &mut gbeta,
        &b.upload(&r).unwrap(),
        &mean,
        &rstd,
        &xb,
        &gb,
        s,
    )
    .unwrap();
    let what = format!("layernorm n{n} f{features}");
    check(
        &format!("{what} input"),
        &x,
        &b.download(&gx).unwrap(),
        &|x| forward(x, &gamma, &beta),
        &mut rng,
    );
    check(
        &format!("{what} gamma"),
        &gamma,
        &b.download(&gg).unwrap(),
        &|g| forward(&x, g, &beta),
        &mut rng,
    );
    check(
        &format!("{what} beta"),
        &beta,
        &b.download(&gbeta).unwrap(),
        &|be| forward(&x, &gamma, be),
        &mut rng,
    );
}

#[test]
fn layernorm_gradients() {
    let b = Cpu::new(2).unwrap();
    layernorm_check(&b, 1, 35, 20);
    layernorm_check(&b, 5, 3 * 5 * 7, 21);
}

fn relu_pool_check<B: Backend>(b: &B, s: PoolShape, seed: u64) {
    let mut rng = Rng::new(seed);
    let z = random_distinct(&mut rng, s.n * s.h * s.w * s.c);
    let out_len = s.n * (s.h / 2) * (s.w / 2) * s.c;
    let r = random(&mut rng, out_len);
    let forward = |z: &[f32]| -> f64 {
        let mut a = b.upload(z).unwrap();
        b.relu_forward(&mut a).unwrap();
        let mut out = b.zeros(out_len).unwrap();
        b.maxpool2_forward(&mut out, &a, s).unwrap();
        dot(&b.download(&out).unwrap(), &r)
    };
    let mut a = b.upload(&z).unwrap();
    b.relu_forward(&mut a).unwrap();
    let mut gz = b.zeros(z.len()).unwrap();
    b.relu_maxpool2_backward(&mut gz, &b.upload(&r).unwrap(), &a, s)
        .unwrap();
    check(
        &format!("relu+maxpool {s:?}"),
        &z,
        &b.download(&gz).unwrap(),
        &forward,
        &mut rng,
    );
}

#[test]
fn relu_maxpool_gradients() {
    let b = Cpu::new(2).unwrap();
    relu_pool_check(
        &b,
        PoolShape {
            n: 1,
            h: 5,
            w: 7,
            c: 3,
        },
        30,
    );
    relu_pool_check(
        &b,
        PoolShape {
            n: 3,
            h: 4,
            w: 4,
            c: 2,
        },
        31,
    );
    relu_pool_check(
        &b,
        PoolShape {
            n: 2,
            h: 2,
            w: 3,
            c: 5,
        },
        32,
    );
}

/// Where finite differences cannot look: ties and dead ReLUs. The pooled backward passes each
/// window's gradient to its first maximum in window order, and to none when that maximum is 0;
/// the ReLU backward zeroes where the activation is not positive. Checked exactly against
/// that rule on values drawn from a few levels (many ties and zeros), with channel counts wide
/// enough for the vectorised loops and their tails.
#[test]
fn relu_and_pool_backward_follow_the_tie_rule_exactly() {
    let b = Cpu::new(2).unwrap();
    let mut rng = Rng::new(33);
    let levels = [-1.0f32, 0.0, 0.5, 1.0];
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| levels[rng.below(levels.len() as u32) as usize])
            .collect()
    };
    for (n, h, w, c) in [(3, 6, 5, 37), (2, 4, 4, 64), (1, 2, 2, 8)] {
        let s = PoolShape { n, h, w, c };
        let x = draw(n * h * w * c);
        let (oh, ow) = (h / 2, w / 2);
        let g: Vec<f32> = (0..n * oh * ow * c).map(|i| 1.0 + i as f32).collect();
        let mut want = vec![0.0f32; x.len()];
        for i in 0..n {
            for (oy, ox, ch) in
                (0..oh).flat_map(|y| (0..ow).flat_map(move |x| (0..c).map(move |ch| (y, x, ch))))
            {
                let at = |dy: usize, dx: usize| ((i * h + 2 * oy + dy) * w + 2 * ox + dx) * c + ch;
                let window = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                let mut best = window[0];
                for &k in &window[1..] {
                    if x[k] > x[best] {
                        best = k;
                    }
                }
                if x[best] > 0.0 {
                    want[best] = g[((i * oh + oy) * ow + ox) * c + ch];
                }
            }
        }
        let mut got = b.zeros(x.len()).unwrap();
        b.relu_maxpool2_backward(&mut got, &b.upload(&g).unwrap(), &b.upload(&x).unwrap(), s)
            .unwrap();
        assert_eq!(
            b.download(&got).unwrap(),
            want,
            "relu+maxpool backward {s:?}"
        );

        let grad: Vec<f32> = (0..x.len()).map(|i| 1.0 + i as f32).collect();
        let want: Vec<f32> = x
            .iter()
            .zip(&grad)
            .map(|(a, g)| if *a > 0.0 { *g } else { 0.0 })
            .collect();
        let mut got = b.upload(&grad).unwrap();
        b.relu_backward(&mut got, &b.upload(&x).unwrap()).unwrap();
        assert_eq!(
            b.download(&got).unwrap(),
            want,
            "relu backward, {} values",
            x.len()
        );
    }
}

#[test]
fn relu_gradients() {
    let b = Cpu::new(2).unwrap();
    let mut rng = Rng::new(40);
    let z = random_away_from_zero(&mut rng, 37);
    let r = random(&mut rng, 37);
    let forward = |z: &[f32]| -> f64 {
        let mut a = b.upload(z).unwrap();
        b.relu_forward(&mut a).unwrap();
        dot(&b.download(&a).unwrap(), &r)
    };
    let mut a = b.upload(&z).unwrap();
    b.relu_forward(&mut a).unwrap();
    let mut g = b.upload(&r).unwrap();
    b.relu_backward(&mut g, &a).unwrap();
    check("relu", &z, &b.download(&g).unwrap(), &forward, &mut rng);
}

#[test]
fn goodness_gradients() {
    let b = Cpu::new(2).unwrap();
    for (n, features, seed) in [(1, 13, 50), (4, 30, 51)] {
        let mut rng = Rng::new(seed);
        let s = SampleShape { n, features };
        let x = random(&mut rng, n * features);
        let r = random(&mut rng, n);
        let forward = |x: &[f32]| -> f64 {
            let mut g = b.zeros(n).unwrap();
            b.goodness_forward(&mut g, &b.upload(x).unwrap(), s)
                .unwrap();
            dot(&b.download(&g).unwrap(), &r)
        };
        let mut gx = b.zeros(x.len()).unwrap();
        b.goodness_backward(&mut gx, &b.upload(&r).unwrap(), &b.upload(&x).unwrap(), s)
            .unwrap();
        check(
            &format!("goodness n{n}"),
            &x,
            &b.download(&gx).unwrap(),
            &forward,
            &mut rng,
        );
    }
}

#[test]
fn ff_loss_gradients() {
    let b = Cpu::new(2).unwrap();
    for (pairs, kind, seed) in [
        (1, FfLoss::Symba { alpha: 4.0 }, 60),
        (6, FfLoss::Symba { alpha: 4.0 }, 61),
        (1, FfLoss::Threshold { tau: 2.0 }, 62),
        (5, FfLoss::Threshold { tau: 2.0 }, 63),
    ] {
        let mut rng = Rng::new(seed);
        let goodness: Vec<f32> = (0..2 * pairs).map(|_| rng.uniform(0.0, 4.0)).collect();
        let forward = |g: &[f32]| -> f64 {
            let (mut loss, mut grad) = (b.zeros(1).unwrap(), b.zeros(2 * pairs).unwrap());
            b.ff_loss(&mut loss, &mut grad, &b.upload(g).unwrap(), pairs, kind)
                .unwrap();
            b.download(&loss).unwrap()[0] as f64
        };
        let (mut loss, mut grad) = (b.zeros(1).unwrap(), b.zeros(2 * pairs).unwrap());
        b.ff_loss(
            &mut loss,
            &mut grad,
            &b.upload(&goodness).unwrap(),
            pairs,
            kind,
        )
        .unwrap();
        check(
            &format!("{kind:?} pairs {pairs}"),
            &goodness,
            &b.download(&grad).unwrap(),
            &forward,
            &mut rng,
        );
    }
}

#[test]
fn embedding_gradients() {
    let b = Cpu::new(2).unwrap();
    let mut rng = Rng::new(70);
    let s = EmbedShape {
        n: 5,
        pixels: 6,
        channels: 2,
    };
    let classes = 4;
    let images = random(&mut rng, s.n * s.pixels * s.channels);
    let table = random(&mut rng, classes * s.pixels);
    let labels = [3u32, 0, 3, 1, 2];
    let r = random(&mut rng, s.n * s.pixels * (s.channels + 1));
    let forward = |table: &[f32]| -> f64 {
        let mut out = b.zeros(r.len()).unwrap();
        b.embed_forward(
            &mut out,
            &b.upload(&images).unwrap(),
            &b.upload(table).unwrap(),
            &labels,
            s,
        )
        .unwrap();
        dot(&b.download(&out).unwrap(), &r)
    };
    let mut gt = b.zeros(table.len()).unwrap();
    b.embed_backward(&mut gt, &b.upload(&r).unwrap(), &labels, s)
        .unwrap();
    check(
        "label embedding",
        &table,
        &b.download(&gt).unwrap(),
        &forward,
        &mut rng,
    );
}

#[test]
fn embedding_rejects_out_of_range_labels() {
    let b = Cpu::new(1).unwrap();
    let s = EmbedShape {
        n: 1,
        pixels: 2,
        channels: 1,
    };
    let mut out = b.zeros(4).unwrap();
    let err = b
        .embed_forward(&mut out, &vec![0.0; 2], &vec![0.0; 4], &[2], s)
        .unwrap_err();
    assert!(err.to_string().contains("label 2 out of range"), "{err}");
}

#[test]
fn avgpool_gradients() {
    let b = Cpu::new(2).unwrap();
    for (n, pixels, c, seed) in [(1, 9, 3, 80), (4, 2, 5, 81)] {
        let mut rng = Rng::new(seed);
        let s = ChannelShape {
            rows: n * pixels,
            channels: c,
        };
        let x = random(&mut rng, n * pixels * c);
        let r = random(&mut rng, n * c);
        let forward = |x: &[f32]| -> f64 {
            let mut out = b.zeros(n * c).unwrap();
            b.avgpool_forward(&mut out, &b.upload(x).unwrap(), s, n)
                .unwrap();
            dot(&b.download(&out).unwrap(), &r)
        };
        let mut gx = b.zeros(x.len()).unwrap();
        b.avgpool_backward(&mut gx, &b.upload(&r).unwrap(), s, n)
            .unwrap();
        check(
            &format!("avgpool n{n}"),
            &x,
            &b.download(&gx).unwrap(),
            &forward,
            &mut rng,
        );
    }
}

#[test]
fn linear_gradients() {
    let b = Cpu::new(2).unwrap();
    for (n, inputs, outputs, seed) in [(1, 7, 3, 90), (5, 16, 10, 91)] {
        let mut rng = Rng::new(seed);
        let x = random(&mut rng, n * inputs);
        let w = random(&mut rng, outputs * inputs);
        let bias = random(&mut rng, outputs);
        let r = random(&mut rng, n * outputs);
        let forward = |x: &[f32], w: &[f32], bias: &[f32]| -> f64 {
            let mut out = b.zeros(n * outputs).unwrap();
            b.linear_forward(
                &mut out,
                &b.upload(x).unwrap(),
                &b.upload(w).unwrap(),
                &b.upload(bias).unwrap(),
                n,
                inputs,
                outputs,
            )
            .unwrap();
            dot(&b.download(&out).unwrap(), &r)
        };
        let mut gx = b.zeros(x.len()).unwrap();
        let (mut gw, mut gb) = (b.zeros(w.len()).unwrap(), b.zeros(outputs).unwrap());
        b.linear_backward(
            Some(&mut gx),
            &mut gw,
            &mut gb,
            &b.upload(&r).unwrap(),
            &b.upload(&x).unwrap(),
            &b.upload(&w).unwrap(),
            n,
            inputs,
            outputs,
        )
        .unwrap();
        let what = format!("linear n{n} {inputs}->{outputs}");
        check(
            &format!("{what} input"),
            &x,
            &b.download(&gx).unwrap(),
            &|x| forward(x, &w, &bias),
            &mut rng,
        );
        check(
            &format!("{what} weight"),
            &w,
            &b.download(&gw).unwrap(),
            &|w| forward(&x, w, &bias),
            &mut rng,
        );
        check(
            &format!("{what} bias"),
            &bias,
            &b.download(&gb).unwrap(),
            &|bi| forward(&x, &w, bi),
            &mut rng,
        );
    }
}

#[test]
fn cross_entropy_gradients() {
    let b = Cpu::new(2).unwrap();
    for (n, classes, seed) in [(1, 10, 100), (6, 4, 101)] {
        let mut rng = Rng::new(seed);
        let logits: Vec<f32> = (0..n * classes).map(|_| 3.0 * rng.normal()).collect();
        let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u32)).collect();
        let forward = |z: &[f32]| -> f64 {
            let (mut loss, mut g) = (b.zeros(1).unwrap(), b.zeros(n * classes).unwrap());
            b.cross_entropy(&mut loss, &mut g, &b.upload(z).unwrap(), &labels, classes)
                .unwrap();
            b.download(&loss).unwrap()[0] as f64
        };
        let (mut loss, mut g) = (b.zeros(1).unwrap(), b.zeros(n * classes).unwrap());
        b.cross_entropy(
            &mut loss,
            &mut g,
            &b.upload(&logits).unwrap(),
            &labels,
            classes,
        )
        .unwrap();
        check(
            &format!("cross entropy n{n}"),
            &logits,
            &b.download(&g).unwrap(),
            &forward,
            &mut rng,
        );
        // Against the closed form -log softmax, computed here in f64.
        let mut want = 0.0f64;
        for i in 0..n {
            let z = &logits[i * classes..(i + 1) * classes];
            let sum: f64 = z.iter().map(|v| (*v as f64).exp()).sum();
            want += sum.ln() - z[labels[i] as usize] as f64;
        }
        let got = b.download(&loss).unwrap()[0] as f64;
        assert!(
            (got - want / n as f64).abs() < 1e-5 * (1.0 + got.abs()),
            "{got} vs {}",
            want / n as f64
        );
    }
}
