//! The CUDA backend against the CPU backend, op by op (forward and backward, random inputs,
//! odd sizes), the golden FF step on the GPU, and repeatability. Built only with
//! `--features cuda`; every test except `kernels_compile` needs a CUDA device and fails
//! loudly without one.
#![cfg(feature = "cuda")]

mod common;

use common::assert_close;
use std::sync::OnceLock;
use trifecta::backend::cpu::Cpu;
use trifecta::backend::cuda::{Cuda, libs, nvrtc};
use trifecta::backend::{
    AdamParams, AdamTensor, Backend, ChannelShape, ConvShape, EmbedShape, FfLoss, GpuOptions,
    PoolShape, Precision, SampleShape,
};
use trifecta::layers::Saved;
use trifecta::rng::Rng;

/// Opens GPU 0, with the compiled kernels cached in a temporary folder (tests write nowhere
/// else).
fn open(options: GpuOptions) -> Cuda {
    let cache = std::env::temp_dir().join(format!("trifecta-kernels-{}", std::process::id()));
    nvrtc::set_cache_dir(Some(cache));
    Cuda::with_options(0, options).expect("these tests need a CUDA device")
}

fn gpu() -> &'static Cuda {
    static GPU: OnceLock<Cuda> = OnceLock::new();
    GPU.get_or_init(|| open(GpuOptions::new(Precision::F32)))
}

fn gpu_bf16() -> &'static Cuda {
    static GPU: OnceLock<Cuda> = OnceLock::new();
    GPU.get_or_init(|| open(GpuOptions::new(Precision::Bf16)))
}

fn cpu() -> Cpu {
    Cpu::new(2).unwrap()
}

fn random(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal()).collect()
}

/// Small integers and zeros: max-pool ties and dead ReLUs on purpose.
fn ties(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.normal() * 1.5).round().max(-1.0))
        .collect()
}

type Outputs = Vec<(String, Vec<f32>)>;

fn up<B: Backend>(b: &B, v: &[f32]) -> B::Buf {
    b.upload(v).unwrap()
}

fn down<B: Backend>(b: &B, buf: &B::Buf) -> Vec<f32> {
    b.download(buf).unwrap()
}

/// Compares every named output of the two runs.
fn compare(what: &str, gpu: Outputs, cpu: Outputs, rel: f64, abs: f64) {
    assert_eq!(gpu.len(), cpu.len());
    for ((name, got), (_, want)) in gpu.iter().zip(&cpu) {
        let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
        assert_close(&format!("{what} {name}"), got, &want, rel, abs);
    }
}

/// As [`compare`], with the tolerance scaled by each output's largest magnitude (bf16).
fn compare_scaled(what: &str, gpu: Outputs, cpu: Outputs, fraction: f64) {
    for ((name, got), (_, want)) in gpu.iter().zip(&cpu) {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
        let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
        assert_close(
            &format!("{what} {name}"),
            got,
            &want,
            0.0,
            fraction * scale + 1e-6,
        );
    }
}

#[test]
fn kernels_compile() {
    // Needs only NVRTC (no GPU), on LD_LIBRARY_PATH or where `libs` finds it: every kernel
    // builds for Ampere and Hopper, and every name the backend loads is a symbol of the cubin
    // (a NUL-terminated name in its string table).
    libs::preload();
    for (major, minor) in [(8, 0), (9, 0)] {
        let cubin =
            nvrtc::compile_cubin(major, minor).unwrap_or_else(|e| panic!("sm_{major}{minor}: {e}"));
        if let Some(name) = nvrtc::missing_kernel(&cubin) {
            panic!("sm_{major}{minor}: no kernel named {name} in the cubin");
        }
    }
}

#[test]
fn libraries_are_found_in_pip_packages() {
    // Needs cuDNN, cuBLAS and NVRTC (no GPU) where PyTorch's pip wheels put them, found with
    // or without LD_LIBRARY_PATH: each answers a call that needs no device.
    let loaded = libs::preload();
    let outcome = std::panic::catch_unwind(|| {
        let cudnn = cudarc::cudnn::result::get_version();
        let mut cublas = 0;
        // SAFETY: one plain out-parameter.
        unsafe {
            cudarc::cublas::sys::cublasGetProperty(
                cudarc::cublas::sys::libraryPropertyType_t::MAJOR_VERSION,
                &mut cublas,
            )
        };
        let (mut nvrtc, mut minor) = (0, 0);
        // SAFETY: two plain out-parameters.
        unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut nvrtc, &mut minor) };
        (cudnn, cublas, nvrtc)
    });
    let (cudnn, cublas, nvrtc) =
        outcome.unwrap_or_else(|_| panic!("a library is missing; loaded by path: {loaded:?}"));
    assert!(cudnn >= 90000, "cuDNN {cudnn}");
    assert!(
        cublas >= 12 && nvrtc >= 12,
        "cuBLAS {cublas}, NVRTC {nvrtc}"
    );
}

/// In bf16, the input channels 3, 4 (block 0's: colours and label) and 130 run padded with
/// zero channels to a multiple of 8 (`GpuOptions::pad_channels`).
const CONV_SHAPES: [ConvShape; 5] = [
    ConvShape {
        n: 2,
        h: 7,
        w: 5,
        c_in: 3,
        c_out: 4,
    },
    ConvShape {
        n: 3,
        h: 6,
        w: 6,
        c_in: 4,
        c_out: 16,
    },
    ConvShape {
        n: 1,
        h: 8,
        w: 8,
        c_in: 16,
        c_out: 8,
    },
    ConvShape {
        n: 4,
        h: 16,
        w: 16,
        c_in: 64,
        c_out: 32,
    },
    ConvShape {
        n: 3,
        h: 6,
        w: 6,
        c_in: 130,
        c_out: 7,
    },
];

/// (rows, channels, seed)
const BATCHNORM_CASES: [(usize, usize, u64); 4] = [
    (1, 3, 1),
    (7 * 5 * 2, 3, 2),
    (64 * 33, 40, 3),
    (20000, 4, 4),
];
/// (samples, features, seed)
const LAYERNORM_CASES: [(usize, usize, u64); 3] =
    [(1, 5, 1), (3, 7 * 5 * 3, 2), (70, 4 * 32 * 32, 3)];
const POOL_SHAPES: [PoolShape; 3] = [
    PoolShape {
        n: 1,
        h: 2,
        w: 2,
        c: 1,
    },
    PoolShape {
        n: 2,
        h: 7,
        w: 5,
        c: 3,
    },
    PoolShape {
        n: 3,
        h: 32,
        w: 32,
        c: 40,
    },
];
const LOSSES: [FfLoss; 2] = [FfLoss::Symba { alpha: 4.0 }, FfLoss::Threshold { tau: 2.0 }];
/// (pairs, features, seed)
const LOSS_CASES: [(usize, usize, u64); 3] = [(1, 3, 1), (37, 128, 2), (512, 512 * 16, 3)];
const EMBED_CASES: [(EmbedShape, u64); 3] = [
    (
        EmbedShape {
            n: 1,
            pixels: 4,
            channels: 1,
        },
        1,
    ),
    (
        EmbedShape {
            n: 50,
            pixels: 28 * 28,
            channels: 1,
        },
        2,
    ),
    (
        EmbedShape {
            n: 33,
            pixels: 7 * 5,
            channels: 3,
        },
        3,
    ),
];
/// (samples, pixels, channels, classes, seed)
const HEAD_CASES: [(usize, usize, usize, usize, u64); 3] =
    [(1, 1, 3, 2, 1), (37, 16, 65, 10, 2), (512, 64, 512, 10, 3)];
/// (parameters, seed)
const ADAM_CASES: [(usize, u64); 3] = [(1, 1), (1000, 2), (300_001, 3)];

/// The op bodies above run on the CPU alone: a mistake in a test's own use of the trait
/// shows here, on any machine, instead of costing GPU time. (The GPU comparisons below reuse
/// these bodies and cases.)
#[test]
fn op_bodies_run_on_the_cpu() {
    let b = &cpu();
    for (i, s) in CONV_SHAPES.into_iter().enumerate() {
        assert_eq!(conv_op(b, s, i as u64).len(), 4);
    }
    for (rows, c, seed) in BATCHNORM_CASES {
        batchnorm_op(b, rows, c, seed);
    }
    for (n, f, seed) in LAYERNORM_CASES {
        layernorm_op(b, n, f, seed);
    }
    for (i, s) in POOL_SHAPES.into_iter().enumerate() {
        relu_pool_op(b, s, i as u64);
    }
    for kind in LOSSES {
        for (pairs, f, seed) in LOSS_CASES {
            goodness_loss_op(b, pairs, f, kind, seed);
        }
    }
    for (s, seed) in EMBED_CASES {
        embed_op(b, s, 10, seed);
    }
    for (n, pixels, c, classes, seed) in HEAD_CASES {
        heads_op(b, n, pixels, c, classes, seed);
    }
    for (n, seed) in ADAM_CASES {
        adam_op(b, n, seed);
    }
    // adam_step_many is adam_step on each parameter (the CPU's default: the same loop).
    let many = adam_many_op(b);
    for (i, &len) in MANY_LENS.iter().enumerate() {
        let mut p = up(b, &random(80 + i as u64, len));
        let (mut m, mut v) = (b.zeros(len).unwrap(), b.zeros(len).unwrap());
        for step in 1..=3u64 {
            let g = up(b, &random(90 + 20 * step + i as u64, len));
            b.adam_step(&mut p, &mut m, &mut v, &g, step, AdamParams::default())
                .unwrap();
        }
        assert!(many[3 * i].1 == down(b, &p), "adam_step_many param {i}");
        assert!(many[3 * i + 1].1 == down(b, &m), "adam_step_many m {i}");
        assert!(many[3 * i + 2].1 == down(b, &v), "adam_step_many v {i}");
    }
    let filled = fill_many_op(b);
    assert!(
        filled[1..filled.len() - 1]
            .iter()
            .all(|(_, v)| v.iter().all(|&x| x == 2.5))
    );
    assert_eq!(filled[0].1, filled[filled.len() - 1].1);
    let copied = copy_many_op(b);
    assert!(copied[1].1 == random(39, copied[1].1.len()));
    let (mut want, mut at) = (random(39, copied[0].1.len()), 0);
    for (i, n) in MANY_LENS.into_iter().enumerate() {
        at += 3;
        want[at..at + n].copy_from_slice(&random(40 + i as u64, n));
        at += n;
    }
    assert!(copied[0].1 == want);
    fused_matches_separate("cpu", b);
    for (s, pool, source, next, seed) in eval_tail_cases() {
        let fused = eval_tail_op(b, s, pool, true, source, next, seed);
        assert!(fused == eval_tail_op(b, s, pool, false, source, next, seed));
    }
    uploads_op(b);
    assert!(train_steps(b).iter().all(|v| v.is_finite()));
    let layer = trained_net_with(b, trifecta::layers::norm::NormKind::Layer);
    assert!(
        layer.named_params().iter().all(|(_, p)| p
            .to_torch(b)
            .unwrap()
            .iter()
            .all(|v| v.is_finite()))
    );
    assert!(trained_eval(b) == cpu_trained_eval(b));
}

/// Large uploads (through the CUDA backend's page-locked staging, two buffers in turn) arrive
/// intact, also when several follow each other before anything waits for the GPU, and the
/// last write to a buffer wins.
fn uploads_op<B: Backend>(b: &B) {
    let sizes = [1 << 16, 200_000, (1 << 16) + 7, 300_000];
    let data: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| random(500 + i as u64, n))
        .collect();
    let mut bufs: Vec<B::Buf> = sizes.iter().map(|&n| b.zeros(n).unwrap()).collect();
    for (buf, d) in bufs.iter_mut().zip(&data) {
        b.write(buf, d).unwrap();
    }
    let mut again = b.zeros(sizes[1]).unwrap();
    for seed in 0..3 {
        b.write(&mut again, &random(600 + seed, sizes[1])).unwrap();
    }
    for (i, (buf, d)) in bufs.iter().zip(&data).enumerate() {
        assert!(down(b, buf) == *d, "upload {i} of {} floats", sizes[i]);
    }
    assert!(
        down(b, &again) == random(602, sizes[1]),
        "the last write wins"
    );
    // Work queued between writes reads what was written before it (the CUDA upload lands
    // on a copy stream of its own and reaches the buffer in the compute stream's order).
    let n = sizes[1];
    let mut source = b.zeros(n).unwrap();
    let mut seen: Vec<B::Buf> = (0..5).map(|_| b.zeros(2 * n).unwrap()).collect();
    for (k, out) in seen.iter_mut().enumerate() {
        b.write(&mut source, &random(700 + k as u64, n)).unwrap();
        b.copy_into(out, n, &source).unwrap();
    }
    for (k, out) in seen.iter().enumerate() {
        let got = down(b, out);
        assert!(
            got[..n].iter().all(|&v| v == 0.0),
            "copy {k}: the zeros before it"
        );
        assert!(
            got[n..] == random(700 + k as u64, n),
            "copy {k} read its own write"
        );
    }
}

#[test]
fn large_uploads_arrive_intact() {
    uploads_op(gpu());
}

fn conv_op<B: Backend>(b: &B, s: ConvShape, seed: u64) -> Outputs {
    let (nx, nw, ny) = (
        s.n * s.h * s.w * s.c_in,
        s.c_out * 9 * s.c_in,
        s.n * s.h * s.w * s.c_out,
    );
    let x = up(b, &random(seed, nx));
    let w = up(b, &random(seed + 1, nw));
    let dy = up(b, &random(seed + 2, ny));
    let mut y = b.zeros(ny).unwrap();
    b.conv3x3_forward(&mut y, &x, &w, s).unwrap();
    let mut dx = b.zeros(nx).unwrap();
    let mut dw = up(b, &random(seed + 3, nw)); // accumulates
    b.conv3x3_backward(Some(&mut dx), &mut dw, &dy, &x, &w, s)
        .unwrap();
    let mut dw_only = b.zeros(nw).unwrap();
    b.conv3x3_backward(None, &mut dw_only, &dy, &x, &w, s)
        .unwrap();
    vec![
        ("y".into(), down(b, &y)),
        ("dx".into(), down(b, &dx)),
        ("dw".into(), down(b, &dw)),
        ("dw without dx".into(), down(b, &dw_only)),
    ]
}

#[test]
fn conv3x3_matches_cpu() {
    for (i, s) in CONV_SHAPES.into_iter().enumerate() {
        let seed = 10 * i as u64;
        compare(
            &format!("conv {s:?}"),
            conv_op(gpu(), s, seed),
            conv_op(&cpu(), s, seed),
            1e-4,
            1e-4,
        );
    }
}

#[test]
fn conv3x3_bf16_is_close_to_cpu() {
    // With the few-channel convolutions padded (the default) and as they are, and with the
    // algorithms chosen by timing them (cuDNN's Find) instead of by heuristics.
    let unpadded = open(GpuOptions {
        pad_channels: false,
        ..GpuOptions::new(Precision::Bf16)
    });
    let timed = open(GpuOptions {
        cudnn_benchmark: true,
        ..GpuOptions::new(Precision::Bf16)
    });
    for (name, b) in [
        ("padded", gpu_bf16()),
        ("unpadded", &unpadded),
        ("algorithms timed", &timed),
    ] {
        for (i, s) in CONV_SHAPES.into_iter().enumerate() {
            let seed = 10 * i as u64;
            compare_scaled(
                &format!("bf16 conv ({name}) {s:?}"),
                conv_op(b, s, seed),
                conv_op(&cpu(), s, seed),
                3e-2,
            );
        }
    }
}

/// ReLU in place, the optional pool and the goodness, op by op (what the fused tails stand
/// for).
fn tail_separately<B: Backend>(
    b: &B,
    activation: &mut B::Buf,
    pooled: &mut B::Buf,
    goodness: &mut B::Buf,
    s: ConvShape,
    pool: bool,
) {
    b.relu_forward(activation).unwrap();
    let out = if pool {
        b.maxpool2_forward(pooled, activation, s.output_pool())
            .unwrap();
        pooled
    } else {
        activation
    };
    let features = B::len(out) / s.n;
    b.goodness_forward(goodness, out, SampleShape { n: s.n, features })
        .unwrap();
}

/// A block's convolution, ReLU, optional pool and goodness, forward and backward (from
/// d(output), or with `from_goodness` from d(goodness)): through the fused ops (`fused`), or
/// through the separate ops they stand for.
fn block_tail_op<B: Backend>(
    b: &B,
    s: ConvShape,
    pool: bool,
    fused: bool,
    from_goodness: bool,
    seed: u64,
) -> Outputs {
    let (nx, nw, ny) = (
        s.n * s.h * s.w * s.c_in,
        s.c_out * 9 * s.c_in,
        s.n * s.h * s.w * s.c_out,
    );
    let np = s.n * (s.h / 2) * (s.w / 2) * s.c_out;
    let x = up(b, &random(seed, nx));
    let w = up(b, &random(seed + 1, nw));
    let mut activation = b.zeros(ny).unwrap();
    let mut pooled = b.zeros(np).unwrap();
    let mut goodness = b.zeros(s.n).unwrap();
    if fused {
        let p = if pool { Some(&mut pooled) } else { None };
        b.conv3x3_relu_pool_goodness(&mut activation, p, &mut goodness, &x, &w, s)
            .unwrap();
    } else {
        b.conv3x3_forward(&mut activation, &x, &w, s).unwrap();
        tail_separately(b, &mut activation, &mut pooled, &mut goodness, s, pool);
    }
    // The backward starts from d(output), or with `from_goodness` from d(goodness).
    let output_len = if pool { np } else { ny };
    let grad_goodness = up(b, &random(seed + 2, s.n));
    let mut grad_output = match from_goodness {
        true => b.zeros(output_len).unwrap(),
        false => up(b, &random(seed + 2, output_len)),
    };
    let mut grad_activation = b.zeros(if pool { ny } else { 0 }).unwrap();
    let mut dx = b.zeros(nx).unwrap();
    let mut dw = up(b, &random(seed + 3, nw)); // accumulates
    let output = if pool { &pooled } else { &activation };
    if fused && from_goodness {
        b.goodness_relu_pool_conv3x3_backward(
            Some(&mut dx),
            &mut dw,
            &mut grad_activation,
            &mut grad_output,
            &grad_goodness,
            output,
            &activation,
            &x,
            &w,
            s,
            pool,
        )
        .unwrap();
    } else if fused {
        b.relu_pool_conv3x3_backward(
            Some(&mut dx),
            &mut dw,
            &mut grad_activation,
            &mut grad_output,
            &activation,
            &x,
            &w,
            s,
            pool,
        )
        .unwrap();
    } else {
        if from_goodness {
            let shape = SampleShape {
                n: s.n,
                features: output_len / s.n,
            };
            b.goodness_backward(&mut grad_output, &grad_goodness, output, shape)
                .unwrap();
        }
        let grad = if pool {
            b.relu_maxpool2_backward(
                &mut grad_activation,
                &grad_output,
                &activation,
                s.output_pool(),
            )
            .unwrap();
            &grad_activation
        } else {
            b.relu_backward(&mut grad_output, &activation).unwrap();
            &grad_output
        };
        b.conv3x3_backward(Some(&mut dx), &mut dw, grad, &x, &w, s)
            .unwrap();
    }
    let mut out = vec![
        ("goodness".into(), down(b, &goodness)),
        ("dx".into(), down(b, &dx)),
        ("dw".into(), down(b, &dw)),
    ];
    if pool {
        // A pooled block's activation is the backend's own record (bf16 on CUDA in bf16);
        // dx and dw show whether it was right.
        out.push(("pooled".into(), down(b, &pooled)));
    } else {
        out.push(("activation".into(), down(b, &activation)));
    }
    out
}

/// The fused block ops give what the separate ops give, bit for bit: the same convolution
/// results go through the same float operations. In evaluation (no activation saved), the
/// same pooled values and goodness.
fn fused_matches_separate<B: Backend>(name: &str, b: &B) {
    for (i, s) in CONV_SHAPES.into_iter().enumerate() {
        // The backward from d(output), and from d(goodness) in one pass.
        for (pool, from_goodness) in [(false, false), (true, false), (false, true), (true, true)] {
            let seed = 20 + 10 * i as u64;
            let fused = block_tail_op(b, s, pool, true, from_goodness, seed);
            let separate = block_tail_op(b, s, pool, false, from_goodness, seed);
            for ((what, got), (_, want)) in fused.iter().zip(&separate) {
                assert!(
                    got == want,
                    "{name} {s:?} pool {pool} from goodness {from_goodness}: fused {what} \
                     differs from the separate ops"
                );
            }
        }
        // Evaluation: the same pooled values and goodness as in training.
        let seed = 20 + 10 * i as u64;
        let eval = eval_tail_op(b, s, true, true, Source::Conv, false, seed);
        let trained = block_tail_op(b, s, true, true, false, seed);
        for what in ["goodness", "pooled"] {
            let find = |o: &Outputs| o.iter().find(|(k, _)| k == what).unwrap().1.clone();
            assert!(find(&eval) == find(&trained), "{name} {s:?}: eval {what}");
        }
    }
}

#[test]
fn fused_block_ops_match_the_separate_ops() {
    fused_matches_separate("f32", gpu());
    fused_matches_separate("bf16", gpu_bf16());
}

fn batchnorm_op<B: Backend>(b: &B, rows: usize, c: usize, seed: u64) -> Outputs {
    let s = ChannelShape { rows, channels: c };
    // A large mean: the variance (two passes on the CPU, one of shifted sums on the GPU)
    // must stay exact.
    let xs: Vec<f32> = random(seed, rows * c)
        .iter()
        .map(|v| 3.0 * v + 50.0)
        .collect();
    let x = up(b, &xs);
    let gamma = up(b, &random(seed + 1, c));
    let beta = up(b, &random(seed + 2, c));
    let dy = up(b, &random(seed + 3, rows * c));
    let (mut mean, mut rstd) = (b.zeros(c).unwrap(), b.zeros(c).unwrap());
    let mut rm = up(b, &random(seed + 4, c));
    let mut rv = up(b, &vec![1.0; c]);
    let mut y = b.zeros(rows * c).unwrap();
    b.batchnorm_forward_train(
        &mut y, &mut mean, &mut rstd, &mut rm, &mut rv, &x, &gamma, &beta, s, 1e-5, 0.1,
    )
    .unwrap();
    let mut eval = b.zeros(rows * c).unwrap();
    b.batchnorm_forward_eval(&mut eval, &x, &gamma, &beta, &rm, &rv, s, 1e-5)
        .unwrap();
    let mut dx = b.zeros(rows * c).unwrap();
    let mut dgamma = up(b, &random(seed + 5, c));
    let mut dbeta = up(b, &random(seed + 6, c));
    b.batchnorm_backward(
        Some(&mut dx),
        &mut dgamma,
        &mut dbeta,
        &dy,
        &mean,
        &rstd,
        &x,
        &gamma,
        s,
    )
    .unwrap();
    let (mut dgamma2, mut dbeta2) = (b.zeros(c).unwrap(), b.zeros(c).unwrap());
    b.batchnorm_backward(
        None,
        &mut dgamma2,
        &mut dbeta2,
        &dy,
        &mean,
        &rstd,
        &x,
        &gamma,
        s,
    )
    .unwrap();
    vec![
        ("y".into(), down(b, &y)),
        ("mean".into(), down(b, &mean)),
        ("rstd".into(), down(b, &rstd)),
        ("running_mean".into(), down(b, &rm)),
        ("running_var".into(), down(b, &rv)),
        ("eval".into(), down(b, &eval)),
        ("dx".into(), down(b, &dx)),
        ("dgamma".into(), down(b, &dgamma)),
        ("dbeta".into(), down(b, &dbeta)),
        ("dgamma without dx".into(), down(b, &dgamma2)),
        ("dbeta without dx".into(), down(b, &dbeta2)),
    ]
}

#[test]
fn batchnorm_matches_cpu() {
    for (rows, c, seed) in BATCHNORM_CASES {
        compare(
            &format!("batchnorm {rows}x{c}"),
            batchnorm_op(gpu(), rows, c, seed),
            batchnorm_op(&cpu(), rows, c, seed),
            1e-4,
            1e-5,
        );
    }
}

fn layernorm_op<B: Backend>(b: &B, n: usize, f: usize, seed: u64) -> Outputs {
    let s = SampleShape { n, features: f };
    let x = up(b, &random(seed, n * f));
    let gamma = up(b, &random(seed + 1, f));
    let beta = up(b, &random(seed + 2, f));
    let dy = up(b, &random(seed + 3, n * f));
    let (mut mean, mut rstd) = (b.zeros(n).unwrap(), b.zeros(n).unwrap());
    let mut y = b.zeros(n * f).unwrap();
    b.layernorm_forward(&mut y, &mut mean, &mut rstd, &x, &gamma, &beta, s, 1e-5)
        .unwrap();
    let mut dx = b.zeros(n * f).unwrap();
    let (mut dgamma, mut dbeta) = (up(b, &random(seed + 4, f)), b.zeros(f).unwrap());
    b.layernorm_backward(
        Some(&mut dx),
        &mut dgamma,
        &mut dbeta,
        &dy,
        &mean,
        &rstd,
        &x,
        &gamma,
        s,
    )
    .unwrap();
    vec![
        ("y".into(), down(b, &y)),
        ("mean".into(), down(b, &mean)),
        ("rstd".into(), down(b, &rstd)),
        ("dx".into(), down(b, &dx)),
        ("dgamma".into(), down(b, &dgamma)),
        ("dbeta".into(), down(b, &dbeta)),
    ]
}

#[test]
fn layernorm_matches_cpu() {
    for (n, f, seed) in LAYERNORM_CASES {
        compare(
            &format!("layernorm {n}x{f}"),
            layernorm_op(gpu(), n, f, seed),
            layernorm_op(&cpu(), n, f, seed),
            1e-4,
            1e-5,
        );
    }
}

fn relu_pool_op<B: Backend>(b: &B, s: PoolShape, seed: u64) -> Outputs {
    let total = s.n * s.h * s.w * s.c;
    let pooled = s.n * (s.h / 2) * (s.w / 2) * s.c;
    let mut x = up(b, &ties(seed, total));
    b.relu_forward(&mut x).unwrap();
    let mut y = b.zeros(pooled).unwrap();
    b.maxpool2_forward(&mut y, &x, s).unwrap();
    let dy = up(b, &random(seed + 1, pooled));
    let mut dx = up(b, &random(seed + 2, total)); // every element must be assigned
    b.relu_maxpool2_backward(&mut dx, &dy, &x, s).unwrap();
    let mut g = up(b, &random(seed + 3, total));
    b.relu_backward(&mut g, &x).unwrap();
    vec![
        ("relu".into(), down(b, &x)),
        ("pool".into(), down(b, &y)),
        ("relu+pool backward".into(), down(b, &dx)),
        ("relu backward".into(), down(b, &g)),
    ]
}

#[test]
fn relu_and_maxpool_match_cpu_exactly() {
    for (i, s) in POOL_SHAPES.into_iter().enumerate() {
        compare(
            &format!("relu/pool {s:?}"),
            relu_pool_op(gpu(), s, i as u64),
            relu_pool_op(&cpu(), s, i as u64),
            0.0,
            0.0,
        );
    }
}

/// Where an evaluation tail's values come from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// A convolution, inside the op.
    Conv,
    /// A convolution's output kept aside, plus a bias map: uploaded values (ties on purpose),
    /// or with `from_conv` a convolution's output (which on CUDA in bf16 carries its bf16
    /// copy, and the fused op reads that).
    Kept { from_conv: bool },
}

/// An evaluation tail: through the fused op (`fused`), or through the separate ops it stands
/// for; with `next`, the next block's BatchNorm applied to the block's output (whose own
/// values then need not be written, so only the normalised ones count).
fn eval_tail_op<B: Backend>(
    b: &B,
    s: ConvShape,
    pool: bool,
    fused: bool,
    source: Source,
    next: bool,
    seed: u64,
) -> Outputs {
    let features = s.h * s.w * s.c_out;
    let (nx, nw, ny) = (
        s.n * s.h * s.w * s.c_in,
        s.c_out * 9 * s.c_in,
        s.n * features,
    );
    let np = s.n * (s.h / 2) * (s.w / 2) * s.c_out;
    let x = up(b, &random(seed, nx));
    let w = up(b, &random(seed + 1, nw));
    let mut pre = up(b, &ties(seed + 2, ny));
    if let Source::Kept { from_conv: true } = source {
        b.conv3x3_forward(&mut pre, &x, &w, s).unwrap();
    }
    let maps = up(b, &random(seed + 3, 3 * features));
    let mut activation = up(b, &random(seed + 4, ny));
    let mut pooled = b.zeros(np).unwrap();
    let mut goodness = b.zeros(s.n).unwrap();
    let c = s.c_out;
    let (gamma, beta) = (up(b, &random(seed + 5, c)), up(b, &random(seed + 6, c)));
    let mean = up(b, &random(seed + 7, c));
    let var: Vec<f32> = random(seed + 8, c).iter().map(|v| v.abs() + 0.5).collect();
    let var = up(b, &var);
    let mut normed = b.zeros(if pool { np } else { ny }).unwrap();
    let norm = next.then(|| common::next_norm::<B>(&mut normed, &gamma, &beta, &mean, &var));
    if fused {
        let p = if pool { Some(&mut pooled) } else { None };
        match source {
            Source::Conv => b.conv3x3_relu_pool_goodness_eval(
                &mut activation,
                p,
                &mut goodness,
                &x,
                &w,
                s,
                norm,
            ),
            Source::Kept { .. } => b.bias_relu_pool_goodness(
                &mut activation,
                p,
                &mut goodness,
                &pre,
                &maps,
                2,
                s,
                norm,
            ),
        }
        .unwrap();
    } else {
        match source {
            Source::Conv => b.conv3x3_forward(&mut activation, &x, &w, s),
            Source::Kept { .. } => {
                let shape = SampleShape { n: s.n, features };
                b.add_bias_map(&mut activation, &pre, &maps, 2, shape)
            }
        }
        .unwrap();
        tail_separately(b, &mut activation, &mut pooled, &mut goodness, s, pool);
        if let Some(n) = norm {
            let output = if pool { &pooled } else { &activation };
            let rows = B::len(output) / c;
            let cs = ChannelShape { rows, channels: c };
            b.batchnorm_forward_eval(
                n.out,
                output,
                n.gamma,
                n.beta,
                n.running_mean,
                n.running_var,
                cs,
                n.eps,
            )
            .unwrap();
        }
    }
    let mut out = vec![("goodness".to_string(), down(b, &goodness))];
    if next {
        out.push(("next block's normalised input".into(), down(b, &normed)));
    } else if pool {
        // A pooled block leaves no activation in evaluation: only the pooled values count.
        out.push(("pooled".into(), down(b, &pooled)));
    } else {
        out.push(("activation".into(), down(b, &activation)));
    }
    out
}

/// Every source, pool or not, next BatchNorm or not.
fn eval_tail_cases() -> Vec<(ConvShape, bool, Source, bool, u64)> {
    let mut cases = Vec::new();
    // The last has more channels than the CUDA tails keep next-norm coefficients for.
    let wide = ConvShape {
        n: 2,
        h: 4,
        w: 3,
        c_in: 8,
        c_out: 1030,
    };
    for (i, s) in CONV_SHAPES.into_iter().chain([wide]).enumerate() {
        for pool in [false, true] {
            for source in [
                Source::Conv,
                Source::Kept { from_conv: false },
                Source::Kept { from_conv: true },
            ] {
                for next in [false, true] {
                    cases.push((s, pool, source, next, 60 + 10 * i as u64));
                }
            }
        }
    }
    cases
}

/// The fused evaluation tails give what the separate ops give on the same backend, bit for
/// bit, in both precisions (a kept output from f32 data, or from a convolution's bf16 copy,
/// which holds the same values; the next block's BatchNorm by the same float operations, in
/// bf16 into its bf16 values alone), and from uploaded values what the CPU gives.
#[test]
fn eval_tails_match_the_separate_ops_and_cpu() {
    for (s, pool, source, next, seed) in eval_tail_cases() {
        for (name, b) in [("f32", gpu()), ("bf16", gpu_bf16())] {
            let fused = eval_tail_op(b, s, pool, true, source, next, seed);
            let separate = eval_tail_op(b, s, pool, false, source, next, seed);
            for ((what, got), (_, want)) in fused.iter().zip(&separate) {
                assert!(
                    got == want,
                    "{name} {s:?} pool {pool} {source:?} next {next}: fused {what} differs \
                     from the separate ops"
                );
            }
            if let Source::Kept { from_conv: false } = source {
                // In bf16 the next block's input is kept as bf16 values alone.
                let rel = if name == "bf16" && next {
                    2f64.powi(-8)
                } else {
                    1e-5
                };
                compare(
                    &format!("{name} eval tail {s:?} pool {pool} {source:?} next {next}"),
                    fused,
                    eval_tail_op(&cpu(), s, pool, false, source, next, seed),
                    rel,
                    1e-6,
                );
            }
        }
    }
}

/// On the GPU too, evaluation with block 0 shared between the labels gives the goodness of
/// running each label through the whole network: within float rounding in f32; in bf16
/// the convolution rounds the label plane's change rather than the whole plane.
#[test]
fn evaluation_shares_block_0_on_the_gpu() {
    common::check_eval_sharing(gpu(), 1e-4, 1e-6);
    common::check_eval_sharing(gpu_bf16(), 2e-2, 1e-3);
}

fn goodness_loss_op<B: Backend>(b: &B, pairs: usize, f: usize, kind: FfLoss, seed: u64) -> Outputs {
    let n = 2 * pairs;
    let s = SampleShape { n, features: f };
    let x = up(b, &random(seed, n * f));
    let mut g = b.zeros(n).unwrap();
    b.goodness_forward(&mut g, &x, s).unwrap();
    let (mut loss, mut dg) = (b.zeros(1).unwrap(), b.zeros(n).unwrap());
    b.ff_loss(&mut loss, &mut dg, &g, pairs, kind).unwrap();
    let mut dx = b.zeros(n * f).unwrap();
    b.goodness_backward(&mut dx, &dg, &x, s).unwrap();
    vec![
        ("goodness".into(), down(b, &g)),
        ("loss".into(), down(b, &loss)),
        ("grad goodness".into(), down(b, &dg)),
        ("dx".into(), down(b, &dx)),
    ]
}

#[test]
fn goodness_and_losses_match_cpu() {
    for kind in LOSSES {
        for (pairs, f, seed) in LOSS_CASES {
            compare(
                &format!("{kind:?} {pairs}x{f}"),
                goodness_loss_op(gpu(), pairs, f, kind, seed),
                goodness_loss_op(&cpu(), pairs, f, kind, seed),
                1e-5,
                1e-7,
            );
        }
    }
}

fn embed_op<B: Backend>(b: &B, s: EmbedShape, classes: usize, seed: u64) -> Outputs {
    let images = up(b, &random(seed, s.n * s.pixels * s.channels));
    let table = up(b, &random(seed + 1, classes * s.pixels));
    let mut rng = Rng::new(seed + 2);
    let labels: Vec<u32> = (0..s.n).map(|_| rng.below(classes as u32)).collect();
    let mut out = b.zeros(s.n * s.pixels * (s.channels + 1)).unwrap();
    b.embed_forward(&mut out, &images, &table, &labels, s)
        .unwrap();
    let grad = up(b, &random(seed + 3, s.n * s.pixels * (s.channels + 1)));
    let mut dtable = up(b, &random(seed + 4, classes * s.pixels));
    b.embed_backward(&mut dtable, &grad, &labels, s).unwrap();
    vec![
        ("out".into(), down(b, &out)),
        ("dtable".into(), down(b, &dtable)),
    ]
}

#[test]
fn embedding_matches_cpu_exactly() {
    for (s, seed) in EMBED_CASES {
        compare(
            &format!("embedding {s:?}"),
            embed_op(gpu(), s, 10, seed),
            embed_op(&cpu(), s, 10, seed),
            0.0,
            0.0,
        );
    }
    let mut out = gpu().zeros(2 * 4 * 2).unwrap();
    let images = gpu().zeros(2 * 4).unwrap();
    let table = gpu().zeros(10 * 4).unwrap();
    let s = EmbedShape {
        n: 2,
        pixels: 4,
        channels: 1,
    };
    assert!(
        gpu()
            .embed_forward(&mut out, &images, &table, &[1, 10], s)
            .is_err()
    );
}

fn heads_op<B: Backend>(
    b: &B,
    n: usize,
    pixels: usize,
    c: usize,
    classes: usize,
    seed: u64,
) -> Outputs {
    // rows: every pixel row of all n samples.
    let s = ChannelShape {
        rows: n * pixels,
        channels: c,
    };
    let x = up(b, &random(seed, n * pixels * c));
    let mut pooled = b.zeros(n * c).unwrap();
    b.avgpool_forward(&mut pooled, &x, s, n).unwrap();
    let w = up(b, &random(seed + 1, classes * c));
    let bias = up(b, &random(seed + 2, classes));
    let mut logits = b.zeros(n * classes).unwrap();
    b.linear_forward(&mut logits, &pooled, &w, &bias, n, c, classes)
        .unwrap();
    let mut rng = Rng::new(seed + 3);
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u32)).collect();
    let (mut loss, mut dlogits) = (b.zeros(1).unwrap(), b.zeros(n * classes).unwrap());
    b.cross_entropy(&mut loss, &mut dlogits, &logits, &labels, classes)
        .unwrap();
    let mut dpooled = b.zeros(n * c).unwrap();
    let mut dw = up(b, &random(seed + 4, classes * c));
    let mut db = up(b, &random(seed + 5, classes));
    b.linear_backward(
        Some(&mut dpooled),
        &mut dw,
        &mut db,
        &dlogits,
        &pooled,
        &w,
        n,
        c,
        classes,
    )
    .unwrap();
    let mut dx = b.zeros(n * pixels * c).unwrap();
    b.avgpool_backward(&mut dx, &dpooled, s, n).unwrap();
    vec![
        ("pooled".into(), down(b, &pooled)),
        ("logits".into(), down(b, &logits)),
        ("loss".into(), down(b, &loss)),
        ("dlogits".into(), down(b, &dlogits)),
        ("dpooled".into(), down(b, &dpooled)),
        ("dw".into(), down(b, &dw)),
        ("db".into(), down(b, &db)),
        ("dx".into(), down(b, &dx)),
    ]
}

#[test]
fn classifier_heads_match_cpu() {
    for (n, pixels, c, classes, seed) in HEAD_CASES {
        compare(
            &format!("heads n{n} p{pixels} c{c}"),
            heads_op(gpu(), n, pixels, c, classes, seed),
            heads_op(&cpu(), n, pixels, c, classes, seed),
            1e-4,
            1e-6,
        );
    }
}

fn adam_op<B: Backend>(b: &B, n: usize, seed: u64) -> Outputs {
    let mut p = up(b, &random(seed, n));
    let (mut m, mut v) = (b.zeros(n).unwrap(), b.zeros(n).unwrap());
    let hp = AdamParams::default();
    for step in 1..=3 {
        let g = up(b, &random(seed + step, n));
        b.adam_step(&mut p, &mut m, &mut v, &g, step, hp).unwrap();
    }
    let mut filled = b.zeros(n).unwrap();
    b.fill(&mut filled, 0.25).unwrap();
    let mut gathered = up(b, &random(seed + 9, n + 5));
    b.copy_into(&mut gathered, 3, &p).unwrap();
    vec![
        ("copy_into".into(), down(b, &gathered)),
        ("param".into(), down(b, &p)),
        ("m".into(), down(b, &m)),
        ("v".into(), down(b, &v)),
        ("fill".into(), down(b, &filled)),
    ]
}

/// `adam_step_many` over more parameters than one launch takes (sizes from empty up), three
/// steps; then one parameter of the wrong length: refused, nothing updated.
fn adam_many_op<B: Backend>(b: &B) -> Outputs {
    let n = MANY_LENS.len();
    let mut ps: Vec<B::Buf> = MANY_LENS
        .iter()
        .enumerate()
        .map(|(i, &len)| up(b, &random(80 + i as u64, len)))
        .collect();
    let mut ms: Vec<B::Buf> = MANY_LENS.iter().map(|&len| b.zeros(len).unwrap()).collect();
    let mut vs: Vec<B::Buf> = MANY_LENS.iter().map(|&len| b.zeros(len).unwrap()).collect();
    let hp = AdamParams::default();
    for step in 1..=4u64 {
        let gs: Vec<B::Buf> = MANY_LENS
            .iter()
            .enumerate()
            .map(|(i, &len)| up(b, &random(90 + 20 * step + i as u64, len)))
            .collect();
        // The fourth step's last gradient is one value short.
        let short = (step == 4).then(|| up(b, &random(7, MANY_LENS[n - 1] - 1)));
        let mut tensors: Vec<AdamTensor<'_, B>> = ps
            .iter_mut()
            .zip(&mut ms)
            .zip(&mut vs)
            .zip(&gs)
            .map(|(((param, m), v), grad)| AdamTensor { param, m, v, grad })
            .collect();
        if let Some(short) = &short {
            tensors[n - 1].grad = short;
            assert!(b.adam_step_many(&mut tensors, step, hp).is_err());
        } else {
            b.adam_step_many(&mut tensors, step, hp).unwrap();
        }
    }
    let mut out = Outputs::new();
    for (i, ((p, m), v)) in ps.iter().zip(&ms).zip(&vs).enumerate() {
        out.push((format!("adam_step_many param {i}"), down(b, p)));
        out.push((format!("adam_step_many m {i}"), down(b, m)));
        out.push((format!("adam_step_many v {i}"), down(b, v)));
    }
    out
}

/// Buffer sizes for `fill_many` and `copy_many`: more than one launch takes, from empty up.
const MANY_LENS: [usize; 11] = [0, 1, 3, 1000, 300_001, 4, 257, 2, 9, 70_000, 5];

/// `copy_many` of more parts than one launch takes, of sizes from empty up, into windows of
/// one buffer with gaps that keep their values.
fn copy_many_op<B: Backend>(b: &B) -> Outputs {
    let srcs: Vec<B::Buf> = MANY_LENS
        .iter()
        .enumerate()
        .map(|(i, &n)| up(b, &random(40 + i as u64, n)))
        .collect();
    let mut offset = 0;
    let mut parts = Vec::new();
    for src in &srcs {
        offset += 3; // a gap
        parts.push((offset, src));
        offset += B::len(src);
    }
    let mut dst = up(b, &random(39, offset + 3));
    b.copy_many(&mut dst, &parts).unwrap();
    let mut out = vec![("copy_many".into(), down(b, &dst))];
    // One range too far: nothing is copied.
    let mut again = up(b, &random(39, offset + 3));
    parts.push((offset + 1, &srcs[2]));
    assert!(b.copy_many(&mut again, &parts).is_err());
    out.push(("copy_many refused".into(), down(b, &again)));
    out
}

/// `fill_many` over more buffers than one launch takes, of every size from empty up; a
/// buffer left out keeps its values.
fn fill_many_op<B: Backend>(b: &B) -> Outputs {
    let lens = MANY_LENS;
    let mut bufs: Vec<B::Buf> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| up(b, &random(i as u64, n)))
        .collect();
    let (filled, kept) = bufs.split_at_mut(lens.len() - 1);
    let mut refs: Vec<&mut B::Buf> = filled.iter_mut().collect();
    b.fill_many(&mut refs, 2.5).unwrap();
    let mut out: Outputs = kept.iter().map(|k| ("kept".into(), down(b, k))).collect();
    for (i, buf) in bufs.iter().enumerate() {
        out.push((format!("buffer {i}"), down(b, buf)));
    }
    out
}

#[test]
fn adam_and_memory_match_cpu() {
    compare(
        "fill_many",
        fill_many_op(gpu()),
        fill_many_op(&cpu()),
        0.0,
        0.0,
    );
    compare(
        "copy_many",
        copy_many_op(gpu()),
        copy_many_op(&cpu()),
        0.0,
        0.0,
    );
    compare(
        "adam_step_many",
        adam_many_op(gpu()),
        adam_many_op(&cpu()),
        1e-6,
        1e-7,
    );
    for (n, seed) in ADAM_CASES {
        compare(
            &format!("adam {n}"),
            adam_op(gpu(), n, seed),
            adam_op(&cpu(), n, seed),
            1e-6,
            1e-7,
        );
    }
    let empty = gpu().zeros(0).unwrap();
    assert_eq!(gpu().download(&empty).unwrap(), Vec::<f32>::new());
    let mut buf = gpu().zeros(3).unwrap();
    assert!(gpu().write(&mut buf, &[1.0, 2.0]).is_err());
    let two = gpu().zeros(2).unwrap();
    assert!(gpu().copy_into(&mut buf, 2, &two).is_err());
    assert!(gpu().copy_into(&mut buf, 1, &two).is_ok());
}

#[test]
fn golden_vanilla_on_gpu() {
    common::golden::run_variant(gpu(), "vanilla");
}

#[test]
fn golden_symba_on_gpu() {
    common::golden::run_variant(gpu(), "symba");
}

#[test]
fn golden_symba_apl_on_gpu() {
    common::golden::run_variant(gpu(), "symba_apl");
}

#[test]
fn golden_symba_bn_on_gpu() {
    common::golden::run_variant(gpu(), "symba_bn");
}

#[test]
fn golden_trifecta_on_gpu() {
    common::golden::run_variant(gpu(), "trifecta");
}

/// The `small` network at width 0.25 on 16x16 images after 4 Trifecta steps of 24.
fn trained_net<B: Backend>(b: &B) -> trifecta::ff::FfNet<B> {
    trained_net_with(b, trifecta::layers::norm::NormKind::Batch)
}

/// [`trained_net`] with the norm `norm` (the Trifecta's BatchNorm, or the LayerNorm of the
/// ablations).
fn trained_net_with<B: Backend>(
    b: &B,
    norm: trifecta::layers::norm::NormKind,
) -> trifecta::ff::FfNet<B> {
    use trifecta::ff::{Arch, FfConfig, FfNet, ImageShape};
    let image = ImageShape {
        channels: 3,
        height: 16,
        width: 16,
    };
    let mut config = FfConfig::trifecta(Arch::Small, 0.25, image, 10).unwrap();
    config.norm = norm;
    let mut net = FfNet::new(b, config, 7).unwrap();
    let batch = 24;
    for step in 0..4u64 {
        let images = random(100 + step, batch * 16 * 16 * 3);
        let mut rng = Rng::new(200 + step);
        let positive: Vec<u32> = (0..batch).map(|_| rng.below(10)).collect();
        let negative: Vec<u32> = positive
            .iter()
            .map(|p| (p + 1 + rng.below(9)) % 10)
            .collect();
        net.train_step(b, &images, &positive, &negative).unwrap();
    }
    net
}

/// A few Trifecta steps on the `small` network at width 0.25: the same seed gives the same
/// parameters twice on the GPU, and stays close to the CPU.
fn train_steps<B: Backend>(b: &B) -> Vec<f32> {
    trained_net(b)
        .named_params()
        .into_iter()
        .flat_map(|(_, p)| p.to_torch(b).unwrap())
        .collect()
}

/// The goodness of every label and layer for 9 random images after [`trained_net`].
fn trained_eval<B: Backend>(b: &B) -> Vec<f32> {
    let mut net = trained_net(b);
    net.goodness_per_label(b, &random(300, 9 * 16 * 16 * 3))
        .unwrap()
}

/// As [`trained_eval`] on `b`, with the parameters and running statistics that training
/// on the CPU gave: the evaluation alone compared with the CPU's.
fn cpu_trained_eval<B: Backend>(b: &B) -> Vec<f32> {
    let cpu = cpu();
    let mut trained = trained_net(&cpu);
    let mut net = trifecta::ff::FfNet::new(b, trained.config.clone(), 7).unwrap();
    for ((_, from), (_, to)) in trained
        .named_params()
        .into_iter()
        .zip(net.named_params_mut())
    {
        to.load_torch(b, &from.to_torch(&cpu).unwrap()).unwrap();
    }
    for ((_, from), (_, to)) in trained
        .named_buffers_mut()
        .into_iter()
        .zip(net.named_buffers_mut())
    {
        b.write(&mut to.buf, &from.to_host(&cpu).unwrap()).unwrap();
    }
    net.goodness_per_label(b, &random(300, 9 * 16 * 16 * 3))
        .unwrap()
}

#[test]
fn training_is_repeatable_and_close_to_cpu() {
    training_check(gpu(), 200);
}

/// In bf16 the convolutions read the norms' bf16 copies and the fused block ops run in their
/// bf16 forms; gradients carry bf16 rounding, which Adam turns into whole steps wherever a
/// gradient is near zero. Measured on an H200 (the first GPU runs): |GPU - CPU| after 4 steps
/// has median 4.1e-5, 90% 2.3e-4, 99% 2.2e-3, max 5.8e-3 (Adam's reach is 4e-3, 8e-3 both
/// ways). So the check is on the median, lr / 10 (at most half the parameters beyond 1e-4),
/// and the worst (8 lr): a wrong kernel moves most parameters by about lr a step.
#[test]
fn bf16_training_is_repeatable_and_close_to_cpu() {
    training_check(gpu_bf16(), 2);
}

/// The fused block ops and the bf16 values kept alone (BatchNorm's output, a convolution's
/// input gradient, which the norms' backward reads as bf16) change no number: 4 training
/// steps give the same parameters, bit for bit, as with every op on its own (`--unfused`),
/// in both precisions, with BatchNorm and with LayerNorm.
#[test]
fn fused_and_unfused_training_agree_bit_for_bit() {
    use trifecta::layers::norm::NormKind;
    let params = |b: &Cuda, norm| -> Vec<f32> {
        trained_net_with(b, norm)
            .named_params()
            .into_iter()
            .flat_map(|(_, p)| p.to_torch(b).unwrap())
            .collect()
    };
    for (name, fused) in [("f32", gpu()), ("bf16", gpu_bf16())] {
        let precision = fused.precision();
        let options = GpuOptions {
            fused: false,
            ..GpuOptions::new(precision)
        };
        let unfused = open(options);
        for norm in [NormKind::Batch, NormKind::Layer] {
            assert!(
                params(fused, norm) == params(&unfused, norm),
                "{name} {norm:?}: fused and unfused training differ"
            );
        }
    }
}

/// Evaluation through the fused tails (block 0's kept output and its bf16 copy, the next
/// block's BatchNorm applied by each tail) gives the goodness of the separate ops bit for
/// bit, in both precisions, and in f32 that of the CPU within float rounding.
#[test]
fn fused_and_unfused_evaluation_agree_bit_for_bit() {
    for (name, fused) in [("f32", gpu()), ("bf16", gpu_bf16())] {
        let options = GpuOptions {
            fused: false,
            ..GpuOptions::new(fused.precision())
        };
        let unfused = open(options);
        let got = trained_eval(fused);
        assert!(
            got == trained_eval(&unfused),
            "{name}: fused and unfused evaluation differ"
        );
        if name == "f32" {
            let want: Vec<f64> = trained_eval(&cpu()).iter().map(|v| *v as f64).collect();
            let got = cpu_trained_eval(fused);
            assert_close("f32 evaluation vs the CPU", &got, &want, 1e-3, 1e-5);
        }
    }
}

/// Two runs of [`train_steps`] on `b` are bit-identical, and within Adam's reach of the CPU:
/// at most 1 in `rare` parameters off by more than 1e-4.
fn training_check(b: &Cuda, rare: usize) {
    let first = train_steps(b);
    let second = train_steps(b);
    assert!(first == second, "two GPU runs with the same seed differ");
    // Adam moves a parameter by about lr * sign(gradient) per step, so an element whose
    // gradient is near zero may go the other way on the two backends (different summation
    // orders): a few elements may differ by up to 2 lr per step; a wrong kernel moves many.
    let want = train_steps(&cpu());
    let lr = 1e-3f32;
    let diffs: Vec<f32> = first
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let mut sorted = diffs.clone();
    sorted.sort_by(f32::total_cmp);
    let quantile = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let summary = format!(
        "GPU vs CPU after 4 steps, |difference| quantiles 0.5 {:.2e}, 0.9 {:.2e}, 0.99 {:.2e}, max {:.2e}",
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(1.0)
    );
    eprintln!("{summary}");
    let worst = quantile(1.0);
    let off = diffs.iter().filter(|d| **d > 1e-4).count();
    assert!(worst <= 8.0 * lr, "{summary}");
    assert!(
        off * rare <= diffs.len(),
        "{summary}: {off} of {} parameters differ by more than 1e-4",
        diffs.len()
    );
}

#[test]
fn bench_profile_times_every_kernel_and_library_call() {
    // A backend of its own: the profile stays on once enabled.
    let b = open(GpuOptions::new(Precision::Bf16));
    common::check_profile(
        &b,
        &[
            "cudnn conv forward",
            "cudnn conv backward-filter",
            "cudnn conv backward-data",
            "bf16_to_f32",
            "embed_forward",
            // BatchNorm's statistics in one pass, then its apply.
            "partial_moments",
            "batchnorm_apply",
            "relu_pool_goodness_bf16",
            // The bench step's blocks are local: their backward starts from d(goodness).
            "goodness_relu_maxpool2_backward_bf16",
            // The norms' backward reads the convolution's bf16 input gradient as it is.
            "partial_dy_dyx_bf16",
            "batchnorm_backward_apply_bf16",
            // An optimiser's parameters in one launch, zeroed and updated; the metrics too.
            "fill_many_f32",
            "adam_step_many",
            "copy_many_f32",
            "upload",
        ],
    );
}

#[test]
fn every_op_refuses_buffers_of_the_wrong_size() {
    common::check_ops_refuse_wrong_sizes(gpu());
}

/// A backprop baseline trained two steps on the GPU (f32), saved as `trifecta train` saves a
/// baseline's state, loads into a CPU network: the same tensors, and logits that agree with
/// the GPU's to f32 rounding (the state a run moved from a GPU machine resumes from).
#[test]
fn a_baseline_saved_on_the_gpu_loads_on_the_cpu() {
    use trifecta::baselines::{ClassifierNet, Model};
    use trifecta::ff::{Arch, FfConfig, ImageShape};
    use trifecta::run::checkpoint;
    let image = ImageShape {
        channels: 3,
        height: 16,
        width: 16,
    };
    let ff = FfConfig::trifecta(Arch::Small, 0.25, image, 10).unwrap();
    let mut on_gpu = ClassifierNet::new(gpu(), ff.clone(), Model::Bp, 3).unwrap();
    let batch = 12;
    for step in 0..2u64 {
        let images = random(400 + step, batch * image.numel());
        let mut rng = Rng::new(500 + step);
        let labels: Vec<u32> = (0..batch).map(|_| rng.below(10)).collect();
        on_gpu.train_step(gpu(), &images, &labels).unwrap();
    }
    let config = trifecta::run::config::PartialConfig {
        model: Some(Model::Bp),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let header = checkpoint::Header {
        format: checkpoint::FORMAT.into(),
        epoch: 1,
        iteration: on_gpu.iteration,
        adam_steps: on_gpu.optimizer_steps(),
        config,
        partial: None,
        inputs: None,
    };
    let tmp = common::TempDir::new("cuda-baseline");
    let path = tmp.path().join("weights.safetensors");
    checkpoint::save(&path, &mut on_gpu, gpu(), &header).unwrap();
    let cpu = cpu();
    let mut on_cpu = ClassifierNet::new(&cpu, ff, Model::Bp, 99).unwrap();
    let loaded = checkpoint::load(&path, &mut on_cpu, &cpu).unwrap();
    assert_eq!(loaded.iteration, 2);
    assert_eq!(on_cpu.optimizer_steps(), on_gpu.optimizer_steps());
    for ((name, g), (_, c)) in on_gpu
        .named_params_mut()
        .into_iter()
        .zip(on_cpu.named_params_mut())
    {
        assert_eq!(
            g.to_torch(gpu()).unwrap(),
            c.to_torch(&cpu).unwrap(),
            "{name}"
        );
    }
    let images = random(600, 5 * image.numel());
    let gpu_logits = on_gpu.logits(gpu(), &images).unwrap().concat();
    let cpu_logits: Vec<f64> = on_cpu
        .logits(&cpu, &images)
        .unwrap()
        .concat()
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_close(
        "baseline logits, GPU vs its state on the CPU",
        &gpu_logits,
        &cpu_logits,
        1e-4,
        1e-5,
    );
}
