//! The CUDA backend: the same kernels as the CPU backend, on one NVIDIA GPU.
//!
//! - Convolutions go through cuDNN (NHWC tensors, KRSC = OHWI filters), with deterministic
//!   backward algorithms ([`dnn`]). In [`Precision::Bf16`] they run on tensor cores from bf16
//!   copies of their operands, accumulating in f32; everything else stays f32.
//! - The linear layers of the baselines go through cuBLAS (f32).
//! - Everything else is our own CUDA C ([`nvrtc::SOURCE`]), compiled at start-up by NVRTC for
//!   the device's architecture. Reductions are deterministic (fixed partitions, double sums).
//! - All work is queued on one stream; nothing waits for the GPU except `download`.
//!
//! The libraries (driver, NVRTC, cuBLAS, cuDNN) are loaded at run time: this module builds on a
//! machine without CUDA, and [`Cuda::new`] reports a missing library as a typed error.

mod buf;
pub mod dnn;
pub mod libs;
pub mod nvrtc;
mod sig;

pub use buf::CudaBuf;

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    PinnedHostSlice, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{
    AdamParams, AdamTensor, Backend, ChannelShape, ConvShape, EmbedShape, FfLoss, GpuOptions,
    NextNorm, PoolShape, Precision, SampleShape, check_copy, check_len, checks,
};
use crate::error::{Error, Result};
use dnn::{ConvMath, ConvPlan, Dnn};

/// Launches `$kernel` (a [`sig::Kernel`]) with `$cfg` and the given arguments, which the
/// compiler checks against the kernel's parameters; maps errors to `Error::Device`.
/// `either(cond, a, b)` launches `a` where `cond` holds, else `b`, with the same arguments
/// (kernels whose parameters differ only where raw addresses are passed).
macro_rules! launch {
    ($self:ident, either($cond:expr, $a:expr, $b:expr), $cfg:expr, $($arg:expr),+ $(,)?) => {
        if $cond {
            launch!($self, $a, $cfg, $($arg),+)
        } else {
            launch!($self, $b, $cfg, $($arg),+)
        }
    };
    ($self:ident, $kernel:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let (kernel, cfg) = ($kernel, $cfg);
        let name: &'static str = kernel.name;
        let mut l = $self.stream.launch_builder($self.f(name));
        kernel.push(&mut l, ($($arg,)+));
        // SAFETY: the arguments fit the kernel's parameters in kernels.cu, in order and type
        // (`sig`), and every buffer was checked against the shape that sizes the launch.
        $self.timed(name, || unsafe { l.launch(cfg) }.map_err(|e| $self.err(name, e)))?;
    }};
}

/// Growable device scratch space, guarded by the backend's lock.
#[derive(Default)]
struct Scratch {
    part_a: Option<CudaSlice<f64>>,
    part_b: Option<CudaSlice<f64>>,
    coef: Option<CudaSlice<f32>>,
    labels: Option<CudaSlice<u32>>,
    workspace: Option<CudaSlice<u8>>,
    /// bf16 copies: [x, w, y] of the convolution in flight.
    half: [Option<CudaSlice<u16>>; 3],
    /// bf16 weight gradient before it is added to the f32 one.
    half_dw: Option<CudaSlice<u16>>,
    /// Zero-padded bf16 operands of a convolution with few input channels
    /// (`Cuda::padded_shape`): [x, w, and a gradient (dw or dx) before it is unpadded].
    padded: [Option<CudaSlice<u16>>; 3],
    /// Page-locked host memory that large uploads go through, two buffers used in turn.
    staging: [Option<Staging>; 2],
    next_staging: usize,
}

/// Uploads of at least this many floats go through page-locked staging memory.
const STAGED_UPLOAD: usize = 1 << 16;

/// Where a bf16 convolution's output goes (`Cuda::conv_forward`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HalfOut {
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
const PAD_CHANNELS: usize = 8;

/// A page-locked upload buffer, the device buffer its data lands in (on the copy stream),
/// and the events that order the two streams around them.
struct Staging {
    host: PinnedHostSlice<f32>,
    landing: CudaSlice<f32>,
    /// On the copy stream, after the last copy out of `host` into `landing`.
    copied: Option<CudaEvent>,
    /// On the compute stream, after `landing` was allocated or last copied out of.
    free: CudaEvent,
}

impl Drop for Staging {
    /// The memory goes back only once the GPU has copied out of it (`landing` is freed in
    /// the compute stream's order, behind its copy out).
    fn drop(&mut self) {
        if let Some(copied) = &self.copied {
            let _ = copied.synchronize();
        }
    }
}

struct State {
    dnn: Dnn,
    plans: HashMap<ConvShape, ConvPlan>,
    scratch: Scratch,
}

/// The inputs of the per-column partial-sum kernels.
enum PartialInputs<'a> {
    /// sum x.
    Sum(&'a CudaBuf),
    /// sum (x - k) and sum (x - k)^2, k the column's value in row 0 (kernels.cu's
    /// `MomentsItem`).
    Moments(&'a CudaBuf),
    /// sum dy and sum dy * x.
    DyDyx(&'a CudaBuf, &'a CudaBuf),
    /// sum dy * xhat and sum dy, with per-row statistics.
    DyXhatRows {
        dy: &'a CudaBuf,
        x: &'a CudaBuf,
        mean: &'a CudaBuf,
        rstd: &'a CudaBuf,
    },
}

/// One GPU, one stream.
pub struct Cuda {
    ordinal: usize,
    device_name: String,
    stream: Arc<CudaStream>,
    /// Uploads from page-locked memory, beside the compute stream's work (`upload_staged`).
    copy_stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    blas: CudaBlas,
    precision: Precision,
    /// See [`GpuOptions`].
    fused: bool,
    deterministic: bool,
    pad_channels: bool,
    cudnn_benchmark: bool,
    sms: usize,
    state: Mutex<State>,
    profile: GpuProfile,
}

/// `bench --profile` on the GPU: a pair of timing events around every kernel and library
/// call, read (which waits for the GPU) only when the profile is asked for.
#[derive(Default)]
struct GpuProfile {
    totals: crate::profile::Profile,
    /// (scope, kernel, start, end), read by `profile`.
    pending: Mutex<Vec<(&'static str, &'static str, CudaEvent, CudaEvent)>>,
}

fn err(ordinal: usize, what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Device {
        device: format!("cuda:{ordinal}"),
        msg: format!("{what}: {e:?}"),
    }
}

/// A size as the `int` the kernels take.
fn int(what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Shape {
        op: what,
        expected: vec![i32::MAX as usize],
        got: vec![v],
    })
}

/// Grows `slot` to at least `len` elements (contents undefined) and returns it.
fn grow<'a, T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    slot: &'a mut Option<CudaSlice<T>>,
    len: usize,
) -> std::result::Result<&'a mut CudaSlice<T>, cudarc::driver::DriverError> {
    let len = len.max(1);
    if slot.as_ref().is_none_or(|s| s.len() < len) {
        *slot = None; // free before allocating the bigger one
        *slot = Some(stream.alloc_zeros::<T>(len)?);
    }
    Ok(slot.as_mut().expect("just filled"))
}

/// Buffers are allocated and freed in stream order (cudarc uses `cuMemAllocAsync` where the
/// device has memory pools), and a pool by default hands its free memory back to the system
/// at every synchronisation, i.e. once a step (the metrics' download). The buffers that
/// blocks of different sizes share (`Tensor::resize`) are freed and allocated again every
/// step, so each step would map them afresh. With no release threshold the pool keeps what
/// it has, as PyTorch's caching allocator does; the peak is what the step itself needs.
fn keep_freed_memory(ctx: &CudaContext) -> std::result::Result<(), cudarc::driver::DriverError> {
    use cudarc::driver::{result, sys};
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    let mut threshold = u64::MAX;
    // SAFETY: the context's own device; the release threshold is a cuuint64_t.
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device())?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
}

impl Cuda {
    /// Opens GPU `ordinal` with the default options for `precision`.
    pub fn new(ordinal: usize, precision: Precision) -> Result<Cuda> {
        Cuda::with_options(ordinal, GpuOptions::new(precision))
    }

    /// Opens GPU `ordinal`: loads the CUDA libraries, compiles the kernels, creates the
    /// cuBLAS and cuDNN handles.
    pub fn with_options(ordinal: usize, options: GpuOptions) -> Result<Cuda> {
        let precision = options.precision;
        let e = |what: &str, x: &dyn std::fmt::Debug| err(ordinal, what, x);
        let plain = |msg: String| Error::Device {
            device: format!("cuda:{ordinal}"),
            msg,
        };
        // Libraries the loader cannot find by name are looked for where PyTorch users have
        // them (pip's nvidia-* packages), the toolkit and the driver's folders.
        libs::preload();
        let count = load_library("the CUDA driver library (libcuda.so)", || {
            CudaContext::device_count().map_err(|x| format!("{x:?}"))
        })
        .map_err(plain)?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::Device {
                device: format!("cuda:{ordinal}"),
                msg: format!("this machine has {count} CUDA device(s)"),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|x| e("context", &x))?;
        // The compute stream does all the work but the uploads' first copy (on `copy_stream`,
        // ordered by hand), so cudarc's cross-stream event tracking is not needed.
        // SAFETY: the one buffer another stream touches (an upload's landing buffer, written
        // by the copy stream) is ordered by events of its own (`upload_staged`).
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own (not the legacy default stream), so that a step can later be
        // captured as a CUDA graph.
        let stream = ctx.new_stream().map_err(|x| e("stream", &x))?;
        // Only a matter of speed: where the driver refuses, the pool keeps its default.
        let _ = keep_freed_memory(&ctx);
        let copy_stream = ctx.new_stream().map_err(|x| e("copy stream", &x))?;
        let device_name = ctx.name().map_err(|x| e("device name", &x))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|x| e("compute capability", &x))?;
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(|x| e("multiprocessor count", &x))? as usize;
        let nvrtc_error = |x| plain(format!("compiling the kernels with NVRTC: {x}"));
        let compiled = load_library("NVRTC (libnvrtc.so)", || nvrtc::compile(major, minor))
            .map_err(nvrtc_error)?;
        let module = match ctx.load_module(compiled.image) {
            Ok(module) => module,
            // A cached cubin the driver refuses (a new driver, say) is compiled afresh.
            Err(_) if compiled.from_disk => {
                let image = load_library("NVRTC (libnvrtc.so)", || nvrtc::recompile(major, minor))
                    .map_err(nvrtc_error)?;
                ctx.load_module(image)
                    .map_err(|x| e("loading the kernels", &x))?
            }
            Err(x) => return Err(e("loading the kernels", &x)),
        };
        let mut functions = HashMap::new();
        for name in nvrtc::KERNELS {
            let f = module
                .load_function(name)
                .map_err(|x| e(&format!("kernel {name}"), &x))?;
            functions.insert(*name, f);
        }
        let blas = load_library("cuBLAS (libcublas.so)", || {
            CudaBlas::new(stream.clone()).map_err(|x| format!("{x:?}"))
        })
        .map_err(plain)?;
        let dnn = load_library("cuDNN (libcudnn.so)", || Dnn::new(&stream)).map_err(plain)?;
        // e.g. 91002 = 9.10.2
        let v = cudarc::cudnn::result::get_version();
        let device_name = format!(
            "{device_name}, sm_{major}{minor}, cuDNN {}.{}.{}",
            v / 10000,
            v / 100 % 100,
            v % 100
        );
        Ok(Cuda {
            ordinal,
            device_name,
            stream,
            copy_stream,
            functions,
            blas,
            precision,
            fused: options.fused,
            deterministic: options.deterministic,
            pad_channels: options.pad_channels,
            cudnn_benchmark: options.cudnn_benchmark,
            sms,
            state: Mutex::new(State {
                dnn,
                plans: HashMap::new(),
                scratch: Scratch::default(),
            }),
            profile: GpuProfile::default(),
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn err(&self, what: &str, e: impl std::fmt::Debug) -> Error {
        err(self.ordinal, what, e)
    }

    fn f(&self, name: &'static str) -> &CudaFunction {
        &self.functions[name]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves only scratch space behind: carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A timing event recorded on the stream now.
    fn event(&self) -> Result<CudaEvent> {
        self.stream
            .record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|x| self.err("profile event", x))
    }

    /// Runs `f`, which queues GPU work named `name`, between two timing events when the
    /// profile is on.
    fn timed<R>(&self, name: &'static str, f: impl FnOnce() -> Result<R>) -> Result<R> {
        if !self.profile.totals.enabled() {
            return f();
        }
        let start = self.event()?;
        let out = f()?;
        let end = self.event()?;
        let mut pending = self
            .profile
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.push((self.profile.totals.scope(), name, start, end));
        Ok(out)
    }

    fn alloc(&self, len: usize) -> Result<CudaBuf> {
        let data = self
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(|x| self.err("allocation", x))?;
        Ok(CudaBuf::new(data, len))
    }

    /// Uploads labels into the scratch label buffer.
    fn upload_labels<'a>(
        &self,
        scratch: &'a mut Scratch,
        labels: &[u32],
    ) -> Result<&'a mut CudaSlice<u32>> {
        let buf = grow(&self.stream, &mut scratch.labels, labels.len())
            .map_err(|x| self.err("allocation", x))?;
        if !labels.is_empty() {
            self.stream
                .memcpy_htod(labels, &mut buf.slice_mut(0..labels.len()))
                .map_err(|x| self.err("label upload", x))?;
        }
        Ok(buf)
    }

    /// Creates the plan of convolution shape `s` on first use. Also makes the context
    /// current on this thread, as cuDNN calls need.
    fn plan(&self, state: &mut State, s: ConvShape) -> Result<()> {
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

    /// Per-column partial sums into the scratch partials; returns the partition.
    fn launch_partials(
        &self,
        scratch: &mut Scratch,
        rows: usize,
        cols: usize,
        inputs: PartialInputs,
    ) -> Result<nvrtc::Partials> {
        // Every BatchNorm row is alike (column statistics), so narrow ones fold; LayerNorm's
        // per-row statistics need the true row index.
        let p = match inputs {
            PartialInputs::DyXhatRows { .. } => nvrtc::partials(rows, cols, self.sms),
            _ => nvrtc::folded_partials(rows, cols, self.sms),
        };
        let a = grow(&self.stream, &mut scratch.part_a, p.parts * cols)
            .map_err(|x| self.err("allocation", x))?;
        let b = grow(&self.stream, &mut scratch.part_b, p.parts * cols)
            .map_err(|x| self.err("allocation", x))?;
        let (rows_i, cols_i) = (p.rows as i64, int("columns", p.cols)?);
        let (period, chunk) = (int("columns", cols)?, p.chunk as i64);
        let (cfg, moments) = (p.config(), matches!(inputs, PartialInputs::Moments(_)));
        // SAFETY (of each launch): the buffers hold rows x cols elements (checked by the
        // callers) and parts x cols partials. A gradient may be held as bf16 values alone
        // (`grad_values`): the `_bf16` kernels.
        match inputs {
            PartialInputs::Sum(x) | PartialInputs::Moments(x) => {
                let kernel = if moments {
                    sig::partial_moments
                } else {
                    sig::partial_sum
                };
                launch!(
                    self,
                    kernel,
                    cfg,
                    a,
                    b,
                    x.f32()?,
                    &rows_i,
                    &cols_i,
                    &period,
                    &chunk
                );
            }
            PartialInputs::DyDyx(dy, x) => {
                let (half, dy) = self.grad_values(dy)?;
                launch!(
                    self,
                    either(half, sig::partial_dy_dyx_bf16, sig::partial_dy_dyx),
                    cfg,
                    a,
                    b,
                    &dy,
                    x.f32()?,
                    &rows_i,
                    &cols_i,
                    &period,
                    &chunk
                );
            }
            PartialInputs::DyXhatRows { dy, x, mean, rstd } => {
                let (half, dy) = self.grad_values(dy)?;
                launch!(
                    self,
                    either(
                        half,
                        sig::partial_dy_xhat_rows_bf16,
                        sig::partial_dy_xhat_rows
                    ),
                    cfg,
                    a,
                    b,
                    &dy,
                    x.f32()?,
                    mean.f32()?,
                    rstd.f32()?,
                    &rows_i,
                    &cols_i,
                    &period,
                    &chunk
                );
            }
        }
        Ok(p)
    }

    /// The device address of a buffer, for cuDNN. cudarc's guard that comes with it only
    /// records events, which this backend turned off (its streams are ordered by hand).
    fn ptr<T>(&self, buf: &CudaSlice<T>) -> u64 {
        buf.device_ptr(&self.stream).0
    }

    /// Launches an evaluation tail kernel (`from`: whether the values it reads are bf16, and
    /// their address) with the bias map at `bias` (0: none) and the next block's BatchNorm, if
    /// any, into `next.out` (with its bf16 copy in bf16).
    #[allow(clippy::too_many_arguments)]
    fn eval_tail(
        &self,
        from: (bool, u64),
        bias: u64,
        activation: &mut CudaBuf,
        pooled: Option<&mut CudaBuf>,
        goodness: &mut CudaBuf,
        s: ConvShape,
        next: Option<NextNorm<'_, Self>>,
    ) -> Result<()> {
        if s.n == 0 {
            return Ok(());
        }
        let (half, y) = from;
        let (h, w, c) = (int("h", s.h)?, int("w", s.w)?, int("c", s.c_out)?);
        let pool = pooled.is_some() as i32;
        // Raw addresses: `y` may be the activation itself (f32, in place), and `pooled` is
        // absent without pool (the kernel then never touches it).
        let pooled = pooled.map_or(0, |p| self.ptr(p.f32_mut()));
        let next = match next {
            None => NextNormArgs::default(),
            Some(n) => {
                let (gamma, beta) = (self.ptr(n.gamma.f32()?), self.ptr(n.beta.f32()?));
                let (mean, var) = (
                    self.ptr(n.running_mean.f32()?),
                    self.ptr(n.running_var.f32()?),
                );
                let (out, out_half) = self.conv_operand_out(n.out)?;
                NextNormArgs {
                    out,
                    out_half,
                    gamma,
                    beta,
                    running_mean: mean,
                    running_var: var,
                    eps: n.eps,
                }
            }
        };
        launch!(
            self,
            either(half, sig::eval_tail_bf16, sig::eval_tail_f32),
            nvrtc::per_row(s.n),
            activation.f32_mut(),
            &pooled,
            goodness.f32_mut(),
            &y,
            &bias,
            &h,
            &w,
            &c,
            &pool,
            &next
        );
        Ok(())
    }

    /// The fused bf16 backward of a block's tail and convolution: d(conv output) in bf16
    /// straight into the convolution's operand (the scratch slot 2), from d(output) or from
    /// d(goodness), reading the forward's record in `activation` (bf16 with pool), then the
    /// convolution's backward. The caller has checked the shapes.
    #[allow(clippy::too_many_arguments)]
    fn bf16_tail_backward(
        &self,
        from: TailGrad<'_>,
        grad_input: Option<&mut CudaBuf>,
        grad_weight: &mut CudaBuf,
        activation: &CudaBuf,
        input: &CudaBuf,
        weight: &CudaBuf,
        s: ConvShape,
        pool: bool,
    ) -> Result<()> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let ny = checks::conv_sizes(s).2;
        let dy = grow(&self.stream, &mut state.scratch.half[2], ny)
            .map_err(|e| self.err("allocation", e))?;
        let (goodness, grad) = match from {
            TailGrad::Output(g) => (false, g.f32()?),
            TailGrad::Goodness(g) => (true, g.f32()?),
        };
        if pool {
            let (n, h, w, c) = pool_dims(s.output_pool())?;
            // The convolution's bf16 output, the pooled record, kept in the activation's
            // storage.
            let record = self.ptr(activation.f32()?);
            launch!(
                self,
                either(
                    goodness,
                    sig::goodness_relu_maxpool2_backward_bf16,
                    sig::relu_maxpool2_backward_bf16
                ),
                nvrtc::quads(checks::pool_sizes(s.output_pool()).1, s.c_out),
                dy,
                grad,
                &record,
                &n,
                &h,
                &w,
                &c
            );
        } else if goodness {
            let features = int("features", ny / s.n.max(1))?;
            let total = ny as i64;
            launch!(
                self,
                sig::goodness_relu_backward_bf16,
                nvrtc::quads(ny, features as usize),
                dy,
                grad,
                activation.f32()?,
                &features,
                &total
            );
        } else {
            let total = ny as i64;
            launch!(
                self,
                sig::relu_backward_bf16,
                nvrtc::quads(ny, ny),
                dy,
                grad,
                activation.f32()?,
                &total
            );
        }
        self.conv_backward(state, grad_input, grad_weight, None, input, weight, s)
    }

    /// The address of map `index` of `maps`, maps of `features` elements each (checked by
    /// the caller).
    fn map_ptr(&self, maps: &CudaBuf, index: usize, features: usize) -> Result<u64> {
        Ok(self.ptr(maps.f32()?) + (index * features * std::mem::size_of::<f32>()) as u64)
    }

    /// [`Self::ptr`] of a scratch slot (0 if it was never needed, e.g. an empty workspace).
    fn raw<T>(&self, slot: &Option<CudaSlice<T>>) -> u64 {
        slot.as_ref().map_or(0, |b| self.ptr(b))
    }

    /// Converts `len` floats of `x` into the bf16 scratch slot `slot`.
    fn f32_to_half(
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

    /// Uploads `data` into `dst` through page-locked memory: the host copies it there, the
    /// copy stream copies it on into the slot's device landing buffer, and the compute stream
    /// waits for that (at this point of its order) and copies it into `dst`. The upload thus
    /// runs beside the work queued before it (a step's next images beside the step itself)
    /// instead of after it; `dst` is written in the compute stream's order, as before. The two
    /// slots take turns: one is refilled only after the GPU has copied out of it. False
    /// (nothing done) where page-locked memory cannot be had; the caller then copies from
    /// pageable memory.
    fn upload_staged(&self, dst: &mut CudaBuf, data: &[f32]) -> Result<bool> {
        let mut guard = self.lock();
        let sc = &mut guard.scratch;
        let slot = &mut sc.staging[sc.next_staging];
        sc.next_staging = 1 - sc.next_staging;
        if slot.as_ref().is_none_or(|s| s.host.len() < data.len()) {
            *slot = None; // free before allocating the bigger one
            // SAFETY: the memory is written below before any copy reads it.
            let Ok(host) = (unsafe { self.stream.context().alloc_pinned::<f32>(data.len()) })
            else {
                return Ok(false);
            };
            let landing = self
                .stream
                .alloc_zeros::<f32>(data.len())
                .map_err(|e| self.err("allocation", e))?;
            // The copy stream may write `landing` once its allocation is done.
            let free = self
                .stream
                .record_event(None)
                .map_err(|e| self.err("upload staging", e))?;
            *slot = Some(Staging {
                host,
                landing,
                copied: None,
                free,
            });
        }
        let staging = slot.as_mut().expect("just filled");
        if let Some(copied) = &staging.copied {
            copied
                .synchronize()
                .map_err(|e| self.err("upload staging", e))?;
        }
        let host = staging
            .host
            .as_mut_slice()
            .map_err(|e| self.err("upload staging", e))?;
        let host = &mut host[..data.len()];
        host.copy_from_slice(data);
        let landing = self.ptr(&staging.landing);
        self.copy_stream
            .wait(&staging.free)
            .map_err(|e| self.err("upload", e))?;
        // SAFETY: `landing` holds at least `data.len()` floats, no compute work touches it
        // until `copied` below, and `host` stays alive and untouched until `copied` is done.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(landing, host, self.copy_stream.cu_stream())
        }
        .map_err(|e| self.err("upload", e))?;
        let copied = self
            .copy_stream
            .record_event(None)
            .map_err(|e| self.err("upload staging", e))?;
        // The profile's "upload" is what the compute stream spends on it: any wait for the
        // copy, and the copy into `dst`.
        let to = self.ptr(dst.f32_mut());
        self.timed("upload", || {
            self.stream
                .wait(&copied)
                .map_err(|e| self.err("upload", e))?;
            let bytes = std::mem::size_of_val(data);
            // SAFETY: `to` holds `dst.len() == data.len()` floats (checked by the caller) and
            // `landing` at least as many; the wait above orders the copy after the upload.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(
                    to,
                    landing,
                    bytes,
                    self.stream.cu_stream(),
                )
            }
            .map_err(|e| self.err("upload", e))
        })?;
        staging.copied = Some(copied);
        staging.free = self
            .stream
            .record_event(None)
            .map_err(|e| self.err("upload staging", e))?;
        Ok(true)
    }

    /// `out`'s f32 data to write, and the address of its bf16 copy for the same kernel to
    /// write alongside in bf16 precision (0, i.e. none, in f32).
    fn with_half_copy<'a>(&self, out: &'a mut CudaBuf) -> Result<(&'a mut CudaSlice<f32>, u64)> {
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
    fn grad_values(&self, dy: &CudaBuf) -> Result<(bool, u64)> {
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
    fn conv_operand_out(&self, out: &mut CudaBuf) -> Result<(u64, u64)> {
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
    fn half_of(&self, scratch: &mut Scratch, slot: usize, x: &CudaBuf) -> Result<u64> {
        match x.fresh_half() {
            Some(h) => Ok(self.ptr(h)),
            None => {
                self.f32_to_half(scratch, slot, x, x.len())?;
                Ok(self.raw(&scratch.half[slot]))
            }
        }
    }

    /// out (f32) = or += the bf16 values of `half`.
    fn half_to_f32(
        &self,
        out: &mut CudaBuf,
        half: &CudaSlice<u16>,
        accumulate: bool,
    ) -> Result<()> {
        let len = out.len();
        self.widen(out.f32_mut(), half, len, accumulate)
    }

    /// The first `len` elements of `out` = or += those of `half`.
    fn widen(
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
    fn padded_shape(&self, s: ConvShape) -> Option<ConvShape> {
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
    fn pad_operands(
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
    fn repad(&self, dst: u64, src: u64, rows: usize, from: usize, to: usize) -> Result<()> {
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
    fn conv_forward(
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
    fn conv_backward(
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
    fn sgemm(
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

/// The shape of one [`Cuda::sgemm`]: (transpose a, transpose b), (m, n, k), beta.
#[derive(Clone, Copy)]
struct Sgemm {
    trans: (bool, bool),
    dims: (usize, usize, usize),
    beta: f32,
}

/// Runs `f`, turning a panic of cudarc's library loader (it panics when a shared library is
/// missing) into an error that names the library.
fn load_library<T>(
    name: &str,
    f: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    // cudarc reports a missing library by panicking; silence the default report for the
    // duration (the error below says it in one line).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    match outcome {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{name} could not be loaded: it is not on LD_LIBRARY_PATH, nor in the nvidia-* pip \
             packages of python3 or $VIRTUAL_ENV, $CUDA_HOME, /usr/local/cuda or the driver's \
             folders; put its folder on LD_LIBRARY_PATH"
        )),
    }
}

/// Where the backward of a block's tail starts.
#[derive(Clone, Copy)]
enum TailGrad<'a> {
    /// d(block output).
    Output(&'a CudaBuf),
    /// d(goodness), one per sample: the goodness backward is part of the same pass.
    Goodness(&'a CudaBuf),
}

/// The kernels' `NextNorm` (kernels.cu), field for field: device addresses (0: none) and
/// eps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct NextNormArgs {
    out: u64,
    out_half: u64,
    gamma: u64,
    beta: u64,
    running_mean: u64,
    running_var: u64,
    eps: f32,
}

// SAFETY: plain data with the layout of the kernels' struct (six 8-byte addresses, a float,
// and padding to 8 bytes in both).
unsafe impl DeviceRepr for NextNormArgs {}

/// Buffers per launch of the `*_many` kernels (kernels.cu's MANY).
const MANY: usize = 8;

/// The kernels' `FillMany`: addresses and lengths of up to [`MANY`] buffers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct FillManyArgs {
    ptr: [u64; MANY],
    len: [i64; MANY],
}

// SAFETY: plain data with the layout of the kernels' struct (eight 8-byte addresses, eight
// 8-byte lengths, no padding in either).
unsafe impl DeviceRepr for FillManyArgs {}

/// The kernels' `CopyMany`: sources, offsets into the destination and lengths of up to
/// [`MANY`] copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct CopyManyArgs {
    src: [u64; MANY],
    offset: [i64; MANY],
    len: [i64; MANY],
}

// SAFETY: plain data with the layout of the kernels' struct (eight 8-byte addresses, then
// two arrays of eight 8-byte integers, no padding in either).
unsafe impl DeviceRepr for CopyManyArgs {}

/// The kernels' `AdamMany`: addresses (a null bf16 copy: none) and lengths of up to
/// [`MANY`] parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct AdamManyArgs {
    param: [u64; MANY],
    param_half: [u64; MANY],
    m: [u64; MANY],
    v: [u64; MANY],
    grad: [u64; MANY],
    n: [i64; MANY],
}

// SAFETY: plain data with the layout of the kernels' struct (six arrays of eight 8-byte
// values, no padding in either).
unsafe impl DeviceRepr for AdamManyArgs {}

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

/// A pool shape as the kernels' ints.
fn pool_dims(s: PoolShape) -> Result<(i32, i32, i32, i32)> {
    Ok((
        int("n", s.n)?,
        int("h", s.h)?,
        int("w", s.w)?,
        int("c", s.c)?,
    ))
}

fn check(op: &'static str, buf: &CudaBuf, len: usize) -> Result<()> {
    check_len(op, buf.len(), len)
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
            return super::conv3x3_relu_pool_goodness_composed(
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
            return super::conv3x3_relu_pool_goodness_eval_composed(
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
            return super::bias_relu_pool_goodness_composed(
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
            return super::relu_pool_conv3x3_backward_composed(
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
            return super::goodness_relu_pool_conv3x3_backward_composed(
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
