//! The cheap kernels on the CPU: label embedding, ReLU, 2x2 max-pool, goodness, the FF losses
//! and Adam. Each is one or two passes over memory, parallel over fixed chunks.

use crate::backend::{AdamParams, EmbedShape, FfLoss, PoolShape, SampleShape};
use multiversion::multiversion;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

pub fn embed_forward(
    out: &mut [f32],
    images: &[f32],
    table: &[f32],
    labels: &[u32],
    s: EmbedShape,
) {
    let c = s.channels;
    out.par_chunks_mut(s.pixels * (c + 1))
        .zip(images.par_chunks(s.pixels * c))
        .zip(labels.par_iter())
        .for_each(|((o, x), &label)| {
            let plane = &table[label as usize * s.pixels..][..s.pixels];
            for p in 0..s.pixels {
                o[p * (c + 1)..p * (c + 1) + c].copy_from_slice(&x[p * c..(p + 1) * c]);
                o[p * (c + 1) + c] = plane[p];
            }
        });
}

pub fn embed_backward(grad_table: &mut [f32], grad_input: &[f32], labels: &[u32], s: EmbedShape) {
    let c = s.channels;
    for (n, &label) in labels.iter().enumerate() {
        let row = &mut grad_table[label as usize * s.pixels..][..s.pixels];
        let g = &grad_input[n * s.pixels * (c + 1)..][..s.pixels * (c + 1)];
        for p in 0..s.pixels {
            row[p] += g[p * (c + 1) + c];
        }
    }
}

/// out = pre + map, the map (one sample's worth) added to every sample.
pub fn add_bias_map(out: &mut [f32], pre: &[f32], map: &[f32]) {
    out.par_chunks_mut(map.len().max(1))
        .zip(pre.par_chunks(map.len().max(1)))
        .for_each(|(o, p)| {
            for ((o, p), m) in o.iter_mut().zip(p).zip(map) {
                *o = p + m;
            }
        });
}

/// out = ReLU(pre + map), the map added to every sample: add_bias_map and relu_forward in
/// one pass, the same values.
pub fn add_bias_map_relu(out: &mut [f32], pre: &[f32], map: &[f32]) {
    out.par_chunks_mut(map.len().max(1))
        .zip(pre.par_chunks(map.len().max(1)))
        .for_each(|(o, p)| {
            for ((o, p), m) in o.iter_mut().zip(p).zip(map) {
                *o = (p + m).max(0.0);
            }
        });
}

pub fn relu_forward(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|x| {
        for v in x {
            *v = v.max(0.0);
        }
    });
}

pub fn relu_backward(grad: &mut [f32], activation: &[f32]) {
    grad.par_chunks_mut(CHUNK)
        .zip(activation.par_chunks(CHUNK))
        .for_each(|(g, a)| {
            // A store on every element, not a branch around the dead ones: the loop vectorises.
            for (g, a) in g.iter_mut().zip(a) {
                *g = if *a <= 0.0 { 0.0 } else { *g };
            }
        });
}

pub fn maxpool2_forward(out: &mut [f32], input: &[f32], s: PoolShape) {
    let (oh, ow, c) = (s.h / 2, s.w / 2, s.c);
    out.par_chunks_mut(oh * ow * c)
        .zip(input.par_chunks(s.h * s.w * c))
        .for_each(|(o, x)| {
            for oy in 0..oh {
                for ox in 0..ow {
                    let dst = &mut o[(oy * ow + ox) * c..][..c];
                    let at =
                        |dy: usize, dx: usize| &x[((2 * oy + dy) * s.w + 2 * ox + dx) * c..][..c];
                    let (a, b, e, f) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                    for ch in 0..c {
                        dst[ch] = a[ch].max(b[ch]).max(e[ch]).max(f[ch]);
                    }
                }
            }
        });
}

pub fn relu_maxpool2_backward(
    grad_input: &mut [f32],
    grad_out: &[f32],
    activation: &[f32],
    s: PoolShape,
) {
    let (oh, ow, c) = (s.h / 2, s.w / 2, s.c);
    grad_input
        .par_chunks_mut(s.h * s.w * c)
        .zip(grad_out.par_chunks(oh * ow * c))
        .zip(activation.par_chunks(s.h * s.w * c))
        .for_each(|((gi, go), x)| relu_maxpool2_backward_sample(gi, go, x, s));
}

/// One sample of [`relu_maxpool2_backward`], compiled for each SIMD level and chosen at run
/// time: the compiler vectorises its channel loop with AVX2 or AVX-512 but finds x86-64's
/// baseline SSE2, which lacks blends, not worth it. The same float operations either way.
#[multiversion(targets = "simd")]
fn relu_maxpool2_backward_sample(gi: &mut [f32], go: &[f32], x: &[f32], s: PoolShape) {
    let (oh, ow, c) = (s.h / 2, s.w / 2, s.c);
    let row = s.w * c;
    if !s.h.is_multiple_of(2) || !s.w.is_multiple_of(2) {
        // The last row or column is in no window.
        gi.fill(0.0);
    }
    for oy in 0..oh {
        let (top, bottom) = gi[2 * oy * row..(2 * oy + 2) * row].split_at_mut(row);
        for ox in 0..ow {
            let at = 2 * ox * c;
            let (ga, gb) = top[at..at + 2 * c].split_at_mut(c);
            let (gc, gd) = bottom[at..at + 2 * c].split_at_mut(c);
            let xa = &x[2 * oy * row + at..][..c];
            let xb = &x[2 * oy * row + at + c..][..c];
            let xc = &x[(2 * oy + 1) * row + at..][..c];
            let xd = &x[(2 * oy + 1) * row + at + c..][..c];
            let g = &go[(oy * ow + ox) * c..][..c];
            for ch in 0..c {
                let (a, b, cc, d) = (xa[ch], xb[ch], xc[ch], xd[ch]);
                // The first maximum in window order wins, as in PyTorch; a maximum of 0 is a
                // dead ReLU and passes nothing. `&`, not `&&`: no branches to vectorise.
                let pick_a = (a >= b) & (a >= cc) & (a >= d);
                let pick_b = !pick_a & (b >= cc) & (b >= d);
                let pick_c = !pick_a & !pick_b & (cc >= d);
                let pick_d = !(pick_a | pick_b | pick_c);
                let live = a.max(b).max(cc).max(d) > 0.0;
                let pass = if live { g[ch] } else { 0.0 };
                ga[ch] = if pick_a { pass } else { 0.0 };
                gb[ch] = if pick_b { pass } else { 0.0 };
                gc[ch] = if pick_c { pass } else { 0.0 };
                gd[ch] = if pick_d { pass } else { 0.0 };
            }
        }
    }
}

pub fn goodness_forward(goodness: &mut [f32], input: &[f32], s: SampleShape) {
    goodness
        .par_iter_mut()
        .zip(input.par_chunks(s.features))
        .for_each(|(g, x)| {
            let sum: f64 = x.iter().map(|v| (*v as f64) * (*v as f64)).sum();
            *g = (sum / s.features as f64) as f32;
        });
}

pub fn goodness_backward(
    grad_input: &mut [f32],
    grad_goodness: &[f32],
    input: &[f32],
    s: SampleShape,
) {
    let scale = 2.0 / s.features as f32;
    grad_input
        .par_chunks_mut(s.features)
        .zip(input.par_chunks(s.features))
        .zip(grad_goodness.par_iter())
        .for_each(|((dx, x), dg)| {
            let k = dg * scale;
            for (d, v) in dx.iter_mut().zip(x) {
                *d = k * v;
            }
        });
}

/// log(1 + exp(x)), stable for any x.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn ff_loss(
    loss: &mut [f32],
    grad_goodness: &mut [f32],
    goodness: &[f32],
    pairs: usize,
    kind: FfLoss,
) {
    let (positive, negative) = goodness.split_at(pairs);
    let (grad_positive, grad_negative) = grad_goodness.split_at_mut(pairs);
    let mut total = 0.0f64;
    match kind {
        FfLoss::Symba { alpha } => {
            let alpha = alpha as f64;
            for i in 0..pairs {
                let delta = positive[i] as f64 - negative[i] as f64;
                total += softplus(-alpha * delta);
                let d = -alpha * sigmoid(-alpha * delta) / pairs as f64;
                grad_positive[i] = d as f32;
                grad_negative[i] = -d as f32;
            }
            loss[0] = (total / pairs as f64) as f32;
        }
        FfLoss::Threshold { tau } => {
            let tau = tau as f64;
            let terms = 2.0 * pairs as f64;
            for i in 0..pairs {
                let (p, n) = (positive[i] as f64, negative[i] as f64);
                total += softplus(tau - p) + softplus(n - tau);
                grad_positive[i] = (-sigmoid(tau - p) / terms) as f32;
                grad_negative[i] = (sigmoid(n - tau) / terms) as f32;
            }
            loss[0] = (total / terms) as f32;
        }
    }
}

pub fn adam_step(
    param: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: &[f32],
    step: u64,
    hp: AdamParams,
) {
    let (step_size, bias2_sqrt) = hp.step_factors(step);
    param
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            for i in 0..p.len() {
                m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g[i];
                v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g[i] * g[i];
                let denom = v[i].sqrt() / bias2_sqrt + hp.eps;
                p[i] -= step_size * m[i] / denom;
            }
        });
}

/// out (N, C) = mean over rows of each sample's (pixels, C) block.
pub fn avgpool_forward(out: &mut [f32], input: &[f32], pixels: usize, c: usize) {
    out.par_chunks_mut(c)
        .zip(input.par_chunks(pixels * c))
        .for_each(|(o, x)| {
            o.fill(0.0);
            for px in x.chunks(c) {
                for (a, v) in o.iter_mut().zip(px) {
                    *a += v;
                }
            }
            let scale = 1.0 / pixels as f32;
            for a in o.iter_mut() {
                *a *= scale;
            }
        });
}

pub fn avgpool_backward(grad_input: &mut [f32], grad_out: &[f32], pixels: usize, c: usize) {
    let scale = 1.0 / pixels as f32;
    grad_input
        .par_chunks_mut(pixels * c)
        .zip(grad_out.par_chunks(c))
        .for_each(|(gi, g)| {
            for px in gi.chunks_mut(c) {
                for (d, v) in px.iter_mut().zip(g) {
                    *d = v * scale;
                }
            }
        });
}

pub fn cross_entropy(
    loss: &mut [f32],
    grad_logits: &mut [f32],
    logits: &[f32],
    labels: &[u32],
    classes: usize,
) {
    let n = labels.len();
    let mut total = 0.0f64;
    for (i, &label) in labels.iter().enumerate() {
        let z = &logits[i * classes..(i + 1) * classes];
        let g = &mut grad_logits[i * classes..(i + 1) * classes];
        let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = z.iter().map(|v| (*v as f64 - max).exp()).sum();
        total += sum.ln() + max - z[label as usize] as f64;
        for (k, (gk, zk)) in g.iter_mut().zip(z).enumerate() {
            let p = (*zk as f64 - max).exp() / sum;
            *gk = ((p - if k == label as usize { 1.0 } else { 0.0 }) / n as f64) as f32;
        }
    }
    loss[0] = (total / n as f64) as f32;
}
