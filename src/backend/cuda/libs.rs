//! Finding the CUDA libraries where the dynamic loader does not.
//!
//! cudarc opens the driver, NVRTC, cuBLAS and cuDNN by name, so the loader finds them only on
//! `LD_LIBRARY_PATH` or in its cache. A PyTorch user has them elsewhere: in the `nvidia-*` pip
//! packages of their Python environment (`site-packages/nvidia/*/lib`), which PyTorch finds
//! through its own paths. So before the backend opens a library that the loader cannot find by
//! name, it looks there, in the CUDA toolkit and in the driver's usual folders, and opens the
//! file it finds by path with `RTLD_GLOBAL`: cudarc's later open by name then gets the library
//! already loaded (the loader matches the name against the sonames of loaded libraries).
//! Where the loader does find a library, nothing changes.

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The libraries the backend opens (the driver, NVRTC, cuBLAS, cuDNN), by cudarc's base name.
pub const LIBRARIES: [&str; 4] = ["cuda", "nvrtc", "cublas", "cudnn"];

/// Makes every library of [`LIBRARIES`] that the loader cannot open by name available from
/// the folders of [`search_dirs`], if one holds it, once per process; returns the paths it
/// loaded that way. A library found nowhere is left for cudarc to report. The libraries it
/// opens stay loaded, as cudarc keeps them anyway (so they are not loaded twice).
pub fn preload() -> Vec<PathBuf> {
    static FOUND: OnceLock<Vec<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let mut found = Vec::new();
            let mut dirs: Option<Vec<PathBuf>> = None;
            for base in LIBRARIES {
                let names = cudarc::get_lib_name_candidates(base);
                // SAFETY: loading a CUDA library runs only its own initialisers.
                if let Some(lib) = names.iter().find_map(|n| unsafe { Library::new(n) }.ok()) {
                    std::mem::forget(lib);
                    continue;
                }
                let dirs = dirs.get_or_insert_with(search_dirs);
                let Some(path) = find(dirs, &names) else {
                    continue;
                };
                // SAFETY: as above.
                if let Ok(lib) = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) } {
                    std::mem::forget(lib);
                    found.push(path);
                }
            }
            found
        })
        .clone()
}

/// The first file named one of `names` (in that order of preference) in the first folder of
/// `dirs` that holds one.
pub fn find(dirs: &[PathBuf], names: &[String]) -> Option<PathBuf> {
    dirs.iter()
        .find_map(|dir| names.iter().map(|n| dir.join(n)).find(|p| p.is_file()))
}

/// The folders that may hold the CUDA libraries, in order: the `nvidia-*` pip packages of the
/// active virtual or conda environment, then of `python3`'s own paths, then the CUDA toolkit
/// (`$CUDA_HOME`, `$CUDA_PATH`, /usr/local/cuda), then the driver's usual folders.
pub fn search_dirs() -> Vec<PathBuf> {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let mut site_packages = Vec::new();
    for prefix in [env("VIRTUAL_ENV"), env("CONDA_PREFIX")]
        .into_iter()
        .flatten()
    {
        site_packages.extend(prefix_site_packages(&prefix));
    }
    site_packages.extend(python_paths());
    let mut dirs: Vec<PathBuf> = site_packages
        .iter()
        .flat_map(|s| subfolders(&s.join("nvidia")))
        .map(|package| package.join("lib"))
        .collect();
    for toolkit in [env("CUDA_HOME"), env("CUDA_PATH")].into_iter().flatten() {
        dirs.push(toolkit.join("lib64"));
    }
    for dir in [
        "/usr/local/cuda/lib64",
        "/usr/local/nvidia/lib64",
        "/usr/lib/wsl/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
    ] {
        dirs.push(PathBuf::from(dir));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| d.is_dir() && seen.insert(d.clone()));
    dirs
}

/// `prefix/lib/python3.*/site-packages`.
fn prefix_site_packages(prefix: &Path) -> Vec<PathBuf> {
    subfolders(&prefix.join("lib"))
        .into_iter()
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python3"))
        })
        .map(|d| d.join("site-packages"))
        .collect()
}

/// `python3`'s module search path (none where there is no python3).
fn python_paths() -> Vec<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print('\\n'.join(p for p in sys.path if p))",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// The folders in `dir`, sorted by name (none if it is not a readable folder).
fn subfolders(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_folder_and_name_that_hold_a_library() {
        let root = std::env::temp_dir().join(format!("trifecta-libs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // A virtual environment laid out as pip installs PyTorch's CUDA wheels.
        let site = root.join("venv/lib/python3.12/site-packages");
        for (package, file) in [
            ("cu13", "libnvrtc.so.13"),
            ("cudnn", "libcudnn.so.9"),
            ("cudnn", "libcudnn.so"),
        ] {
            let dir = site.join("nvidia").join(package).join("lib");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), b"").unwrap();
        }
        std::fs::create_dir_all(root.join("venv/lib/python3.12/not-a-site")).unwrap();
        assert_eq!(prefix_site_packages(&root.join("venv")), vec![site.clone()]);
        let dirs: Vec<PathBuf> = subfolders(&site.join("nvidia"))
            .into_iter()
            .map(|p| p.join("lib"))
            .collect();
        assert_eq!(
            dirs,
            vec![site.join("nvidia/cu13/lib"), site.join("nvidia/cudnn/lib")]
        );
        // cudarc's order of names decides between two files of one folder.
        let cudnn = cudarc::get_lib_name_candidates("cudnn");
        assert_eq!(
            find(&dirs, &cudnn),
            Some(site.join("nvidia/cudnn/lib/libcudnn.so"))
        );
        let nvrtc = cudarc::get_lib_name_candidates("nvrtc");
        assert_eq!(
            find(&dirs, &nvrtc),
            Some(site.join("nvidia/cu13/lib/libnvrtc.so.13"))
        );
        assert_eq!(
            find(&dirs, &cudarc::get_lib_name_candidates("cublas")),
            None
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
