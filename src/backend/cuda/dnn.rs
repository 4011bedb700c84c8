//! cuDNN convolutions: owned handles and descriptors, and one plan per convolution shape.
//!
//! cudarc's safe cuDNN layer picks an algorithm by heuristic rank alone and keeps its raw
//! descriptors private, so it cannot be asked for a *deterministic* backward algorithm. This
//! module owns the raw handle and descriptors instead (each freed on drop) and chooses, per
//! shape, the best-ranked algorithm that succeeds and, for the two backward passes, is
//! deterministic: same inputs, same gradients, as on the CPU. Only if cuDNN offers no
//! deterministic one for a shape is the best non-deterministic one taken (the repeatability
//! test then says so).

use cudarc::cudnn::{result, sys};
use cudarc::driver::CudaStream;
use std::ffi::c_void;

use crate::backend::ConvShape;

/// Storage and math of the convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvMath {
    /// f32 tensors, f32 FMA math (no TF32): the reference path.
    F32,
    /// bf16 tensors, f32 accumulation, tensor cores.
    Bf16,
}

pub type DnnResult<T> = std::result::Result<T, String>;

fn check(what: &str, r: std::result::Result<(), result::CudnnError>) -> DnnResult<()> {
    r.map_err(|e| format!("cuDNN {what}: {:?}", e.0))
}

/// A cuDNN handle bound to the backend's stream.
pub struct Dnn {
    handle: sys::cudnnHandle_t,
}

// SAFETY: the handle is only used through `&Dnn` while the backend holds the lock that
// guards its plans, i.e. from one thread at a time, on one stream.
unsafe impl Send for Dnn {}

impl Dnn {
    pub fn new(stream: &CudaStream) -> DnnResult<Dnn> {
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| format!("binding the CUDA context: {e:?}"))?;
        let handle = result::create_handle().map_err(|e| format!("cudnnCreate: {:?}", e.0))?;
        let dnn = Dnn { handle };
        // SAFETY: a live handle and the backend's live stream (which outlives the handle).
        check("set stream", unsafe {
            result::set_stream(dnn.handle, stream.cu_stream() as sys::cudaStream_t)
        })?;
        Ok(dnn)
    }
}

impl Drop for Dnn {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

struct Tensor(sys::cudnnTensorDescriptor_t);
struct Filter(sys::cudnnFilterDescriptor_t);
struct Conv(sys::cudnnConvolutionDescriptor_t);

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: created by `nhwc`, destroyed once.
        let _ = unsafe { result::destroy_tensor_descriptor(self.0) };
    }
}
impl Drop for Filter {
    fn drop(&mut self) {
        // SAFETY: created by `ConvPlan::new`, destroyed once.
        let _ = unsafe { result::destroy_filter_descriptor(self.0) };
    }
}
impl Drop for Conv {
    fn drop(&mut self) {
        // SAFETY: created by `ConvPlan::new`, destroyed once.
        let _ = unsafe { result::destroy_convolution_descriptor(self.0) };
    }
}

fn data_type(math: ConvMath) -> sys::cudnnDataType_t {
    match math {
        ConvMath::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        ConvMath::Bf16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
    }
}

fn dim(v: usize) -> DnnResult<i32> {
    i32::try_from(v).map_err(|_| format!("dimension {v} does not fit cuDNN's int"))
}

fn nhwc(math: ConvMath, n: usize, c: usize, h: usize, w: usize) -> DnnResult<Tensor> {
    let t = Tensor(
        result::create_tensor_descriptor().map_err(|e| format!("tensor descriptor: {:?}", e.0))?,
    );
    // SAFETY: a live descriptor.
    check("tensor descriptor", unsafe {
        result::set_tensor4d_descriptor(
            t.0,
            sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
            data_type(math),
            [dim(n)?, dim(c)?, dim(h)?, dim(w)?],
        )
    })?;
    Ok(t)
}

/// What the three kinds of cuDNN algorithm-performance records have in common.
trait Perf {
    fn usable(&self) -> bool;
    fn deterministic(&self) -> bool;
    /// The algorithm's name without cuDNN's prefix, e.g. `IMPLICIT_PRECOMP_GEMM`.
    fn name(&self) -> String;
    /// The math type the algorithm runs with (cuDNN may offer one other than the asked-for).
    fn math_type(&self) -> sys::cudnnMathType_t;
}

macro_rules! perf {
    ($($t:ty),*) => {$(
        impl Perf for $t {
            fn usable(&self) -> bool {
                self.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && self.memory <= MAX_WORKSPACE
            }
            fn deterministic(&self) -> bool {
                self.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC
            }
            fn name(&self) -> String {
                let full = format!("{:?}", self.algo);
                match full.split_once("_ALGO_") {
                    Some((_, short)) => short.to_string(),
                    None => full,
                }
            }
            fn math_type(&self) -> sys::cudnnMathType_t {
                self.mathType
            }
        }
    )*};
}
perf!(
    sys::cudnnConvolutionFwdAlgoPerf_t,
    sys::cudnnConvolutionBwdDataAlgoPerf_t,
    sys::cudnnConvolutionBwdFilterAlgoPerf_t
);

/// The best-ranked usable algorithm that is deterministic (when `deterministic`), else the
/// best-ranked usable one, with a profile label that names it (and the better-ranked one
/// passed over, if any, and its math type where that is adopted and not the one `asked`).
fn pick<'a, P: Perf>(
    offered: &'a [P],
    pass: &str,
    shape: &str,
    deterministic: bool,
    asked: Option<sys::cudnnMathType_t>,
) -> DnnResult<(&'a P, &'static str)> {
    let usable: Vec<&P> = offered.iter().filter(|p| p.usable()).collect();
    let best = usable
        .iter()
        .find(|p| p.deterministic() || !deterministic)
        .or(usable.first())
        .copied()
        .ok_or_else(|| format!("cuDNN offers no {pass} algorithm for this shape"))?;
    let mut label = format!("cudnn conv {pass} {shape} {}", best.name());
    if let Some(first) = usable.first().filter(|first| first.name() != best.name()) {
        label.push_str(&format!(" (over non-deterministic {})", first.name()));
    }
    if !best.deterministic() {
        label.push_str(" (non-deterministic)");
    }
    if asked.is_some_and(|asked| best.math_type() != asked) {
        label.push_str(&format!(" ({:?})", best.math_type()));
    }
    // One label per plan, and plans live as long as the backend: leaking them is bounded.
    Ok((best, Box::leak(label.into_boxed_str())))
}

/// The descriptors and chosen algorithms of one convolution shape.
pub struct ConvPlan {
    x: Tensor,
    y: Tensor,
    w: Filter,
    /// One convolution descriptor per pass (forward, backward data, backward filter), each
    /// set to the math type of the algorithm chosen for that pass, as cuDNN wants.
    conv: [Conv; 3],
    /// The math type asked for.
    math_type: sys::cudnnMathType_t,
    fwd: sys::cudnnConvolutionFwdAlgo_t,
    bwd_data: sys::cudnnConvolutionBwdDataAlgo_t,
    bwd_filter: sys::cudnnConvolutionBwdFilterAlgo_t,
    /// Bytes of workspace the largest of the three needs.
    pub workspace: usize,
    /// Profile names of the three passes (forward, backward data, backward filter): the
    /// shape and the algorithm chosen.
    pub labels: [&'static str; 3],
    shape: String,
}

// SAFETY: the descriptors are plain host objects; they are used under the backend's lock.
unsafe impl Send for ConvPlan {}

/// A 3x3, padding 1, stride 1 cross-correlation with f32 accumulation (cuDNN's "pseudo"
/// bf16 configuration in bf16: its only one for convolutions), with math type `math_type`.
fn conv_descriptor(math_type: sys::cudnnMathType_t) -> DnnResult<Conv> {
    let conv = Conv(
        result::create_convolution_descriptor()
            .map_err(|e| format!("convolution descriptor: {:?}", e.0))?,
    );
    // SAFETY: a live descriptor.
    unsafe {
        check(
            "convolution descriptor",
            result::set_convolution2d_descriptor(
                conv.0,
                1,
                1,
                1,
                1,
                1,
                1,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            ),
        )?;
        check(
            "math type",
            result::set_convolution_math_type(conv.0, math_type),
        )?;
    }
    Ok(conv)
}

/// cuDNN's algorithm queries of each pass (heuristics or Find: the same signature): handle,
/// the pass's input, weight-or-gradient and output descriptors with the convolution's, the
/// number of results wanted, and where the count and the results go.
type Query<A, B, C, P> = unsafe fn(
    sys::cudnnHandle_t,
    A,
    B,
    sys::cudnnConvolutionDescriptor_t,
    C,
    std::ffi::c_int,
    *mut std::ffi::c_int,
    *mut P,
) -> sys::cudnnStatus_t;
type Tensor4 = sys::cudnnTensorDescriptor_t;
type Filter4 = sys::cudnnFilterDescriptor_t;
type FwdQuery = Query<Tensor4, Filter4, Tensor4, sys::cudnnConvolutionFwdAlgoPerf_t>;
type DataQuery = Query<Filter4, Tensor4, Tensor4, sys::cudnnConvolutionBwdDataAlgoPerf_t>;
type FilterQuery = Query<Tensor4, Tensor4, Filter4, sys::cudnnConvolutionBwdFilterAlgoPerf_t>;

/// Largest workspace an algorithm may ask for (bigger ones are passed over).
const MAX_WORKSPACE: usize = 1 << 30;

impl ConvPlan {
    /// The plan of shape `s`; `deterministic` prefers deterministic algorithms (see `pick`);
    /// `timed` ranks the algorithms by running them on the device (cuDNN's Find, which
    /// synchronises and allocates its own buffers), else by cuDNN's heuristics.
    pub fn new(
        dnn: &Dnn,
        s: ConvShape,
        math: ConvMath,
        deterministic: bool,
        timed: bool,
    ) -> DnnResult<ConvPlan> {
        let x = nhwc(math, s.n, s.c_in, s.h, s.w)?;
        let y = nhwc(math, s.n, s.c_out, s.h, s.w)?;
        let w = Filter(
            result::create_filter_descriptor()
                .map_err(|e| format!("filter descriptor: {:?}", e.0))?,
        );
        let math_type = match math {
            ConvMath::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
            ConvMath::Bf16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        };
        // SAFETY: a live descriptor; OHWI weights are cuDNN's KRSC, i.e. an NHWC filter.
        check("filter descriptor", unsafe {
            result::set_filter4d_descriptor(
                w.0,
                data_type(math),
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
                [dim(s.c_out)?, dim(s.c_in)?, 3, 3],
            )
        })?;
        let conv = [
            conv_descriptor(math_type)?,
            conv_descriptor(math_type)?,
            conv_descriptor(math_type)?,
        ];
        let mut plan = ConvPlan {
            x,
            y,
            w,
            conv,
            math_type,
            fwd: sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
            bwd_data: sys::cudnnConvolutionBwdDataAlgo_t::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
            bwd_filter: sys::cudnnConvolutionBwdFilterAlgo_t::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
            workspace: 0,
            labels: [""; 3],
            shape: format!("{}x{} {}->{}", s.h, s.w, s.c_in, s.c_out),
        };
        plan.choose(dnn, deterministic, timed)?;
        Ok(plan)
    }

    /// The math type asked for, where the chosen algorithms' own are adopted (bf16).
    fn adopted(&self) -> Option<sys::cudnnMathType_t> {
        (self.math_type != sys::cudnnMathType_t::CUDNN_FMA_MATH).then_some(self.math_type)
    }

    /// Sets pass `pass`'s descriptor to the math type of the algorithm chosen for it, as
    /// cuDNN asks (it decides by algorithm and math type together whether tensor cores run;
    /// in bf16 it may offer a non-tensor-core algorithm, e.g. for few channels). In f32 the
    /// descriptors stay on FMA math: no TF32.
    fn adopt_math(&mut self, pass: usize, chosen: sys::cudnnMathType_t) -> DnnResult<()> {
        if self.adopted().is_none_or(|asked| chosen == asked) {
            return Ok(());
        }
        // SAFETY: a live descriptor.
        check("math type", unsafe {
            result::set_convolution_math_type(self.conv[pass].0, chosen)
        })
    }

    /// Picks the best-ranked usable algorithm of each pass and sizes the workspace. Ranked by
    /// time measured on the device (`timed`), else by cuDNN's heuristics; the two calls take
    /// the same arguments and give the same perf structs.
    fn choose(&mut self, dnn: &Dnn, deterministic: bool, timed: bool) -> DnnResult<()> {
        let h = dnn.handle;
        let mut count = 0i32;
        let (forward, backward_data, backward_filter): (FwdQuery, DataQuery, FilterQuery) = if timed
        {
            (
                sys::cudnnFindConvolutionForwardAlgorithm,
                sys::cudnnFindConvolutionBackwardDataAlgorithm,
                sys::cudnnFindConvolutionBackwardFilterAlgorithm,
            )
        } else {
            (
                sys::cudnnGetConvolutionForwardAlgorithm_v7,
                sys::cudnnGetConvolutionBackwardDataAlgorithm_v7,
                sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7,
            )
        };
        // SAFETY: live handle and descriptors; the result arrays hold as many entries as
        // requested; zeroed perf structs are valid plain data.
        unsafe {
            let mut fwd = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); 8];
            check(
                "forward algorithms",
                forward(
                    h,
                    self.x.0,
                    self.w.0,
                    self.conv[0].0,
                    self.y.0,
                    fwd.len() as i32,
                    &mut count,
                    fwd.as_mut_ptr(),
                )
                .result(),
            )?;
            let (best, label) = pick(
                &fwd[..count.max(0) as usize],
                "forward",
                &self.shape,
                deterministic,
                self.adopted(),
            )?;
            self.adopt_math(0, best.math_type())?;
            self.fwd = best.algo;
            self.labels[0] = label;
            self.workspace = self.workspace.max(best.memory);

            let mut data = [std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>(); 6];
            check(
                "backward-data algorithms",
                backward_data(
                    h,
                    self.w.0,
                    self.y.0,
                    self.conv[1].0,
                    self.x.0,
                    data.len() as i32,
                    &mut count,
                    data.as_mut_ptr(),
                )
                .result(),
            )?;
            let (best, label) = pick(
                &data[..count.max(0) as usize],
                "backward-data",
                &self.shape,
                deterministic,
                self.adopted(),
            )?;
            self.adopt_math(1, best.math_type())?;
            self.bwd_data = best.algo;
            self.labels[1] = label;
            self.workspace = self.workspace.max(best.memory);

            let mut filter = [std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>(); 7];
            check(
                "backward-filter algorithms",
                backward_filter(
                    h,
                    self.x.0,
                    self.y.0,
                    self.conv[2].0,
                    self.w.0,
                    filter.len() as i32,
                    &mut count,
                    filter.as_mut_ptr(),
                )
                .result(),
            )?;
            let (best, label) = pick(
                &filter[..count.max(0) as usize],
                "backward-filter",
                &self.shape,
                deterministic,
                self.adopted(),
            )?;
            self.adopt_math(2, best.math_type())?;
            self.bwd_filter = best.algo;
            self.labels[2] = label;
            self.workspace = self.workspace.max(best.memory);

            // The heuristics' memory figures can be low; ask for each chosen one's size.
            let mut size = 0usize;
            check(
                "forward workspace",
                sys::cudnnGetConvolutionForwardWorkspaceSize(
                    h,
                    self.x.0,
                    self.w.0,
                    self.conv[0].0,
                    self.y.0,
                    self.fwd,
                    &mut size,
                )
                .result(),
            )?;
            self.workspace = self.workspace.max(size);
            check(
                "backward-data workspace",
                sys::cudnnGetConvolutionBackwardDataWorkspaceSize(
                    h,
                    self.w.0,
                    self.y.0,
                    self.conv[1].0,
                    self.x.0,
                    self.bwd_data,
                    &mut size,
                )
                .result(),
            )?;
            self.workspace = self.workspace.max(size);
            check(
                "backward-filter workspace",
                sys::cudnnGetConvolutionBackwardFilterWorkspaceSize(
                    h,
                    self.x.0,
                    self.y.0,
                    self.conv[2].0,
                    self.w.0,
                    self.bwd_filter,
                    &mut size,
                )
                .result(),
            )?;
            self.workspace = self.workspace.max(size);
        }
        Ok(())
    }

    /// y = conv(x, w). Pointers are device addresses of tensors laid out as the plan says.
    ///
    /// # Safety
    /// `x`, `w` and `y` must point to live device buffers of this plan's shapes and type, and
    /// `workspace` to at least `self.workspace` bytes, all on the handle's stream.
    pub unsafe fn forward(
        &self,
        dnn: &Dnn,
        x: u64,
        w: u64,
        y: u64,
        workspace: u64,
    ) -> DnnResult<()> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        check("convolution forward", unsafe {
            result::convolution_forward(
                dnn.handle,
                &alpha as *const f32 as *const c_void,
                self.x.0,
                x as *const c_void,
                self.w.0,
                w as *const c_void,
                self.conv[0].0,
                self.fwd,
                workspace as *mut c_void,
                self.workspace,
                &beta as *const f32 as *const c_void,
                self.y.0,
                y as *mut c_void,
            )
        })
    }

    /// dx = conv_transpose(dy, w) (assigned).
    ///
    /// # Safety
    /// As [`Self::forward`].
    pub unsafe fn backward_data(
        &self,
        dnn: &Dnn,
        w: u64,
        dy: u64,
        dx: u64,
        workspace: u64,
    ) -> DnnResult<()> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        check("convolution backward data", unsafe {
            result::convolution_backward_data(
                dnn.handle,
                &alpha as *const f32 as *const c_void,
                self.w.0,
                w as *const c_void,
                self.y.0,
                dy as *const c_void,
                self.conv[1].0,
                self.bwd_data,
                workspace as *mut c_void,
                self.workspace,
                &beta as *const f32 as *const c_void,
                self.x.0,
                dx as *mut c_void,
            )
        })
    }

    /// dw = beta * dw + correlation(x, dy): `beta` 1 accumulates, 0 assigns.
    ///
    /// # Safety
    /// As [`Self::forward`].
    pub unsafe fn backward_filter(
        &self,
        dnn: &Dnn,
        x: u64,
        dy: u64,
        dw: u64,
        beta: f32,
        workspace: u64,
    ) -> DnnResult<()> {
        let alpha = 1.0f32;
        check("convolution backward filter", unsafe {
            result::convolution_backward_filter(
                dnn.handle,
                &alpha as *const f32 as *const c_void,
                self.x.0,
                x as *const c_void,
                self.y.0,
                dy as *const c_void,
                self.conv[2].0,
                self.bwd_filter,
                workspace as *mut c_void,
                self.workspace,
                &beta as *const f32 as *const c_void,
                self.w.0,
                dw as *mut c_void,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::cudnnConvolutionFwdAlgo_t as Algo;
    use sys::cudnnMathType_t as Math;

    fn perf(
        algo: Algo,
        ok: bool,
        memory: usize,
        deterministic: bool,
        math: Math,
    ) -> sys::cudnnConvolutionFwdAlgoPerf_t {
        // SAFETY: a plain C struct of enums and numbers; zero is valid for each field.
        let mut p: sys::cudnnConvolutionFwdAlgoPerf_t = unsafe { std::mem::zeroed() };
        p.algo = algo;
        p.status = match ok {
            true => sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS,
            false => sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED,
        };
        p.memory = memory;
        p.determinism = match deterministic {
            true => sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
            false => sys::cudnnDeterminism_t::CUDNN_NON_DETERMINISTIC,
        };
        p.mathType = math;
        p
    }

    const TC: Math = Math::CUDNN_TENSOR_OP_MATH;

    #[test]
    fn pick_takes_the_best_ranked_usable_deterministic_algorithm() {
        let offered = [
            perf(Algo::CUDNN_CONVOLUTION_FWD_ALGO_FFT, false, 0, true, TC),
            perf(
                Algo::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
                true,
                2 * MAX_WORKSPACE,
                true,
                TC,
            ),
            perf(
                Algo::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
                true,
                0,
                false,
                TC,
            ),
            perf(
                Algo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                true,
                0,
                true,
                TC,
            ),
        ];
        let (best, label) = pick(&offered, "forward", "8x8 4->16", true, Some(TC)).unwrap();
        assert_eq!(best.algo, Algo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
        assert_eq!(
            label,
            "cudnn conv forward 8x8 4->16 IMPLICIT_GEMM (over non-deterministic WINOGRAD)"
        );
        // Determinism not asked for: the best-ranked usable one, marked as such.
        let (best, label) = pick(&offered, "forward", "8x8 4->16", false, Some(TC)).unwrap();
        assert_eq!(best.algo, Algo::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD);
        assert!(label.ends_with("WINOGRAD (non-deterministic)"), "{label}");
    }

    #[test]
    fn pick_names_an_adopted_math_type_and_fails_without_a_usable_algorithm() {
        let fma = Math::CUDNN_FMA_MATH;
        let offered = [perf(
            Algo::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
            true,
            0,
            true,
            fma,
        )];
        let (_, label) = pick(&offered, "forward", "s", true, Some(TC)).unwrap();
        assert!(label.ends_with("GEMM (CUDNN_FMA_MATH)"), "{label}");
        // f32 adopts nothing (it stays on FMA math), so the label says nothing of it.
        let (_, label) = pick(&offered, "forward", "s", true, None).unwrap();
        assert!(label.ends_with("GEMM"), "{label}");
        let none = [perf(
            Algo::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
            false,
            0,
            true,
            TC,
        )];
        let err = pick(&none, "forward", "s", true, Some(TC)).unwrap_err();
        assert!(err.contains("no forward algorithm"), "{err}");
    }
}
