//! Image-folder datasets: `<split>/<class>/*.{png,jpg,jpeg}`, from a folder or a `.tar.gz`
//! holding one (possibly under a top-level folder). Classes are the sorted folder names of the
//! training split; label = index in that order. Every image must have the size of the first.
//! Hidden names (starting with `.`) are skipped; a training class folder without images is an
//! error.

use super::{Dataset, Split};
use crate::error::{Error, Result};
use crate::ff::ImageShape;
use flate2::read::GzDecoder;
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One image file: where it came from, its class folder, and its encoded bytes.
struct Entry {
    path: PathBuf,
    class: String,
    bytes: Vec<u8>,
}

fn is_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg")
}

/// Hidden names (`.ipynb_checkpoints/`, macOS' `._img.png` in archives made there) are
/// neither classes nor images.
fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// The image files of a class folder, sorted.
pub(crate) fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = item.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_file() && is_image(&name) && !is_hidden(&name) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads `split/<class>/<file>` entries from a folder; returns (train classes, entries).
fn from_folder(root: &Path, split: Split) -> Result<(Vec<String>, Vec<Entry>)> {
    let class_names = |split: Split| -> Result<Vec<String>> {
        let dir = root.join(split.name());
        let mut names = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let item = item.map_err(|e| Error::io(&dir, e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if item.path().is_dir() && !is_hidden(&name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    };
    let classes = class_names(Split::Train)?;
    // A training class without images would still be a label (an output the model can never
    // learn, and a wrong class count), as torchvision's ImageFolder refuses it too.
    for class in &classes {
        let dir = root.join(Split::Train.name()).join(class);
        if images_in(&dir)?.is_empty() {
            return Err(Error::data(
                &dir,
                "class folder holds no .png or .jpg images: remove it or fill it",
            ));
        }
    }
    let mut entries = Vec::new();
    for class in class_names(split)? {
        let dir = root.join(split.name()).join(&class);
        for path in images_in(&dir)? {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            entries.push(Entry {
                path,
                class: class.clone(),
                bytes,
            });
        }
    }
    Ok((classes, entries))
}

/// Reads the same from a `.tar.gz`, in one pass.
fn from_archive(archive: &Path, split: Split) -> Result<(Vec<String>, Vec<Entry>)> {
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut tar = tar::Archive::new(GzDecoder::new(file));
    let mut classes = std::collections::BTreeSet::new();
    let mut entries = Vec::new();
    let items = tar
        .entries()
        .map_err(|e| Error::data(archive, format!("not a tar.gz archive: {e}")))?;
    for item in items {
        let mut item = item.map_err(|e| Error::data(archive, format!("corrupt archive: {e}")))?;
        let path = item
            .path()
            .map_err(|e| Error::data(archive, format!("bad entry name: {e}")))?
            .into_owned();
        let parts: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        // .../<split>/<class>/<file>
        if parts.len() < 3
            || !is_image(&parts[parts.len() - 1])
            || parts[parts.len() - 2..].iter().any(|p| is_hidden(p))
        {
            continue;
        }
        let (entry_split, class) = (&parts[parts.len() - 3], &parts[parts.len() - 2]);
        if entry_split == Split::Train.name() {
            classes.insert(class.clone());
        }
        if entry_split == split.name() {
            let mut bytes = Vec::new();
            item.read_to_end(&mut bytes).map_err(|e| {
                Error::data(archive, format!("corrupt entry {}: {e}", path.display()))
            })?;
            entries.push(Entry {
                path: archive.join(&path),
                class: class.clone(),
                bytes,
            });
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((classes.into_iter().collect(), entries))
}

/// The archive to read when `dir` is one, or holds exactly one `.tar.gz`.
fn archive_in(dir: &Path) -> Result<Option<PathBuf>> {
    if dir.is_file() {
        return Ok(Some(dir.to_path_buf()));
    }
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|f| f.ok().map(|f| f.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    archives.sort();
    match archives.len() {
        0 => Ok(None),
        1 => Ok(archives.pop()),
        _ => Err(Error::data(
            dir,
            "more than one .tar.gz here: point --data-dir at the one to use",
        )),
    }
}

pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    let (classes, entries) = if dir.join(Split::Train.name()).is_dir() {
        from_folder(dir, split)?
    } else if let Some(archive) = archive_in(dir)? {
        from_archive(&archive, split)?
    } else {
        return Err(Error::data(
            dir,
            "no image folder here: expected train/<class>/ and test/<class>/ folders or a .tar.gz of them",
        ));
    };
    let first = entries.first().ok_or_else(|| {
        Error::data(
            dir,
            format!("no .png or .jpg images under {}/<class>/", split.name()),
        )
    })?;
    let probe = image::load_from_memory(&first.bytes)
        .map_err(|e| Error::data(&first.path, format!("cannot decode image: {e}")))?;
    let (width, height) = (probe.width() as usize, probe.height() as usize);
    let images: Vec<image::DynamicImage> = entries
        .par_iter()
        .map(|entry| {
            let img = image::load_from_memory(&entry.bytes)
                .map_err(|e| Error::data(&entry.path, format!("cannot decode image: {e}")))?;
            if (img.width() as usize, img.height() as usize) != (width, height) {
                return Err(Error::data(
                    &entry.path,
                    format!(
                        "image is {}x{}, expected {width}x{height} like {}",
                        img.width(),
                        img.height(),
                        first.path.display()
                    ),
                ));
            }
            Ok(img)
        })
        .collect::<Result<_>>()?;
    // RGB if any image has colour: a few grayscale files among colour ones (ImageNet has
    // some) are widened, not the whole split narrowed to gray by whichever file came first.
    let channels = if images.iter().any(|img| img.color().has_color()) {
        3
    } else {
        1
    };
    let decoded: Vec<Vec<u8>> = images
        .into_par_iter()
        .map(|img| match channels {
            3 => img.into_rgb8().into_raw(),
            _ => img.into_luma8().into_raw(),
        })
        .collect();
    let mut labels = Vec::with_capacity(entries.len());
    for entry in &entries {
        let label = classes
            .iter()
            .position(|c| *c == entry.class)
            .ok_or_else(|| {
                Error::data(
                    &entry.path,
                    format!(
                        "class folder '{}' does not exist in the training split",
                        entry.class
                    ),
                )
            })?;
        labels.push(label as u32);
    }
    let shape = ImageShape {
        channels,
        height,
        width,
    };
    let mut data = Dataset::new(shape, classes.len(), decoded.concat(), labels);
    data.class_names = classes;
    let (mean, std) = data.measure_mean_std();
    data.mean = mean;
    data.std = std;
    Ok(data)
}
