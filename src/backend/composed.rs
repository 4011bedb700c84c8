//! The fused block ops of [`Backend`] as its separate ops: the defaults of the trait's fused
//! methods, which a backend that fuses them (CUDA) still runs when asked not to
//! (`bench --unfused`, and the tests that compare the two bit for bit).

use super::{Backend, ChannelShape, ConvShape, NextNorm, SampleShape, checks};
use crate::error::Result;

/// [`Backend::conv3x3_relu_pool_goodness`] as the separate ops (its default, which a backend
/// that fuses it can still use when asked not to).
pub fn conv3x3_relu_pool_goodness_composed<B: Backend>(
    b: &B,
    activation: &mut B::Buf,
    pooled: Option<&mut B::Buf>,
    goodness: &mut B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
) -> Result<()> {
    checks::conv3x3_relu_pool_goodness::<B>(
        activation,
        pooled.as_deref(),
        goodness,
        input,
        weight,
        s,
    )?;
    b.conv3x3_forward(activation, input, weight, s)?;
    b.relu_forward(activation)?;
    pool_goodness_next_composed(b, activation, pooled, goodness, s, None)
}

/// [`Backend::bias_relu_pool_goodness`] as the separate ops (its default, which a backend
/// that fuses it can still use when asked not to).
#[allow(clippy::too_many_arguments)]
pub fn bias_relu_pool_goodness_composed<B: Backend>(
    b: &B,
    activation: &mut B::Buf,
    pooled: Option<&mut B::Buf>,
    goodness: &mut B::Buf,
    pre: &B::Buf,
    maps: &B::Buf,
    index: usize,
    s: ConvShape,
    next: Option<NextNorm<'_, B>>,
) -> Result<()> {
    checks::bias_relu_pool_goodness::<B>(
        activation,
        pooled.as_deref(),
        goodness,
        pre,
        maps,
        index,
        s,
        next.as_ref(),
    )?;
    let features = s.h * s.w * s.c_out;
    b.add_bias_map(
        activation,
        pre,
        maps,
        index,
        SampleShape { n: s.n, features },
    )?;
    b.relu_forward(activation)?;
    pool_goodness_next_composed(b, activation, pooled, goodness, s, next)
}

/// [`Backend::conv3x3_relu_pool_goodness_eval`] as the separate ops (its default, which a
/// backend that fuses it can still use when asked not to).
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_relu_pool_goodness_eval_composed<B: Backend>(
    b: &B,
    activation: &mut B::Buf,
    pooled: Option<&mut B::Buf>,
    goodness: &mut B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
    next: Option<NextNorm<'_, B>>,
) -> Result<()> {
    checks::conv3x3_relu_pool_goodness_eval::<B>(
        activation,
        pooled.as_deref(),
        goodness,
        input,
        weight,
        s,
        next.as_ref(),
    )?;
    b.conv3x3_forward(activation, input, weight, s)?;
    b.relu_forward(activation)?;
    pool_goodness_next_composed(b, activation, pooled, goodness, s, next)
}

/// `next.out` = the next block's BatchNorm (eval mode) of the block's output (`pooled`
/// with pool, else `activation`), if there is a `next`.
fn apply_next_norm<B: Backend>(
    b: &B,
    next: Option<NextNorm<'_, B>>,
    activation: &B::Buf,
    pooled: Option<&mut B::Buf>,
    s: ConvShape,
) -> Result<()> {
    let Some(next) = next else {
        return Ok(());
    };
    let output = pooled.map_or(activation, |p| &*p);
    let rows = B::len(output) / s.c_out.max(1);
    b.batchnorm_forward_eval(
        next.out,
        output,
        next.gamma,
        next.beta,
        next.running_mean,
        next.running_var,
        ChannelShape {
            rows,
            channels: s.c_out,
        },
        next.eps,
    )
}

/// The pool (with `pooled`) and the goodness of an activation that is already ReLU'd, then
/// the next block's BatchNorm if there is a `next`: the end of every composed block tail,
/// and of a backend's own that does the add and ReLU its own way.
pub fn pool_goodness_next_composed<B: Backend>(
    b: &B,
    activation: &B::Buf,
    mut pooled: Option<&mut B::Buf>,
    goodness: &mut B::Buf,
    s: ConvShape,
    next: Option<NextNorm<'_, B>>,
) -> Result<()> {
    if let Some(pooled) = pooled.as_deref_mut() {
        b.maxpool2_forward(pooled, activation, s.output_pool())?;
    }
    let output = pooled.as_deref().unwrap_or(activation);
    let features = B::len(output) / s.n.max(1);
    b.goodness_forward(goodness, output, SampleShape { n: s.n, features })?;
    apply_next_norm(b, next, activation, pooled, s)
}

/// [`Backend::goodness_relu_pool_conv3x3_backward`] as the separate ops (its default, which
/// a backend that fuses it can still use where it does not): goodness_backward of the
/// block's output, then [`Backend::relu_pool_conv3x3_backward`].
#[allow(clippy::too_many_arguments)]
pub fn goodness_relu_pool_conv3x3_backward_composed<B: Backend>(
    b: &B,
    grad_input: Option<&mut B::Buf>,
    grad_weight: &mut B::Buf,
    grad_activation: &mut B::Buf,
    grad_output: &mut B::Buf,
    grad_goodness: &B::Buf,
    output: &B::Buf,
    activation: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
    pool: bool,
) -> Result<()> {
    checks::goodness_relu_pool_conv3x3_backward::<B>(
        grad_input.as_deref(),
        grad_weight,
        grad_activation,
        grad_output,
        grad_goodness,
        output,
        activation,
        input,
        weight,
        s,
        pool,
    )?;
    let features = B::len(output) / s.n.max(1);
    b.goodness_backward(
        grad_output,
        grad_goodness,
        output,
        SampleShape { n: s.n, features },
    )?;
    b.relu_pool_conv3x3_backward(
        grad_input,
        grad_weight,
        grad_activation,
        grad_output,
        activation,
        input,
        weight,
        s,
        pool,
    )
}

/// [`Backend::relu_pool_conv3x3_backward`] as the separate ops (its default, which a backend
/// that fuses it can still use where it does not).
#[allow(clippy::too_many_arguments)]
pub fn relu_pool_conv3x3_backward_composed<B: Backend>(
    b: &B,
    grad_input: Option<&mut B::Buf>,
    grad_weight: &mut B::Buf,
    grad_activation: &mut B::Buf,
    grad_output: &mut B::Buf,
    activation: &B::Buf,
    input: &B::Buf,
    weight: &B::Buf,
    s: ConvShape,
    pool: bool,
) -> Result<()> {
    checks::relu_pool_conv3x3_backward::<B>(
        grad_input.as_deref(),
        grad_weight,
        grad_activation,
        grad_output,
        activation,
        input,
        weight,
        s,
        pool,
    )?;
    let grad = if pool {
        b.relu_maxpool2_backward(grad_activation, grad_output, activation, s.output_pool())?;
        grad_activation
    } else {
        b.relu_backward(grad_output, activation)?;
        grad_output
    };
    b.conv3x3_backward(grad_input, grad_weight, grad, input, weight, s)
}
