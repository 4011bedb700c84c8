//! Run-time compilation of `kernels.cu` with NVRTC, and the launch geometry of its kernels.
//!
//! The module is compiled to a cubin for the device's own architecture (`sm_XY`), not to PTX:
//! a PTX from a newer NVRTC than the driver would be refused at load time, a cubin is not.
//! `--fmad=false` keeps the float arithmetic in the order the CPU kernels use, so the two
//! backends agree to the last bit wherever the CPU does the same operations in f32.

use cudarc::driver::LaunchConfig;
use cudarc::nvrtc::{Ptx, result, sys};
use std::ffi::{CStr, CString, c_char};
use std::sync::Mutex;

/// The CUDA C source of every kernel of ours.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Every `extern "C"` kernel in [`SOURCE`], loaded by name when the backend starts.
pub const KERNELS: &[&str] = &[
    "fill_f32",
    "embed_forward",
    "embed_backward",
    "add_bias_map",
    "relu_forward",
    "relu_backward",
    "maxpool2_forward",
    "relu_maxpool2_backward",
    "relu_maxpool2_backward_bf16",
    "goodness_relu_maxpool2_backward_bf16",
    "relu_backward_bf16",
    "goodness_relu_backward_bf16",
    "relu_pool_goodness_f32",
    "relu_pool_goodness_bf16",
    "eval_tail_f32",
    "eval_tail_bf16",
    "goodness_forward",
    "goodness_backward",
    "ff_loss",
    "partial_sum",
    "partial_centered_sq",
    "partial_dy_dyx",
    "partial_dy_dyx_bf16",
    "partial_dy_xhat_rows",
    "partial_dy_xhat_rows_bf16",
    "finish_mean",
    "batchnorm_finish_stats",
    "finish_add",
    "batchnorm_apply",
    "batchnorm_apply_eval",
    "batchnorm_backward_finish",
    "batchnorm_backward_apply",
    "batchnorm_backward_apply_bf16",
    "layernorm_forward",
    "layernorm_backward_input",
    "layernorm_backward_input_bf16",
    "adam_step",
    "avgpool_forward",
    "avgpool_backward",
    "bias_rows",
    "cross_entropy",
    "f32_to_bf16",
    "bf16_to_f32",
];

/// The NVRTC options for a device of compute capability `major.minor`.
pub fn options(major: i32, minor: i32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=sm_{major}{minor}"),
        "--fmad=false".into(),
        "--std=c++17".into(),
    ]
}

/// Compiles [`SOURCE`] into a cubin for `sm_{major}{minor}`, ready to load. Compiled once per
/// process and architecture (a second backend, e.g. in the tests, reuses it).
pub fn compile(major: i32, minor: i32) -> Result<Ptx, String> {
    /// (major, minor) and the cubin compiled for it.
    type Cubin = ((i32, i32), Vec<u8>);
    static CUBINS: Mutex<Vec<Cubin>> = Mutex::new(Vec::new());
    let mut cubins = CUBINS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, cubin)) = cubins.iter().find(|(arch, _)| *arch == (major, minor)) {
        return Ok(Ptx::from_binary(cubin.clone()));
    }
    let cubin = compile_cubin(major, minor)?;
    cubins.push(((major, minor), cubin.clone()));
    Ok(Ptx::from_binary(cubin))
}

/// The cubin (an ELF image) of [`SOURCE`] for `sm_{major}{minor}`. The error carries NVRTC's
/// log.
pub fn compile_cubin(major: i32, minor: i32) -> Result<Vec<u8>, String> {
    let src = CString::new(SOURCE).map_err(|e| e.to_string())?;
    let name = CString::new("kernels.cu").map_err(|e| e.to_string())?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| format!("{e:?}"))?;
    let options = options(major, minor);
    // SAFETY: `prog` was just created and is destroyed once, below; the buffers handed to
    // NVRTC are sized by NVRTC's own size queries.
    unsafe {
        let compiled = result::compile_program(prog, &options);
        let out = match compiled {
            Err(e) => Err(format!("{e:?}: {}", log(prog))),
            Ok(()) => cubin(prog),
        };
        let _ = result::destroy_program(prog);
        out
    }
}

/// NVRTC's log for `prog`, as text.
///
/// # Safety
/// `prog` must be a live program.
unsafe fn log(prog: sys::nvrtcProgram) -> String {
    match unsafe { result::get_program_log(prog) } {
        Ok(raw) => unsafe { CStr::from_ptr(raw.as_ptr()) }
            .to_string_lossy()
            .trim()
            .to_string(),
        Err(e) => format!("(no log: {e:?})"),
    }
}

/// The compiled cubin of `prog`.
///
/// # Safety
/// `prog` must be a live, compiled program.
unsafe fn cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, String> {
    let mut size = 0usize;
    unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
        .result()
        .map_err(|e| format!("nvrtcGetCUBINSize: {e:?}"))?;
    if size == 0 {
        return Err("NVRTC produced no cubin (was a real sm_ architecture given?)".into());
    }
    let mut bytes = vec![0u8; size];
    unsafe { sys::nvrtcGetCUBIN(prog, bytes.as_mut_ptr() as *mut c_char) }
        .result()
        .map_err(|e| format!("nvrtcGetCUBIN: {e:?}"))?;
    Ok(bytes)
}

/// Threads per block of the elementwise and per-sample kernels (a power of two: the block
/// reductions rely on it).
pub const BLOCK: u32 = 256;

/// Grid-stride kernels never need more blocks than this; the loop covers the rest.
const MAX_GRID: usize = 1 << 20;

/// An elementwise launch over `total` elements (grid-stride, so any size fits).
pub fn elementwise(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(BLOCK as usize).clamp(1, MAX_GRID);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of [`BLOCK`] threads per row (sample), for `rows` rows.
pub fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A single block (the loss kernels).
pub fn single_block() -> LaunchConfig {
    per_row(1)
}

/// The partition of a per-column reduction over `rows` rows of `cols` columns: blocks of 32
/// columns x 8 row lanes, `parts` row chunks of `chunk` rows each (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partials {
    pub parts: usize,
    pub chunk: usize,
    pub launch: (u32, u32),
}

/// Enough blocks to fill the device (`sms` multiprocessors, 4 blocks each), but no chunk
/// shorter than 64 rows. Depends only on the shape and the device, so sums are repeatable.
pub fn partials(rows: usize, cols: usize, sms: usize) -> Partials {
    let groups = cols.div_ceil(32).max(1);
    let wanted = (4 * sms.max(1)).div_ceil(groups);
    let parts = wanted.clamp(1, rows.div_ceil(64).max(1));
    let chunk = rows.div_ceil(parts).max(1);
    let parts = rows.div_ceil(chunk).max(1);
    Partials {
        parts,
        chunk,
        launch: (groups as u32, parts as u32),
    }
}

impl Partials {
    pub fn config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.launch.0, self.launch.1, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// One thread per column, for the `finish_*` kernels.
pub fn per_column(cols: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (cols.div_ceil(BLOCK as usize).max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_in_the_source_once() {
        for name in KERNELS {
            let decl = format!("extern \"C\" __global__ void {name}(");
            assert_eq!(SOURCE.matches(&decl).count(), 1, "{name}");
        }
        assert_eq!(
            SOURCE.matches("extern \"C\" __global__ void").count(),
            KERNELS.len(),
            "a kernel in kernels.cu is missing from KERNELS"
        );
    }

    #[test]
    fn partitions_cover_every_row_once() {
        for rows in [1, 7, 64, 65, 1000, 4096, 1 << 20] {
            for cols in [1, 4, 32, 33, 512] {
                let p = partials(rows, cols, 132);
                assert!(p.parts >= 1 && p.chunk >= 1);
                assert!(p.parts * p.chunk >= rows, "{rows}x{cols}: {p:?}");
                assert!(
                    (p.parts - 1) * p.chunk < rows,
                    "{rows}x{cols}: empty part {p:?}"
                );
                assert_eq!(p.launch, (cols.div_ceil(32) as u32, p.parts as u32));
            }
        }
        // Large reductions fill the device; small ones keep chunks of at least 64 rows.
        assert!(partials(1 << 20, 4, 132).parts >= 4 * 132);
        assert_eq!(partials(100, 512, 132).parts, 2);
    }

    #[test]
    fn launches_stay_within_cuda_limits() {
        for total in [0, 1, 255, 256, 257, 1 << 31] {
            let c = elementwise(total);
            assert!(c.grid_dim.0 >= 1 && c.grid_dim.0 as usize <= MAX_GRID);
            if total > 0 && total <= MAX_GRID * BLOCK as usize {
                assert!(c.grid_dim.0 as usize * BLOCK as usize >= total);
            }
        }
        assert_eq!(per_column(257).grid_dim.0, 2);
        assert_eq!(per_row(0).grid_dim.0, 1);
    }

    #[test]
    fn options_name_a_real_architecture() {
        assert_eq!(options(9, 0)[0], "--gpu-architecture=sm_90");
        assert!(options(8, 6).contains(&"--fmad=false".to_string()));
    }
}
