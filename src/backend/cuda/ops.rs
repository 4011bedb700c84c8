//! The [`Backend`] trait on the GPU: every engine op, each checking its buffers against its
//! shape before it launches. One trait impl cannot be split across files, so this file is
//! long; the helpers it calls live by theme in `conv` (cuDNN, bf16 copies, padding) and
//! `tails` (partial sums, fused tails), and the kernels in `kernels.cu`.

use super::conv::{HalfOut, Sgemm};
use super::sig::{AdamManyArgs, CopyManyArgs, FillManyArgs, MANY};
use super::tails::{PartialInputs, TailGrad};
use super::{Cuda, CudaBuf, STAGED_UPLOAD, grow, int, nvrtc, pool_dims, sig};
use crate::backend::{
    AdamParams, AdamTensor, Backend, ChannelShape, ConvShape, EmbedShape, FfLoss, NextNorm,
    PoolShape, Precision, SampleShape, check_copy, check_len, checks,
};
use crate::error::Result;

/// The samples grouped by label, for `embed_backward`: `classes + 1` offsets, then the
/// sample numbers of label 0, of label 1, ..., each group in increasing order (labels were
/// checked to be below `classes`). Each table entry then reads only its own label's samples,
/// not all of them.
fn label_groups(labels: &[u32], classes: usize) -> Vec<u32> {
    let mut offsets = vec![0u32; classes + 1];
    for &l in labels {
        offsets[l as usize + 1] += 1;
    }
    for l in 0..classes {
        offsets[l + 1] += offsets[l];
    }
    let mut out = offsets.clone();
    out.resize(classes + 1 + labels.len(), 0);
    let mut next = offsets;
    for (sample, &l) in labels.iter().enumerate() {
        out[classes + 1 + next[l as usize] as usize] = sample as u32;
        next[l as usize] += 1;
    }
    out
}

impl Backend for Cuda {
    type Buf = CudaBuf;

    fn name(&self) -> String {
        let mut how = match self.precision {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16 convolutions",
        }
        .to_string();
        if !self.fused {
            how.push_str(", unfused");
        }
        if !self.deterministic {
            how.push_str(", any cuDNN algorithm");
        }
        if self.cudnn_benchmark {
            how.push_str(", cuDNN algorithms timed");
        }
        format!("cuda:{} ({}, {how})", self.ordinal, self.device_name)
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|x| self.err("synchronize", x))
    }

    fn enable_profile(&self) {
        self.profile.totals.enable();
    }

    fn profile(&self) -> Result<Vec<crate::profile::Row>> {
        let pending = std::mem::take(
            &mut *self
                .profile
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (scope, name, start, end) in pending {
            // elapsed_ms waits for both events.
            let ms = start
                .elapsed_ms(&end)
                .map_err(|x| self.err("profile event", x))?;
            let time = std::time::Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3);
            self.profile.totals.record_in(scope, name, time);
        }
        Ok(self.profile.totals.report())
    }

    fn profile_scope(&self, scope: &'static str) {
        self.profile.totals.set_scope(scope);
    }

    fn zeros(&self, len: usize) -> Result<CudaBuf> {
        self.alloc(len)
    }
    fn upload(&self, data: &[f32]) -> Result<CudaBuf> {
        let mut buf = self.alloc(data.len())?;
        self.write(&mut buf, data)?;
        Ok(buf)
    }
    /// A buffer that holds only its bf16 copy (BatchNorm's output in bf16) comes back as
    /// those values, widened.
    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; buf.len()];
        if buf.is_empty() {
            return Ok(out);
        }
        match (buf.f32(), buf.fresh_half()) {
            (Err(_), Some(half)) => {
                let mut bits = vec![0u16; buf.len()];
                self.stream
                    .memcpy_dtoh(&half.slice(0..buf.len()), &mut bits)
                    .map_err(|e| self.err("download", e))?;
                self.synchronize()?;
                for (o, b) in out.iter_mut().zip(&bits) {
                    *o = f32::from_bits(u32::from(*b) << 16);
                }
            }
            (data, _) => {
                self.stream
                    .memcpy_dtoh(&data?.slice(0..buf.len()), &mut out)
                    .map_err(|e| self.err("download", e))?;
                self.synchronize()?;
            }
        }
        Ok(out)
    }
    fn len(buf: &CudaBuf) -> usize {
        buf.len()
    }
    fn fill(&self, buf: &mut CudaBuf, value: f32) -> Result<()> {
        let n = buf.len() as i64;
        launch!(
            self,
            sig::fill_f32,
            nvrtc::elementwise(buf.len()),
            buf.f32_mut(),
            &value,
            &n
        );
        Ok(())
    }
    fn fill_many(&self, bufs: &mut [&mut CudaBuf], value: f32) -> Result<()> {
        for chunk in bufs.chunks_mut(MANY) {
            let mut args = FillManyArgs::default();
            for (k, buf) in chunk.iter_mut().enumerate() {
                args.len[k] = buf.len() as i64;
                args.ptr[k] = self.ptr(buf.f32_mut());
            }
            let (cfg, count) = nvrtc::per_buffer(chunk.iter().map(|b| b.len()));
            launch!(self, sig::fill_many_f32, cfg, &args, &count, &value);
        }
        Ok(())
    }

    fn copy_many(&self, dst: &mut CudaBuf, parts: &[(usize, &CudaBuf)]) -> Result<()> {
        checks::copy_many::<Self>(dst, parts)?;
        let to = dst.f32_mut();
        for chunk in parts.chunks(MANY) {
            let mut args = CopyManyArgs::default();
            for (k, &(offset, src)) in chunk.iter().enumerate() {
                args.src[k] = self.ptr(src.f32()?);
                args.offset[k] = offset as i64;
                args.len[k] = src.len() as i64;
            }
            let (cfg, count) = nvrtc::per_buffer(chunk.iter().map(|(_, b)| b.len()));
            launch!(self, sig::copy_many_f32, cfg, &mut *to, &args, &count);
        }
        Ok(())
    }

    /// Large uploads are asynchronous: the host copies the data into page-locked memory and
    /// returns while the GPU copies it on, in stream order.
    fn write(&self, dst: &mut CudaBuf, data: &[f32]) -> Result<()> {
        check_len("write", data.len(), dst.len())?;
        if data.len() >= STAGED_UPLOAD && self.upload_staged(dst, data)? {
            return Ok(());
        }
        if !data.is_empty() {
            self.timed("upload", || {
                self.stream
                    .memcpy_htod(data, &mut dst.f32_mut().slice_mut(0..data.len()))
                    .map_err(|e| self.err("upload", e))
            })?;
        }
        Ok(())
    }

    fn copy_into(&self, dst: &mut CudaBuf, offset: usize, src: &CudaBuf) -> Result<()> {
        check_copy(dst.len(), offset, src.len())?;
        if !src.is_empty() {
            self.timed("copy", || {
                self.stream
                    .memcpy_dtod(
                        &src.f32()?.slice(0..src.len()),
                        &mut dst.f32_mut().slice_mut(offset..offset + src.len()),
                    )
                    .map_err(|e| self.err("copy", e))
            })?;
        }
        Ok(())
    }

    fn embed_forward(
        &self,
        out: &mut CudaBuf,
        images: &CudaBuf,
        table: &CudaBuf,
        labels: &[u32],
        s: EmbedShape,
    ) -> Result<()> {
        checks::embed_forward::<Self>(out, images, table, labels, s)?;
        let mut state = self.lock();
        let l = self.upload_labels(&mut state.scratch, labels)?;
        let (n, p, c) = (
            int("n", s.n)?,
            int("pixels", s.pixels)?,
            int("c", s.channels)?,
        );
        launch!(
            self,
            sig::embed_forward,
            nvrtc::elementwise(s.n * s.pixels), // a thread per pixel
            out.f32_mut(),
            images.f32()?,
            table.f32()?,
            &*l,
            &n,
            &p,
            &c
        );
        Ok(())
    }
    fn embed_backward(
        &self,
        grad_table: &mut CudaBuf,
        grad_input: &CudaBuf,
        labels: &[u32],
        s: EmbedShape,
    ) -> Result<()> {
        checks::embed_backward::<Self>(grad_table, grad_input, labels, s)?;
        let classes = checks::embed_classes::<Self>(grad_table, s);
        let mut state = self.lock();
        let groups = self.upload_labels(&mut state.scratch, &label_groups(labels, classes))?;
        let (p, c, k) = (
            int("pixels", s.pixels)?,
            int("c", s.channels)?,
            int("classes", classes)?,
        );
        launch!(
            self,
            sig::embed_backward,
            nvrtc::elementwise(classes * s.pixels),
            grad_table.f32_mut(),
            grad_input.f32()?,
            &*groups,
            &p,
            &c,
            &k
        );
        Ok(())
    }

    fn conv3x3_forward(
        &self,
        out: &mut CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
    ) -> Result<()> {
        checks::conv3x3_forward::<Self>(out, input, weight, s)?;
        let mut state = self.lock();
        self.conv_forward(&mut state, out, input, weight, s, HalfOut::Widened)
    }
    fn conv3x3_backward(
        &self,
        grad_input: Option<&mut CudaBuf>,
        grad_weight: &mut CudaBuf,
        grad_out: &CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
    ) -> Result<()> {
        checks::conv3x3_backward::<Self>(
            grad_input.as_deref(),
            grad_weight,
            grad_out,
            input,
            weight,
            s,
        )?;
        let mut state = self.lock();
        self.conv_backward(
            &mut state,
            grad_input,
            grad_weight,
            Some(grad_out),
            input,
            weight,
            s,
        )
    }

    /// One pass over the convolution's output does ReLU, pool and goodness; in bf16 that pass
    /// reads the tensor cores' bf16 output directly (no f32 copy of it, no separate ReLU),
    /// and a pooled block's record of its activation is bf16 (exact: ReLU of a bf16 value),
    /// in the first half of `activation`.
    fn conv3x3_relu_pool_goodness(
        &self,
        activation: &mut CudaBuf,
        pooled: Option<&mut CudaBuf>,
        goodness: &mut CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
    ) -> Result<()> {
        if !self.fused {
            return crate::backend::conv3x3_relu_pool_goodness_composed(
                self, activation, pooled, goodness, input, weight, s,
            );
        }
        checks::conv3x3_relu_pool_goodness::<Self>(
            activation,
            pooled.as_deref(),
            goodness,
            input,
            weight,
            s,
        )?;
        let mut guard = self.lock();
        let state = &mut *guard;
        // bf16 with pool: cuDNN writes y where the record goes, the first half of the
        // activation buffer, and the tail reads it there and writes no record (the pooled
        // backward gives the same gradient from y as from ReLU(y); kernels.cu).
        let in_place = self.precision == Precision::Bf16 && pooled.is_some();
        let dest = match in_place {
            true => HalfOut::At(self.ptr(activation.f32_mut())),
            false => HalfOut::Scratch,
        };
        self.conv_forward(state, activation, input, weight, s, dest)?;
        if s.n == 0 {
            return Ok(());
        }
        let (h, w, c) = (int("h", s.h)?, int("w", s.w)?, int("c", s.c_out)?);
        let pool = pooled.is_some() as i32;
        let save = !in_place as i32;
        // Raw addresses: `y` may be the activation itself (f32, in place), and `pooled` is
        // absent without pool (the kernel then never touches it).
        let pooled = pooled.map_or(0, |p| self.ptr(p.f32_mut()));
        let half = self.precision == Precision::Bf16;
        let y = match half && !in_place {
            true => self.raw(&state.scratch.half[2]),
            false => self.ptr(activation.f32()?),
        };
        launch!(
            self,
            either(
                half,
                sig::relu_pool_goodness_bf16,
                sig::relu_pool_goodness_f32
            ),
            nvrtc::per_row(s.n),
            activation.f32_mut(),
            &pooled,
            goodness.f32_mut(),
            &y,
            &h,
            &w,
            &c,
            &pool,
            &save
        );
        Ok(())
    }

    /// The same tail as in training, with no record: a pooled block writes only its pooled
    /// values, and with `next` the next block's normalised input instead of its output.
    fn conv3x3_relu_pool_goodness_eval(
        &self,
        activation: &mut CudaBuf,
        pooled: Option<&mut CudaBuf>,
        goodness: &mut CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
        next: Option<NextNorm<'_, Self>>,
    ) -> Result<()> {
        if !self.fused {
            return crate::backend::conv3x3_relu_pool_goodness_eval_composed(
                self, activation, pooled, goodness, input, weight, s, next,
            );
        }
        checks::conv3x3_relu_pool_goodness_eval::<Self>(
            activation,
            pooled.as_deref(),
            goodness,
            input,
            weight,
            s,
            next.as_ref(),
        )?;
        let mut guard = self.lock();
        let state = &mut *guard;
        self.conv_forward(state, activation, input, weight, s, HalfOut::Scratch)?;
        let from = match self.precision {
            Precision::Bf16 => (true, self.raw(&state.scratch.half[2])),
            Precision::F32 => (false, self.ptr(activation.f32()?)),
        };
        self.eval_tail(from, 0, activation, pooled, goodness, s, next)
    }

    /// One pass: the evaluation tail, reading the kept output (its bf16 copy where it has
    /// one) and adding the map as it loads.
    fn bias_relu_pool_goodness(
        &self,
        activation: &mut CudaBuf,
        pooled: Option<&mut CudaBuf>,
        goodness: &mut CudaBuf,
        pre: &CudaBuf,
        maps: &CudaBuf,
        index: usize,
        s: ConvShape,
        next: Option<NextNorm<'_, Self>>,
    ) -> Result<()> {
        if !self.fused {
            return crate::backend::bias_relu_pool_goodness_composed(
                self, activation, pooled, goodness, pre, maps, index, s, next,
            );
        }
        checks::bias_relu_pool_goodness::<Self>(
            activation,
            pooled.as_deref(),
            goodness,
            pre,
            maps,
            index,
            s,
            next.as_ref(),
        )?;
        let map = self.map_ptr(maps, index, s.h * s.w * s.c_out)?;
        // A convolution's output in bf16 carries its bf16 copy: half the bytes to read.
        let from = match pre.fresh_half() {
            Some(half) => (true, self.ptr(half)),
            None => (false, self.ptr(pre.f32()?)),
        };
        self.eval_tail(from, map, activation, pooled, goodness, s, next)
    }

    /// In bf16, the ReLU (and pool) backward reads the forward's bf16 record and writes
    /// d(conv output) as bf16 straight into the convolution's operand: no f32 copy of it and
    /// no conversion pass.
    fn relu_pool_conv3x3_backward(
        &self,
        grad_input: Option<&mut CudaBuf>,
        grad_weight: &mut CudaBuf,
        grad_activation: &mut CudaBuf,
        grad_output: &mut CudaBuf,
        activation: &CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
        pool: bool,
    ) -> Result<()> {
        if self.precision == Precision::F32 || !self.fused {
            return crate::backend::relu_pool_conv3x3_backward_composed(
                self,
                grad_input,
                grad_weight,
                grad_activation,
                grad_output,
                activation,
                input,
                weight,
                s,
                pool,
            );
        }
        checks::relu_pool_conv3x3_backward::<Self>(
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
        self.bf16_tail_backward(
            TailGrad::Output(grad_output),
            grad_input,
            grad_weight,
            activation,
            input,
            weight,
            s,
            pool,
        )
    }

    /// In bf16, one pass makes d(conv output) in bf16 from d(goodness) and the forward's
    /// record: goodness_backward and the ReLU (and pool) backward at once, reading neither
    /// the block's output (with pool: the record's window maximum is the pooled value) nor
    /// d(output), which is never written.
    fn goodness_relu_pool_conv3x3_backward(
        &self,
        grad_input: Option<&mut CudaBuf>,
        grad_weight: &mut CudaBuf,
        grad_activation: &mut CudaBuf,
        grad_output: &mut CudaBuf,
        grad_goodness: &CudaBuf,
        output: &CudaBuf,
        activation: &CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
        pool: bool,
    ) -> Result<()> {
        if self.precision == Precision::F32 || !self.fused {
            return crate::backend::goodness_relu_pool_conv3x3_backward_composed(
                self,
                grad_input,
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
            );
        }
        checks::goodness_relu_pool_conv3x3_backward::<Self>(
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
        self.bf16_tail_backward(
            TailGrad::Goodness(grad_goodness),
            grad_input,
            grad_weight,
            activation,
            input,
            weight,
            s,
            pool,
        )
    }

    fn batchnorm_forward_train(
        &self,
        out: &mut CudaBuf,
        mean: &mut CudaBuf,
        rstd: &mut CudaBuf,
        running_mean: &mut CudaBuf,
        running_var: &mut CudaBuf,
        input: &CudaBuf,
        gamma: &CudaBuf,
        beta: &CudaBuf,
        s: ChannelShape,
        eps: f32,
        momentum: f32,
    ) -> Result<()> {
        checks::batchnorm_forward_train::<Self>(
            out,
            mean,
            rstd,
            running_mean,
            running_var,
            input,
            gamma,
            beta,
            s,
        )?;
        let (rows, c) = (s.rows, s.channels);
        let mut guard = self.lock();
        let sc = &mut guard.scratch;
        let (cols, rows_i) = (int("channels", c)?, rows as i64);
        // One pass for the mean and the variance (shifted sums, exact as two passes would be).
        let p = self.launch_partials(sc, rows, c, PartialInputs::Moments(input))?;
        let parts = int("parts", p.parts)?;
        launch!(
            self,
            sig::batchnorm_finish_moments,
            nvrtc::per_column(c),
            mean.f32_mut(),
            rstd.f32_mut(),
            running_mean.f32_mut(),
            running_var.f32_mut(),
            input.f32()?,
            sc.part_a.as_ref().expect("grown"),
            sc.part_b.as_ref().expect("grown"),
            &parts,
            &cols,
            &rows_i,
            &eps,
            &momentum
        );
        let total = (rows * c) as i64;
        let (out, out_half) = self.conv_operand_out(out)?;
        launch!(
            self,
            sig::batchnorm_apply,
            nvrtc::quads(rows * c, c),
            &out,
            &out_half,
            input.f32()?,
            mean.f32()?,
            rstd.f32()?,
            gamma.f32()?,
            beta.f32()?,
            &cols,
            &total
        );
        Ok(())
    }
    fn batchnorm_forward_eval(
        &self,
        out: &mut CudaBuf,
        input: &CudaBuf,
        gamma: &CudaBuf,
        beta: &CudaBuf,
        running_mean: &CudaBuf,
        running_var: &CudaBuf,
        s: ChannelShape,
        eps: f32,
    ) -> Result<()> {
        checks::batchnorm_forward_eval::<Self>(
            out,
            input,
            gamma,
            beta,
            running_mean,
            running_var,
            s,
        )?;
        let (rows, c) = (s.rows, s.channels);
        let (cols, total) = (int("channels", c)?, (rows * c) as i64);
        let (out, out_half) = self.conv_operand_out(out)?;
        launch!(
            self,
            sig::batchnorm_apply_eval,
            nvrtc::quads(rows * c, c),
            &out,
            &out_half,
            input.f32()?,
            gamma.f32()?,
            beta.f32()?,
            running_mean.f32()?,
            running_var.f32()?,
            &eps,
            &cols,
            &total
        );
        Ok(())
    }
    fn batchnorm_backward(
        &self,
        grad_input: Option<&mut CudaBuf>,
        grad_gamma: &mut CudaBuf,
        grad_beta: &mut CudaBuf,
        grad_out: &CudaBuf,
        mean: &CudaBuf,
        rstd: &CudaBuf,
        input: &CudaBuf,
        gamma: &CudaBuf,
        s: ChannelShape,
    ) -> Result<()> {
        checks::batchnorm_backward::<Self>(
            grad_input.as_deref(),
            grad_gamma,
            grad_beta,
            grad_out,
            mean,
            rstd,
            input,
            gamma,
            s,
        )?;
        let (rows, c) = (s.rows, s.channels);
        let mut guard = self.lock();
        let sc = &mut guard.scratch;
        let p = self.launch_partials(sc, rows, c, PartialInputs::DyDyx(grad_out, input))?;
        let (parts, cols, rows_i) = (int("parts", p.parts)?, int("channels", c)?, rows as i64);
        let coef =
            grow(&self.stream, &mut sc.coef, 3 * c).map_err(|e| self.err("allocation", e))?;
        {
            let (mut k, mut rest) = coef.split_at_mut(c);
            let (mut slope, mut offset) = rest.split_at_mut(c);
            launch!(
                self,
                sig::batchnorm_backward_finish,
                nvrtc::per_column(c),
                grad_gamma.f32_mut(),
                grad_beta.f32_mut(),
                &mut k,
                &mut slope,
                &mut offset,
                sc.part_a.as_ref().expect("grown"),
                sc.part_b.as_ref().expect("grown"),
                &parts,
                &cols,
                &rows_i,
                mean.f32()?,
                rstd.f32()?,
                gamma.f32()?
            );
        }
        if let Some(gi) = grad_input {
            let coef = sc.coef.as_ref().expect("grown");
            let (k, slope, offset) = (
                coef.slice(0..c),
                coef.slice(c..2 * c),
                coef.slice(2 * c..3 * c),
            );
            let total = (rows * c) as i64;
            let (half, dy) = self.grad_values(grad_out)?;
            launch!(
                self,
                either(
                    half,
                    sig::batchnorm_backward_apply_bf16,
                    sig::batchnorm_backward_apply
                ),
                nvrtc::elementwise(rows * c),
                gi.f32_mut(),
                &dy,
                input.f32()?,
                &k,
                &slope,
                &offset,
                &cols,
                &total
            );
        }
        Ok(())
    }

    fn layernorm_forward(
        &self,
        out: &mut CudaBuf,
        mean: &mut CudaBuf,
        rstd: &mut CudaBuf,
        input: &CudaBuf,
        gamma: &CudaBuf,
        beta: &CudaBuf,
        s: SampleShape,
        eps: f32,
    ) -> Result<()> {
        checks::layernorm_forward::<Self>(out, mean, rstd, input, gamma, beta, s)?;
        let f = s.features;
        if s.n == 0 {
            return Ok(());
        }
        let fi = int("features", f)?;
        launch!(
            self,
            sig::layernorm_forward,
            nvrtc::per_row(s.n),
            out.f32_mut(),
            mean.f32_mut(),
            rstd.f32_mut(),
            input.f32()?,
            gamma.f32()?,
            beta.f32()?,
            &fi,
            &eps
        );
        Ok(())
    }
    fn layernorm_backward(
        &self,
        grad_input: Option<&mut CudaBuf>,
        grad_gamma: &mut CudaBuf,
        grad_beta: &mut CudaBuf,
        grad_out: &CudaBuf,
        mean: &CudaBuf,
        rstd: &CudaBuf,
        input: &CudaBuf,
        gamma: &CudaBuf,
        s: SampleShape,
    ) -> Result<()> {
        checks::layernorm_backward::<Self>(
            grad_input.as_deref(),
            grad_gamma,
            grad_beta,
            grad_out,
            mean,
            rstd,
            input,
            gamma,
            s,
        )?;
        let f = s.features;
        if s.n == 0 {
            return Ok(());
        }
        let mut guard = self.lock();
        let sc = &mut guard.scratch;
        let p = self.launch_partials(
            sc,
            s.n,
            f,
            PartialInputs::DyXhatRows {
                dy: grad_out,
                x: input,
                mean,
                rstd,
            },
        )?;
        let (parts, cols) = (int("parts", p.parts)?, int("features", f)?);
        launch!(
            self,
            sig::finish_add,
            nvrtc::per_column(f),
            grad_gamma.f32_mut(),
            grad_beta.f32_mut(),
            sc.part_a.as_ref().expect("grown"),
            sc.part_b.as_ref().expect("grown"),
            &parts,
            &cols
        );
        if let Some(gi) = grad_input {
            let (half, dy) = self.grad_values(grad_out)?;
            launch!(
                self,
                either(
                    half,
                    sig::layernorm_backward_input_bf16,
                    sig::layernorm_backward_input
                ),
                nvrtc::per_row(s.n),
                gi.f32_mut(),
                &dy,
                input.f32()?,
                mean.f32()?,
                rstd.f32()?,
                gamma.f32()?,
                &cols
            );
        }
        Ok(())
    }

    fn add_bias_map(
        &self,
        out: &mut CudaBuf,
        pre: &CudaBuf,
        maps: &CudaBuf,
        index: usize,
        s: SampleShape,
    ) -> Result<()> {
        checks::add_bias_map::<Self>(out, pre, maps, index, s)?;
        let (features, total) = (s.features as i64, (s.n * s.features) as i64);
        let map = self.map_ptr(maps, index, s.features)?;
        launch!(
            self,
            sig::add_bias_map,
            nvrtc::elementwise(s.n * s.features),
            out.f32_mut(),
            pre.f32()?,
            &map,
            &features,
            &total
        );
        Ok(())
    }
    fn relu_forward(&self, x: &mut CudaBuf) -> Result<()> {
        let n = x.len() as i64;
        launch!(
            self,
            sig::relu_forward,
            nvrtc::elementwise(x.len()),
            x.f32_mut(),
            &n
        );
        Ok(())
    }
    fn relu_backward(&self, grad: &mut CudaBuf, activation: &CudaBuf) -> Result<()> {
        checks::relu_backward::<Self>(grad, activation)?;
        let n = grad.len() as i64;
        launch!(
            self,
            sig::relu_backward,
            nvrtc::elementwise(grad.len()),
            grad.f32_mut(),
            activation.f32()?,
            &n
        );
        Ok(())
    }
    fn maxpool2_forward(&self, out: &mut CudaBuf, input: &CudaBuf, s: PoolShape) -> Result<()> {
        checks::maxpool2_forward::<Self>(out, input, s)?;
        let (n, h, w, c) = pool_dims(s)?;
        launch!(
            self,
            sig::maxpool2_forward,
            nvrtc::elementwise(out.len()),
            out.f32_mut(),
            input.f32()?,
            &n,
            &h,
            &w,
            &c
        );
        Ok(())
    }
    fn relu_maxpool2_backward(
        &self,
        grad_input: &mut CudaBuf,
        grad_out: &CudaBuf,
        activation: &CudaBuf,
        s: PoolShape,
    ) -> Result<()> {
        checks::relu_maxpool2_backward::<Self>(grad_input, grad_out, activation, s)?;
        let (n, h, w, c) = pool_dims(s)?;
        launch!(
            self,
            sig::relu_maxpool2_backward,
            nvrtc::quads(checks::pool_sizes(s).1, s.c), // a thread per window (quad)
            grad_input.f32_mut(),
            grad_out.f32()?,
            activation.f32()?,
            &n,
            &h,
            &w,
            &c
        );
        Ok(())
    }

    fn goodness_forward(
        &self,
        goodness: &mut CudaBuf,
        input: &CudaBuf,
        s: SampleShape,
    ) -> Result<()> {
        checks::goodness_forward::<Self>(goodness, input, s)?;
        if s.n == 0 {
            return Ok(());
        }
        let f = int("features", s.features)?;
        launch!(
            self,
            sig::goodness_forward,
            nvrtc::per_row(s.n),
            goodness.f32_mut(),
            input.f32()?,
            &f
        );
        Ok(())
    }
    fn goodness_backward(
        &self,
        grad_input: &mut CudaBuf,
        grad_goodness: &CudaBuf,
        input: &CudaBuf,
        s: SampleShape,
    ) -> Result<()> {
        checks::goodness_backward::<Self>(grad_input, grad_goodness, input, s)?;
        let (f, total) = (int("features", s.features)?, (s.n * s.features) as i64);
        launch!(
            self,
            sig::goodness_backward,
            nvrtc::elementwise(s.n * s.features),
            grad_input.f32_mut(),
            grad_goodness.f32()?,
            input.f32()?,
            &f,
            &total
        );
        Ok(())
    }
    fn ff_loss(
        &self,
        loss: &mut CudaBuf,
        grad_goodness: &mut CudaBuf,
        goodness: &CudaBuf,
        pairs: usize,
        kind: FfLoss,
    ) -> Result<()> {
        checks::ff_loss::<Self>(loss, grad_goodness, goodness, pairs)?;
        let (k, param) = match kind {
            FfLoss::Symba { alpha } => (0i32, alpha),
            FfLoss::Threshold { tau } => (1i32, tau),
        };
        let p = int("pairs", pairs)?;
        launch!(
            self,
            sig::ff_loss,
            nvrtc::single_block(),
            loss.f32_mut(),
            grad_goodness.f32_mut(),
            goodness.f32()?,
            &p,
            &k,
            &param
        );
        Ok(())
    }

    fn avgpool_forward(
        &self,
        out: &mut CudaBuf,
        input: &CudaBuf,
        s: ChannelShape,
        n: usize,
    ) -> Result<()> {
        checks::avgpool_forward::<Self>(out, input, s, n)?;
        // `s.rows` counts the rows of all n samples, as on the CPU.
        let pixels = s.rows / n.max(1);
        let (ni, p, c) = (int("n", n)?, int("pixels", pixels)?, int("c", s.channels)?);
        launch!(
            self,
            sig::avgpool_forward,
            nvrtc::elementwise(n * s.channels),
            out.f32_mut(),
            input.f32()?,
            &ni,
            &p,
            &c
        );
        Ok(())
    }
    fn avgpool_backward(
        &self,
        grad_input: &mut CudaBuf,
        grad_out: &CudaBuf,
        s: ChannelShape,
        n: usize,
    ) -> Result<()> {
        checks::avgpool_backward::<Self>(grad_input, grad_out, s, n)?;
        let total = s.rows * s.channels;
        let pixels = s.rows / n.max(1);
        let (p, c, t) = (int("pixels", pixels)?, int("c", s.channels)?, total as i64);
        launch!(
            self,
            sig::avgpool_backward,
            nvrtc::elementwise(total),
            grad_input.f32_mut(),
            grad_out.f32()?,
            &p,
            &c,
            &t
        );
        Ok(())
    }
    fn linear_forward(
        &self,
        out: &mut CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        bias: &CudaBuf,
        n: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<()> {
        checks::linear_forward::<Self>(out, input, weight, bias, (n, inputs, outputs))?;
        if n == 0 || outputs == 0 {
            return Ok(());
        }
        let (o, total) = (int("outputs", outputs)?, (n * outputs) as i64);
        launch!(
            self,
            sig::bias_rows,
            nvrtc::elementwise(n * outputs),
            out.f32_mut(),
            bias.f32()?,
            &o,
            &total
        );
        // Column-major view: out^T (outputs x n) += W (outputs x inputs) . X^T (inputs x n),
        // where the row-major W buffer is W^T column-major.
        let mm = Sgemm {
            trans: (true, false),
            dims: (outputs, n, inputs),
            beta: 1.0,
        };
        self.sgemm("linear_forward (cuBLAS)", mm, weight, input, out)
    }
    fn linear_backward(
        &self,
        grad_input: Option<&mut CudaBuf>,
        grad_weight: &mut CudaBuf,
        grad_bias: &mut CudaBuf,
        grad_out: &CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        n: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<()> {
        checks::linear_backward::<Self>(
            grad_input.as_deref(),
            grad_weight,
            grad_bias,
            grad_out,
            input,
            weight,
            (n, inputs, outputs),
        )?;
        if n == 0 || outputs == 0 {
            return Ok(());
        }
        let oi = int("outputs", outputs)?;
        {
            let mut guard = self.lock();
            let sc = &mut guard.scratch;
            let p = self.launch_partials(sc, n, outputs, PartialInputs::Sum(grad_out))?;
            let parts = int("parts", p.parts)?;
            let none = 0u64;
            launch!(
                self,
                sig::finish_add,
                nvrtc::per_column(outputs),
                grad_bias.f32_mut(),
                &none,
                sc.part_a.as_ref().expect("grown"),
                sc.part_b.as_ref().expect("grown"),
                &parts,
                &oi
            );
        }
        // dW^T (inputs x outputs, column-major) += X^T (inputs x n) . dY (n x outputs).
        let mm = Sgemm {
            trans: (false, true),
            dims: (inputs, outputs, n),
            beta: 1.0,
        };
        self.sgemm(
            "linear_backward weight (cuBLAS)",
            mm,
            input,
            grad_out,
            grad_weight,
        )?;
        if let Some(gi) = grad_input {
            // dX^T (inputs x n) = W^T (inputs x outputs) . dY^T (outputs x n).
            let mm = Sgemm {
                trans: (false, false),
                dims: (inputs, n, outputs),
                beta: 0.0,
            };
            self.sgemm("linear_backward input (cuBLAS)", mm, weight, grad_out, gi)?;
        }
        Ok(())
    }
    fn cross_entropy(
        &self,
        loss: &mut CudaBuf,
        grad_logits: &mut CudaBuf,
        logits: &CudaBuf,
        labels: &[u32],
        classes: usize,
    ) -> Result<()> {
        checks::cross_entropy::<Self>(loss, grad_logits, logits, labels, classes)?;
        let n = labels.len();
        let mut state = self.lock();
        let l = self.upload_labels(&mut state.scratch, labels)?;
        let (ni, k) = (int("n", n)?, int("classes", classes)?);
        launch!(
            self,
            sig::cross_entropy,
            nvrtc::single_block(),
            loss.f32_mut(),
            grad_logits.f32_mut(),
            logits.f32()?,
            &*l,
            &ni,
            &k
        );
        Ok(())
    }

    fn adam_step(
        &self,
        param: &mut CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        grad: &CudaBuf,
        step: u64,
        hp: AdamParams,
    ) -> Result<()> {
        let mut one = [AdamTensor { param, m, v, grad }];
        self.adam_step_many(&mut one, step, hp)
    }

    fn adam_step_many(
        &self,
        tensors: &mut [AdamTensor<'_, Self>],
        step: u64,
        hp: AdamParams,
    ) -> Result<()> {
        checks::adam_step_many::<Self>(tensors)?;
        let (step_size, bias2_sqrt) = hp.step_factors(step);
        for chunk in tensors.chunks_mut(MANY) {
            let mut args = AdamManyArgs::default();
            // In bf16 the new weights' bf16 copy is written beside them, for the convolutions.
            for (k, t) in chunk.iter_mut().enumerate() {
                args.n[k] = t.param.len() as i64;
                args.grad[k] = self.ptr(t.grad.f32()?);
                args.m[k] = self.ptr(t.m.f32_mut());
                args.v[k] = self.ptr(t.v.f32_mut());
                let (param, half) = self.with_half_copy(t.param)?;
                args.param[k] = self.ptr(param);
                args.param_half[k] = half;
            }
            // A thread per quad.
            let (cfg, count) = nvrtc::per_buffer(chunk.iter().map(|t| t.param.len().div_ceil(4)));
            launch!(
                self,
                sig::adam_step_many,
                cfg,
                &args,
                &count,
                &hp.beta1,
                &hp.beta2,
                &hp.eps,
                &step_size,
                &bias2_sqrt
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::label_groups;

    #[test]
    fn label_groups_list_each_labels_samples_in_order() {
        // Offsets for 4 classes (label 2 has none), then the samples by label.
        assert_eq!(
            label_groups(&[3, 0, 1, 0, 3, 3], 4),
            [0, 2, 3, 3, 6, 1, 3, 2, 0, 4, 5]
        );
        assert_eq!(label_groups(&[], 2), [0, 0, 0]);
    }
}
