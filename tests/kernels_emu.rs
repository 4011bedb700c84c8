//! The CUDA kernels (`src/backend/cuda/kernels.cu`) run on the CPU under a small emulator of
//! CUDA's execution model (`tests/kernels_emu.cpp`: fibers for the threads of a block, real
//! barriers and shared memory) and are checked against plain reference loops. This needs only
//! a C++ compiler, so it runs everywhere, GPU or not; it checks the kernels' indexing,
//! partitions and reductions, not the GPU itself (tests/cuda.rs does that).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn cuda_kernels_agree_with_reference_loops_under_emulation() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("trifecta-kernels-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("kernels_emu");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let build = Command::new(&cxx)
        .args(["-std=c++17", "-O1", "-o"])
        .arg(&exe)
        .arg(root.join("tests/kernels_emu.cpp"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler '{cxx}' (set CXX): {e}"));
    assert!(
        build.status.success(),
        "compiling kernels_emu.cpp failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success(), "kernel checks failed:\n{stdout}");
    assert!(stdout.contains("all kernel checks passed"));
}
