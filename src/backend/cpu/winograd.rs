//! 3x3 convolution (padding 1) by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray,
//! 2016): 16 multiplies per 2x2 output tile and channel pair instead of 36.
//!
//! Per 2x2 output tile, with d the 4x4 input patch starting at (2ty-1, 2tx-1) and g a 3x3 filter:
//!   V = Bt d B,   U = G g Gt,   M = V (.) U summed over input channels,   Y = At M A
//! The 16 positions xi of the 4x4 transform domain are independent matrix products:
//!   M_xi (tiles x Cout) = V_xi (tiles x Cin) * U_xi (Cin x Cout)          (forward)
//!   dU_xi += V_xi^T * dM_xi                                              (weight gradient)
//! with dM = A dY At and dg = Gt dU G: the exact adjoints of the forward transforms. The input
//! gradient is a forward convolution with flipped filters ([`input_grad`], which transforms
//! them straight from the forward filters).
//!
//! Layouts: input `(N, H, W, Cin)`, weight `(Cout, 3, 3, Cin)`. Transformed tiles are stored
//! tile-major, `(tiles, 16, C)`, so that each tile's transform writes one contiguous block and
//! the gemms read it with a row stride of 16*C. U and dU are `(Cin, 16, Cout)`.

use super::conv::matmul_strided;
use super::{ranges, with_scratch};
use crate::backend::ConvShape;
use multiversion::multiversion;
use rayon::prelude::*;

/// Target floats of transformed data (V and M) per chunk: 4 MiB.
const CHUNK_FLOATS: usize = 1 << 20;

fn tiles_per_sample(s: &ConvShape) -> usize {
    s.h.div_ceil(2) * s.w.div_ceil(2)
}

fn samples_per_chunk(s: &ConvShape) -> usize {
    let per_sample = tiles_per_sample(s) * 16 * (s.c_in + s.c_out);
    (CHUNK_FLOATS / per_sample).clamp(1, s.n.max(1))
}

/// u (Cin, 16, Cout) = G g Gt for every filter of `weight` (Cout, 3, 3, Cin).
pub fn transform_weight(u: &mut [f32], weight: &[f32], c_in: usize, c_out: usize) {
    transform_filters(u, c_out, |i, o, tap| weight[(o * 9 + tap) * c_in + i]);
}

/// u of the input gradient's convolution (`c_out` inputs, `c_in` outputs), read straight from
/// the forward `weight` (Cout, 3, 3, Cin): the same as [`transform_weight`] of
/// `conv::flip_weight(weight, c_in, c_out)`, without writing the flipped copy (a transpose
/// whose scattered stores took 10 ms of the default step). Its inner loop reads `weight`
/// contiguously.
pub fn transform_weight_flipped(u: &mut [f32], weight: &[f32], c_in: usize, c_out: usize) {
    debug_assert_eq!(u.len(), 16 * c_in * c_out);
    // Filter (o, i) of the flipped convolution, tap t, is weight[i, 8 - t, o].
    transform_filters(u, c_in, |i, o, tap| weight[(i * 9 + 8 - tap) * c_in + o]);
}

/// G g for one column (or row) of a filter: 3 taps -> 4 positions.
#[inline(always)]
fn filter_1d(g0: f32, g1: f32, g2: f32) -> [f32; 4] {
    [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
}

/// u (Cin, 16, Cout) = G g Gt, with tap `t` (ky*3 + kx) of filter (o, i) given by
/// `g(i, o, t)`; parallel over input channels, each writing one contiguous block.
#[inline(always)]
fn transform_filters(u: &mut [f32], c_out: usize, g: impl Fn(usize, usize, usize) -> f32 + Sync) {
    u.par_chunks_mut(16 * c_out)
        .enumerate()
        .for_each(|(i, block)| {
            for o in 0..c_out {
                let g = |ky: usize, kx: usize| g(i, o, ky * 3 + kx);
                // q = G g (4x3), column by column; then each row of q times Gt.
                let q: [[f32; 4]; 3] =
                    std::array::from_fn(|k| filter_1d(g(0, k), g(1, k), g(2, k)));
                for r in 0..4 {
                    let out = filter_1d(q[0][r], q[1][r], q[2][r]);
                    for (col, v) in out.iter().enumerate() {
                        block[(r * 4 + col) * c_out + o] = *v;
                    }
                }
            }
        });
}

/// grad_weight (Cout, 3, 3, Cin) += Gt dU G, with dU laid out (Cin, 16, Cout); parallel over
/// blocks of 8 output channels.
fn accumulate_weight_grad(grad_weight: &mut [f32], du: &[f32], c_in: usize, c_out: usize) {
    grad_weight
        .par_chunks_mut(8 * 9 * c_in)
        .enumerate()
        .for_each(|(b, block)| accumulate_weight_grad_block(block, du, 8 * b, c_in, c_out));
}

/// Gt u, the adjoint of [`filter_1d`], for one row (or column) of dU: 4 positions -> 3 taps.
#[inline(always)]
fn filter_1d_adjoint(u0: Lanes, u1: Lanes, u2: Lanes, u3: Lanes) -> [Lanes; 3] {
    [u0 + (u1 + u2) * 0.5, (u1 - u2) * 0.5, (u1 + u2) * 0.5 + u3]
}

/// The block of `grad_weight` for output channels `base..`, eight at once: dU's values for
/// eight output channels are contiguous.
#[multiversion(targets = "simd")]
fn accumulate_weight_grad_block(
    block: &mut [f32],
    du: &[f32],
    base: usize,
    c_in: usize,
    c_out: usize,
) {
    let width = block.len() / (9 * c_in);
    for i in 0..c_in {
        let d = |r: usize, c: usize| Lanes::load(du, (i * 16 + r * 4 + c) * c_out + base, width);
        // dq = dU G (4x3), row by row; then Gt dq, column by column.
        let dq: [[Lanes; 3]; 4] =
            std::array::from_fn(|r| filter_1d_adjoint(d(r, 0), d(r, 1), d(r, 2), d(r, 3)));
        for k in 0..3 {
            let dg = filter_1d_adjoint(dq[0][k], dq[1][k], dq[2][k], dq[3][k]);
            for (ky, v) in dg.iter().enumerate() {
                for (l, value) in v.0[..width].iter().enumerate() {
                    block[(l * 9 + ky * 3 + k) * c_in + i] += value;
                }
            }
        }
    }
}

/// The 16 pixel vectors of a tile's 4x4 patch (zeros outside the image).
#[inline(always)]
fn patch<'a>(
    image: &'a [f32],
    zeros: &'a [f32],
    ty: usize,
    tx: usize,
    h: usize,
    w: usize,
    c: usize,
) -> [&'a [f32]; 16] {
    std::array::from_fn(|k| {
        let iy = (2 * ty + k / 4) as isize - 1;
        let ix = (2 * tx + k % 4) as isize - 1;
        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
            zeros
        } else {
            &image[(iy as usize * w + ix as usize) * c..][..c]
        }
    })
}

/// Eight channels at once: the transforms are written on `Lanes` so that every add is one
/// AVX instruction, whatever the channel count (the tail is zero-padded).
#[derive(Clone, Copy, Default)]
struct Lanes([f32; 8]);

impl Lanes {
    #[inline(always)]
    fn load(src: &[f32], base: usize, width: usize) -> Lanes {
        if width == 8 {
            // A fixed-size copy: one vector load, where a variable one would call memmove.
            return Lanes(src[base..base + 8].try_into().expect("8 lanes"));
        }
        let mut out = [0.0f32; 8];
        for (o, v) in out.iter_mut().zip(&src[base..base + width]) {
            *o = *v;
        }
        Lanes(out)
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32], base: usize, width: usize) {
        if width == 8 {
            let d: &mut [f32; 8] = (&mut dst[base..base + 8]).try_into().expect("8 lanes");
            *d = self.0;
            return;
        }
        for (d, v) in dst[base..base + width].iter_mut().zip(&self.0) {
            *d = *v;
        }
    }
}

impl std::ops::Add for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn add(self, o: Lanes) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] + o.0[i]))
    }
}

impl std::ops::Sub for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn sub(self, o: Lanes) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] - o.0[i]))
    }
}

impl std::ops::Mul<f32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn mul(self, f: f32) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] * f))
    }
}

impl std::ops::Neg for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn neg(self) -> Lanes {
        Lanes(std::array::from_fn(|i| -self.0[i]))
    }
}

/// Channel blocks of at most 8: (base, width).
fn lane_blocks(c: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..c).step_by(8).map(move |base| (base, (c - base).min(8)))
}

/// v (16, C) = Bt d B for one tile.
#[inline(always)]
fn input_transform(v: &mut [f32], d: &[&[f32]; 16], c: usize) {
    for (base, width) in lane_blocks(c) {
        let x: [Lanes; 16] = std::array::from_fn(|k| Lanes::load(d[k], base, width));
        // t = Bt d, row by row; then v = t B.
        let mut t = [Lanes::default(); 16];
        for j in 0..4 {
            t[j] = x[j] - x[8 + j];
            t[4 + j] = x[4 + j] + x[8 + j];
            t[8 + j] = x[8 + j] - x[4 + j];
            t[12 + j] = x[4 + j] - x[12 + j];
        }
        for r in 0..4 {
            let (t0, t1, t2, t3) = (t[4 * r], t[4 * r + 1], t[4 * r + 2], t[4 * r + 3]);
            (t0 - t2).store(v, (4 * r) * c + base, width);
            (t1 + t2).store(v, (4 * r + 1) * c + base, width);
            (t2 - t1).store(v, (4 * r + 2) * c + base, width);
            (t1 - t3).store(v, (4 * r + 3) * c + base, width);
        }
    }
}

/// The 2x2 output y = At m A of one tile, for channels (base, width): y[2*i + j].
#[inline(always)]
fn output_transform(m: &[f32], c: usize, base: usize, width: usize) -> [Lanes; 4] {
    let x: [Lanes; 16] = std::array::from_fn(|k| Lanes::load(m, k * c + base, width));
    let mut s = [Lanes::default(); 8];
    for j in 0..4 {
        s[j] = x[j] + x[4 + j] + x[8 + j];
        s[4 + j] = x[4 + j] - x[8 + j] - x[12 + j];
    }
    let mut y = [Lanes::default(); 4];
    for r in 0..2 {
        let (s0, s1, s2, s3) = (s[4 * r], s[4 * r + 1], s[4 * r + 2], s[4 * r + 3]);
        y[2 * r] = s0 + s1 + s2;
        y[2 * r + 1] = s1 - s2 - s3;
    }
    y
}

/// dm (16, C) = A dy At for one tile, for channels (base, width); `dy[2*i + j]`.
#[inline(always)]
fn output_transform_adjoint(dm: &mut [f32], c: usize, base: usize, width: usize, dy: [Lanes; 4]) {
    let mut ds = [Lanes::default(); 8];
    for r in 0..2 {
        let (y0, y1) = (dy[2 * r], dy[2 * r + 1]);
        ds[4 * r] = y0;
        ds[4 * r + 1] = y0 + y1;
        ds[4 * r + 2] = y0 - y1;
        ds[4 * r + 3] = -y1;
    }
    for j in 0..4 {
        let (s0, s1) = (ds[j], ds[4 + j]);
        s0.store(dm, j * c + base, width);
        (s0 + s1).store(dm, (4 + j) * c + base, width);
        (s0 - s1).store(dm, (8 + j) * c + base, width);
        (-s1).store(dm, (12 + j) * c + base, width);
    }
}

/// V (tiles, 16, Cin) for `samples` images. This and the other loops over tiles are compiled
/// for each SIMD level and chosen at run time, so that a `Lanes` add is one AVX instruction
/// where the CPU has AVX (two SSE ones otherwise); the float operations are the same.
#[multiversion(targets = "simd")]
fn transform_inputs(v: &mut [f32], x: &[f32], samples: usize, s: &ConvShape) {
    let (th, tw, c) = (s.h.div_ceil(2), s.w.div_ceil(2), s.c_in);
    let zeros = vec![0.0f32; c];
    for sample in 0..samples {
        let image = &x[sample * s.h * s.w * c..][..s.h * s.w * c];
        for ty in 0..th {
            for tx in 0..tw {
                let tile = (sample * th + ty) * tw + tx;
                let d = patch(image, &zeros, ty, tx, s.h, s.w, c);
                input_transform(&mut v[tile * 16 * c..][..16 * c], &d, c);
            }
        }
    }
}

/// The outputs (samples, H, W, Cout) from M (tiles, 16, Cout): y = At m A per tile.
#[multiversion(targets = "simd")]
fn transform_outputs(out: &mut [f32], m: &[f32], tiles: usize, s: &ConvShape) {
    let (th, tw, pixels) = (s.h.div_ceil(2), s.w.div_ceil(2), s.h * s.w);
    for tile in 0..tiles {
        let (sample, ty, tx) = (tile / (th * tw), tile / tw % th, tile % tw);
        let image = &mut out[sample * pixels * s.c_out..][..pixels * s.c_out];
        let m = &m[tile * 16 * s.c_out..][..16 * s.c_out];
        for (base, width) in lane_blocks(s.c_out) {
            let y = output_transform(m, s.c_out, base, width);
            for (k, value) in y.iter().enumerate() {
                let (oy, ox) = (2 * ty + k / 2, 2 * tx + k % 2);
                if oy < s.h && ox < s.w {
                    value.store(image, (oy * s.w + ox) * s.c_out + base, width);
                }
            }
        }
    }
}

/// dM (tiles, 16, Cout) = A dy At per tile, from the output gradients (samples, H, W, Cout).
#[multiversion(targets = "simd")]
fn transform_output_grads(dm: &mut [f32], dy: &[f32], tiles: usize, s: &ConvShape) {
    let (th, tw, pixels) = (s.h.div_ceil(2), s.w.div_ceil(2), s.h * s.w);
    for tile in 0..tiles {
        let (sample, ty, tx) = (tile / (th * tw), tile / tw % th, tile % tw);
        let image = &dy[sample * pixels * s.c_out..][..pixels * s.c_out];
        let dm = &mut dm[tile * 16 * s.c_out..][..16 * s.c_out];
        for (base, width) in lane_blocks(s.c_out) {
            let dy: [Lanes; 4] = std::array::from_fn(|k| {
                let (oy, ox) = (2 * ty + k / 2, 2 * tx + k % 2);
                if oy < s.h && ox < s.w {
                    Lanes::load(image, (oy * s.w + ox) * s.c_out + base, width)
                } else {
                    Lanes::default()
                }
            });
            output_transform_adjoint(dm, s.c_out, base, width, dy);
        }
    }
}

/// The 16 products dst_xi = lhs_xi * rhs_xi, where lhs_xi / dst_xi are rows of tile-major
/// `(tiles, 16, k)` / `(tiles, 16, n)` data and rhs_xi is given by (offset, col stride, row
/// stride) into `rhs`.
#[allow(clippy::too_many_arguments)]
fn batched_tiles_matmul(
    tiles: usize,
    k: usize,
    n: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    rhs: &[f32],
    rhs_layout: impl Fn(usize) -> (usize, isize, isize),
) {
    for xi in 0..16 {
        let (offset, rhs_cs, rhs_rs) = rhs_layout(xi);
        // Row xi of tile t sits at (t*16 + xi)*n in dst and (t*16 + xi)*k in lhs.
        matmul_strided(
            tiles,
            n,
            k,
            &mut dst[xi * n..],
            16 * n,
            accumulate,
            &lhs[xi * k..],
            1,
            (16 * k) as isize,
            &rhs[offset..],
            rhs_cs,
            rhs_rs,
        );
    }
}

/// out = conv(input, weight); `u` is scratch of 16*Cin*Cout floats.
pub fn forward(out: &mut [f32], u: &mut [f32], input: &[f32], weight: &[f32], s: ConvShape) {
    transform_weight(u, weight, s.c_in, s.c_out);
    forward_transformed(out, u, input, s);
}

/// grad_input (N, H, W, Cin) from grad_out (N, H, W, Cout) for the forward convolution of
/// shape `s` and filters `weight` (Cout, 3, 3, Cin): the forward convolution with the flipped
/// filters. `u` is scratch of 16*Cin*Cout floats.
pub fn input_grad(
    grad_input: &mut [f32],
    u: &mut [f32],
    grad_out: &[f32],
    weight: &[f32],
    s: ConvShape,
) {
    transform_weight_flipped(u, weight, s.c_in, s.c_out);
    let t = s.for_input_grad();
    forward_transformed(grad_input, u, grad_out, t);
}

/// out = conv(input, filters) with the filters already transformed into `u`.
fn forward_transformed(out: &mut [f32], u: &[f32], input: &[f32], s: ConvShape) {
    let chunk = samples_per_chunk(&s);
    let (th, tw) = (s.h.div_ceil(2), s.w.div_ceil(2));
    let pixels = s.h * s.w;
    out.par_chunks_mut(chunk * pixels * s.c_out)
        .zip(input.par_chunks(chunk * pixels * s.c_in))
        .for_each(|(out, x)| {
            let samples = x.len() / (pixels * s.c_in);
            let tiles = samples * th * tw;
            with_scratch(0, tiles * 16 * s.c_in, |v| {
                with_scratch(1, tiles * 16 * s.c_out, |m| {
                    transform_inputs(v, x, samples, &s);
                    // U_xi (Cin x Cout): element (ci, co) at (ci*16 + xi)*Cout + co.
                    batched_tiles_matmul(tiles, s.c_in, s.c_out, m, false, v, u, |xi| {
                        (xi * s.c_out, 1, (16 * s.c_out) as isize)
                    });
                    transform_outputs(out, m, tiles, &s);
                })
            })
        });
}

/// grad_weight += Gt dU G with dU = sum over tiles of V^T dM. Each of `partials` (one per
/// thread range) is scratch of 16*Cin*Cout floats.
pub fn weight_grad(
    grad_weight: &mut [f32],
    partials: &mut [Vec<f32>],
    grad_out: &[f32],
    input: &[f32],
    s: ConvShape,
    threads: usize,
) {
    let chunk = samples_per_chunk(&s);
    let (th, tw) = (s.h.div_ceil(2), s.w.div_ceil(2));
    let pixels = s.h * s.w;
    let parts = ranges(s.n, threads);
    let partials = &mut partials[..parts.len()];
    for p in partials.iter_mut() {
        p.clear();
        p.resize(16 * s.c_in * s.c_out, 0.0);
    }
    partials
        .par_iter_mut()
        .zip(parts.par_iter())
        .for_each(|(du, range)| {
            let mut first = range.start;
            while first < range.end {
                let samples = chunk.min(range.end - first);
                let tiles = samples * th * tw;
                let x = &input[first * pixels * s.c_in..][..samples * pixels * s.c_in];
                let dy = &grad_out[first * pixels * s.c_out..][..samples * pixels * s.c_out];
                with_scratch(0, tiles * 16 * s.c_in, |v| {
                    with_scratch(1, tiles * 16 * s.c_out, |dm| {
                        transform_inputs(v, x, samples, &s);
                        transform_output_grads(dm, dy, tiles, &s);
                        // dU_xi (Cin x Cout) += V_xi^T (Cin x tiles) * dM_xi (tiles x Cout)
                        for xi in 0..16 {
                            matmul_strided(
                                s.c_in,
                                s.c_out,
                                tiles,
                                &mut du[xi * s.c_out..],
                                16 * s.c_out,
                                true,
                                &v[xi * s.c_in..],
                                (16 * s.c_in) as isize,
                                1,
                                &dm[xi * s.c_out..],
                                1,
                                (16 * s.c_out) as isize,
                            );
                        }
                    })
                });
                first += samples;
            }
        });
    let (du, rest) = partials.split_first_mut().expect("at least one range");
    for partial in rest.iter() {
        for (d, p) in du.iter_mut().zip(partial) {
            *d += p;
        }
    }
    accumulate_weight_grad(grad_weight, du, s.c_in, s.c_out);
}
