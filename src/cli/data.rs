//! `trifecta data download|verify`: fetch the official dataset files into the data folder,
//! check them against their published checksums, and load both splits as training would.

use crate::data::{self, DatasetKind, Split, download};

use crate::error::{Error, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub action: DataAction,
}

#[derive(Subcommand, Debug)]
pub enum DataAction {
    /// Download what is missing, then verify every file.
    Download(DataTarget),
    /// Verify the files already there (checksums of the official files), then load both
    /// splits as training would and print what they hold; image folders too.
    Verify(DataTarget),
}

#[derive(Args, Debug)]
pub struct DataTarget {
    /// The dataset (`folder`: an image folder at --data-dir, verified only).
    #[arg(long, value_enum)]
    pub dataset: DatasetKind,
    /// Folder for the files (default: $TRIFECTA_DATA/<dataset>, else the user cache folder).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn run(args: DataArgs) -> Result<()> {
    let (target, fetch) = match &args.action {
        DataAction::Download(t) => (t, true),
        DataAction::Verify(t) => (t, false),
    };
    let official = !download::remotes(target.dataset).is_empty();
    if fetch && !official {
        return Err(Error::Config(format!(
            "{} has no official files to download (the sample is built in; folders are your own)",
            target.dataset.name()
        )));
    }
    let dir = data::data_dir(target.dataset, target.data_dir.as_deref())?;
    if fetch {
        download::ensure(target.dataset, &dir)?;
    }
    if official {
        download::check_not_the_twin(target.dataset, &dir)?;
        let checked = download::check_all(target.dataset, &dir);
        for line in checked.map_err(|e| data::another_dataset(target.dataset, &dir).unwrap_or(e))? {
            println!("{line}");
        }
    }
    let mut names = Vec::new();
    for split in [Split::Train, Split::Test] {
        let set = data::load(target.dataset, &dir, split, false)?;
        println!("{}: {}", split.name(), summary(&set));
        if split == Split::Train {
            names = set.class_names;
        }
    }
    println!("classes, by label: {}", names.join(", "));
    Ok(())
}

/// What a split holds: its size, image shape, classes and images per class.
fn summary(set: &data::Dataset) -> String {
    let mut counts = vec![0usize; set.classes];
    for &label in &set.labels {
        counts[label as usize] += 1;
    }
    let per_class = match counts.iter().all(|&c| c == counts[0]) {
        true => format!("{} each", counts[0]),
        false => format!("{counts:?} per class"),
    };
    let shape = set.shape;
    format!(
        "{} images, {}x{}x{} (channels x height x width), {} classes, {per_class}",
        set.len(),
        shape.channels,
        shape.height,
        shape.width,
        set.classes
    )
}
