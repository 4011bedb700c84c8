//! Writes the cubin that the CUDA backend compiles at start-up (NVRTC, `sm_XY`) to a file, for
//! reading its machine code without a GPU, e.g. with the `cuobjdump` of Triton's pip wheel:
//!
//! ```sh
//! cargo run --release --features cuda --example cuda_cubin -- kernels.cubin 90
//! cuobjdump -sass kernels.cubin
//! ```
//!
//! Finds libnvrtc as the backend does (e.g. the `nvidia-cuda-nvrtc` wheel of `$VIRTUAL_ENV`).

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), arch) = (args.next(), args.next()) else {
        anyhow::bail!("usage: cuda_cubin OUT.cubin [ARCH, e.g. 90]");
    };
    let arch: i32 = arch.as_deref().unwrap_or("90").parse()?;
    trifecta::backend::cuda::libs::preload();
    let cubin = trifecta::backend::cuda::nvrtc::compile_cubin(arch / 10, arch % 10)
        .map_err(|e| anyhow::anyhow!("NVRTC: {e}"))?;
    std::fs::write(&path, cubin).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    Ok(())
}
