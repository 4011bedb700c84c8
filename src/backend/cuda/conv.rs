//! The convolutions' plumbing around cuDNN: plans per shape, the bf16 copies of operands and
//! results (tensor-core math reads and writes bf16, the rest of the backend f32), the
//! zero-padding of few-channel inputs, and cuBLAS's sgemm for the baselines' linear layers.
//! The ops themselves (`conv3x3_*` and the fused block ops) are in `ops`; this module must
//! not queue work other than what one convolution (or gemm) needs.

use cudarc::cublas::{Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::CudaSlice;

use super::dnn::{ConvMath, ConvPlan};
use super::{Cuda, CudaBuf, Scratch, State, check, grow, int, nvrtc, sig};
use crate::backend::{ConvShape, Precision, checks};
use crate::error::Result;

/// Where a bf16 convolution's output goes (`Cuda::conv_forward`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HalfOut {
    /// Into the output's bf16 copy, then widened into its f32 data (so the output leaves
    /// with a fresh copy, the very values its f32 data holds; unfused: through slot 2, no
    /// copy).
    Widened,
    /// Into the scratch slot 2 (the output untouched), for a kernel that reads bf16.
    Scratch,
    /// To this address (fused only; unfused as `Scratch`).
    At(u64),
}

/// bf16 convolutions run with their input channels padded with zeros to a multiple of this
/// (see `Cuda::padded_shape`): 16 bytes of bf16 per pixel.
pub(super) const PAD_CHANNELS: usize = 8;

/// The shape of one [`Cuda::sgemm`]: (transpose a, transpose b), (m, n, k), beta.
#[derive(Clone, Copy)]
pub(super) struct Sgemm {
    pub(super) trans: (bool, bool),
    pub(super) dims: (usize, usize, usize),
    pub(super) beta: f32,
}

impl Cuda {
    /// Creates the plan of convolution shape `s` on first use. Also makes the context
    /// current on this thread, as cuDNN calls need.
    pub(super) fn plan(&self, state: &mut State, s: ConvShape) -> Result<()> {
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|x| self.err("binding the CUDA context", x))?;
        let math = match self.precision {
            Precision::F32 => ConvMath::F32,
            Precision::Bf16 => ConvMath::Bf16,
        };
        if !state.plans.contains_key(&s) {
            let plan = ConvPlan::new(
                &state.dnn,
                s,
                math,
                self.deterministic,
                self.cudnn_benchmark,
            )
            .map_err(|x| self.err("cuDNN plan", x))?;
            grow(&self.stream, &mut state.scratch.workspace, plan.workspace)
                .map_err(|x| self.err("cuDNN workspace", x))?;
            state.plans.insert(s, plan);
        }
        Ok(())
    }

    /// Converts `len` floats of `x` into the bf16 scratch slot `slot`.
    pub(super) fn f32_to_half(
        &self,
        scratch: &mut Scratch,
        slot: usize,
        x: &CudaBuf,
        len: usize,
    ) -> Result<()> {
        let h = grow(&self.stream, &mut scratch.half[slot], len)
            .map_err(|e| self.err("allocation", e))?;
        let n = len as i64;
        // Both buffers hold at least `len` elements.
        launch!(
            self,
            sig::f32_to_bf16,
            nvrtc::elementwise(len),
            h,
            x.f32()?,
            &n
        );
        Ok(())
    }

    /// `out`'s f32 data to write, and the address of its bf16 copy for the same kernel to
    /// write alongside in bf16 precision (0, i.e. none, in f32).
    pub(super) fn with_half_copy<'a>(
        &self,
        out: &'a mut CudaBuf,
    ) -> Result<(&'a mut CudaSlice<f32>, u64)> {
        if self.precision == Precision::F32 || !self.fused {
            return Ok((out.f32_mut(), 0));
        }
        let (data, half) = out
            .f32_and_half_mut(&self.stream)
            .map_err(|e| self.err("allocation", e))?;
        Ok((data, self.ptr(half)))
    }

    /// A gradient's values to read: its f32 data, or, where only its bf16 copy holds them (a
    /// bf16 convolution's input gradient, which only a norm's backward reads), that copy.
    /// True for the copy: the `_bf16` form of the kernel reads it.
    pub(super) fn grad_values(&self, dy: &CudaBuf) -> Result<(bool, u64)> {
        match (dy.f32(), dy.fresh_half()) {
            (Ok(data), _) => Ok((false, self.ptr(data))),
            (Err(_), Some(half)) => Ok((true, self.ptr(half))),
            (Err(stale), None) => Err(stale.into()),
        }
    }

    /// Where BatchNorm writes its output, which only a convolution reads next: in bf16 (fused)
    /// the bf16 copy alone, the f32 data left stale (its f32 write would be read by no one);
    /// else the f32 data. The addresses of the f32 data and of the copy, 0 for the one not
    /// written.
    pub(super) fn conv_operand_out(&self, out: &mut CudaBuf) -> Result<(u64, u64)> {
        if self.precision == Precision::F32 || !self.fused {
            return Ok((self.ptr(out.f32_mut()), 0));
        }
        let half = out
            .half_only_mut(&self.stream)
            .map_err(|e| self.err("allocation", e))?;
        Ok((0, self.ptr(half)))
    }

    /// The address of `x`'s bf16 form: its own fresh copy if it has one, else a conversion
    /// into the scratch slot `slot`.
    pub(super) fn half_of(&self, scratch: &mut Scratch, slot: usize, x: &CudaBuf) -> Result<u64> {
        match x.fresh_half() {
            Some(h) => Ok(self.ptr(h)),
            None => {
                self.f32_to_half(scratch, slot, x, x.len())?;
                Ok(self.raw(&scratch.half[slot]))
            }
        }
    }

    /// out (f32) = or += the bf16 values of `half`.
    pub(super) fn half_to_f32(
        &self,
        out: &mut CudaBuf,
        half: &CudaSlice<u16>,
        accumulate: bool,
    ) -> Result<()> {
        let len = out.len();
        self.widen(out.f32_mut(), half, len, accumulate)
    }

    /// The first `len` elements of `out` = or += those of `half`.
    pub(super) fn widen(
        &self,
        out: &mut CudaSlice<f32>,
        half: &CudaSlice<u16>,
        len: usize,
        accumulate: bool,
    ) -> Result<()> {
        let n = len as i64;
        let acc = accumulate as i32;
        // Both hold at least `len` elements (sized by the same shape).
        launch!(
            self,
            sig::bf16_to_f32,
            nvrtc::elementwise(len),
            out,
            half,
            &n,
            &acc
        );
        Ok(())
    }

    /// The shape cuDNN runs for convolution `s`: in bf16, with padding on, input channels
    /// that are not a multiple of [`PAD_CHANNELS`] are padded with zeros up to one (the same
    /// convolution; cuDNN's NHWC tensor-core kernels want it). None: `s` as it is.
    pub(super) fn padded_shape(&self, s: ConvShape) -> Option<ConvShape> {
        let pad = self.precision == Precision::Bf16
            && self.pad_channels
            && !s.c_in.is_multiple_of(PAD_CHANNELS);
        pad.then(|| ConvShape {
            c_in: s.c_in.next_multiple_of(PAD_CHANNELS),
            ..s
        })
    }

    /// Grows the padded scratch for convolution `s` padded to `p` and pads its bf16 input
    /// (at `x`) and weights (at `w`) into it; returns the padded copies' addresses.
    pub(super) fn pad_operands(
        &self,
        sc: &mut Scratch,
        s: ConvShape,
        p: ConvShape,
        x: u64,
        w: u64,
        grad: bool,
    ) -> Result<(u64, u64)> {
        let (pixels, taps) = (s.n * s.h * s.w, s.c_out * 9);
        let [px, pw, pg] = &mut sc.padded;
        let alloc = |e| self.err("allocation", e);
        let px = self.ptr(grow(&self.stream, px, pixels * p.c_in).map_err(alloc)?);
        let pw = self.ptr(grow(&self.stream, pw, taps * p.c_in).map_err(alloc)?);
        if grad {
            grow(&self.stream, pg, pixels.max(taps) * p.c_in).map_err(alloc)?;
        }
        self.repad(px, x, pixels, s.c_in, p.c_in)?;
        self.repad(pw, w, taps, s.c_in, p.c_in)?;
        Ok((px, pw))
    }

    /// `repad_channels_bf16`: rows of `from` channels at `src` into rows of `to` at `dst`
    /// (zero channels added, or the first `to` kept).
    pub(super) fn repad(
        &self,
        dst: u64,
        src: u64,
        rows: usize,
        from: usize,
        to: usize,
    ) -> Result<()> {
        let (rows_i, from_i, to_i) = (rows as i64, int("channels", from)?, int("channels", to)?);
        let unit = if from.is_multiple_of(4) { to } else { 1 };
        let cfg = nvrtc::quads(rows * to, unit);
        launch!(
            self,
            sig::repad_channels_bf16,
            cfg,
            &dst,
            &src,
            &rows_i,
            &from_i,
            &to_i
        );
        Ok(())
    }

    /// out = conv(input, weight) through cuDNN. In bf16 the operands' bf16 forms are read
    /// (their own fresh copies, else conversions into the scratch slots 0 and 1); the result
    /// goes where `dest` says (in f32 always into `out`).
    pub(super) fn conv_forward(
        &self,
        state: &mut State,
        out: &mut CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
        dest: HalfOut,
    ) -> Result<()> {
        let keep_half = dest != HalfOut::Widened;
        let ny = checks::conv_sizes(s).2;
        let padded = self.padded_shape(s);
        let run = padded.unwrap_or(s);
        self.plan(state, run)?;
        let half = self.precision == Precision::Bf16;
        let (x, w, y) = if half {
            let sc = &mut state.scratch;
            let mut x = self.half_of(sc, 0, input)?;
            let mut w = self.half_of(sc, 1, weight)?;
            if let Some(p) = padded {
                (x, w) = self.pad_operands(sc, s, p, x, w, false)?;
            }
            let y = match dest {
                HalfOut::At(at) if self.fused => at,
                HalfOut::Widened if self.fused => self.ptr(
                    out.f32_and_half_mut(&self.stream)
                        .map_err(|e| self.err("allocation", e))?
                        .1,
                ),
                _ => self.ptr(
                    grow(&self.stream, &mut sc.half[2], ny)
                        .map_err(|e| self.err("allocation", e))?,
                ),
            };
            (x, w, y)
        } else {
            (
                self.ptr(input.f32()?),
                self.ptr(weight.f32()?),
                self.ptr(out.f32_mut()),
            )
        };
        let sc = &state.scratch;
        let ws = self.raw(&sc.workspace);
        // SAFETY: the buffers (or their bf16 copies, or padded copies) were checked against
        // the plan's shape.
        let plan = &state.plans[&run];
        self.timed(plan.labels[0], || {
            unsafe { plan.forward(&state.dnn, x, w, y, ws) }
                .map_err(|e| self.err("conv3x3_forward", e))
        })?;
        if half && !keep_half && self.fused {
            let (data, copy) = out
                .f32_and_half_mut(&self.stream)
                .map_err(|e| self.err("allocation", e))?;
            self.widen(data, copy, ny, false)?;
        } else if half && !keep_half {
            self.half_to_f32(out, sc.half[2].as_ref().expect("grown"), false)?;
        }
        Ok(())
    }

    /// The convolution's weight gradient (accumulated) and input gradient (assigned) through
    /// cuDNN. `grad_out` None: in bf16, d(output) is already in the scratch slot 2. In fused
    /// bf16 the input gradient is kept as bf16 values alone (`grad_values` reads it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_backward(
        &self,
        state: &mut State,
        grad_input: Option<&mut CudaBuf>,
        grad_weight: &mut CudaBuf,
        grad_out: Option<&CudaBuf>,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
    ) -> Result<()> {
        let (nx, nw, ny) = checks::conv_sizes(s);
        let padded = self.padded_shape(s);
        let run = padded.unwrap_or(s);
        self.plan(state, run)?;
        let half = self.precision == Precision::Bf16;
        let (x, w, dy) = match (half, grad_out) {
            (true, grad_out) => {
                // bf16 forms of x, w and dy; dw is computed into `half_dw` in bf16 and added
                // to the f32 gradient; dx stays bf16 (fused) or goes the same way (unfused).
                // Padded (`padded_shape`), cuDNN reads padded copies of x and w and writes
                // each gradient padded into `padded[2]`, unpadded from there.
                let sc = &mut state.scratch;
                let mut x = self.half_of(sc, 0, input)?;
                let mut w = self.half_of(sc, 1, weight)?;
                if let Some(p) = padded {
                    (x, w) = self.pad_operands(sc, s, p, x, w, true)?;
                }
                if let Some(grad_out) = grad_out {
                    self.f32_to_half(sc, 2, grad_out, ny)?;
                }
                grow(&self.stream, &mut sc.half_dw, nw.max(nx))
                    .map_err(|e| self.err("allocation", e))?;
                (x, w, self.raw(&sc.half[2]))
            }
            (false, Some(grad_out)) => (
                self.ptr(input.f32()?),
                self.ptr(weight.f32()?),
                self.ptr(grad_out.f32()?),
            ),
            (false, None) => unreachable!("d(output) comes in bf16 only in bf16"),
        };
        let sc = &state.scratch;
        let plan = &state.plans[&run];
        let ws = self.raw(&sc.workspace);
        let half_out = sc.half_dw.as_ref();
        // Where cuDNN writes a padded gradient, and its rows (pixels, or the weights' taps).
        let unpad = padded.map(|p| (self.raw(&sc.padded[2]), p.c_in));
        let (pixels, taps) = (s.n * s.h * s.w, s.c_out * 9);
        // f32 accumulates straight into the gradient (beta 1); bf16 assigns its scratch.
        let (dw, beta) = match half_out {
            Some(h) if half => (self.ptr(h), 0.0),
            _ => (self.ptr(grad_weight.f32_mut()), 1.0),
        };
        // SAFETY: the buffers (or their bf16 copies, or padded copies) were checked against
        // the plan's shape; `half_dw` holds at least max(nw, nx) elements, `padded[2]` at
        // least max(pixels, taps) x the padded channels.
        self.timed(plan.labels[2], || {
            let out = unpad.map_or(dw, |(at, _)| at);
            unsafe { plan.backward_filter(&state.dnn, x, dy, out, beta, ws) }
                .map_err(|e| self.err("conv3x3_backward (filter)", e))
        })?;
        if let Some((at, cp)) = unpad {
            self.repad(dw, at, taps, cp, s.c_in)?;
        }
        if half {
            self.half_to_f32(grad_weight, half_out.expect("grown"), true)?;
        }
        if let Some(gi) = grad_input {
            // Fused bf16: dx stays bf16, in `gi`'s copy alone (a norm's backward reads it
            // there); unfused: through the scratch into the f32 data.
            let alone = half && self.fused;
            let dx = match half_out {
                Some(_) if alone => self.ptr(
                    gi.half_only_mut(&self.stream)
                        .map_err(|e| self.err("allocation", e))?,
                ),
                Some(h) if half => self.ptr(h),
                _ => self.ptr(gi.f32_mut()),
            };
            // SAFETY: as above (`gi`'s copy holds as many elements as its data).
            self.timed(plan.labels[1], || {
                let out = unpad.map_or(dx, |(at, _)| at);
                unsafe { plan.backward_data(&state.dnn, w, dy, out, ws) }
                    .map_err(|e| self.err("conv3x3_backward (data)", e))
            })?;
            if let Some((at, cp)) = unpad {
                self.repad(dx, at, pixels, cp, s.c_in)?;
            }
            if half && !alone {
                self.half_to_f32(gi, half_out.expect("grown"), false)?;
            }
        }
        Ok(())
    }

    /// c = op(a) . op(b) + beta c through cuBLAS in f32, every matrix column-major and packed
    /// (leading dimension = rows as stored). `what` names the call in errors and the profile.
    pub(super) fn sgemm(
        &self,
        what: &'static str,
        mm: Sgemm,
        a: &CudaBuf,
        b: &CudaBuf,
        c: &mut CudaBuf,
    ) -> Result<()> {
        let (m, n, k) = mm.dims;
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let cfg = GemmConfig {
            transa: op(mm.trans.0),
            transb: op(mm.trans.1),
            m: int("m", m)?,
            n: int("n", n)?,
            k: int("k", k)?,
            alpha: 1.0f32,
            lda: int("lda", if mm.trans.0 { k } else { m })?,
            ldb: int("ldb", if mm.trans.1 { n } else { k })?,
            beta: mm.beta,
            ldc: int("ldc", m)?,
        };
        check(what, a, m * k)?;
        check(what, b, k * n)?;
        check(what, c, m * n)?;
        // SAFETY: each buffer holds its packed matrix (checked just above).
        self.timed("cublas sgemm", || {
            unsafe { self.blas.gemm(cfg, a.f32()?, b.f32()?, c.f32_mut()) }
                .map_err(|e| self.err(what, e))
        })
    }
}
