//! 3x3 convolution (padding 1, stride 1, no bias) on the CPU, as im2col + `gemm`.
//!
//! Layouts: input `(N, H, W, Cin)`, weight `(Cout, 3, 3, Cin)`, output `(N, H, W, Cout)`.
//! With im2col rows `(N*H*W, 9*Cin)` ordered `(ky, kx, ci)`:
//! - forward:      out  = col  x W^T   (rows x Cout)
//! - grad weight:  dW  += dOut^T x col  (Cout x 9*Cin)
//!
//! The input gradient is a forward convolution of dOut with [`flip_weight`]'s filters.
//!
//! The batch is cut into chunks of whole samples whose im2col block stays cache sized; each
//! chunk runs one single-threaded gemm, and rayon spreads chunks over the threads. Weight
//! gradients are summed per thread, then over threads in a fixed order, so results depend only
//! on the thread count, never on scheduling.

use super::{ranges, with_scratch};
use crate::backend::ConvShape;
use rayon::prelude::*;

/// Target size of one im2col block, in floats (1 MiB).
const COL_BLOCK_FLOATS: usize = 1 << 18;
/// Fewer rows than this make gemm's micro-kernels run mostly on edges.
const MIN_ROWS: usize = 128;

fn samples_per_chunk(s: &ConvShape) -> usize {
    let pixels = s.h * s.w;
    let k = 9 * s.c_in;
    let rows = (COL_BLOCK_FLOATS / k).max(MIN_ROWS);
    (rows / pixels).clamp(1, s.n.max(1))
}

/// The weight of the convolution that maps output gradients to input gradients: (Cin, 3, 3,
/// Cout) with flipped[i, ky, kx, o] = weight[o, 2-ky, 2-kx, i].
pub fn flip_weight(weight: &[f32], c_in: usize, c_out: usize) -> Vec<f32> {
    let mut flipped = vec![0.0f32; weight.len()];
    for o in 0..c_out {
        for k in 0..9 {
            for i in 0..c_in {
                flipped[(i * 9 + 8 - k) * c_out + o] = weight[(o * 9 + k) * c_in + i];
            }
        }
    }
    flipped
}

/// Runs `$f(args.., c)` with `c` a constant for the 1-4 channels of block 0's input (an
/// image and its label channel), where one tap is a few floats and a call to `memcpy` or a
/// loop per tap costs more than the copy itself, and with `c` as given otherwise.
macro_rules! with_narrow_channels {
    ($f:ident($($arg:expr),*; $c:expr)) => {
        match $c {
            1 => $f($($arg),*, 1),
            2 => $f($($arg),*, 2),
            3 => $f($($arg),*, 3),
            4 => $f($($arg),*, 4),
            c => $f($($arg),*, c),
        }
    };
}

/// col (samples*H*W, 9*Cin) from x (samples, H, W, Cin).
fn im2col(col: &mut [f32], x: &[f32], samples: usize, h: usize, w: usize, c: usize) {
    with_narrow_channels!(im2col_inline(col, x, samples, h, w; c))
}

#[inline(always)]
fn im2col_inline(col: &mut [f32], x: &[f32], samples: usize, h: usize, w: usize, c: usize) {
    let k = 9 * c;
    for sample in 0..samples {
        let image = &x[sample * h * w * c..(sample + 1) * h * w * c];
        for oy in 0..h {
            for ox in 0..w {
                let row = &mut col[((sample * h + oy) * w + ox) * k..][..k];
                for ky in 0..3 {
                    let iy = oy as isize + ky as isize - 1;
                    for kx in 0..3 {
                        let ix = ox as isize + kx as isize - 1;
                        let dst = &mut row[(ky * 3 + kx) * c..][..c];
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            dst.fill(0.0);
                        } else {
                            let src = (iy as usize * w + ix as usize) * c;
                            dst.copy_from_slice(&image[src..src + c]);
                        }
                    }
                }
            }
        }
    }
}

/// dst (m x n, row-major) = [dst +] lhs (m x k) * rhs (k x n), with explicit element strides
/// for lhs and rhs (column stride, row stride).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: &[f32],
    rhs_cs: isize,
    rhs_rs: isize,
) {
    matmul_strided(
        m, n, k, dst, n, accumulate, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
    );
}

/// [`matmul`] with rows of dst `dst_rs` floats apart (columns contiguous). Every gemm of the
/// CPU backend goes through here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: &[f32],
    rhs_cs: isize,
    rhs_rs: isize,
) {
    let reach = |rows: usize, cols: usize, cs: isize, rs: isize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
        }
    };
    assert!(
        dst.len() >= reach(m, n, 1, dst_rs as isize),
        "matmul: dst too small"
    );
    assert!(
        lhs.len() >= reach(m, k, lhs_cs, lhs_rs),
        "matmul: lhs too small"
    );
    assert!(
        rhs.len() >= reach(k, n, rhs_cs, rhs_rs),
        "matmul: rhs too small"
    );
    // SAFETY: the asserts above keep every access of the three matrices inside their slices
    // (all strides are positive); dst is exclusively borrowed and never aliases lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

pub fn forward(out: &mut [f32], input: &[f32], weight: &[f32], s: ConvShape) {
    let pixels = s.h * s.w;
    let k = 9 * s.c_in;
    let chunk = samples_per_chunk(&s);
    out.par_chunks_mut(chunk * pixels * s.c_out)
        .zip(input.par_chunks(chunk * pixels * s.c_in))
        .for_each(|(out, x)| {
            let samples = x.len() / (pixels * s.c_in);
            let rows = samples * pixels;
            with_scratch(0, rows * k, |col| {
                im2col(col, x, samples, s.h, s.w, s.c_in);
                // rhs = W^T: element (kk, co) sits at weight[co * k + kk].
                matmul(
                    rows, s.c_out, k, out, false, col, 1, k as isize, weight, k as isize, 1,
                );
            });
        });
}

/// grad_input (N, H, W, Cin) = the input gradient, as P = dOut x W (rows x 9*Cin) scattered
/// back onto the pixels each tap read (col2im): for inputs much narrower than the output,
/// where the flipped forward convolution would transform or unfold dOut, Cout channels wide,
/// for a product only Cin wide. Each input pixel sums its 9 taps in a fixed order, per sample,
/// so the result does not depend on the thread count.
pub fn input_grad_col2im(grad_input: &mut [f32], grad_out: &[f32], weight: &[f32], s: ConvShape) {
    let pixels = s.h * s.w;
    let k = 9 * s.c_in;
    let chunk = samples_per_chunk(&s);
    grad_input
        .par_chunks_mut(chunk * pixels * s.c_in)
        .zip(grad_out.par_chunks(chunk * pixels * s.c_out))
        .for_each(|(dx, dy)| {
            let samples = dx.len() / (pixels * s.c_in);
            let rows = samples * pixels;
            with_scratch(0, rows * k, |p| {
                // P (rows x k) = dy (rows x Cout) * W (Cout x k), W row-major as stored.
                matmul(
                    rows,
                    k,
                    s.c_out,
                    p,
                    false,
                    dy,
                    1,
                    s.c_out as isize,
                    weight,
                    1,
                    k as isize,
                );
                col2im(dx, p, samples, s.h, s.w, s.c_in);
            });
        });
}

/// x (samples, H, W, C) = the sum over taps of col (samples*H*W, 9*C): the adjoint of
/// [`im2col`]. Pixel (iy, ix) takes tap (ky, kx) from output row (iy + 1 - ky, ix + 1 - kx).
fn col2im(x: &mut [f32], col: &[f32], samples: usize, h: usize, w: usize, c: usize) {
    with_narrow_channels!(col2im_inline(x, col, samples, h, w; c))
}

#[inline(always)]
fn col2im_inline(x: &mut [f32], col: &[f32], samples: usize, h: usize, w: usize, c: usize) {
    let k = 9 * c;
    for sample in 0..samples {
        for iy in 0..h {
            for ix in 0..w {
                let dst = &mut x[((sample * h + iy) * w + ix) * c..][..c];
                dst.fill(0.0);
                for ky in 0..3 {
                    let oy = iy as isize + 1 - ky as isize;
                    for kx in 0..3 {
                        let ox = ix as isize + 1 - kx as isize;
                        if oy < 0 || ox < 0 || oy >= h as isize || ox >= w as isize {
                            continue;
                        }
                        let row = (sample * h + oy as usize) * w + ox as usize;
                        let src = &col[row * k + (ky * 3 + kx) * c..][..c];
                        for (d, v) in dst.iter_mut().zip(src) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

/// grad_weight (Cout, 3, 3, Cin) += dOut^T x col, summed per thread range, then in order.
pub fn weight_grad(
    grad_weight: &mut [f32],
    grad_out: &[f32],
    input: &[f32],
    s: ConvShape,
    threads: usize,
) {
    let pixels = s.h * s.w;
    let k = 9 * s.c_in;
    let chunk = samples_per_chunk(&s);
    let parts = ranges(s.n, threads);
    let mut partials: Vec<Vec<f32>> = parts.iter().map(|_| vec![0.0; s.c_out * k]).collect();
    partials
        .par_iter_mut()
        .zip(parts.par_iter())
        .for_each(|(partial, range)| {
            let mut first = range.start;
            while first < range.end {
                let samples = chunk.min(range.end - first);
                let rows = samples * pixels;
                let x = &input[first * pixels * s.c_in..][..rows * s.c_in];
                let dy = &grad_out[first * pixels * s.c_out..][..rows * s.c_out];
                with_scratch(0, rows * k, |col| {
                    im2col(col, x, samples, s.h, s.w, s.c_in);
                    // dW (Cout x k) += dy^T (Cout x rows) * col (rows x k)
                    matmul(
                        s.c_out,
                        k,
                        rows,
                        partial,
                        true,
                        dy,
                        s.c_out as isize,
                        1,
                        col,
                        1,
                        k as isize,
                    );
                });
                first += samples;
            }
        });
    for partial in &partials {
        for (g, p) in grad_weight.iter_mut().zip(partial) {
            *g += p;
        }
    }
}
