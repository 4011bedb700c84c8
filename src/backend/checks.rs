//! The shape checks of every op, shared by all backends: each buffer an op reads or writes
//! against the length its shape implies, so that a backend cannot read a shape differently
//! from the others (the CUDA average pool once did). An error names `op.argument`.
//!
//! Each backend calls the check of the same name first thing in its op.

use super::{
    Backend, ChannelShape, ConvShape, EmbedShape, PoolShape, SampleShape, check_labels, check_len,
};
use crate::error::Result;

/// `check_len("op.buf", len(buf), want)` for each `buf => want`.
macro_rules! lens {
    ($B:ty, $op:literal; $($buf:ident => $want:expr),+ $(,)?) => {
        $( check_len(concat!($op, ".", stringify!($buf)), <$B>::len($buf), $want)?; )+
    };
}

/// The classes of a label-embedding table of `s.pixels` per class.
pub fn embed_classes<B: Backend>(table: &B::Buf, s: EmbedShape) -> usize {
    B::len(table) / s.pixels.max(1)
}

pub fn embed_forward<B: Backend>(
    out: &B::Buf,
    images: &B::Buf,
    table: &B::Buf,
    labels: &[u32],
    s: EmbedShape,
) -> Result<()> {
    let classes = embed_classes::<B>(table, s);
    lens!(B, "embed_forward";
        out => s.n * s.pixels * (s.channels + 1),
        images => s.n * s.pixels * s.channels,
        table => classes * s.pixels,
    );
    check_labels("embed_forward.labels", labels, s.n, classes)
}

pub fn embed_backward<B: Backend>(
    grad_table: &B::Buf,
    grad_input: &B::Buf,
    labels: &[u32],
    s: EmbedShape,
) -> Result<()> {
    let classes = embed_classes::<B>(grad_table, s);
    lens!(B, "embed_backward";
        grad_table => classes * s.pixels,
        grad_input => s.n * s.pixels * (s.channels + 1),
    );
    check_labels("embed_backward.labels", labels, s.n, classes)
}

/// Elements of (input, weight, output) of a convolution.
pub fn conv_sizes(s: ConvShape) -> (usize, usize, usize) {
    (
        s.n * s.h * s.w * s.c_in,
        s.c_out * 9 * s.c_in,
        s.n * s.h * s.w * s.c_out,
    )
}

pub fn conv3x3_forward<B: Backend>(
    out: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
) -> Result<()> {
    let (nx, nw, ny) = conv_sizes(s);
    lens!(B, "conv3x3_forward"; out => ny, input => nx, weight => nw);
    Ok(())
}

pub fn conv3x3_backward<B: Backend>(
    grad_input: Option<&B::Buf>,
    grad_weight: &B::Buf,
    grad_out: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
) -> Result<()> {
    let (nx, nw, ny) = conv_sizes(s);
    if let Some(grad_input) = grad_input {
        lens!(B, "conv3x3_backward"; grad_input => nx);
    }
    lens!(B, "conv3x3_backward";
        grad_weight => nw,
        grad_out => ny,
        input => nx,
        weight => nw,
    );
    Ok(())
}

/// The checks of a block's convolution with its tail, named `$op`.
macro_rules! conv_tail {
    ($B:ty, $op:literal, $activation:ident, $pooled:ident, $goodness:ident, $input:ident,
     $weight:ident, $s:ident) => {{
        let (nx, nw, ny) = conv_sizes($s);
        if let Some(pooled) = $pooled {
            lens!($B, $op; pooled => pool_sizes($s.output_pool()).1);
        }
        lens!($B, $op; $activation => ny, $goodness => $s.n, $input => nx, $weight => nw);
    }};
}

pub fn conv3x3_relu_pool_goodness<B: Backend>(
    activation: &B::Buf,
    pooled: Option<&B::Buf>,
    goodness: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
) -> Result<()> {
    conv_tail!(
        B,
        "conv3x3_relu_pool_goodness",
        activation,
        pooled,
        goodness,
        input,
        weight,
        s
    );
    Ok(())
}

/// `maps` holds whole maps of `features` elements each, map `index` among them.
fn bias_maps<B: Backend>(
    op: &'static str,
    maps: &B::Buf,
    index: usize,
    features: usize,
) -> Result<()> {
    let count = B::len(maps) / features.max(1);
    check_len(op, B::len(maps), count.max(index + 1) * features)
}

pub fn add_bias_map<B: Backend>(
    out: &B::Buf,
    pre: &B::Buf,
    maps: &B::Buf,
    index: usize,
    s: SampleShape,
) -> Result<()> {
    lens!(B, "add_bias_map"; out => s.n * s.features, pre => s.n * s.features);
    bias_maps::<B>("add_bias_map.maps", maps, index, s.features)
}

pub fn conv3x3_relu_pool_goodness_eval<B: Backend>(
    activation: &B::Buf,
    pooled: Option<&B::Buf>,
    goodness: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
    next: Option<&super::NextNorm<'_, B>>,
) -> Result<()> {
    conv_tail!(
        B,
        "conv3x3_relu_pool_goodness_eval",
        activation,
        pooled,
        goodness,
        input,
        weight,
        s
    );
    next_norm::<B>(
        "conv3x3_relu_pool_goodness_eval.next",
        next,
        s,
        pooled.is_some(),
    )
}

#[allow(clippy::too_many_arguments)]
pub fn bias_relu_pool_goodness<B: Backend>(
    activation: &B::Buf,
    pooled: Option<&B::Buf>,
    goodness: &B::Buf,
    pre: &B::Buf,
    maps: &B::Buf,
    index: usize,
    s: ConvShape,
    next: Option<&super::NextNorm<'_, B>>,
) -> Result<()> {
    next_norm::<B>("bias_relu_pool_goodness.next", next, s, pooled.is_some())?;
    let ny = conv_sizes(s).2;
    if let Some(pooled) = pooled {
        lens!(B, "bias_relu_pool_goodness"; pooled => pool_sizes(s.output_pool()).1);
    }
    lens!(B, "bias_relu_pool_goodness"; activation => ny, goodness => s.n, pre => ny);
    bias_maps::<B>(
        "bias_relu_pool_goodness.maps",
        maps,
        index,
        s.h * s.w * s.c_out,
    )
}

/// The next block's BatchNorm of an evaluation tail, if any: its output as long as the
/// block's output (pooled with `pool`), its parameters one per output channel. `op` names
/// the op's `next` argument.
pub fn next_norm<B: Backend>(
    op: &'static str,
    next: Option<&super::NextNorm<'_, B>>,
    s: ConvShape,
    pool: bool,
) -> Result<()> {
    let Some(next) = next else {
        return Ok(());
    };
    let output = match pool {
        true => pool_sizes(s.output_pool()).1,
        false => conv_sizes(s).2,
    };
    check_len(op, B::len(next.out), output)?;
    for buf in [next.gamma, next.beta, next.running_mean, next.running_var] {
        check_len(op, B::len(buf), s.c_out)?;
    }
    Ok(())
}

/// The checks of a block's backward through its tail and convolution, named `$op`.
macro_rules! tail_backward {
    ($B:ty, $op:literal, $grad_input:ident, $grad_weight:ident, $grad_activation:ident,
     $grad_output:ident, $activation:ident, $input:ident, $weight:ident, $s:ident,
     $pool:ident) => {{
        let (nx, nw, ny) = conv_sizes($s);
        if let Some(grad_input) = $grad_input {
            lens!($B, $op; grad_input => nx);
        }
        if $pool {
            lens!($B, $op;
                $grad_activation => ny,
                $grad_output => pool_sizes($s.output_pool()).1,
            );
        } else {
            lens!($B, $op; $grad_output => ny);
        }
        lens!($B, $op;
            $grad_weight => nw,
            $activation => ny,
            $input => nx,
            $weight => nw,
        );
    }};
}

#[allow(clippy::too_many_arguments)]
pub fn relu_pool_conv3x3_backward<B: Backend>(
    grad_input: Option<&B::Buf>,
    grad_weight: &B::Buf,
    grad_activation: &B::Buf,
    grad_output: &B::Buf,
    activation: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
    pool: bool,
) -> Result<()> {
    tail_backward!(
        B,
        "relu_pool_conv3x3_backward",
        grad_input,
        grad_weight,
        grad_activation,
        grad_output,
        activation,
        input,
        weight,
        s,
        pool
    );
    Ok(())
}

/// [`relu_pool_conv3x3_backward`]'s checks, and d(goodness) one per sample and the block's
/// output as long as d(output).
#[allow(clippy::too_many_arguments)]
pub fn goodness_relu_pool_conv3x3_backward<B: Backend>(
    grad_input: Option<&B::Buf>,
    grad_weight: &B::Buf,
    grad_activation: &B::Buf,
    grad_output: &B::Buf,
    grad_goodness: &B::Buf,
    output: &B::Buf,
    activation: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
    pool: bool,
) -> Result<()> {
    tail_backward!(
        B,
        "goodness_relu_pool_conv3x3_backward",
        grad_input,
        grad_weight,
        grad_activation,
        grad_output,
        activation,
        input,
        weight,
        s,
        pool
    );
    lens!(B, "goodness_relu_pool_conv3x3_backward";
        grad_goodness => s.n,
        output => B::len(grad_output),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train<B: Backend>(
    out: &B::Buf,
    mean: &B::Buf,
    rstd: &B::Buf,
    running_mean: &B::Buf,
    running_var: &B::Buf,
    input: &B::Buf,
    gamma: &B::Buf,
    beta: &B::Buf,
    s: ChannelShape,
) -> Result<()> {
    let (all, c) = (s.rows * s.channels, s.channels);
    lens!(B, "batchnorm_forward_train";
        out => all,
        mean => c,
        rstd => c,
        running_mean => c,
        running_var => c,
        input => all,
        gamma => c,
        beta => c,
    );
    Ok(())
}

pub fn batchnorm_forward_eval<B: Backend>(
    out: &B::Buf,
    input: &B::Buf,
    gamma: &B::Buf,
    beta: &B::Buf,
    running_mean: &B::Buf,
    running_var: &B::Buf,
    s: ChannelShape,
) -> Result<()> {
    let (all, c) = (s.rows * s.channels, s.channels);
    lens!(B, "batchnorm_forward_eval";
        out => all,
        input => all,
        gamma => c,
        beta => c,
        running_mean => c,
        running_var => c,
    );
    Ok(())
}

pub fn layernorm_forward<B: Backend>(
    out: &B::Buf,
    mean: &B::Buf,
    rstd: &B::Buf,
    input: &B::Buf,
    gamma: &B::Buf,
    beta: &B::Buf,
    s: SampleShape,
) -> Result<()> {
    let all = s.n * s.features;
    lens!(B, "layernorm_forward";
        out => all,
        mean => s.n,
        rstd => s.n,
        input => all,
        gamma => s.features,
        beta => s.features,
    );
    Ok(())
}

/// The backward of a norm, from its shape: (all values, saved statistics, gamma's length).
macro_rules! norm_backward {
    ($name:ident, $op:literal, $shape:ty, |$s:ident| $sizes:expr) => {
        #[allow(clippy::too_many_arguments)]
        pub fn $name<B: Backend>(
            grad_input: Option<&B::Buf>,
            grad_gamma: &B::Buf,
            grad_beta: &B::Buf,
            grad_out: &B::Buf,
            mean: &B::Buf,
            rstd: &B::Buf,
            input: &B::Buf,
            gamma: &B::Buf,
            $s: $shape,
        ) -> Result<()> {
            let (all, stats, params): (usize, usize, usize) = $sizes;
            if let Some(grad_input) = grad_input {
                lens!(B, $op; grad_input => all);
            }
            lens!(B, $op;
                grad_gamma => params,
                grad_beta => params,
                grad_out => all,
                mean => stats,
                rstd => stats,
                input => all,
                gamma => params,
            );
            Ok(())
        }
    };
}

norm_backward!(
    batchnorm_backward,
    "batchnorm_backward",
    ChannelShape,
    |s| (s.rows * s.channels, s.channels, s.channels)
);
norm_backward!(layernorm_backward, "layernorm_backward", SampleShape, |s| (
    s.n * s.features,
    s.n,
    s.features
));

pub fn relu_backward<B: Backend>(grad: &B::Buf, activation: &B::Buf) -> Result<()> {
    lens!(B, "relu_backward"; activation => B::len(grad));
    Ok(())
}

/// Elements of the input and the output of a 2x2 max-pool.
pub fn pool_sizes(s: PoolShape) -> (usize, usize) {
    (s.n * s.h * s.w * s.c, s.n * (s.h / 2) * (s.w / 2) * s.c)
}

pub fn maxpool2_forward<B: Backend>(out: &B::Buf, input: &B::Buf, s: PoolShape) -> Result<()> {
    let (full, pooled) = pool_sizes(s);
    lens!(B, "maxpool2_forward"; out => pooled, input => full);
    Ok(())
}

pub fn relu_maxpool2_backward<B: Backend>(
    grad_input: &B::Buf,
    grad_out: &B::Buf,
    activation: &B::Buf,
    s: PoolShape,
) -> Result<()> {
    let (full, pooled) = pool_sizes(s);
    lens!(B, "relu_maxpool2_backward";
        grad_input => full,
        grad_out => pooled,
        activation => full,
    );
    Ok(())
}

pub fn goodness_forward<B: Backend>(
    goodness: &B::Buf,
    input: &B::Buf,
    s: SampleShape,
) -> Result<()> {
    lens!(B, "goodness_forward"; goodness => s.n, input => s.n * s.features);
    Ok(())
}

pub fn goodness_backward<B: Backend>(
    grad_input: &B::Buf,
    grad_goodness: &B::Buf,
    input: &B::Buf,
    s: SampleShape,
) -> Result<()> {
    lens!(B, "goodness_backward";
        grad_input => s.n * s.features,
        grad_goodness => s.n,
        input => s.n * s.features,
    );
    Ok(())
}

pub fn ff_loss<B: Backend>(
    loss: &B::Buf,
    grad_goodness: &B::Buf,
    goodness: &B::Buf,
    pairs: usize,
) -> Result<()> {
    lens!(B, "ff_loss"; loss => 1, grad_goodness => 2 * pairs, goodness => 2 * pairs);
    Ok(())
}

/// `s.rows` must be `n` whole samples of `s.rows / n` pixels each.
fn avgpool_rows(op: &'static str, s: ChannelShape, n: usize) -> Result<()> {
    if !s.rows.is_multiple_of(n) {
        return Err(crate::error::Error::Shape {
            op,
            expected: vec![n, s.rows / n.max(1)],
            got: vec![s.rows],
        });
    }
    Ok(())
}

pub fn avgpool_forward<B: Backend>(
    out: &B::Buf,
    input: &B::Buf,
    s: ChannelShape,
    n: usize,
) -> Result<()> {
    avgpool_rows("avgpool_forward.rows", s, n)?;
    lens!(B, "avgpool_forward"; out => n * s.channels, input => s.rows * s.channels);
    Ok(())
}

pub fn avgpool_backward<B: Backend>(
    grad_input: &B::Buf,
    grad_out: &B::Buf,
    s: ChannelShape,
    n: usize,
) -> Result<()> {
    avgpool_rows("avgpool_backward.rows", s, n)?;
    lens!(B, "avgpool_backward";
        grad_input => s.rows * s.channels,
        grad_out => n * s.channels,
    );
    Ok(())
}

pub fn linear_forward<B: Backend>(
    out: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    bias: &B::Buf,
    (n, inputs, outputs): (usize, usize, usize),
) -> Result<()> {
    lens!(B, "linear_forward";
        out => n * outputs,
        input => n * inputs,
        weight => outputs * inputs,
        bias => outputs,
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn linear_backward<B: Backend>(
    grad_input: Option<&B::Buf>,
    grad_weight: &B::Buf,
    grad_bias: &B::Buf,
    grad_out: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    (n, inputs, outputs): (usize, usize, usize),
) -> Result<()> {
    if let Some(grad_input) = grad_input {
        lens!(B, "linear_backward"; grad_input => n * inputs);
    }
    lens!(B, "linear_backward";
        grad_weight => outputs * inputs,
        grad_bias => outputs,
        grad_out => n * outputs,
        input => n * inputs,
        weight => outputs * inputs,
    );
    Ok(())
}

pub fn cross_entropy<B: Backend>(
    loss: &B::Buf,
    grad_logits: &B::Buf,
    logits: &B::Buf,
    labels: &[u32],
    classes: usize,
) -> Result<()> {
    let n = labels.len();
    lens!(B, "cross_entropy";
        loss => 1,
        grad_logits => n * classes,
        logits => n * classes,
    );
    check_labels("cross_entropy.labels", labels, n, classes)
}

pub fn adam_step<B: Backend>(param: &B::Buf, m: &B::Buf, v: &B::Buf, grad: &B::Buf) -> Result<()> {
    let len = B::len(param);
    lens!(B, "adam_step"; m => len, v => len, grad => len);
    Ok(())
}

/// Every (offset, src) range of a `copy_many` into `dst`, before anything is copied.
pub fn copy_many<B: Backend>(dst: &B::Buf, parts: &[(usize, &B::Buf)]) -> Result<()> {
    for &(offset, src) in parts {
        super::check_copy(B::len(dst), offset, B::len(src))?;
    }
    Ok(())
}

/// [`adam_step`] of every parameter, before any is updated.
pub fn adam_step_many<B: Backend>(tensors: &[super::AdamTensor<'_, B>]) -> Result<()> {
    for t in tensors {
        adam_step::<B>(t.param, t.m, t.v, t.grad)?;
    }
    Ok(())
}
