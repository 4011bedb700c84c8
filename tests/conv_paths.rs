//! The fast convolution paths against the obvious one: Winograd F(2x2, 3x3) and im2col+gemm
//! against a direct six-loop convolution, forward and both gradients (the input gradient as a
//! convolution with flipped filters, Winograd's from the unflipped ones, and by col2im), on
//! random shapes with odd sizes, a batch of 1, 1 to 4 input channels, and thread counts 1 and 2.

use trifecta::backend::ConvShape;
use trifecta::backend::cpu::{conv, winograd};
use trifecta::rng::Rng;

/// Direct convolution in f64: out (N, H, W, Cout) from x (N, H, W, Cin), w (Cout, 3, 3, Cin).
fn direct(x: &[f32], w: &[f32], s: ConvShape) -> Vec<f64> {
    let mut out = vec![0.0f64; s.n * s.h * s.w * s.c_out];
    for n in 0..s.n {
        for oy in 0..s.h {
            for ox in 0..s.w {
                for o in 0..s.c_out {
                    let mut acc = 0.0f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) =
                                (oy as isize + ky as isize - 1, ox as isize + kx as isize - 1);
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            for i in 0..s.c_in {
                                acc += x[((n * s.h + iy as usize) * s.w + ix as usize) * s.c_in + i]
                                    as f64
                                    * w[(o * 9 + ky * 3 + kx) * s.c_in + i] as f64;
                            }
                        }
                    }
                    out[((n * s.h + oy) * s.w + ox) * s.c_out + o] = acc;
                }
            }
        }
    }
    out
}

/// Gradients of sum(out * r) by the direct method: (d input, d weight).
fn direct_grads(x: &[f32], w: &[f32], r: &[f32], s: ConvShape) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    for n in 0..s.n {
        for oy in 0..s.h {
            for ox in 0..s.w {
                for o in 0..s.c_out {
                    let g = r[((n * s.h + oy) * s.w + ox) * s.c_out + o] as f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) =
                                (oy as isize + ky as isize - 1, ox as isize + kx as isize - 1);
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            for i in 0..s.c_in {
                                let xi = ((n * s.h + iy as usize) * s.w + ix as usize) * s.c_in + i;
                                let wi = (o * 9 + ky * 3 + kx) * s.c_in + i;
                                dx[xi] += g * w[wi] as f64;
                                dw[wi] += g * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1.0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 * scale,
            "{what}: element {i}: {g} vs direct {w} (scale {scale})"
        );
    }
}

fn check(s: ConvShape, threads: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..s.n * s.h * s.w * s.c_in)
        .map(|_| rng.normal())
        .collect();
    let w: Vec<f32> = (0..s.c_out * 9 * s.c_in).map(|_| rng.normal()).collect();
    let r: Vec<f32> = (0..s.n * s.h * s.w * s.c_out)
        .map(|_| rng.normal())
        .collect();
    let want = direct(&x, &w, s);
    let (want_dx, want_dw) = direct_grads(&x, &w, &r, s);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut out = vec![0.0f32; want.len()];
        conv::forward(&mut out, &x, &w, s);
        assert_close(&format!("im2col forward {s:?}"), &out, &want);
        let mut u = vec![0.0f32; 16 * s.c_in * s.c_out];
        out.fill(0.0);
        winograd::forward(&mut out, &mut u, &x, &w, s);
        assert_close(&format!("winograd forward {s:?}"), &out, &want);

        let mut dw = vec![0.0f32; w.len()];
        conv::weight_grad(&mut dw, &r, &x, s, threads);
        assert_close(&format!("im2col d weight {s:?}"), &dw, &want_dw);
        let mut dw = vec![0.0f32; w.len()];
        let mut partials = vec![Vec::new(); threads];
        winograd::weight_grad(&mut dw, &mut partials, &r, &x, s, threads);
        assert_close(&format!("winograd d weight {s:?}"), &dw, &want_dw);

        // d input = conv(dy, flipped filters), by either path.
        let flipped = conv::flip_weight(&w, s.c_in, s.c_out);
        let t = s.for_input_grad();
        let mut dx = vec![0.0f32; x.len()];
        conv::forward(&mut dx, &r, &flipped, t);
        assert_close(&format!("im2col d input {s:?}"), &dx, &want_dx);
        let mut u = vec![0.0f32; 16 * t.c_in * t.c_out];
        winograd::forward(&mut dx, &mut u, &r, &flipped, t);
        assert_close(&format!("winograd d input {s:?}"), &dx, &want_dx);
        // Winograd's input gradient transforms the flipped filters without writing them: the
        // same transformed filters, bit for bit.
        let mut u_flipped = vec![f32::NAN; u.len()];
        winograd::transform_weight_flipped(&mut u_flipped, &w, s.c_in, s.c_out);
        winograd::transform_weight(&mut u, &flipped, t.c_in, t.c_out);
        assert!(
            u.iter()
                .zip(&u_flipped)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "transform_weight_flipped {s:?}"
        );
        dx.fill(f32::NAN);
        winograd::input_grad(&mut dx, &mut u, &r, &w, s);
        assert_close(&format!("winograd input_grad {s:?}"), &dx, &want_dx);
        dx.fill(f32::NAN);
        conv::input_grad_col2im(&mut dx, &r, &w, s);
        assert_close(&format!("col2im d input {s:?}"), &dx, &want_dx);
    });
}

#[test]
fn fast_convolutions_match_direct() {
    let shapes = [
        ConvShape {
            n: 1,
            h: 1,
            w: 1,
            c_in: 3,
            c_out: 2,
        },
        ConvShape {
            n: 1,
            h: 7,
            w: 5,
            c_in: 9,
            c_out: 11,
        },
        ConvShape {
            n: 3,
            h: 8,
            w: 8,
            c_in: 16,
            c_out: 8,
        },
        ConvShape {
            n: 2,
            h: 7,
            w: 7,
            c_in: 20,
            c_out: 13,
        },
        ConvShape {
            n: 4,
            h: 2,
            w: 3,
            c_in: 33,
            c_out: 5,
        },
        // The narrow inputs that im2col and col2im copy with a constant channel count (1-4).
        ConvShape {
            n: 2,
            h: 5,
            w: 6,
            c_in: 1,
            c_out: 4,
        },
        ConvShape {
            n: 3,
            h: 6,
            w: 5,
            c_in: 4,
            c_out: 16,
        },
        // Block 0's shape of ratio (col2im's): 3 samples a chunk, so 3 chunks.
        ConvShape {
            n: 7,
            h: 64,
            w: 64,
            c_in: 2,
            c_out: 32,
        },
    ];
    for (k, s) in shapes.iter().enumerate() {
        for threads in [1, 2] {
            check(*s, threads, 100 + k as u64);
        }
    }
}
