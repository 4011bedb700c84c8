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
//!
//! Here: the backend's state (streams, scratch, staging for uploads) and its opening. Beside
//! it: `ops` (the [`Backend`](super::Backend) impl, op by op), `conv` (cuDNN plans, bf16
//! operand copies, channel padding, sgemm), `tails` (partial sums, fused tails), `sig` (the
//! kernels' parameter lists as types), `nvrtc` (source, compilation, launch geometry), [`dnn`]
//! (cuDNN), `buf` (the device buffer and its bf16 copy) and [`libs`] (finding the libraries).

mod buf;
pub mod dnn;
pub mod libs;
pub mod nvrtc;
mod sig;

pub use buf::CudaBuf;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    PinnedHostSlice, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{ConvShape, GpuOptions, PoolShape, Precision, check_len};
use crate::error::{Error, Result};
use dnn::{ConvPlan, Dnn};

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

// Declared below `launch!`, which they use: a `macro_rules!` is seen only after it.
mod conv;
mod ops;
mod tails;

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

    /// The device address of a buffer, for cuDNN. cudarc's guard that comes with it only
    /// records events, which this backend turned off (its streams are ordered by hand).
    fn ptr<T>(&self, buf: &CudaSlice<T>) -> u64 {
        buf.device_ptr(&self.stream).0
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
