//! `trifecta data download|verify`: fetch the official dataset files into the data folder and
//! check them against their published checksums.

use crate::data::{self, DatasetKind, download};

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
    /// Verify the files already there.
    Verify(DataTarget),
}

#[derive(Args, Debug)]
pub struct DataTarget {
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
    if download::remotes(target.dataset).is_empty() {
        return Err(Error::Config(format!(
            "{} has no official files to download (the sample is built in; folders are your own)",
            target.dataset.name()
        )));
    }
    let dir = data::data_dir(target.dataset, target.data_dir.as_deref())?;
    if fetch {
        download::ensure(target.dataset, &dir)?;
    }
    for line in download::check_all(target.dataset, &dir)? {
        println!("{line}");
    }
    Ok(())
}
