//! BatchNorm and LayerNorm kernels on the CPU.
//!
//! BatchNorm (per channel c over all rows r = (n, h, w)):
//!   y = (x - mean_c) * rstd_c * gamma_c + beta_c,   rstd_c = 1 / sqrt(var_c + eps)
//!   dx = rstd/R * (R * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)),  dxhat = dy * gamma
//! LayerNorm is the same formula with the roles swapped: statistics per sample over all of its
//! features, and an affine parameter per feature.
//!
//! Sums are taken in f64, per thread range and then in a fixed order, so a result depends on
//! the thread count only.

use super::ranges;
use crate::backend::{ChannelShape, SampleShape};
use rayon::prelude::*;

/// Per-column sums of `f(row)` over the rows of a row-major `(rows, cols)` layout, per thread
/// range and then in a fixed order. `f(r, a, b)` adds row `r`'s contributions into `a` and `b`.
fn column_sums(
    rows: usize,
    cols: usize,
    threads: usize,
    f: impl Fn(usize, &mut [f64], &mut [f64]) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let parts = ranges(rows, threads);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = parts
        .par_iter()
        .map(|range| {
            let mut a = vec![0.0f64; cols];
            let mut b = vec![0.0f64; cols];
            for r in range.clone() {
                f(r, &mut a, &mut b);
            }
            (a, b)
        })
        .collect();
    let mut a = vec![0.0f64; cols];
    let mut b = vec![0.0f64; cols];
    for (pa, pb) in partials {
        for c in 0..cols {
            a[c] += pa[c];
            b[c] += pb[c];
        }
    }
    (a, b)
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    input: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: ChannelShape,
    eps: f32,
    momentum: f32,
    threads: usize,
) {
    let (rows, channels) = (s.rows, s.channels);
    let (sum, _) = column_sums(rows, channels, threads, |r, sum, _| {
        for (s, x) in sum.iter_mut().zip(&input[r * channels..(r + 1) * channels]) {
            *s += *x as f64;
        }
    });
    let mean64: Vec<f64> = sum.iter().map(|v| v / rows as f64).collect();
    // Two passes: the variance of activations with a large mean stays exact.
    let (sq, _) = column_sums(rows, channels, threads, |r, sq, _| {
        let row = &input[r * channels..(r + 1) * channels];
        for c in 0..channels {
            let d = row[c] as f64 - mean64[c];
            sq[c] += d * d;
        }
    });
    for c in 0..channels {
        let var = sq[c] / rows as f64;
        mean[c] = mean64[c] as f32;
        rstd[c] = (1.0 / (var + eps as f64).sqrt()) as f32;
        let unbiased = if rows > 1 {
            var * rows as f64 / (rows - 1) as f64
        } else {
            var
        };
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c];
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbiased as f32;
    }
    normalize_rows(out, input, mean, rstd, gamma, beta, channels);
}

/// y = (x - mean) * rstd * gamma + beta, per channel, in parallel over rows.
fn normalize_rows(
    out: &mut [f32],
    input: &[f32],
    mean: &[f32],
    rstd: &[f32],
    gamma: &[f32],
    beta: &[f32],
    channels: usize,
) {
    let scale: Vec<f32> = (0..channels).map(|c| rstd[c] * gamma[c]).collect();
    let shift: Vec<f32> = (0..channels)
        .map(|c| beta[c] - mean[c] * rstd[c] * gamma[c])
        .collect();
    out.par_chunks_mut(channels * 64)
        .zip(input.par_chunks(channels * 64))
        .for_each(|(o, x)| {
            for (orow, xrow) in o.chunks_mut(channels).zip(x.chunks(channels)) {
                for c in 0..channels {
                    orow[c] = xrow[c] * scale[c] + shift[c];
                }
            }
        });
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    out: &mut [f32],
    input: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    s: ChannelShape,
    eps: f32,
) {
    let rstd: Vec<f32> = running_var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    normalize_rows(out, input, running_mean, &rstd, gamma, beta, s.channels);
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    grad_input: Option<&mut [f32]>,
    grad_gamma: &mut [f32],
    grad_beta: &mut [f32],
    grad_out: &[f32],
    mean: &[f32],
    rstd: &[f32],
    input: &[f32],
    gamma: &[f32],
    s: ChannelShape,
    threads: usize,
) {
    let (rows, channels) = (s.rows, s.channels);
    // sum(dy) and sum(dy * x) per channel; sum(dy * xhat) = rstd * (sum(dy x) - mean sum(dy)).
    let (sum_dy, sum_dy_x) = column_sums(rows, channels, threads, |r, a, b| {
        let dy = &grad_out[r * channels..(r + 1) * channels];
        let x = &input[r * channels..(r + 1) * channels];
        for c in 0..channels {
            a[c] += dy[c] as f64;
            b[c] += dy[c] as f64 * x[c] as f64;
        }
    });
    let sum_dy_xhat: Vec<f64> = (0..channels)
        .map(|c| rstd[c] as f64 * (sum_dy_x[c] - mean[c] as f64 * sum_dy[c]))
        .collect();
    for c in 0..channels {
        grad_beta[c] += sum_dy[c] as f32;
        grad_gamma[c] += sum_dy_xhat[c] as f32;
    }
    let Some(grad_input) = grad_input else {
        return;
    };
    // dx = k (dy - mean(dy) - xhat mean(dy xhat)), k = gamma rstd, written as
    // dx = k dy + slope x + offset with per-channel coefficients.
    let mut k = vec![0.0f32; channels];
    let mut slope = vec![0.0f32; channels];
    let mut offset = vec![0.0f32; channels];
    for c in 0..channels {
        let mean_dy = sum_dy[c] / rows as f64;
        let mean_dy_xhat = sum_dy_xhat[c] / rows as f64;
        let kc = gamma[c] as f64 * rstd[c] as f64;
        let r = rstd[c] as f64;
        k[c] = kc as f32;
        slope[c] = (-kc * r * mean_dy_xhat) as f32;
        offset[c] = (kc * (r * mean_dy_xhat * mean[c] as f64 - mean_dy)) as f32;
    }
    grad_input
        .par_chunks_mut(channels * 64)
        .zip(grad_out.par_chunks(channels * 64))
        .zip(input.par_chunks(channels * 64))
        .for_each(|((dx, dy), x)| {
            for ((dx, dy), x) in dx
                .chunks_mut(channels)
                .zip(dy.chunks(channels))
                .zip(x.chunks(channels))
            {
                for c in 0..channels {
                    dx[c] = k[c] * dy[c] + slope[c] * x[c] + offset[c];
                }
            }
        });
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    input: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: SampleShape,
    eps: f32,
) {
    let f = s.features;
    out.par_chunks_mut(f)
        .zip(input.par_chunks(f))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .for_each(|((y, x), (mu, rs))| {
            let m = x.iter().map(|v| *v as f64).sum::<f64>() / f as f64;
            let var = x.iter().map(|v| (*v as f64 - m).powi(2)).sum::<f64>() / f as f64;
            *mu = m as f32;
            *rs = (1.0 / (var + eps as f64).sqrt()) as f32;
            for i in 0..f {
                y[i] = (x[i] - *mu) * *rs * gamma[i] + beta[i];
            }
        });
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    grad_input: Option<&mut [f32]>,
    grad_gamma: &mut [f32],
    grad_beta: &mut [f32],
    grad_out: &[f32],
    mean: &[f32],
    rstd: &[f32],
    input: &[f32],
    gamma: &[f32],
    s: SampleShape,
    threads: usize,
) {
    let f = s.features;
    // Parameter gradients: the per-sample rows are the reduction axis.
    let (dgamma, dbeta) = column_sums(s.n, f, threads, |n, dgamma, dbeta| {
        let x = &input[n * f..(n + 1) * f];
        let dy = &grad_out[n * f..(n + 1) * f];
        for i in 0..f {
            let xhat = (x[i] - mean[n]) * rstd[n];
            dgamma[i] += (dy[i] * xhat) as f64;
            dbeta[i] += dy[i] as f64;
        }
    });
    for i in 0..f {
        grad_gamma[i] += dgamma[i] as f32;
        grad_beta[i] += dbeta[i] as f32;
    }
    let Some(grad_input) = grad_input else {
        return;
    };
    grad_input
        .par_chunks_mut(f)
        .enumerate()
        .for_each(|(n, dx)| {
            let x = &input[n * f..(n + 1) * f];
            let dy = &grad_out[n * f..(n + 1) * f];
            let (mu, rs) = (mean[n], rstd[n]);
            let mut sum = 0.0f64;
            let mut sum_xhat = 0.0f64;
            for i in 0..f {
                let dxhat = dy[i] * gamma[i];
                sum += dxhat as f64;
                sum_xhat += (dxhat * (x[i] - mu) * rs) as f64;
            }
            let mean_dxhat = (sum / f as f64) as f32;
            let mean_dxhat_xhat = (sum_xhat / f as f64) as f32;
            for i in 0..f {
                let xhat = (x[i] - mu) * rs;
                dx[i] = rs * (dy[i] * gamma[i] - mean_dxhat - xhat * mean_dxhat_xhat);
            }
        });
}
