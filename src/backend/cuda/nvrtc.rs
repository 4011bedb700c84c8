//! Run-time compilation of `kernels.cu` with NVRTC, and the launch geometry of its kernels.
//!
//! The module is compiled to a cubin for the device's own architecture (`sm_XY`), not to PTX:
//! a PTX from a newer NVRTC than the driver would be refused at load time, a cubin is not.
//! `--fmad=false` keeps the float arithmetic in the order the CPU kernels use, so the two
//! backends agree to the last bit wherever the CPU does the same operations in f32.

use cudarc::driver::LaunchConfig;
use cudarc::nvrtc::{Ptx, result, sys};
use md5::{Digest, Md5};
use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The CUDA C source of every kernel of ours.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Every `extern "C"` kernel in [`SOURCE`], loaded by name when the backend starts (the
/// table of their parameter lists, `sig`, names them).
pub const KERNELS: &[&str] = super::sig::NAMES;

/// The NVRTC options for a device of compute capability `major.minor`.
pub fn options(major: i32, minor: i32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=sm_{major}{minor}"),
        "--fmad=false".into(),
        "--std=c++17".into(),
    ]
}

/// A cubin of [`SOURCE`], ready to load, and whether it was read from the disk cache.
pub struct Compiled {
    pub image: Ptx,
    pub from_disk: bool,
}

/// (major, minor), the cubin for it, and whether it came from the disk cache.
type Cubin = ((i32, i32), Vec<u8>, bool);

/// The cubins of this process, one per architecture (a second backend, e.g. in the tests,
/// reuses it).
static CUBINS: Mutex<Vec<Cubin>> = Mutex::new(Vec::new());

/// [`SOURCE`] as a cubin for `sm_{major}{minor}`: this process' copy, else the disk cache's
/// ([`cache_dir`]), else compiled by NVRTC (some seconds) and written to the cache.
pub fn compile(major: i32, minor: i32) -> Result<Compiled, String> {
    let mut cubins = CUBINS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, cubin, from_disk)) = cubins.iter().find(|(arch, ..)| *arch == (major, minor)) {
        return Ok(Compiled {
            image: Ptx::from_binary(cubin.clone()),
            from_disk: *from_disk,
        });
    }
    let path = cache_file(major, minor)?;
    let (cubin, from_disk) = through_disk(path.as_deref(), || compile_cubin(major, minor))?;
    cubins.push(((major, minor), cubin.clone(), from_disk));
    Ok(Compiled {
        image: Ptx::from_binary(cubin),
        from_disk,
    })
}

/// Compiles [`SOURCE`] for `sm_{major}{minor}` with NVRTC whatever the caches hold, and puts
/// the result in both: for a cached cubin that the driver refused.
pub fn recompile(major: i32, minor: i32) -> Result<Ptx, String> {
    let cubin = compile_cubin(major, minor)?;
    if let Some(path) = cache_file(major, minor)? {
        write_cached(&path, &cubin);
    }
    let mut cubins = CUBINS.lock().unwrap_or_else(|p| p.into_inner());
    cubins.retain(|(arch, ..)| *arch != (major, minor));
    cubins.push(((major, minor), cubin.clone(), false));
    Ok(Ptx::from_binary(cubin))
}

/// This process' cache file for `sm_{major}{minor}` ([`cache_dir`], [`cache_path`]); None
/// with the cache turned off.
fn cache_file(major: i32, minor: i32) -> Result<Option<PathBuf>, String> {
    match cache_dir() {
        Some(dir) => Ok(Some(cache_path(&dir, major, minor, nvrtc_version()?))),
        None => Ok(None),
    }
}

/// The folder set by [`set_cache_dir`], if it was called.
static CACHE_DIR: Mutex<Option<Option<PathBuf>>> = Mutex::new(None);

/// Sets where this process keeps compiled kernels (None: nowhere), over [`cache_dir`]'s
/// default; for backends opened after the call.
pub fn set_cache_dir(dir: Option<PathBuf>) {
    *CACHE_DIR.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
}

/// Where compiled kernels are kept between runs: the folder given to [`set_cache_dir`], else
/// `$TRIFECTA_KERNEL_CACHE`, else the platform cache folder (`~/.cache/trifecta/kernels` on
/// Linux). An empty `TRIFECTA_KERNEL_CACHE` turns the cache off.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = CACHE_DIR.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return dir;
    }
    match std::env::var_os("TRIFECTA_KERNEL_CACHE") {
        Some(dir) if dir.is_empty() => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => dirs::cache_dir().map(|d| d.join("trifecta").join("kernels")),
    }
}

/// NVRTC's version, (major, minor).
fn nvrtc_version() -> Result<(i32, i32), String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two plain out-parameters.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| format!("nvrtcVersion: {e:?}"))?;
    Ok((major, minor))
}

/// The cache file of the cubin for `sm_{major}{minor}`: named by a digest of everything that
/// decides its content (the source, NVRTC's options and version), so a changed kernel or a
/// new NVRTC never meets an old cubin.
fn cache_path(dir: &Path, major: i32, minor: i32, nvrtc: (i32, i32)) -> PathBuf {
    let mut hasher = Md5::new();
    hasher.update(SOURCE.as_bytes());
    for option in options(major, minor) {
        hasher.update(b"\0");
        hasher.update(option.as_bytes());
    }
    hasher.update(format!("\0nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!("kernels-sm_{major}{minor}-{digest}.cubin"))
}

/// The cubin at `path` where it is one (else `compile`'s, written there), and whether it came
/// from `path`. The cache is only a shortcut: a file that is not a cubin of every kernel is
/// replaced, and a folder that cannot be written is left alone.
fn through_disk(
    path: Option<&Path>,
    compile: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<(Vec<u8>, bool), String> {
    if let Some(bytes) = path.and_then(|p| std::fs::read(p).ok())
        && bytes.starts_with(b"\x7fELF")
        && missing_kernel(&bytes).is_none()
    {
        return Ok((bytes, true));
    }
    let cubin = compile()?;
    if let Some(path) = path {
        write_cached(path, &cubin);
    }
    Ok((cubin, false))
}

/// Writes `cubin` to `path` through a temporary file and a rename, so that a reader never
/// sees half a file; failures are ignored (the cache is only a shortcut).
fn write_cached(path: &Path, cubin: &[u8]) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, cubin))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The first of [`KERNELS`] that is not a symbol of `cubin` (a NUL-terminated name in its
/// string table), if any.
pub fn missing_kernel(cubin: &[u8]) -> Option<&'static str> {
    KERNELS.iter().copied().find(|name| {
        let symbol = [b"\0", name.as_bytes(), b"\0"].concat();
        !cubin.windows(symbol.len()).any(|w| w == symbol)
    })
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

/// The launch of a `*_many` kernel over buffers of `lens` threads' work each: block row b
/// takes buffer b, grid-stride over the longest (kernels.cu's MANY buffers at most).
/// Returns the launch and the buffer count the kernel is passed.
pub fn per_buffer(lens: impl ExactSizeIterator<Item = usize>) -> (LaunchConfig, i32) {
    let count = lens.len();
    let mut cfg = elementwise(lens.max().unwrap_or(0));
    cfg.grid_dim.1 = count as u32;
    (cfg, count as i32)
}

/// The launch of a kernel that moves quads (four values an access, kernels.cu's `load4`)
/// when its quads stay within units of `unit` elements (channels, or a sample's features):
/// a thread per quad then, else a thread per element. The kernels check the alignment
/// themselves and fall back to single values (grid-stride, so any launch still covers all).
pub fn quads(total: usize, unit: usize) -> LaunchConfig {
    if unit.is_multiple_of(4) {
        elementwise(total / 4)
    } else {
        elementwise(total)
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
/// The kernels see `rows` x `cols` as launched: folded (see [`folded_partials`]) they are
/// `rows / g` x `g * cols`; the parts hold the true columns either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partials {
    pub parts: usize,
    pub chunk: usize,
    pub rows: usize,
    pub cols: usize,
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
        rows,
        cols,
        launch: (groups as u32, parts as u32),
    }
}

/// How many rows a reduction over `cols` columns lays side by side: the most that fit in a
/// warp's 32 lanes and divide `rows` (1 from 32 columns up). Block 0's BatchNorm has 4
/// channels: unfolded, 28 of every 32 lanes would idle.
pub fn fold(rows: usize, cols: usize) -> usize {
    if cols == 0 || cols >= 32 {
        return 1;
    }
    (1..=32 / cols)
        .rev()
        .find(|&g| rows.is_multiple_of(g))
        .unwrap_or(1)
}

/// [`partials`] over the matrix folded by [`fold`]: for reductions whose every row is alike
/// (the row index plays no part), as the BatchNorm statistics.
pub fn folded_partials(rows: usize, cols: usize, sms: usize) -> Partials {
    let g = fold(rows, cols);
    partials(rows / g, cols * g, sms)
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

/// Columns per block of the `finish_*` kernels (kernels.cu's FINISH_COLUMNS): a warp of
/// [`BLOCK`] / 8 = 32 threads per column.
const FINISH_COLUMNS: usize = 8;

/// A warp per column, for the `finish_*` kernels.
pub fn per_column(cols: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (cols.div_ceil(FINISH_COLUMNS).max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The value of `#define name` in [`SOURCE`] (for the tests that hold Rust's mirrors of the
/// kernels' constants to them).
#[cfg(test)]
pub(super) fn defined(name: &str) -> usize {
    SOURCE
        .split_once(&format!("#define {name} "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("kernels.cu has no numeric #define {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_mirror_the_kernels_defines() {
        assert_eq!(defined("FINISH_COLUMNS"), FINISH_COLUMNS);
        assert_eq!(defined("MANY"), super::super::sig::MANY);
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
    fn narrow_reductions_fold_rows_into_the_lanes() {
        assert_eq!(fold(1 << 20, 4), 8);
        assert_eq!(fold(7, 4), 7);
        assert_eq!(fold(9, 4), 3);
        assert_eq!(fold(13, 3), 1);
        assert_eq!(fold(1000, 32), 1);
        assert_eq!(fold(1000, 0), 1);
        for (rows, cols) in [(1usize << 20, 4usize), (70, 3), (1, 1), (64, 17), (99, 512)] {
            let g = fold(rows, cols);
            assert!(g >= 1 && rows.is_multiple_of(g) && (g == 1 || g * cols <= 32));
            let p = folded_partials(rows, cols, 132);
            assert_eq!((p.rows * p.cols), rows * cols);
            assert_eq!(p.cols, g * cols);
            // Folded, the columns fit one group of 32 lanes (the kernel's assumption).
            assert!(g == 1 || p.launch.0 == 1);
        }
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
        assert_eq!(per_column(257).grid_dim.0, 33);
        let (cfg, count) = per_buffer([3, 0, 1000].into_iter());
        assert_eq!((cfg.grid_dim, count), ((4, 3, 1), 3));
        assert_eq!(BLOCK as usize, 32 * FINISH_COLUMNS);
        assert_eq!(per_row(0).grid_dim.0, 1);
    }

    #[test]
    fn quad_launches_give_a_thread_per_quad_only_where_quads_fit() {
        // 1024 x 16 x 16 x 128: a thread per quad.
        let total = 1024 * 16 * 16 * 128;
        assert_eq!(
            quads(total, 128).grid_dim.0 as usize * BLOCK as usize,
            total / 4
        );
        // Three channels: a thread per element.
        assert_eq!(quads(300, 3).grid_dim.0, elementwise(300).grid_dim.0);
        assert_eq!(quads(0, 4).grid_dim.0, 1);
    }

    /// An ELF-looking image that names every kernel, as a cubin does.
    fn fake_cubin(tag: u8) -> Vec<u8> {
        let mut bytes = b"\x7fELF".to_vec();
        bytes.push(tag);
        for name in KERNELS {
            bytes.push(0);
            bytes.extend_from_slice(name.as_bytes());
        }
        bytes.push(0);
        bytes
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "trifecta-kernel-cache-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_disk_cache_returns_what_was_compiled() {
        let dir = temp_dir("round-trip");
        let path = cache_path(&dir, 9, 0, (13, 2));
        let (first, from_disk) = through_disk(Some(&path), || Ok(fake_cubin(1))).unwrap();
        assert_eq!((first.clone(), from_disk), (fake_cubin(1), false));
        assert_eq!(std::fs::read(&path).unwrap(), first);
        // The second time NVRTC is not asked.
        let (second, from_disk) =
            through_disk(Some(&path), || Err("compiled again".to_string())).unwrap();
        assert_eq!((second, from_disk), (first, true));
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_cache_file_is_compiled_again_and_replaced() {
        let dir = temp_dir("bad");
        let path = cache_path(&dir, 8, 0, (13, 0));
        std::fs::create_dir_all(&dir).unwrap();
        let mut missing_one = fake_cubin(1);
        missing_one.truncate(missing_one.len() - 3); // the last kernel's name cut short
        for bad in [Vec::new(), b"not an ELF file".to_vec(), missing_one] {
            std::fs::write(&path, &bad).unwrap();
            let (cubin, from_disk) = through_disk(Some(&path), || Ok(fake_cubin(2))).unwrap();
            assert_eq!((cubin, from_disk), (fake_cubin(2), false));
            assert_eq!(std::fs::read(&path).unwrap(), fake_cubin(2));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cache_that_cannot_be_written_is_passed_by() {
        // A folder that cannot be made: under a regular file.
        let dir = temp_dir("unwritable");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        let path = cache_path(&dir.join("file"), 9, 0, (13, 0));
        let (cubin, from_disk) = through_disk(Some(&path), || Ok(fake_cubin(3))).unwrap();
        assert_eq!((cubin, from_disk), (fake_cubin(3), false));
        // Compile errors still come through, with or without a cache.
        for path in [Some(path.as_path()), None] {
            let e = through_disk(path, || Err("NVRTC log".to_string())).unwrap_err();
            assert_eq!(e, "NVRTC log");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_files_differ_by_architecture_and_nvrtc() {
        let dir = Path::new("/cache");
        let names = [
            cache_path(dir, 9, 0, (13, 0)),
            cache_path(dir, 8, 0, (13, 0)),
            cache_path(dir, 9, 0, (13, 2)),
        ];
        assert_eq!(names[0], cache_path(dir, 9, 0, (13, 0)));
        assert!(names[0] != names[1] && names[0] != names[2] && names[1] != names[2]);
        let name = names[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("kernels-sm_90-") && name.ends_with(".cubin"),
            "{name}"
        );
    }

    #[test]
    fn options_name_a_real_architecture() {
        assert_eq!(options(9, 0)[0], "--gpu-architecture=sm_90");
        assert!(options(8, 6).contains(&"--fmad=false".to_string()));
    }
}
