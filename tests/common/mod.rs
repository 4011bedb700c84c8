//! Shared test helpers: locating `../shared`, reading safetensors, comparing with tolerances.
#![allow(dead_code)]

pub mod golden;

use std::path::PathBuf;

/// `../shared` beside the project root, or `$TRIFECTA_SHARED` (for a test binary run on
/// another machine). Missing is a hard failure: tests never skip.
pub fn shared_dir() -> PathBuf {
    let dir = match std::env::var_os("TRIFECTA_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    assert!(
        dir.join("golden/manifest.json").exists(),
        "../shared/golden is missing at {}: lay the shared folder beside the project root",
        dir.display()
    );
    dir
}

pub struct TensorFile {
    bytes: Vec<u8>,
}

impl TensorFile {
    pub fn open(path: &std::path::Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TensorFile { bytes }
    }

    fn view(&self, name: &str) -> Option<(Vec<usize>, safetensors::Dtype, Vec<u8>)> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("valid safetensors");
        let t = st.tensor(name).ok()?;
        Some((t.shape().to_vec(), t.dtype(), t.data().to_vec()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.view(name).is_some()
    }

    pub fn names(&self) -> Vec<String> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("valid safetensors");
        st.names().into_iter().map(|s| s.to_string()).collect()
    }

    /// An F64 tensor as (shape, f64 values).
    pub fn f64(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let (shape, dtype, data) = self
            .view(name)
            .unwrap_or_else(|| panic!("tensor {name} missing"));
        assert_eq!(dtype, safetensors::Dtype::F64, "{name}");
        let values = data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (shape, values)
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        self.f64(name).1.iter().map(|v| *v as f32).collect()
    }

    pub fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let (shape, dtype, data) = self
            .view(name)
            .unwrap_or_else(|| panic!("tensor {name} missing"));
        assert_eq!(dtype, safetensors::Dtype::I64, "{name}");
        let values = data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (shape, values)
    }
}

/// (N, C, H, W) -> (N, H, W, C).
pub fn nchw_to_nhwc(data: &[f64], n: usize, c: usize, h: usize, w: usize) -> Vec<f64> {
    let mut out = vec![0.0; data.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                out[(i * h * w + p) * c + ch] = data[(i * c + ch) * h * w + p];
            }
        }
    }
    out
}

/// Asserts |got - want| <= abs + rel * |want| elementwise, skipping elements where
/// `skip(i)`; on failure prints the worst element and the first few values.
pub fn assert_close_masked(
    what: &str,
    got: &[f32],
    want: &[f64],
    rel: f64,
    abs: f64,
    skip: &dyn Fn(usize) -> bool,
) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs golden {}",
        got.len(),
        want.len()
    );
    let mut worst: Option<(usize, f64)> = None;
    let mut max_diff = 0.0f64;
    for i in 0..got.len() {
        if skip(i) {
            continue;
        }
        let diff = (got[i] as f64 - want[i]).abs();
        max_diff = max_diff.max(diff);
        let excess = diff - (abs + rel * want[i].abs());
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        let first: Vec<String> = got
            .iter()
            .zip(want)
            .take(6)
            .map(|(g, w)| format!("{g:.6e}/{w:.6e}"))
            .collect();
        panic!(
            "{what}: element {i} is {} but golden is {} (max |diff| {max_diff:.3e}, rel {rel}, abs {abs}); first got/golden: {}",
            got[i],
            want[i],
            first.join(", ")
        );
    }
}

pub fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
    assert_close_masked(what, got, want, rel, abs, &|_| false);
}

/// A fresh temporary folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "trifecta-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A MATLAB v5 file (uncompressed) holding numeric arrays: (name, dims, class, little-endian
/// data). Classes: 9 = uint8 (data type 2), 6 = double (data type 9).
pub fn write_mat(path: &std::path::Path, arrays: &[(&str, Vec<usize>, u8, Vec<u8>)]) {
    fn element(out: &mut Vec<u8>, data_type: u32, data: &[u8]) {
        out.extend_from_slice(&data_type.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }
    let mut file = vec![b' '; 116];
    file[..20].copy_from_slice(b"MATLAB 5.0 MAT-file,");
    file.extend_from_slice(&[0u8; 8]);
    file.extend_from_slice(&0x0100u16.to_le_bytes());
    file.extend_from_slice(b"IM");
    for (name, dims, class, data) in arrays {
        let mut body = Vec::new();
        let flags: Vec<u8> = [*class as u32, 0u32]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        element(&mut body, 6, &flags);
        let dims: Vec<u8> = dims
            .iter()
            .flat_map(|d| (*d as i32).to_le_bytes())
            .collect();
        element(&mut body, 5, &dims);
        element(&mut body, 1, name.as_bytes());
        element(&mut body, if *class == 9 { 2 } else { 9 }, data);
        file.extend_from_slice(&14u32.to_le_bytes());
        file.extend_from_slice(&(body.len() as u32).to_le_bytes());
        file.extend_from_slice(&body);
    }
    std::fs::write(path, file).unwrap();
}

/// A one-shot-per-connection HTTP server on 127.0.0.1 serving `routes` (path -> (declared
/// length, body)) for `connections` requests, then stopping. Returns its base URL.
pub fn serve(routes: Vec<(String, Option<usize>, Vec<u8>)>, connections: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            match routes.iter().find(|(p, _, _)| *p == path) {
                Some((_, declared, body)) => {
                    let length = declared.unwrap_or(body.len());
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(body);
                    if path.starts_with("/stall") {
                        // A server that stops sending, holding the connection open (on a
                        // thread of its own, so the next requests are served meanwhile).
                        std::thread::spawn(move || {
                            std::thread::sleep(std::time::Duration::from_secs(5));
                            drop(stream);
                        });
                    }
                }
                None => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    base
}

/// `bench --profile` on `backend`: a small step, profiled. Every op of the step shows up,
/// calls per step are whole numbers, and the profiled time fits inside the measured steps.
/// `expected` names kernels the backend must report (the start of each name).
pub fn check_profile<B: trifecta::backend::Backend>(backend: &B, expected: &[&str]) {
    use trifecta::bench::{BenchConfig, run};
    use trifecta::ff::ImageShape;
    let config = BenchConfig {
        width: 0.125,
        image: ImageShape {
            channels: 1,
            height: 16,
            width: 16,
        },
        batch: 4,
        warmup: 1,
        steps: 3,
        profile: true,
        ..BenchConfig::default()
    };
    let report = run(backend, &config).unwrap();
    let names: Vec<&str> = report.kernels.iter().map(|k| k.0).collect();
    for name in expected {
        assert!(
            names.iter().any(|n| n.starts_with(name)),
            "{name} missing from the profile {names:?}"
        );
    }
    let steps: f64 = report.step_seconds_all.iter().sum();
    let profiled: f64 = report.kernels.iter().map(|k| k.1).sum::<f64>() * config.steps as f64;
    assert!(
        profiled > 0.0 && profiled <= steps,
        "profiled {profiled} s over steps taking {steps} s"
    );
    for (name, _, calls) in &report.kernels {
        assert!(
            *calls >= 1.0 && calls.fract() == 0.0,
            "{name}: {calls} calls per step"
        );
    }
    // Slowest first.
    assert!(report.kernels.windows(2).all(|w| w[0].1 >= w[1].1));
    // The same time split by part of the step: the input, then each block's own work.
    let by_scope: f64 = report.kernels_by_scope.iter().map(|k| k.2).sum();
    assert!((by_scope - profiled / config.steps as f64).abs() <= 1e-9 * (1.0 + by_scope));
    let scope_of = |kernel: &str| {
        report
            .kernels_by_scope
            .iter()
            .filter(|k| k.1.starts_with(kernel))
            .map(|k| k.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(scope_of("embed_forward"), ["input"]);
    let blocks = trifecta::ff::FfConfig::trifecta(config.arch, config.width, config.image, 10)
        .unwrap()
        .layers
        .len();
    let adam = scope_of("adam_step");
    for i in 0..blocks {
        let block = format!("block {i}");
        assert!(
            adam.contains(&block.as_str()),
            "no adam_step in {block}: {adam:?}"
        );
    }
    assert!(
        report
            .render(&config)
            .contains("per step, by part of the step:\n")
    );
    // Each step's queueing is a part of it, so their medians keep that order.
    assert!(
        report.queue_seconds > 0.0 && report.queue_seconds <= report.step_seconds,
        "queued {} s of a {} s step",
        report.queue_seconds,
        report.step_seconds
    );
}

/// A next block's BatchNorm (eval mode) over these buffers, eps 1e-5.
pub fn next_norm<'a, B: trifecta::backend::Backend>(
    out: &'a mut B::Buf,
    gamma: &'a B::Buf,
    beta: &'a B::Buf,
    running_mean: &'a B::Buf,
    running_var: &'a B::Buf,
) -> trifecta::backend::NextNorm<'a, B> {
    trifecta::backend::NextNorm {
        out,
        gamma,
        beta,
        running_mean,
        running_var,
        eps: 1e-5,
    }
}

/// One op under test: the lengths of its buffers (in argument order) and a call of it.
type OpCase<'a, B> = (
    &'static str,
    Vec<usize>,
    Box<
        dyn Fn(&B, &mut [<B as trifecta::backend::Backend>::Buf]) -> trifecta::error::Result<()>
            + 'a,
    >,
);

/// Every op runs with buffers of the right lengths, and refuses each buffer made one element
/// too long with a shape error of that op: every backend calls the shared checks of
/// `trifecta::backend::checks` (a missing one panics on the CPU, or reads out of bounds on a
/// GPU).
pub fn check_ops_refuse_wrong_sizes<B: trifecta::backend::Backend>(b: &B) {
    use trifecta::backend::{
        AdamParams, ChannelShape, ConvShape, EmbedShape, FfLoss, PoolShape, SampleShape,
    };
    use trifecta::error::Error;
    let embed = EmbedShape {
        n: 2,
        pixels: 4,
        channels: 3,
    };
    let conv = ConvShape {
        n: 2,
        h: 3,
        w: 3,
        c_in: 2,
        c_out: 3,
    };
    let block = ConvShape {
        n: 2,
        h: 4,
        w: 4,
        c_in: 2,
        c_out: 3,
    };
    let bn = ChannelShape {
        rows: 6,
        channels: 3,
    };
    let ln = SampleShape { n: 2, features: 6 };
    let pool = PoolShape {
        n: 2,
        h: 4,
        w: 4,
        c: 2,
    };
    let heads = ChannelShape {
        rows: 8,
        channels: 3,
    };
    let symba = FfLoss::Symba { alpha: 4.0 };
    let cases: Vec<OpCase<B>> = vec![
        (
            "embed_forward",
            vec![32, 24, 12],
            Box::new(move |b, x| {
                let [out, images, table] = x else {
                    unreachable!()
                };
                b.embed_forward(out, images, table, &[0, 2], embed)
            }),
        ),
        (
            "embed_backward",
            vec![12, 32],
            Box::new(move |b, x| {
                let [table, grad] = x else { unreachable!() };
                b.embed_backward(table, grad, &[0, 2], embed)
            }),
        ),
        (
            "conv3x3_forward",
            vec![54, 36, 54],
            Box::new(move |b, x| {
                let [out, input, weight] = x else {
                    unreachable!()
                };
                b.conv3x3_forward(out, input, weight, conv)
            }),
        ),
        (
            "conv3x3_backward",
            vec![36, 54, 54, 36, 54],
            Box::new(move |b, x| {
                let [gi, gw, go, input, weight] = x else {
                    unreachable!()
                };
                b.conv3x3_backward(Some(gi), gw, go, input, weight, conv)
            }),
        ),
        (
            "conv3x3_relu_pool_goodness",
            vec![96, 24, 2, 64, 54],
            Box::new(move |b, x| {
                let [activation, pooled, goodness, input, weight] = x else {
                    unreachable!()
                };
                b.conv3x3_relu_pool_goodness(
                    activation,
                    Some(pooled),
                    goodness,
                    input,
                    weight,
                    block,
                )
            }),
        ),
        (
            "conv3x3_relu_pool_goodness_eval",
            vec![96, 2, 64, 54, 96, 3, 3, 3, 3],
            Box::new(move |b, x| {
                let [
                    activation,
                    goodness,
                    input,
                    weight,
                    out,
                    gamma,
                    beta,
                    mean,
                    var,
                ] = x
                else {
                    unreachable!()
                };
                let next = next_norm(out, gamma, beta, mean, var);
                b.conv3x3_relu_pool_goodness_eval(
                    activation,
                    None,
                    goodness,
                    input,
                    weight,
                    block,
                    Some(next),
                )
            }),
        ),
        (
            "bias_relu_pool_goodness",
            vec![96, 24, 2, 96, 96, 24, 3, 3, 3, 3],
            Box::new(move |b, x| {
                let [
                    activation,
                    pooled,
                    goodness,
                    pre,
                    maps,
                    out,
                    gamma,
                    beta,
                    mean,
                    var,
                ] = x
                else {
                    unreachable!()
                };
                let next = next_norm(out, gamma, beta, mean, var);
                b.bias_relu_pool_goodness(
                    activation,
                    Some(pooled),
                    goodness,
                    pre,
                    maps,
                    1,
                    block,
                    Some(next),
                )
            }),
        ),
        (
            "bias_relu_pool_goodness",
            vec![96, 2, 96, 48],
            Box::new(move |b, x| {
                let [activation, goodness, pre, maps] = x else {
                    unreachable!()
                };
                b.bias_relu_pool_goodness(activation, None, goodness, pre, maps, 0, block, None)
            }),
        ),
        (
            "goodness_relu_pool_conv3x3_backward",
            vec![64, 54, 96, 24, 2, 24, 96, 64, 54],
            Box::new(move |b, x| {
                let [gi, gw, ga, go, gg, output, activation, input, weight] = x else {
                    unreachable!()
                };
                b.goodness_relu_pool_conv3x3_backward(
                    Some(gi),
                    gw,
                    ga,
                    go,
                    gg,
                    output,
                    activation,
                    input,
                    weight,
                    block,
                    true,
                )
            }),
        ),
        (
            "relu_pool_conv3x3_backward",
            vec![64, 54, 96, 24, 96, 64, 54],
            Box::new(move |b, x| {
                let [gi, gw, ga, go, activation, input, weight] = x else {
                    unreachable!()
                };
                b.relu_pool_conv3x3_backward(
                    Some(gi),
                    gw,
                    ga,
                    go,
                    activation,
                    input,
                    weight,
                    block,
                    true,
                )
            }),
        ),
        (
            "relu_pool_conv3x3_backward",
            vec![64, 54, 96, 96, 64, 54],
            Box::new(move |b, x| {
                let [gi, gw, go, activation, input, weight] = x else {
                    unreachable!()
                };
                // Without pool the scratch is not used: any length will do.
                let mut unused = b.zeros(0)?;
                b.relu_pool_conv3x3_backward(
                    Some(gi),
                    gw,
                    &mut unused,
                    go,
                    activation,
                    input,
                    weight,
                    block,
                    false,
                )
            }),
        ),
        (
            "batchnorm_forward_train",
            vec![18, 3, 3, 3, 3, 18, 3, 3],
            Box::new(move |b, x| {
                let [out, mean, rstd, rm, rv, input, gamma, beta] = x else {
                    unreachable!()
                };
                b.batchnorm_forward_train(
                    out, mean, rstd, rm, rv, input, gamma, beta, bn, 1e-5, 0.1,
                )
            }),
        ),
        (
            "batchnorm_forward_eval",
            vec![18, 18, 3, 3, 3, 3],
            Box::new(move |b, x| {
                let [out, input, gamma, beta, rm, rv] = x else {
                    unreachable!()
                };
                b.batchnorm_forward_eval(out, input, gamma, beta, rm, rv, bn, 1e-5)
            }),
        ),
        (
            "batchnorm_backward",
            vec![18, 3, 3, 18, 3, 3, 18, 3],
            Box::new(move |b, x| {
                let [gi, gg, gb, go, mean, rstd, input, gamma] = x else {
                    unreachable!()
                };
                b.batchnorm_backward(Some(gi), gg, gb, go, mean, rstd, input, gamma, bn)
            }),
        ),
        (
            "layernorm_forward",
            vec![12, 2, 2, 12, 6, 6],
            Box::new(move |b, x| {
                let [out, mean, rstd, input, gamma, beta] = x else {
                    unreachable!()
                };
                b.layernorm_forward(out, mean, rstd, input, gamma, beta, ln, 1e-5)
            }),
        ),
        (
            "layernorm_backward",
            vec![12, 6, 6, 12, 2, 2, 12, 6],
            Box::new(move |b, x| {
                let [gi, gg, gb, go, mean, rstd, input, gamma] = x else {
                    unreachable!()
                };
                b.layernorm_backward(Some(gi), gg, gb, go, mean, rstd, input, gamma, ln)
            }),
        ),
        (
            "add_bias_map",
            vec![12, 12, 18],
            Box::new(|b, x| {
                let [out, pre, maps] = x else { unreachable!() };
                b.add_bias_map(out, pre, maps, 2, SampleShape { n: 2, features: 6 })
            }),
        ),
        (
            "relu_backward",
            vec![12, 12],
            Box::new(|b, x| {
                let [grad, activation] = x else {
                    unreachable!()
                };
                b.relu_backward(grad, activation)
            }),
        ),
        (
            "maxpool2_forward",
            vec![16, 64],
            Box::new(move |b, x| {
                let [out, input] = x else { unreachable!() };
                b.maxpool2_forward(out, input, pool)
            }),
        ),
        (
            "relu_maxpool2_backward",
            vec![64, 16, 64],
            Box::new(move |b, x| {
                let [gi, go, activation] = x else {
                    unreachable!()
                };
                b.relu_maxpool2_backward(gi, go, activation, pool)
            }),
        ),
        (
            "goodness_forward",
            vec![2, 12],
            Box::new(move |b, x| {
                let [goodness, input] = x else { unreachable!() };
                b.goodness_forward(goodness, input, ln)
            }),
        ),
        (
            "goodness_backward",
            vec![12, 2, 12],
            Box::new(move |b, x| {
                let [gi, gg, input] = x else { unreachable!() };
                b.goodness_backward(gi, gg, input, ln)
            }),
        ),
        (
            "ff_loss",
            vec![1, 4, 4],
            Box::new(move |b, x| {
                let [loss, gg, goodness] = x else {
                    unreachable!()
                };
                b.ff_loss(loss, gg, goodness, 2, symba)
            }),
        ),
        (
            "avgpool_forward",
            vec![6, 24],
            Box::new(move |b, x| {
                let [out, input] = x else { unreachable!() };
                b.avgpool_forward(out, input, heads, 2)
            }),
        ),
        (
            "avgpool_backward",
            vec![24, 6],
            Box::new(move |b, x| {
                let [gi, go] = x else { unreachable!() };
                b.avgpool_backward(gi, go, heads, 2)
            }),
        ),
        (
            "linear_forward",
            vec![8, 6, 12, 4],
            Box::new(|b, x| {
                let [out, input, weight, bias] = x else {
                    unreachable!()
                };
                b.linear_forward(out, input, weight, bias, 2, 3, 4)
            }),
        ),
        (
            "linear_backward",
            vec![6, 12, 4, 8, 6, 12],
            Box::new(|b, x| {
                let [gi, gw, gb, go, input, weight] = x else {
                    unreachable!()
                };
                b.linear_backward(Some(gi), gw, gb, go, input, weight, 2, 3, 4)
            }),
        ),
        (
            "cross_entropy",
            vec![1, 8, 8],
            Box::new(|b, x| {
                let [loss, grad, logits] = x else {
                    unreachable!()
                };
                b.cross_entropy(loss, grad, logits, &[1, 3], 4)
            }),
        ),
        (
            "adam_step",
            vec![5, 5, 5, 5],
            Box::new(|b, x| {
                let [param, m, v, grad] = x else {
                    unreachable!()
                };
                b.adam_step(param, m, v, grad, 1, AdamParams::default())
            }),
        ),
    ];
    let buffers = |lens: &[usize]| -> Vec<B::Buf> {
        lens.iter()
            .map(|&n| b.upload(&vec![0.5; n]).unwrap())
            .collect()
    };
    for (op, lens, call) in &cases {
        let mut bufs = buffers(lens);
        call(b, &mut bufs).unwrap_or_else(|e| panic!("{op} with the right sizes: {e}"));
        for i in 0..lens.len() {
            let mut wrong = lens.clone();
            wrong[i] += 1;
            let mut bufs = buffers(&wrong);
            match call(b, &mut bufs) {
                Err(Error::Shape { op: name, .. }) if name.starts_with(op) => {}
                other => panic!("{op}, argument {i} one too long: {other:?}"),
            }
        }
    }
}

/// Evaluation with block 0's convolution shared between the labels gives the goodness of
/// running each label through the whole network, within `rel`/`abs`: for `small` (block 0
/// pooled) and `large` (not pooled) with BatchNorm, after a few training steps have moved
/// the running statistics, the embedding and the weights. Returns the shared goodness.
pub fn check_eval_sharing<B: trifecta::backend::Backend>(b: &B, rel: f64, abs: f64) -> Vec<f32> {
    use trifecta::ff::{Arch, FfConfig, FfNet, ImageShape};
    use trifecta::rng::Rng;
    let image = ImageShape {
        channels: 3,
        height: 8,
        width: 8,
    };
    let mut all = Vec::new();
    for arch in [Arch::Small, Arch::Large] {
        let mut config = FfConfig::trifecta(arch, 0.125, image, 10).unwrap();
        config.layers.truncate(3);
        let mut net = FfNet::new(b, config, 11).unwrap();
        let mut rng = Rng::new(12);
        let batch = 16;
        let mut images =
            |n: usize| -> Vec<f32> { (0..n * image.numel()).map(|_| rng.normal()).collect() };
        for _ in 0..3 {
            let x = images(batch);
            let positive: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
            let negative: Vec<u32> = positive.iter().map(|p| (p + 3) % 10).collect();
            net.train_step(b, &x, &positive, &negative).unwrap();
        }
        let test = images(7);
        assert!(net.share_labels_in_eval, "sharing is the default");
        let shared = net.goodness_per_label(b, &test).unwrap();
        net.share_labels_in_eval = false;
        let each = net.goodness_per_label(b, &test).unwrap();
        let each: Vec<f64> = each.iter().map(|v| *v as f64).collect();
        assert_close(
            &format!("{arch:?}: shared vs per-label evaluation"),
            &shared,
            &each,
            rel,
            abs,
        );
        all.extend(shared);
    }
    all
}
